//! The in-memory model and the proptest strategies of the stores' model tests.
//!
//! The embedded store (`tests/model.rs` here) and the ClickHouse store (spindle-clickhouse's
//! `tests/model.rs`) are both held against this one model: the same random spans, the same
//! queries and the same expected answers, so that the two stores cannot drift apart in what
//! they answer. Each test keeps what only its store has (the embedded store's flushes,
//! compaction and retention; the ClickHouse cluster) and says through a [`Timeline`] where
//! in time its spans land.
//!
//! Compiled only with the `test-model` feature, which the tests turn on.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::Arc;

use proptest::prelude::*;
use spindle_model::{
    dependency_edges, links_from_edges, AttributeValue, Event, KeyValue, Resource, Scope, Span, SpanId, SpanKind,
    Status, StatusCode, TraceId,
};

use crate::{Operation, TraceQuery, TraceStore};

pub const SERVICES: [&str; 3] = ["api", "db-writer", "kafka-consumer"];
pub const NAMES: [&str; 3] = ["get", "put", "consume"];
pub const KEYS: [&str; 7] =
    ["symbol", "http.route", "http.response.status_code", "messaging.system", "db.system", "peer.service", "k"];
pub const TEXTS: [&str; 4] = ["kafka", "postgresql", "7", "true"];

/// Where the raw times of [`RawSpan`] and [`query`] land in nanoseconds: a store may need
/// its spans spread over days (partitions) rather than over a few microseconds.
#[derive(Debug, Clone)]
pub struct Timeline {
    /// A span's start from its raw start.
    pub span_start: fn(u64) -> u64,
    /// A span event's time from the span's raw start.
    pub event_time: fn(u64) -> u64,
    /// The raw bounds of a query's start-time window are drawn from here...
    pub query_window: Range<u64>,
    /// ...and land at this time.
    pub query_time: fn(u64) -> u64,
}

pub fn value() -> impl Strategy<Value = AttributeValue> {
    prop_oneof![
        prop::sample::select(TEXTS.to_vec()).prop_map(|s| AttributeValue::String(s.into())),
        (0i64..10).prop_map(AttributeValue::Int),
        any::<bool>().prop_map(AttributeValue::Bool),
        Just(AttributeValue::Double(7.0)),
        Just(AttributeValue::Array(vec![AttributeValue::Int(7)])),
    ]
}

pub fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    prop::collection::vec((prop::sample::select(KEYS.to_vec()), value()), 0..4)
        .prop_map(|kvs| kvs.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect())
}

/// A span before [`batch`] gives it ids and times: indexes into the constants above.
#[derive(Debug, Clone)]
pub struct RawSpan {
    pub trace: u8,
    /// How many spans back the parent is; 0 for a root.
    pub parent: u64,
    pub service: usize,
    pub name: usize,
    pub kind: usize,
    /// Mapped to nanoseconds by [`Timeline::span_start`].
    pub start: u64,
    pub duration: u64,
    pub status: usize,
    pub attributes: Vec<KeyValue>,
    pub event: Option<Vec<KeyValue>>,
}

pub fn raw_span() -> impl Strategy<Value = RawSpan> {
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

/// Spans of a few small traces; span ids are unique, so only retries repeat a span.
pub fn batch(timeline: &Timeline, next_span: &mut u64, raw: Vec<RawSpan>) -> Vec<Span> {
    raw.into_iter()
        .map(|r| {
            *next_span += 1;
            let kind =
                [SpanKind::Server, SpanKind::Client, SpanKind::Producer, SpanKind::Consumer, SpanKind::Unspecified]
                    [r.kind];
            let start = (timeline.span_start)(r.start);
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
                            time_unix_nano: (timeline.event_time)(r.start),
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

/// Queries over the spans of [`raw_span`], including the span fields searched as tags.
pub fn query(timeline: &Timeline) -> impl Strategy<Value = TraceQuery> {
    let query_time = timeline.query_time;
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
        (timeline.query_window.clone(), timeline.query_window.clone()),
        prop::option::weighted(0.3, 0u64..5_000),
        prop::option::weighted(0.2, 0u64..5_000),
        1usize..6,
        prop::option::weighted(0.2, prop::sample::select(vec![StatusCode::Error, StatusCode::Ok, StatusCode::Unset])),
    )
        .prop_map(move |(service, operation, span_kind, attributes, (t1, t2), dmin, dmax, limit, status)| {
            TraceQuery {
                service: service.map(str::to_string),
                operation: operation.map(str::to_string),
                span_kind,
                status,
                attributes: attributes.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                start_time_min_unix_nano: query_time(t1.min(t2)),
                start_time_max_unix_nano: query_time(t1.max(t2)),
                duration_min_nanos: dmin,
                duration_max_nanos: dmax,
                limit,
                ..TraceQuery::default()
            }
        })
}

/// Services and their operations, as a store lists them.
pub type Catalog = BTreeMap<String, BTreeSet<Operation>>;

/// Adds the services and operations of `spans` to `catalog`.
pub fn record_operations(catalog: &mut Catalog, spans: &[Span]) {
    for s in spans {
        catalog
            .entry(s.service_name().to_string())
            .or_default()
            .insert(Operation { name: s.name.to_string(), kind: s.kind });
    }
}

/// What a store should answer, given what it should hold; each test models the holding.
pub trait SpanModel {
    /// Every distinct span the store should hold.
    fn spans(&self) -> Vec<&Span>;

    /// Every service and operation appended, whether or not its spans are still held.
    fn catalog(&self) -> &Catalog;

    fn traces(&self) -> BTreeMap<TraceId, Vec<Span>> {
        let mut traces: BTreeMap<TraceId, Vec<Span>> = BTreeMap::new();
        for s in self.spans() {
            traces.entry(s.trace_id).or_default().push(s.clone());
        }
        traces
    }

    /// Traces with a matching span, the latest first span start first, at most `q.limit`.
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

    /// Dependency links `(parent, child, calls)` of traces whose first span starts in `[start, end]`.
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

pub fn sorted(mut spans: Vec<Span>) -> Vec<Span> {
    spans.sort_by_key(|s| s.span_id);
    spans
}

/// Checks what every store answers alike against the model: each of the six traces,
/// `find_trace_ids` of every query, the catalog, and dependencies over each of `windows`.
pub fn check_common<S: TraceStore>(
    store: &S,
    model: &impl SpanModel,
    queries: &[TraceQuery],
    windows: &[(u64, u64)],
) -> Result<(), TestCaseError> {
    let traces = model.traces();
    for t in 1..=6u128 {
        let want = traces.get(&TraceId(t)).cloned().unwrap_or_default();
        prop_assert_eq!(sorted(store.get_trace(TraceId(t)).unwrap()), sorted(want), "trace {}", t);
    }
    for q in queries {
        prop_assert_eq!(store.find_trace_ids(q).unwrap(), model.find(q), "query {:?}", q);
    }
    let services: Vec<String> = model.catalog().keys().cloned().collect();
    prop_assert_eq!(store.services().unwrap(), services);
    for (service, ops) in model.catalog() {
        prop_assert_eq!(&store.operations(service, None).unwrap(), &ops.iter().cloned().collect::<Vec<_>>());
        let servers: Vec<Operation> = ops.iter().filter(|o| o.kind == SpanKind::Server).cloned().collect();
        prop_assert_eq!(store.operations(service, Some(SpanKind::Server)).unwrap(), servers);
    }
    for &(start, end) in windows {
        let got: Vec<_> =
            store.dependencies(start, end).unwrap().into_iter().map(|l| (l.parent, l.child, l.call_count)).collect();
        prop_assert_eq!(got, model.dependencies(start, end));
    }
    Ok(())
}
