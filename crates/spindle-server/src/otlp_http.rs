//! OTLP over HTTP: `POST /v1/traces` on :4318, protobuf or JSON, optionally gzipped.
//!
//! Answers follow the OTLP/HTTP specification: success is an `ExportTraceServiceResponse`
//! (with `partial_success` when spans were rejected) in the request's encoding; failures
//! carry a `google.rpc.Status` in the request's encoding; 413 for bodies over the limit or
//! requests over `max_spans_per_request`, 415 for other content types or encodings, 429 with
//! `Retry-After` when the listener's requests, the ingest byte budget or the queue are full
//! (`receivers::admission` admits the request before its body is read).

use std::io::Read;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTracePartialSuccess, ExportTraceServiceResponse};
use prost::Message;
use spindle_codec::{CodecError, Decoded};

use crate::ingest::{Ingest, IngestError};
use crate::receivers::admission::{self, Admission};
use crate::security::routes::{Route, Routes};
use crate::tenancy::Caller;

pub const PROTOCOL_PROTOBUF: &str = "otlp_http_protobuf";
pub const PROTOCOL_JSON: &str = "otlp_http_json";

#[derive(Clone)]
struct OtlpHttp {
    ingest: Arc<Ingest>,
    max_body_bytes: usize,
}

/// The routes, for [`router`] and the route table (`crate::security::routes`).
fn routes() -> Routes<OtlpHttp> {
    Routes::new().post("/v1/traces", export)
}

pub fn route_table() -> Vec<Route> {
    routes().table()
}

pub fn router(ingest: Arc<Ingest>, max_body_bytes: usize, admission: Admission) -> Router {
    routes()
        .into_router()
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn(move |request, next| {
            admission::admit_http(admission.clone(), refusal, request, next)
        }))
        .with_state(OtlpHttp { ingest, max_body_bytes })
}

/// An admission refusal as OTLP/HTTP words failures: a `google.rpc.Status` in the request's
/// encoding (JSON when the request's is not one of OTLP's).
fn refusal(headers: &HeaderMap, status: StatusCode, message: String) -> Response {
    let encoding = match media_type(headers).as_deref() {
        Some("application/x-protobuf") | Some("application/protobuf") => Encoding::Protobuf,
        _ => Encoding::Json,
    };
    let code = match status {
        StatusCode::TOO_MANY_REQUESTS => 8,
        StatusCode::REQUEST_TIMEOUT => 4,
        _ => 3,
    };
    respond(encoding, status, code, message)
}

#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    Protobuf,
    Json,
}

/// `google.rpc.Status`, the error body OTLP/HTTP prescribes.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

fn respond(encoding: Encoding, status: StatusCode, grpc_code: i32, message: String) -> Response {
    let body = match encoding {
        Encoding::Protobuf => RpcStatus { code: grpc_code, message }.encode_to_vec(),
        Encoding::Json => serde_json::json!({ "code": grpc_code, "message": message }).to_string().into_bytes(),
    };
    (status, [(header::CONTENT_TYPE, content_type(encoding))], body).into_response()
}

fn content_type(encoding: Encoding) -> HeaderValue {
    HeaderValue::from_static(match encoding {
        Encoding::Protobuf => "application/x-protobuf",
        Encoding::Json => "application/json",
    })
}

fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(value.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
}

/// Inflates a gzip body, refusing to grow past `limit` bytes (a small bomb stays small).
pub fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::new();
    let mut decoder = flate2::read::GzDecoder::new(body).take(limit as u64 + 1);
    decoder.read_to_end(&mut out).map_err(|e| BodyError::Invalid(format!("invalid gzip body: {e}")))?;
    if out.len() > limit {
        return Err(BodyError::TooLarge(format!("decompressed body exceeds the limit of {limit} bytes")));
    }
    Ok(out)
}

/// Why a request body could not be read.
pub enum BodyError {
    TooLarge(String),
    Invalid(String),
}

async fn export(State(state): State<OtlpHttp>, caller: Caller, headers: HeaderMap, body: Bytes) -> Response {
    let encoding = match media_type(&headers).as_deref() {
        Some("application/x-protobuf") | Some("application/protobuf") => Encoding::Protobuf,
        Some("application/json") => Encoding::Json,
        other => {
            return respond(
                Encoding::Json,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                3,
                format!(
                    "unsupported content type {:?}: expected application/x-protobuf or application/json",
                    other.unwrap_or("")
                ),
            )
        }
    };
    let gzipped =
        match headers.get(header::CONTENT_ENCODING).map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase()) {
            None => false,
            Some(e) if e.is_empty() || e == "identity" => false,
            Some(e) if e == "gzip" => true,
            Some(other) => {
                return respond(
                    encoding,
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    3,
                    format!("unsupported content encoding {other:?}: expected gzip or identity"),
                )
            }
        };
    let limit = state.max_body_bytes;
    // Inflating and decoding are CPU work: keep them off the reactor.
    let decoded = state
        .ingest
        .decode(move || -> Result<Decoded, BodyError> {
            let raw = if gzipped { gunzip(&body, limit)? } else { body.to_vec() };
            let decoded = match encoding {
                Encoding::Protobuf => spindle_codec::otlp::decode_request(&raw),
                Encoding::Json => spindle_codec::otlp_json::decode_request(&raw),
            };
            decoded.map_err(|e: CodecError| BodyError::Invalid(e.to_string()))
        })
        .await;
    let protocol = match encoding {
        Encoding::Protobuf => PROTOCOL_PROTOBUF,
        Encoding::Json => PROTOCOL_JSON,
    };
    let decoded = match decoded {
        Ok(Ok(d)) => d,
        Ok(Err(BodyError::TooLarge(m))) => return respond(encoding, StatusCode::PAYLOAD_TOO_LARGE, 8, m),
        Ok(Err(BodyError::Invalid(m))) => {
            state.ingest.count_failed_request(protocol);
            return respond(encoding, StatusCode::BAD_REQUEST, 3, m);
        }
        Err(e) => return respond(encoding, StatusCode::INTERNAL_SERVER_ERROR, 13, format!("decoding failed: {e}")),
    };
    let partial_success = (decoded.rejected > 0).then(|| ExportTracePartialSuccess {
        rejected_spans: i64::try_from(decoded.rejected).unwrap_or(i64::MAX),
        error_message: decoded.rejection_reason.clone(),
    });
    match state.ingest.accept(&caller, protocol, decoded).await {
        Ok(()) => {
            let body = match encoding {
                Encoding::Protobuf => ExportTraceServiceResponse { partial_success }.encode_to_vec(),
                Encoding::Json => {
                    let json = match partial_success {
                        Some(p) => serde_json::json!({"partialSuccess": {
                            "rejectedSpans": p.rejected_spans.to_string(),
                            "errorMessage": p.error_message,
                        }}),
                        None => serde_json::json!({}),
                    };
                    json.to_string().into_bytes()
                }
            };
            (StatusCode::OK, [(header::CONTENT_TYPE, content_type(encoding))], body).into_response()
        }
        Err(IngestError::Overloaded) => {
            let mut response =
                respond(encoding, StatusCode::TOO_MANY_REQUESTS, 8, "ingest queue is full, retry later".into());
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(admission::RETRY_AFTER_SECS));
            response
        }
        // 413 is not retried (OTLP/HTTP retries only 429, 502, 503 and 504): the same request
        // would be refused again.
        Err(e @ IngestError::TooManySpans { .. }) => respond(encoding, StatusCode::PAYLOAD_TOO_LARGE, 3, e.to_string()),
        Err(IngestError::Tenant(e)) => {
            let (status, code) = (e.status(), e.grpc_status().code() as i32);
            let mut response = respond(encoding, status, code, e.to_string());
            if status == StatusCode::TOO_MANY_REQUESTS {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(admission::RETRY_AFTER_SECS));
            }
            response
        }
        Err(e @ IngestError::Store(_)) => {
            let mut response = respond(encoding, StatusCode::SERVICE_UNAVAILABLE, 14, e.to_string());
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            response
        }
    }
}
