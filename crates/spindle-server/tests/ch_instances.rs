//! Stateless instances over one ClickHouse, against the real binary and a real ClickHouse:
//! span metrics (the Jaeger SPM API), RED analytics and service graphs are the same through
//! an instance that never saw the spans as through the one that took them (both compute them
//! in ClickHouse); concurrent requests to a receiver land as joined inserts; and retention
//! drops the days past a tenant's retention from ClickHouse.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Spindle;
use spindle_clickhouse::{ClickHouseOptions, ClickHouseStore};
use spindle_model::{KeyValue, Resource, Span, SpanId, SpanKind, Status, StatusCode, TraceId};
use spindle_store::{TraceQuery, TraceStore};
use spindle_test_support::{wait_until, ClickHouse};

const MINUTE: u64 = 60_000_000_000;

fn now_nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// `traces` traces of a `frontend` server span calling a `pricing` server span, spread
/// over the last few minutes, one in five pricing spans an error, `symbol` on each.
fn workload(traces: u64, seed: u64, end: u64) -> Vec<Span> {
    let resource = |service: &str| {
        Arc::new(Resource { attributes: vec![KeyValue::string("service.name", service)], dropped_attributes_count: 0 })
    };
    let (frontend, pricing) = (resource("frontend"), resource("pricing"));
    let mut spans = Vec::new();
    for i in 0..traces {
        let start = end - 5 * MINUTE + i * (4 * MINUTE / traces);
        let trace_id = TraceId(u128::from(seed) << 64 | u128::from(i + 1));
        let symbol = ["AAPL", "MSFT", "7203.T"][(i % 3) as usize];
        spans.push(Span {
            trace_id,
            span_id: SpanId(2 * i + 1),
            name: "GET /quote".into(),
            kind: SpanKind::Server,
            start_time_unix_nano: start,
            end_time_unix_nano: start + 2_000_000 + i * 10_000,
            attributes: vec![KeyValue::string("symbol", symbol)],
            resource: Arc::clone(&frontend),
            ..Default::default()
        });
        spans.push(Span {
            trace_id,
            span_id: SpanId(2 * i + 2),
            parent_span_id: SpanId(2 * i + 1),
            name: "price".into(),
            kind: SpanKind::Server,
            start_time_unix_nano: start + 100_000,
            end_time_unix_nano: start + 1_500_000 + i * 7_000,
            attributes: vec![KeyValue::string("symbol", symbol)],
            status: Status {
                code: if i % 5 == 0 { StatusCode::Error } else { StatusCode::Unset },
                message: String::new(),
            },
            resource: Arc::clone(&pricing),
            ..Default::default()
        });
    }
    spans
}

fn on_clickhouse(dir: &std::path::Path, clickhouse: &ClickHouse, args: &[&str]) -> Spindle {
    let mut all = vec!["--storage", "clickhouse", "--clickhouse-url", &clickhouse.http_url];
    all.extend_from_slice(args);
    Spindle::start_with(dir, &all)
}

fn json(spindle: &Spindle, path: &str) -> serde_json::Value {
    let (status, body) = spindle.get_json(path);
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// An SPM answer with its timestamps' series, comparable across instances.
fn spm(spindle: &Spindle, metric: &str, end_ms: u64) -> serde_json::Value {
    let mut body = json(
        spindle,
        &format!(
            "/api/metrics/{metric}?service=frontend&service=pricing&groupByOperation=true&endTs={end_ms}\
             &lookback=600000&step=60000&ratePer=600000&quantile=0.95"
        ),
    );
    let metrics = body["metrics"].as_array_mut().expect("metrics");
    metrics.sort_by_key(|m| m["labels"].to_string());
    body
}

#[test]
fn any_instance_answers_span_metrics_analytics_and_graphs_from_clickhouse() {
    let clickhouse = ClickHouse::start();
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // A takes the spans (receivers, group commit into ClickHouse); B only queries.
    let a = on_clickhouse(a_dir.path(), &clickhouse, &["--clickhouse-batch-wait", "2s"]);
    // B connects as a ClickHouse user with a password.
    let password_file = b_dir.path().join("clickhouse-password");
    std::fs::write(&password_file, format!("{}\n", ClickHouse::PASSWORD)).unwrap();
    let password_arg = password_file.to_str().unwrap();
    let as_user = ["--clickhouse-user", ClickHouse::USER, "--clickhouse-password-file", password_arg];
    let b = on_clickhouse(b_dir.path(), &clickhouse, &[&["--target", "query"][..], &as_user].concat());
    let end = now_nanos();
    let spans = workload(300, 1, end);
    // Concurrent senders: their requests are joined into fewer inserts.
    // The senders start together and the first insert waits up to 2 s for the others, so
    // a slow machine still joins them.
    let start = std::sync::Barrier::new(4);
    std::thread::scope(|scope| {
        for part in spans.chunks(spans.len() / 4) {
            let (a, start) = (&a, &start);
            scope.spawn(move || {
                start.wait();
                a.send(part)
            });
        }
    });
    let store = ClickHouseStore::open(ClickHouseOptions::new(&clickhouse.http_url, "spindle")).unwrap();
    assert_eq!(store.stored_span_rows().unwrap(), spans.len() as u64, "every span stored once");
    let parts: u64 = {
        let sql = "SELECT count() FROM system.parts WHERE database = 'spindle' AND table = 'spans'";
        let text =
            reqwest::blocking::Client::new().post(&clickhouse.http_url).body(sql).send().unwrap().text().unwrap();
        text.trim().parse().unwrap()
    };
    // Four senders, one request each (a request carries up to 500 spans).
    let requests = 4 * (spans.len() / 4).div_ceil(500) as u64;
    assert!(parts < requests, "{requests} requests made {parts} parts: appends arriving together were joined");

    // The Jaeger SPM API: B computes what A computes, over the same spans.
    let end_ms = end / 1_000_000 + 60_000;
    for metric in ["calls", "errors", "latencies"] {
        let (from_a, from_b) = (spm(&a, metric, end_ms), spm(&b, metric, end_ms));
        assert_eq!(from_a, from_b, "{metric}");
        assert_eq!(from_b["metrics"].as_array().unwrap().len(), 2, "{metric}: {from_b}");
    }
    // Calls per second over the 10-minute window at its end hold all 600 spans.
    let calls = spm(&b, "calls", end_ms);
    let total: f64 = calls["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["metricPoints"].as_array().unwrap().last().unwrap()["gaugeValue"]["doubleValue"].as_f64().unwrap())
        .sum();
    assert!((total * 600.0 - spans.len() as f64).abs() < 1.0, "{total} calls/s over 600 s: {calls}");
    let errors = spm(&b, "errors", end_ms);
    let pricing = errors["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["labels"].to_string().contains("pricing"))
        .expect("pricing errors")["metricPoints"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()["gaugeValue"]["doubleValue"]
        .as_f64()
        .unwrap();
    assert!((pricing - 0.2).abs() < 1e-9, "one pricing span in five is an error: {pricing}");

    // RED by attribute and the service graph: the same through both instances.
    let (start_us, end_us) = ((end - 10 * MINUTE) / 1_000, (end + MINUTE) / 1_000);
    let stats = format!("/api/spindle/stats?service=pricing&groupBy=symbol&start={start_us}&end={end_us}");
    let (from_a, from_b) = (json(&a, &stats), json(&b, &stats));
    assert_eq!(from_a, from_b);
    assert_eq!(from_b["groups"].as_array().map(Vec::len), Some(3), "{from_b}");
    let deps = format!("/api/dependencies?endTs={}&lookback=900000", end_us / 1_000 + 60_000);
    let (from_a, from_b) = (json(&a, &deps), json(&b, &deps));
    assert_eq!(from_a, from_b);
    assert_eq!(from_b["data"][0]["callCount"], 300, "{from_b}");

    // A collector without Kafka writes ClickHouse itself; B reads what it took.
    let c_dir = tempfile::tempdir().unwrap();
    let collector = on_clickhouse(c_dir.path(), &clickhouse, &["--target", "collector"]);
    let more = workload(10, 4, end);
    collector.send(&more);
    for span in more.iter().step_by(2) {
        let trace = json(&b, &format!("/api/traces/{}", span.trace_id.to_jaeger_hex()));
        assert_eq!(trace["data"][0]["spans"].as_array().map(Vec::len), Some(2), "{trace}");
    }
    assert!(reqwest::blocking::get(collector.query_url("/api/services")).is_err(), "a collector serves no queries");
}

#[test]
fn retention_drops_the_days_past_it_from_clickhouse() {
    let clickhouse = ClickHouse::start();
    let store = ClickHouseStore::open(ClickHouseOptions::new(&clickhouse.http_url, "spindle")).unwrap();
    let now = now_nanos();
    let day = 24 * 60 * MINUTE;
    // Spans of four days ago and of now, stored before Spindle starts.
    let old = workload(20, 2, now - 4 * day);
    let new = workload(20, 3, now);
    store.append(old.clone()).unwrap();
    store.append(new.clone()).unwrap();
    let everything = TraceQuery {
        start_time_min_unix_nano: 0,
        start_time_max_unix_nano: u64::MAX,
        limit: 1000,
        ..Default::default()
    };
    assert_eq!(store.find_trace_ids(&everything).unwrap().len(), 40);

    // The retention pass runs at start: two days kept, the old day dropped.
    let dir = tempfile::tempdir().unwrap();
    let _spindle = on_clickhouse(dir.path(), &clickhouse, &["--retention", "48h"]);
    wait_until("the old day to be dropped", Duration::from_secs(30), || {
        (store.find_trace_ids(&everything).unwrap().len() == 20).then_some(())
    });
    let kept: std::collections::BTreeSet<TraceId> = store.find_trace_ids(&everything).unwrap().into_iter().collect();
    assert_eq!(kept, new.iter().map(|s| s.trace_id).collect(), "the recent traces are kept, whole");
    for id in kept {
        assert_eq!(store.get_trace(id).unwrap().len(), 2);
    }
    assert!(old.iter().all(|s| store.get_trace(s.trace_id).unwrap().is_empty()));
}

#[test]
fn a_wrong_clickhouse_password_stops_the_start_with_clickhouses_reason() {
    let clickhouse = ClickHouse::start();
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("clickhouse-password");
    std::fs::write(&password_file, "not-the-password\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_spindle"))
        .args(["serve", "--target", "query", "--storage", "clickhouse", "--clickhouse-url", &clickhouse.http_url])
        .args(["--clickhouse-user", ClickHouse::USER, "--clickhouse-password-file", password_file.to_str().unwrap()])
        .args(["--query-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path())
        .env("SPINDLE_LOG", "warn")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    // 18.16 says "Wrong password"; later releases "Authentication failed".
    assert!(stderr.contains("401 Unauthorized") && stderr.contains("spindle"), "{stderr}");
    assert!(!stderr.contains("not-the-password"), "the password is never printed: {stderr}");
}
