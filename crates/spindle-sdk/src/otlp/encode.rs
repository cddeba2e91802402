//! The SDK's span records straight to the bytes of an OTLP `ExportTraceServiceRequest`.
//!
//! Written from the protobuf definitions of opentelemetry-proto
//! (`opentelemetry/proto/collector/trace/v1/trace_service.proto`, `trace/v1/trace.proto`,
//! `common/v1/common.proto`, `resource/v1/resource.proto`): field numbers and wire types are
//! the constants below. Nothing is built in between — no protobuf structs, no owned copies of
//! names, ids or attribute values — which is what makes export cheap on the export thread.
//!
//! Output follows proto3 conventions: scalar fields equal to their default are left out; a
//! oneof member (`AnyValue`) is always written. Spans are grouped by instrumentation scope,
//! in order of first appearance.
//!
//! Pure: no IO, cannot fail, never panics.

use std::sync::Arc;

use opentelemetry::trace::{SpanId, SpanKind, Status, TraceState};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_sdk::Resource;

use crate::record::{sdk_scope, AttrValue, AttrView, Scalar, SpanRecord};

/// Protobuf wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

// ExportTraceServiceRequest
const REQUEST_RESOURCE_SPANS: u32 = 1;
// ResourceSpans
const RESOURCE_SPANS_RESOURCE: u32 = 1;
const RESOURCE_SPANS_SCOPE_SPANS: u32 = 2;
const RESOURCE_SPANS_SCHEMA_URL: u32 = 3;
// Resource
const RESOURCE_ATTRIBUTES: u32 = 1;
// ScopeSpans
const SCOPE_SPANS_SCOPE: u32 = 1;
const SCOPE_SPANS_SPANS: u32 = 2;
const SCOPE_SPANS_SCHEMA_URL: u32 = 3;
// InstrumentationScope
const SCOPE_NAME: u32 = 1;
const SCOPE_VERSION: u32 = 2;
const SCOPE_ATTRIBUTES: u32 = 3;
// Span
const SPAN_TRACE_ID: u32 = 1;
const SPAN_SPAN_ID: u32 = 2;
const SPAN_TRACE_STATE: u32 = 3;
const SPAN_PARENT_SPAN_ID: u32 = 4;
const SPAN_NAME: u32 = 5;
const SPAN_KIND: u32 = 6;
const SPAN_START_TIME: u32 = 7;
const SPAN_END_TIME: u32 = 8;
const SPAN_ATTRIBUTES: u32 = 9;
const SPAN_DROPPED_ATTRIBUTES: u32 = 10;
const SPAN_EVENTS: u32 = 11;
const SPAN_DROPPED_EVENTS: u32 = 12;
const SPAN_LINKS: u32 = 13;
const SPAN_DROPPED_LINKS: u32 = 14;
const SPAN_STATUS: u32 = 15;
const SPAN_FLAGS: u32 = 16;
// Span.Event
const EVENT_TIME: u32 = 1;
const EVENT_NAME: u32 = 2;
const EVENT_ATTRIBUTES: u32 = 3;
const EVENT_DROPPED_ATTRIBUTES: u32 = 4;
// Span.Link
const LINK_TRACE_ID: u32 = 1;
const LINK_SPAN_ID: u32 = 2;
const LINK_TRACE_STATE: u32 = 3;
const LINK_ATTRIBUTES: u32 = 4;
const LINK_DROPPED_ATTRIBUTES: u32 = 5;
const LINK_FLAGS: u32 = 6;
// Status
const STATUS_MESSAGE: u32 = 2;
const STATUS_CODE: u32 = 3;
// KeyValue
const KEY_VALUE_KEY: u32 = 1;
const KEY_VALUE_VALUE: u32 = 2;
// AnyValue
const ANY_STRING: u32 = 1;
const ANY_BOOL: u32 = 2;
const ANY_INT: u32 = 3;
const ANY_DOUBLE: u32 = 4;
const ANY_ARRAY: u32 = 5;
// ArrayValue
const ARRAY_VALUES: u32 = 1;

/// SpanFlags: the context's remote bit is known (`SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK`)...
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
/// ...and set (`SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK`).
const FLAG_IS_REMOTE: u32 = 0x200;

/// Encodes batches for one resource. Keeps its buffers between batches, so a steady stream
/// of exports allocates only the request it hands out.
#[derive(Debug, Default)]
pub(crate) struct TraceRequestEncoder {
    /// The encoded `Resource` message (its fields, without tag and length).
    resource: Vec<u8>,
    resource_schema_url: Option<String>,
    /// One span's fields while its length is not yet known.
    span: Vec<u8>,
    /// Encoded `ScopeSpans.spans` entries per scope, in order of first appearance.
    scopes: Vec<ScopeGroup>,
}

#[derive(Debug)]
struct ScopeGroup {
    /// `None`: the SDK's own scope.
    scope: Option<Arc<InstrumentationScope>>,
    spans: Vec<u8>,
}

impl TraceRequestEncoder {
    pub(crate) fn new(resource: &Resource) -> Self {
        let mut encoder = Self::default();
        encoder.set_resource(resource);
        encoder
    }

    pub(crate) fn set_resource(&mut self, resource: &Resource) {
        self.resource.clear();
        for (key, value) in resource.iter() {
            put_key_value(&mut self.resource, RESOURCE_ATTRIBUTES, key.as_str(), value);
        }
        self.resource_schema_url = resource.schema_url().map(str::to_owned);
    }

    /// The `ExportTraceServiceRequest` carrying `batch`.
    #[cfg(test)]
    pub(crate) fn encode(&mut self, batch: &[Box<SpanRecord>]) -> Vec<u8> {
        self.encode_batch(&[], batch)
    }

    #[cfg(test)]
    pub(crate) fn encode_batch(&mut self, encoded: &[u8], batch: &[Box<SpanRecord>]) -> Vec<u8> {
        self.encode_batch_into(Vec::new(), 0, encoded, batch)
    }

    /// The `ExportTraceServiceRequest` carrying `encoded`, spans of the SDK's scope already
    /// encoded as `ScopeSpans.spans` entries ([`encode_span_entry`]), and `batch`, written
    /// into `out` (emptied first: a request's buffer used again) after `room` zero bytes, for
    /// a transport's framing.
    pub(crate) fn encode_batch_into(
        &mut self,
        mut out: Vec<u8>,
        room: usize,
        encoded: &[u8],
        batch: &[Box<SpanRecord>],
    ) -> Vec<u8> {
        for group in &mut self.scopes {
            group.spans.clear();
        }
        // The layer's entries are written once, straight into the request.
        let sdk_group = (!encoded.is_empty()).then(|| self.scope_index(&None));
        let mut last = usize::MAX;
        for span in batch {
            let index = match self.scopes.get(last) {
                Some(group) if same_scope(&group.scope, &span.scope) => last,
                _ => self.scope_index(&span.scope),
            };
            last = index;
            encode_span_entry(&mut self.scopes[index].spans, &mut self.span, span);
        }
        // Scopes seen in earlier batches but not in this one are dropped here.
        self.scopes.retain(|group| !group.spans.is_empty() || (group.scope.is_none() && sdk_group.is_some()));
        let extra = |group: &ScopeGroup| if group.scope.is_none() { encoded } else { &[][..] };

        let mut scope_spans = Vec::with_capacity(self.scopes.len());
        let mut resource_spans_len = field_len(RESOURCE_SPANS_RESOURCE, self.resource.len());
        if let Some(url) = &self.resource_schema_url {
            resource_spans_len += string_field_len(RESOURCE_SPANS_SCHEMA_URL, url);
        }
        for group in &self.scopes {
            let mut header = Vec::with_capacity(64);
            let scope = group.scope.as_deref().unwrap_or_else(|| sdk_scope());
            let mut scope_msg = Vec::with_capacity(32);
            put_string(&mut scope_msg, SCOPE_NAME, scope.name());
            put_string(&mut scope_msg, SCOPE_VERSION, scope.version().unwrap_or_default());
            for kv in scope.attributes() {
                put_key_value(&mut scope_msg, SCOPE_ATTRIBUTES, kv.key.as_str(), &kv.value);
            }
            let schema = scope.schema_url().unwrap_or_default();
            let spans_len = group.spans.len() + extra(group).len();
            let body_len = field_len(SCOPE_SPANS_SCOPE, scope_msg.len())
                + spans_len
                + string_field_len(SCOPE_SPANS_SCHEMA_URL, schema);
            put_tag(&mut header, RESOURCE_SPANS_SCOPE_SPANS, LEN);
            put_varint(&mut header, body_len as u64);
            put_message(&mut header, SCOPE_SPANS_SCOPE, &scope_msg);
            resource_spans_len += header.len() + spans_len;
            let mut trailer = Vec::new();
            put_string(&mut trailer, SCOPE_SPANS_SCHEMA_URL, schema);
            resource_spans_len += trailer.len();
            scope_spans.push((header, trailer));
        }

        out.clear();
        out.reserve(room + field_len(REQUEST_RESOURCE_SPANS, resource_spans_len));
        out.resize(room, 0);
        put_tag(&mut out, REQUEST_RESOURCE_SPANS, LEN);
        put_varint(&mut out, resource_spans_len as u64);
        put_message(&mut out, RESOURCE_SPANS_RESOURCE, &self.resource);
        for (group, (header, trailer)) in self.scopes.iter().zip(&scope_spans) {
            out.extend_from_slice(header);
            out.extend_from_slice(&group.spans);
            out.extend_from_slice(extra(group));
            out.extend_from_slice(trailer);
        }
        if let Some(url) = &self.resource_schema_url {
            put_string(&mut out, RESOURCE_SPANS_SCHEMA_URL, url);
        }
        debug_assert_eq!(out.len(), room + field_len(REQUEST_RESOURCE_SPANS, resource_spans_len));
        out
    }

    fn scope_index(&mut self, scope: &Option<Arc<InstrumentationScope>>) -> usize {
        match self.scopes.iter().position(|g| same_scope(&g.scope, scope)) {
            Some(index) => index,
            None => {
                self.scopes.push(ScopeGroup { scope: scope.clone(), spans: Vec::with_capacity(4096) });
                self.scopes.len() - 1
            }
        }
    }
}

/// Appends `span` to `out` as one `ScopeSpans.spans` entry (tag, length, `Span`).
pub(crate) fn encode_span_entry(out: &mut Vec<u8>, scratch: &mut Vec<u8>, span: &SpanRecord) {
    let start = out.len();
    let len = write_span_entry(out, start, scratch, span);
    out.truncate(start + len);
}

/// Writes `span` as one `ScopeSpans.spans` entry at `start` of `out` and returns its length.
/// `out` is lengthened when it is too short, else written over; what follows the entry in
/// `out` afterwards is unspecified.
///
/// The fields are written into room made for an upper bound of their length ([`span_bound`]),
/// behind room for a two-byte length, through a [`Cursor`] whose position stays in a register
/// (a vector's length is reloaded after every byte written through it). A span the bound
/// does not cover is written into `scratch` first, then copied behind its length.
pub(crate) fn write_span_entry(out: &mut Vec<u8>, start: usize, scratch: &mut Vec<u8>, span: &SpanRecord) -> usize {
    if is_plain(span) {
        if let Some(len) = write_plain_entry(out, start, span) {
            return len;
        }
    }
    write_general_entry(out, start, scratch, span)
}

/// [`write_span_entry`] for a span that is not plain: out of line, so that the plain path's
/// code is a few lines in a row.
#[inline(never)]
fn write_general_entry(out: &mut Vec<u8>, start: usize, scratch: &mut Vec<u8>, span: &SpanRecord) -> usize {
    if let Some(bound) = span_bound(span) {
        let body = start + 3;
        if out.len() < body + bound {
            out.resize(body + bound, 0);
        }
        let mut cursor = Cursor { buf: &mut out[body..body + bound], pos: 0 };
        put_span(&mut cursor, span);
        let len = cursor.pos;
        if len <= bound {
            out[start] = SPAN_ENTRY_TAG;
            return if len < 0x80 {
                out.copy_within(body..body + len, start + 2);
                out[start + 1] = len as u8;
                2 + len
            } else {
                out[start + 1] = (len as u8) | 0x80;
                out[start + 2] = (len >> 7) as u8;
                3 + len
            };
        }
    }
    out.truncate(start);
    encode_span_entry_unbounded(out, scratch, span);
    out.len() - start
}

/// Whether `span` has nothing but what every span has and its fields' attributes: no trace
/// state, other attributes, events, links or status — the spans a service makes by the
/// thousand.
fn is_plain(span: &SpanRecord) -> bool {
    span.attrs.is_empty()
        && span.events.is_empty()
        && span.links.is_empty()
        && (span.dropped_events | span.dropped_links) == 0
        && span.status == Status::Unset
        && span.trace_state == TraceState::NONE
}

/// [`write_span_entry`] for a plain span ([`is_plain`]) with a name shorter than 128 bytes,
/// no attribute dropped and an entry shorter than 16 KiB: the entry is appended at `start`
/// in five pieces — tag, length, ids and the name's tag and length; the name; kind and
/// times; the fields; the flags — the fields [`put_span`] writes for it, in the same order,
/// with the fixed parts laid out at offsets known when compiled. `None` leaves any other span
/// to the general path.
#[inline]
fn write_plain_entry(out: &mut Vec<u8>, start: usize, span: &SpanRecord) -> Option<usize> {
    let name = span.name().as_bytes();
    if name.len() >= 0x80 || span.dropped_attrs != 0 {
        return None;
    }
    let parent = span.parent_span_id != SpanId::INVALID;
    let ids = if parent { 38 } else { 28 };
    let name_head = if name.is_empty() { 0 } else { 2 };
    let len = ids + name_head + name.len() + 20 + span.fields.len() + 6;
    if len >= 1 << 14 {
        return None;
    }
    // The entry's tag and length end at byte 3: one length byte or two.
    let mut head = [0; 3 + 38 + 2];
    let from = if len < 0x80 {
        head[1] = SPAN_ENTRY_TAG;
        head[2] = len as u8;
        1
    } else {
        head[0] = SPAN_ENTRY_TAG;
        head[1] = (len as u8) | 0x80;
        head[2] = (len >> 7) as u8;
        0
    };
    head[3] = tag_byte(SPAN_TRACE_ID, LEN);
    head[4] = 16;
    head[5..21].copy_from_slice(&span.trace_id.to_bytes());
    head[21] = tag_byte(SPAN_SPAN_ID, LEN);
    head[22] = 8;
    head[23..31].copy_from_slice(&span.span_id.to_bytes());
    head[31] = tag_byte(SPAN_PARENT_SPAN_ID, LEN);
    head[32] = 8;
    head[33..41].copy_from_slice(&span.parent_span_id.to_bytes());
    let name_at = 3 + ids;
    head[name_at] = tag_byte(SPAN_NAME, LEN);
    head[name_at + 1] = name.len() as u8;
    let mut times = [0; 20];
    times[0] = tag_byte(SPAN_KIND, VARINT);
    times[1] = kind_number(&span.kind) as u8;
    times[2] = tag_byte(SPAN_START_TIME, FIXED64);
    times[3..11].copy_from_slice(&span.start.to_le_bytes());
    times[11] = tag_byte(SPAN_END_TIME, FIXED64);
    times[12..20].copy_from_slice(&span.end.to_le_bytes());
    let mut flags = [FLAGS_TAG[0], FLAGS_TAG[1], 0, 0, 0, 0];
    flags[2..].copy_from_slice(&span_flags(span.flags.to_u8(), span.parent_is_remote).to_le_bytes());
    out.truncate(start);
    out.reserve(3 + len);
    out.extend_from_slice(&head[from..name_at + name_head]);
    out.extend_from_slice(name);
    out.extend_from_slice(&times);
    out.extend_from_slice(&span.fields);
    out.extend_from_slice(&flags);
    Some(out.len() - start)
}

/// The two-byte tag of `Span.flags`.
const FLAGS_TAG: [u8; 2] = [(((SPAN_FLAGS << 3) | FIXED32) as u8) | 0x80, (((SPAN_FLAGS << 3) | FIXED32) >> 7) as u8];

/// [`encode_span_entry`] for spans [`span_bound`] does not cover: out of line, so the common
/// path's code stays small (what a traced request pays is mostly its code coming into cache).
#[cold]
#[inline(never)]
fn encode_span_entry_unbounded(out: &mut Vec<u8>, scratch: &mut Vec<u8>, span: &SpanRecord) {
    scratch.clear();
    put_span(scratch, span);
    put_message(out, SCOPE_SPANS_SPANS, scratch);
}

/// The tag of a `ScopeSpans.spans` entry, one byte.
const SPAN_ENTRY_TAG: u8 = ((SCOPE_SPANS_SPANS << 3) | LEN) as u8;

/// An upper bound of the length of `span`'s fields as [`put_span`] writes them, below 2^14
/// (a two-byte length); `None` when the span is larger, or has what is not worth bounding
/// (links, a trace state, array values).
fn span_bound(span: &SpanRecord) -> Option<usize> {
    if !span.links.is_empty() || span.trace_state != TraceState::NONE {
        return None;
    }
    // Ids, kind, times, counts, flags and the status's fields take 102 bytes at most; the
    // text of `Text` attribute values (and perhaps the name) is in `span.text`.
    let mut bound = 128 + span.name().len() + span.text.len() + span.fields.len();
    if let Status::Error { description } = &span.status {
        bound += description.len();
    }
    for attr in &span.attrs {
        let value = match &attr.value {
            AttrValue::Text(..) => 0,
            AttrValue::Value(value) => value_bound(value)?,
        };
        bound += KEY_VALUE_BOUND + attr.key.as_str().len() + value;
    }
    for event in span.events.iter() {
        // Tag, length, time, name's tag and length, dropped count.
        bound += 32 + event.name.len();
        for kv in &event.attributes {
            bound += KEY_VALUE_BOUND + kv.key.as_str().len() + value_bound(&kv.value)?;
        }
    }
    (bound < 1 << 14).then_some(bound)
}

/// The most a key-value takes besides its key's bytes and [`value_bound`]: tags and lengths
/// of the key-value, its key, its value and the value's member (24), or a scalar value (29).
const KEY_VALUE_BOUND: usize = 32;

/// The bytes of a value's text; scalars are in [`KEY_VALUE_BOUND`].
fn value_bound(value: &Value) -> Option<usize> {
    match value {
        Value::Bool(_) | Value::I64(_) | Value::F64(_) => Some(0),
        Value::String(s) => Some(s.as_str().len()),
        _ => None,
    }
}

fn event_len(event: &opentelemetry::trace::Event) -> usize {
    fixed64_field_len(EVENT_TIME)
        + string_field_len(EVENT_NAME, &event.name)
        + attributes_len(EVENT_ATTRIBUTES, &event.attributes)
        + uint_field_len(EVENT_DROPPED_ATTRIBUTES, u64::from(event.dropped_attributes_count))
}

fn link_len(link: &opentelemetry::trace::Link, state: &str) -> usize {
    field_len(LINK_TRACE_ID, 16)
        + field_len(LINK_SPAN_ID, 8)
        + string_field_len(LINK_TRACE_STATE, state)
        + attributes_len(LINK_ATTRIBUTES, &link.attributes)
        + uint_field_len(LINK_DROPPED_ATTRIBUTES, u64::from(link.dropped_attributes_count))
        + fixed32_field_len(LINK_FLAGS)
}

fn same_scope(a: &Option<Arc<InstrumentationScope>>, b: &Option<Arc<InstrumentationScope>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
        _ => false,
    }
}

fn put_span(buf: &mut impl Out, span: &SpanRecord) {
    put_id(buf, SPAN_TRACE_ID, span.trace_id.to_bytes());
    put_id(buf, SPAN_SPAN_ID, span.span_id.to_bytes());
    put_trace_state(buf, SPAN_TRACE_STATE, &span.trace_state);
    if span.parent_span_id != SpanId::INVALID {
        put_id(buf, SPAN_PARENT_SPAN_ID, span.parent_span_id.to_bytes());
    }
    put_string(buf, SPAN_NAME, span.name());
    put_uint(buf, SPAN_KIND, kind_number(&span.kind));
    put_fixed64(buf, SPAN_START_TIME, span.start);
    put_fixed64(buf, SPAN_END_TIME, span.end);
    buf.put_slice(&span.fields);
    for attr in &span.attrs {
        let key = attr.key.as_str();
        match &attr.value {
            AttrValue::Text(..) | AttrValue::Value(Value::String(_)) => {
                put_key_string(buf, SPAN_ATTRIBUTES, key, span.attr_str(&attr.value).unwrap_or_default())
            }
            AttrValue::Value(Value::I64(v)) => put_key_scalar(buf, key, ANY_INT, VARINT, *v as u64),
            AttrValue::Value(Value::F64(v)) => put_key_scalar(buf, key, ANY_DOUBLE, FIXED64, v.to_bits()),
            AttrValue::Value(Value::Bool(v)) => put_key_scalar(buf, key, ANY_BOOL, VARINT, u64::from(*v)),
            AttrValue::Value(value) => put_key_value(buf, SPAN_ATTRIBUTES, key, value),
        }
    }
    put_uint(buf, SPAN_DROPPED_ATTRIBUTES, u64::from(span.dropped_attrs));
    // Events, links and a status are rare on the spans a service makes by the thousand: out
    // of line, so that the common path's code stays small (docs/adr/022-sdk-span-layer.md).
    if !span.events.is_empty() {
        put_events(buf, span);
    }
    put_uint(buf, SPAN_DROPPED_EVENTS, u64::from(span.dropped_events));
    if !span.links.is_empty() {
        put_links(buf, span);
    }
    put_uint(buf, SPAN_DROPPED_LINKS, u64::from(span.dropped_links));
    if span.status != Status::Unset {
        put_status(buf, &span.status);
    }
    put_fixed32(buf, SPAN_FLAGS, span_flags(span.flags.to_u8(), span.parent_is_remote));
}

#[cold]
#[inline(never)]
fn put_events(buf: &mut impl Out, span: &SpanRecord) {
    for event in span.events.iter() {
        put_tag(buf, SPAN_EVENTS, LEN);
        put_varint(buf, event_len(event) as u64);
        put_fixed64(buf, EVENT_TIME, crate::record::unix_nanos(event.timestamp));
        put_string(buf, EVENT_NAME, &event.name);
        for kv in &event.attributes {
            put_key_value(buf, EVENT_ATTRIBUTES, kv.key.as_str(), &kv.value);
        }
        put_uint(buf, EVENT_DROPPED_ATTRIBUTES, u64::from(event.dropped_attributes_count));
    }
}

#[cold]
#[inline(never)]
fn put_links(buf: &mut impl Out, span: &SpanRecord) {
    for link in span.links.iter() {
        let lcx = &link.span_context;
        let state = trace_state_header(lcx.trace_state());
        put_tag(buf, SPAN_LINKS, LEN);
        put_varint(buf, link_len(link, &state) as u64);
        put_bytes(buf, LINK_TRACE_ID, &lcx.trace_id().to_bytes());
        put_bytes(buf, LINK_SPAN_ID, &lcx.span_id().to_bytes());
        put_string(buf, LINK_TRACE_STATE, &state);
        for kv in &link.attributes {
            put_key_value(buf, LINK_ATTRIBUTES, kv.key.as_str(), &kv.value);
        }
        put_uint(buf, LINK_DROPPED_ATTRIBUTES, u64::from(link.dropped_attributes_count));
        put_fixed32(buf, LINK_FLAGS, span_flags(lcx.trace_flags().to_u8(), lcx.is_remote()));
    }
}

#[cold]
#[inline(never)]
fn put_status(buf: &mut impl Out, status: &Status) {
    match status {
        Status::Unset => {}
        Status::Ok => {
            put_tag(buf, SPAN_STATUS, LEN);
            put_varint(buf, uint_field_len(STATUS_CODE, 1) as u64);
            put_uint(buf, STATUS_CODE, 1);
        }
        Status::Error { description } => {
            let len = string_field_len(STATUS_MESSAGE, description) + uint_field_len(STATUS_CODE, 2);
            put_tag(buf, SPAN_STATUS, LEN);
            put_varint(buf, len as u64);
            put_string(buf, STATUS_MESSAGE, description);
            put_uint(buf, STATUS_CODE, 2);
        }
    }
}

/// `Span.flags` / `Link.flags`: the W3C trace flags in the low byte, and whether the parent
/// (for a link: the linked context) is remote.
fn span_flags(trace_flags: u8, remote: bool) -> u32 {
    let mut flags = u32::from(trace_flags) | FLAG_HAS_IS_REMOTE;
    if remote {
        flags |= FLAG_IS_REMOTE;
    }
    flags
}

fn kind_number(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

fn trace_state_header(state: &TraceState) -> String {
    if *state == TraceState::NONE {
        String::new()
    } else {
        state.header()
    }
}

fn put_trace_state(buf: &mut impl Out, field: u32, state: &TraceState) {
    // The common case, no trace state, costs a comparison and no allocation.
    if *state != TraceState::NONE {
        put_string(buf, field, &state.header());
    }
}

// --- protobuf primitives ---------------------------------------------------------------

/// Where encoded bytes go: a growing vector, or room made beforehand ([`Cursor`]).
trait Out {
    fn put(&mut self, byte: u8);
    fn put_slice(&mut self, bytes: &[u8]);
}

impl Out for Vec<u8> {
    #[inline]
    fn put(&mut self, byte: u8) {
        self.push(byte);
    }

    #[inline]
    fn put_slice(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Writes into a slice; what does not fit is counted but not written, so a bound that was
/// too small shows as `pos` beyond the slice, never as a panic.
struct Cursor<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Out for Cursor<'_> {
    #[inline]
    fn put(&mut self, byte: u8) {
        if let Some(slot) = self.buf.get_mut(self.pos) {
            *slot = byte;
        }
        self.pos += 1;
    }

    #[inline]
    fn put_slice(&mut self, bytes: &[u8]) {
        if let Some(room) = self.buf.get_mut(self.pos..self.pos + bytes.len()) {
            room.copy_from_slice(bytes);
        }
        self.pos += bytes.len();
    }
}

fn varint_len(value: u64) -> usize {
    // 7 bits per byte; 0 still takes one byte.
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(buf: &mut impl Out, mut value: u64) {
    while value >= 0x80 {
        buf.put((value as u8) | 0x80);
        value >>= 7;
    }
    buf.put(value as u8);
}

fn tag_len(field: u32) -> usize {
    varint_len(u64::from(field) << 3)
}

/// The tag of a field below 16: one byte.
const fn tag_byte(field: u32, wire_type: u32) -> u8 {
    ((field << 3) | wire_type) as u8
}

fn put_tag(buf: &mut impl Out, field: u32, wire_type: u32) {
    put_varint(buf, u64::from((field << 3) | wire_type));
}

/// Length of a length-delimited field whose payload is `len` bytes.
fn field_len(field: u32, len: usize) -> usize {
    tag_len(field) + varint_len(len as u64) + len
}

fn put_message(buf: &mut impl Out, field: u32, payload: &[u8]) {
    put_tag(buf, field, LEN);
    put_varint(buf, payload.len() as u64);
    buf.put_slice(payload);
}

fn put_bytes(buf: &mut impl Out, field: u32, bytes: &[u8]) {
    put_message(buf, field, bytes);
}

/// A trace or span id (16 or 8 bytes): a length known when compiled makes the copy two
/// moves instead of a call.
fn put_id<const N: usize>(buf: &mut impl Out, field: u32, id: [u8; N]) {
    put_tag(buf, field, LEN);
    buf.put(N as u8);
    buf.put_slice(&id);
}

fn string_field_len(field: u32, value: &str) -> usize {
    if value.is_empty() {
        0
    } else {
        field_len(field, value.len())
    }
}

/// Writes a proto3 string field; the empty string is the default and is left out.
fn put_string(buf: &mut impl Out, field: u32, value: &str) {
    if !value.is_empty() {
        put_message(buf, field, value.as_bytes());
    }
}

fn uint_field_len(field: u32, value: u64) -> usize {
    if value == 0 {
        0
    } else {
        tag_len(field) + varint_len(value)
    }
}

/// Writes a proto3 varint field (uint32, enum); zero is the default and is left out.
fn put_uint(buf: &mut impl Out, field: u32, value: u64) {
    if value != 0 {
        put_tag(buf, field, VARINT);
        put_varint(buf, value);
    }
}

fn fixed64_field_len(field: u32) -> usize {
    tag_len(field) + 8
}

fn put_fixed64(buf: &mut impl Out, field: u32, value: u64) {
    put_tag(buf, field, FIXED64);
    buf.put_slice(&value.to_le_bytes());
}

fn fixed32_field_len(field: u32) -> usize {
    tag_len(field) + 4
}

fn put_fixed32(buf: &mut impl Out, field: u32, value: u32) {
    put_tag(buf, field, FIXED32);
    buf.put_slice(&value.to_le_bytes());
}

// --- attributes ------------------------------------------------------------------------

fn attributes_len(field: u32, attributes: &[KeyValue]) -> usize {
    attributes.iter().map(|kv| field_len(field, key_value_len(kv.key.as_str(), &kv.value))).sum()
}

fn key_value_len(key: &str, value: &Value) -> usize {
    string_field_len(KEY_VALUE_KEY, key) + field_len(KEY_VALUE_VALUE, any_value_len(value))
}

fn key_string_len(key: &str, value: &str) -> usize {
    string_field_len(KEY_VALUE_KEY, key) + field_len(KEY_VALUE_VALUE, any_string_len(value))
}

/// A key-value whose value is a string, without making a `Value` of it.
#[inline(always)]
fn put_key_string(buf: &mut impl Out, field: u32, key: &str, value: &str) {
    let value_len = any_string_len(value);
    put_tag(buf, field, LEN);
    put_varint(buf, key_string_len(key, value) as u64);
    put_string(buf, KEY_VALUE_KEY, key);
    put_tag(buf, KEY_VALUE_VALUE, LEN);
    put_varint(buf, value_len as u64);
    put_message(buf, ANY_STRING, value.as_bytes());
}

/// A `Span.attributes` entry whose value is an int (`VARINT`), a bool (`VARINT`) or a
/// double (`FIXED64`, `bits` its IEEE bits).
#[inline(always)]
fn put_key_scalar(buf: &mut impl Out, key: &str, member: u32, wire_type: u32, bits: u64) {
    let value_len = tag_len(member) + if wire_type == FIXED64 { 8 } else { varint_len(bits) };
    put_tag(buf, SPAN_ATTRIBUTES, LEN);
    put_varint(buf, (string_field_len(KEY_VALUE_KEY, key) + field_len(KEY_VALUE_VALUE, value_len)) as u64);
    put_string(buf, KEY_VALUE_KEY, key);
    put_tag(buf, KEY_VALUE_VALUE, LEN);
    put_varint(buf, value_len as u64);
    put_tag(buf, member, wire_type);
    if wire_type == FIXED64 {
        buf.put_slice(&bits.to_le_bytes());
    } else {
        put_varint(buf, bits);
    }
}

/// A `Span.attributes` entry with a string value, for [`SpanRecord::fields`].
pub(crate) fn put_field_string(buf: &mut Vec<u8>, key: &str, value: &str) {
    // Nearly every field's value: its lengths one byte each.
    if value.len() < 0x80 - 2 {
        let head =
            [tag_byte(KEY_VALUE_VALUE, LEN), value.len() as u8 + 2, tag_byte(ANY_STRING, LEN), value.len() as u8];
        put_field(buf, key, &head, value.as_bytes());
    } else {
        put_long_field_string(buf, key, value);
    }
}

#[cold]
#[inline(never)]
fn put_long_field_string(buf: &mut Vec<u8>, key: &str, value: &str) {
    let mut head = [0; 24];
    let mut value_head = Cursor { buf: &mut head, pos: 0 };
    put_tag(&mut value_head, KEY_VALUE_VALUE, LEN);
    put_varint(&mut value_head, any_string_len(value) as u64);
    put_tag(&mut value_head, ANY_STRING, LEN);
    put_varint(&mut value_head, value.len() as u64);
    let len = value_head.pos;
    put_long_field(buf, key, &head[..len], value.as_bytes());
}

/// A `Span.attributes` entry with an int, double or bool value, for [`SpanRecord::fields`].
pub(crate) fn put_field_scalar(buf: &mut Vec<u8>, key: &str, value: Scalar) {
    let mut head = [0; 24];
    // The `AnyValue` from the third byte on, its tag and length before it.
    let mut any = Cursor { buf: &mut head[2..], pos: 0 };
    match value {
        Scalar::I64(v) => {
            put_tag(&mut any, ANY_INT, VARINT);
            put_varint(&mut any, v as u64);
        }
        Scalar::F64(v) => {
            put_tag(&mut any, ANY_DOUBLE, FIXED64);
            any.put_slice(&v.to_bits().to_le_bytes());
        }
        Scalar::Bool(v) => {
            put_tag(&mut any, ANY_BOOL, VARINT);
            any.put(u8::from(v));
        }
    }
    let len = any.pos;
    head[0] = ((KEY_VALUE_VALUE << 3) | LEN) as u8;
    head[1] = len as u8;
    put_field(buf, key, &head[..2 + len], &[]);
}

/// A `Span.attributes` entry: its key, then `value_head` and `value`, the encoded value.
#[inline]
fn put_field(buf: &mut Vec<u8>, key: &str, value_head: &[u8], value: &[u8]) {
    let len = 2 + key.len() + value_head.len() + value.len();
    // A short entry (nearly every one): its two lengths one byte each.
    if len < 0x80 && !key.is_empty() {
        buf.reserve(2 + len);
        buf.extend_from_slice(&[
            tag_byte(SPAN_ATTRIBUTES, LEN),
            len as u8,
            tag_byte(KEY_VALUE_KEY, LEN),
            key.len() as u8,
        ]);
        buf.extend_from_slice(key.as_bytes());
        buf.extend_from_slice(value_head);
        buf.extend_from_slice(value);
    } else {
        put_long_field(buf, key, value_head, value);
    }
}

#[cold]
#[inline(never)]
fn put_long_field(buf: &mut Vec<u8>, key: &str, value_head: &[u8], value: &[u8]) {
    let mut head = [0; 24];
    let mut cursor = Cursor { buf: &mut head, pos: 0 };
    put_tag(&mut cursor, SPAN_ATTRIBUTES, LEN);
    put_varint(&mut cursor, (string_field_len(KEY_VALUE_KEY, key) + value_head.len() + value.len()) as u64);
    if !key.is_empty() {
        put_tag(&mut cursor, KEY_VALUE_KEY, LEN);
        put_varint(&mut cursor, key.len() as u64);
    }
    let len = cursor.pos;
    buf.reserve(len + key.len() + value_head.len() + value.len());
    buf.extend_from_slice(&head[..len]);
    buf.extend_from_slice(key.as_bytes());
    buf.extend_from_slice(value_head);
    buf.extend_from_slice(value);
}

/// The attributes [`put_field_string`] and [`put_field_scalar`] wrote into `fields`, in order.
pub(crate) fn read_fields(fields: &[u8]) -> impl Iterator<Item = (&str, AttrView<'_>)> {
    let mut reader = Reader { bytes: fields, pos: 0 };
    std::iter::from_fn(move || {
        let (SPAN_ATTRIBUTES, LEN) = reader.tag()? else { return None };
        read_key_value(reader.len_delimited()?)
    })
}

fn read_key_value(bytes: &[u8]) -> Option<(&str, AttrView<'_>)> {
    let mut reader = Reader { bytes, pos: 0 };
    let mut key = "";
    let mut value = None;
    while let Some((field, wire_type)) = reader.tag() {
        match (field, wire_type) {
            (KEY_VALUE_KEY, LEN) => key = std::str::from_utf8(reader.len_delimited()?).ok()?,
            (KEY_VALUE_VALUE, LEN) => {
                let mut any = Reader { bytes: reader.len_delimited()?, pos: 0 };
                value = Some(match any.tag()? {
                    (ANY_STRING, LEN) => AttrView::Str(std::str::from_utf8(any.len_delimited()?).ok()?),
                    (ANY_INT, VARINT) => AttrView::Scalar(Scalar::I64(any.varint()? as i64)),
                    (ANY_BOOL, VARINT) => AttrView::Scalar(Scalar::Bool(any.varint()? != 0)),
                    (ANY_DOUBLE, FIXED64) => {
                        let bits = any.bytes.get(any.pos..any.pos + 8)?;
                        AttrView::Scalar(Scalar::F64(f64::from_le_bytes(bits.try_into().ok()?)))
                    }
                    _ => return None,
                });
            }
            _ => reader.skip(wire_type)?,
        }
    }
    Some((key, value?))
}

/// Any other value (arrays, and what `put_span` does not write itself): out of line, as it is
/// rare on a service's spans.
#[cold]
#[inline(never)]
fn put_key_value(buf: &mut impl Out, field: u32, key: &str, value: &Value) {
    put_tag(buf, field, LEN);
    put_varint(buf, key_value_len(key, value) as u64);
    put_string(buf, KEY_VALUE_KEY, key);
    put_tag(buf, KEY_VALUE_VALUE, LEN);
    put_varint(buf, any_value_len(value) as u64);
    put_any_value(buf, value);
}

/// A oneof member is written even when it holds its type's default (`""`, `false`, `0`).
fn any_string_len(value: &str) -> usize {
    field_len(ANY_STRING, value.len())
}

fn any_value_len(value: &Value) -> usize {
    match value {
        Value::Bool(_) => tag_len(ANY_BOOL) + 1,
        Value::I64(v) => tag_len(ANY_INT) + varint_len(*v as u64),
        Value::F64(_) => tag_len(ANY_DOUBLE) + 8,
        Value::String(s) => any_string_len(s.as_str()),
        Value::Array(array) => field_len(ANY_ARRAY, array_len(array)),
        // A kind added to `Value` after this was written: sent as its string form.
        other => any_string_len(&other.as_str()),
    }
}

fn put_any_value(buf: &mut impl Out, value: &Value) {
    match value {
        Value::Bool(v) => {
            put_tag(buf, ANY_BOOL, VARINT);
            put_varint(buf, u64::from(*v));
        }
        Value::I64(v) => {
            put_tag(buf, ANY_INT, VARINT);
            // int64 is the two's complement as a varint, so negatives take ten bytes.
            put_varint(buf, *v as u64);
        }
        Value::F64(v) => {
            put_tag(buf, ANY_DOUBLE, FIXED64);
            buf.put_slice(&v.to_le_bytes());
        }
        Value::String(s) => put_message(buf, ANY_STRING, s.as_str().as_bytes()),
        Value::Array(array) => {
            put_tag(buf, ANY_ARRAY, LEN);
            put_varint(buf, array_len(array) as u64);
            put_array(buf, array);
        }
        other => put_message(buf, ANY_STRING, other.as_str().as_bytes()),
    }
}

/// The `ArrayValue` payload: one `AnyValue` message per element.
fn array_len(array: &Array) -> usize {
    fn each<T>(items: &[T], len: impl Fn(&T) -> usize) -> usize {
        items.iter().map(|item| field_len(ARRAY_VALUES, len(item))).sum()
    }
    match array {
        Array::Bool(items) => each(items, |_| tag_len(ANY_BOOL) + 1),
        Array::I64(items) => each(items, |v| tag_len(ANY_INT) + varint_len(*v as u64)),
        Array::F64(items) => each(items, |_| tag_len(ANY_DOUBLE) + 8),
        Array::String(items) => each(items, |s: &StringValue| any_string_len(s.as_str())),
        other => field_len(ARRAY_VALUES, any_string_len(&other.to_string())),
    }
}

fn put_array(buf: &mut impl Out, array: &Array) {
    match array {
        Array::Bool(items) => {
            for v in items {
                put_element(buf, &Value::Bool(*v));
            }
        }
        Array::I64(items) => {
            for v in items {
                put_element(buf, &Value::I64(*v));
            }
        }
        Array::F64(items) => {
            for v in items {
                put_element(buf, &Value::F64(*v));
            }
        }
        Array::String(items) => {
            for s in items {
                put_tag(buf, ARRAY_VALUES, LEN);
                put_varint(buf, any_string_len(s.as_str()) as u64);
                put_message(buf, ANY_STRING, s.as_str().as_bytes());
            }
        }
        other => {
            let text = other.to_string();
            put_tag(buf, ARRAY_VALUES, LEN);
            put_varint(buf, any_string_len(&text) as u64);
            put_message(buf, ANY_STRING, text.as_bytes());
        }
    }
}

fn put_element(buf: &mut impl Out, value: &Value) {
    put_tag(buf, ARRAY_VALUES, LEN);
    put_varint(buf, any_value_len(value) as u64);
    put_any_value(buf, value);
}

/// What an `ExportTraceServiceResponse` says was rejected: `(rejected_spans, error_message)`,
/// or `None` when it has no `partial_success` (everything accepted) or cannot be read.
pub(crate) fn decode_partial_success(bytes: &[u8]) -> Option<(i64, String)> {
    let mut reader = Reader { bytes, pos: 0 };
    let mut partial = None;
    while let Some((field, wire_type)) = reader.tag() {
        match (field, wire_type) {
            (1, LEN) => {
                let mut inner = Reader { bytes: reader.len_delimited()?, pos: 0 };
                let (mut rejected, mut message) = (0, String::new());
                while let Some((field, wire_type)) = inner.tag() {
                    match (field, wire_type) {
                        (1, VARINT) => rejected = inner.varint()? as i64,
                        (2, LEN) => message = String::from_utf8_lossy(inner.len_delimited()?).into_owned(),
                        (_, wire_type) => inner.skip(wire_type)?,
                    }
                }
                partial = Some((rejected, message));
            }
            (_, wire_type) => reader.skip(wire_type)?,
        }
    }
    partial.filter(|(rejected, message)| *rejected != 0 || !message.is_empty())
}

/// A bounds-checked protobuf reader for the little the exporter decodes.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.bytes.get(self.pos)?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Some(value);
            }
        }
        None
    }

    fn tag(&mut self) -> Option<(u32, u32)> {
        if self.pos >= self.bytes.len() {
            return None;
        }
        let tag = u32::try_from(self.varint()?).ok()?;
        Some((tag >> 3, tag & 7))
    }

    fn len_delimited(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        let end = self.pos.checked_add(len).filter(|end| *end <= self.bytes.len())?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Some(slice)
    }

    fn skip(&mut self, wire_type: u32) -> Option<()> {
        let advance = match wire_type {
            VARINT => return self.varint().map(|_| ()),
            FIXED64 => 8,
            LEN => return self.len_delimited().map(|_| ()),
            FIXED32 => 4,
            _ => return None,
        };
        let end = self.pos.checked_add(advance).filter(|end| *end <= self.bytes.len())?;
        self.pos = end;
        Some(())
    }
}

#[cfg(test)]
mod tests {
    //! The encoder against opentelemetry-proto: its prost types decode what we write, and
    //! what they decode equals opentelemetry-proto's own conversion of the same spans.

    use super::*;
    use std::borrow::Cow;
    use std::time::{Duration, UNIX_EPOCH};

    use opentelemetry::trace::{SpanContext, TraceFlags, TraceId};
    use opentelemetry::Key;
    use opentelemetry::KeyValue;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Status as ProtoStatus};
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
    use proptest::prelude::*;
    use prost::Message;

    fn scope(name: &'static str) -> InstrumentationScope {
        InstrumentationScope::builder(name)
            .with_version("1.2.3")
            .with_schema_url("https://opentelemetry.io/schemas/1.26.0")
            .with_attributes([KeyValue::new("scope.attr", 7_i64)])
            .build()
    }

    fn span(n: u64, scope: InstrumentationScope) -> SpanData {
        let start = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789 + n);
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736_u128 + u128::from(n)),
                SpanId::from(0x00f0_67aa_0ba9_02b7 + n),
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent_span_id: SpanId::from(n + 1),
            parent_span_is_remote: n.is_multiple_of(2),
            span_kind: SpanKind::Server,
            name: Cow::Owned(format!("GET /stocks/{n}")),
            start_time: start,
            end_time: start + Duration::from_micros(1500),
            attributes: vec![
                KeyValue::new("http.request.method", "GET"),
                KeyValue::new("http.response.status_code", 200_i64),
                KeyValue::new("negative", -42_i64),
                KeyValue::new("ratio", 0.25),
                KeyValue::new("flag", true),
                KeyValue::new("off", false),
                KeyValue::new("empty", ""),
                KeyValue::new("unicode", "株価 📈"),
            ],
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: scope,
        }
    }

    fn rich_span() -> SpanData {
        let mut s = span(99, scope("spindle-sdk"));
        s.span_context = SpanContext::new(
            TraceId::from(7u128),
            SpanId::from(8u64),
            TraceFlags::SAMPLED,
            true,
            TraceState::from_key_value([("vendor", "abc"), ("other", "xy")]).expect("valid trace state"),
        );
        s.parent_span_id = SpanId::from(5u64);
        s.parent_span_is_remote = true;
        s.span_kind = SpanKind::Consumer;
        s.dropped_attributes_count = 3;
        s.attributes.push(KeyValue::new(
            "strings",
            Value::Array(Array::String(vec![StringValue::from("a"), StringValue::from("")])),
        ));
        s.attributes.push(KeyValue::new("ints", Value::Array(Array::I64(vec![1, -1, i64::MAX, i64::MIN]))));
        s.attributes.push(KeyValue::new("floats", Value::Array(Array::F64(vec![0.0, -1.5, f64::MAX]))));
        s.attributes.push(KeyValue::new("bools", Value::Array(Array::Bool(vec![true, false]))));
        s.attributes.push(KeyValue::new("empty_array", Value::Array(Array::I64(vec![]))));
        let mut exception = opentelemetry::trace::Event::new(
            "exception",
            UNIX_EPOCH + Duration::from_secs(1_700_000_001),
            vec![
                KeyValue::new("exception.type", "io::Error"),
                KeyValue::new("exception.message", "connection refused"),
            ],
            2,
        );
        exception.name = Cow::Borrowed("exception");
        s.events = SpanEvents::default();
        s.events.events.push(exception);
        s.events.events.push(opentelemetry::trace::Event::with_name("retry"));
        s.events.dropped_count = 5;
        s.links = SpanLinks::default();
        s.links.links.push(opentelemetry::trace::Link::new(
            SpanContext::new(
                TraceId::from(11u128),
                SpanId::from(12u64),
                TraceFlags::default(),
                true,
                TraceState::from_key_value([("k", "v")]).expect("valid trace state"),
            ),
            vec![KeyValue::new("messaging.batch", 1_i64)],
            4,
        ));
        s.links.dropped_count = 6;
        s.status = Status::error("payment declined");
        s
    }

    fn resource() -> Resource {
        Resource::builder_empty()
            .with_schema_url([KeyValue::new("service.name", "clstock-api")], "https://example.com/schema")
            .with_attributes([KeyValue::new("deployment.environment.name", "prod")])
            .build()
    }

    /// opentelemetry-proto's conversion, in the shape our encoder produces: scopes in order of
    /// first appearance and an unset status written as no status (both mean the same).
    fn expected(batch: &[SpanData], resource: &Resource) -> Vec<ResourceSpans> {
        // A record holds the attributes of `tracing` fields (strings and scalars) encoded,
        // ahead of the others.
        let mut batch = batch.to_vec();
        for span in &mut batch {
            span.attributes.sort_by_key(|kv| matches!(kv.value, Value::Array(_)));
        }
        let batch = &batch[..];
        let mut expected =
            group_spans_by_resource_and_scope(batch.to_vec(), &ResourceAttributesWithSchema::from(resource));
        for rs in &mut expected {
            let order = |name: &str| batch.iter().position(|s| s.instrumentation_scope.name() == name);
            rs.scope_spans.sort_by_key(|ss| order(&ss.scope.as_ref().map(|s| s.name.clone()).unwrap_or_default()));
        }
        normalize(expected)
    }

    fn normalize(mut resource_spans: Vec<ResourceSpans>) -> Vec<ResourceSpans> {
        for rs in &mut resource_spans {
            for ss in &mut rs.scope_spans {
                for span in &mut ss.spans {
                    if span.status == Some(ProtoStatus::default()) {
                        span.status = None;
                    }
                }
            }
        }
        resource_spans
    }

    /// The records the SDK would make of `batch`, string attributes in the record's text
    /// buffer as the layer writes them.
    #[allow(clippy::vec_box)] // the encoder takes records as the queue holds them
    fn records(batch: &[SpanData]) -> Vec<Box<SpanRecord>> {
        batch
            .iter()
            .cloned()
            .map(|span| {
                let mut record = Box::new(SpanRecord::from_span_data(span));
                let attrs = std::mem::take(&mut record.attrs);
                for attr in attrs {
                    let key = attr.key.as_str();
                    match attr.value {
                        AttrValue::Value(Value::String(s)) => record.push_field_str(key, s.as_str()),
                        AttrValue::Value(Value::I64(v)) => record.push_field_scalar(key, Scalar::I64(v)),
                        AttrValue::Value(Value::F64(v)) => record.push_field_scalar(key, Scalar::F64(v)),
                        AttrValue::Value(Value::Bool(v)) => record.push_field_scalar(key, Scalar::Bool(v)),
                        value => record.push_attr(attr.key, value),
                    }
                }
                record
            })
            .collect()
    }

    fn decode(bytes: &[u8]) -> Vec<ResourceSpans> {
        normalize(ExportTraceServiceRequest::decode(bytes).expect("valid protobuf").resource_spans)
    }

    #[test]
    fn every_field_matches_opentelemetry_proto() {
        let resource = resource();
        let mut root = span(1, scope("spindle-sdk"));
        root.parent_span_id = SpanId::INVALID;
        let batch = vec![
            root,
            rich_span(),
            span(2, InstrumentationScope::builder("other-lib").build()),
            span(3, scope("spindle-sdk")),
        ];
        let mut encoder = TraceRequestEncoder::new(&resource);
        let bytes = encoder.encode(&records(&batch));
        let decoded = decode(&bytes);
        assert_eq!(decoded, expected(&batch, &resource));
        let spans = &decoded[0].scope_spans;
        assert_eq!(spans.len(), 2, "two scopes");
        assert_eq!(spans[0].spans.len(), 3, "spindle-sdk spans grouped together");
        let rich = &spans[0].spans[1];
        assert_eq!(rich.flags, 0x301, "sampled, remote parent known and set");
        assert_eq!(rich.trace_state, "vendor=abc,other=xy");
        assert_eq!(rich.events[0].attributes.len(), 2);
        assert_eq!(rich.links[0].flags, 0x300);
        assert_eq!(rich.status.as_ref().map(|s| s.message.as_str()), Some("payment declined"));
    }

    /// Spans the layer encoded one by one make the same request as their records.
    #[test]
    fn spans_encoded_by_the_layer_join_into_the_same_request() {
        let resource = resource();
        let mut batch = records(&[span(1, scope("x")), rich_span(), span(2, scope("x"))]);
        for record in &mut batch {
            record.scope = None;
        }
        let other = records(&[span(3, scope("other-lib"))]);
        let (mut entries, mut scratch) = (Vec::new(), Vec::new());
        for record in &batch {
            encode_span_entry(&mut entries, &mut scratch, record);
        }
        let mut encoder = TraceRequestEncoder::new(&resource);
        let joined = decode(&encoder.encode_batch(&entries, &other));
        let all: Vec<Box<SpanRecord>> = batch.iter().chain(&other).cloned().collect();
        assert_eq!(joined, decode(&encoder.encode(&all)));
        assert_eq!(joined[0].scope_spans[0].scope.as_ref().map(|s| s.name.as_str()), Some("spindle-sdk"));
        assert_eq!(joined[0].scope_spans[0].spans.len(), 3);
    }

    /// A span entry as written without a bound: the fields into a buffer of their own, then
    /// copied behind their length.
    fn entry_without_bound(record: &SpanRecord) -> Vec<u8> {
        let mut fields = Vec::new();
        put_span(&mut fields, record);
        let mut entry = Vec::new();
        put_message(&mut entry, SCOPE_SPANS_SPANS, &fields);
        entry
    }

    fn entry(record: &SpanRecord) -> Vec<u8> {
        // Behind bytes already there, as in the layer's buffer.
        let (mut out, mut scratch) = (vec![7_u8; 3], Vec::new());
        encode_span_entry(&mut out, &mut scratch, record);
        assert_eq!(out[..3], [7, 7, 7], "what was there stays");
        out.split_off(3)
    }

    /// Field attributes written from a four-byte head are the bytes the general writer gives,
    /// on both sides of the one-byte lengths' limits.
    #[test]
    fn short_field_attributes_are_the_same_bytes_as_through_the_general_writer() {
        let text = "k".repeat(200);
        for key_len in [0, 1, 60, 120, 125, 126, 127, 130] {
            for value_len in 0..=130 {
                let (key, value) = (&text[..key_len], &text[..value_len]);
                let (mut short, mut long) = (vec![1_u8], vec![1_u8]);
                put_field_string(&mut short, key, value);
                put_long_field_string(&mut long, key, value);
                assert_eq!(short, long, "key {key_len} value {value_len}");
                let (mut short, mut long) = (Vec::new(), Vec::new());
                put_field(&mut short, key, &[1, 2], value.as_bytes());
                put_long_field(&mut long, key, &[1, 2], value.as_bytes());
                assert_eq!(short, long, "key {key_len} value {value_len}");
            }
        }
    }

    /// Plain spans, written straight through, are the bytes the general path writes: with
    /// and without a parent and a name, remote parents, and fields long enough for a two-byte
    /// entry length. Dropped attributes and names of 128 bytes and more take the general path.
    #[test]
    fn plain_spans_are_the_same_bytes_as_through_the_general_path() {
        let long_name = "n".repeat(128);
        for (parent, name, remote, dropped, fields) in [
            (0, "", false, 0, 0),
            (3, "op", true, 0, 2),
            (0, "GET /x", false, 5, 9),
            (9, "n", false, 0, 40),
            (9, &long_name[1..], false, 0, 1),
            (9, &long_name[..], false, 0, 1),
        ] {
            let mut record = SpanRecord::new("", 0, 0);
            record.name = record.push_text(name);
            record.trace_id = TraceId::from(0x0102_u128 << 64 | 7);
            record.span_id = SpanId::from(11_u64);
            record.parent_span_id = SpanId::from(parent);
            record.parent_is_remote = remote;
            record.flags = TraceFlags::SAMPLED;
            record.kind = SpanKind::Consumer;
            record.start = 1_700_000_000_123_456_789;
            record.end = record.start + 250_000;
            record.dropped_attrs = dropped;
            for i in 0..fields {
                record.push_field_str("symbol", "AAPL");
                record.push_field_scalar("i", Scalar::I64(-i));
            }
            assert!(is_plain(&record));
            let mut out = vec![9_u8; 4];
            match write_plain_entry(&mut out, 4, &record) {
                Some(len) => {
                    assert!(dropped == 0 && name.len() < 128, "{name}: written straight through");
                    assert_eq!(out[4..4 + len], entry_without_bound(&record)[..], "{name} with {fields} fields");
                    assert_eq!(out[..4], [9; 4]);
                }
                None => assert!(dropped > 0 || name.len() >= 128, "{name}: left to the general path"),
            }
            assert_eq!(entry(&record), entry_without_bound(&record));
        }
    }

    /// Spans written into room made for their bound are the same bytes as spans written
    /// without one: with a one- and a two-byte length, events, an error status, text values.
    #[test]
    fn spans_written_into_bounded_room_are_the_same_bytes() {
        let mut tiny = span(1, scope("x"));
        tiny.attributes.clear();
        tiny.name = "t".into();
        let mut with_events = rich_span();
        with_events.links = SpanLinks::default();
        with_events.span_context =
            SpanContext::new(TraceId::from(7u128), SpanId::from(8u64), TraceFlags::SAMPLED, true, TraceState::NONE);
        with_events.attributes.retain(|kv| !matches!(kv.value, Value::Array(_)));
        let mut long = span(2, scope("x"));
        long.attributes.push(KeyValue::new("long", "x".repeat(3000)));
        let mut records = records(&[tiny, span(3, scope("x")), with_events, long]);
        records[1].push_text_attr(Key::from_static_str("text"), "a text value");
        for record in &records {
            assert!(span_bound(record).is_some(), "{} is written into bounded room", record.name());
            assert_eq!(entry(record), entry_without_bound(record), "{}", record.name());
        }
        assert!(entry(&records[0]).len() < 0x80 + 2, "the tiny span has a one-byte length");
        // Links and trace state are written without a bound.
        let rich = &self::records(&[rich_span()])[0];
        assert!(span_bound(rich).is_none());
        assert_eq!(entry(rich), entry_without_bound(rich));
    }

    /// The layer's kept buffer: each entry written over the bytes of a longer one before it
    /// reads back as the entry alone.
    #[test]
    fn entries_written_over_a_kept_buffer_are_the_same_bytes() {
        let mut long = span(2, scope("x"));
        long.attributes.push(KeyValue::new("long", "x".repeat(3000)));
        let mut huge = span(4, scope("x"));
        huge.attributes.push(KeyValue::new("huge", "y".repeat(20_000)));
        let records = records(&[long, span(1, scope("x")), huge, rich_span(), span(3, scope("x"))]);
        let (mut kept, mut scratch) = (vec![0xff_u8; 64], Vec::new());
        for record in &records {
            let len = write_span_entry(&mut kept, 0, &mut scratch, record);
            assert_eq!(kept[..len], entry(record)[..], "{}", record.name());
        }
    }

    #[test]
    fn buffers_are_reused_without_leaking_spans_between_batches() {
        let resource = resource();
        let mut encoder = TraceRequestEncoder::new(&resource);
        let first = vec![span(1, scope("a")), span(2, scope("b"))];
        let second = vec![span(3, scope("b"))];
        encoder.encode(&records(&first));
        let decoded = decode(&encoder.encode(&records(&second)));
        assert_eq!(decoded, expected(&second, &resource));
        assert_eq!(decoded[0].scope_spans.len(), 1, "scope a is not carried over");
        assert!(encoder.encode(&[]).len() < 200, "an empty batch is a resource only");
    }

    #[test]
    fn set_resource_replaces_the_resource() {
        let mut encoder = TraceRequestEncoder::new(&resource());
        let other = Resource::builder_empty().with_attributes([KeyValue::new("service.name", "x")]).build();
        encoder.set_resource(&other);
        let batch = vec![span(1, scope("a"))];
        assert_eq!(decode(&encoder.encode(&records(&batch))), expected(&batch, &other));
    }

    #[test]
    fn varint_lengths_match_the_encoding() {
        for value in [0, 1, 127, 128, 16_383, 16_384, u64::from(u32::MAX), u64::MAX] {
            let mut buf = Vec::new();
            put_varint(&mut buf, value);
            assert_eq!(buf.len(), varint_len(value), "{value}");
            assert_eq!(Reader { bytes: &buf, pos: 0 }.varint(), Some(value));
        }
    }

    #[test]
    fn partial_success_is_read_and_malformed_answers_are_ignored() {
        use opentelemetry_proto::tonic::collector::trace::v1::{ExportTracePartialSuccess, ExportTraceServiceResponse};
        let answer = ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: 3,
                error_message: "span id is zero".to_owned(),
            }),
        }
        .encode_to_vec();
        assert_eq!(decode_partial_success(&answer), Some((3, "span id is zero".to_owned())));
        assert_eq!(decode_partial_success(&[]), None, "empty answer: all accepted");
        let empty_partial = ExportTraceServiceResponse { partial_success: Some(Default::default()) };
        assert_eq!(decode_partial_success(&empty_partial.encode_to_vec()), None);
        for cut in 0..answer.len() {
            // Truncated answers never panic and never invent rejections.
            assert_ne!(decode_partial_success(&answer[..cut]), Some((3, "span id is zero".to_owned())));
        }
        assert_eq!(decode_partial_success(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(decode_partial_success(&[0x0f]), None, "wire type 7 does not exist");
    }

    fn value_strategy() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::I64),
            any::<f64>().prop_filter("NaN never equals itself", |f| !f.is_nan()).prop_map(Value::F64),
            ".{0,40}".prop_map(|s: String| Value::String(s.into())),
            prop::collection::vec(any::<i64>(), 0..5).prop_map(|v| Value::Array(Array::I64(v))),
            prop::collection::vec(".{0,8}", 0..5)
                .prop_map(|v| Value::Array(Array::String(v.into_iter().map(StringValue::from).collect()))),
        ]
    }

    proptest! {
        #[test]
        fn any_span_matches_opentelemetry_proto(
            name in ".{0,60}",
            attributes in prop::collection::vec(("[a-z._]{0,20}", value_strategy()), 0..12),
            start in any::<u64>(),
            length in 0u64..1_000_000_000,
            trace_id in 1u128..,
            span_id in 1u64..,
            parent in any::<u64>(),
            kind in 0usize..5,
            status in 0usize..3,
            dropped in any::<u32>(),
        ) {
            let mut s = span(0, scope("p"));
            s.name = name.into();
            s.attributes = attributes.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect();
            s.start_time = UNIX_EPOCH + Duration::from_nanos(start / 2);
            s.end_time = s.start_time + Duration::from_nanos(length);
            s.span_context = SpanContext::new(TraceId::from(trace_id), SpanId::from(span_id), TraceFlags::SAMPLED, false, TraceState::NONE);
            s.parent_span_id = SpanId::from(parent);
            s.span_kind = [SpanKind::Internal, SpanKind::Server, SpanKind::Client, SpanKind::Producer, SpanKind::Consumer][kind].clone();
            s.status = [Status::Unset, Status::Ok, Status::error("boom")][status].clone();
            s.dropped_attributes_count = dropped;
            let batch = vec![s];
            let resource = resource();
            let records = records(&batch);
            prop_assert_eq!(entry(&records[0]), entry_without_bound(&records[0]));
            let bytes = TraceRequestEncoder::new(&resource).encode(&records);
            prop_assert_eq!(decode(&bytes), expected(&batch, &resource));
        }
    }
}
