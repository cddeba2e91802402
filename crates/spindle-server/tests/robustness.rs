//! Durability across kill -9, clean shutdown, and malformed input on every endpoint.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::Spindle;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::Value;

fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// One trace of `spans` spans whose trace id is `trace` (non-zero).
fn request(trace: u128, spans: u64) -> ExportTraceServiceRequest {
    let start = now_nanos();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue { value: Some(any_value::Value::StringValue("crash-test".into())) }),
                    key_strindex: 0,
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: (1..=spans)
                    .map(|i| Span {
                        trace_id: trace.to_be_bytes().to_vec(),
                        span_id: i.to_be_bytes().to_vec(),
                        parent_span_id: if i == 1 { vec![] } else { 1u64.to_be_bytes().to_vec() },
                        name: format!("op-{}", i % 7),
                        start_time_unix_nano: start,
                        end_time_unix_nano: start + 1_000_000,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
}

fn post(
    client: &reqwest::blocking::Client,
    spindle: &Spindle,
    content_type: &str,
    body: Vec<u8>,
    gzip: bool,
) -> (u16, Vec<u8>) {
    let mut req =
        client.post(format!("http://{}/v1/traces", spindle.http)).header("content-type", content_type).body(body);
    if gzip {
        req = req.header("content-encoding", "gzip");
    }
    match req.send() {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.bytes().map(|b| b.to_vec()).unwrap_or_default())
        }
        Err(_) => (0, Vec::new()),
    }
}

#[test]
fn acknowledged_spans_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut spindle = Spindle::start(dir.path());
    let acked: Arc<Mutex<Vec<u128>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let spans_per_trace = 25;
    let http = spindle.http;
    let senders: Vec<_> = (0..4u128)
        .map(|worker| {
            let acked = Arc::clone(&acked);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                let mut n = 0u128;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let trace = (worker + 1) << 64 | n;
                    let body = request(trace, spans_per_trace).encode_to_vec();
                    let sent = client
                        .post(format!("http://{http}/v1/traces"))
                        .header("content-type", "application/x-protobuf")
                        .body(body)
                        .send();
                    if matches!(&sent, Ok(r) if r.status().is_success()) {
                        acked.lock().unwrap().push(trace);
                    }
                }
            })
        })
        .collect();
    // Let the senders get going, then pull the plug mid-stream.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < 200 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    spindle.kill9();
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 200, "only {} batches were acknowledged", acked.len());

    spindle.restart();
    let client = reqwest::blocking::Client::new();
    for trace in &acked {
        let body: Value =
            client.get(spindle.query_url(&format!("/api/traces/{trace:032x}"))).send().unwrap().json().unwrap();
        let spans = body["data"][0]["spans"].as_array().map(Vec::len).unwrap_or(0);
        assert_eq!(spans, spans_per_trace as usize, "trace {trace:032x} lost spans after kill -9");
    }
}

#[test]
fn sigterm_shuts_down_cleanly_and_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut spindle = Spindle::start(dir.path());
    let client = reqwest::blocking::Client::new();
    let (status, _) = post(&client, &spindle, "application/x-protobuf", request(7, 3).encode_to_vec(), false);
    assert_eq!(status, 200);
    let exit = spindle.terminate();
    assert!(exit.success(), "exit status {exit}");
    spindle.restart();
    let (status, body) = spindle.get_json("/api/traces/7");
    assert_eq!(status, 200);
    assert_eq!(body["data"][0]["spans"].as_array().unwrap().len(), 3);
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

#[test]
fn malformed_otlp_gets_4xx_with_a_reason_and_the_server_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut spindle = Spindle::start_with(dir.path(), &["--max-body-bytes", "65536"]);
    let client = reqwest::blocking::Client::new();
    let good = request(1, 2).encode_to_vec();

    // Truncated and garbage protobuf: 400 with a google.rpc.Status body.
    for body in [good[..good.len() - 5].to_vec(), vec![0xff; 64], b"\x0a\xff\xff\xff\xff\x0f".to_vec()] {
        let (status, reply) = post(&client, &spindle, "application/x-protobuf", body, false);
        assert_eq!(status, 400);
        let rpc = RpcStatus::decode(reply.as_slice()).expect("google.rpc.Status body");
        assert!(rpc.message.starts_with("invalid protobuf"), "{}", rpc.message);
    }
    // Invalid JSON, with the reason.
    for (body, needle) in [
        ("{\"resourceSpans\": [", "EOF"),
        ("[]", "JSON object"),
        ("{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"traceId\":\"zz\"}]}]}]}", "trace id"),
    ] {
        let (status, reply) = post(&client, &spindle, "application/json", body.into(), false);
        assert_eq!(status, 400, "{body}");
        let reply: Value = serde_json::from_slice(&reply).unwrap();
        assert!(reply["message"].as_str().unwrap().contains(needle), "{reply}");
    }
    // Zero ids: partial success naming the count and the reason; valid spans kept.
    let mut zero = request(2, 3);
    zero.resource_spans[0].scope_spans[0].spans[1].trace_id = vec![0; 16];
    zero.resource_spans[0].scope_spans[0].spans[2].span_id = vec![0; 8];
    let (status, reply) = post(&client, &spindle, "application/x-protobuf", zero.encode_to_vec(), false);
    assert_eq!(status, 200);
    let reply = ExportTraceServiceResponse::decode(reply.as_slice()).unwrap();
    let partial = reply.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 2);
    assert!(partial.error_message.contains("not all zero"), "{}", partial.error_message);
    let (_, body) = spindle.get_json("/api/traces/2");
    assert_eq!(body["data"][0]["spans"].as_array().unwrap().len(), 1);
    // Oversized bodies, plain and as a gzip bomb: 413.
    let (status, _) = post(&client, &spindle, "application/x-protobuf", vec![0; 70_000], false);
    assert_eq!(status, 413);
    let (status, reply) = post(&client, &spindle, "application/x-protobuf", gzip(&vec![0; 10_000_000]), true);
    assert_eq!(status, 413);
    assert!(RpcStatus::decode(reply.as_slice()).unwrap().message.contains("exceeds the limit"));
    // Broken gzip, wrong content type or encoding.
    let (status, _) = post(&client, &spindle, "application/x-protobuf", b"not gzip".to_vec(), true);
    assert_eq!(status, 400);
    let (status, _) = post(&client, &spindle, "text/plain", good.clone(), false);
    assert_eq!(status, 415);
    let r = client
        .post(format!("http://{}/v1/traces", spindle.http))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "br")
        .body(good.clone())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    // Gzip that is fine is fine.
    let (status, _) = post(&client, &spindle, "application/x-protobuf", gzip(&good), true);
    assert_eq!(status, 200);

    // gRPC: zero ids give partial success; an oversized message is refused.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut grpc = TraceServiceClient::connect(format!("http://{}", spindle.grpc)).await.unwrap();
        let mut req = request(3, 2);
        req.resource_spans[0].scope_spans[0].spans[0].trace_id = vec![0; 16];
        let reply = grpc.export(req).await.unwrap().into_inner();
        assert_eq!(reply.partial_success.unwrap().rejected_spans, 1);
        let huge = request(4, 2_000);
        let err = grpc.export(huge).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::OutOfRange, "{err}");

        // Undecodable messages answer INTERNAL on both gRPC receivers, as tonic's prost codec
        // answers them; good messages still go through.
        let otlp = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
        let jaeger = "/jaeger.api_v2.CollectorService/PostSpans";
        for (addr, path) in [(spindle.grpc, otlp), (spindle.jaeger_grpc, jaeger)] {
            let status = send_raw(addr, path, vec![0xff; 8]).await;
            assert_eq!(status.code(), tonic::Code::Internal, "{path}: {status}");
        }
        assert_eq!(send_raw(spindle.grpc, otlp, request(5, 2).encode_to_vec()).await.code(), tonic::Code::Ok);
        let empty = spindle_codec::jaeger_proto::PostSpansRequest::default().encode_to_vec();
        assert_eq!(send_raw(spindle.jaeger_grpc, jaeger, empty).await.code(), tonic::Code::Ok);
    });

    assert!(spindle.is_running());
    let (status, _) = post(&client, &spindle, "application/x-protobuf", good, false);
    assert_eq!(status, 200, "good input still works after the bad");
}

/// A gRPC codec sending a message's bytes as given and ignoring the answer's message.
#[derive(Clone, Copy, Default)]
struct RawCodec;

struct RawEncoder;

struct IgnoringDecoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for IgnoringDecoder {
    type Item = ();
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<()>, tonic::Status> {
        bytes::Buf::advance(src, bytes::Buf::remaining(src));
        Ok(Some(()))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = ();
    type Encoder = RawEncoder;
    type Decoder = IgnoringDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> IgnoringDecoder {
        IgnoringDecoder
    }
}

/// Calls the unary method `path` at `addr` with `message` as it is; the answer's status.
async fn send_raw(addr: std::net::SocketAddr, path: &'static str, message: Vec<u8>) -> tonic::Status {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut client = tonic::client::Grpc::new(channel);
    client.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    match client.unary(tonic::Request::new(message), path, RawCodec).await {
        Ok(_) => tonic::Status::ok(""),
        Err(status) => status,
    }
}

#[test]
fn bad_query_parameters_get_400_naming_the_parameter() {
    let dir = tempfile::tempdir().unwrap();
    let mut spindle = Spindle::start(dir.path());
    for (path, needle) in [
        ("/api/traces?minDuration=abc", "minDuration"),
        ("/api/traces?maxDuration=10", "maxDuration"),
        ("/api/traces?minDuration=2s&maxDuration=1s", "minDuration"),
        ("/api/traces?start=yesterday", "start"),
        ("/api/traces?start=20&end=10", "time range"),
        ("/api/traces?limit=-1", "limit"),
        ("/api/traces?tags=notjson", "tags"),
        ("/api/traces?tag=nocolon", "tag"),
        ("/api/traces?traceID=xyz", "traceID"),
        ("/api/traces/not-hex", "traceID"),
        ("/api/traces/00000000000000000000000000000000", "traceID"),
        ("/api/operations", "service"),
        ("/api/operations?service=a&spanKind=sideways", "spanKind"),
        ("/api/dependencies?endTs=now", "endTs"),
        ("/api/dependencies?lookback=1h", "lookback"),
    ] {
        let (status, body) = spindle.get_json(path);
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["data"], Value::Null);
        let msg = body["errors"][0]["msg"].as_str().unwrap();
        assert!(msg.contains(needle), "{path}: {msg}");
        assert_eq!(body["errors"][0]["code"], 400);
    }
    for (path, needle) in [
        ("/api/v3/traces?query.start_time_min=yesterday", "query.start_time_min"),
        ("/api/v3/traces?query.durationMin=fast", "query.durationMin"),
        ("/api/v3/traces?query.searchDepth=0", "query.searchDepth"),
        ("/api/v3/traces?query.attributes=%5B1%5D", "query.attributes"),
        ("/api/v3/traces/qq", "trace_id"),
        ("/api/v3/operations", "service"),
    ] {
        let (status, body) = spindle.get_json(path);
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(needle), "{path}: {body}");
        assert_eq!(body["error"]["httpCode"], 400);
    }
    let (status, body) = spindle.get_json("/api/traces/abc");
    assert_eq!((status, &body["errors"][0]["msg"]), (404, &Value::from("trace not found")));
    let (status, _) = spindle.get_json("/api/v3/traces/abc");
    assert_eq!(status, 404);
    let (status, _) = spindle.get_json("/api/nothing-here");
    assert_eq!(status, 404);
    let (status, body) = spindle.get_json("/api/services");
    assert_eq!((status, &body["data"]), (200, &serde_json::json!([])));
    // Jaeger answers an empty service list with `[]` but no operations with `null` (a Go nil
    // slice); clients written against it may test for either.
    let (status, body) = spindle.get_json("/api/services/no-such-service/operations");
    assert_eq!((status, &body["data"], &body["total"]), (200, &Value::Null, &Value::from(0)), "{body}");
    assert!(spindle.is_running());
}
