//! OpenTelemetry operations on `tracing` spans.

use std::borrow::Cow;
use std::time::SystemTime;

use opentelemetry::trace::{Event, Link, SpanContext, SpanId, Status};
use opentelemetry::{Context, Key, KeyValue, Value};

use crate::layer::{tracing_span_is_nearer, SpanState, WithSpanState};
use crate::record::AttrValue;

/// What the OpenTelemetry API can do with a span, on a `tracing` span recorded by the SDK.
///
/// On a span the SDK does not record (disabled, filtered out, or no SDK layer installed)
/// every method does nothing, and [`SpanExt::context`] is an empty context.
///
/// ```
/// use spindle_sdk::SpanExt as _;
///
/// let span = tracing::info_span!("publish");
/// span.set_attribute("messaging.destination.name", "prices");
/// let cx = span.context(); // to inject into outgoing headers
/// # let _ = cx;
/// ```
pub trait SpanExt {
    /// The span's OpenTelemetry context: its span context, and the baggage it inherited.
    fn context(&self) -> Context;

    /// Makes `cx` (usually extracted from an incoming request or message) the span's parent,
    /// deciding sampling again with it. Call it before the span is entered or has children.
    /// `false` when the SDK does not record the span.
    fn set_parent(&self, cx: Context) -> bool;

    /// Sets an attribute, whatever fields the span declared.
    fn set_attribute(&self, key: impl Into<Key>, value: impl Into<Value>);

    /// Adds an event with attributes, timestamped now.
    fn add_event(&self, name: impl Into<Cow<'static, str>>, attributes: Vec<KeyValue>);

    /// Sets the span's status; once `Ok` it stays `Ok`, and `Unset` changes nothing.
    fn set_status(&self, status: Status);

    /// Links the span to another span's context.
    fn add_link(&self, cx: SpanContext) {
        self.add_link_with_attributes(cx, Vec::new());
    }

    /// Links the span to another span's context, with attributes describing the link.
    fn add_link_with_attributes(&self, cx: SpanContext, attributes: Vec<KeyValue>);
}

/// `span`'s span context when it, rather than `otel` (the span of the current OpenTelemetry
/// context, or the invalid id), is the parent of what starts now; `None` when the SDK does not
/// record `span`.
pub(crate) fn span_context_if_nearer(span: &tracing::Span, otel: SpanId) -> Option<SpanContext> {
    let mut sc = None;
    with_state(span, |state, _| {
        if tracing_span_is_nearer(state, otel) {
            sc = Some(state.record.span_context());
        }
    });
    sc
}

fn with_state(span: &tracing::Span, mut f: impl FnMut(&mut SpanState, &WithSpanState)) -> bool {
    let mut found = false;
    span.with_subscriber(|(id, dispatch)| {
        if let Some(access) = dispatch.downcast_ref::<WithSpanState>() {
            access.with(dispatch, id, &mut |state| {
                found = true;
                f(state, access)
            });
        }
    });
    found
}

impl SpanExt for tracing::Span {
    fn context(&self) -> Context {
        let mut cx = None;
        with_state(self, |state, _| cx = Some(state.context()));
        cx.unwrap_or_default()
    }

    fn set_parent(&self, cx: Context) -> bool {
        with_state(self, |state, access| state.set_parent(&cx, &access.sampler))
    }

    fn set_attribute(&self, key: impl Into<Key>, value: impl Into<Value>) {
        let (key, mut value) = (key.into(), Some(value.into()));
        with_state(self, |state, _| {
            if let Some(value) = value.take() {
                if state.record.is_sampled() {
                    state.record.push_attr(key.clone(), AttrValue::Value(value));
                }
            }
        });
    }

    fn add_event(&self, name: impl Into<Cow<'static, str>>, attributes: Vec<KeyValue>) {
        let mut event = Some(Event::new(name, SystemTime::now(), attributes, 0));
        with_state(self, |state, _| {
            if let Some(event) = event.take() {
                if state.record.is_sampled() {
                    state.record.push_event(event);
                }
            }
        });
    }

    fn set_status(&self, status: Status) {
        let mut status = Some(status);
        with_state(self, |state, _| {
            // As the OpenTelemetry API says: `Ok` is final, and `Unset` changes nothing.
            if let Some(status) = status.take() {
                if state.record.status != Status::Ok && status != Status::Unset {
                    state.record.status = status;
                }
            }
        });
    }

    fn add_link_with_attributes(&self, cx: SpanContext, attributes: Vec<KeyValue>) {
        let mut link = Some(Link::new(cx, attributes, 0));
        with_state(self, |state, _| {
            if let Some(link) = link.take() {
                if state.record.is_sampled() {
                    state.record.push_link(link);
                }
            }
        });
    }
}
