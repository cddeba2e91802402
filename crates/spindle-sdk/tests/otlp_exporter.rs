//! The SDK's own OTLP exporter (module `otlp`) against a real spindle started here: spans sent
//! over gRPC and HTTP/protobuf, with and without gzip, are read back through spindle's Jaeger
//! API (`/api/v3/traces/{id}`, OTLP JSON) and checked field by field — resource, scope,
//! kinds, parents, attributes of every type, events, links, status. Also: an unreachable
//! backend and one that answers garbage fail the export (counted), never the service.
//!
//! Needs the `spindle` binary (built from this workspace on first use, or `SPINDLE_BIN`).

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use opentelemetry::trace::{SpanContext, TraceContextExt, TraceFlags, TraceState};
use serde_json::Value;
use spindle_sdk::SpanExt;
use spindle_sdk::{Compression, Protocol, SamplerConfig};
use support::Spindle;
use support::{free_port, wait_until, TestService};

const WAIT: Duration = Duration::from_secs(30);

fn service(name: &str, endpoint: &str, protocol: Protocol, compression: Compression) -> TestService {
    TestService::with_builder(
        name,
        spindle_sdk::builder(name)
            .endpoint(endpoint)
            .protocol(protocol)
            .compression(compression)
            .sampler(SamplerConfig::AlwaysOn)
            .resource_attribute("deployment.environment.name", "test")
            .resource_attribute("service.version", "1.2.3")
            .scheduled_delay(Duration::from_millis(50))
            .export_timeout(Duration::from_secs(5)),
    )
}

/// One traced request: a SERVER span with a remote parent, children of every kind, an
/// error with its exception event, a link and attributes of every type. Returns the trace id.
fn traced_request(svc: &TestService, trace_hex: &str) -> String {
    let trace_hex = trace_hex.to_owned();
    svc.run(async move {
        let remote = opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
            opentelemetry::trace::TraceId::from_hex(&trace_hex).expect("hex trace id"),
            opentelemetry::trace::SpanId::from_hex("00f067aa0ba902b7").expect("hex span id"),
            TraceFlags::SAMPLED,
            true,
            TraceState::from_key_value([("vendor", "abc")]).expect("trace state"),
        ));
        let server = tracing::info_span!(
            "http.server",
            otel.name = "GET /stocks/{symbol}",
            otel.kind = "server",
            http.request.method = "GET",
            http.response.status_code = 200_i64,
            ratio = 0.75,
            cached = true,
            symbol = "7203.T",
        );
        spindle_sdk::propagation::set_remote_parent(&server, remote);
        let linked = SpanContext::new(
            opentelemetry::trace::TraceId::from(0xabcdef_u128),
            opentelemetry::trace::SpanId::from(0x1234_u64),
            TraceFlags::SAMPLED,
            true,
            TraceState::NONE,
        );
        let _entered = server.enter();
        for (name, kind) in [("send market-data", "producer"), ("process market-data", "consumer"), ("GET", "client")] {
            tracing::info_span!("child", otel.name = name, otel.kind = kind).in_scope(|| {});
        }
        let failing = tracing::info_span!("db_write", rows = -3_i64);
        failing.add_link_with_attributes(linked, vec![opentelemetry::KeyValue::new("link.reason", "batch")]);
        failing.in_scope(|| {
            tracing::info!(attempt = 2_i64, "retrying");
        });
        spindle_sdk::record_error(&failing, &std::io::Error::other("connection refused"));
        drop(failing);
        spindle_sdk::current_trace_id().expect("sampled")
    })
}

fn attributes(value: &Value) -> Vec<(String, Value)> {
    value["attributes"]
        .as_array()
        .map(|attrs| {
            attrs.iter().map(|kv| (kv["key"].as_str().unwrap_or("").to_owned(), kv["value"].clone())).collect()
        })
        .unwrap_or_default()
}

fn attr(value: &Value, key: &str) -> Option<Value> {
    attributes(value).into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// Spans of `trace_id` as spindle stores them, with their resource and scope.
fn read_back(spindle: &Spindle, trace_id: &str, count: usize) -> Vec<(Value, Value, Value)> {
    wait_until(&format!("{count} spans of {trace_id}"), WAIT, || {
        let (status, body) = support::http_get(&format!("{}/api/v3/traces/{trace_id}", spindle.query))?;
        if status != 200 {
            return None;
        }
        let body: Value = serde_json::from_str(&body).ok()?;
        let mut spans = Vec::new();
        for rs in body["result"]["resourceSpans"].as_array()? {
            for ss in rs["scopeSpans"].as_array()? {
                for span in ss["spans"].as_array()? {
                    spans.push((rs["resource"].clone(), ss["scope"].clone(), span.clone()));
                }
            }
        }
        (spans.len() >= count).then_some(spans)
    })
}

fn by_name<'a>(spans: &'a [(Value, Value, Value)], name: &str) -> &'a (Value, Value, Value) {
    spans.iter().find(|(_, _, s)| s["name"] == name).unwrap_or_else(|| panic!("no span {name} in {spans:#?}"))
}

fn check_trace(spindle: &Spindle, svc: &TestService, trace_hex: &str) {
    let trace_id = traced_request(svc, trace_hex);
    assert_eq!(trace_id, trace_hex);
    svc.guard.flush().expect("flush");
    let stats = svc.guard.stats();
    assert_eq!((stats.exported, stats.failed), (5, 0), "{stats:?}");

    let spans = read_back(spindle, &trace_id, 5);
    assert_eq!(spans.len(), 5, "{spans:#?}");
    let (resource, scope, server) = by_name(&spans, "GET /stocks/{symbol}");
    assert_eq!(attr(resource, "service.name"), Some(serde_json::json!({"stringValue": svc.name})));
    assert_eq!(attr(resource, "service.version"), Some(serde_json::json!({"stringValue": "1.2.3"})));
    assert_eq!(attr(resource, "deployment.environment.name"), Some(serde_json::json!({"stringValue": "test"})));
    assert_eq!(scope["name"], "spindle-sdk");
    assert_eq!(scope["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(server["kind"], 2, "SERVER: {server}");
    assert_eq!(server["parentSpanId"], "00f067aa0ba902b7");
    assert_eq!(server["traceState"], "vendor=abc");
    assert_eq!(attr(server, "http.request.method"), Some(serde_json::json!({"stringValue": "GET"})));
    let status = attr(server, "http.response.status_code").expect("status code attribute");
    assert_eq!(
        status["intValue"].as_str().map(str::to_owned).or_else(|| status["intValue"].as_i64().map(|v| v.to_string())),
        Some("200".to_owned())
    );
    assert_eq!(attr(server, "ratio"), Some(serde_json::json!({"doubleValue": 0.75})));
    assert_eq!(attr(server, "cached"), Some(serde_json::json!({"boolValue": true})));
    assert_eq!(attr(server, "symbol"), Some(serde_json::json!({"stringValue": "7203.T"})));
    let start: u64 = server["startTimeUnixNano"].as_str().and_then(|t| t.parse().ok()).expect("start time");
    let end: u64 = server["endTimeUnixNano"].as_str().and_then(|t| t.parse().ok()).expect("end time");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos() as u64;
    assert!(start <= end && end <= now && now - start < 600_000_000_000, "{start} {end} {now}");

    let server_id = server["spanId"].as_str().expect("span id").to_owned();
    for (name, kind) in [("send market-data", 4), ("process market-data", 5), ("GET", 3)] {
        let (_, _, child) = by_name(&spans, name);
        assert_eq!(child["kind"], kind, "{name}: {child}");
        assert_eq!(child["parentSpanId"], server_id.as_str(), "{name}");
        assert_eq!(child["traceId"], trace_hex);
    }

    let (_, _, failed) = by_name(&spans, "db_write");
    assert_eq!(failed["kind"], 1, "INTERNAL: {failed}");
    assert_eq!(failed["status"]["code"], 2, "ERROR: {failed}");
    assert_eq!(failed["status"]["message"], "connection refused");
    let events = failed["events"].as_array().expect("events");
    let retry = events.iter().find(|e| e["name"] == "retrying").expect("log event");
    assert!(attr(retry, "attempt").is_some(), "{retry}");
    let exception = events.iter().find(|e| e["name"] == "exception").expect("exception event");
    assert_eq!(attr(exception, "exception.message"), Some(serde_json::json!({"stringValue": "connection refused"})));
    let links = failed["links"].as_array().expect("links");
    assert_eq!(links.len(), 1, "{failed}");
    assert_eq!(links[0]["spanId"], "0000000000001234");
    assert_eq!(links[0]["traceId"], format!("{:032x}", 0xabcdef_u128));
    assert_eq!(attr(&links[0], "link.reason"), Some(serde_json::json!({"stringValue": "batch"})));
    let rows = attr(failed, "rows").expect("rows");
    assert!(rows["intValue"] == "-3" || rows["intValue"] == -3, "{rows}");
}

#[test]
fn grpc_export_reads_back_field_by_field() {
    let spindle = Spindle::start();
    let svc = service("exporter-grpc", &spindle.otlp_grpc, Protocol::Grpc, Compression::None);
    check_trace(&spindle, &svc, "4bf92f3577b34da6a3ce929d0e0e4736");
}

#[test]
fn http_protobuf_export_reads_back_field_by_field() {
    let spindle = Spindle::start();
    let svc = service("exporter-http", &spindle.otlp_http, Protocol::HttpProtobuf, Compression::None);
    check_trace(&spindle, &svc, "5bf92f3577b34da6a3ce929d0e0e4737");
}

#[test]
fn gzip_export_reads_back_over_both_protocols() {
    let spindle = Spindle::start();
    let grpc = service("exporter-grpc-gzip", &spindle.otlp_grpc, Protocol::Grpc, Compression::Gzip);
    check_trace(&spindle, &grpc, "6bf92f3577b34da6a3ce929d0e0e4738");
    let http = service("exporter-http-gzip", &spindle.otlp_http, Protocol::HttpProtobuf, Compression::Gzip);
    check_trace(&spindle, &http, "7bf92f3577b34da6a3ce929d0e0e4739");
}

/// A span through `svc`, flushed; returns how long the flush took.
fn one_span_flushed(svc: &TestService) -> Duration {
    svc.run(async { tracing::info_span!("lost").in_scope(|| {}) });
    let started = Instant::now();
    let _ = svc.guard.flush();
    started.elapsed()
}

#[test]
fn unreachable_backend_fails_the_export_not_the_service() {
    for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
        let endpoint = format!("http://127.0.0.1:{}", free_port());
        let svc = service("exporter-down", &endpoint, protocol, Compression::None);
        let took = one_span_flushed(&svc);
        assert!(took < Duration::from_secs(6), "{protocol:?}: flush bounded by the export timeout: {took:?}");
        let stats = svc.guard.stats();
        assert_eq!((stats.exported, stats.failed, stats.failed_exports), (0, 1, 1), "{protocol:?}: {stats:?}");
    }
}

/// Accepts connections and answers every request with `answer`, then closes.
fn garbage_server(answer: &'static [u8]) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(answer);
        }
    });
    port
}

#[test]
fn malformed_backend_answers_fail_the_export() {
    // Not HTTP/2 at all for gRPC; an HTTP error status for OTLP/HTTP.
    let port = garbage_server(b"this is not a protocol anyone speaks\r\n\r\n");
    let grpc = service("exporter-garbage", &format!("http://127.0.0.1:{port}"), Protocol::Grpc, Compression::None);
    one_span_flushed(&grpc);
    let stats = grpc.guard.stats();
    assert_eq!((stats.exported, stats.failed), (0, 1), "grpc: {stats:?}");

    let port = garbage_server(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 7\r\nconnection: close\r\n\r\ngarbage");
    let http =
        service("exporter-garbage", &format!("http://127.0.0.1:{port}"), Protocol::HttpProtobuf, Compression::None);
    one_span_flushed(&http);
    let stats = http.guard.stats();
    assert_eq!((stats.exported, stats.failed), (0, 1), "http: {stats:?}");

    // A 200 whose body is not protobuf: the spans were taken, so the export counts as done.
    let port = garbage_server(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\n\xff\xff\xff");
    let odd =
        service("exporter-garbage", &format!("http://127.0.0.1:{port}"), Protocol::HttpProtobuf, Compression::None);
    one_span_flushed(&odd);
    let stats = odd.guard.stats();
    assert_eq!((stats.exported, stats.failed), (1, 0), "http 200: {stats:?}");
}

/// Relays connections on a port of its own to `target` until told to cut them all; returns
/// the port and the switch.
fn cutting_relay(target: String) -> (u16, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // Connections opened before the generation changes are cut.
    let generation = std::sync::Arc::new(AtomicU64::new(0));
    let current = std::sync::Arc::clone(&generation);
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let server = std::net::TcpStream::connect(target.trim_start_matches("http://")).expect("target");
            let born = current.load(Ordering::SeqCst);
            for (mut from, mut to) in
                [(client.try_clone().expect("clone"), server.try_clone().expect("clone")), (server, client)]
            {
                let current = std::sync::Arc::clone(&current);
                std::thread::spawn(move || {
                    let _ = from.set_read_timeout(Some(Duration::from_millis(20)));
                    let mut buf = [0u8; 16 << 10];
                    while current.load(Ordering::SeqCst) == born {
                        match from.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) if to.write_all(&buf[..n]).is_ok() => {}
                            Ok(_) => break,
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                ) => {}
                            Err(_) => break,
                        }
                    }
                    let _ = from.shutdown(std::net::Shutdown::Both);
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
            }
        }
    });
    (port, generation)
}

#[test]
fn a_connection_the_backend_closed_is_replaced_by_the_next_export() {
    let sink = support::OtlpSink::start();
    let (port, generation) = cutting_relay(sink.grpc_endpoint.clone());
    let svc = service("exporter-reconnect", &format!("http://127.0.0.1:{port}"), Protocol::Grpc, Compression::None);
    one_span_flushed(&svc);
    assert_eq!((svc.guard.stats().exported, svc.guard.stats().failed), (1, 0), "{:?}", svc.guard.stats());
    // The backend goes away with the connection open (a restart, an idle timeout).
    generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(300));
    one_span_flushed(&svc);
    let stats = svc.guard.stats();
    assert_eq!((stats.exported, stats.failed), (2, 0), "the next export connected anew: {stats:?}");
    assert_eq!(sink.spans().len(), 2, "{:?}", sink.spans());
}
