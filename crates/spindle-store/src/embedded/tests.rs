//! Unit tests that drive the engine step by step or race its threads, reading its private
//! state (blocks, frozen heads, flushers at work).

use std::sync::Arc;

use spindle_model::{KeyValue, Resource, SpanId};

use super::*;
use crate::wal::{self, SyncPolicy};

fn span(trace: u128, id: u64, parent: u64, service: &str, name: &str, start: u64) -> Span {
    Span {
        trace_id: TraceId(trace),
        span_id: SpanId(id),
        parent_span_id: SpanId(parent),
        name: name.into(),
        kind: SpanKind::Server,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 1_000_000,
        attributes: vec![KeyValue::string("symbol", format!("S{id}"))],
        resource: Arc::new(Resource {
            attributes: vec![KeyValue::string("service.name", service)],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn options(dir: &Path) -> StoreOptions {
    StoreOptions { background: false, ..StoreOptions::new(dir) }
}

#[test]
fn compaction_merges_blocks_of_one_level_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let levels = |store: &EmbeddedStore| {
        let mut l: Vec<u32> = read_guard(&store.inner.blocks).iter().map(|b| b.meta.level).collect();
        l.sort_unstable();
        l
    };
    let mut next = 0u64;
    let mut cut = |store: &EmbeddedStore| {
        next += 1;
        store.append(vec![span(u128::from(next), next, 0, "svc", "op", next * 1_000)]).unwrap();
        store.flush().unwrap();
    };
    for _ in 0..4 {
        cut(&store);
    }
    assert!(store.compact().unwrap());
    assert_eq!(levels(&store), vec![1]);
    for _ in 0..3 {
        cut(&store);
    }
    // Four small blocks, but only three of level 0: the level-1 block is not rewritten.
    assert!(!store.compact().unwrap());
    assert_eq!(levels(&store), vec![0, 0, 0, 1]);
    cut(&store);
    assert!(store.compact().unwrap());
    assert_eq!(levels(&store), vec![1, 1]);
    assert!(store.compact_all().unwrap());
    assert_eq!(levels(&store), vec![2]);
    assert_eq!(store.stats().block_spans, 8);
    for id in 1..=8u128 {
        assert_eq!(store.get_trace(TraceId(id)).unwrap().len(), 1);
    }
}

fn open(dir: &Path) -> EmbeddedStore {
    EmbeddedStore::open(options(dir)).unwrap()
}

/// Two flushers write heads at once; a block must never be published while an older
/// head is still unpublished (on restart the newest published block says which log
/// segments are covered). Sampled while both flushers are busy; then every span is there
/// once after reopening.
#[test]
fn two_flushers_publish_blocks_in_cut_order() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        background: true,
        sync: SyncPolicy::Interval(Duration::from_millis(50)),
        head_max_bytes: 24 * 1024,
        head_max_age: Duration::from_millis(20),
        row_group_spans: 64,
        compaction_min_inputs: usize::MAX,
        ..StoreOptions::new(dir.path())
    };
    let store = Arc::new(EmbeddedStore::open(options).unwrap());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..3u64)
        .map(|w| {
            let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
            thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let spans = (0..40)
                        .map(|i| span(u128::from(w << 40 | n << 8 | i), i + 1, 0, "api", "op", 1_000 + n))
                        .collect();
                    store.append(spans).unwrap();
                    n += 1;
                }
                n * 40
            })
        })
        .collect();
    let inner = &store.inner;
    let (mut samples, mut both_busy) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && (both_busy < 20 || samples < 2_000) {
        let writing = lock(&inner.writing).len();
        let blocks = read_guard(&inner.blocks);
        let frozen = read_guard(&inner.frozen);
        let published = blocks.iter().map(|b| b.meta.wal_covered).max().unwrap_or(0);
        for (_, next_seq) in frozen.iter() {
            assert!(
                next_seq - 1 > published,
                "a head covering segments up to {} is unpublished while a block covering {published} is published",
                next_seq - 1
            );
        }
        samples += 1;
        both_busy += u64::from(writing >= 2);
        drop((frozen, blocks));
        thread::sleep(Duration::from_micros(200));
    }
    stop.store(true, Ordering::Relaxed);
    let appended: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(
        both_busy >= 20,
        "the flushers were seen writing two heads at once only {both_busy} times in {samples} samples"
    );
    drop(store);
    let store = open(dir.path());
    store.flush().unwrap();
    let stored: u64 = read_guard(&store.inner.blocks).iter().map(|b| b.meta.spans).sum();
    assert_eq!(stored, appended, "every acknowledged span once");
}

#[test]
fn reads_racing_head_cuts_never_miss_a_span() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        EmbeddedStore::open(StoreOptions { sync: SyncPolicy::Interval(Duration::from_secs(1)), ..options(dir.path()) })
            .unwrap(),
    );
    let published = Arc::new(AtomicU64::new(0));
    let writer = {
        let (store, published) = (Arc::clone(&store), Arc::clone(&published));
        thread::spawn(move || {
            for t in 1..=150u64 {
                let base = t * 10;
                let trace: Vec<Span> =
                    (0..3).map(|k| span(u128::from(t), base + k, 0, "api", "get", 1_000 + t)).collect();
                store.append(trace).unwrap();
                published.store(t, Ordering::SeqCst);
                // Every trace moves head → frozen → block while the reader reads it.
                store.flush().unwrap();
            }
        })
    };
    let mut reads = 0;
    while !writer.is_finished() {
        let t = published.load(Ordering::SeqCst);
        if t == 0 {
            continue;
        }
        let spans = store.get_trace(TraceId(u128::from(t))).unwrap();
        assert_eq!(spans.len(), 3, "trace {t} read whole by get_trace");
        let query = TraceQuery {
            start_time_min_unix_nano: 1_000 + t,
            start_time_max_unix_nano: 1_000 + t,
            ..TraceQuery::default()
        };
        let mut seen = HashSet::new();
        store
            .scan_fields(&query, &SpanFields::bare(), &mut |s| {
                seen.insert(s.span_id);
            })
            .unwrap();
        assert_eq!(seen.len(), 3, "trace {t} seen whole by scan_fields");
        assert_eq!(store.find_trace_ids(&query).unwrap(), vec![TraceId(u128::from(t))]);
        reads += 1;
    }
    writer.join().unwrap();
    assert!(reads > 10, "the reader raced the writer ({reads} reads)");
}

fn check_basic_queries(store: &EmbeddedStore) {
    assert_eq!(store.get_trace(TraceId(1)).unwrap().len(), 2);
    assert_eq!(store.services().unwrap(), vec!["a".to_string(), "b".to_string()]);
    let ids = store.find_trace_ids(&TraceQuery { service: Some("a".into()), ..Default::default() }).unwrap();
    assert_eq!(ids, vec![TraceId(2), TraceId(1)], "newest first");
    let ids = store
        .find_trace_ids(&TraceQuery { attributes: vec![("symbol".into(), "S2".into())], ..Default::default() })
        .unwrap();
    assert_eq!(ids, vec![TraceId(1)]);
    let deps = store.dependencies(0, u64::MAX).unwrap();
    assert_eq!(deps.len(), 1);
    assert_eq!((deps[0].parent.as_str(), deps[0].child.as_str(), deps[0].call_count), ("a", "b", 1));
}

#[test]
fn appended_spans_survive_reopen_and_flush() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.append(vec![span(1, 1, 0, "a", "root", 10), span(1, 2, 1, "b", "child", 20)]).unwrap();
        store.append(vec![span(2, 3, 0, "a", "other", 30)]).unwrap();
        check_basic_queries(&store);
    }
    {
        let store = open(dir.path());
        check_basic_queries(&store);
        store.flush().unwrap();
        assert_eq!(store.stats().blocks, 1);
        assert_eq!(store.stats().head_spans, 0);
        check_basic_queries(&store);
    }
    let store = open(dir.path());
    assert_eq!(store.stats().head_spans, 0, "flushed segments are not replayed");
    check_basic_queries(&store);
    assert_eq!(wal::segments(&dir.path().join("wal")).unwrap().len(), 1);
}

#[test]
fn retried_spans_are_not_duplicated() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append(vec![span(1, 1, 0, "a", "root", 10)]).unwrap();
    store.append(vec![span(1, 1, 0, "a", "root", 10)]).unwrap();
    assert_eq!(store.get_trace(TraceId(1)).unwrap().len(), 1);
    store.flush().unwrap();
    store.append(vec![span(1, 1, 0, "a", "root", 10)]).unwrap();
    store.flush().unwrap();
    assert_eq!(store.get_trace(TraceId(1)).unwrap().len(), 1);
    assert!(store.compact_all().unwrap());
    assert_eq!(store.stats().block_spans, 1);
}

#[test]
fn a_second_process_cannot_open_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path());
    let second = EmbeddedStore::open(options(dir.path()));
    assert!(matches!(second, Err(StoreError::Locked { .. })));
}

#[test]
fn half_written_blocks_are_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.append(vec![span(1, 1, 0, "a", "root", 10)]).unwrap();
        store.flush().unwrap();
    }
    let blocks = dir.path().join("blocks");
    fs::write(blocks.join("00000000000000ff.parquet"), b"PAR1 torn").unwrap();
    fs::write(blocks.join("0000000000000100.parquet.tmp"), b"PAR1").unwrap();
    let store = open(dir.path());
    assert!(!blocks.join("00000000000000ff.parquet").exists());
    assert!(!blocks.join("0000000000000100.parquet.tmp").exists());
    assert_eq!(store.get_trace(TraceId(1)).unwrap().len(), 1);
}

/// A damaged block meta (or one a newer Spindle wrote) must not cost the block: the store
/// opens without it, leaves its files alone, never reuses its id, and serves it again once
/// the meta is readable.
#[test]
fn blocks_with_unreadable_meta_are_kept_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        for t in 1..=3u64 {
            store.append(vec![span(u128::from(t), t, 0, "a", "root", t * 10)]).unwrap();
            store.flush().unwrap();
        }
        assert_eq!(store.stats().blocks, 3);
    }
    let blocks = dir.path().join("blocks");
    let mut metas: Vec<_> = fs::read_dir(&blocks)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".meta.json"))
        .collect();
    metas.sort();
    let newest = metas.last().unwrap().clone();
    let parquet = newest.to_string_lossy().replace(".meta.json", ".parquet");
    let original = fs::read(&newest).unwrap();
    fs::write(&newest, b"{ garbled").unwrap();
    {
        let store = open(dir.path());
        assert_eq!(store.stats().blocks, 2, "the unreadable block is not served");
        assert!(Path::new(&parquet).exists(), "its data file is kept");
        assert_eq!(fs::read(&newest).unwrap(), b"{ garbled", "its meta file is left as found");
        store.append(vec![span(9, 9, 0, "a", "root", 90)]).unwrap();
        store.flush().unwrap();
        assert_eq!(store.stats().blocks, 3);
        assert_eq!(fs::read(&newest).unwrap(), b"{ garbled", "a new block did not take its id");
    }
    fs::write(&newest, original).unwrap();
    let store = open(dir.path());
    assert_eq!(store.stats().blocks, 4);
    for t in [1u128, 2, 3, 9] {
        assert_eq!(store.get_trace(TraceId(t)).unwrap().len(), 1, "trace {t}");
    }
}
