//! An in-process OTLP receiver (gRPC, HTTP protobuf, HTTP JSON) that keeps every span it is
//! sent, flattened for assertions. It runs on its own thread and runtime so tests on any
//! runtime flavour can use it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use prost::Message as _;

/// One received span, with ids as lowercase hex and attribute values as strings.
#[derive(Debug, Clone)]
pub struct SinkSpan {
    pub service: String,
    /// Every resource attribute, `service.name` included.
    pub resource: BTreeMap<String, String>,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// OTLP span kind: 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: i32,
    /// OTLP status code: 0 unset, 1 ok, 2 error.
    pub status_code: i32,
    pub attributes: BTreeMap<String, String>,
    pub events: Vec<(String, BTreeMap<String, String>)>,
}

impl SinkSpan {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

type Store = Arc<Mutex<Vec<SinkSpan>>>;

/// A running receiver; dropped, it stops.
pub struct OtlpSink {
    /// `http://127.0.0.1:PORT` for OTLP/gRPC.
    pub grpc_endpoint: String,
    /// `http://127.0.0.1:PORT` for OTLP/HTTP (protobuf or JSON on `/v1/traces`).
    pub http_endpoint: String,
    spans: Store,
    requests: Arc<Mutex<u64>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl OtlpSink {
    pub fn start() -> Self {
        let spans: Store = Arc::default();
        let requests = Arc::new(Mutex::new(0));
        let grpc = std::net::TcpListener::bind("127.0.0.1:0").expect("bind grpc sink");
        let http = std::net::TcpListener::bind("127.0.0.1:0").expect("bind http sink");
        let grpc_endpoint = format!("http://{}", grpc.local_addr().expect("addr"));
        let http_endpoint = format!("http://{}", http.local_addr().expect("addr"));
        grpc.set_nonblocking(true).expect("nonblocking");
        http.set_nonblocking(true).expect("nonblocking");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (store, counter) = (Arc::clone(&spans), Arc::clone(&requests));
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("sink runtime");
            runtime.block_on(async move {
                let grpc = tokio::net::TcpListener::from_std(grpc).expect("grpc listener");
                let http = tokio::net::TcpListener::from_std(http).expect("http listener");
                let receiver = Receiver { spans: Arc::clone(&store), requests: Arc::clone(&counter) };
                let grpc_server = tonic::transport::Server::builder()
                    .add_service(TraceServiceServer::new(receiver.clone()))
                    .serve_with_incoming(tonic::transport::server::TcpIncoming::from(grpc));
                let app = axum::Router::new().route("/v1/traces", post(http_export)).with_state(receiver);
                let http_server = axum::serve(http, app);
                tokio::select! {
                    _ = grpc_server => {}
                    _ = http_server => {}
                    _ = stop_rx => {}
                }
            });
        });
        Self { grpc_endpoint, http_endpoint, spans, requests, stop: Some(stop_tx) }
    }

    /// Everything received so far.
    pub fn spans(&self) -> Vec<SinkSpan> {
        self.spans.lock().expect("sink store").clone()
    }

    /// Export requests received so far.
    pub fn requests(&self) -> u64 {
        *self.requests.lock().expect("sink counter")
    }

    /// Spans of trace `trace_id` received so far.
    pub fn trace(&self, trace_id: &str) -> Vec<SinkSpan> {
        self.spans().into_iter().filter(|s| s.trace_id == trace_id).collect()
    }

    /// Waits until a span named `name` of `service` arrived, and returns it.
    pub fn wait_for_span(&self, service: &str, name: &str, timeout: Duration) -> SinkSpan {
        super::wait_until(&format!("span {name:?} of {service:?} at the sink"), timeout, || {
            self.spans().into_iter().find(|s| s.service == service && s.name == name)
        })
    }

    /// Waits until `count` spans of `trace_id` arrived, and returns them.
    pub fn wait_for_trace(&self, trace_id: &str, count: usize, timeout: Duration) -> Vec<SinkSpan> {
        super::wait_until(&format!("{count} spans of trace {trace_id}"), timeout, || {
            let spans = self.trace(trace_id);
            (spans.len() >= count).then_some(spans)
        })
    }
}

impl Drop for OtlpSink {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[derive(Clone)]
struct Receiver {
    spans: Store,
    requests: Arc<Mutex<u64>>,
}

impl Receiver {
    fn accept(&self, request: ExportTraceServiceRequest) {
        let mut flat = Vec::new();
        for resource_spans in request.resource_spans {
            let resource = resource_spans.resource.as_ref().map(|r| attributes(&r.attributes)).unwrap_or_default();
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    flat.push(SinkSpan {
                        service: service.clone(),
                        resource: resource.clone(),
                        name: span.name,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        kind: span.kind,
                        status_code: span.status.map_or(0, |s| s.code),
                        attributes: attributes(&span.attributes),
                        events: span.events.into_iter().map(|e| (e.name, attributes(&e.attributes))).collect(),
                    });
                }
            }
        }
        self.spans.lock().expect("sink store").extend(flat);
        *self.requests.lock().expect("sink counter") += 1;
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.accept(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// An OTLP/HTTP export body, JSON or protobuf by its content type; the bool says JSON.
pub fn decode_http_export(headers: &HeaderMap, body: Bytes) -> Result<(ExportTraceServiceRequest, bool), String> {
    let json =
        headers.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    let decoded = if json {
        serde_json::from_slice::<ExportTraceServiceRequest>(&body).map_err(|e| e.to_string())
    } else {
        ExportTraceServiceRequest::decode(body).map_err(|e| e.to_string())
    };
    decoded.map(|request| (request, json))
}

async fn http_export(
    axum::extract::State(receiver): axum::extract::State<Receiver>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    match decode_http_export(&headers, body) {
        Ok((request, _)) => {
            receiver.accept(request);
            StatusCode::OK
        }
        Err(error) => {
            eprintln!("otlp sink: undecodable http export: {error}");
            StatusCode::BAD_REQUEST
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attributes(list: &[KeyValue]) -> BTreeMap<String, String> {
    list.iter().map(|kv| (kv.key.clone(), value_text(kv.value.as_ref()))).collect()
}

fn value_text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}
