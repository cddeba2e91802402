//! Criterion benches of the embedded store alone on the reference workload: append (durable,
//! sync=always), flush of a head into a block, trace-by-id lookup and search over flushed
//! blocks. `cargo bench -p spindle-store --bench store`
//!
//! The lookup and search fixtures hold `SPINDLE_BENCH_SPANS` spans (default 1,000,000);
//! `examples/store_figures.rs` measures the larger figures of `docs/PERFORMANCE.md`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
#[path = "../tests/support/generator.rs"]
mod generator;

use generator::Generator;
use spindle_model::TraceId;
use spindle_store::{EmbeddedStore, StoreOptions, TraceQuery, TraceStore};

const START: u64 = 1_700_000_000_000_000_000;

fn quiet_options(dir: &std::path::Path) -> StoreOptions {
    // Background threads off: each bench measures one thing.
    StoreOptions { background: false, ..StoreOptions::new(dir) }
}

fn append(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(quiet_options(dir.path())).expect("open");
    let mut generator = Generator::new(1, START);
    let mut group = c.benchmark_group("append");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("batch_of_1000_spans_sync_always", |b| {
        b.iter_batched(|| generator.batch(100), |batch| store.append(batch).expect("append"), BatchSize::SmallInput);
        // Keep the head from growing without bound across iterations.
        store.flush().expect("flush");
    });
    group.finish();
}

fn flush(c: &mut Criterion) {
    let mut group = c.benchmark_group("flush");
    group.sample_size(10);
    group.throughput(Throughput::Elements(50_000));
    let mut generator = Generator::new(2, START);
    group.bench_function("head_of_50k_spans_to_block", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().expect("tempdir");
                let store = EmbeddedStore::open(StoreOptions {
                    sync: spindle_store::SyncPolicy::Interval(Duration::from_secs(10)),
                    ..quiet_options(dir.path())
                })
                .expect("open");
                for _ in 0..50 {
                    store.append(generator.batch(100)).expect("append");
                }
                (dir, store)
            },
            |(dir, store)| {
                store.flush().expect("flush");
                (dir, store)
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: EmbeddedStore,
    ids: Vec<TraceId>,
}

fn fixture() -> Fixture {
    let spans: usize = std::env::var("SPINDLE_BENCH_SPANS").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(StoreOptions {
        sync: spindle_store::SyncPolicy::Interval(Duration::from_secs(1)),
        ..quiet_options(dir.path())
    })
    .expect("open");
    let mut generator = Generator::new(3, START);
    let mut ids = Vec::new();
    for i in 0..spans / 1000 {
        let batch = generator.batch(100);
        if i % 3 == 0 {
            ids.push(batch[0].trace_id);
        }
        store.append(batch).expect("append");
        if i % 250 == 249 {
            store.flush().expect("flush");
        }
    }
    store.flush().expect("flush");
    while store.compact().expect("compact") {}
    Fixture { _dir: dir, store, ids }
}

fn lookup_and_search(c: &mut Criterion) {
    let f = fixture();
    let mut group = c.benchmark_group("query");
    group.sample_size(20);
    let mut i = 0;
    group.bench_function("trace_by_id", |b| {
        b.iter(|| {
            i = (i + 1) % f.ids.len();
            let trace = f.store.get_trace(f.ids[i]).expect("get");
            assert_eq!(trace.len(), 10);
        })
    });
    let query = TraceQuery {
        service: Some("quote-api".into()),
        attributes: vec![("symbol".into(), "TK042".into())],
        duration_min_nanos: Some(10_000_000),
        limit: 20,
        ..Default::default()
    };
    group.bench_function("search_service_attribute_min_duration", |b| {
        b.iter(|| black_box(f.store.find_trace_ids(&query).expect("search")))
    });
    group.finish();
}

criterion_group!(benches, append, flush, lookup_and_search);
criterion_main!(benches);
