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

/// Three blocks of one span each (traces 1, 2, 3; service "a"), the store closed; returns
/// the meta files, oldest first.
fn three_blocks(dir: &Path) -> Vec<PathBuf> {
    {
        let store = open(dir);
        for t in 1..=3u64 {
            store.append(vec![span(u128::from(t), t, 0, "a", &format!("op{t}"), t * 10)]).unwrap();
            store.flush().unwrap();
        }
        assert_eq!(store.stats().blocks, 3);
    }
    block_metas(dir)
}

fn parquet_of(meta: &Path) -> PathBuf {
    PathBuf::from(meta.to_string_lossy().replace(".meta.json", ".parquet"))
}

fn aside_of(path: &Path) -> PathBuf {
    path.parent().unwrap().join("aside").join(path.file_name().unwrap())
}

/// Opens the store on a directory with the newest block's meta replaced by `bad`: the block
/// is set aside whole, bytes unchanged, counted; the others are served; no new block takes
/// its id; moving its files back (once repaired) serves it again.
fn unreadable_meta_is_set_aside(bad: &dyn Fn(&[u8]) -> Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let metas = three_blocks(dir.path());
    let newest = metas.last().unwrap().clone();
    let parquet = parquet_of(&newest);
    let original = fs::read(&newest).unwrap();
    let data = fs::read(&parquet).unwrap();
    let damaged = bad(&original);
    fs::write(&newest, &damaged).unwrap();
    {
        let store = open(dir.path());
        assert_eq!(store.stats().blocks, 2, "the unreadable block is not served");
        assert_eq!(store.stats().blocks_set_aside, 1);
        assert!(!newest.exists() && !parquet.exists(), "its files left the blocks directory");
        assert_eq!(fs::read(aside_of(&newest)).unwrap(), damaged, "its meta is kept as found");
        assert_eq!(fs::read(aside_of(&parquet)).unwrap(), data, "its data file is kept");
        for t in [1u128, 2] {
            assert_eq!(store.get_trace(TraceId(t)).unwrap().len(), 1, "trace {t} still served");
        }
        assert!(store.get_trace(TraceId(3)).unwrap().is_empty());
        store.append(vec![span(9, 9, 0, "a", "root", 90)]).unwrap();
        store.flush().unwrap();
        assert_eq!(store.stats().blocks, 3);
        assert!(!newest.exists(), "a new block did not take its id");
    }
    {
        // Retention, the disk limit and compaction leave what is aside alone.
        let store = EmbeddedStore::open(StoreOptions {
            retention: Some(Duration::from_secs(1)),
            max_disk_bytes: Some(1),
            ..options(dir.path())
        })
        .unwrap();
        assert_eq!(store.stats().blocks_set_aside, 0, "nothing new set aside");
        store.enforce_retention(now_unix_nanos()).unwrap();
        assert_eq!(store.stats().blocks, 0);
        assert_eq!(fs::read(aside_of(&parquet)).unwrap(), data, "retention left it alone");
    }
    // The operator repairs the meta and moves the block back.
    fs::write(&newest, original).unwrap();
    fs::rename(aside_of(&parquet), &parquet).unwrap();
    fs::remove_file(aside_of(&newest)).unwrap();
    let store = open(dir.path());
    assert_eq!(store.stats().blocks, 1);
    assert_eq!(store.get_trace(TraceId(3)).unwrap().len(), 1);
}

#[test]
fn a_garbled_block_meta_sets_its_block_aside() {
    unreadable_meta_is_set_aside(&|_| b"{ garbled".to_vec());
}

#[test]
fn a_block_meta_of_a_newer_format_sets_its_block_aside() {
    unreadable_meta_is_set_aside(&|meta| {
        let text = String::from_utf8(meta.to_vec()).unwrap();
        let format = format!("\"format\":{}", crate::block::BLOCK_FORMAT);
        assert!(text.contains(&format), "{text}");
        text.replace(&format, "\"format\":99").into_bytes()
    });
}

#[test]
fn a_truncated_parquet_file_sets_its_block_aside() {
    let dir = tempfile::tempdir().unwrap();
    let metas = three_blocks(dir.path());
    let parquet = parquet_of(&metas[1]);
    let data = fs::read(&parquet).unwrap();
    fs::write(&parquet, &data[..data.len() / 2]).unwrap();
    let store = open(dir.path());
    assert_eq!(store.stats().blocks, 2);
    assert_eq!(store.stats().blocks_set_aside, 1);
    assert_eq!(fs::read(aside_of(&parquet)).unwrap(), &data[..data.len() / 2], "kept as found");
    assert!(aside_of(&metas[1]).exists());
    for t in [1u128, 3] {
        assert_eq!(store.get_trace(TraceId(t)).unwrap().len(), 1, "trace {t} still served");
    }
}

/// A Parquet file damaged inside (its footer intact) opens; reading the damaged part fails
/// with an error, never a panic; compaction sets the block aside instead of merging past it
/// or removing it, and merges the rest.
#[test]
fn a_garbled_parquet_file_gives_errors_and_compaction_sets_it_aside() {
    let dir = tempfile::tempdir().unwrap();
    let metas = three_blocks(dir.path());
    let parquet = parquet_of(&metas[1]);
    let mut data = fs::read(&parquet).unwrap();
    // Garble every column chunk's pages, leaving the footer, indexes and bloom filters that
    // opening reads intact.
    {
        use parquet::file::reader::FileReader;
        let reader =
            parquet::file::serialized_reader::SerializedFileReader::new(File::open(&parquet).unwrap()).unwrap();
        for rg in reader.metadata().row_groups() {
            for column in rg.columns() {
                let (start, len) = column.byte_range();
                for b in &mut data[start as usize..(start + len) as usize] {
                    *b ^= 0x5a;
                }
            }
        }
    }
    fs::write(&parquet, &data).unwrap();
    let store = EmbeddedStore::open(StoreOptions { compaction_min_inputs: 2, ..options(dir.path()) }).unwrap();
    assert_eq!(store.stats().blocks, 3, "the footer is intact: the block opens");
    assert!(store.get_trace(TraceId(2)).is_err(), "a damaged block's trace is an error, not an empty answer");
    let query = TraceQuery { operation: Some("op2".into()), ..TraceQuery::default() };
    assert!(store.find_trace_ids(&query).is_err());
    assert_eq!(store.get_trace(TraceId(1)).unwrap().len(), 1, "other blocks still answer");
    assert!(parquet.exists(), "reading errors remove nothing");
    assert!(store.compact_all().is_err(), "the merge stops at the unreadable input");
    assert_eq!(store.stats().blocks_set_aside, 1);
    assert_eq!(store.stats().blocks, 2, "the damaged block left the served ones");
    assert_eq!(fs::read(aside_of(&parquet)).unwrap(), data, "its bytes are kept");
    assert!(aside_of(&metas[1]).exists());
    assert!(store.compact_all().unwrap(), "the readable blocks still merge");
    assert_eq!(store.stats().blocks, 1);
    for t in [1u128, 3] {
        assert_eq!(store.get_trace(TraceId(t)).unwrap().len(), 1, "trace {t} still served");
    }
    assert!(store.get_trace(TraceId(2)).unwrap().is_empty());
    drop(store);
    let store = open(dir.path());
    assert_eq!((store.stats().blocks, store.stats().blocks_set_aside), (1, 0), "the next open ignores it");
    assert_eq!(fs::read(aside_of(&parquet)).unwrap(), data);
}

fn operation_names(store: &EmbeddedStore, service: &str) -> Vec<String> {
    store.operations(service, None).unwrap().into_iter().map(|o| o.name).collect()
}

#[test]
fn a_garbled_catalog_is_set_aside_and_rebuilt_from_the_blocks() {
    let dir = tempfile::tempdir().unwrap();
    three_blocks(dir.path());
    let catalog = dir.path().join("catalog.json");
    fs::write(&catalog, b"[[\"a\", [[\"op1\"").unwrap();
    let store = open(dir.path());
    assert_eq!(store.stats().catalog_rebuilds, 1);
    assert_eq!(store.services().unwrap(), vec!["a".to_string()]);
    assert_eq!(operation_names(&store, "a"), vec!["op1", "op2", "op3"]);
    let aside = dir.path().join("catalog.json.unreadable-0");
    assert_eq!(fs::read(&aside).unwrap(), b"[[\"a\", [[\"op1\"", "the bad file is kept aside");
    assert_eq!(store.stats().blocks, 3);
    drop(store);
    // The rebuilt catalog was written: the next open reads it.
    let store = open(dir.path());
    assert_eq!(store.stats().catalog_rebuilds, 0);
    assert_eq!(operation_names(&store, "a"), vec!["op1", "op2", "op3"]);
}

#[test]
fn a_damaged_catalog_log_line_rebuilds_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        for t in 1..=3u64 {
            store.append(vec![span(u128::from(t), t, 0, "a", &format!("op{t}"), t * 10)]).unwrap();
            store.flush().unwrap();
        }
        // Flushes append to the log; the snapshot is not rewritten per flush.
        let log = fs::read_to_string(dir.path().join("catalog.log")).unwrap();
        assert_eq!(log.lines().count(), 3, "{log}");
    }
    // An intact snapshot (empty: written at open), a garbled line, then a good one.
    let log = dir.path().join("catalog.log");
    let text = fs::read_to_string(&log).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[0] = "[\"a\",\"op1";
    fs::write(&log, lines.join("\n") + "\n").unwrap();
    let store = open(dir.path());
    assert_eq!(store.stats().catalog_rebuilds, 1);
    assert_eq!(operation_names(&store, "a"), vec!["op1", "op2", "op3"]);
    assert!(dir.path().join("catalog.log.unreadable-0").exists());
    assert!(dir.path().join("catalog.json.unreadable-0").exists());
}

#[test]
fn an_unterminated_last_catalog_log_line_is_a_torn_append_not_damage() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.append(vec![span(1, 1, 0, "a", "op1", 10)]).unwrap();
        store.flush().unwrap();
    }
    let log = dir.path().join("catalog.log");
    let mut text = fs::read(&log).unwrap();
    text.extend_from_slice(b"[\"a\",\"op");
    fs::write(&log, text).unwrap();
    let store = open(dir.path());
    assert_eq!(store.stats().catalog_rebuilds, 0);
    assert_eq!(operation_names(&store, "a"), vec!["op1"]);
}

/// Writes log segments 1 (three records, the middle one damaged) and 2 (one record) as a
/// crash would leave them, with no block covering either.
#[test]
fn a_damaged_record_in_an_old_log_segment_costs_only_itself() {
    let dir = tempfile::tempdir().unwrap();
    let wal_dir = dir.path().join("wal");
    fs::create_dir_all(&wal_dir).unwrap();
    let batch = |t: u64| crate::batch_codec::encode_batch(&[span(u128::from(t), t, 0, "a", "op", t * 10)]).unwrap();
    {
        let wal = Wal::open(&wal_dir, 1, SyncPolicy::Always).unwrap();
        for t in 1..=3 {
            wal.append(batch(t)).unwrap();
        }
        wal.rotate().unwrap();
        wal.append(batch(4)).unwrap();
    }
    let old = wal::segment_path(&wal_dir, 1);
    let mut bytes = fs::read(&old).unwrap();
    let second = 8 + batch(1).len();
    let second_len = 8 + batch(2).len();
    bytes[second + 8 + 3] ^= 0x01;
    fs::write(&old, &bytes).unwrap();
    let store = open(dir.path());
    let stats = store.stats();
    assert_eq!((stats.wal_records_skipped, stats.wal_bytes_set_aside), (1, second_len as u64));
    for t in [1u128, 3, 4] {
        assert_eq!(store.get_trace(TraceId(t)).unwrap().len(), 1, "trace {t} replayed");
    }
    assert!(store.get_trace(TraceId(2)).unwrap().is_empty());
    let aside = PathBuf::from(format!("{}.{second}.unread", old.display()));
    assert_eq!(fs::read(&aside).unwrap(), &bytes[second..second + second_len]);
    store.flush().unwrap();
    assert!(!old.exists(), "the segment goes once a block covers it");
    let segments: u64 = wal::segments(&wal_dir).unwrap().iter().map(|(_, p)| fs::metadata(p).unwrap().len()).sum();
    assert_eq!(store.stats().wal_bytes, segments, "bytes kept aside are not the log's, nor the disk limit's");
    assert_eq!(fs::read(&aside).unwrap(), &bytes[second..second + second_len], "its unread bytes stay");
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.stats().wal_records_skipped, 0, "replayed once");
    assert_eq!(store.stats().block_spans, 3);
}

#[test]
fn a_data_directory_of_a_newer_release_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    let marker = dir.path().join("spindle-data.json");
    assert_eq!(fs::read_to_string(&marker).unwrap(), "{\"format\":1}", "written at first open");
    fs::write(&marker, "{\"format\":2}").unwrap();
    let err = EmbeddedStore::open(options(dir.path())).err().expect("refused");
    let text = err.to_string();
    assert!(matches!(err, StoreError::DataFormat { .. }), "{text}");
    assert!(text.contains(&marker.display().to_string()), "names the file: {text}");
    assert!(text.contains("newer Spindle") && text.contains("format 2"), "says why: {text}");
    assert_eq!(fs::read_to_string(&marker).unwrap(), "{\"format\":2}", "left as found");
    fs::write(&marker, "garbage").unwrap();
    let text = EmbeddedStore::open(options(dir.path())).err().expect("refused").to_string();
    assert!(text.contains("unreadable") && text.contains("{\"format\":1}"), "says the fix: {text}");
}

#[test]
fn a_data_directory_of_an_older_release_is_read_and_marked() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.append(vec![span(1, 1, 0, "a", "op", 10)]).unwrap();
        store.flush().unwrap();
        store.append(vec![span(2, 2, 0, "a", "op", 20)]).unwrap();
    }
    let marker = dir.path().join("spindle-data.json");
    fs::remove_file(&marker).unwrap();
    // Older releases wrote no catalog log either.
    fs::remove_file(dir.path().join("catalog.log")).unwrap();
    let store = open(dir.path());
    assert_eq!(fs::read_to_string(&marker).unwrap(), "{\"format\":1}");
    for t in [1u128, 2] {
        assert_eq!(store.get_trace(TraceId(t)).unwrap().len(), 1);
    }
    assert_eq!(operation_names(&store, "a"), vec!["op"]);
}

/// Operations beyond the bound are not listed, counted, and still stored and found by a
/// search naming them, in memory, in blocks and after a restart.
#[test]
fn the_catalog_lists_at_most_the_bound_and_searches_still_find_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let bounded = || StoreOptions { max_operations_per_service: 3, ..options(dir.path()) };
    let store = EmbeddedStore::open(bounded()).unwrap();
    for t in 1..=10u64 {
        store.append(vec![span(u128::from(t), t, 0, "a", &format!("op{t}"), t * 10)]).unwrap();
    }
    store.append(vec![span(11, 11, 0, "b", "other", 110)]).unwrap();
    let by_name = |store: &EmbeddedStore, name: &str| {
        store.find_trace_ids(&TraceQuery { operation: Some(name.into()), ..TraceQuery::default() }).unwrap()
    };
    assert_eq!(store.operations("a", None).unwrap().len(), 3);
    assert_eq!(operation_names(&store, "b"), vec!["other"], "another service has its own bound");
    assert!(store.operations_capped("a").unwrap(), "the answer can say it is partial");
    assert!(!store.operations_capped("b").unwrap());
    assert_eq!(store.stats().operations_unlisted, 7);
    assert_eq!(by_name(&store, "op9"), vec![TraceId(9)], "found in memory");
    store.flush().unwrap();
    assert_eq!(store.operations("a", None).unwrap().len(), 3);
    assert_eq!(by_name(&store, "op9"), vec![TraceId(9)], "found in a block");
    // New names in a later head do not grow the list either.
    store.append(vec![span(12, 12, 0, "a", "op12", 120)]).unwrap();
    assert_eq!(store.operations("a", None).unwrap().len(), 3);
    store.flush().unwrap();
    assert_eq!(store.operations("a", None).unwrap().len(), 3);
    assert!(store.stats().operations_unlisted >= 8);
    drop(store);
    let store = EmbeddedStore::open(bounded()).unwrap();
    assert_eq!(store.operations("a", None).unwrap().len(), 3);
    assert_eq!(by_name(&store, "op12"), vec![TraceId(12)], "found after a restart");
    assert!(store.operations_capped("a").unwrap());
    assert_eq!(store.get_trace(TraceId(7)).unwrap().len(), 1);
}

/// Services beyond the bound are not listed, counted, and their spans still stored and
/// found by a search naming the service, in memory, in blocks and after a restart.
#[test]
fn the_catalog_lists_at_most_max_services_and_searches_by_service_still_find_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let bounded = || StoreOptions { max_services: 3, ..options(dir.path()) };
    let store = EmbeddedStore::open(bounded()).unwrap();
    for t in 1..=10u64 {
        store.append(vec![span(u128::from(t), t, 0, &format!("svc{t:02}"), "op", t * 10)]).unwrap();
    }
    let by_service = |store: &EmbeddedStore, service: &str| {
        store.find_trace_ids(&TraceQuery { service: Some(service.into()), ..TraceQuery::default() }).unwrap()
    };
    let listed = ["svc01", "svc02", "svc03"];
    assert_eq!(store.services().unwrap(), listed, "the first services seen");
    assert_eq!(store.stats().services_unlisted, 7);
    assert_eq!(by_service(&store, "svc09"), vec![TraceId(9)], "found in memory");
    store.flush().unwrap();
    assert_eq!(store.services().unwrap(), listed);
    assert_eq!(by_service(&store, "svc09"), vec![TraceId(9)], "found in a block");
    // New services in a later head do not grow the list either: the head lists them while
    // it holds them alone, the flush finds no room for them.
    store.append(vec![span(11, 11, 0, "svc11", "op", 110)]).unwrap();
    assert_eq!(store.services().unwrap(), listed);
    store.flush().unwrap();
    assert_eq!(store.services().unwrap(), listed);
    assert_eq!(store.stats().services_unlisted, 8);
    // A listed service keeps listing its new operations.
    store.append(vec![span(12, 12, 0, "svc02", "op2", 120)]).unwrap();
    assert_eq!(operation_names(&store, "svc02"), vec!["op", "op2"]);
    drop(store);
    let store = EmbeddedStore::open(bounded()).unwrap();
    assert_eq!(store.services().unwrap(), listed);
    assert_eq!(by_service(&store, "svc11"), vec![TraceId(11)], "found after a restart");
    assert_eq!(store.get_trace(TraceId(7)).unwrap().len(), 1);
    // A higher bound lists more from then on; what was unlisted is not listed retroactively
    // (the catalog indexes names as they arrive), but new services are.
    drop(store);
    let store = EmbeddedStore::open(StoreOptions { max_services: 4, ..options(dir.path()) }).unwrap();
    store.append(vec![span(13, 13, 0, "svc13", "op", 130)]).unwrap();
    assert_eq!(store.services().unwrap(), ["svc01", "svc02", "svc03", "svc13"]);
}

#[test]
fn the_catalog_keeps_kinds_apart_and_filters_by_kind() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut client = span(1, 2, 1, "a", "call", 10);
    client.kind = SpanKind::Client;
    store.append(vec![span(1, 1, 0, "a", "call", 10), client]).unwrap();
    store.flush().unwrap();
    store.append(vec![span(2, 3, 0, "a", "call", 20)]).unwrap();
    let ops = store.operations("a", None).unwrap();
    assert_eq!(
        ops,
        vec![
            Operation { name: "call".into(), kind: SpanKind::Server },
            Operation { name: "call".into(), kind: SpanKind::Client }
        ]
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
    );
    assert_eq!(store.operations("a", Some(SpanKind::Client)).unwrap().len(), 1);
}

/// One span stamped decades ahead (a client clock) must not keep its block past retention.
#[test]
fn a_span_from_a_future_clock_does_not_pin_its_block() {
    let dir = tempfile::tempdir().unwrap();
    let retention = Duration::from_secs(3600);
    let store = EmbeddedStore::open(StoreOptions { retention: Some(retention), ..options(dir.path()) }).unwrap();
    let now = now_unix_nanos();
    let year_2076 = 3_345_000_000u64 * 1_000_000_000;
    store.append(vec![span(1, 1, 0, "a", "op", now), span(1, 2, 1, "a", "op", year_2076)]).unwrap();
    store.flush().unwrap();
    assert_eq!(store.enforce_retention(now + retention.as_nanos() as u64 / 2).unwrap(), 0, "kept while young");
    assert_eq!(store.stats().blocks, 1);
    let later = now_unix_nanos() + retention.as_nanos() as u64 + 1;
    assert_eq!(store.enforce_retention(later).unwrap(), 1, "dropped by when it came, not by its clock");
    assert_eq!(store.stats().blocks, 0);
}

/// The Parquet decoder panicked on some damaged files (debug builds); such a panic becomes
/// that block's error instead of ending the thread reading it.
#[test]
fn a_panicking_block_read_is_an_error() {
    let path = Path::new("blocks/0000000000000001.parquet");
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result: Result<(), StoreError> = guarded(path, || panic!("attempt to subtract with overflow"));
    std::panic::set_hook(hook);
    let text = result.unwrap_err().to_string();
    assert!(text.contains("0000000000000001.parquet") && text.contains("subtract with overflow"), "{text}");
    assert_eq!(guarded(path, || Ok(7)).unwrap(), 7);
}

/// The log is folded into a new snapshot once it would hold more entries than the snapshot
/// (at least 1024), so neither grows by more than what was added.
#[test]
fn the_catalog_log_is_folded_into_the_snapshot_once_it_outgrows_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("catalog.log");
    let snapshot_entries = || {
        let text = fs::read(dir.path().join("catalog.json")).unwrap();
        let services: Vec<(String, Vec<(String, SpanKind)>)> = serde_json::from_slice(&text).unwrap();
        services.iter().map(|(_, ops)| ops.len()).sum::<usize>()
    };
    {
        let store = open(dir.path());
        store.append((0..1000u64).map(|i| span(1, i + 1, 0, "a", &format!("op{i}"), 10)).collect()).unwrap();
        store.flush().unwrap();
        assert_eq!(fs::read_to_string(&log).unwrap().lines().count(), 1000, "appended, not rewritten");
        assert_eq!(snapshot_entries(), 0);
        store.append((1000..1100u64).map(|i| span(2, i + 1, 0, "a", &format!("op{i}"), 10)).collect()).unwrap();
        store.flush().unwrap();
        assert_eq!(fs::read_to_string(&log).unwrap(), "", "folded into the snapshot");
        assert_eq!(snapshot_entries(), 1100);
        store.append(vec![span(3, 5000, 0, "a", "late", 10)]).unwrap();
        store.flush().unwrap();
        assert_eq!(fs::read_to_string(&log).unwrap().lines().count(), 1);
    }
    let store = open(dir.path());
    assert_eq!(store.operations("a", None).unwrap().len(), 1101);
    assert_eq!(store.stats().catalog_rebuilds, 0);
}

/// A record that passes its checksum but does not decode (a bug, or a newer payload
/// version) is kept aside too: its segment is deleted once a block covers it.
#[test]
fn an_undecodable_log_record_is_kept_aside() {
    let dir = tempfile::tempdir().unwrap();
    let wal_dir = dir.path().join("wal");
    fs::create_dir_all(&wal_dir).unwrap();
    let good = crate::batch_codec::encode_batch(&[span(1, 1, 0, "a", "op", 10)]).unwrap();
    let bad = b"\xffnot a batch".to_vec();
    {
        let wal = Wal::open(&wal_dir, 1, SyncPolicy::Always).unwrap();
        wal.append(bad.clone()).unwrap();
        wal.append(good).unwrap();
    }
    let store = open(dir.path());
    let stats = store.stats();
    assert_eq!((stats.wal_records_undecodable, stats.wal_bytes_set_aside), (1, 8 + bad.len() as u64));
    assert_eq!(store.get_trace(TraceId(1)).unwrap().len(), 1);
    let aside = PathBuf::from(format!("{}.0.unread", wal::segment_path(&wal_dir, 1).display()));
    assert_eq!(&fs::read(&aside).unwrap()[8..], &bad[..]);
    store.flush().unwrap();
    assert_eq!(&fs::read(&aside).unwrap()[8..], &bad[..], "kept after its segment is gone");
}

/// A block written before metas recorded when its spans came is aged from its meta file's
/// time, so a span from a future clock does not pin it either.
#[test]
fn a_block_of_an_older_release_is_aged_from_its_meta_file_time() {
    let dir = tempfile::tempdir().unwrap();
    let year_2076 = 3_345_000_000u64 * 1_000_000_000;
    {
        let store = open(dir.path());
        store.append(vec![span(1, 1, 0, "a", "op", year_2076)]).unwrap();
        store.flush().unwrap();
    }
    let meta = block_metas(dir.path()).pop().unwrap();
    let mut json: serde_json::Value = serde_json::from_slice(&fs::read(&meta).unwrap()).unwrap();
    assert!(json.as_object_mut().unwrap().remove("ingested_unix_nano").is_some());
    fs::write(&meta, serde_json::to_vec(&json).unwrap()).unwrap();
    let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
    File::options().write(true).open(&meta).unwrap().set_modified(two_hours_ago).unwrap();
    let retention = Duration::from_secs(3600);
    let store = EmbeddedStore::open(StoreOptions { retention: Some(retention), ..options(dir.path()) }).unwrap();
    assert_eq!(store.stats().blocks, 1);
    assert_eq!(store.enforce_retention(now_unix_nanos()).unwrap(), 1);
}

/// The meta files in `dir/blocks`, oldest first.
fn block_metas(dir: &Path) -> Vec<PathBuf> {
    let mut metas: Vec<_> = fs::read_dir(dir.join("blocks"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".meta.json"))
        .collect();
    metas.sort();
    metas
}

/// A projected trace read carries the same spans as a whole one — from blocks, the head,
/// and both when a retry put a span in each — with only the attributes asked for.
#[test]
fn projected_trace_reads_carry_the_same_spans() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut first: Vec<Span> = (1..=40).map(|i| span(u128::from(i % 7) + 1, i, 0, "api", "op", 1_000 + i)).collect();
    for s in &mut first {
        s.attributes.push(KeyValue::string("other", "x"));
    }
    store.append(first.clone()).unwrap();
    store.flush().unwrap();
    // A retried span lands in the head again, beside a new one.
    store.append(vec![first[3].clone(), span(2, 99, 0, "api", "late", 5_000)]).unwrap();
    let ids: Vec<TraceId> = (1..=8).map(TraceId).collect();
    let fields = SpanFields::with_attributes(["symbol"]);
    let projected = store.get_traces_fields(&ids, &fields).unwrap();
    let whole = store.get_traces(&ids).unwrap();
    assert_eq!(projected.len(), whole.len());
    for (p, w) in projected.iter().zip(&whole) {
        let key = |s: &Span| (s.span_id, s.start_time_unix_nano);
        let mut p_ids: Vec<_> = p.iter().map(key).collect();
        let mut w_ids: Vec<_> = w.iter().map(key).collect();
        p_ids.sort();
        w_ids.sort();
        assert_eq!(p_ids, w_ids);
        for s in p.iter().filter(|s| s.span_id != SpanId(99) && s.span_id != first[3].span_id) {
            let keys: Vec<&str> = s.attributes.iter().map(|kv| kv.key.as_str()).collect();
            assert_eq!(keys, ["symbol"], "span {:?}", s.span_id);
        }
    }
    assert_eq!(projected[7], Vec::<Span>::new(), "trace 8 does not exist");
}
