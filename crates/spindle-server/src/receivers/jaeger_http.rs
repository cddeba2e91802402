//! Jaeger collector HTTP (:14268): `POST /api/traces` with a thrift binary `Batch`
//! (content type `application/x-thrift` or `application/vnd.apache.thrift.binary`,
//! answered 202), and `GET /api/sampling?service=` as the v1 collector served it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;

use super::admission::{self, Admission};
use super::media_type;
use super::sampling::Strategies;
use crate::ingest::{Ingest, IngestError};
use crate::security::routes::{Route, Routes};
use crate::tenancy::Caller;

pub const PROTOCOL: &str = "jaeger_thrift_http";

#[derive(Clone)]
struct JaegerHttp {
    ingest: Arc<Ingest>,
}

/// The collector's routes and the sampling route (outside the collector's admission), for
/// [`router`] and the route table (`crate::security::routes`).
fn routes() -> (Routes<JaegerHttp>, Routes<Arc<Strategies>>) {
    (Routes::new().post("/api/traces", post_traces), Routes::new().get("/api/sampling", super::sampling::handler))
}

pub fn route_table() -> Vec<Route> {
    let (collector, sampling) = routes();
    collector.table().into_iter().chain(sampling.table()).collect()
}

pub fn router(ingest: Arc<Ingest>, strategies: Arc<Strategies>, max_body_bytes: usize, admission: Admission) -> Router {
    let (collector, sampling) = routes();
    let sampling = sampling.into_router().with_state(strategies);
    collector
        .into_router()
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn(move |request, next| {
            admission::admit_http(admission.clone(), admission::plain_text, request, next)
        }))
        .with_state(JaegerHttp { ingest })
        .merge(sampling)
}

async fn post_traces(State(state): State<JaegerHttp>, caller: Caller, headers: HeaderMap, body: Bytes) -> Response {
    match media_type(&headers).as_deref() {
        Some("application/x-thrift") | Some("application/vnd.apache.thrift.binary") => {}
        other => {
            return (
                StatusCode::BAD_REQUEST,
                format!(
                    "Unsupported content type: {:?}; expected application/x-thrift or application/vnd.apache.thrift.binary\n",
                    other.unwrap_or("")
                ),
            )
                .into_response()
        }
    }
    let decoded = state.ingest.decode(move || spindle_codec::jaeger_thrift::decode_batch_binary(&body)).await;
    let decoded = match decoded {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => {
            state.ingest.count_failed_request(PROTOCOL);
            return (StatusCode::BAD_REQUEST, format!("Unable to process request body: {e}\n")).into_response();
        }
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("decoding failed: {e}\n")).into_response(),
    };
    // These protocols have no partial success: a request whose every span was invalid is
    // a bad request, with the reason; otherwise the valid spans are kept.
    let all_invalid = decoded.spans.is_empty() && decoded.rejected > 0;
    let reason = decoded.rejection_reason.clone();
    match state.ingest.accept(&caller, PROTOCOL, decoded).await {
        Ok(()) if all_invalid => (StatusCode::BAD_REQUEST, format!("no valid spans: {reason}\n")).into_response(),
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(IngestError::Overloaded) => {
            (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], "ingest queue is full, retry later\n")
                .into_response()
        }
        Err(e @ IngestError::TooManySpans { .. }) => (StatusCode::PAYLOAD_TOO_LARGE, format!("{e}\n")).into_response(),
        Err(IngestError::Tenant(e)) => (e.status(), format!("{e}\n")).into_response(),
        Err(e @ IngestError::Store(_)) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("Cannot submit Jaeger batch: {e}\n")).into_response()
        }
    }
}
