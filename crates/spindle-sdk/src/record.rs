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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, Key, KeyValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use crate::otlp::encode;

/// At most this many attributes, events and links per span, as the OpenTelemetry SDK's
/// default span limits; more are counted as dropped.
pub(crate) const MAX_ATTRIBUTES: usize = 128;
pub(crate) const MAX_EVENTS: usize = 128;
pub(crate) const MAX_LINKS: usize = 128;

/// A reused record keeps a text buffer and a fields buffer of at most this many bytes each.
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

/// An int, double or bool attribute value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Scalar {
    I64(i64),
    F64(f64),
    Bool(bool),
}

impl From<Scalar> for Value {
    fn from(scalar: Scalar) -> Self {
        match scalar {
            Scalar::I64(v) => Value::I64(v),
            Scalar::F64(v) => Value::F64(v),
            Scalar::Bool(v) => Value::Bool(v),
        }
    }
}

/// An attribute's value as [`SpanRecord::attributes`] reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum AttrView<'a> {
    Str(&'a str),
    Scalar(Scalar),
    Other(&'a Value),
}

impl AttrView<'_> {
    pub(crate) fn to_value(self) -> Value {
        match self {
            AttrView::Str(s) => Value::from(s.to_owned()),
            AttrView::Scalar(scalar) => scalar.into(),
            AttrView::Other(value) => value.clone(),
        }
    }
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
    /// Start and end, in nanoseconds since the Unix epoch, as OTLP sends them.
    pub(crate) start: u64,
    pub(crate) end: u64,
    /// Attributes recorded from `tracing` fields (strings and scalars), already as the OTLP
    /// `Span.attributes` entries the exporter sends: the encoder copies them as they are.
    pub(crate) fields: Vec<u8>,
    /// How many entries `fields` holds.
    pub(crate) field_count: u32,
    /// Every other attribute (arrays, errors' chains, those set through [`crate::SpanExt`]
    /// or taken from the OpenTelemetry API).
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

/// `time` in nanoseconds since the Unix epoch (0 before it).
pub(crate) fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs().saturating_mul(1_000_000_000).saturating_add(u64::from(d.subsec_nanos())))
}

/// Now, in nanoseconds since the Unix epoch (0 before it). Read from the realtime clock
/// directly: `SystemTime::now()` and its conversion to nanoseconds check and convert the
/// reading twice, on every span's start and end.
#[cfg(unix)]
pub(crate) fn unix_nanos_now() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a timespec the call may write; CLOCK_REALTIME always exists.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) } != 0 || now.tv_sec < 0 {
        return 0;
    }
    (now.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(now.tv_nsec as u64)
}

#[cfg(not(unix))]
pub(crate) fn unix_nanos_now() -> u64 {
    unix_nanos(SystemTime::now())
}

/// The instrumentation scope of every span made from a `tracing` span.
pub(crate) fn sdk_scope() -> &'static InstrumentationScope {
    static SCOPE: OnceLock<InstrumentationScope> = OnceLock::new();
    SCOPE.get_or_init(|| InstrumentationScope::builder("spindle-sdk").with_version(env!("CARGO_PKG_VERSION")).build())
}

impl SpanRecord {
    pub(crate) fn new(name: &'static str, attr_capacity: usize, field_capacity: usize) -> Self {
        Self {
            trace_id: TraceId::INVALID,
            span_id: SpanId::INVALID,
            parent_span_id: SpanId::INVALID,
            parent_is_remote: false,
            flags: TraceFlags::default(),
            trace_state: TraceState::NONE,
            name: Str::Static(name),
            kind: SpanKind::Internal,
            start: 0,
            end: 0,
            fields: Vec::with_capacity(field_capacity),
            field_count: 0,
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
        if self.text.capacity() > MAX_KEPT_TEXT
            || self.fields.capacity() > MAX_KEPT_TEXT
            || self.attrs.capacity() > MAX_ATTRIBUTES
        {
            return false;
        }
        self.parent_span_id = SpanId::INVALID;
        self.parent_is_remote = false;
        self.kind = SpanKind::Internal;
        self.fields.clear();
        self.field_count = 0;
        self.dropped_attrs = 0;
        self.text.clear();
        if !self.attrs.is_empty()
            || self.trace_state != TraceState::NONE
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
        self.attrs.clear();
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

    /// Whether one more attribute is within the limit; counts it dropped when not.
    fn room_for_attr(&mut self) -> bool {
        if self.attrs.len() + (self.field_count as usize) < MAX_ATTRIBUTES {
            true
        } else {
            self.dropped_attrs += 1;
            false
        }
    }

    /// A string attribute from a `tracing` field.
    pub(crate) fn push_field_str(&mut self, key: &str, value: &str) {
        if self.room_for_attr() {
            encode::put_field_string(&mut self.fields, key, value);
            self.field_count += 1;
        }
    }

    /// A string attribute from a `tracing` field whose value is the text buffer from `from`
    /// on; that text is then let go (the buffer is scratch space for it).
    pub(crate) fn push_field_text(&mut self, key: &str, from: u32) {
        if self.room_for_attr() {
            encode::put_field_string(&mut self.fields, key, self.text.get(from as usize..).unwrap_or_default());
            self.field_count += 1;
        }
        self.text.truncate(from as usize);
    }

    /// An int, double or bool attribute from a `tracing` field.
    pub(crate) fn push_field_scalar(&mut self, key: &str, value: Scalar) {
        if self.room_for_attr() {
            encode::put_field_scalar(&mut self.fields, key, value);
            self.field_count += 1;
        }
    }

    /// Every attribute: those from fields, then the others.
    pub(crate) fn attributes(&self) -> impl Iterator<Item = (&str, AttrView<'_>)> {
        encode::read_fields(&self.fields).chain(self.attrs.iter().map(|attr| {
            let view = match &attr.value {
                AttrValue::Text(..) => AttrView::Str(self.attr_str(&attr.value).unwrap_or_default()),
                AttrValue::Value(Value::String(s)) => AttrView::Str(s.as_str()),
                AttrValue::Value(Value::I64(v)) => AttrView::Scalar(Scalar::I64(*v)),
                AttrValue::Value(Value::F64(v)) => AttrView::Scalar(Scalar::F64(*v)),
                AttrValue::Value(Value::Bool(v)) => AttrView::Scalar(Scalar::Bool(*v)),
                AttrValue::Value(value) => AttrView::Other(value),
            };
            (attr.key.as_str(), view)
        }))
    }

    pub(crate) fn push_attr(&mut self, key: Key, value: AttrValue) {
        if self.room_for_attr() {
            self.attrs.push(Attr { key, value });
        }
    }

    pub(crate) fn push_text_attr(&mut self, key: Key, value: &str) {
        if self.room_for_attr() {
            let value = match self.push_text(value) {
                Str::Text(from, to) => AttrValue::Text(from, to),
                Str::Static(s) => AttrValue::Value(Value::from(s)),
            };
            self.attrs.push(Attr { key, value });
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
        let mut record = Self::new("", span.attributes.len(), 0);
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
        record.start = unix_nanos(span.start_time);
        record.end = unix_nanos(span.end_time);
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
        let attributes =
            self.attributes().map(|(key, value)| KeyValue::new(key.to_owned(), value.to_value())).collect();
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
            start_time: UNIX_EPOCH + Duration::from_nanos(self.start),
            end_time: UNIX_EPOCH + Duration::from_nanos(self.end),
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

    /// The clock read directly is the clock `SystemTime` reads.
    #[test]
    fn now_in_nanos_is_the_system_time() {
        let before = unix_nanos(SystemTime::now());
        let now = unix_nanos_now();
        let after = unix_nanos(SystemTime::now());
        assert!(before > 1_600_000_000_000_000_000, "after 2020: {before}");
        assert!(before <= now && now <= after, "{before} <= {now} <= {after}");
    }

    #[test]
    fn strings_share_one_buffer_and_read_back() {
        let mut record = SpanRecord::new("op", 4, 0);
        record.push_text_attr(Key::from_static_str("a"), "first");
        let debug = record.push_debug(&vec![1, 2]);
        record.push_text_attr(Key::from_static_str("b"), "second");
        assert_eq!(record.str(debug), "[1, 2]");
        let values: Vec<_> = record.attrs.iter().map(|a| record.attr_str(&a.value).unwrap_or("?")).collect();
        assert_eq!(values, ["first", "second"]);
        assert_eq!(record.name(), "op");
    }

    /// Field attributes are kept encoded; they read back as written, ahead of the others,
    /// and count toward the same limit.
    #[test]
    fn field_attributes_read_back_in_order() {
        let mut record = SpanRecord::new("op", 0, 0);
        let long = "x".repeat(300);
        record.push_field_str("symbol", "AAPL");
        record.push_field_scalar("n", Scalar::I64(-5));
        record.push_field_scalar("vol", Scalar::F64(0.25));
        record.push_field_scalar("ok", Scalar::Bool(true));
        record.push_attr(Key::from_static_str("late"), AttrValue::Value(Value::I64(1)));
        record.push_field_str("long", &long);
        let from = match record.push_debug(&[1, 2]) {
            Str::Text(from, _) => from,
            Str::Static(_) => unreachable!("short text"),
        };
        record.push_field_text("debug", from);
        assert!(record.text.is_empty(), "the debug text was scratch");
        let read: Vec<_> = record.attributes().collect();
        assert_eq!(
            read,
            [
                ("symbol", AttrView::Str("AAPL")),
                ("n", AttrView::Scalar(Scalar::I64(-5))),
                ("vol", AttrView::Scalar(Scalar::F64(0.25))),
                ("ok", AttrView::Scalar(Scalar::Bool(true))),
                ("long", AttrView::Str(&long)),
                ("debug", AttrView::Str("[1, 2]")),
                ("late", AttrView::Scalar(Scalar::I64(1))),
            ]
        );
        for _ in 0..MAX_ATTRIBUTES {
            record.push_field_scalar("k", Scalar::I64(0));
        }
        assert_eq!(record.attributes().count(), MAX_ATTRIBUTES);
        assert_eq!(record.dropped_attrs, 7);
        assert!(record.clear_for_reuse());
        assert_eq!(record.attributes().count(), 0);
    }

    #[test]
    fn limits_count_what_they_drop() {
        let mut record = SpanRecord::new("op", 0, 0);
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
        let mut record = SpanRecord::new("static", 2, 0);
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
