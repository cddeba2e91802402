//! The encoding of one appended batch as a write-ahead-log record.
//!
//! A batch from a receiver holds many spans that share a handful of resources and scopes
//! (one per exporting process and library). Encoding each span with its resource inline, as
//! `postcard::to_stdvec(&Vec<Span>)` does, repeats `service.name` and every other resource
//! attribute per span; here each distinct resource and scope is written once and spans refer
//! to them by index. On the reference workload that cuts the record size by about a third and
//! the encode time with it (see `docs/PERFORMANCE.md`), and decoding restores the sharing of
//! `Arc<Resource>` between spans, which the in-memory head relies on to stay small.
//!
//! This module owns only the byte format; it does no IO.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use spindle_model::{Event, KeyValue, Link, Resource, Scope, Span, SpanId, SpanKind, Status, Text, TraceId};

/// Bumped when the record layout changes; replay refuses records of another version.
const FORMAT_VERSION: u8 = 1;

#[derive(Serialize)]
struct BatchRef<'a> {
    resources: Vec<&'a Resource>,
    scopes: Vec<&'a Scope>,
    spans: Vec<SpanRef<'a>>,
}

/// A span without its resource and scope, borrowed for encoding.
#[derive(Serialize)]
struct SpanRef<'a> {
    resource: u32,
    scope: u32,
    trace_id: TraceId,
    span_id: SpanId,
    parent_span_id: SpanId,
    trace_state: &'a str,
    flags: u32,
    name: &'a str,
    kind: SpanKind,
    start_time_unix_nano: u64,
    end_time_unix_nano: u64,
    attributes: &'a [KeyValue],
    dropped_attributes_count: u32,
    events: &'a [Event],
    dropped_events_count: u32,
    links: &'a [Link],
    dropped_links_count: u32,
    status: &'a Status,
}

#[derive(Deserialize)]
struct BatchOwned {
    resources: Vec<Resource>,
    scopes: Vec<Scope>,
    spans: Vec<SpanOwned>,
}

/// The owned twin of [`SpanRef`]; field order must match it exactly.
#[derive(Deserialize)]
struct SpanOwned {
    resource: u32,
    scope: u32,
    trace_id: TraceId,
    span_id: SpanId,
    parent_span_id: SpanId,
    trace_state: String,
    flags: u32,
    name: Text,
    kind: SpanKind,
    start_time_unix_nano: u64,
    end_time_unix_nano: u64,
    attributes: Vec<KeyValue>,
    dropped_attributes_count: u32,
    events: Vec<Event>,
    dropped_events_count: u32,
    links: Vec<Link>,
    dropped_links_count: u32,
    status: Status,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum BatchCodecError {
    #[error("batch record is empty")]
    Empty,
    #[error("batch record has format version {0}, expected {FORMAT_VERSION}")]
    Version(u8),
    #[error("batch record is malformed: {0}")]
    Malformed(#[from] postcard::Error),
    #[error("batch record refers to {what} {index} of {len}")]
    BadReference { what: &'static str, index: u32, len: usize },
}

/// Index of `item` in `table`, adding it when new. Pointer equality first: spans of one
/// decoded request share their `Arc`, so the value comparison is rarely needed.
fn intern<'a, T: PartialEq>(table: &mut Vec<&'a T>, item: &'a Arc<T>) -> u32 {
    let found = table
        .iter()
        .position(|t| std::ptr::eq(*t, Arc::as_ptr(item)))
        .or_else(|| table.iter().position(|t| **t == **item));
    let index = found.unwrap_or_else(|| {
        table.push(item);
        table.len() - 1
    });
    index as u32
}

pub(crate) fn encode_batch(spans: &[Span]) -> Result<Vec<u8>, postcard::Error> {
    let mut batch = BatchRef { resources: Vec::new(), scopes: Vec::new(), spans: Vec::with_capacity(spans.len()) };
    for span in spans {
        let resource = intern(&mut batch.resources, &span.resource);
        let scope = intern(&mut batch.scopes, &span.scope);
        batch.spans.push(SpanRef {
            resource,
            scope,
            trace_id: span.trace_id,
            span_id: span.span_id,
            parent_span_id: span.parent_span_id,
            trace_state: &span.trace_state,
            flags: span.flags,
            name: &span.name,
            kind: span.kind,
            start_time_unix_nano: span.start_time_unix_nano,
            end_time_unix_nano: span.end_time_unix_nano,
            attributes: &span.attributes,
            dropped_attributes_count: span.dropped_attributes_count,
            events: &span.events,
            dropped_events_count: span.dropped_events_count,
            links: &span.links,
            dropped_links_count: span.dropped_links_count,
            status: &span.status,
        });
    }
    // Serialize straight into a buffer sized from the last record: growing a vector from
    // empty and copying it behind the version byte was a fifth of the encoding time.
    let per_span = BYTES_PER_SPAN_HINT.load(Ordering::Relaxed).clamp(64, 4096);
    let mut out = Vec::with_capacity(16 + per_span * spans.len() * 9 / 8);
    out.push(FORMAT_VERSION);
    let out = postcard::serialize_with_flavor(&batch, Presized(out))?;
    BYTES_PER_SPAN_HINT.store(out.len() / spans.len().max(1), Ordering::Relaxed);
    Ok(out)
}

/// Bytes per span of the last encoded record, to size the next one's buffer.
static BYTES_PER_SPAN_HINT: AtomicUsize = AtomicUsize::new(256);

/// A postcard output that appends to a vector the caller sized (postcard's own starts empty).
struct Presized(Vec<u8>);

impl postcard::ser_flavors::Flavor for Presized {
    type Output = Vec<u8>;

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

fn lookup<T>(table: &[Arc<T>], index: u32, what: &'static str) -> Result<Arc<T>, BatchCodecError> {
    table.get(index as usize).cloned().ok_or(BatchCodecError::BadReference { what, index, len: table.len() })
}

pub(crate) fn decode_batch(record: &[u8]) -> Result<Vec<Span>, BatchCodecError> {
    let (&version, body) = record.split_first().ok_or(BatchCodecError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(BatchCodecError::Version(version));
    }
    let batch: BatchOwned = postcard::from_bytes(body)?;
    let resources: Vec<Arc<Resource>> = batch.resources.into_iter().map(Arc::new).collect();
    let scopes: Vec<Arc<Scope>> = batch.scopes.into_iter().map(Arc::new).collect();
    batch
        .spans
        .into_iter()
        .map(|s| {
            Ok(Span {
                trace_id: s.trace_id,
                span_id: s.span_id,
                parent_span_id: s.parent_span_id,
                trace_state: s.trace_state,
                flags: s.flags,
                name: s.name,
                kind: s.kind,
                start_time_unix_nano: s.start_time_unix_nano,
                end_time_unix_nano: s.end_time_unix_nano,
                attributes: s.attributes,
                dropped_attributes_count: s.dropped_attributes_count,
                events: s.events,
                dropped_events_count: s.dropped_events_count,
                links: s.links,
                dropped_links_count: s.dropped_links_count,
                status: s.status,
                resource: lookup(&resources, s.resource, "resource")?,
                scope: lookup(&scopes, s.scope, "scope")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_and_share_resources() {
        let spans = crate::generator::Generator::new(7, 1_700_000_000_000_000_000).batch(40);
        let bytes = encode_batch(&spans).unwrap();
        let back = decode_batch(&bytes).unwrap();
        assert_eq!(back, spans);
        let distinct = back.iter().map(|s| Arc::as_ptr(&s.resource)).collect::<std::collections::HashSet<_>>();
        assert_eq!(distinct.len(), 5, "one shared resource per service");
        let mut plain = vec![FORMAT_VERSION];
        plain.extend(
            postcard::to_stdvec(&BatchRef { resources: Vec::new(), scopes: Vec::new(), spans: Vec::new() }).unwrap(),
        );
        assert_eq!(encode_batch(&[]).unwrap(), plain, "the presized output is postcard's encoding");
        assert_eq!(encode_batch(&spans).unwrap(), bytes, "encoding is deterministic");
        let inline = postcard::to_stdvec(&spans).unwrap();
        assert!(bytes.len() < inline.len(), "{} >= {}", bytes.len(), inline.len());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(decode_batch(&[]), Err(BatchCodecError::Empty)));
        assert!(matches!(decode_batch(&[9, 1, 2]), Err(BatchCodecError::Version(9))));
        assert!(decode_batch(&[FORMAT_VERSION, 0xff, 0xff, 0xff]).is_err());
    }
}
