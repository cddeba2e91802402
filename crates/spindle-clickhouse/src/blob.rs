//! The `span` column and the rebuilding of spans from a row (ADR 018).
//!
//! Version 2, what appends write: only what the typed columns cannot give back. The ids,
//! name, kind, start, duration, status code, the span's string/int/bool/double attributes
//! and the resource's string attributes are read from their columns; the blob holds the
//! rest (trace state, flags, dropped counts, events, links, status message, scope), the
//! order of the attributes (one byte each: which typed array the next one comes from, or
//! the blob) with the attributes no typed array holds (bytes, arrays, maps, empty), the
//! same for the resource, and the end when it is before the start (the duration is then
//! zero). It is two postcard values: the span's own part, then the part spans of one
//! resource and scope share, so a read builds one `Arc<Resource>` per distinct resource.
//!
//! Version 1, written by earlier releases: postcard of the whole span. Still read, so
//! data already stored stays readable.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use spindle_model::{
    AttributeValue, Event, KeyValue, Link, Resource, Scope, Span, SpanId, SpanKind, Status, StatusCode, Text, TraceId,
};
use spindle_store::StoreError;

use crate::rowbinary::Reader;

/// The whole span, postcard (earlier releases).
pub(crate) const V1: u8 = 1;
/// What the columns cannot give back (this release's appends).
pub(crate) const V2: u8 = 2;

/// Where an attribute comes back from: the typed arrays, in the order of their columns,
/// or the blob.
const FROM_STR: u8 = 0;
const FROM_INT: u8 = 1;
const FROM_BOOL: u8 = 2;
const FROM_DOUBLE: u8 = 3;
const FROM_BLOB: u8 = 4;

/// Which column a span attribute goes to; the row writer and the blob agree through it.
pub(crate) fn source_of(value: &AttributeValue) -> u8 {
    match value {
        AttributeValue::String(_) => FROM_STR,
        AttributeValue::Int(_) => FROM_INT,
        AttributeValue::Bool(_) => FROM_BOOL,
        AttributeValue::Double(_) => FROM_DOUBLE,
        _ => FROM_BLOB,
    }
}

/// Resource attributes have string columns only.
fn resource_source_of(value: &AttributeValue) -> u8 {
    match value {
        AttributeValue::String(_) => FROM_STR,
        _ => FROM_BLOB,
    }
}

/// The columns a span is rebuilt from, in the order [`Row::read`] reads them.
pub(crate) const SPAN_COLUMNS: &str = "trace_id, span_id, name, kind, start_ns, duration_ns, status_code, \
     parent_span_id, str_keys, str_values, int_keys, int_values, bool_keys, bool_values, double_keys, \
     double_values, resource_keys, resource_values, span";

/// The columns of [`SPAN_COLUMNS`] from `parent_span_id` on, in their order.
pub(crate) const TAIL_COLUMNS: [&str; 12] = [
    "parent_span_id",
    "str_keys",
    "str_values",
    "int_keys",
    "int_values",
    "bool_keys",
    "bool_values",
    "double_keys",
    "double_values",
    "resource_keys",
    "resource_values",
    "span",
];

/// The span's own part, as written (borrowing the span).
#[derive(Serialize)]
struct SpanPartOut<'a> {
    trace_state: &'a str,
    flags: u32,
    dropped_attributes_count: u32,
    events: &'a [Event],
    dropped_events_count: u32,
    links: &'a [Link],
    dropped_links_count: u32,
    status_message: &'a str,
    order: Vec<u8>,
    other: Vec<&'a KeyValue>,
    end: Option<u64>,
}

/// The span's own part, as read: field for field [`SpanPartOut`].
#[derive(Deserialize)]
struct SpanPart {
    trace_state: String,
    flags: u32,
    dropped_attributes_count: u32,
    events: Vec<Event>,
    dropped_events_count: u32,
    links: Vec<Link>,
    dropped_links_count: u32,
    status_message: String,
    order: Vec<u8>,
    other: Vec<KeyValue>,
    end: Option<u64>,
}

/// The part spans of one resource and scope share, as written.
#[derive(Serialize)]
struct SharedPartOut<'a> {
    scope: &'a Scope,
    resource_dropped: u32,
    resource_order: Vec<u8>,
    resource_other: Vec<&'a KeyValue>,
}

/// The shared part, as read: field for field [`SharedPartOut`].
#[derive(Deserialize)]
struct SharedPart {
    scope: Scope,
    resource_dropped: u32,
    resource_order: Vec<u8>,
    resource_other: Vec<KeyValue>,
}

fn encode_error(e: postcard::Error) -> StoreError {
    StoreError::Encode(e.to_string())
}

/// Writes version-2 blobs, encoding the shared part once per run of spans with the same
/// resource and scope (a batch's spans come grouped by resource).
#[derive(Default)]
pub(crate) struct Encoder {
    last: Option<(Arc<Resource>, Arc<Scope>, Vec<u8>)>,
}

impl Encoder {
    pub(crate) fn encode(&mut self, span: &Span) -> Result<Vec<u8>, StoreError> {
        let other: Vec<&KeyValue> = span.attributes.iter().filter(|kv| source_of(&kv.value) == FROM_BLOB).collect();
        let part = SpanPartOut {
            trace_state: &span.trace_state,
            flags: span.flags,
            dropped_attributes_count: span.dropped_attributes_count,
            events: &span.events,
            dropped_events_count: span.dropped_events_count,
            links: &span.links,
            dropped_links_count: span.dropped_links_count,
            status_message: &span.status.message,
            order: span.attributes.iter().map(|kv| source_of(&kv.value)).collect(),
            other,
            end: (span.end_time_unix_nano < span.start_time_unix_nano).then_some(span.end_time_unix_nano),
        };
        let blob = postcard::to_extend(&part, vec![V2]).map_err(encode_error)?;
        let shared = match &self.last {
            Some((r, s, bytes)) if Arc::ptr_eq(r, &span.resource) && Arc::ptr_eq(s, &span.scope) => bytes,
            _ => {
                let resource = &span.resource;
                let shared = SharedPartOut {
                    scope: &span.scope,
                    resource_dropped: resource.dropped_attributes_count,
                    resource_order: resource.attributes.iter().map(|kv| resource_source_of(&kv.value)).collect(),
                    resource_other: resource
                        .attributes
                        .iter()
                        .filter(|kv| resource_source_of(&kv.value) == FROM_BLOB)
                        .collect(),
                };
                let bytes = postcard::to_stdvec(&shared).map_err(encode_error)?;
                &self.last.insert((Arc::clone(&span.resource), Arc::clone(&span.scope), bytes)).2
            }
        };
        let mut blob = blob;
        blob.extend_from_slice(shared);
        Ok(blob)
    }
}

/// A row of [`SPAN_COLUMNS`], borrowing the answer's bytes.
#[derive(Default)]
pub(crate) struct Row<'a> {
    pub(crate) trace_id: TraceId,
    pub(crate) span_id: SpanId,
    pub(crate) name: &'a [u8],
    pub(crate) kind: u8,
    pub(crate) start: u64,
    pub(crate) duration: u64,
    pub(crate) status: u8,
    parent_span_id: u64,
    str_keys: Vec<&'a [u8]>,
    str_values: Vec<&'a [u8]>,
    int_keys: Vec<&'a [u8]>,
    int_values: Vec<i64>,
    bool_keys: Vec<&'a [u8]>,
    bool_values: Vec<u8>,
    double_keys: Vec<&'a [u8]>,
    double_values: Vec<f64>,
    /// `resource_keys` and `resource_values` as they came: the resource's identity in a read.
    resource_raw: &'a [u8],
    resource_keys: Vec<&'a [u8]>,
    resource_values: Vec<&'a [u8]>,
    blob: &'a [u8],
}

impl<'a> Row<'a> {
    pub(crate) fn read(reader: &mut Reader<'a>) -> Result<Self, &'static str> {
        let mut row = Row {
            trace_id: reader.trace_id()?,
            span_id: SpanId(reader.u64()?),
            name: reader.string()?,
            kind: reader.u8()?,
            start: reader.u64()?,
            duration: reader.u64()?,
            status: reader.u8()?,
            ..Row::default()
        };
        row.read_tail(reader)?;
        Ok(row)
    }

    /// Reads the [`TAIL_COLUMNS`] into a row whose other fields the caller has set.
    pub(crate) fn read_tail(&mut self, reader: &mut Reader<'a>) -> Result<(), &'static str> {
        self.parent_span_id = reader.u64()?;
        self.str_keys = reader.strings()?;
        self.str_values = reader.strings()?;
        self.int_keys = reader.strings()?;
        self.int_values = reader.array(Reader::i64)?;
        self.bool_keys = reader.strings()?;
        self.bool_values = reader.array(Reader::u8)?;
        self.double_keys = reader.strings()?;
        self.double_values = reader.array(Reader::f64)?;
        let before = reader.remaining();
        self.resource_keys = reader.strings()?;
        self.resource_values = reader.strings()?;
        self.resource_raw = &before[..before.len() - reader.remaining().len()];
        self.blob = reader.string()?;
        Ok(())
    }
}

fn bad(reason: impl Into<String>) -> StoreError {
    StoreError::Block { path: "clickhouse spans.span".into(), reason: reason.into() }
}

fn text(bytes: &[u8]) -> Result<Text, StoreError> {
    std::str::from_utf8(bytes).map(Text::from).map_err(|_| bad("a stored name or attribute is not UTF-8"))
}

/// Rebuilds spans from rows, sharing one `Arc<Resource>` and `Arc<Scope>` among the spans of
/// a read with the same resource and scope.
#[derive(Default)]
pub(crate) struct Decoder {
    shared: HashMap<Vec<u8>, (Arc<Resource>, Arc<Scope>)>,
    key: Vec<u8>,
}

impl Decoder {
    pub(crate) fn span(&mut self, row: Row<'_>) -> Result<Span, StoreError> {
        match row.blob.split_first() {
            Some((&V1, rest)) => postcard::from_bytes(rest).map_err(|e| bad(e.to_string())),
            Some((&V2, rest)) => self.rebuild(row, rest),
            Some((v, _)) => Err(bad(format!("span blob version {v}, this release reads {V1} and {V2}"))),
            None => Err(bad("empty span blob")),
        }
    }

    fn rebuild(&mut self, row: Row<'_>, blob: &[u8]) -> Result<Span, StoreError> {
        let (part, shared): (SpanPart, &[u8]) = postcard::take_from_bytes(blob).map_err(|e| bad(e.to_string()))?;
        let (resource, scope) = self.shared(&row, shared)?;
        let mut strings = row.str_keys.iter().zip(&row.str_values);
        let mut ints = row.int_keys.iter().zip(&row.int_values);
        let mut bools = row.bool_keys.iter().zip(&row.bool_values);
        let mut doubles = row.double_keys.iter().zip(&row.double_values);
        let mut other = part.other.into_iter();
        let missing = || bad("the blob's attribute order names more attributes than the row holds");
        let mut attributes = Vec::with_capacity(part.order.len());
        for source in part.order {
            attributes.push(match source {
                FROM_STR => {
                    let (k, v) = strings.next().ok_or_else(missing)?;
                    KeyValue::new(text(k)?, AttributeValue::String(text(v)?))
                }
                FROM_INT => {
                    let (k, v) = ints.next().ok_or_else(missing)?;
                    KeyValue::new(text(k)?, AttributeValue::Int(*v))
                }
                FROM_BOOL => {
                    let (k, v) = bools.next().ok_or_else(missing)?;
                    KeyValue::new(text(k)?, AttributeValue::Bool(*v != 0))
                }
                FROM_DOUBLE => {
                    let (k, v) = doubles.next().ok_or_else(missing)?;
                    KeyValue::new(text(k)?, AttributeValue::Double(*v))
                }
                FROM_BLOB => other.next().ok_or_else(missing)?,
                other => return Err(bad(format!("unknown attribute source {other}"))),
            });
        }
        if strings.next().is_some()
            || ints.next().is_some()
            || bools.next().is_some()
            || doubles.next().is_some()
            || other.next().is_some()
        {
            return Err(bad("the row holds attributes the blob's order does not name"));
        }
        Ok(Span {
            trace_id: row.trace_id,
            span_id: row.span_id,
            parent_span_id: SpanId(row.parent_span_id),
            trace_state: part.trace_state,
            flags: part.flags,
            name: text(row.name)?,
            kind: SpanKind::from_otlp(i32::from(row.kind)),
            start_time_unix_nano: row.start,
            end_time_unix_nano: match part.end {
                Some(end) => end,
                None => row.start.checked_add(row.duration).ok_or_else(|| bad("start plus duration overflows"))?,
            },
            attributes,
            dropped_attributes_count: part.dropped_attributes_count,
            events: part.events,
            dropped_events_count: part.dropped_events_count,
            links: part.links,
            dropped_links_count: part.dropped_links_count,
            status: Status { code: StatusCode::from_otlp(i32::from(row.status)), message: part.status_message },
            resource,
            scope,
        })
    }

    /// The resource and scope of a row: built once per distinct resource columns and
    /// shared part in this read.
    fn shared(&mut self, row: &Row<'_>, shared: &[u8]) -> Result<(Arc<Resource>, Arc<Scope>), StoreError> {
        // The resource columns are self-delimiting RowBinary, so the concatenation is unambiguous.
        self.key.clear();
        self.key.extend_from_slice(row.resource_raw);
        self.key.extend_from_slice(shared);
        if let Some((resource, scope)) = self.shared.get(self.key.as_slice()) {
            return Ok((Arc::clone(resource), Arc::clone(scope)));
        }
        let part: SharedPart = postcard::from_bytes(shared).map_err(|e| bad(e.to_string()))?;
        let mut strings = row.resource_keys.iter().zip(&row.resource_values);
        let mut other = part.resource_other.into_iter();
        let missing = || bad("the blob's resource order names more attributes than the row holds");
        let mut attributes = Vec::with_capacity(part.resource_order.len());
        for source in part.resource_order {
            attributes.push(match source {
                FROM_STR => {
                    let (k, v) = strings.next().ok_or_else(missing)?;
                    KeyValue::new(text(k)?, AttributeValue::String(text(v)?))
                }
                FROM_BLOB => other.next().ok_or_else(missing)?,
                other => return Err(bad(format!("unknown resource attribute source {other}"))),
            });
        }
        if strings.next().is_some() || other.next().is_some() {
            return Err(bad("the row holds resource attributes the blob's order does not name"));
        }
        let resource = Arc::new(Resource { attributes, dropped_attributes_count: part.resource_dropped });
        let scope = Arc::new(part.scope);
        self.shared.insert(self.key.clone(), (Arc::clone(&resource), Arc::clone(&scope)));
        Ok((resource, scope))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rowbinary::Writer;

    /// A row as ClickHouse would answer [`SPAN_COLUMNS`] for what `write_span_row` wrote.
    fn answer(span: &Span, blob: &[u8]) -> Vec<u8> {
        let mut w = Writer::default();
        w.trace_id(span.trace_id)
            .u64(span.span_id.0)
            .string(span.name.as_bytes())
            .u8(span.kind.to_otlp() as u8)
            .u64(span.start_time_unix_nano)
            .u64(span.duration_nanos())
            .u8(span.status.code.to_otlp() as u8)
            .u64(span.parent_span_id.0);
        crate::write_attribute_columns(&mut w, span);
        w.string(blob);
        w.into_bytes()
    }

    fn round_trip(span: &Span) -> Span {
        let blob = Encoder::default().encode(span).unwrap();
        let bytes = answer(span, &blob);
        let mut reader = Reader::new(&bytes);
        let row = Row::read(&mut reader).unwrap();
        assert!(reader.is_empty());
        Decoder::default().span(row).unwrap()
    }

    fn odd_span() -> Span {
        Span {
            trace_id: TraceId(9),
            span_id: SpanId(3),
            parent_span_id: SpanId(2),
            trace_state: "k=v".into(),
            flags: 257,
            name: "get".into(),
            kind: SpanKind::Consumer,
            start_time_unix_nano: 100,
            end_time_unix_nano: 40,
            attributes: vec![
                KeyValue::new("k", AttributeValue::Bytes(vec![0, 1])),
                KeyValue::string("k", "s"),
                KeyValue::new("n", AttributeValue::Int(-4)),
                KeyValue::new("m", AttributeValue::Map(vec![])),
                KeyValue::new("d", AttributeValue::Double(0.5)),
                KeyValue::new("b", AttributeValue::Bool(true)),
                KeyValue::string("k", "t"),
            ],
            dropped_attributes_count: 1,
            dropped_events_count: 2,
            dropped_links_count: 3,
            links: vec![Link { trace_id: TraceId(1), span_id: SpanId(2), ..Default::default() }],
            status: Status { code: StatusCode::Error, message: "boom".into() },
            resource: Arc::new(Resource {
                attributes: vec![
                    KeyValue::new("service.name", AttributeValue::Int(1)),
                    KeyValue::string("region", "eu"),
                ],
                dropped_attributes_count: 5,
            }),
            scope: Arc::new(Scope { name: "lib".into(), version: "2".into(), ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn spans_rebuild_exactly_from_columns_and_blob() {
        let span = odd_span();
        assert_eq!(round_trip(&span), span, "end before start, mixed attribute order, odd resource");
        let plain = Span { end_time_unix_nano: 250, ..odd_span() };
        assert_eq!(round_trip(&plain), plain);
        assert_eq!(round_trip(&Span::default()), Span::default());
    }

    #[test]
    fn version_one_blobs_still_read_and_others_are_refused() {
        let span = odd_span();
        let mut v1 = vec![V1];
        v1.extend(postcard::to_stdvec(&span).unwrap());
        let bytes = answer(&span, &v1);
        let row = Row::read(&mut Reader::new(&bytes)).unwrap();
        assert_eq!(Decoder::default().span(row).unwrap(), span);
        for blob in [vec![], vec![3, 0], vec![V2, 0xff]] {
            let bytes = answer(&span, &blob);
            let row = Row::read(&mut Reader::new(&bytes)).unwrap();
            assert!(Decoder::default().span(row).is_err(), "{blob:?}");
        }
    }

    #[test]
    fn a_read_shares_equal_resources() {
        let span = odd_span();
        let other = Span { span_id: SpanId(4), resource: Arc::new((*span.resource).clone()), ..odd_span() };
        let mut decoder = Decoder::default();
        let mut encoder = Encoder::default();
        let mut read = |s: &Span| {
            let bytes = answer(s, &encoder.encode(s).unwrap());
            decoder.span(Row::read(&mut Reader::new(&bytes)).unwrap()).unwrap()
        };
        let (a, b) = (read(&span), read(&other));
        assert!(Arc::ptr_eq(&a.resource, &b.resource) && Arc::ptr_eq(&a.scope, &b.scope));
    }

    /// The shape of a reference-workload span: 8 typed attributes, 4 string resource
    /// attributes, a scope.
    fn typical_span() -> Span {
        Span {
            end_time_unix_nano: 5,
            attributes: (0..8)
                .map(|i| match i % 3 {
                    0 => KeyValue::string(format!("key{i}"), "value"),
                    1 => KeyValue::new(format!("key{i}"), AttributeValue::Int(i)),
                    _ => KeyValue::new(format!("key{i}"), AttributeValue::Bool(true)),
                })
                .collect(),
            resource: Arc::new(Resource {
                attributes: (0..4).map(|i| KeyValue::string(format!("r{i}"), "v")).collect(),
                dropped_attributes_count: 0,
            }),
            scope: Arc::new(Scope { name: "spindle-loadgen".into(), version: "1".into(), ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn a_typical_span_needs_a_few_dozen_bytes() {
        let span = typical_span();
        let blob = Encoder::default().encode(&span).unwrap();
        assert!(blob.len() < 64, "{} bytes", blob.len());
        assert_eq!(round_trip(&span), span);
    }
}
