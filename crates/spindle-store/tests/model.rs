//! Property test: any sequence of appends, flushes, compactions, retention passes and
//! reopens leaves the embedded store answering every query exactly as a plain in-memory
//! model of the same history does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use spindle_model::{
    dependency_edges, links_from_edges, AttributeValue, Event, KeyValue, Resource, Scope, Span, SpanId, SpanKind,
    Status, StatusCode, TraceId,
};
use spindle_store::{
    EmbeddedStore, Operation, RowFields, SpanFields, SpanRow, StoreOptions, SyncPolicy, TraceQuery, TraceStore,
};

const RETENTION: Duration = Duration::from_nanos(1_000);
const SERVICES: [&str; 3] = ["api", "db-writer", "kafka-consumer"];
const NAMES: [&str; 3] = ["get", "put", "consume"];
const KEYS: [&str; 7] =
    ["symbol", "http.route", "http.response.status_code", "messaging.system", "db.system", "peer.service", "k"];
const TEXTS: [&str; 4] = ["kafka", "postgresql", "7", "true"];

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<Span>),
    /// Appends again a batch appended before, as a client retry does.
    Retry(usize),
    Flush,
    Compact,
    /// Drops blocks whose newest span started before the cutoff.
    Retention(u64),
    Reopen,
}

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

/// Spans of a few small traces; span ids are unique, so only retries repeat a span.
fn batch(next_span: &mut u64, raw: Vec<RawSpan>) -> Vec<Span> {
    raw.into_iter()
        .map(|r| {
            *next_span += 1;
            let kind =
                [SpanKind::Server, SpanKind::Client, SpanKind::Producer, SpanKind::Consumer, SpanKind::Unspecified]
                    [r.kind];
            Span {
                trace_id: TraceId(r.trace as u128 + 1),
                span_id: SpanId(*next_span),
                parent_span_id: SpanId(if r.parent == 0 { 0 } else { next_span.saturating_sub(r.parent) }),
                name: NAMES[r.name].into(),
                kind,
                start_time_unix_nano: r.start * 1_000,
                end_time_unix_nano: r.start * 1_000 + r.duration,
                attributes: r.attributes,
                events: r
                    .event
                    .map(|attrs| {
                        vec![Event {
                            time_unix_nano: r.start,
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
struct RawSpan {
    trace: u8,
    parent: u64,
    service: usize,
    name: usize,
    kind: usize,
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

#[derive(Debug, Clone)]
enum RawOp {
    Append(Vec<RawSpan>),
    Retry(usize),
    Flush,
    Compact,
    Retention(u64),
    Reopen,
}

fn ops() -> impl Strategy<Value = Vec<RawOp>> {
    let op = prop_oneof![
        6 => prop::collection::vec(raw_span(), 1..6).prop_map(RawOp::Append),
        1 => (0usize..100).prop_map(RawOp::Retry),
        3 => Just(RawOp::Flush),
        1 => Just(RawOp::Compact),
        1 => (0u64..100_000).prop_map(RawOp::Retention),
        1 => Just(RawOp::Reopen),
    ];
    prop::collection::vec(op, 1..25)
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
        (0u64..100_000, 0u64..100_000),
        prop::option::weighted(0.3, 0u64..5_000),
        prop::option::weighted(0.2, 0u64..5_000),
        1usize..6,
    )
        .prop_map(|(service, operation, span_kind, attributes, (t1, t2), dmin, dmax, limit)| TraceQuery {
            service: service.map(str::to_string),
            operation: operation.map(str::to_string),
            span_kind,
            attributes: attributes.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            start_time_min_unix_nano: t1.min(t2),
            start_time_max_unix_nano: t1.max(t2),
            duration_min_nanos: dmin,
            duration_max_nanos: dmax,
            limit,
            ..TraceQuery::default()
        })
}

/// What the store should hold: blocks as groups of spans, plus the head.
#[derive(Default)]
struct Model {
    groups: Vec<Vec<Span>>,
    head: Vec<Span>,
    catalog: BTreeMap<String, BTreeSet<Operation>>,
}

impl Model {
    fn spans(&self) -> Vec<&Span> {
        let mut all: Vec<&Span> = Vec::new();
        for s in self.groups.iter().flatten().chain(&self.head) {
            if !all.contains(&s) {
                all.push(s);
            }
        }
        all
    }

    fn traces(&self) -> BTreeMap<TraceId, Vec<Span>> {
        let mut traces: BTreeMap<TraceId, Vec<Span>> = BTreeMap::new();
        for s in self.spans() {
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

/// Small row groups exercise row-group pruning and scans across groups; larger ones leave
/// few rows after the cheap filters, where list columns are read for those rows only.
fn open(dir: &std::path::Path, row_group_spans: usize) -> EmbeddedStore {
    EmbeddedStore::open(StoreOptions {
        sync: SyncPolicy::Interval(Duration::from_secs(1)),
        retention: Some(RETENTION),
        row_group_spans,
        background: false,
        ..StoreOptions::new(dir)
    })
    .expect("open store")
}

fn check(store: &EmbeddedStore, model: &Model, queries: &[TraceQuery]) -> Result<(), TestCaseError> {
    let traces = model.traces();
    for t in 1..=6u128 {
        let want = traces.get(&TraceId(t)).cloned().unwrap_or_default();
        prop_assert_eq!(sorted(store.get_trace(TraceId(t)).unwrap()), sorted(want), "trace {}", t);
    }
    for q in queries {
        prop_assert_eq!(store.find_trace_ids(q).unwrap(), model.find(q), "query {:?}", q);
    }
    let services: Vec<String> = model.catalog.keys().cloned().collect();
    prop_assert_eq!(store.services().unwrap(), services);
    for (service, ops) in &model.catalog {
        prop_assert_eq!(&store.operations(service, None).unwrap(), &ops.iter().cloned().collect::<Vec<_>>());
        let servers: Vec<Operation> = ops.iter().filter(|o| o.kind == SpanKind::Server).cloned().collect();
        prop_assert_eq!(store.operations(service, Some(SpanKind::Server)).unwrap(), servers);
    }
    for (start, end) in [(0, u64::MAX), (20_000, 60_000)] {
        let got: Vec<_> =
            store.dependencies(start, end).unwrap().into_iter().map(|l| (l.parent, l.child, l.call_count)).collect();
        prop_assert_eq!(got, model.dependencies(start, end));
    }
    let projections = [
        SpanFields::bare(),
        SpanFields::with_attributes(["symbol", "http.response.status_code"]),
        // Dedicated keys only: values of another type still sit in the generic lists.
        SpanFields::with_attributes(["messaging.system", "peer.service"]),
        SpanFields { attributes: Some(vec!["db.system".into(), "k".into()]), events: true },
        SpanFields { attributes: None, events: true },
    ];
    for q in queries {
        for fields in &projections {
            let mut got = Vec::new();
            store.scan_fields(q, fields, &mut |s| got.push(project(s, fields))).unwrap();
            // A retry not yet compacted away may be visited twice; count each span once.
            got.sort_by_key(|s| s.span_id);
            got.dedup();
            let want: Vec<Span> =
                sorted(model.spans().into_iter().filter(|s| q.matches_span(s)).map(|s| project(s, fields)).collect());
            prop_assert_eq!(got, want, "scan {:?} with {:?}", q, fields);
        }
    }
    let row_fields = [
        RowFields::default(),
        RowFields { group_by: Some("symbol".into()), ids: true, operation: true },
        RowFields { group_by: Some("http.response.status_code".into()), ids: false, operation: false },
        RowFields { group_by: Some("messaging.system".into()), ids: true, operation: false },
        RowFields { group_by: Some("service.name".into()), ids: false, operation: true },
        RowFields { group_by: Some("k".into()), ids: true, operation: true },
        RowFields { group_by: Some("span.name".into()), ids: false, operation: false },
    ];
    for q in queries {
        for fields in &row_fields {
            let mut got: Vec<String> = Vec::new();
            store.scan_rows(q, fields, &mut |r| got.push(format!("{r:?}"))).unwrap();
            got.sort();
            // Split over three visitors (threads), the same rows as many times, none lost.
            let mut parts: [Vec<String>; 3] = Default::default();
            {
                let mut visitors: Vec<_> =
                    parts.iter_mut().map(|part| move |r: &SpanRow| part.push(format!("{r:?}"))).collect();
                let mut refs: Vec<&mut (dyn FnMut(&SpanRow) + Send)> =
                    visitors.iter_mut().map(|v| v as &mut (dyn FnMut(&SpanRow) + Send)).collect();
                store.scan_rows_split(q, fields, &mut refs).unwrap();
            }
            let mut split: Vec<String> = parts.concat();
            split.sort();
            prop_assert_eq!(&split, &got, "split rows {:?} with {:?}", q, fields);
            got.dedup();
            let mut want: Vec<String> = model
                .spans()
                .into_iter()
                .filter(|s| q.matches_span(s))
                .map(|s| format!("{:?}", SpanRow::of(s, fields)))
                .collect();
            want.sort();
            want.dedup();
            prop_assert_eq!(got, want, "rows {:?} with {:?}", q, fields);
        }
    }
    Ok(())
}

/// What a projected scan promises to carry of `span`. Kept apart from the store's own
/// projection, which gives a stricter attribute order, so that this test checks it.
fn project(span: &Span, fields: &SpanFields) -> Span {
    let mut attributes: Vec<KeyValue> = span
        .attributes
        .iter()
        .filter(|kv| fields.attributes.as_ref().is_none_or(|keys| keys.iter().any(|k| *k == kv.key)))
        .cloned()
        .collect();
    if fields.attributes.is_some() {
        // Only the full projection promises the original order.
        attributes.sort_by(|a, b| a.key.cmp(&b.key));
    }
    Span {
        trace_id: span.trace_id,
        span_id: span.span_id,
        parent_span_id: span.parent_span_id,
        name: span.name.clone(),
        kind: span.kind,
        start_time_unix_nano: span.start_time_unix_nano,
        end_time_unix_nano: span.end_time_unix_nano,
        status: span.status.clone(),
        resource: Arc::clone(&span.resource),
        scope: Arc::clone(&span.scope),
        attributes,
        events: if fields.events { span.events.clone() } else { Vec::new() },
        ..Default::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(raw_ops in ops(), queries in prop::collection::vec(query(), 6), rg in prop::sample::select(vec![3usize, 24])) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path(), rg);
        let mut model = Model::default();
        let mut batches: Vec<Vec<Span>> = Vec::new();
        let mut next_span = 0;
        for raw in raw_ops {
            let op = match raw {
                RawOp::Append(spans) => Op::Append(batch(&mut next_span, spans)),
                RawOp::Retry(i) => Op::Retry(i),
                RawOp::Flush => Op::Flush,
                RawOp::Compact => Op::Compact,
                RawOp::Retention(cutoff) => Op::Retention(cutoff),
                RawOp::Reopen => Op::Reopen,
            };
            match op {
                Op::Append(spans) => {
                    store.append(spans.clone()).unwrap();
                    for s in &spans {
                        model.catalog.entry(s.service_name().to_string()).or_default()
                            .insert(Operation { name: s.name.to_string(), kind: s.kind });
                        if !model.head.contains(s) {
                            model.head.push(s.clone());
                        }
                    }
                    batches.push(spans);
                }
                Op::Retry(i) => {
                    if let Some(spans) = batches.get(i % batches.len().max(1)).cloned() {
                        store.append(spans.clone()).unwrap();
                        for s in spans {
                            if !model.head.contains(&s) {
                                model.head.push(s);
                            }
                        }
                    }
                }
                Op::Flush => {
                    store.flush().unwrap();
                    if !model.head.is_empty() {
                        model.groups.push(std::mem::take(&mut model.head));
                    }
                }
                Op::Compact => {
                    let merged = store.compact_all().unwrap();
                    prop_assert_eq!(merged, model.groups.len() >= 2);
                    if merged {
                        let all: Vec<Span> = model.groups.drain(..).flatten().collect();
                        model.groups.push(all);
                    }
                }
                Op::Retention(cutoff) => {
                    store.enforce_retention(cutoff + RETENTION.as_nanos() as u64).unwrap();
                    model.groups.retain(|g| g.iter().map(|s| s.start_time_unix_nano).max().unwrap_or(0) >= cutoff);
                }
                Op::Reopen => {
                    drop(store);
                    store = open(dir.path(), rg);
                }
            }
        }
        check(&store, &model, &queries)?;
        drop(store);
        let store = open(dir.path(), rg);
        check(&store, &model, &queries)?;
    }
}

#[test]
fn model_helpers_agree_with_themselves() {
    // Guards the model against a silently empty history: two spans of one trace, one query.
    let mut next = 0;
    let spans = batch(
        &mut next,
        vec![RawSpan {
            trace: 0,
            parent: 0,
            service: 0,
            name: 0,
            kind: 0,
            start: 5,
            duration: 10,
            status: 0,
            attributes: vec![KeyValue::string("symbol", "kafka")],
            event: None,
        }],
    );
    let model = Model { head: spans, ..Default::default() };
    let q = TraceQuery { attributes: vec![("symbol".into(), "kafka".into())], ..Default::default() };
    assert_eq!(model.find(&q), vec![TraceId(1)]);
}
