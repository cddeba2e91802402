//! W3C trace context and baggage in any carrier, and the bridge between `tracing` spans and
//! OpenTelemetry contexts.
//!
//! Every transport module (Kafka, axum, reqwest) goes through [`inject_context`] and
//! [`extract_context`], so the wire format is decided here once: `traceparent`, `tracestate`
//! and `baggage`, whatever propagator is installed globally. This module does no IO.

use std::sync::OnceLock;

use crate::SpanExt;
use opentelemetry::baggage::BaggageExt;
use opentelemetry::propagation::{Extractor, Injector, TextMapCompositePropagator, TextMapPropagator};
use opentelemetry::trace::{Status, TraceContextExt};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};

/// The W3C `traceparent` / `tracestate` plus `baggage` propagator the SDK always speaks.
pub fn w3c_propagator() -> &'static TextMapCompositePropagator {
    static PROPAGATOR: OnceLock<TextMapCompositePropagator> = OnceLock::new();
    PROPAGATOR.get_or_init(new_w3c_propagator)
}

pub(crate) fn new_w3c_propagator() -> TextMapCompositePropagator {
    TextMapCompositePropagator::new(vec![Box::new(TraceContextPropagator::new()), Box::new(BaggagePropagator::new())])
}

/// Writes `cx` (its span context and baggage) into `carrier` as W3C headers.
pub fn inject_context(cx: &Context, carrier: &mut dyn Injector) {
    w3c_propagator().inject_context(cx, carrier);
}

/// Reads a context from W3C headers in `carrier`; an empty context when there are none.
pub fn extract_context(carrier: &dyn Extractor) -> Context {
    w3c_propagator().extract(carrier)
}

/// The OpenTelemetry context of the current `tracing` span (or of the active OpenTelemetry
/// context when no `tracing` span is entered).
pub fn current_context() -> Context {
    let span = tracing::Span::current();
    if span.is_disabled() {
        Context::current()
    } else {
        span.context()
    }
}

/// The current trace id as 32 lowercase hex digits, for log correlation; `None` outside a
/// sampled trace.
pub fn current_trace_id() -> Option<String> {
    let cx = current_context();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// Makes the remote context `parent` the parent of `span`, which must not have been entered
/// yet. Returns `false` when the span is disabled or no OpenTelemetry layer is installed;
/// tracing then simply continues without the remote parent.
pub fn set_remote_parent(span: &tracing::Span, parent: Context) -> bool {
    if !parent.span().span_context().is_valid() && parent.baggage().is_empty() {
        return false;
    }
    span.set_parent(parent)
}

/// Marks `span` as failed: status `ERROR` with the error's message, and an `exception` event
/// carrying `exception.type` and `exception.message`, as OpenTelemetry semantic conventions ask.
///
/// `#[tracing::instrument(err)]` does the same automatically for functions returning `Result`.
pub fn record_error<E>(span: &tracing::Span, error: &E)
where
    E: std::fmt::Display + ?Sized,
{
    let message = error.to_string();
    span.add_event(
        "exception",
        vec![
            KeyValue::new("exception.type", std::any::type_name::<E>()),
            KeyValue::new("exception.message", message.clone()),
        ],
    );
    span.set_status(Status::error(message));
}

/// A carrier for a plain list of header pairs, for transports without a header type of their
/// own (and for tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderPairs(pub Vec<(String, String)>);

impl Injector for HeaderPairs {
    fn set(&mut self, key: &str, value: String) {
        self.0.retain(|(k, _)| !k.eq_ignore_ascii_case(key));
        self.0.push((key.to_owned(), value));
    }
}

impl Extractor for HeaderPairs {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    pub(crate) fn remote_context() -> Context {
        let sc = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("valid trace id"),
            SpanId::from_hex("00f067aa0ba902b7").expect("valid span id"),
            TraceFlags::SAMPLED,
            true,
            TraceState::from_key_value([("vendor", "v1")]).expect("valid trace state"),
        );
        Context::new().with_remote_span_context(sc).with_baggage([KeyValue::new("symbol", "AAPL")])
    }

    #[test]
    fn inject_writes_w3c_headers() {
        let mut headers = HeaderPairs::default();
        inject_context(&remote_context(), &mut headers);
        assert_eq!(headers.get("traceparent"), Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        assert_eq!(headers.get("tracestate"), Some("vendor=v1"));
        assert_eq!(headers.get("baggage"), Some("symbol=AAPL"));
    }

    #[test]
    fn inject_then_extract_round_trips() {
        let mut headers = HeaderPairs::default();
        let sent = remote_context();
        inject_context(&sent, &mut headers);
        let got = extract_context(&headers);
        assert_eq!(got.span().span_context(), sent.span().span_context());
        assert_eq!(got.baggage().get("symbol").map(|v| v.to_string()), Some("AAPL".to_owned()));
    }

    #[test]
    fn extract_from_nothing_or_garbage_is_an_empty_context() {
        let got = extract_context(&HeaderPairs::default());
        assert!(!got.span().span_context().is_valid());
        let garbage = HeaderPairs(vec![("traceparent".into(), "00-zz-yy-01".into())]);
        assert!(!extract_context(&garbage).span().span_context().is_valid());
        let mut span_less = HeaderPairs::default();
        inject_context(&Context::new(), &mut span_less);
        assert!(span_less.0.is_empty(), "an empty context writes no headers: {span_less:?}");
    }

    #[test]
    fn header_pairs_match_keys_case_insensitively_and_replace() {
        let mut headers = HeaderPairs(vec![("TraceParent".into(), "old".into())]);
        headers.set("traceparent", "new".into());
        assert_eq!(headers.0, vec![("traceparent".to_owned(), "new".to_owned())]);
        assert_eq!(headers.get("TRACEPARENT"), Some("new"));
    }
}
