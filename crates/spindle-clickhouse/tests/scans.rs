//! The ClickHouse store's own scans (rows for RED statistics, whole traces for service
//! graphs, spans for analytics, per-minute statistics for span metrics) against what the
//! same spans give when computed in Rust, with every span appended twice, against a real
//! ClickHouse server.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use spindle_clickhouse::{ClickHouseOptions, ClickHouseStore};
use spindle_model::{
    AttributeValue, DependencyLink, Event, KeyValue, Resource, Span, SpanId, SpanKind, Status, StatusCode, TraceId,
};
use spindle_query::spanmetrics::{BatchAggregate, SeriesFilter, SpanMetrics, BUCKET_NANOS};
use spindle_query::QueryService;
use spindle_store::{Operation, RowFields, SpanFields, SpanRow, StoreError, TraceQuery, TraceStore};
use spindle_test_support::ClickHouse;

const T0: u64 = 1_765_000_000_000_000_000;

/// A deterministic mix: three services, string/int/bool/double attributes, a key held
/// only by the resource (as a string, an int, a map; one resource has strings only), one
/// only in events, one as bytes, span ids shared between traces,
/// keys held twice with different types (whichever comes first is the group), errors,
/// zero durations, ends before starts, spans over six minutes.
fn spans() -> Vec<Span> {
    let resources: Vec<Arc<Resource>> = ["api", "db", "worker"]
        .iter()
        .enumerate()
        .map(|(i, service)| {
            let mut attributes = vec![
                KeyValue::string("service.name", *service),
                KeyValue::string("region", ["eu", "us", "ap"][i]),
                KeyValue::new("shard", AttributeValue::Int(i as i64)),
                KeyValue::new("labels", AttributeValue::Map(Vec::new())),
                KeyValue::string("region", "second"),
            ];
            if *service == "worker" {
                // Strings only: its spans' typed arrays can say every group alone.
                attributes.retain(|kv| kv.value.as_str().is_some());
            }
            Arc::new(Resource { attributes, dropped_attributes_count: 0 })
        })
        .collect();
    (0..600u64)
        .map(|i| {
            let start = T0 + i * 600_000_000 + i % 7;
            let duration = if i % 50 == 0 { 0 } else { (i * 7_919) % 3_000_000 + 1 };
            let mut attributes = vec![KeyValue::string("symbol", ["AAPL", "7203.T", "MSFT"][(i % 3) as usize])];
            if i % 13 == 0 {
                // Before the int of the same key, when there is one.
                attributes.push(KeyValue::new("http.status_code", AttributeValue::Array(vec![AttributeValue::Int(1)])));
            }
            if i % 2 == 0 {
                attributes.push(KeyValue::new("http.status_code", AttributeValue::Int(200 + (i % 4) as i64)));
            }
            if i % 3 == 0 {
                attributes.push(KeyValue::new("cached", AttributeValue::Bool(i % 6 == 0)));
            }
            if i % 7 == 0 {
                attributes.push(KeyValue::string("score", "high"));
            }
            if i % 5 == 0 {
                attributes.push(KeyValue::new("score", AttributeValue::Double(i as f64 / 8.0)));
            }
            if i % 11 == 0 {
                attributes.push(KeyValue::new("blob", AttributeValue::Bytes(vec![1, 2, i as u8])));
                attributes.push(KeyValue::string("region", "override"));
            }
            let events = if i % 4 == 0 {
                vec![Event {
                    time_unix_nano: start,
                    name: "retry".into(),
                    attributes: vec![KeyValue::string("attempt", (i % 3).to_string())],
                    dropped_attributes_count: 0,
                }]
            } else {
                Vec::new()
            };
            Span {
                trace_id: TraceId(u128::from(i / 4) + 1),
                // Some span ids recur in other traces (unique within each), which a
                // dedupe by span id alone would merge.
                span_id: if i % 17 == 5 { SpanId(1_000_000 + i % 3) } else { SpanId(i + 1) },
                parent_span_id: if i % 4 == 0 { SpanId::default() } else { SpanId(i / 4 * 4 + 1) },
                name: ["get", "put", "scan"][(i % 3) as usize].into(),
                kind: [SpanKind::Server, SpanKind::Client, SpanKind::Internal][(i % 3) as usize],
                start_time_unix_nano: start,
                end_time_unix_nano: if i % 23 == 0 { start - 5 } else { start + duration },
                attributes,
                events,
                status: Status {
                    code: if i % 9 == 0 { StatusCode::Error } else { StatusCode::Ok },
                    message: String::new(),
                },
                resource: Arc::clone(&resources[(i / 4 % 3) as usize]),
                ..Default::default()
            }
        })
        .collect()
}

fn window() -> TraceQuery {
    TraceQuery {
        start_time_min_unix_nano: T0,
        start_time_max_unix_nano: T0 + 3_600_000_000_000,
        limit: usize::MAX,
        ..TraceQuery::default()
    }
}

/// A row as a comparable, owned tuple.
type Owned = (TraceId, SpanId, String, String, SpanKind, u64, u64, bool, Option<String>);

fn owned(row: &SpanRow) -> Owned {
    (
        row.trace_id,
        row.span_id,
        row.service.to_string(),
        row.name.to_string(),
        row.kind,
        row.start_unix_nano,
        row.duration_nanos,
        row.error,
        row.group.as_ref().map(|g| g.to_string()),
    )
}

/// The spans themselves as a store: scans filter them with the query's own matcher, and
/// RED statistics are aggregated from rows by `spindle_query` (no store-side buckets), the
/// reference the ClickHouse store's SQL aggregation is held against.
struct Reference(Vec<Span>);

impl TraceStore for Reference {
    fn append(&self, _: Vec<Span>) -> Result<(), StoreError> {
        unreachable!("the reference is read only")
    }
    fn get_trace(&self, trace_id: TraceId) -> Result<Vec<Span>, StoreError> {
        Ok(self.0.iter().filter(|s| s.trace_id == trace_id).cloned().collect())
    }
    fn find_trace_ids(&self, _: &TraceQuery) -> Result<Vec<TraceId>, StoreError> {
        unreachable!("scans read the spans directly")
    }
    fn services(&self) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }
    fn operations(&self, _: &str, _: Option<SpanKind>) -> Result<Vec<Operation>, StoreError> {
        Ok(Vec::new())
    }
    fn dependencies(&self, _: u64, _: u64) -> Result<Vec<DependencyLink>, StoreError> {
        Ok(Vec::new())
    }
    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }
    fn scan_spans(&self, query: &TraceQuery, visit: &mut dyn FnMut(&Span)) -> Result<(), StoreError> {
        self.0.iter().filter(|s| query.matches_span(s)).for_each(visit);
        Ok(())
    }
}

#[test]
fn scans_give_what_the_spans_give_each_span_once() {
    let server = ClickHouse::start();
    check_scans(&server, "scans", &[]);
    // Every key the spans have, with dedicated columns, and one they lack.
    let hot = ["symbol", "http.status_code", "cached", "score", "region", "shard", "attempt", "blob", "absent"];
    check_scans(&server, "scans_hot", &hot);
}

fn check_scans(server: &ClickHouse, database: &str, hot: &[&str]) {
    let options = ClickHouseOptions {
        hot_attributes: hot.iter().map(|k| k.to_string()).collect(),
        ..ClickHouseOptions::new(&server.http_url, database)
    };
    let store = ClickHouseStore::open(options).expect("open");
    assert_eq!(store.hot_attributes().len(), hot.len());
    let all = spans();
    // At-least-once: some batches twice (their spans are read apart, deduplicated), the
    // others once.
    for (i, chunk) in all.chunks(150).enumerate() {
        store.append(chunk.to_vec()).unwrap();
        if i % 2 == 1 {
            store.append(chunk.to_vec()).unwrap();
        }
    }
    assert_eq!(store.stored_span_rows().unwrap(), all.len() as u64 + 300);

    let queries = [
        window(),
        TraceQuery { service: Some("api".into()), ..window() },
        TraceQuery { operation: Some("put".into()), duration_min_nanos: Some(1_000_000), ..window() },
        TraceQuery { attributes: vec![("symbol".into(), "MSFT".into())], ..window() },
        TraceQuery { attributes: vec![("attempt".into(), "0".into()), ("error".into(), "true".into())], ..window() },
        TraceQuery { attributes: vec![("region".into(), "ap".into()), ("score".into(), "high".into())], ..window() },
        TraceQuery { attributes: vec![("http.status_code".into(), "202".into())], ..window() },
        TraceQuery { attributes: vec![("shard".into(), "1".into())], ..window() },
        TraceQuery { start_time_max_unix_nano: T0 + 60_000_000_000, ..window() },
    ];
    let keys = [
        None,
        Some("symbol"),
        Some("http.status_code"),
        Some("cached"),
        Some("score"),
        Some("region"),
        Some("shard"),
        Some("labels"),
        Some("attempt"),
        Some("blob"),
        Some("service"),
        Some("span.name"),
        Some("absent"),
    ];
    for query in &queries {
        let mut expected: Vec<&Span> = all.iter().filter(|s| query.matches_span(s)).collect();
        expected.sort_by_key(|s| (s.span_id, s.trace_id));
        assert!(!expected.is_empty(), "the workload has spans for {query:?}");

        // Searches find the traces of the matching spans.
        let want: BTreeSet<TraceId> = expected.iter().map(|s| s.trace_id).collect();
        let found: BTreeSet<TraceId> = store.find_trace_ids(query).unwrap().into_iter().collect();
        assert_eq!(found, want, "find_trace_ids {query:?}");

        let mut scanned = Vec::new();
        store.scan_spans(query, &mut |s| scanned.push(s.clone())).unwrap();
        scanned.sort_by_key(|s| (s.span_id, s.trace_id));
        assert_eq!(scanned.iter().collect::<Vec<_>>(), expected, "scan_spans {query:?}");

        for key in keys {
            for (ids, operation) in [(true, true), (false, false)] {
                let fields = RowFields { group_by: key.map(str::to_string), ids, operation, trace_only: false };
                let mut rows: Vec<Owned> = Vec::new();
                store.scan_rows(query, &fields, &mut |r| rows.push(owned(r))).unwrap();
                let mut want: Vec<Owned> = expected.iter().map(|s| owned(&SpanRow::of(s, &fields))).collect();
                rows.sort_by(|a, b| (a.5, a.1, &a.8).cmp(&(b.5, b.1, &b.8)));
                want.sort_by(|a, b| (a.5, a.1, &a.8).cmp(&(b.5, b.1, &b.8)));
                assert_eq!(rows, want, "scan_rows by {key:?} (ids {ids}) for {query:?}");
            }
        }
    }

    // RED statistics aggregated by ClickHouse equal the ones aggregated from the spans, for
    // every way a group's value is held (typed columns, the resource, only a rebuilt span).
    let (clickhouse, reference) =
        (QueryService::new(Arc::new(store)), QueryService::new(Arc::new(Reference(all.clone()))));
    for query in &queries {
        for key in keys {
            for (step, max_groups) in [(60_000_000_000, usize::MAX), (7_000_000_000, 1)] {
                let got = clickhouse.red_top(query, key, step, max_groups).unwrap();
                let want = reference.red_top(query, key, step, max_groups).unwrap();
                if want.other_uncounted {
                    // More groups than a scan tracks: which ones it keeps apart depends on
                    // the order rows come in, only the totals do not.
                    let calls = |a: &spindle_query::analytics::RedAnswer| -> u64 {
                        a.groups.iter().chain(&a.other).map(|g| g.total.calls).sum()
                    };
                    assert!(got.other_uncounted);
                    assert_eq!(calls(&got), calls(&want), "RED calls by {key:?} for {query:?}");
                } else {
                    assert_eq!(got, want, "RED by {key:?}, step {step}, top {max_groups} for {query:?}");
                }
            }
        }
    }
    let store = clickhouse.store();

    // Whole traces whose earliest span started in the window.
    let (from, to) = (T0 + 60_000_000_000, T0 + 180_000_000_000);
    let mut traces: BTreeMap<TraceId, Vec<Span>> = BTreeMap::new();
    for s in &all {
        traces.entry(s.trace_id).or_default().push(s.clone());
    }
    traces.values_mut().for_each(|spans| spans.sort_by_key(|s| s.span_id));
    let want: BTreeSet<TraceId> = traces
        .iter()
        .filter(|(_, spans)| (from..=to).contains(&spans.iter().map(|s| s.start_time_unix_nano).min().unwrap()))
        .map(|(id, _)| *id)
        .collect();
    let mut got = BTreeSet::new();
    store
        .scan_traces(from, to, &SpanFields::bare(), &mut |trace| {
            let mut trace = trace.to_vec();
            trace.sort_by_key(|s| s.span_id);
            assert_eq!(trace, traces[&trace[0].trace_id], "each trace whole, each span once");
            got.insert(trace[0].trace_id);
        })
        .unwrap();
    assert_eq!(got, want);
    assert!(!got.is_empty());

    // Span metrics computed by ClickHouse equal the ones counted at append.
    let mut counted = SpanMetrics::default();
    counted.merge(BatchAggregate::from_spans(&all));
    let end = T0 + 7 * BUCKET_NANOS;
    for (services, kinds) in [(vec![], vec![]), (vec!["db".to_string()], vec![SpanKind::Client])] {
        let rows =
            store.minute_buckets(T0 - BUCKET_NANOS, end, &services, &kinds).unwrap().expect("computed by ClickHouse");
        let built = SpanMetrics::from_minute_buckets(rows);
        let filter = SeriesFilter { services: services.clone(), kinds: kinds.clone(), operation: None };
        for by_operation in [false, true] {
            let want = counted.series(&filter, T0 - BUCKET_NANOS, end, BUCKET_NANOS, by_operation);
            let got = built.series(&filter, T0 - BUCKET_NANOS, end, BUCKET_NANOS, by_operation);
            assert!(!want.is_empty());
            assert_eq!(got, want, "minute statistics for {services:?} {kinds:?}, by operation {by_operation}");
        }
    }
}

#[test]
fn traces_read_at_once_equal_traces_read_one_by_one() {
    let server = ClickHouse::start();
    let store = ClickHouseStore::open(ClickHouseOptions::new(&server.http_url, "pages")).expect("open");
    let mut all = spans();
    // A trace days after the others, so one read spans partitions far apart.
    all.iter_mut().filter(|s| s.trace_id == TraceId(1)).for_each(|s| {
        s.start_time_unix_nano += 3 * 86_400_000_000_000;
        s.end_time_unix_nano += 3 * 86_400_000_000_000;
    });
    for chunk in all.chunks(100) {
        store.append(chunk.to_vec()).unwrap();
        store.append(chunk.to_vec()).unwrap();
    }
    let mut ids: Vec<TraceId> = (1..=150u128).map(TraceId).collect();
    ids.extend([TraceId(999_999), TraceId(3), TraceId(1)]);
    let pages = store.get_traces(&ids).unwrap();
    assert_eq!(pages.len(), ids.len());
    for (id, mut got) in ids.iter().zip(pages) {
        let mut want = store.get_trace(*id).unwrap();
        got.sort_by_key(|s| s.span_id);
        want.sort_by_key(|s| s.span_id);
        assert_eq!(got, want, "trace {id:?}");
        let expected = all.iter().filter(|s| s.trace_id == *id).count();
        assert_eq!(got.len(), expected, "trace {id:?} whole and each span once");
    }
    assert!(store.get_traces(&[]).unwrap().is_empty());
}

/// A writer that reuses span ids across many traces (unique within each, as the data model
/// asks) still gets exact RED statistics: past the limit of repeated ids read apart, every
/// row is deduplicated by (trace id, span id).
#[test]
fn red_statistics_stay_exact_when_span_ids_recur_across_many_traces() {
    let server = ClickHouse::start();
    let store = ClickHouseStore::open(ClickHouseOptions::new(&server.http_url, "recurring")).expect("open");
    let mut all = spans();
    let template = all[1].clone();
    // 12,000 span ids, each in two traces: more repeated ids than are read apart.
    all.extend((0..24_000u64).map(|i| Span {
        trace_id: TraceId(u128::from(i) + 10_000),
        span_id: SpanId(7 + i % 12_000),
        start_time_unix_nano: T0 + i * 100_000_000,
        end_time_unix_nano: T0 + i * 100_000_000 + (i * 104_729) % 9_000_000,
        attributes: vec![KeyValue::string("symbol", ["AAPL", "ZZZ"][(i % 2) as usize])],
        ..template.clone()
    }));
    for chunk in all.chunks(3_000) {
        store.append(chunk.to_vec()).unwrap();
        store.append(chunk.to_vec()).unwrap();
    }
    drop(store);
    // Dedicated columns added over stored parts: the server computes them when read.
    let options = ClickHouseOptions {
        hot_attributes: vec!["symbol".into()],
        ..ClickHouseOptions::new(&server.http_url, "recurring")
    };
    let store = ClickHouseStore::open(options).expect("open with a hot attribute");
    let (clickhouse, reference) = (QueryService::new(Arc::new(store)), QueryService::new(Arc::new(Reference(all))));
    for key in [None, Some("symbol"), Some("score"), Some("service")] {
        let query = window();
        let got = clickhouse.red_top(&query, key, 300_000_000_000, usize::MAX).unwrap();
        let want = reference.red_top(&query, key, 300_000_000_000, usize::MAX).unwrap();
        if key.is_none() {
            assert!(want.groups[0].total.calls > 24_000);
        }
        assert_eq!(got, want, "RED by {key:?}");
    }
}

/// Span metrics of spans whose ids are random, as SDKs draw them, equal the ones counted at
/// append, one batch of five appended twice.
#[test]
fn minute_statistics_of_random_span_ids_equal_the_counted_ones() {
    let server = ClickHouse::start();
    let store = ClickHouseStore::open(ClickHouseOptions::new(&server.http_url, "random_ids")).expect("open");
    let all = spindle_workload::Workload::new(3).batch(2_000, T0, 5 * BUCKET_NANOS);
    for (i, chunk) in all.chunks(4_000).enumerate() {
        store.append(chunk.to_vec()).unwrap();
        if i == 2 {
            store.append(chunk.to_vec()).unwrap();
        }
    }
    let mut counted = SpanMetrics::default();
    counted.merge(BatchAggregate::from_spans(&all));
    let end = T0 + 7 * BUCKET_NANOS;
    let built = SpanMetrics::from_minute_buckets(store.minute_buckets(T0, end, &[], &[]).unwrap().expect("computed"));
    let filter = SeriesFilter { services: Vec::new(), kinds: Vec::new(), operation: None };
    let want = counted.series(&filter, T0, end, BUCKET_NANOS, true);
    assert!(!want.is_empty());
    assert_eq!(built.series(&filter, T0, end, BUCKET_NANOS, true), want);
}
