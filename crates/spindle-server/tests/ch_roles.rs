//! Roles over ClickHouse, against the real binary, the tansu broker and a real ClickHouse:
//! a `--target collector` process writes OTLP/HTTP and OTLP/gRPC batches to Kafka, a
//! `--target ingester --storage clickhouse` process appends them to ClickHouse, and a
//! `--target query --storage clickhouse` process answers the Jaeger API from there, each
//! tenant apart; every acknowledged span reads back exactly once, also after the ingester
//! is killed with SIGKILL mid-stream. And `--target all --storage clickhouse` round-trips.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::Spindle;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use spindle_model::{Span, TraceId};
use spindle_test_support::{wait_until, ClickHouse, Tansu};
use spindle_workload::Workload;

const TOPIC: &str = "spindle-spans";
const TENANT: &str = "team-a";

fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

fn spans(seed: u64, traces: usize) -> Vec<Span> {
    Workload::new(seed).batch(traces, now_nanos() - 60_000_000_000, 30_000_000_000)
}

fn request(spans: &[Span]) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest { resource_spans: spindle_codec::otlp::spans_to_resource_spans(spans) }
}

fn on_clickhouse(dir: &std::path::Path, clickhouse: &ClickHouse, args: &[&str]) -> Spindle {
    let mut all = vec!["--storage", "clickhouse", "--clickhouse-url", &clickhouse.http_url];
    all.extend_from_slice(args);
    Spindle::start_with(dir, &all)
}

/// POSTs spans over OTLP/HTTP protobuf; the status.
fn post(client: &reqwest::blocking::Client, spindle: &Spindle, spans: &[Span], tenant: Option<&str>) -> u16 {
    let mut r = client
        .post(format!("http://{}/v1/traces", spindle.http))
        .header("content-type", "application/x-protobuf")
        .body(request(spans).encode_to_vec());
    if let Some(t) = tenant {
        r = r.header("X-Scope-OrgID", t);
    }
    r.send().map(|r| r.status().as_u16()).unwrap_or(0)
}

/// Exports spans over OTLP/gRPC; the gRPC code.
fn export_grpc(spindle: &Spindle, spans: &[Span]) -> tonic::Code {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let addr = spindle.grpc;
    let request = request(spans);
    runtime.block_on(async move {
        let mut client = TraceServiceClient::connect(format!("http://{addr}")).await.expect("connect");
        match client.export(request).await {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        }
    })
}

fn get(client: &reqwest::blocking::Client, spindle: &Spindle, path: &str, tenant: Option<&str>) -> serde_json::Value {
    let mut r = client.get(spindle.query_url(path));
    if let Some(t) = tenant {
        r = r.header("X-Scope-OrgID", t);
    }
    match r.send() {
        Ok(response) if response.status().is_success() => response.json().unwrap_or_default(),
        _ => serde_json::Value::Null,
    }
}

/// The span ids the query API answers for a trace, duplicates included.
fn span_ids(
    client: &reqwest::blocking::Client,
    spindle: &Spindle,
    trace: TraceId,
    tenant: Option<&str>,
) -> Vec<String> {
    let body = get(client, spindle, &format!("/api/traces/{trace}"), tenant);
    body["data"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|t| t["spans"].as_array().cloned().unwrap_or_default())
        .filter_map(|s| s["spanID"].as_str().map(str::to_string))
        .collect()
}

/// The trace ids a Jaeger search by service answers.
fn search(
    client: &reqwest::blocking::Client,
    spindle: &Spindle,
    service: &str,
    tenant: Option<&str>,
) -> HashSet<String> {
    let body = get(client, spindle, &format!("/api/traces?service={service}&lookback=1h&limit=1500"), tenant);
    body["data"].as_array().into_iter().flatten().filter_map(|t| t["traceID"].as_str().map(str::to_string)).collect()
}

fn services(client: &reqwest::blocking::Client, spindle: &Spindle, tenant: Option<&str>) -> Vec<String> {
    let body = get(client, spindle, "/api/services", tenant);
    body["data"].as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_string)).collect()
}

/// Waits until every trace of `sent` reads back with each of its spans exactly once.
fn assert_exactly_once(client: &reqwest::blocking::Client, query: &Spindle, sent: &[Span], tenant: Option<&str>) {
    let mut expected: HashMap<TraceId, HashSet<String>> = HashMap::new();
    for s in sent {
        expected.entry(s.trace_id).or_default().insert(s.span_id.to_string());
    }
    for (trace, ids) in &expected {
        let got = wait_until(&format!("trace {trace} complete on the query instance"), Duration::from_secs(30), || {
            let got = span_ids(client, query, *trace, tenant);
            (got.len() >= ids.len()).then_some(got)
        });
        let unique: HashSet<String> = got.iter().cloned().collect();
        assert_eq!(got.len(), unique.len(), "trace {trace}: a span is shown twice: {got:?}");
        assert_eq!(&unique, ids, "trace {trace}: other spans than sent");
    }
}

#[test]
fn collector_kafka_ingester_clickhouse_query_every_acknowledged_span_once_per_tenant_across_an_ingester_crash() {
    let clickhouse = ClickHouse::start();
    let tansu = Tansu::start(&[(TOPIC, 2)]);
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let kafka = ["--kafka-brokers", &tansu.bootstrap, "--kafka-topic", TOPIC];
    let collector = Spindle::start_with(dirs[0].path(), &[&["--target", "collector"][..], &kafka].concat());
    let mut ingester = on_clickhouse(dirs[1].path(), &clickhouse, &[&["--target", "ingester"][..], &kafka].concat());
    // Started after the ingester, before any tenant but the default has a database.
    let query = on_clickhouse(dirs[2].path(), &clickhouse, &["--target", "query"]);
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();

    // The query instance runs no receivers and no consumer.
    assert!(post(&client, &query, &spans(9, 1), None) == 0, "the query instance serves OTLP/HTTP");

    let http = spans(1, 10);
    assert_eq!(post(&client, &collector, &http, None), 200);
    let tenant = spans(2, 5);
    assert_eq!(post(&client, &collector, &tenant, Some(TENANT)), 200);
    let grpc = spans(3, 10);
    assert_eq!(export_grpc(&collector, &grpc), tonic::Code::Ok);

    assert_exactly_once(&client, &query, &http, None);
    assert_exactly_once(&client, &query, &grpc, None);
    assert_exactly_once(&client, &query, &tenant, Some(TENANT));
    // Each tenant apart: by id, by service list and by search.
    assert!(span_ids(&client, &query, tenant[0].trace_id, None).is_empty(), "team-a's trace read as default");
    assert!(span_ids(&client, &query, http[0].trace_id, Some(TENANT)).is_empty(), "default's trace read as team-a");
    let default_services = services(&client, &query, None);
    for s in http.iter().chain(&grpc) {
        assert!(default_services.contains(&s.service_name().to_string()), "{} not listed", s.service_name());
    }
    let team_services = services(&client, &query, Some(TENANT));
    let tenant_traces: HashSet<String> = tenant.iter().map(|s| s.trace_id.to_string()).collect();
    let default_traces: HashSet<String> = http.iter().chain(&grpc).map(|s| s.trace_id.to_string()).collect();
    for service in &team_services {
        let found = search(&client, &query, service, Some(TENANT));
        assert!(found.is_subset(&tenant_traces), "team-a's search of {service} found others' traces");
    }
    let service = tenant[0].service_name();
    assert!(team_services.contains(&service.to_string()), "{service} not listed for team-a: {team_services:?}");
    assert!(search(&client, &query, service, Some(TENANT)).contains(&tenant[0].trace_id.to_string()));
    let found = search(&client, &query, http[0].service_name(), None);
    assert!(found.contains(&http[0].trace_id.to_string()), "default search misses its trace");
    assert!(found.is_disjoint(&tenant_traces), "the default tenant's search found team-a's traces");
    assert!(found.is_subset(&default_traces), "the default tenant's search found unknown traces");
    // An unknown tenant reads as empty, and no database is created for the read.
    assert!(services(&client, &query, Some("nobody")).is_empty());
    let databases = client
        .get(format!("{}/?query=SELECT%20name%20FROM%20system.databases", clickhouse.http_url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let databases: HashSet<&str> = databases.lines().collect();
    assert!(databases.contains("spindle") && databases.contains("spindle_team_ha"), "{databases:?}");
    assert!(!databases.contains("spindle_nobody"), "a read created a database");

    // SIGKILL the ingester while batches stream in; every acknowledged span reads once
    // through the query instance after its restart.
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Vec::<Span>::new()));
    let sender = {
        let (stop, acknowledged) = (Arc::clone(&stop), Arc::clone(&acknowledged));
        let http_addr = collector.http;
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
            let mut seed = 100;
            while !stop.load(Ordering::Relaxed) {
                let batch = spans(seed, 4);
                seed += 1;
                let status = client
                    .post(format!("http://{http_addr}/v1/traces"))
                    .header("content-type", "application/x-protobuf")
                    .body(request(&batch).encode_to_vec())
                    .send()
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                if status == 200 {
                    acknowledged.lock().unwrap().extend(batch);
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    ingester.kill9();
    std::thread::sleep(Duration::from_millis(500));
    ingester.restart();
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() > 100, "only {} spans were acknowledged while streaming", acknowledged.len());
    assert_exactly_once(&client, &query, &acknowledged, None);
    assert_exactly_once(&client, &query, &http, None);
    assert_exactly_once(&client, &query, &tenant, Some(TENANT));
}

#[test]
fn all_on_clickhouse_round_trips_a_span_answers_503_without_it_and_query_needs_it() {
    let clickhouse = ClickHouse::start();
    let dir = tempfile::tempdir().unwrap();
    let all = on_clickhouse(dir.path(), &clickhouse, &["--target", "all"]);
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    let sent = spans(5, 3);
    assert_eq!(post(&client, &all, &sent, None), 200);
    assert_exactly_once(&client, &all, &sent, None);
    // Nothing was written to the data directory's store: the spans are in ClickHouse.
    assert!(!dir.path().join("spindle-data.json").exists(), "the embedded store was opened");
    // The other read APIs answer over ClickHouse too.
    let service = sent[0].service_name();
    let end_ms = now_nanos() / 1_000_000;
    for path in [
        "/api/v3/services".to_string(),
        format!("/api/dependencies?endTs={end_ms}&lookback=3600000"),
        format!("/api/spindle/stats?service={service}&lookback=1h"),
    ] {
        let (status, _) = all.get_json(&path);
        assert_eq!(status, 200, "{path}");
    }
    // ClickHouse gone: a query answers 503 with the reason.
    drop(clickhouse);
    let response = client.get(all.query_url("/api/services")).send().unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert!(response.text().unwrap().contains("ClickHouse"));
    // ...and /readyz says which dependency is missing.
    let readyz = format!("http://{}/readyz", all.admin);
    wait_until("/readyz to name ClickHouse", Duration::from_secs(15), || {
        let r = client.get(&readyz).send().ok()?;
        (r.status().as_u16() == 503)
            .then(|| r.text().ok())
            .flatten()
            .filter(|b| b.contains("clickhouse at"))
            .map(|_| ())
    });

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spindle"))
        .args(["serve", "--target", "query", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("storage = clickhouse"));
}
