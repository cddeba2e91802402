//! The scale-out proof (issue 18), against the real binary, the tansu broker and a two-shard
//! ClickHouse cluster: two front instances (`--target collector,query`, each talking to a
//! different shard) and one ingester. Spans sent to instance A through every protocol read
//! back through instance B; the reference workload's services, operations, searches, traces,
//! RED statistics, span metrics and dependencies through B equal an embedded Spindle's on
//! the same spans; and `kill -9` of the ingester and of a collector under load loses no
//! acknowledged span and shows none twice.

mod common;
mod roles;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{assert_arrived, send_client_fixtures, Spindle};
use roles::{assert_exactly_once, client, export_grpc, now_nanos, post, with_kafka, Stream, TOPIC};
use serde_json::Value;
use spindle_test_support::{ClickHouse, Tansu};
use spindle_workload::Workload;

const CLUSTER: &str = "spindle";

/// The ClickHouse settings of an instance reading and writing through `node`.
fn on_cluster<'a>(nodes: &'a [ClickHouse], shards: &'a str, node: usize) -> Vec<&'a str> {
    vec![
        "--storage",
        "clickhouse",
        "--clickhouse-url",
        &nodes[node].http_url,
        "--clickhouse-cluster",
        CLUSTER,
        "--clickhouse-shards",
        shards,
    ]
}

fn json(spindle: &Spindle, path: &str) -> Value {
    let (status, body) = spindle.get_json(path);
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// A Jaeger trace as comparable values: spans by id, each with its process inlined (process
/// ids are numbered per answer) and without the answer's warnings.
fn normalized(trace: &Value) -> BTreeMap<String, Value> {
    let processes = &trace["processes"];
    trace["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|span| {
            let mut span = span.clone();
            let process = processes[span["processID"].as_str().unwrap_or_default()].clone();
            span["processID"] = process;
            span.as_object_mut().map(|o| o.remove("warnings"));
            (span["spanID"].as_str().unwrap_or_default().to_string(), span)
        })
        .collect()
}

/// The trace ids of a Jaeger search answer, sorted.
fn trace_ids(answer: &Value) -> Vec<String> {
    let mut ids: Vec<String> = answer["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["traceID"].as_str().map(str::to_string))
        .collect();
    ids.sort();
    ids
}

fn sorted(mut answer: Value, key: &str) -> Value {
    if let Some(items) = answer[key].as_array_mut() {
        items.sort_by_key(|v| v.to_string());
    }
    answer
}

#[test]
fn two_front_instances_and_an_ingester_over_a_two_shard_cluster_answer_as_one_spindle() {
    let nodes = ClickHouse::start_cluster(2, CLUSTER);
    let shards = format!("{},{}", nodes[0].http_url, nodes[1].http_url);
    let tansu = Tansu::start(&[(TOPIC, 4)]);
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let front = |node: usize| with_kafka(&tansu.bootstrap, "collector,query", &on_cluster(&nodes, &shards, node));
    let mut ingester =
        Spindle::start_with(dirs[0].path(), &with_kafka(&tansu.bootstrap, "ingester", &on_cluster(&nodes, &shards, 0)));
    let mut a = Spindle::start_with(dirs[1].path(), &front(0));
    let b = Spindle::start_with(dirs[2].path(), &front(1));
    let embedded = Spindle::start(dirs[3].path());
    let http = client();

    // 1. Every protocol into A, read through B (whose queries go through the other shard).
    for (name, decoded) in send_client_fixtures(&a) {
        assert_arrived(&b, &decoded, name);
    }
    let fixtures = send_client_fixtures(&embedded);

    // 2. The reference workload, over OTLP/HTTP and OTLP/gRPC, into A and into the embedded
    // store alike.
    let end = now_nanos();
    let spans = Workload::new(18).batch(200, end - 20 * 60_000_000_000, 15 * 60_000_000_000);
    let (half_one, half_two) = spans.split_at(spans.len() / 2);
    for chunk in half_one.chunks(300) {
        assert_eq!(post(&http, &a, chunk, None), 200);
    }
    for chunk in half_two.chunks(300) {
        assert_eq!(export_grpc(&a, chunk), tonic::Code::Ok);
    }
    embedded.send(&spans);
    assert_exactly_once(&http, &b, &spans, None);
    for (name, decoded) in &fixtures {
        assert_arrived(&embedded, decoded, name);
    }

    let services = json(&b, "/api/services");
    assert_eq!(sorted(services.clone(), "data"), sorted(json(&embedded, "/api/services"), "data"));
    for service in services["data"].as_array().unwrap() {
        let service = service.as_str().unwrap();
        let path = format!("/api/operations?service={service}");
        assert_eq!(sorted(json(&b, &path), "data"), sorted(json(&embedded, &path), "data"), "{path}");
    }
    let (start_us, end_us) = ((end - 30 * 60_000_000_000) / 1_000, end / 1_000 + 1);
    let range = format!("start={start_us}&end={end_us}");
    let symbol = spans[0].attribute("symbol").and_then(|v| v.as_str()).unwrap().to_string();
    let searches = [
        format!("/api/traces?service=pricing&{range}&limit=1000"),
        format!("/api/traces?service=pricing&tags=%7B%22symbol%22%3A%22{symbol}%22%7D&{range}&limit=1000"),
        format!("/api/traces?service=quote-api&minDuration=2ms&{range}&limit=1000"),
        format!("/api/traces?service=ledger&tags=%7B%22error%22%3A%22true%22%7D&{range}&limit=20"),
    ];
    for path in &searches {
        let (from_b, from_e) = (json(&b, path), json(&embedded, path));
        assert_eq!(trace_ids(&from_b), trace_ids(&from_e), "{path}");
        assert!(!trace_ids(&from_b).is_empty(), "{path} finds something");
    }
    for trace in spans.iter().step_by(spans.len() / 25) {
        let path = format!("/api/traces/{}", trace.trace_id.to_jaeger_hex());
        let (from_b, from_e) = (json(&b, &path), json(&embedded, &path));
        assert_eq!(normalized(&from_b["data"][0]), normalized(&from_e["data"][0]), "{path}");
    }
    for path in [
        format!("/api/spindle/stats?service=pricing&groupBy=symbol&{range}"),
        format!("/api/spindle/stats?groupBy=service.name&{range}"),
        format!("/api/dependencies?endTs={}&lookback=3600000", end_us / 1_000),
    ] {
        let key = if path.contains("dependencies") { "data" } else { "groups" };
        let (from_b, from_e) = (sorted(json(&b, &path), key), sorted(json(&embedded, &path), key));
        assert_eq!(from_b, from_e, "{path}");
        assert!(from_b[key].as_array().is_some_and(|g| !g.is_empty()), "{path}: {from_b}");
    }
    let spm = |spindle: &Spindle, metric: &str| {
        let path = format!(
            "/api/metrics/{metric}?service=pricing&service=frontend&groupByOperation=true&endTs={}\
             &lookback=1800000&step=60000&ratePer=600000&quantile=0.99&spanKind=server&spanKind=client",
            end_us / 1_000 + 60_000
        );
        sorted(json(spindle, &path), "metrics")
    };
    for metric in ["calls", "errors", "latencies"] {
        assert_eq!(spm(&b, metric), spm(&embedded, metric), "SPM {metric}");
    }
    // The UI is served by B too (its browser tests run against the same API).
    let ui = http.get(b.query_url("/search")).send().unwrap();
    assert_eq!(ui.status().as_u16(), 200);
    let page = ui.text().unwrap();
    assert!(page.contains("<title>Spindle</title>"), "the UI's page: {page}");
    let script = page.split("src=\"").nth(1).and_then(|rest| rest.split('"').next()).expect("the UI's script");
    assert_eq!(http.get(b.query_url(script)).send().unwrap().status().as_u16(), 200, "{script}");

    // 3. kill -9 under load: of the ingester, then of collector A. Nothing acknowledged is
    // lost, nothing shows twice.
    let stream = Stream::start(&a, 1_000, 3, Duration::from_millis(20));
    let at_least = |n: usize| {
        spindle_test_support::wait_until("acknowledged spans", Duration::from_secs(30), || {
            (stream.acknowledged() >= n).then_some(())
        })
    };
    at_least(200);
    ingester.kill9();
    at_least(400);
    ingester.restart();
    at_least(600);
    a.kill9();
    std::thread::sleep(Duration::from_millis(300));
    a.restart();
    let acknowledged_before = stream.acknowledged();
    at_least(acknowledged_before + 200);
    let (acknowledged, refused) = stream.stop();
    assert!(!refused.is_empty() || acknowledged.len() > 600, "the stream ran through both kills");
    assert_exactly_once(&http, &b, &acknowledged, None);
    assert_exactly_once(&http, &a, &acknowledged, None);
}
