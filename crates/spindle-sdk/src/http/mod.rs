//! W3C trace context in HTTP headers: an axum/tower server layer (feature `axum`) and a
//! reqwest middleware (feature `reqwest`).
//!
//! Both follow the OpenTelemetry HTTP semantic conventions: span names `{METHOD} {route}`
//! (server) and `{METHOD}` (client), `http.request.method`, `http.route`,
//! `http.response.status_code`, `error.type`. A server marks 5xx responses as errors, a client
//! marks 4xx and 5xx. This module only maps requests to spans and headers; it does no IO.

use opentelemetry::Context;

pub use opentelemetry_http::{HeaderExtractor, HeaderInjector};

#[cfg(feature = "axum")]
pub mod axum;
#[cfg(feature = "reqwest")]
pub mod reqwest;

/// Writes `cx` into `headers` as `traceparent`, `tracestate` and `baggage`.
pub fn inject_into_headers(cx: &Context, headers: &mut ::http::HeaderMap) {
    crate::propagation::inject_context(cx, &mut HeaderInjector(headers));
}

/// Writes the current span's context into `headers`, for HTTP clients other than reqwest.
pub fn inject_current_into_headers(headers: &mut ::http::HeaderMap) {
    inject_into_headers(&crate::propagation::current_context(), headers);
}

/// Reads the caller's context from `headers`; an empty context when there is none.
pub fn extract_from_headers(headers: &::http::HeaderMap) -> Context {
    crate::propagation::extract_context(&HeaderExtractor(headers))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

    #[test]
    fn header_map_round_trip() {
        let sc = SpanContext::new(
            TraceId::from(7u128),
            SpanId::from(9u64),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let cx = Context::new().with_remote_span_context(sc.clone());
        let mut headers = ::http::HeaderMap::new();
        inject_into_headers(&cx, &mut headers);
        assert_eq!(
            headers.get("traceparent").and_then(|v| v.to_str().ok()),
            Some("00-00000000000000000000000000000007-0000000000000009-01")
        );
        assert_eq!(extract_from_headers(&headers).span().span_context(), &sc);
    }
}
