//! Harness of the role tests (kafka_roles.rs, ch_roles.rs): spans to send, OTLP clients,
//! trace reads that count every span, a sender that streams batches and keeps those
//! acknowledged, `/metrics` and `/readyz` reads, and the Kafka offsets of a group.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::Spindle;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use spindle_model::{Span, TraceId};
use spindle_test_support::wait_until;
use spindle_workload::Workload;

pub const TOPIC: &str = "spindle-spans";
pub const GROUP: &str = "spindle-ingester";

pub fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// `traces` traces of the reference workload, started within the last minute.
pub fn spans(seed: u64, traces: usize) -> Vec<Span> {
    Workload::new(seed).batch(traces, now_nanos() - 60_000_000_000, 30_000_000_000)
}

pub fn request(spans: &[Span]) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest { resource_spans: spindle_codec::otlp::spans_to_resource_spans(spans) }
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(20)).build().unwrap()
}

/// The `args` with the collector's or ingester's Kafka settings in front.
pub fn with_kafka<'a>(bootstrap: &'a str, target: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["--target", target, "--kafka-brokers", bootstrap, "--kafka-topic", TOPIC];
    all.extend_from_slice(args);
    all
}

/// POSTs spans over OTLP/HTTP protobuf; the status (0 when there was no answer).
pub fn post(client: &reqwest::blocking::Client, spindle: &Spindle, spans: &[Span], tenant: Option<&str>) -> u16 {
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
pub fn export_grpc(spindle: &Spindle, spans: &[Span]) -> tonic::Code {
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

/// A query API answer as JSON; `Null` unless it answered 2xx.
pub fn get(
    client: &reqwest::blocking::Client,
    spindle: &Spindle,
    path: &str,
    tenant: Option<&str>,
) -> serde_json::Value {
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
pub fn span_ids(
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

/// The span ids of each trace of `sent`.
pub fn by_trace(sent: &[Span]) -> HashMap<TraceId, HashSet<String>> {
    let mut expected: HashMap<TraceId, HashSet<String>> = HashMap::new();
    for s in sent {
        expected.entry(s.trace_id).or_default().insert(s.span_id.to_string());
    }
    expected
}

/// Waits until every trace of `sent` reads back from `reader` with each of its spans
/// exactly once.
pub fn assert_exactly_once(client: &reqwest::blocking::Client, reader: &Spindle, sent: &[Span], tenant: Option<&str>) {
    for (trace, ids) in &by_trace(sent) {
        let got = wait_until(&format!("trace {trace} complete"), Duration::from_secs(30), || {
            let got = span_ids(client, reader, *trace, tenant);
            (got.len() >= ids.len()).then_some(got)
        });
        let unique: HashSet<String> = got.iter().cloned().collect();
        assert_eq!(got.len(), unique.len(), "trace {trace}: a span is shown twice: {got:?}");
        assert_eq!(&unique, ids, "trace {trace}: other spans than sent");
    }
}

/// The batches [`send_each_way`] sent: OTLP/HTTP as the default tenant, OTLP/HTTP as the
/// tenant, OTLP/gRPC as the default tenant.
pub struct Sent {
    pub http: Vec<Span>,
    pub tenant: Vec<Span>,
    pub grpc: Vec<Span>,
}

/// Sends one batch each way to `collector`, each acknowledged, and waits until `reader`
/// reads every span once, each tenant's trace by id apart from the other's.
pub fn send_each_way(client: &reqwest::blocking::Client, collector: &Spindle, reader: &Spindle, tenant: &str) -> Sent {
    let sent = Sent { http: spans(1, 10), tenant: spans(2, 5), grpc: spans(3, 10) };
    assert_eq!(post(client, collector, &sent.http, None), 200);
    assert_eq!(post(client, collector, &sent.tenant, Some(tenant)), 200);
    assert_eq!(export_grpc(collector, &sent.grpc), tonic::Code::Ok);
    assert_exactly_once(client, reader, &sent.http, None);
    assert_exactly_once(client, reader, &sent.grpc, None);
    assert_exactly_once(client, reader, &sent.tenant, Some(tenant));
    let (theirs, default) = (sent.tenant[0].trace_id, sent.http[0].trace_id);
    assert!(span_ids(client, reader, theirs, None).is_empty(), "{tenant}'s trace read as the default tenant's");
    assert!(
        span_ids(client, reader, default, Some(tenant)).is_empty(),
        "the default tenant's trace read as {tenant}'s"
    );
    sent
}

/// A thread posting batches of `traces` traces to a collector over OTLP/HTTP, one after
/// the other with `pause` between them, keeping the spans of those answered 200.
pub struct Stream {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<Span>>>,
    refused: Arc<Mutex<Vec<u16>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Stream {
    pub fn start(collector: &Spindle, first_seed: u64, traces: usize, pause: Duration) -> Stream {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, acknowledged, refused) = (Arc::clone(&stop), Arc::clone(&acknowledged), Arc::clone(&refused));
            let http = collector.http;
            std::thread::spawn(move || {
                let client = client();
                let mut seed = first_seed;
                while !stop.load(Ordering::Relaxed) {
                    let batch = spans(seed, traces);
                    seed += 1;
                    let status = client
                        .post(format!("http://{http}/v1/traces"))
                        .header("content-type", "application/x-protobuf")
                        .body(request(&batch).encode_to_vec())
                        .send()
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0);
                    if status == 200 {
                        acknowledged.lock().unwrap().extend(batch);
                    } else {
                        refused.lock().unwrap().push(status);
                    }
                    std::thread::sleep(pause);
                }
            })
        };
        Stream { stop, acknowledged, refused, thread: Some(thread) }
    }

    /// Spans acknowledged so far.
    pub fn acknowledged(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }

    /// Stops the thread; the spans acknowledged and the statuses of the batches refused.
    pub fn stop(mut self) -> (Vec<Span>, Vec<u16>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        let acknowledged = std::mem::take(&mut *self.acknowledged.lock().unwrap());
        let refused = std::mem::take(&mut *self.refused.lock().unwrap());
        (acknowledged, refused)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The sum of the samples of `name` (exactly that name, any labels) on the admin
/// `/metrics`.
pub fn metric(client: &reqwest::blocking::Client, spindle: &Spindle, name: &str) -> f64 {
    let text = client.get(format!("http://{}/metrics", spindle.admin)).send().unwrap().text().unwrap();
    text.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `/readyz`: status and body.
pub fn readyz(client: &reqwest::blocking::Client, spindle: &Spindle) -> Option<(u16, String)> {
    let r = client.get(format!("http://{}/readyz", spindle.admin)).send().ok()?;
    Some((r.status().as_u16(), r.text().unwrap_or_default()))
}

/// Waits until `/readyz` answers 503 with `wanted` in its body.
pub fn wait_unready(client: &reqwest::blocking::Client, spindle: &Spindle, wanted: &str) {
    wait_until(&format!("/readyz to say {wanted:?}"), Duration::from_secs(15), || {
        readyz(client, spindle).filter(|(s, b)| *s == 503 && b.contains(wanted)).map(|_| ())
    });
}

/// Waits until `/readyz` answers 200.
pub fn wait_ready(client: &reqwest::blocking::Client, spindle: &Spindle) {
    wait_until("/readyz to answer 200", Duration::from_secs(30), || {
        readyz(client, spindle).filter(|(s, _)| *s == 200).map(|_| ())
    });
}

fn kafka_client(bootstrap: &str) -> BaseConsumer {
    rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .create()
        .expect("test Kafka client")
}

/// The offsets `GROUP` has committed for `partitions` of the topic (-1: none).
pub fn committed(bootstrap: &str, partitions: &[i32]) -> Vec<i64> {
    let consumer = kafka_client(bootstrap);
    let mut list = rdkafka::TopicPartitionList::new();
    for p in partitions {
        list.add_partition(TOPIC, *p);
    }
    let committed = consumer.committed_offsets(list, Duration::from_secs(10)).expect("committed offsets");
    partitions
        .iter()
        .map(|p| match committed.find_partition(TOPIC, *p).map(|e| e.offset()) {
            Some(rdkafka::Offset::Offset(n)) => n,
            _ => -1,
        })
        .collect()
}

/// The end (high watermark) of each of `partitions`.
pub fn ends(bootstrap: &str, partitions: &[i32]) -> Vec<i64> {
    let consumer = kafka_client(bootstrap);
    partitions
        .iter()
        .map(|p| consumer.fetch_watermarks(TOPIC, *p, Duration::from_secs(10)).expect("watermarks").1)
        .collect()
}

/// Produces `spans` to the topic as a collector does (the same headers), straight with
/// rdkafka, keyed by `key`.
pub fn produce(bootstrap: &str, tenant: &str, spans: &[Span], key: &[u8]) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
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
        let record = FutureRecord::to(TOPIC).key(key).payload(&value).headers(headers);
        producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).expect("produce");
    });
}
