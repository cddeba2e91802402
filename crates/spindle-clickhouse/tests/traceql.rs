//! TraceQL on ClickHouse answers as on the embedded store: the same reference-workload
//! traces in both (some batches twice in ClickHouse, as Kafka redelivers), the same
//! searches (pushdown into SQL, candidate pages, structural evaluation) and metrics (the
//! RED aggregation in SQL, and span scans), with and without `symbol` as a hot attribute,
//! against a real ClickHouse server.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use spindle_clickhouse::{ClickHouseOptions, ClickHouseStore};
use spindle_model::{Span, SpanId, TraceId};
use spindle_query::QueryService;
use spindle_store::{EmbeddedStore, QueryControl, StoreOptions, TraceStore};
use spindle_test_support::ClickHouse;
use spindle_traceql::ast::Query;
use spindle_traceql::engine::{self, SearchOptions};
use spindle_traceql::metrics::Window;

const T0: u64 = 1_765_000_000_000_000_000;

const SEARCHES: [&str; 8] = [
    "{ resource.service.name = \"pricing\" && span.symbol =~ \"TK0[0-4][0-9]\" } >> { status = error }",
    "{ resource.service.name = \"pricing\" && span.user.tier = \"pro\" } >> { status = error }",
    "{ name = \"GET /v1/quote\" } > { name = \"POST pricing\" } >> { name = \"calculate_bsm\" && status = error }",
    "{ span.http.request.method = \"POST\" && duration > 5ms } ~ { status = error }",
    "{ span.symbol =~ \"TK00.\" } | count() > 9",
    "{ kind = consumer } !< { }",
    "{ status = error } | by(resource.service.name) | count() > 1",
    "{ span.retry.count = 2 && span.cache.hit = true && event:name = \"exception\" }",
];

const METRICS: [&str; 6] = [
    "{ } | quantile_over_time(duration, .99) by (span.symbol)",
    "{ resource.service.name = \"pricing\" } | rate() by (name)",
    "{ status = error } | count_over_time() by (resource.service.name)",
    "{ span.user.tier = \"pro\" } | avg_over_time(duration)",
    "{ } | max_over_time(duration) by (resource.service.name) | topk(2)",
    "{ name = \"price_option\" } >> { } | count_over_time()",
];

fn workload() -> Vec<Vec<Span>> {
    let mut w = spindle_workload::Workload::new(19);
    (0..2500u64).map(|i| w.trace(T0 + i * 240_000_000)).collect()
}

type Found = BTreeMap<TraceId, BTreeSet<SpanId>>;

fn search(store: &Arc<dyn TraceStore>, text: &str, limit: usize) -> Found {
    let Query::Search(expr) = spindle_traceql::parse(text).unwrap().query else { unreachable!() };
    let opts = SearchOptions {
        start_unix_nano: T0,
        end_unix_nano: T0 + 3_600_000_000_000,
        limit,
        spans_per_spanset: 1000,
        min_trace_duration_nanos: None,
        max_trace_duration_nanos: None,
        control: QueryControl::default(),
    };
    engine::search(&QueryService::new(Arc::clone(store)), &expr, &opts)
        .unwrap()
        .traces
        .into_iter()
        .map(|t| (t.trace_id, t.spansets.iter().flat_map(|s| s.spans.iter().map(|x| x.span_id)).collect()))
        .collect()
}

fn metrics(store: &Arc<dyn TraceStore>, text: &str) -> Vec<(String, Vec<(u64, f64)>)> {
    let Query::Metrics(expr) = spindle_traceql::parse(text).unwrap().query else { unreachable!() };
    let window = Window { start_unix_nano: T0, end_unix_nano: T0 + 600_000_000_000, step_nanos: 60_000_000_000 };
    let answer =
        engine::metrics(&QueryService::new(Arc::clone(store)), &expr, window, 10_000, &QueryControl::default())
            .unwrap();
    answer.series.into_iter().map(|s| (spindle_traceql::metrics::label_text(&s.labels), s.samples)).collect()
}

#[test]
fn traceql_on_clickhouse_answers_as_on_the_embedded_store() {
    let traces = workload();
    let dir = tempfile::tempdir().unwrap();
    let embedded: Arc<dyn TraceStore> =
        Arc::new(EmbeddedStore::open(StoreOptions { background: false, ..StoreOptions::new(dir.path()) }).unwrap());
    embedded.append(traces.iter().flatten().cloned().collect()).unwrap();

    let server = ClickHouse::start();
    for (database, hot) in [("traceql", vec![]), ("traceql_hot", vec!["symbol".to_string()])] {
        let options = ClickHouseOptions { hot_attributes: hot, ..ClickHouseOptions::new(&server.http_url, database) };
        let clickhouse: Arc<dyn TraceStore> = Arc::new(ClickHouseStore::open(options).unwrap());
        for (i, chunk) in traces.chunks(300).enumerate() {
            let batch: Vec<Span> = chunk.iter().flatten().cloned().collect();
            clickhouse.append(batch.clone()).unwrap();
            if i % 3 == 0 {
                clickhouse.append(batch).unwrap();
            }
        }
        for text in SEARCHES {
            for limit in [5, 10_000] {
                let want = search(&embedded, text, limit);
                assert!(!want.is_empty() || limit == 5, "{text} matches nothing");
                assert_eq!(search(&clickhouse, text, limit), want, "{database}: {text} limit {limit}");
            }
        }
        for text in METRICS {
            let want = metrics(&embedded, text);
            assert!(!want.is_empty(), "{text} answers nothing");
            let got = metrics(&clickhouse, text);
            assert_eq!(got.len(), want.len(), "{database}: {text}");
            for ((gl, gs), (wl, ws)) in got.iter().zip(&want) {
                assert_eq!(gl, wl, "{database}: {text}");
                assert_eq!(gs.len(), ws.len(), "{database}: {text} {gl}");
                for ((gt, gv), (wt, wv)) in gs.iter().zip(ws) {
                    assert_eq!(gt, wt);
                    assert!(
                        (gv - wv).abs() <= 1e-9 * wv.abs().max(1.0),
                        "{database}: {text} {gl} at {gt}: {gv} vs {wv}"
                    );
                }
            }
        }
    }
}
