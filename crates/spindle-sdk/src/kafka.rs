//! Trace context in Kafka record headers, and traced produce / consume for rdkafka.
//!
//! Producers write the current context into the record's headers as W3C `traceparent`,
//! `tracestate` and `baggage` ([`inject_current`], or [`send`] which also records a PRODUCER
//! span `send {topic}`). Consumers read it back ([`extract_from_message`]) and continue the
//! trace in a CONSUMER span `process {topic}` ([`process`], [`consumer_span`]). Both spans
//! carry the messaging semantic-convention attributes (`messaging.system=kafka`,
//! `messaging.destination.name`, partition, offset, key), which is what lets Spindle draw the
//! topic as a node of the dependency graph.
//!
//! Works with [`FutureProducer`] and any [`Message`] (for example the `BorrowedMessage` that
//! `StreamConsumer::recv` yields). Everything here is infallible: malformed or missing headers
//! simply start a new trace.
//!
//! ```no_run
//! # async fn demo(producer: rdkafka::producer::FutureProducer,
//! #               consumer: rdkafka::consumer::StreamConsumer) {
//! use std::time::Duration;
//! use rdkafka::producer::FutureRecord;
//!
//! // producing: a PRODUCER span, context in the headers
//! let record = FutureRecord::to("market-data").key("AAPL").payload("{...}");
//! let _ = spindle_sdk::kafka::send(&producer, record, Duration::from_secs(5)).await;
//!
//! // consuming: a CONSUMER span whose parent is the producer's
//! let message = consumer.recv().await.expect("message");
//! let _ = spindle_sdk::kafka::process(&message, async {
//!     // spans created here (e.g. `#[instrument] fn process_message`) are its children
//!     Ok::<(), std::io::Error>(())
//! })
//! .await;
//! # }
//! ```

use std::fmt::Display;
use std::future::Future;

use crate::SpanExt;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::Context;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, ToBytes};
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use tracing::field::Empty;
use tracing::Instrument;

use crate::propagation::{current_context, extract_context, inject_context, record_error, set_remote_parent};

/// Header keys the SDK writes; an existing value under one of them is replaced.
const CONTEXT_HEADERS: [&str; 3] = ["traceparent", "tracestate", "baggage"];

/// Reads W3C context out of any rdkafka [`Headers`] (owned or borrowed).
///
/// Header values that are not UTF-8 are ignored; with repeated keys the first one counts.
#[derive(Debug)]
pub struct KafkaHeaderExtractor<'a, H: ?Sized>(pub &'a H);

impl<H: Headers + ?Sized> Extractor for KafkaHeaderExtractor<'_, H> {
    fn get(&self, key: &str) -> Option<&str> {
        (0..self.0.count())
            .filter_map(|i| self.0.try_get(i))
            .find(|h| h.key.eq_ignore_ascii_case(key))
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    fn keys(&self) -> Vec<&str> {
        (0..self.0.count()).filter_map(|i| self.0.try_get(i)).map(|h| h.key).collect()
    }
}

#[derive(Default)]
struct PairInjector(Vec<(&'static str, String)>);

impl Injector for PairInjector {
    fn set(&mut self, key: &str, value: String) {
        if let Some(known) = CONTEXT_HEADERS.iter().find(|k| k.eq_ignore_ascii_case(key)) {
            self.0.push((known, value));
        }
    }
}

/// Returns `headers` with `cx` written into it. Existing `traceparent`, `tracestate` and
/// `baggage` headers are replaced; every other header is kept in order.
pub fn inject_into(cx: &Context, headers: OwnedHeaders) -> OwnedHeaders {
    let mut pairs = PairInjector::default();
    inject_context(cx, &mut pairs);
    if pairs.0.is_empty() {
        return headers;
    }
    let replaced = (0..headers.count())
        .filter_map(|i| headers.try_get(i))
        .any(|h| CONTEXT_HEADERS.iter().any(|k| k.eq_ignore_ascii_case(h.key)));
    let mut out = if replaced {
        let mut kept = OwnedHeaders::new_with_capacity(headers.count() + pairs.0.len());
        for h in (0..headers.count()).filter_map(|i| headers.try_get(i)) {
            if !CONTEXT_HEADERS.iter().any(|k| k.eq_ignore_ascii_case(h.key)) {
                kept = kept.insert(Header { key: h.key, value: h.value });
            }
        }
        kept
    } else {
        headers
    };
    for (key, value) in &pairs.0 {
        out = out.insert(Header { key, value: Some(value.as_str()) });
    }
    out
}

/// Returns `headers` with the current span's context written into it (see [`inject_into`]).
pub fn inject_current(headers: OwnedHeaders) -> OwnedHeaders {
    inject_into(&current_context(), headers)
}

/// Reads the context a producer wrote into `headers`; an empty context when there is none.
pub fn extract_from_headers<H: Headers + ?Sized>(headers: &H) -> Context {
    extract_context(&KafkaHeaderExtractor(headers))
}

/// Reads the context a producer wrote into `message`'s headers.
pub fn extract_from_message<M: Message + ?Sized>(message: &M) -> Context {
    match message.headers() {
        Some(headers) => extract_from_headers(headers),
        None => Context::new(),
    }
}

/// A PRODUCER span `send {topic}` as a child of the current span, with the messaging
/// attributes known before delivery. [`send`] records partition and offset on it afterwards.
pub fn producer_span(topic: &str, key: Option<&[u8]>) -> tracing::Span {
    let span = tracing::info_span!(
        target: "spindle_sdk::kafka",
        "kafka.send",
        otel.name = %format_args!("send {topic}"),
        otel.kind = "producer",
        otel.status_code = Empty,
        messaging.system = "kafka",
        messaging.operation.type = "send",
        messaging.operation.name = "send",
        messaging.destination.name = topic,
        messaging.destination.partition.id = Empty,
        messaging.kafka.offset = Empty,
        messaging.kafka.message.key = Empty,
        error.type = Empty,
    );
    if let Some(key) = key {
        span.record("messaging.kafka.message.key", String::from_utf8_lossy(key).as_ref());
    }
    span
}

/// Produces `record` through `producer` inside a PRODUCER span `send {topic}`, with that
/// span's context injected into the record's headers (existing headers are kept).
///
/// On delivery the span gets `messaging.destination.partition.id` and
/// `messaging.kafka.offset`; on failure status ERROR, `error.type` and an exception event.
/// The result is rdkafka's own, unchanged.
pub async fn send<K, P, C, R>(
    producer: &FutureProducer<C, R>,
    mut record: FutureRecord<'_, K, P>,
    queue_timeout: impl Into<Timeout>,
) -> OwnedDeliveryResult
where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
    C: rdkafka::ClientContext + 'static,
    R: rdkafka::util::AsyncRuntime,
{
    let span = producer_span(record.topic, record.key.map(ToBytes::to_bytes));
    let headers = record.headers.take().unwrap_or_default();
    record.headers = Some(inject_into(&span.context(), headers));
    let result = producer.send(record, queue_timeout).instrument(span.clone()).await;
    match &result {
        Ok(delivery) => {
            span.record("messaging.destination.partition.id", delivery.partition.to_string());
            span.record("messaging.kafka.offset", delivery.offset);
        }
        Err((error, _)) => {
            let kind = error.rdkafka_error_code().map_or_else(|| "kafka_error".to_owned(), |code| format!("{code:?}"));
            span.record("error.type", kind);
            record_error(&span, error);
        }
    }
    result
}

/// A CONSUMER span `process {topic}` for `message`, whose parent is the context found in the
/// message's headers (or the current span when there is none), with the messaging attributes.
pub fn consumer_span<M: Message + ?Sized>(message: &M) -> tracing::Span {
    let topic = message.topic();
    let span = tracing::info_span!(
        target: "spindle_sdk::kafka",
        "kafka.process",
        otel.name = %format_args!("process {topic}"),
        otel.kind = "consumer",
        otel.status_code = Empty,
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = topic,
        messaging.destination.partition.id = %message.partition(),
        messaging.kafka.offset = message.offset(),
        messaging.kafka.message.key = Empty,
        messaging.message.body.size = message.payload().map_or(0, <[u8]>::len),
        error.type = Empty,
    );
    if let Some(key) = message.key() {
        span.record("messaging.kafka.message.key", String::from_utf8_lossy(key).as_ref());
    }
    set_remote_parent(&span, extract_from_message(message));
    span
}

/// Runs `work` — the handling of `message` — inside its CONSUMER span (see [`consumer_span`]).
/// An `Err` result marks the span as failed with an exception event; the result is returned
/// unchanged. The message is only read before `work` starts, so it need not outlive it.
pub fn process<M, F, T, E>(message: &M, work: F) -> impl Future<Output = Result<T, E>>
where
    M: Message + ?Sized,
    F: Future<Output = Result<T, E>>,
    E: Display,
{
    let span = consumer_span(message);
    async move {
        let result = work.instrument(span.clone()).await;
        if let Err(error) = &result {
            span.record("error.type", "handler_error");
            record_error(&span, error);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::baggage::BaggageExt;
    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
    use opentelemetry::KeyValue;
    use rdkafka::message::OwnedMessage;
    use rdkafka::Timestamp;

    fn remote() -> Context {
        let sc = SpanContext::new(
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").expect("trace id"),
            SpanId::from_hex("b7ad6b7169203331").expect("span id"),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        Context::new().with_remote_span_context(sc).with_baggage([KeyValue::new("tenant", "t1")])
    }

    fn header_list(headers: &OwnedHeaders) -> Vec<(String, Option<String>)> {
        headers.iter().map(|h| (h.key.to_owned(), h.value.map(|v| String::from_utf8_lossy(v).into_owned()))).collect()
    }

    #[test]
    fn inject_then_extract_round_trips_through_owned_headers() {
        let headers = inject_into(&remote(), OwnedHeaders::new());
        let got = extract_from_headers(&headers);
        assert_eq!(got.span().span_context(), remote().span().span_context());
        assert_eq!(got.baggage().get("tenant").map(|v| v.to_string()), Some("t1".into()));
        assert_eq!(
            header_list(&headers)[0],
            ("traceparent".to_owned(), Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned()))
        );
    }

    #[test]
    fn inject_keeps_other_headers_and_replaces_stale_context() {
        let existing = OwnedHeaders::new()
            .insert(Header { key: "content-type", value: Some("application/json") })
            .insert(Header { key: "TraceParent", value: Some("00-stale-stale-01") })
            .insert(Header::<&str> { key: "empty", value: None });
        let headers = inject_into(&remote(), existing);
        let list = header_list(&headers);
        assert_eq!(list[0], ("content-type".to_owned(), Some("application/json".to_owned())));
        assert_eq!(list[1], ("empty".to_owned(), None));
        assert_eq!(list.iter().filter(|(k, _)| k.eq_ignore_ascii_case("traceparent")).count(), 1);
        assert!(extract_from_headers(&headers).span().span_context().is_valid());
    }

    #[test]
    fn inject_of_an_empty_context_leaves_headers_untouched() {
        let existing = OwnedHeaders::new().insert(Header { key: "a", value: Some("b") });
        let headers = inject_into(&Context::new(), existing);
        assert_eq!(header_list(&headers), vec![("a".to_owned(), Some("b".to_owned()))]);
    }

    #[test]
    fn extract_survives_binary_missing_and_absent_headers() {
        let headers = OwnedHeaders::new()
            .insert(Header { key: "traceparent", value: Some(&[0xff_u8, 0xfe][..]) })
            .insert(Header::<&str> { key: "tracestate", value: None });
        assert!(!extract_from_headers(&headers).span().span_context().is_valid());
        let message = OwnedMessage::new(None, None, "t".into(), Timestamp::NotAvailable, 0, 0, None);
        assert!(!extract_from_message(&message).span().span_context().is_valid());
    }

    #[test]
    fn extract_from_a_consumed_message() {
        let headers = inject_into(&remote(), OwnedHeaders::new());
        let message = OwnedMessage::new(
            Some(b"{}".to_vec()),
            Some(b"AAPL".to_vec()),
            "market-data".into(),
            Timestamp::NotAvailable,
            3,
            42,
            Some(headers),
        );
        let got = extract_from_message(&message);
        assert_eq!(got.span().span_context().trace_id(), remote().span().span_context().trace_id());
    }
}
