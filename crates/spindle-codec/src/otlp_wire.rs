//! OTLP `ExportTraceServiceRequest` protobuf decoded straight into model spans.
//!
//! The receivers' hot path. Decoding with the generated `opentelemetry-proto` types and then
//! converting them built every span twice — a tree of prost structs (a `Vec` per id, a
//! `String` per key and value, an `Option<AnyValue>` per attribute), then the model's — and
//! freed the first; with the buffer handling under it that was most of a receiver thread's
//! time at full ingest (docs/adr/005-otlp-decoded-from-the-wire.md). Here the wire format
//! (`opentelemetry/proto/trace/v1/trace.proto`, `common/v1/common.proto`,
//! `resource/v1/resource.proto`, `collector/trace/v1/trace_service.proto`) is read from one
//! contiguous slice into the model directly: ids are copied into their fixed-size types,
//! strings allocated once.
//!
//! Architecture Invariant: for every input this returns what
//! [`crate::otlp::decode_request_prost`] (prost + [`crate::otlp::request_to_spans`]) returns
//! — the same spans, rejections and reasons, and an error exactly when prost fails. Protobuf
//! semantics that make this true: fields may come in any order and repeat (a scalar's last
//! value wins, a singular message's occurrences merge, repeated fields append), unknown fields
//! of every wire type including groups are skipped, strings must be UTF-8, and messages nest
//! at most [`RECURSION_LIMIT`] deep, counted as prost counts. The differential property tests
//! (`tests/otlp_wire.rs`) and the `otlp_proto` fuzz target check it.

use std::sync::Arc;

use spindle_model::{
    AttributeValue, Event, KeyValue, Link, Resource, Scope, Span, SpanId, SpanKind, Status, StatusCode, Text, TraceId,
};

use crate::{CodecError, Decoded};

/// prost's `RECURSION_LIMIT`: how many message levels below the request may be entered.
pub const RECURSION_LIMIT: u32 = 100;

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

/// A decoding failure: what was wrong, for the client's error message.
#[derive(Debug)]
struct WireError(&'static str);

type Result<T> = std::result::Result<T, WireError>;

/// Reads protobuf fields from one message's bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else { return Err(WireError("truncated varint")) };
            self.pos += 1;
            // The tenth byte may only carry the top bit of a u64.
            if i == 9 && b > 1 {
                return Err(WireError("invalid varint"));
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err(WireError("invalid varint"))
    }

    /// A field key: (field number, wire type).
    fn key(&mut self) -> Result<(u32, u8)> {
        let key = self.varint()?;
        if key > u64::from(u32::MAX) {
            return Err(WireError("invalid key"));
        }
        let wire = (key & 7) as u8;
        if wire > FIXED32 {
            return Err(WireError("invalid wire type"));
        }
        let field = (key as u32) >> 3;
        if field == 0 {
            return Err(WireError("invalid field number 0"));
        }
        Ok((field, wire))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.buf.len() - self.pos {
            return Err(WireError("field runs past the end of its message"));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn fixed64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| WireError("truncated fixed64"))?))
    }

    fn fixed32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().map_err(|_| WireError("truncated fixed32"))?))
    }

    fn len_delimited(&mut self) -> Result<&'a [u8]> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| WireError("length too large"))?;
        self.take(len)
    }

    /// Skips a field this decoder does not read; `ctx` as prost's `skip_field` gets it.
    fn skip(&mut self, field: u32, wire: u8, ctx: u32) -> Result<()> {
        if ctx == 0 {
            return Err(WireError("recursion limit reached"));
        }
        match wire {
            VARINT => self.varint().map(drop),
            FIXED64 => self.take(8).map(drop),
            FIXED32 => self.take(4).map(drop),
            LEN => self.len_delimited().map(drop),
            START_GROUP => loop {
                let (inner, inner_wire) = self.key()?;
                if inner_wire == END_GROUP {
                    if inner != field {
                        return Err(WireError("unexpected end group tag"));
                    }
                    return Ok(());
                }
                self.skip(inner, inner_wire, ctx - 1)?;
            },
            _ => Err(WireError("unexpected end group tag")),
        }
    }
}

/// Reads every field of one message: `read` takes the fields it knows (returning true), the
/// others are skipped as prost skips unknown fields (with the message's `ctx`).
fn fields<'a>(buf: &'a [u8], ctx: u32, mut read: impl FnMut(&mut Reader<'a>, u32, u8) -> Result<bool>) -> Result<()> {
    let mut r = Reader::new(buf);
    while !r.done() {
        let (field, wire) = r.key()?;
        if !read(&mut r, field, wire)? {
            r.skip(field, wire, ctx)?;
        }
    }
    Ok(())
}

fn expect(wire: u8, want: u8) -> Result<()> {
    if wire == want {
        Ok(())
    } else {
        Err(WireError("field has the wrong wire type"))
    }
}

/// A string field as `String` or the model's inline `Text`.
fn string<T: for<'s> From<&'s str>>(r: &mut Reader<'_>, wire: u8) -> Result<T> {
    utf8(r, wire).map(T::from)
}

fn utf8<'a>(r: &mut Reader<'a>, wire: u8) -> Result<&'a str> {
    std::str::from_utf8(bytes(r, wire)?).map_err(|_| WireError("string is not UTF-8"))
}

fn bytes<'a>(r: &mut Reader<'a>, wire: u8) -> Result<&'a [u8]> {
    expect(wire, LEN)?;
    r.len_delimited()
}

fn varint(r: &mut Reader<'_>, wire: u8) -> Result<u64> {
    expect(wire, VARINT)?;
    r.varint()
}

fn fixed64(r: &mut Reader<'_>, wire: u8) -> Result<u64> {
    expect(wire, FIXED64)?;
    r.fixed64()
}

fn fixed32(r: &mut Reader<'_>, wire: u8) -> Result<u32> {
    expect(wire, FIXED32)?;
    r.fixed32()
}

/// The bytes of a nested message at the reader, checked as prost's `message::merge` does
/// before entering it: the fields inside are then read with `ctx - 1`.
fn message<'a>(r: &mut Reader<'a>, wire: u8, ctx: u32) -> Result<&'a [u8]> {
    expect(wire, LEN)?;
    if ctx == 0 {
        return Err(WireError("recursion limit reached"));
    }
    r.len_delimited()
}

/// Reads the nested message at the reader with `read`, one level deeper.
fn nested<'a, T>(r: &mut Reader<'a>, wire: u8, ctx: u32, read: impl FnOnce(&'a [u8], u32) -> Result<T>) -> Result<T> {
    let inner = message(r, wire, ctx)?;
    read(inner, ctx - 1)
}

/// An `AnyValue` being merged: its oneof as prost holds it.
#[derive(Default)]
enum Value {
    #[default]
    Unset,
    Some(AttributeValue),
    /// `string_value_strindex` (profiles only): no value for traces.
    Strindex,
}

impl Value {
    fn finish(self) -> Option<AttributeValue> {
        match self {
            Value::Some(v) => Some(v),
            Value::Unset | Value::Strindex => None,
        }
    }
}

/// Merges one `AnyValue` message into `value`. A repeated occurrence of the array or map
/// variant merges into the one already there; any other replaces it.
fn any_value(buf: &[u8], ctx: u32, value: &mut Value) -> Result<()> {
    fields(buf, ctx, |r, field, wire| {
        match field {
            1 => *value = Value::Some(AttributeValue::String(string(r, wire)?)),
            2 => *value = Value::Some(AttributeValue::Bool(varint(r, wire)? != 0)),
            3 => *value = Value::Some(AttributeValue::Int(varint(r, wire)? as i64)),
            4 => *value = Value::Some(AttributeValue::Double(f64::from_bits(fixed64(r, wire)?))),
            5 => {
                let mut items = match std::mem::take(value) {
                    Value::Some(AttributeValue::Array(items)) => items,
                    _ => Vec::new(),
                };
                nested(r, wire, ctx, |b, ctx| array_value(b, ctx, &mut items))?;
                *value = Value::Some(AttributeValue::Array(items));
            }
            6 => {
                let mut entries = match std::mem::take(value) {
                    Value::Some(AttributeValue::Map(entries)) => entries,
                    _ => Vec::new(),
                };
                nested(r, wire, ctx, |b, ctx| key_value_list(b, ctx, &mut entries))?;
                *value = Value::Some(AttributeValue::Map(entries));
            }
            7 => *value = Value::Some(AttributeValue::Bytes(bytes(r, wire)?.to_vec())),
            8 => {
                varint(r, wire)?;
                *value = Value::Strindex;
            }
            _ => return Ok(false),
        }
        Ok(true)
    })
}

/// Appends the values of one `ArrayValue` message (empty ones are left out, as the
/// conversion from prost types leaves them out).
fn array_value(buf: &[u8], ctx: u32, items: &mut Vec<AttributeValue>) -> Result<()> {
    fields(buf, ctx, |r, field, wire| {
        if field != 1 {
            return Ok(false);
        }
        let mut value = Value::Unset;
        nested(r, wire, ctx, |b, ctx| any_value(b, ctx, &mut value))?;
        items.extend(value.finish());
        Ok(true)
    })
}

/// Appends the entries of one `KeyValueList` message.
fn key_value_list(buf: &[u8], ctx: u32, entries: &mut Vec<KeyValue>) -> Result<()> {
    fields(buf, ctx, |r, field, wire| {
        if field != 1 {
            return Ok(false);
        }
        attribute(r, wire, ctx, entries)?;
        Ok(true)
    })
}

/// One `KeyValue` message, appended unless it has no value.
fn key_value(buf: &[u8], ctx: u32, into: &mut Vec<KeyValue>) -> Result<()> {
    let mut key = Text::default();
    let mut value = Value::Unset;
    fields(buf, ctx, |r, field, wire| {
        match field {
            1 => key = string(r, wire)?,
            2 => nested(r, wire, ctx, |b, ctx| any_value(b, ctx, &mut value))?,
            3 => drop(varint(r, wire)?), // key_strindex: profiles only
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    into.extend(value.finish().map(|value| KeyValue { key, value }));
    Ok(())
}

/// Reads a nested `KeyValue` (a field `attributes` of some message) into `into`.
fn attribute(r: &mut Reader<'_>, wire: u8, ctx: u32, into: &mut Vec<KeyValue>) -> Result<()> {
    nested(r, wire, ctx, |b, ctx| key_value(b, ctx, into))
}

/// Validates an `EntityRef` (resource field 3), which the model does not keep.
fn entity_ref(buf: &[u8], ctx: u32) -> Result<()> {
    fields(buf, ctx, |r, field, wire| {
        match field {
            1..=4 => drop(utf8(r, wire)?),
            _ => return Ok(false),
        }
        Ok(true)
    })
}

fn merge_resource(buf: &[u8], ctx: u32, resource: &mut Resource) -> Result<()> {
    fields(buf, ctx, |r, field, wire| {
        match field {
            1 => attribute(r, wire, ctx, &mut resource.attributes)?,
            2 => resource.dropped_attributes_count = varint(r, wire)? as u32,
            3 => nested(r, wire, ctx, entity_ref)?,
            _ => return Ok(false),
        }
        Ok(true)
    })
}

fn merge_scope(buf: &[u8], ctx: u32, scope: &mut Scope) -> Result<()> {
    fields(buf, ctx, |r, field, wire| {
        match field {
            1 => scope.name = string(r, wire)?,
            2 => scope.version = string(r, wire)?,
            3 => attribute(r, wire, ctx, &mut scope.attributes)?,
            4 => scope.dropped_attributes_count = varint(r, wire)? as u32,
            _ => return Ok(false),
        }
        Ok(true)
    })
}

fn event(buf: &[u8], ctx: u32) -> Result<Event> {
    let mut event = Event::default();
    fields(buf, ctx, |r, field, wire| {
        match field {
            1 => event.time_unix_nano = fixed64(r, wire)?,
            2 => event.name = string(r, wire)?,
            3 => attribute(r, wire, ctx, &mut event.attributes)?,
            4 => event.dropped_attributes_count = varint(r, wire)? as u32,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(event)
}

/// A link, or `None` when its ids have the wrong length (the link is dropped, not the span).
fn link(buf: &[u8], ctx: u32) -> Result<Option<Link>> {
    let (mut trace_id, mut span_id): (&[u8], &[u8]) = (&[], &[]);
    let mut link = Link::default();
    fields(buf, ctx, |r, field, wire| {
        match field {
            1 => trace_id = bytes(r, wire)?,
            2 => span_id = bytes(r, wire)?,
            3 => link.trace_state = string(r, wire)?,
            4 => attribute(r, wire, ctx, &mut link.attributes)?,
            5 => link.dropped_attributes_count = varint(r, wire)? as u32,
            6 => link.flags = fixed32(r, wire)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    let (Ok(t), Ok(s)) = (<[u8; 16]>::try_from(trace_id), <[u8; 8]>::try_from(span_id)) else { return Ok(None) };
    link.trace_id = TraceId::from_bytes(t);
    link.span_id = SpanId::from_bytes(s);
    Ok(Some(link))
}

fn merge_status(buf: &[u8], ctx: u32, status: &mut Status) -> Result<()> {
    fields(buf, ctx, |r, field, wire| {
        match field {
            2 => status.message = string(r, wire)?,
            3 => status.code = StatusCode::from_otlp(varint(r, wire)? as i32),
            _ => return Ok(false),
        }
        Ok(true)
    })
}

/// One `Span` message: the span, or why it is rejected (the same words as the conversion
/// from prost types).
fn span(
    buf: &[u8],
    ctx: u32,
    resource: &Arc<Resource>,
    scope: &Arc<Scope>,
) -> Result<std::result::Result<Span, String>> {
    let (mut trace_id, mut span_id, mut parent): (&[u8], &[u8], &[u8]) = (&[], &[], &[]);
    let mut span = Span { resource: Arc::clone(resource), scope: Arc::clone(scope), ..Span::default() };
    fields(buf, ctx, |r, field, wire| {
        match field {
            1 => trace_id = bytes(r, wire)?,
            2 => span_id = bytes(r, wire)?,
            3 => span.trace_state = string(r, wire)?,
            4 => parent = bytes(r, wire)?,
            5 => span.name = string(r, wire)?,
            6 => span.kind = SpanKind::from_otlp(varint(r, wire)? as i32),
            7 => span.start_time_unix_nano = fixed64(r, wire)?,
            8 => span.end_time_unix_nano = fixed64(r, wire)?,
            9 => attribute(r, wire, ctx, &mut span.attributes)?,
            10 => span.dropped_attributes_count = varint(r, wire)? as u32,
            11 => span.events.push(nested(r, wire, ctx, event)?),
            12 => span.dropped_events_count = varint(r, wire)? as u32,
            13 => span.links.extend(nested(r, wire, ctx, link)?),
            14 => span.dropped_links_count = varint(r, wire)? as u32,
            15 => nested(r, wire, ctx, |b, ctx| merge_status(b, ctx, &mut span.status))?,
            16 => span.flags = fixed32(r, wire)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    let Some(tid) = <[u8; 16]>::try_from(trace_id).ok().map(TraceId::from_bytes).filter(|t| t.is_valid()) else {
        return Ok(Err(format!("span {:?}: trace id must be 16 bytes and not all zero", span.name)));
    };
    let Some(sid) = <[u8; 8]>::try_from(span_id).ok().map(SpanId::from_bytes).filter(|s| s.is_valid()) else {
        return Ok(Err(format!("span {:?}: span id must be 8 bytes and not all zero", span.name)));
    };
    span.parent_span_id = if parent.is_empty() {
        SpanId::INVALID
    } else {
        match <[u8; 8]>::try_from(parent) {
            Ok(p) => SpanId::from_bytes(p),
            Err(_) => return Ok(Err(format!("span {:?}: parent span id must be empty or 8 bytes", span.name))),
        }
    };
    span.trace_id = tid;
    span.span_id = sid;
    Ok(Ok(span))
}

/// A `ResourceSpans` or `ScopeSpans` message: field 1 a singular message (the resource or
/// scope) that applies to every item of the repeated field 2 but may follow them on the
/// wire, field 3 a schema URL. A first pass merges field 1 (and checks the other fields), a
/// second hands each field-2 message, with the merged field 1, to `each` — at the depth of
/// the fields inside it.
fn with_header<'a, H: Default>(
    buf: &'a [u8],
    ctx: u32,
    merge: fn(&[u8], u32, &mut H) -> Result<()>,
    mut each: impl FnMut(&'a [u8], u32, &Arc<H>) -> Result<()>,
) -> Result<()> {
    let mut header = H::default();
    fields(buf, ctx, |r, field, wire| {
        match field {
            1 => nested(r, wire, ctx, |b, ctx| merge(b, ctx, &mut header))?,
            2 => drop(message(r, wire, ctx)?),
            3 => drop(utf8(r, wire)?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    let header = Arc::new(header);
    // The other fields were checked by the first pass: skipping them again cannot fail.
    fields(buf, RECURSION_LIMIT, |r, field, wire| {
        if field != 2 {
            return Ok(false);
        }
        nested(r, wire, ctx, |b, ctx| each(b, ctx, &header))?;
        Ok(true)
    })
}

/// One `ResourceSpans` message: its `ScopeSpans`, each with its `Span`s.
fn resource_spans(buf: &[u8], ctx: u32, out: &mut Decoded) -> Result<()> {
    with_header(buf, ctx, merge_resource, |scope_spans, ctx, resource: &Arc<Resource>| {
        with_header(scope_spans, ctx, merge_scope, |bytes, ctx, scope: &Arc<Scope>| {
            match span(bytes, ctx, resource, scope)? {
                Ok(s) => out.spans.push(s),
                Err(reason) => out.reject(reason),
            }
            Ok(())
        })
    })
}

/// Decodes an `ExportTraceServiceRequest` (or a `TracesData`, which has the same field 1)
/// into spans, rejecting invalid ones as [`crate::otlp::request_to_spans`] does.
pub fn decode_request(bytes: &[u8]) -> std::result::Result<Decoded, CodecError> {
    let mut out = Decoded::default();
    let mut r = Reader::new(bytes);
    let ctx = RECURSION_LIMIT;
    let result = (|| {
        while !r.done() {
            let (field, wire) = r.key()?;
            match field {
                1 => nested(&mut r, wire, ctx, |b, ctx| resource_spans(b, ctx, &mut out))?,
                _ => r.skip(field, wire, ctx)?,
            }
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(out),
        Err(WireError(what)) => Err(CodecError::Protobuf(format!("{what} (at or before byte {})", r.pos))),
    }
}
