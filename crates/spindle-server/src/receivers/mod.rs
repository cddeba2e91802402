//! Receivers of the Jaeger and Zipkin protocols and Jaeger's remote-sampling endpoint.
//! (OTLP lives in `otlp_grpc` and `otlp_http`.) Each decodes with `spindle-codec` off the
//! reactor and hands batches to [`crate::ingest::Ingest`].

pub mod jaeger_grpc;
pub mod jaeger_http;
pub mod jaeger_udp;
pub mod sampling;
pub mod zipkin;

use axum::http::{header, HeaderMap};

/// The media type of a request, lowercase, without parameters.
pub fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(value.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
}

/// Refuses a request whose declared `Content-Length` exceeds `limit` with 413 before its
/// body is read, so a client learns at once instead of uploading megabytes first (and
/// possibly seeing a broken pipe instead of the answer).
pub async fn refuse_declared_oversize(
    limit: usize,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(length) = declared.filter(|l| *l > limit as u64) {
        let message = format!("request body of {length} bytes exceeds the limit of {limit} bytes (--max-body-bytes)\n");
        return (axum::http::StatusCode::PAYLOAD_TOO_LARGE, message).into_response();
    }
    next.run(request).await
}
