//! Property test: any sequence of appends, retried appends and reopens leaves the
//! ClickHouse store answering every query exactly as a plain in-memory model of the same
//! history does, against a real ClickHouse server and against a two-shard cluster of two
//! servers (appending and reading through either node). The model and strategies follow
//! spindle-store's `tests/model.rs`, minus what only the embedded store has (flushes,
//! compaction, retention passes).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use spindle_clickhouse::{ClickHouseOptions, ClickHouseStore};
use spindle_model::{
    dependency_edges, links_from_edges, AttributeValue, Event, KeyValue, Resource, Scope, Span, SpanId, SpanKind,
    Status, StatusCode, TraceId,
};
use spindle_store::{Operation, TraceQuery, TraceStore};
use spindle_test_support::ClickHouse;

const SERVICES: [&str; 3] = ["api", "db-writer", "kafka-consumer"];
const NAMES: [&str; 3] = ["get", "put", "consume"];
const KEYS: [&str; 7] =
    ["symbol", "http.route", "http.response.status_code", "messaging.system", "db.system", "peer.service", "k"];
const TEXTS: [&str; 4] = ["kafka", "postgresql", "7", "true"];

fn value() -> impl Strategy<Value = AttributeValue> {
    prop_oneof![
        prop::sample::select(TEXTS.to_vec()).prop_map(|s| AttributeValue::String(s.into())),
        (0i64..10).prop_map(AttributeValue::Int),
        any::<bool>().prop_map(AttributeValue::Bool),
        Just(AttributeValue::Double(7.0)),
        Just(AttributeValue::Array(vec![AttributeValue::Int(7)])),
    ]
}

fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    prop::collection::vec((prop::sample::select(KEYS.to_vec()), value()), 0..4)
        .prop_map(|kvs| kvs.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect())
}

#[derive(Debug, Clone)]
struct RawSpan {
    trace: u8,
    parent: u64,
    service: usize,
    name: usize,
    kind: usize,
    /// Seconds, so that spans fall on a few different days (partitions).
    start: u64,
    duration: u64,
    status: usize,
    attributes: Vec<KeyValue>,
    event: Option<Vec<KeyValue>>,
}

fn raw_span() -> impl Strategy<Value = RawSpan> {
    (
        (0u8..6, 0u64..3, 0usize..3, 0usize..3, 0usize..5),
        (0u64..100, 0u64..5_000, 0usize..3),
        attributes(),
        prop::option::weighted(0.2, attributes()),
    )
        .prop_map(|((trace, parent, service, name, kind), (start, duration, status), attributes, event)| RawSpan {
            trace,
            parent,
            service,
            name,
            kind,
            start,
            duration,
            status,
            attributes,
            event,
        })
}

/// Spans start `start` × 10 000 s after 2026-01-01, about a day apart at most by 9.
const EPOCH: u64 = 1_767_225_600_000_000_000;
const STEP: u64 = 10_000_000_000_000;

/// Spans of a few small traces; span ids are unique, so only retries repeat a span.
fn batch(next_span: &mut u64, raw: Vec<RawSpan>) -> Vec<Span> {
    raw.into_iter()
        .map(|r| {
            *next_span += 1;
            let kind =
                [SpanKind::Server, SpanKind::Client, SpanKind::Producer, SpanKind::Consumer, SpanKind::Unspecified]
                    [r.kind];
            let start = EPOCH + r.start * STEP;
            Span {
                trace_id: TraceId(r.trace as u128 + 1),
                span_id: SpanId(*next_span),
                parent_span_id: SpanId(if r.parent == 0 { 0 } else { next_span.saturating_sub(r.parent) }),
                name: NAMES[r.name].into(),
                kind,
                start_time_unix_nano: start,
                end_time_unix_nano: start + r.duration,
                attributes: r.attributes,
                events: r
                    .event
                    .map(|attrs| {
                        vec![Event {
                            time_unix_nano: start,
                            name: "retry".into(),
                            attributes: attrs,
                            dropped_attributes_count: 0,
                        }]
                    })
                    .unwrap_or_default(),
                status: Status {
                    code: [StatusCode::Unset, StatusCode::Ok, StatusCode::Error][r.status],
                    message: if r.status == 2 { "boom".into() } else { String::new() },
                },
                resource: Arc::new(Resource {
                    attributes: vec![
                        KeyValue::string("service.name", SERVICES[r.service]),
                        KeyValue::string("k", "true"),
                    ],
                    dropped_attributes_count: 0,
                }),
                scope: Arc::new(Scope {
                    name: if r.service == 0 { "lib".into() } else { String::new() },
                    ..Default::default()
                }),
                ..Default::default()
            }
        })
        .collect()
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

fn query() -> impl Strategy<Value = TraceQuery> {
    (
        prop::option::of(prop::sample::select(SERVICES.to_vec())),
        prop::option::weighted(0.3, prop::sample::select(NAMES.to_vec())),
        prop::option::weighted(0.2, prop::sample::select(vec![SpanKind::Server, SpanKind::Client, SpanKind::Producer])),
        prop::collection::vec(
            prop_oneof![
                (prop::sample::select(KEYS.to_vec()), prop::sample::select(TEXTS.to_vec())),
                (
                    prop::sample::select(vec![
                        "span.kind",
                        "error",
                        "otel.status_code",
                        "otel.status_description",
                        "otel.scope.name",
                        "event"
                    ]),
                    prop::sample::select(vec!["server", "true", "ERROR", "OK", "boom", "lib", "retry"]),
                ),
            ],
            0..3,
        ),
        (0u64..100, 0u64..100),
        prop::option::weighted(0.3, 0u64..5_000),
        prop::option::weighted(0.2, 0u64..5_000),
        1usize..6,
    )
        .prop_map(|(service, operation, span_kind, attributes, (t1, t2), dmin, dmax, limit)| TraceQuery {
            service: service.map(str::to_string),
            operation: operation.map(str::to_string),
            span_kind,
            attributes: attributes.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            start_time_min_unix_nano: EPOCH + t1.min(t2) * STEP,
            start_time_max_unix_nano: EPOCH + t1.max(t2) * STEP,
            duration_min_nanos: dmin,
            duration_max_nanos: dmax,
            limit,
            ..TraceQuery::default()
        })
}

/// What the store should hold: every distinct span appended, and the catalog.
#[derive(Default)]
struct Model {
    spans: Vec<Span>,
    catalog: BTreeMap<String, BTreeSet<Operation>>,
}

impl Model {
    fn append(&mut self, spans: &[Span]) {
        for s in spans {
            self.catalog
                .entry(s.service_name().to_string())
                .or_default()
                .insert(Operation { name: s.name.to_string(), kind: s.kind });
            if !self.spans.contains(s) {
                self.spans.push(s.clone());
            }
        }
    }

    fn traces(&self) -> BTreeMap<TraceId, Vec<Span>> {
        let mut traces: BTreeMap<TraceId, Vec<Span>> = BTreeMap::new();
        for s in &self.spans {
            traces.entry(s.trace_id).or_default().push(s.clone());
        }
        traces
    }

    fn find(&self, q: &TraceQuery) -> Vec<TraceId> {
        let mut found: Vec<(u64, TraceId)> = self
            .traces()
            .into_iter()
            .filter(|(_, spans)| spans.iter().any(|s| q.matches_span(s)))
            .map(|(id, spans)| (spans.iter().map(|s| s.start_time_unix_nano).min().unwrap_or(0), id))
            .collect();
        found.sort_unstable_by(|a, b| b.cmp(a));
        found.truncate(q.limit);
        found.into_iter().map(|(_, id)| id).collect()
    }

    fn dependencies(&self, start: u64, end: u64) -> Vec<(String, String, u64)> {
        let mut edges = BTreeMap::new();
        for spans in self.traces().values() {
            let first = spans.iter().map(|s| s.start_time_unix_nano).min().unwrap_or(0);
            if first >= start && first <= end {
                dependency_edges(spans, &mut edges);
            }
        }
        links_from_edges(edges).into_iter().map(|l| (l.parent, l.child, l.call_count)).collect()
    }
}

fn sorted(mut spans: Vec<Span>) -> Vec<Span> {
    spans.sort_by_key(|s| s.span_id);
    spans
}

fn check(store: &ClickHouseStore, model: &Model, queries: &[TraceQuery]) -> Result<(), TestCaseError> {
    let traces = model.traces();
    for t in 1..=6u128 {
        let want = traces.get(&TraceId(t)).cloned().unwrap_or_default();
        prop_assert_eq!(sorted(store.get_trace(TraceId(t)).unwrap()), sorted(want), "trace {}", t);
    }
    for q in queries {
        prop_assert_eq!(store.find_trace_ids(q).unwrap(), model.find(q), "query {:?}", q);
        // The trait's default scan reads through find_trace_ids and get_trace.
        let mut got = Vec::new();
        store.scan_spans(q, &mut |s| got.push(s.clone())).unwrap();
        let want: Vec<Span> = model.spans.iter().filter(|s| q.matches_span(s)).cloned().collect();
        prop_assert_eq!(sorted(got), sorted(want), "scan {:?}", q);
    }
    let services: Vec<String> = model.catalog.keys().cloned().collect();
    prop_assert_eq!(store.services().unwrap(), services);
    for (service, ops) in &model.catalog {
        prop_assert_eq!(&store.operations(service, None).unwrap(), &ops.iter().cloned().collect::<Vec<_>>());
        let servers: Vec<Operation> = ops.iter().filter(|o| o.kind == SpanKind::Server).cloned().collect();
        prop_assert_eq!(store.operations(service, Some(SpanKind::Server)).unwrap(), servers);
    }
    for (start, end) in [(0, u64::MAX), (EPOCH + 20 * STEP, EPOCH + 60 * STEP)] {
        let got: Vec<_> =
            store.dependencies(start, end).unwrap().into_iter().map(|l| (l.parent, l.child, l.call_count)).collect();
        prop_assert_eq!(got, model.dependencies(start, end));
    }
    Ok(())
}

/// Runs `cases` random histories against stores from `open(database, n)`, where `n` counts
/// the opens of that database (a cluster target opens through a different node each time),
/// and checks every answer against the model.
fn run_model(cases: u32, open: &dyn Fn(&str, usize) -> ClickHouseStore) {
    let case = std::sync::atomic::AtomicU32::new(0);
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let strategy = (ops(), prop::collection::vec(query(), 6));
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
                        let spans = batch(&mut next_span, raw);
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
