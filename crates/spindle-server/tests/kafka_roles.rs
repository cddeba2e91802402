//! Roles over the Kafka ingest buffer, against the real binary and the tansu broker: a
//! `--target collector` process takes OTLP/HTTP and OTLP/gRPC and writes to Kafka; a
//! `--target ingester` process consumes, stores and serves the query API. Every span a
//! client was answered 200/OK for is read back exactly once, with its tenant, also after
//! the ingester is killed with SIGKILL mid-stream; with the broker gone the collector
//! answers unavailable, never 200.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::Spindle;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use spindle_model::{Span, TraceId};
use spindle_test_support::{wait_until, Tansu};
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

fn collector(tansu: &Tansu, dir: &std::path::Path) -> Spindle {
    Spindle::start_with(dir, &["--target", "collector", "--kafka-brokers", &tansu.bootstrap, "--kafka-topic", TOPIC])
}

fn ingester(tansu: &Tansu, dir: &std::path::Path) -> Spindle {
    Spindle::start_with(dir, &["--target", "ingester", "--kafka-brokers", &tansu.bootstrap, "--kafka-topic", TOPIC])
}

/// POSTs spans over OTLP/HTTP protobuf to the collector; the status.
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

/// The span ids the ingester's query API answers for a trace, duplicates included.
fn span_ids(
    client: &reqwest::blocking::Client,
    spindle: &Spindle,
    trace: TraceId,
    tenant: Option<&str>,
) -> Vec<String> {
    let mut r = client.get(spindle.query_url(&format!("/api/traces/{trace}")));
    if let Some(t) = tenant {
        r = r.header("X-Scope-OrgID", t);
    }
    let Ok(response) = r.send() else { return Vec::new() };
    if !response.status().is_success() {
        return Vec::new();
    }
    let body: serde_json::Value = response.json().unwrap_or_default();
    body["data"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|t| t["spans"].as_array().cloned().unwrap_or_default())
        .filter_map(|s| s["spanID"].as_str().map(str::to_string))
        .collect()
}

/// Waits until every trace of `sent` reads back with each of its spans exactly once.
fn assert_exactly_once(client: &reqwest::blocking::Client, ingester: &Spindle, sent: &[Span], tenant: Option<&str>) {
    let mut expected: HashMap<TraceId, HashSet<String>> = HashMap::new();
    for s in sent {
        expected.entry(s.trace_id).or_default().insert(s.span_id.to_string());
    }
    for (trace, ids) in &expected {
        let got = wait_until(&format!("trace {trace} complete on the ingester"), Duration::from_secs(30), || {
            let got = span_ids(client, ingester, *trace, tenant);
            (got.len() >= ids.len()).then_some(got)
        });
        let unique: HashSet<String> = got.iter().cloned().collect();
        assert_eq!(got.len(), unique.len(), "trace {trace}: a span is shown twice: {got:?}");
        assert_eq!(&unique, ids, "trace {trace}: other spans than sent");
    }
}

/// Produces `spans` to the topic as a collector does, straight with rdkafka.
fn redeliver(tansu: &Tansu, tenant: &str, spans: &[Span]) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &tansu.bootstrap)
        .set("acks", "all")
        .create()
        .expect("test producer");
    let count = spans.len().to_string();
    let headers = OwnedHeaders::new()
        .insert(Header { key: "format", value: Some("otlp-proto/1") })
        .insert(Header { key: "tenant", value: Some(tenant) })
        .insert(Header { key: "protocol", value: Some("otlp_http") })
        .insert(Header { key: "spans", value: Some(&count) });
    let value = request(spans).encode_to_vec();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let record = FutureRecord::to(TOPIC).key(tenant).payload(&value).headers(headers);
        producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).expect("produce the duplicate");
    });
}

#[test]
fn collector_kafka_ingester_store_every_acknowledged_span_once_across_an_ingester_crash() {
    let tansu = Tansu::start(&[(TOPIC, 2)]);
    let (c_dir, i_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let collector = collector(&tansu, c_dir.path());
    let mut ingester = ingester(&tansu, i_dir.path());
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();

    // OTLP/HTTP (default tenant and team-a) and OTLP/gRPC (default tenant).
    let http = spans(1, 10);
    assert_eq!(post(&client, &collector, &http, None), 200);
    let tenant = spans(2, 5);
    assert_eq!(post(&client, &collector, &tenant, Some(TENANT)), 200);
    let grpc = spans(3, 10);
    assert_eq!(export_grpc(&collector, &grpc), tonic::Code::Ok);

    assert_exactly_once(&client, &ingester, &http, None);
    assert_exactly_once(&client, &ingester, &grpc, None);
    assert_exactly_once(&client, &ingester, &tenant, Some(TENANT));
    // The tenant is kept: team-a's traces are not the default tenant's, and the other way round.
    assert!(span_ids(&client, &ingester, tenant[0].trace_id, None).is_empty(), "team-a's trace read as default");
    assert!(span_ids(&client, &ingester, http[0].trace_id, Some(TENANT)).is_empty(), "default's trace read as team-a");
    // A batch delivered twice (as after a crash between the append and the offset commit)
    // reads once: the same message again, then a marker batch behind it in its partition
    // (same tenant, same key); once the marker is stored, so is the duplicate.
    redeliver(&tansu, "single-tenant", &http);
    let marker = spans(4, 2);
    assert_eq!(post(&client, &collector, &marker, None), 200);
    assert_exactly_once(&client, &ingester, &marker, None);
    assert_exactly_once(&client, &ingester, &http, None);
    // The collector holds no store and serves no queries.
    assert!(client.get(collector.query_url("/api/services")).send().is_err(), "collector serves the query API");

    // SIGKILL the ingester while batches stream in; every acknowledged one is there once
    // after its restart.
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
    assert_exactly_once(&client, &ingester, &acknowledged, None);
    // And the batches from before the crash, once each still.
    assert_exactly_once(&client, &ingester, &http, None);
    assert_exactly_once(&client, &ingester, &tenant, Some(TENANT));
}

/// A tansu broker on a given port, killed on drop: `Tansu::start` picks a port of its own,
/// and this test brings a broker back at the same address.
struct Broker(std::process::Child);

impl Broker {
    fn start(port: u16) -> Broker {
        let binary = std::env::var_os("TANSU_BIN")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                let path = std::env::var_os("PATH")?;
                std::env::split_paths(&path).map(|d| d.join("tansu")).find(|p| p.is_file())
            })
            .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cargo/bin/tansu")))
            .expect("tansu is required: cargo install tansu --locked --features dynostore");
        let url = format!("tcp://127.0.0.1:{port}");
        let child = std::process::Command::new(&binary)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start tansu");
        let broker = Broker(child);
        wait_until("the topic to be created", Duration::from_secs(30), || {
            let out = std::process::Command::new(&binary)
                .args(["topic", "create", TOPIC, "--partitions", "1", "--broker", &url])
                .output()
                .expect("tansu topic create");
            out.status.success().then_some(())
        });
        broker
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_collector_without_its_broker_answers_unavailable_never_ok_and_recovers_when_it_is_back() {
    let port = spindle_test_support::free_port();
    let broker = Broker::start(port);
    let dir = tempfile::tempdir().unwrap();
    let bootstrap = format!("127.0.0.1:{port}");
    let collector = Spindle::start_with(
        dir.path(),
        &["--target", "collector", "--kafka-brokers", &bootstrap, "--kafka-topic", TOPIC],
    );
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    assert_eq!(post(&client, &collector, &spans(1, 2), None), 200);

    let readyz = format!("http://{}/readyz", collector.admin);
    let ready_text = |client: &reqwest::blocking::Client| {
        client.get(&readyz).send().ok().map(|r| (r.status().as_u16(), r.text().unwrap_or_default()))
    };
    assert_eq!(ready_text(&client).map(|(s, _)| s), Some(200));

    drop(broker);
    // /readyz says the broker is missing...
    wait_until("/readyz to name kafka", Duration::from_secs(15), || {
        ready_text(&client).filter(|(s, b)| *s == 503 && b.contains("kafka at")).map(|_| ())
    });
    let started = Instant::now();
    let status = post(&client, &collector, &spans(2, 2), None);
    assert!(status == 503 || status == 429, "OTLP/HTTP without the broker answered {status}");
    assert!(started.elapsed() < Duration::from_secs(20), "the answer took {:?}", started.elapsed());
    let code = export_grpc(&collector, &spans(3, 2));
    assert!(
        code == tonic::Code::Unavailable || code == tonic::Code::ResourceExhausted,
        "OTLP/gRPC without the broker answered {code:?}"
    );

    // The broker back (a new one at the same address): the collector produces again by itself.
    let _broker = Broker::start(port);
    let mut seed = 10;
    wait_until("the collector to accept again", Duration::from_secs(40), || {
        seed += 1;
        (post(&client, &collector, &spans(seed, 2), None) == 200).then_some(())
    });
    // ...and ready again once it is back.
    wait_until("/readyz ready again", Duration::from_secs(15), || {
        ready_text(&client).filter(|(s, _)| *s == 200).map(|_| ())
    });
}
