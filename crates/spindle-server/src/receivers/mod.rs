//! Receivers of the Jaeger and Zipkin protocols and Jaeger's remote-sampling endpoint.
//! (OTLP lives in `otlp_grpc` and `otlp_http`.) Each decodes with `spindle-codec` off the
//! reactor and hands batches to [`crate::ingest::Ingest`].

pub mod admission;
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
