//! Zipkin HTTP (:9411): `POST /api/v2/spans` as JSON (the default) or
//! `application/x-protobuf` (proto3 `ListOfSpans`), and `POST /api/v1/spans` as JSON;
//! gzip and deflate bodies; 202 on success, as Zipkin answers.

use std::io::Read;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use spindle_codec::{CodecError, Decoded};

use super::admission::{self, Admission};
use super::media_type;
use crate::ingest::{Ingest, IngestError};
use crate::otlp_http::{gunzip, BodyError};
use crate::security::routes::{Route, Routes};
use crate::tenancy::Caller;

#[derive(Clone)]
struct Zipkin {
    ingest: Arc<Ingest>,
    max_body_bytes: usize,
}

/// The routes, for [`router`] and the route table (`crate::security::routes`).
fn routes() -> Routes<Zipkin> {
    Routes::new().post("/api/v2/spans", v2).post("/api/v1/spans", v1)
}

pub fn route_table() -> Vec<Route> {
    routes().table()
}

pub fn router(ingest: Arc<Ingest>, max_body_bytes: usize, admission: Admission) -> Router {
    routes()
        .into_router()
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn(move |request, next| {
            admission::admit_http(admission.clone(), admission::plain_text, request, next)
        }))
        .with_state(Zipkin { ingest, max_body_bytes })
}

fn inflate(headers: &HeaderMap, body: Bytes, limit: usize) -> Result<Vec<u8>, BodyError> {
    let encoding =
        headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).map(|v| v.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("") | Some("identity") => Ok(body.to_vec()),
        Some("gzip") => gunzip(&body, limit),
        Some("deflate") | Some("zlib") => {
            let mut out = Vec::new();
            flate2::read::ZlibDecoder::new(body.as_ref())
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| BodyError::Invalid(format!("invalid deflate body: {e}")))?;
            if out.len() > limit {
                return Err(BodyError::TooLarge(format!("decompressed body exceeds the limit of {limit} bytes")));
            }
            Ok(out)
        }
        Some(other) => {
            Err(BodyError::Invalid(format!("unsupported content encoding {other:?}: expected gzip or deflate")))
        }
    }
}

async fn receive(
    state: Zipkin,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
    protocol: &'static str,
    decode: fn(&[u8]) -> Result<Decoded, CodecError>,
) -> Response {
    let limit = state.max_body_bytes;
    let decoded = state
        .ingest
        .decode(move || {
            let raw = inflate(&headers, body, limit)?;
            decode(&raw).map_err(|e| BodyError::Invalid(e.to_string()))
        })
        .await;
    let decoded = match decoded {
        Ok(Ok(d)) => d,
        Ok(Err(BodyError::TooLarge(m))) => return (StatusCode::PAYLOAD_TOO_LARGE, m).into_response(),
        Ok(Err(BodyError::Invalid(m))) => {
            state.ingest.count_failed_request(protocol);
            return (StatusCode::BAD_REQUEST, m).into_response();
        }
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("decoding failed: {e}")).into_response(),
    };
    // These protocols have no partial success: a request whose every span was invalid is
    // a bad request, with the reason; otherwise the valid spans are kept.
    let all_invalid = decoded.spans.is_empty() && decoded.rejected > 0;
    let reason = decoded.rejection_reason.clone();
    match state.ingest.accept(&caller, protocol, decoded).await {
        Ok(()) if all_invalid => (StatusCode::BAD_REQUEST, format!("no valid spans: {reason}\n")).into_response(),
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(IngestError::Overloaded) => {
            (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], "ingest queue is full, retry later").into_response()
        }
        Err(e @ IngestError::TooManySpans { .. }) => (StatusCode::PAYLOAD_TOO_LARGE, e.to_string()).into_response(),
        Err(IngestError::Tenant(e)) => (e.status(), e.to_string()).into_response(),
        Err(e @ IngestError::Store(_)) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

async fn v2(State(state): State<Zipkin>, caller: Caller, headers: HeaderMap, body: Bytes) -> Response {
    match media_type(&headers).as_deref() {
        Some("application/x-protobuf") | Some("application/protobuf") => {
            receive(state, caller, headers, body, "zipkin_v2_proto", spindle_codec::zipkin::decode_v2_proto).await
        }
        None | Some("application/json") | Some("text/plain") | Some("") => {
            receive(state, caller, headers, body, "zipkin_v2_json", spindle_codec::zipkin::decode_v2_json).await
        }
        Some(other) => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported content type {other:?}: expected application/json or application/x-protobuf"),
        )
            .into_response(),
    }
}

async fn v1(State(state): State<Zipkin>, caller: Caller, headers: HeaderMap, body: Bytes) -> Response {
    match media_type(&headers).as_deref() {
        None | Some("application/json") | Some("text/plain") | Some("") => {
            receive(state, caller, headers, body, "zipkin_v1_json", spindle_codec::zipkin::decode_v1_json).await
        }
        Some(other) => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported content type {other:?}: /api/v1/spans takes application/json (Zipkin v1 thrift is not supported)"),
        )
            .into_response(),
    }
}
