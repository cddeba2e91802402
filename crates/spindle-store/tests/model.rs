//! Property test: any sequence of appends, flushes, compactions, retention passes and
//! reopens leaves the embedded store answering every query exactly as a plain in-memory
//! model of the same history does.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use spindle_model::{KeyValue, Span, TraceId};
use spindle_store::test_model::{
    batch, check_common, query, raw_span, record_operations, sorted, Catalog, RawSpan, SpanModel, Timeline,
};
use spindle_store::{EmbeddedStore, RowFields, SpanFields, SpanRow, StoreOptions, SyncPolicy, TraceQuery, TraceStore};

const RETENTION: Duration = Duration::from_nanos(1_000);

/// Spans a microsecond apart per raw start, queries anywhere in the first 100 µs, so that
/// retention cutoffs (also in nanoseconds) fall among them. Event times stay raw: no
/// query reads them, only the spans' equality does.
const TIMELINE: Timeline = Timeline {
    span_start: |start| start * 1_000,
    event_time: |start| start,
    query_window: 0..100_000,
    query_time: |t| t,
};

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

/// What the store should hold: blocks as groups of spans, plus the head.
#[derive(Default)]
struct Model {
    groups: Vec<Vec<Span>>,
    head: Vec<Span>,
    catalog: Catalog,
}

impl SpanModel for Model {
    /// A retry may put a span in the head and in a block; the store answers with it once.
    fn spans(&self) -> Vec<&Span> {
        let mut all: Vec<&Span> = Vec::new();
        for s in self.groups.iter().flatten().chain(&self.head) {
            if !all.contains(&s) {
                all.push(s);
            }
        }
        all
    }

    fn catalog(&self) -> &Catalog {
        &self.catalog
    }
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
    check_common(store, model, queries, &[(0, u64::MAX), (20_000, 60_000)])?;
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
        RowFields { group_by: Some("symbol".into()), ids: true, operation: true, trace_only: false },
        RowFields {
            group_by: Some("http.response.status_code".into()),
            ids: false,
            operation: false,
            trace_only: false,
        },
        RowFields { group_by: Some("messaging.system".into()), ids: true, operation: false, trace_only: false },
        RowFields { group_by: Some("service.name".into()), ids: false, operation: true, trace_only: false },
        RowFields { group_by: Some("k".into()), ids: true, operation: true, trace_only: false },
        RowFields { group_by: Some("span.name".into()), ids: false, operation: false, trace_only: false },
        RowFields { trace_only: true, ..RowFields::default() },
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
    fn store_matches_model(raw_ops in ops(), queries in prop::collection::vec(query(&TIMELINE), 6), rg in prop::sample::select(vec![3usize, 24])) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path(), rg);
        let mut model = Model::default();
        let mut batches: Vec<Vec<Span>> = Vec::new();
        let mut next_span = 0;
        for raw in raw_ops {
            let op = match raw {
                RawOp::Append(spans) => Op::Append(batch(&TIMELINE, &mut next_span, spans)),
                RawOp::Retry(i) => Op::Retry(i),
                RawOp::Flush => Op::Flush,
                RawOp::Compact => Op::Compact,
                RawOp::Retention(cutoff) => Op::Retention(cutoff),
                RawOp::Reopen => Op::Reopen,
            };
            match op {
                Op::Append(spans) => {
                    store.append(spans.clone()).unwrap();
                    record_operations(&mut model.catalog, &spans);
                    for s in &spans {
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
        &TIMELINE,
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
