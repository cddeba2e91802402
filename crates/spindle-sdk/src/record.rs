//! The compact form of a finished span, as the SDK's own layer builds it and the export worker
//! encodes it (docs/adr/022-sdk-span-layer.md).
//!
//! A record is built in place on the span's first callback and moved, not copied, into the
//! queue when the span closes. Its strings share one buffer (`text`): field names are the
//! `&'static str` of the `tracing` call site, and every recorded string value is appended to
//! the buffer, so a span with any number of string attributes makes at most one allocation
//! for them, and one for the attribute list. Spans from the OpenTelemetry API (`SpanData`)
//! are converted into records on the export worker; records go back to `SpanData` only for
//! an exporter given to [`crate::SpindleBuilder::exporter`].

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use opentelemetry::trace::{Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, Key, KeyValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

/// At most this many attributes, events and links per span, as the OpenTelemetry SDK's
/// default span limits; more are counted as dropped.
pub(crate) const MAX_ATTRIBUTES: usize = 128;
pub(crate) const MAX_EVENTS: usize = 128;
pub(crate) const MAX_LINKS: usize = 128;

/// A reused record keeps a text buffer of at most this many bytes.
const MAX_KEPT_TEXT: usize = 16 * 1024;

/// A string of a record: the call site's, or a range of the record's `text`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Str {
    Static(&'static str),
    Text(u32, u32),
}

/// An attribute value: a string in the record's `text`, or any OpenTelemetry value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AttrValue {
    Text(u32, u32),
    Value(Value),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Attr {
    pub(crate) key: Key,
    pub(crate) value: AttrValue,
}

/// One finished (or, inside the layer, running) span.
#[derive(Debug, Clone)]
pub(crate) struct SpanRecord {
    pub(crate) trace_id: TraceId,
    pub(crate) span_id: SpanId,
    pub(crate) parent_span_id: SpanId,
    pub(crate) parent_is_remote: bool,
    pub(crate) flags: TraceFlags,
    pub(crate) trace_state: TraceState,
    pub(crate) name: Str,
    pub(crate) kind: SpanKind,
    pub(crate) start: SystemTime,
    pub(crate) end: SystemTime,
    pub(crate) attrs: Vec<Attr>,
    pub(crate) dropped_attrs: u32,
    pub(crate) text: String,
    pub(crate) events: Vec<Event>,
    pub(crate) dropped_events: u32,
    pub(crate) links: Vec<Link>,
    pub(crate) dropped_links: u32,
    pub(crate) status: Status,
    /// `None`: the SDK's own scope ([`sdk_scope`]), which every `tracing` span has.
    pub(crate) scope: Option<Arc<InstrumentationScope>>,
}

/// The instrumentation scope of every span made from a `tracing` span.
pub(crate) fn sdk_scope() -> &'static InstrumentationScope {
    static SCOPE: OnceLock<InstrumentationScope> = OnceLock::new();
    SCOPE.get_or_init(|| InstrumentationScope::builder("spindle-sdk").with_version(env!("CARGO_PKG_VERSION")).build())
}

impl SpanRecord {
    pub(crate) fn new(name: &'static str, attr_capacity: usize) -> Self {
        Self {
            trace_id: TraceId::INVALID,
            span_id: SpanId::INVALID,
            parent_span_id: SpanId::INVALID,
            parent_is_remote: false,
            flags: TraceFlags::default(),
            trace_state: TraceState::NONE,
            name: Str::Static(name),
            kind: SpanKind::Internal,
            start: SystemTime::UNIX_EPOCH,
            end: SystemTime::UNIX_EPOCH,
            attrs: Vec::with_capacity(attr_capacity),
            dropped_attrs: 0,
            text: String::new(),
            events: Vec::new(),
            dropped_events: 0,
            links: Vec::new(),
            dropped_links: 0,
            status: Status::Unset,
            scope: None,
        }
    }

    /// Empties the record for another span, keeping its buffers; `false` when they grew so
    /// large (a span with huge attributes) that the record is better freed.
    pub(crate) fn clear_for_reuse(&mut self) -> bool {
        if self.text.capacity() > MAX_KEPT_TEXT || self.attrs.capacity() > MAX_ATTRIBUTES {
            return false;
        }
        self.parent_span_id = SpanId::INVALID;
        self.parent_is_remote = false;
        self.kind = SpanKind::Internal;
        self.attrs.clear();
        self.dropped_attrs = 0;
        self.text.clear();
        if self.trace_state != TraceState::NONE
            || !self.events.is_empty()
            || !self.links.is_empty()
            || self.status != Status::Unset
            || self.scope.is_some()
            || (self.dropped_events | self.dropped_links) != 0
        {
            self.clear_rare();
        }
        true
    }

    /// Clears what most spans do not have: a trace state, events, links, a status, a scope.
    #[cold]
    #[inline(never)]
    fn clear_rare(&mut self) {
        self.trace_state = TraceState::NONE;
        self.events = Vec::new();
        self.dropped_events = 0;
        self.links = Vec::new();
        self.dropped_links = 0;
        self.status = Status::Unset;
        self.scope = None;
    }

    pub(crate) fn str(&self, s: Str) -> &str {
        match s {
            Str::Static(s) => s,
            Str::Text(from, to) => self.text.get(from as usize..to as usize).unwrap_or_default(),
        }
    }

    pub(crate) fn name(&self) -> &str {
        self.str(self.name)
    }

    pub(crate) fn attr_str<'a>(&'a self, value: &'a AttrValue) -> Option<&'a str> {
        match value {
            AttrValue::Text(from, to) => Some(self.str(Str::Text(*from, *to))),
            AttrValue::Value(Value::String(s)) => Some(s.as_str()),
            AttrValue::Value(_) => None,
        }
    }

    /// Appends `value` to the text buffer.
    pub(crate) fn push_text(&mut self, value: &str) -> Str {
        let from = self.text.len();
        self.text.push_str(value);
        self.text_range(from)
    }

    /// Appends the `Debug` form of `value` to the text buffer, with no intermediate string.
    pub(crate) fn push_debug(&mut self, value: &dyn std::fmt::Debug) -> Str {
        let from = self.text.len();
        let _ = write!(self.text, "{value:?}");
        self.text_range(from)
    }

    fn text_range(&self, from: usize) -> Str {
        // Beyond 4 GiB of text per span, later strings read as empty rather than wrong.
        match (u32::try_from(from), u32::try_from(self.text.len())) {
            (Ok(from), Ok(to)) => Str::Text(from, to),
            _ => Str::Static(""),
        }
    }

    pub(crate) fn push_attr(&mut self, key: Key, value: AttrValue) {
        if self.attrs.len() < MAX_ATTRIBUTES {
            self.attrs.push(Attr { key, value });
        } else {
            self.dropped_attrs += 1;
        }
    }

    pub(crate) fn push_text_attr(&mut self, key: Key, value: &str) {
        if self.attrs.len() < MAX_ATTRIBUTES {
            let value = match self.push_text(value) {
                Str::Text(from, to) => AttrValue::Text(from, to),
                Str::Static(s) => AttrValue::Value(Value::from(s)),
            };
            self.attrs.push(Attr { key, value });
        } else {
            self.dropped_attrs += 1;
        }
    }

    pub(crate) fn push_event(&mut self, event: Event) {
        if self.events.len() < MAX_EVENTS {
            self.events.push(event);
        } else {
            self.dropped_events += 1;
        }
    }

    pub(crate) fn push_link(&mut self, link: Link) {
        if self.links.len() < MAX_LINKS {
            self.links.push(link);
        } else {
            self.dropped_links += 1;
        }
    }

    /// The span's own context (a local one: this process made the span).
    pub(crate) fn span_context(&self) -> SpanContext {
        SpanContext::new(self.trace_id, self.span_id, self.flags, false, self.trace_state.clone())
    }

    pub(crate) fn is_sampled(&self) -> bool {
        self.flags.is_sampled()
    }

    /// The record of a span from the OpenTelemetry API.
    pub(crate) fn from_span_data(span: SpanData) -> Self {
        let mut record = Self::new("", span.attributes.len());
        record.trace_id = span.span_context.trace_id();
        record.span_id = span.span_context.span_id();
        record.flags = span.span_context.trace_flags();
        record.trace_state = span.span_context.trace_state().clone();
        record.parent_span_id = span.parent_span_id;
        record.parent_is_remote = span.parent_span_is_remote;
        record.name = match span.name {
            Cow::Borrowed(name) => Str::Static(name),
            Cow::Owned(name) => record.push_text(&name),
        };
        record.kind = span.span_kind;
        record.start = span.start_time;
        record.end = span.end_time;
        record.attrs =
            span.attributes.into_iter().map(|kv| Attr { key: kv.key, value: AttrValue::Value(kv.value) }).collect();
        record.dropped_attrs = span.dropped_attributes_count;
        record.dropped_events = span.events.dropped_count;
        record.events = span.events.events;
        record.dropped_links = span.links.dropped_count;
        record.links = span.links.links;
        record.status = span.status;
        record.scope = (span.instrumentation_scope != *sdk_scope()).then(|| Arc::new(span.instrumentation_scope));
        record
    }

    /// The `SpanData` an OpenTelemetry exporter takes.
    pub(crate) fn into_span_data(self) -> SpanData {
        let attributes = self
            .attrs
            .iter()
            .map(|attr| match &attr.value {
                AttrValue::Text(..) => {
                    KeyValue::new(attr.key.clone(), self.attr_str(&attr.value).unwrap_or_default().to_owned())
                }
                AttrValue::Value(value) => KeyValue::new(attr.key.clone(), value.clone()),
            })
            .collect();
        let name = match self.name {
            Str::Static(name) => Cow::Borrowed(name),
            Str::Text(..) => Cow::Owned(self.name().to_owned()),
        };
        let mut events = SpanEvents::default();
        events.events = self.events;
        events.dropped_count = self.dropped_events;
        let mut links = SpanLinks::default();
        links.links = self.links;
        links.dropped_count = self.dropped_links;
        SpanData {
            span_context: SpanContext::new(self.trace_id, self.span_id, self.flags, false, self.trace_state),
            parent_span_id: self.parent_span_id,
            parent_span_is_remote: self.parent_is_remote,
            span_kind: self.kind,
            name,
            start_time: self.start,
            end_time: self.end,
            attributes,
            dropped_attributes_count: self.dropped_attrs,
            events,
            links,
            status: self.status,
            instrumentation_scope: self.scope.map_or_else(|| sdk_scope().clone(), |s| (*s).clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_share_one_buffer_and_read_back() {
        let mut record = SpanRecord::new("op", 4);
        record.push_text_attr(Key::from_static_str("a"), "first");
        let debug = record.push_debug(&vec![1, 2]);
        record.push_text_attr(Key::from_static_str("b"), "second");
        assert_eq!(record.str(debug), "[1, 2]");
        let values: Vec<_> = record.attrs.iter().map(|a| record.attr_str(&a.value).unwrap_or("?")).collect();
        assert_eq!(values, ["first", "second"]);
        assert_eq!(record.name(), "op");
    }

    #[test]
    fn limits_count_what_they_drop() {
        let mut record = SpanRecord::new("op", 0);
        for i in 0..MAX_ATTRIBUTES + 3 {
            record.push_attr(Key::from_static_str("k"), AttrValue::Value(Value::I64(i as i64)));
        }
        for _ in 0..MAX_EVENTS + 2 {
            record.push_event(Event::with_name("e"));
        }
        assert_eq!((record.attrs.len(), record.dropped_attrs), (MAX_ATTRIBUTES, 3));
        assert_eq!((record.events.len(), record.dropped_events), (MAX_EVENTS, 2));
    }

    #[test]
    fn span_data_round_trips() {
        let mut record = SpanRecord::new("static", 2);
        record.trace_id = TraceId::from(7_u128);
        record.span_id = SpanId::from(9_u64);
        record.parent_span_id = SpanId::from(3_u64);
        record.parent_is_remote = true;
        record.flags = TraceFlags::SAMPLED;
        record.kind = SpanKind::Server;
        record.name = record.push_text("GET /x");
        record.push_text_attr(Key::from_static_str("symbol"), "AAPL");
        record.push_attr(Key::from_static_str("n"), AttrValue::Value(Value::I64(4)));
        record.status = Status::error("bad");
        let data = record.clone().into_span_data();
        assert_eq!(data.name, "GET /x");
        assert_eq!(data.attributes[0], KeyValue::new("symbol", "AAPL"));
        assert_eq!(data.instrumentation_scope, *sdk_scope());
        let back = SpanRecord::from_span_data(data);
        assert_eq!(back.name(), "GET /x");
        assert_eq!(back.trace_id, record.trace_id);
        assert_eq!(back.parent_span_id, record.parent_span_id);
        assert!(back.parent_is_remote);
        assert_eq!(back.attr_str(&back.attrs[0].value), Some("AAPL"));
        assert_eq!(back.status, Status::error("bad"));
        assert!(back.scope.is_none(), "the SDK's scope stays implicit");
    }
}
