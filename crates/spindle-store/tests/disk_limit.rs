//! Reaching `max_disk_bytes` drops the oldest blocks, keeps the newest, and leaves a store
//! that reopens cleanly.

use std::time::Duration;

#[path = "support/generator.rs"]
mod generator;

use generator::Generator;
use spindle_store::{EmbeddedStore, StoreOptions, TraceQuery, TraceStore};

#[test]
fn disk_limit_drops_oldest_blocks_and_never_corrupts() {
    let dir = tempfile::tempdir().unwrap();
    let limit = 400 * 1024;
    let options = StoreOptions { max_disk_bytes: Some(limit), background: false, ..StoreOptions::new(dir.path()) };
    let store = EmbeddedStore::open(options.clone()).unwrap();
    let mut generator = Generator::new(11, 1_700_000_000_000_000_000);
    let mut batches = Vec::new();
    for _ in 0..30 {
        let batch = generator.batch(200);
        store.append(batch.clone()).unwrap();
        store.flush().unwrap();
        store.enforce_retention(u64::MAX / 2).unwrap();
        batches.push(batch);
        let stats = store.stats();
        assert!(stats.block_bytes + stats.wal_bytes <= limit, "over the limit: {stats:?}");
    }
    let stats = store.stats();
    assert!(stats.blocks >= 2, "the limit should leave several blocks: {stats:?}");
    let newest = batches.last().unwrap();
    assert_eq!(store.get_trace(newest[0].trace_id).unwrap().len(), 10, "newest data kept");
    assert!(store.get_trace(batches[0][0].trace_id).unwrap().is_empty(), "oldest data dropped");
    // Retained spans form a contiguous newest suffix of the history.
    let kept: Vec<bool> = batches.iter().map(|b| !store.get_trace(b[0].trace_id).unwrap().is_empty()).collect();
    let first_kept = kept.iter().position(|k| *k).unwrap();
    assert!(kept[first_kept..].iter().all(|k| *k), "{kept:?}");
    drop(store);

    let store = EmbeddedStore::open(options).unwrap();
    assert_eq!(store.stats(), stats);
    let found =
        store.find_trace_ids(&TraceQuery { service: Some("frontend".into()), limit: 5, ..Default::default() }).unwrap();
    assert_eq!(found.len(), 5);
    assert_eq!(found[0], newest[newest.len() - 10].trace_id, "newest trace first");
}

#[test]
fn retention_by_age_drops_only_old_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(StoreOptions {
        retention: Some(Duration::from_secs(3600)),
        background: false,
        ..StoreOptions::new(dir.path())
    })
    .unwrap();
    let day = 86_400_000_000_000u64;
    let old = Generator::new(1, 10 * day).batch(5);
    let recent = Generator::new(2, 12 * day).batch(5);
    store.append(old.clone()).unwrap();
    store.flush().unwrap();
    store.append(recent.clone()).unwrap();
    store.flush().unwrap();
    assert_eq!(store.enforce_retention(12 * day + 60_000_000_000).unwrap(), 1);
    assert!(store.get_trace(old[0].trace_id).unwrap().is_empty());
    assert_eq!(store.get_trace(recent[0].trace_id).unwrap().len(), 10);
}
