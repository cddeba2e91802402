//! Property test: any sequence of appends, retried appends and reopens leaves the
//! ClickHouse store answering every query exactly as a plain in-memory model of the same
//! history does, against a real ClickHouse server and against a two-shard cluster of two
//! servers (appending and reading through either node). The model and strategies are
//! spindle-store's `test_model`, the same the embedded store is held against, minus what
//! only the embedded store has (flushes, compaction, retention passes).

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use spindle_clickhouse::{ClickHouseOptions, ClickHouseStore};
use spindle_model::Span;
use spindle_store::test_model::{
    batch, check_common, query, raw_span, record_operations, sorted, Catalog, RawSpan, SpanModel, Timeline,
};
use spindle_store::{TraceQuery, TraceStore};
use spindle_test_support::ClickHouse;

/// Spans start `start` × 10 000 s after 2026-01-01, about a day apart at most by 9.
const EPOCH: u64 = 1_767_225_600_000_000_000;
const STEP: u64 = 10_000_000_000_000;

/// Span starts, event times and query windows all land at [`at`], on a few different days
/// (partitions).
const TIMELINE: Timeline = Timeline { span_start: at, event_time: at, query_window: 0..100, query_time: at };

fn at(raw: u64) -> u64 {
    EPOCH + raw * STEP
}

#[derive(Debug, Clone)]
enum RawOp {
    Append(Vec<RawSpan>),
    /// Appends again a batch appended before, as an at-least-once writer does.
    Retry(usize),
    /// Opens a new store on the same database: migrations run again.
    Reopen,
}

fn ops() -> impl Strategy<Value = Vec<RawOp>> {
    let op = prop_oneof![
        6 => prop::collection::vec(raw_span(), 1..6).prop_map(RawOp::Append),
        2 => (0usize..100).prop_map(RawOp::Retry),
        1 => Just(RawOp::Reopen),
    ];
    prop::collection::vec(op, 1..16)
}

/// What the store should hold: every distinct span appended, and the catalog.
#[derive(Default)]
struct Model {
    spans: Vec<Span>,
    catalog: Catalog,
}

impl Model {
    fn append(&mut self, spans: &[Span]) {
        record_operations(&mut self.catalog, spans);
        for s in spans {
            if !self.spans.contains(s) {
                self.spans.push(s.clone());
            }
        }
    }
}

impl SpanModel for Model {
    fn spans(&self) -> Vec<&Span> {
        self.spans.iter().collect()
    }

    fn catalog(&self) -> &Catalog {
        &self.catalog
    }
}

fn check(store: &ClickHouseStore, model: &Model, queries: &[TraceQuery]) -> Result<(), TestCaseError> {
    check_common(store, model, queries, &[(0, u64::MAX), (at(20), at(60))])?;
    for q in queries {
        // The trait's default scan reads through find_trace_ids and get_trace.
        let mut got = Vec::new();
        store.scan_spans(q, &mut |s| got.push(s.clone())).unwrap();
        let want: Vec<Span> = model.spans.iter().filter(|s| q.matches_span(s)).cloned().collect();
        prop_assert_eq!(sorted(got), sorted(want), "scan {:?}", q);
    }
    Ok(())
}

/// Runs `cases` random histories against stores from `open(database, n)`, where `n` counts
/// the opens of that database (a cluster target opens through a different node each time),
/// and checks every answer against the model.
fn run_model(cases: u32, open: &dyn Fn(&str, usize) -> ClickHouseStore) {
    let case = std::sync::atomic::AtomicU32::new(0);
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let strategy = (ops(), prop::collection::vec(query(&TIMELINE), 6));
    runner
        .run(&strategy, |(raw_ops, queries)| {
            // A database per case (shrinking runs cases again), so cases never see each other.
            let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let database = format!("model_{n}");
            let mut opens = 0;
            let mut store = open(&database, opens);
            let mut model = Model::default();
            let mut batches: Vec<Vec<Span>> = Vec::new();
            let mut next_span = 0;
            for raw in raw_ops {
                match raw {
                    RawOp::Append(raw) => {
                        let spans = batch(&TIMELINE, &mut next_span, raw);
                        store.append(spans.clone()).unwrap();
                        model.append(&spans);
                        batches.push(spans);
                    }
                    RawOp::Retry(i) => {
                        if let Some(spans) = batches.get(i % batches.len().max(1)).cloned() {
                            store.append(spans.clone()).unwrap();
                            model.append(&spans);
                        }
                    }
                    RawOp::Reopen => {
                        opens += 1;
                        store = open(&database, opens);
                    }
                }
            }
            check(&store, &model, &queries)?;
            check(&open(&database, opens + 1), &model, &queries)
        })
        .unwrap();
}

#[test]
fn clickhouse_store_matches_model() {
    let server = ClickHouse::start();
    run_model(24, &|database, _| ClickHouseStore::open(ClickHouseOptions::new(&server.http_url, database)).unwrap());
}

/// The same histories through a two-shard cluster: appends and reads through either node
/// answer as one server does.
#[test]
fn clickhouse_cluster_matches_model() {
    let nodes = ClickHouse::start_cluster(2, "model_shards");
    let urls: Vec<String> = nodes.iter().map(|n| n.http_url.clone()).collect();
    run_model(10, &|database, opens| {
        let via = &urls[opens % urls.len()];
        ClickHouseStore::open(ClickHouseOptions::new(via, database).with_cluster("model_shards", urls.clone())).unwrap()
    });
}
