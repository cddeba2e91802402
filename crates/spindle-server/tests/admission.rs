//! Receiver admission, end to end on the real binary: connections, requests in progress,
//! in-flight request bytes, spans per request, attributes per span and attribute value
//! length, each answered as its protocol expects and counted in
//! `spindle_limit_hits_total{limit}` (docs/OPERATIONS.md, "Limits").

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::Value;
use spindle_test_support::{free_port, free_udp_port, wait_until};

/// The binary with the given flags on free loopback ports.
struct Server {
    child: Child,
    ports: Vec<(&'static str, SocketAddr)>,
}

impl Server {
    fn start(data_dir: &Path, extra: &[&str]) -> Server {
        let tcp = |flag| (flag, SocketAddr::from(([127, 0, 0, 1], free_port())));
        let udp = |flag| (flag, SocketAddr::from(([127, 0, 0, 1], free_udp_port())));
        let ports = vec![
            tcp("--otlp-grpc-addr"),
            tcp("--otlp-http-addr"),
            tcp("--query-addr"),
            tcp("--admin-addr"),
            tcp("--jaeger-http-addr"),
            tcp("--jaeger-grpc-addr"),
            tcp("--zipkin-addr"),
            tcp("--sampling-addr"),
            udp("--jaeger-compact-addr"),
            udp("--jaeger-binary-addr"),
        ];
        let child = Command::new(env!("CARGO_BIN_EXE_spindle"))
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(ports.iter().flat_map(|(flag, addr)| [flag.to_string(), addr.to_string()]))
            .args(extra)
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env("SPINDLE_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn spindle");
        let mut server = Server { child, ports };
        let url = format!("http://{}/readyz", server.addr("--admin-addr"));
        wait_until("spindle /readyz", Duration::from_secs(60), || {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("spindle exited before it was ready: {status}");
            }
            reqwest::blocking::get(&url).ok().filter(|r| r.status().is_success()).map(|_| ())
        });
        server
    }

    fn addr(&self, flag: &str) -> SocketAddr {
        self.ports.iter().find(|(f, _)| *f == flag).expect("a listener flag").1
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `spindle_limit_hits_total{limit="…"}`, 0 before the first hit.
    fn limit_hits(&self, limit: &str) -> u64 {
        let text = reqwest::blocking::get(format!("http://{}/metrics", self.addr("--admin-addr")))
            .and_then(|r| r.text())
            .expect("GET /metrics");
        let prefix = format!("spindle_limit_hits_total{{limit=\"{limit}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |v| v.trim().parse().expect("a count"))
    }

    /// VmRSS of the server in kB.
    fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("/proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// The Jaeger API's view of a trace, if stored.
    fn trace(&self, trace: u128) -> Option<Value> {
        self.trace_hex(&format!("{trace:032x}"))
    }

    fn trace_hex(&self, trace: &str) -> Option<Value> {
        let url = format!("http://{}/api/traces/{trace}", self.addr("--query-addr"));
        let r = reqwest::blocking::get(url).ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.json::<Value>().ok()?["data"].get(0).cloned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
        key_strindex: 0,
    }
}

/// One trace of `spans` spans; each span gets `attributes`.
fn request(trace: u128, spans: u64, attributes: &[KeyValue]) -> ExportTraceServiceRequest {
    let start = now_nanos();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![string("service.name", "admission")], ..Default::default() }),
            scope_spans: vec![ScopeSpans {
                spans: (1..=spans)
                    .map(|i| Span {
                        trace_id: trace.to_be_bytes().to_vec(),
                        span_id: i.to_be_bytes().to_vec(),
                        name: "op".into(),
                        start_time_unix_nano: start,
                        end_time_unix_nano: start + 1_000_000,
                        attributes: attributes.to_vec(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
}

/// POSTs `body` to `url`: status and `Retry-After`.
fn post(url: &str, content_type: &str, body: Vec<u8>) -> (u16, Option<String>) {
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let r = client.post(url).header("content-type", content_type).body(body).send().expect("POST");
    let retry_after = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    (r.status().as_u16(), retry_after)
}

fn otlp_http(server: &Server, message: &ExportTraceServiceRequest) -> (u16, Option<String>) {
    post(
        &format!("http://{}/v1/traces", server.addr("--otlp-http-addr")),
        "application/x-protobuf",
        message.encode_to_vec(),
    )
}

/// A request whose headers declare `length` body bytes, of which only `sent` are sent: the
/// server holds it (its slot and reserved bytes) until the body timeout.
fn held_upload(addr: SocketAddr, path: &str, content_type: &str, length: usize, sent: usize) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: {content_type}\r\ncontent-length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&vec![0u8; sent]).unwrap();
    stream
}

/// The status line's code of the answer on `stream`, waiting up to `within`.
fn answer(stream: &mut TcpStream, within: Duration) -> Option<u16> {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 512];
    let n = stream.read(&mut buf).ok().filter(|n| *n > 0)?;
    let text = String::from_utf8_lossy(&buf[..n]);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

async fn grpc_client(addr: SocketAddr) -> TraceServiceClient<tonic::transport::Channel> {
    TraceServiceClient::connect(format!("http://{addr}")).await.expect("connect")
}

/// Whether a status carries a `google.rpc.RetryInfo`, which OTLP exporters need to retry
/// `RESOURCE_EXHAUSTED`.
fn has_retry_info(status: &tonic::Status) -> bool {
    let needle = b"type.googleapis.com/google.rpc.RetryInfo";
    status.details().windows(needle.len()).any(|w| w == needle)
}

#[test]
fn each_request_limit_answers_its_protocols_backpressure_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(
        dir.path(),
        &[
            "--max-concurrent-requests",
            "2",
            "--max-inflight-bytes",
            "200000",
            "--max-body-bytes",
            "100000",
            "--max-spans-per-request",
            "50",
            // Long enough for every check below to run while the uploads are held.
            "--request-body-timeout",
            "10s",
        ],
    );
    let otlp_url = format!("http://{}/v1/traces", server.addr("--otlp-http-addr"));
    let zipkin = server.addr("--zipkin-addr");
    let rt = runtime();

    // Spans per request: refused whole, as a permanent failure of each protocol.
    assert_eq!(otlp_http(&server, &request(1, 51, &[])), (413, None));
    assert_eq!(otlp_http(&server, &request(2, 50, &[])).0, 200);
    let zipkin_spans: Vec<Value> = (1..=51)
        .map(|i| {
            serde_json::json!({"traceId": "00000000000000000000000000000003", "id": format!("{i:016x}"),
            "name": "op", "timestamp": now_nanos() / 1000, "duration": 5, "localEndpoint": {"serviceName": "z"}})
        })
        .collect();
    let (status, _) =
        post(&format!("http://{zipkin}/api/v2/spans"), "application/json", serde_json::to_vec(&zipkin_spans).unwrap());
    assert_eq!(status, 413);
    let grpc = server.addr("--otlp-grpc-addr");
    let status = rt.block_on(async { grpc_client(grpc).await.export(request(4, 51, &[])).await.unwrap_err() });
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert_eq!(server.limit_hits("spans_per_request"), 3);
    assert!(server.trace(1).is_none(), "nothing of a refused request is stored");
    assert!(server.trace(2).is_some());

    // In-flight bytes: two uploads of 90000 declared bytes on two listeners hold 180000 of
    // the 200000 shared; more than the rest is refused at once on any listener, less fits.
    let mut held_otlp =
        held_upload(server.addr("--otlp-http-addr"), "/v1/traces", "application/x-protobuf", 90_000, 10);
    let mut held_zipkin = held_upload(zipkin, "/api/v2/spans", "application/json", 90_000, 10);
    std::thread::sleep(Duration::from_millis(500));
    let (status, retry_after) = post(
        &format!("http://{}/api/traces", server.addr("--jaeger-http-addr")),
        "application/x-thrift",
        vec![0u8; 50_000],
    );
    assert_eq!((status, retry_after.as_deref()), (429, Some("1")));
    let padding = string("padding", &"p".repeat(600));
    let status = rt.block_on(async {
        grpc_client(grpc).await.export(request(5, 40, std::slice::from_ref(&padding))).await.unwrap_err()
    });
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(has_retry_info(&status), "RESOURCE_EXHAUSTED without RetryInfo is not retried by OTLP exporters");
    assert!(server.trace(5).is_none());
    assert_eq!(server.limit_hits("inflight_bytes"), 2);
    assert_eq!(otlp_http(&server, &request(6, 1, &[])).0, 200, "a small request still fits");

    // Requests in progress: the OTLP/HTTP listener holds one; with a second its two slots
    // are taken and a third is answered 429 at once.
    let mut held_otlp_2 = held_upload(server.addr("--otlp-http-addr"), "/v1/traces", "application/x-protobuf", 10, 1);
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let (status, retry_after) = post(&otlp_url, "application/x-protobuf", request(7, 1, &[]).encode_to_vec());
    assert_eq!((status, retry_after.as_deref()), (429, Some("1")));
    assert!(started.elapsed() < Duration::from_secs(2), "backpressure at once, not after queueing");
    assert_eq!(server.limit_hits("concurrent_requests"), 1);
    // gRPC alike: two calls whose message never comes hold the listener's two slots.
    let (held_grpc, status) = rt.block_on(async {
        let mut held = Vec::new();
        for _ in 0..2 {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}")).unwrap().connect().await;
            let mut grpc = tonic::client::Grpc::new(channel.expect("connect"));
            held.push(tokio::spawn(async move {
                grpc.ready().await.unwrap();
                let path = tonic::codegen::http::uri::PathAndQuery::from_static(
                    "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                );
                let never = tokio_stream::pending::<ExportTraceServiceRequest>();
                let codec = tonic_prost::ProstCodec::<
                    ExportTraceServiceRequest,
                    opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse,
                >::default();
                grpc.client_streaming(tonic::Request::new(never), path, codec).await.map(|_| ())
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let status = grpc_client(grpc).await.export(request(8, 1, &[])).await.unwrap_err();
        (held, status)
    });
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(has_retry_info(&status));
    assert_eq!(server.limit_hits("concurrent_requests"), 2);

    // The body timeout releases every held upload: 408, DEADLINE_EXCEEDED.
    for stream in [&mut held_otlp, &mut held_zipkin, &mut held_otlp_2] {
        assert_eq!(answer(stream, Duration::from_secs(20)), Some(408));
    }
    for call in held_grpc {
        let status = rt.block_on(call).unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    }
    assert_eq!(server.limit_hits("request_body_timeout"), 5);

    // Everything was released: full-size requests get in again.
    assert_eq!(otlp_http(&server, &request(9, 50, std::slice::from_ref(&padding))).0, 200);
    rt.block_on(async { grpc_client(grpc).await.export(request(10, 40, &[padding])).await.unwrap() });
    assert!(server.trace(9).is_some() && server.trace(10).is_some());
    assert!(server.is_running());
}

/// A large body refused with backpressure reaches its client as the 429 and its
/// `Retry-After`: answered before the body was read, the connection closed under an HTTP/1.1
/// client still writing, which then saw a broken pipe, a transport error to OTLP exporters.
#[test]
fn a_large_refused_body_gets_the_429_not_a_broken_pipe() {
    const BODY: usize = 32 * 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            "--max-concurrent-requests",
            "1",
            "--max-inflight-bytes",
            "1000000",
            "--max-body-bytes",
            "67108864",
            // Long enough for the held uploads to outlast each step.
            "--request-body-timeout",
            "8s",
        ],
    );
    let otlp = server.addr("--otlp-http-addr");
    let url = format!("http://{otlp}/v1/traces");
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let body = vec![7u8; BODY];
    let send = |chunked: bool| {
        let request = client.post(&url).header("content-type", "application/x-protobuf");
        let request = if chunked {
            // No Content-Length: the bytes are reserved as they stream, refused partway.
            request.body(reqwest::blocking::Body::new(std::io::Cursor::new(body.clone())))
        } else {
            request.body(body.clone())
        };
        let r = request.send().unwrap_or_else(|e| panic!("a connection error instead of the 429: {e:?}"));
        (r.status().as_u16(), r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string()))
    };

    // The byte budget: an upload on another listener holds 900 kB of the 1 MB.
    let zipkin = server.addr("--zipkin-addr");
    let held_bytes = held_upload(zipkin, "/api/v2/spans", "application/json", 900_000, 10);
    std::thread::sleep(Duration::from_millis(300));
    for chunked in [false, true, false] {
        assert_eq!(send(chunked), (429, Some("1".to_string())), "chunked: {chunked}");
    }
    assert_eq!(server.limit_hits("inflight_bytes"), 3);
    drop(held_bytes);

    // Requests in progress: an upload holds the listener's one slot.
    let held_slot = held_upload(otlp, "/v1/traces", "application/x-protobuf", 100, 1);
    std::thread::sleep(Duration::from_millis(300));
    for chunked in [false, true, false] {
        assert_eq!(send(chunked), (429, Some("1".to_string())), "chunked: {chunked}");
    }
    assert_eq!(server.limit_hits("concurrent_requests"), 3);

    // Reading a refused body is bounded by the body timeout: one that never comes is
    // answered at the deadline, its connection then closed.
    let started = Instant::now();
    let mut stalled = held_upload(otlp, "/v1/traces", "application/x-protobuf", BODY, 1000);
    assert_eq!(answer(&mut stalled, Duration::from_secs(20)), Some(429));
    assert!(started.elapsed() < Duration::from_secs(15), "answered after {:?}", started.elapsed());
    drop(held_slot);
    assert_eq!(otlp_http(&server, &request(0xb16, 10, &[])).0, 200, "slots and bytes were all released");
}

#[test]
fn connections_beyond_the_cap_wait_to_be_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--max-connections", "2"]);
    let zipkin = server.addr("--zipkin-addr");
    let first = TcpStream::connect(zipkin).unwrap();
    let _second = TcpStream::connect(zipkin).unwrap();
    // The third connects (the kernel queues it) but is not served while two are open.
    let mut third = TcpStream::connect(zipkin).unwrap();
    let body = serde_json::json!([{"traceId": "0000000000000000000000000000000b", "id": "000000000000000b",
        "name": "op", "timestamp": now_nanos() / 1000, "duration": 5, "localEndpoint": {"serviceName": "z"}}])
    .to_string();
    let head = format!(
        "POST /api/v2/spans HTTP/1.1\r\nhost: {zipkin}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    third.write_all(head.as_bytes()).unwrap();
    third.write_all(body.as_bytes()).unwrap();
    assert_eq!(answer(&mut third, Duration::from_secs(1)), None, "not accepted while two are open");
    assert_eq!(server.limit_hits("connections"), 1);
    drop(first);
    assert_eq!(answer(&mut third, Duration::from_secs(20)), Some(202), "accepted once one closed");
    wait_until("the span stored", Duration::from_secs(20), || server.trace(0xb));
}

#[test]
fn idle_connections_are_closed_so_they_cannot_hold_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    // Idle connections are closed after twice the body timeout: 4 s here.
    let server = Server::start(dir.path(), &["--max-connections", "2", "--request-body-timeout", "2s"]);
    let zipkin = server.addr("--zipkin-addr");
    // A careless client: two connections that never send anything, and are never closed.
    let mut idle: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(zipkin).unwrap()).collect();
    let body = serde_json::json!([{"traceId": "0000000000000000000000000000001d", "id": "000000000000001d",
        "name": "op", "timestamp": now_nanos() / 1000, "duration": 5, "localEndpoint": {"serviceName": "z"}}])
    .to_string();
    let started = Instant::now();
    let mut good = TcpStream::connect(zipkin).unwrap();
    let head = format!(
        "POST /api/v2/spans HTTP/1.1\r\nhost: {zipkin}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    good.write_all(head.as_bytes()).unwrap();
    good.write_all(body.as_bytes()).unwrap();
    assert_eq!(answer(&mut good, Duration::from_secs(30)), Some(202), "served once the idle ones were closed");
    assert!(started.elapsed() >= Duration::from_secs(2), "not before the idle timeout");
    for stream in &mut idle {
        // Closed by the server: end of stream.
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert_eq!(stream.read(&mut [0u8; 16]).unwrap_or(0), 0);
    }
    wait_until("the span stored", Duration::from_secs(20), || server.trace(0x1d));
}

#[test]
fn a_request_head_trickled_byte_by_byte_cannot_hold_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    // Reading without writing is cut after twice the body timeout: 4 s here.
    let server = Server::start(dir.path(), &["--max-connections", "1", "--request-body-timeout", "2s"]);
    let zipkin = server.addr("--zipkin-addr");
    let trickler = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(zipkin).unwrap();
        let head = format!("POST /api/v2/spans HTTP/1.1\r\nhost: {zipkin}\r\nx-padding: ");
        stream.write_all(head.as_bytes()).unwrap();
        // One byte every 200 ms, for longer than the test waits: until the server closes it.
        let started = Instant::now();
        while stream.write_all(b"a").is_ok() && started.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(200));
        }
        started.elapsed()
    });
    std::thread::sleep(Duration::from_millis(500));
    let body = serde_json::json!([{"traceId": "0000000000000000000000000000002d", "id": "000000000000002d",
        "name": "op", "timestamp": now_nanos() / 1000, "duration": 5, "localEndpoint": {"serviceName": "z"}}])
    .to_string();
    let mut good = TcpStream::connect(zipkin).unwrap();
    let head = format!(
        "POST /api/v2/spans HTTP/1.1\r\nhost: {zipkin}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    good.write_all(head.as_bytes()).unwrap();
    good.write_all(body.as_bytes()).unwrap();
    assert_eq!(answer(&mut good, Duration::from_secs(30)), Some(202), "served once the trickler was cut");
    let trickled = trickler.join().unwrap();
    assert!(trickled < Duration::from_secs(30), "the trickling connection was closed after {trickled:?}");
    wait_until("the span stored", Duration::from_secs(20), || server.trace(0x2d));
}

#[test]
fn attributes_beyond_the_caps_are_dropped_or_cut_and_the_span_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--max-attributes-per-span", "4", "--max-attribute-value-bytes", "16"]);
    // 40 bytes of two-byte characters: cut to 16 bytes, 8 characters.
    let long = "é".repeat(20);
    let attributes: Vec<KeyValue> = [string("long", &long), string("a2", "x"), string("a3", "x"), string("a4", "x")]
        .into_iter()
        .chain([string("a5", "x"), string("a6", "x")])
        .collect();
    assert_eq!(otlp_http(&server, &request(0xa77, 1, &attributes)).0, 200);
    let trace = wait_until("the trace", Duration::from_secs(20), || server.trace(0xa77));
    let tags = trace["spans"][0]["tags"].as_array().unwrap().clone();
    let tag = |key: &str| tags.iter().find(|t| t["key"] == key).map(|t| t["value"].clone());
    assert_eq!(tag("long"), Some(Value::from("é".repeat(8))), "{tags:?}");
    assert_eq!(tag("a4"), Some(Value::from("x")));
    assert_eq!(tag("a5"), None, "beyond the cap: dropped");
    assert_eq!(tag("a6"), None);
    assert_eq!(tag("spindle.truncated_attributes"), Some(Value::from(1)), "{tags:?}");
    assert_eq!(server.limit_hits("attributes_per_span"), 2);
    assert_eq!(server.limit_hits("attribute_value_bytes"), 1);
}

#[test]
fn slow_uploads_cannot_grow_memory_and_a_good_client_still_gets_its_spans_stored() {
    const BODY: usize = 4 * 1024 * 1024;
    const UPLOADS: usize = 60;
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(
        dir.path(),
        &[
            "--max-inflight-bytes",
            "8388608",
            "--max-body-bytes",
            "4194304",
            "--max-concurrent-requests",
            "256",
            "--request-body-timeout",
            "3s",
        ],
    );
    assert_eq!(otlp_http(&server, &request(0x600d0, 10, &[])).0, 200);
    let baseline = server.rss_kb();
    let http = server.addr("--otlp-http-addr");

    // RSS sampled throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let pid = server.child.id();
    let sampler = {
        let (stop, peak) = (Arc::clone(&stop), Arc::clone(&peak));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                    let rss = status
                        .lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                        .unwrap_or(0);
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    // The careless client: uploads that send all but their last byte, then hold the
    // connection. Buffered as they came, they would be UPLOADS × 4 MiB of memory.
    let attackers: Vec<_> = (0..6)
        .map(|_| {
            std::thread::spawn(move || {
                let mut held = Vec::new();
                for _ in 0..UPLOADS / 6 {
                    let Ok(mut stream) = TcpStream::connect(http) else { continue };
                    stream.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
                    let head = format!(
                        "POST /v1/traces HTTP/1.1\r\nhost: {http}\r\ncontent-type: application/x-protobuf\r\ncontent-length: {BODY}\r\n\r\n"
                    );
                    // A refused upload finds its connection answered and closed: errors are expected.
                    if stream.write_all(head.as_bytes()).is_ok() {
                        let _ = stream.write_all(&vec![1u8; BODY - 1]);
                    }
                    held.push(stream);
                }
                held
            })
        })
        .collect();

    // The well-behaved client: retries after Retry-After until its spans are acknowledged.
    let started = Instant::now();
    let mut refused = 0;
    loop {
        let (status, retry_after) = otlp_http(&server, &request(0x600d1, 100, &[]));
        if status == 200 {
            break;
        }
        assert_eq!(status, 429, "backpressure, nothing else");
        assert!(retry_after.is_some());
        refused += 1;
        assert!(started.elapsed() < Duration::from_secs(60), "the good client never got in");
        std::thread::sleep(Duration::from_millis(200));
    }
    let held: Vec<TcpStream> = attackers.into_iter().flat_map(|a| a.join().unwrap()).collect();
    // Admin and query answer throughout.
    let probe = Instant::now();
    assert!(reqwest::blocking::get(format!("http://{}/readyz", server.addr("--admin-addr")))
        .unwrap()
        .status()
        .is_success());
    assert!(probe.elapsed() < Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    drop(held);

    assert!(server.is_running());
    assert!(server.trace(0x600d1).is_some(), "the good client's spans are stored");
    let growth_mib = peak.load(Ordering::Relaxed).saturating_sub(baseline) / 1024;
    eprintln!(
        "slow uploads: RSS {} MiB before, peak +{growth_mib} MiB; good client refused {refused} times, in after {:?}; \
         inflight_bytes hits {}",
        baseline / 1024,
        started.elapsed(),
        server.limit_hits("inflight_bytes")
    );
    // 8 MiB of budget and the connections' buffers, against 240 MiB had they been buffered.
    assert!(growth_mib < 64, "RSS grew by {growth_mib} MiB");
    assert!(server.limit_hits("inflight_bytes") > 0);
}

#[test]
fn jaeger_udp_spans_get_the_same_limits() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../spindle-codec/tests/fixtures/jaeger_compact_py_jaeger_client.bin");
    let datagram = std::fs::read(path).unwrap();
    let decoded = spindle_codec::jaeger_thrift::decode_emit_batch_compact(&datagram).unwrap();
    // The client's longest string tag, and what a 4-byte cap leaves of it.
    let (key, value) = decoded
        .spans
        .iter()
        .flat_map(|s| s.attributes.iter())
        .filter_map(|kv| kv.value.as_str().map(|v| (kv.key.to_string(), v.to_string())))
        .max_by_key(|(_, v)| v.len())
        .expect("a string tag");
    assert!(value.len() > 4, "the fixture has a tag longer than the cap");
    let end = (0..=4).rev().find(|&i| value.is_char_boundary(i)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--max-attribute-value-bytes", "4"]);
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(&datagram, server.addr("--jaeger-compact-addr")).unwrap();
    let trace_id = decoded.spans[0].trace_id.to_jaeger_hex();
    let trace = wait_until("the UDP trace", Duration::from_secs(20), || server.trace_hex(&trace_id));
    let tags: Vec<Value> =
        trace["spans"].as_array().unwrap().iter().flat_map(|s| s["tags"].as_array().unwrap().clone()).collect();
    assert!(tags.iter().any(|t| t["key"] == key.as_str() && t["value"] == value[..end]), "{key} cut: {tags:?}");
    assert!(tags.iter().any(|t| t["key"] == "spindle.truncated_attributes"), "{tags:?}");
    assert!(server.limit_hits("attribute_value_bytes") > 0);

    // More spans than allowed in one datagram: dropped whole, counted.
    assert!(decoded.spans.len() > 1, "the fixture has several spans");
    let dir = tempfile::tempdir().unwrap();
    let limit = (decoded.spans.len() - 1).to_string();
    let server = Server::start(dir.path(), &["--max-spans-per-request", &limit]);
    udp.send_to(&datagram, server.addr("--jaeger-compact-addr")).unwrap();
    wait_until("the datagram refused", Duration::from_secs(20), || {
        (server.limit_hits("spans_per_request") == 1).then_some(())
    });
    assert!(server.trace_hex(&trace_id).is_none());
}
