//! Pre-encoded OTLP requests that `spindle loadgen` re-sends with fresh identities.
//!
//! Generating the reference workload and encoding it as protobuf cost loadgen ~3.5–5 µs of
//! CPU per span, more than a third of what the server spends storing it: on a 2-core machine
//! shared by both, loadgen measured itself. So each connection generates a pool of batches
//! once, encodes each into an `ExportTraceServiceRequest` and remembers where the fields
//! that make a span unique sit in those bytes. Sending a batch copies its bytes and writes
//! new trace and span ids, new `request.id` values and the current time into them: every trace sent
//! is new, every span keeps the workload's shape, attributes and durations.
//!
//! The encoder writes the OTLP protobuf wire format (`opentelemetry/proto/trace/v1/trace.proto`
//! field numbers); its test decodes the result with the generated `opentelemetry-proto`
//! types and compares it with the ordinary conversion.

use std::collections::HashMap;

use spindle_codec::otlp::group_by_resource_and_scope;
use spindle_model::{AttributeValue, KeyValue, Resource, Scope, Span, SpanId, TraceId};
use spindle_workload::Rng;

/// The attribute whose value is a fresh id per span (16 hex digits).
const REQUEST_ID_KEY: &str = "request.id";
const REQUEST_ID_LEN: usize = 16;

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;

/// A protobuf writer that remembers where the patchable fields went.
#[derive(Default)]
struct Writer {
    buf: Vec<u8>,
    /// (offset of 16 trace-id bytes, index of the trace in the batch)
    trace_ids: Vec<(usize, usize)>,
    /// (offset of 8 span-id bytes, index of the span in the batch): span and parent ids
    span_ids: Vec<(usize, usize)>,
    /// offsets of 16-byte `request.id` strings
    request_ids: Vec<usize>,
    /// offsets of little-endian u64 timestamps
    times: Vec<usize>,
    /// With `Some(digits)`, every span name ends in that many digits, rewritten per
    /// rendering ([`NameCycle`]); the offsets of those digits.
    name_digits: Option<usize>,
    names: Vec<usize>,
}

impl Writer {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    fn key(&mut self, field: u32, wire: u8) {
        self.varint(u64::from(field) << 3 | u64::from(wire));
    }

    fn uint(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.key(field, VARINT);
            self.varint(v);
        }
    }

    fn fixed64(&mut self, field: u32, v: u64) {
        self.key(field, FIXED64);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn time(&mut self, field: u32, v: u64) {
        self.key(field, FIXED64);
        self.times.push(self.buf.len());
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn bytes(&mut self, field: u32, v: &[u8]) {
        if !v.is_empty() {
            self.key(field, LEN);
            self.varint(v.len() as u64);
            self.buf.extend_from_slice(v);
        }
    }

    /// A nested message, written after its length; its patch offsets move with it.
    fn message(&mut self, field: u32, write: impl FnOnce(&mut Writer)) {
        let mut inner = Writer { name_digits: self.name_digits, ..Writer::default() };
        write(&mut inner);
        self.key(field, LEN);
        self.varint(inner.buf.len() as u64);
        let at = self.buf.len();
        self.buf.extend_from_slice(&inner.buf);
        self.trace_ids.extend(inner.trace_ids.into_iter().map(|(o, t)| (o + at, t)));
        self.span_ids.extend(inner.span_ids.into_iter().map(|(o, s)| (o + at, s)));
        self.request_ids.extend(inner.request_ids.into_iter().map(|o| o + at));
        self.times.extend(inner.times.into_iter().map(|o| o + at));
        self.names.extend(inner.names.into_iter().map(|o| o + at));
    }

    fn any_value(&mut self, value: &AttributeValue, patch_request_id: bool) {
        match value {
            AttributeValue::String(s) => {
                self.key(1, LEN);
                self.varint(s.len() as u64);
                if patch_request_id {
                    self.request_ids.push(self.buf.len());
                }
                self.buf.extend_from_slice(s.as_bytes());
            }
            AttributeValue::Bool(b) => {
                self.key(2, VARINT);
                self.varint(u64::from(*b));
            }
            AttributeValue::Int(i) => {
                self.key(3, VARINT);
                self.varint(*i as u64);
            }
            AttributeValue::Double(d) => self.fixed64(4, d.to_bits()),
            AttributeValue::Array(items) => self.message(5, |w| {
                for item in items {
                    w.message(1, |w| w.any_value(item, false));
                }
            }),
            AttributeValue::Map(entries) => self.message(6, |w| w.attributes(1, entries)),
            AttributeValue::Bytes(b) => {
                self.key(7, LEN);
                self.varint(b.len() as u64);
                self.buf.extend_from_slice(b);
            }
        }
    }

    fn attributes(&mut self, field: u32, attributes: &[KeyValue]) {
        for kv in attributes {
            let patch = kv.key == REQUEST_ID_KEY && kv.value.as_str().is_some_and(|s| s.len() == REQUEST_ID_LEN);
            self.message(field, |w| {
                w.bytes(1, kv.key.as_bytes());
                w.message(2, |w| w.any_value(&kv.value, patch));
            });
        }
    }

    fn resource(&mut self, resource: &Resource) {
        self.attributes(1, &resource.attributes);
        self.uint(2, u64::from(resource.dropped_attributes_count));
    }

    fn scope(&mut self, scope: &Scope) {
        self.bytes(1, scope.name.as_bytes());
        self.bytes(2, scope.version.as_bytes());
        self.attributes(3, &scope.attributes);
        self.uint(4, u64::from(scope.dropped_attributes_count));
    }

    /// A span id rewritten per rendering when the batch holds the span it names (`index`).
    fn span_id(&mut self, field: u32, id: SpanId, index: Option<usize>) {
        self.key(field, LEN);
        self.varint(8);
        if let Some(index) = index {
            self.span_ids.push((self.buf.len(), index));
        }
        self.buf.extend_from_slice(&id.to_bytes());
    }

    fn span(&mut self, span: &Span, trace: usize, spans: &HashMap<(TraceId, SpanId), usize>) {
        self.key(1, LEN);
        self.varint(16);
        self.trace_ids.push((self.buf.len(), trace));
        self.buf.extend_from_slice(&span.trace_id.to_bytes());
        self.span_id(2, span.span_id, spans.get(&(span.trace_id, span.span_id)).copied());
        self.bytes(3, span.trace_state.as_bytes());
        if span.parent_span_id.is_valid() {
            self.span_id(4, span.parent_span_id, spans.get(&(span.trace_id, span.parent_span_id)).copied());
        }
        match self.name_digits {
            Some(digits) if span.name.len() >= digits => {
                self.key(5, LEN);
                self.varint(span.name.len() as u64);
                self.names.push(self.buf.len() + span.name.len() - digits);
                self.buf.extend_from_slice(span.name.as_bytes());
            }
            _ => self.bytes(5, span.name.as_bytes()),
        }
        self.uint(6, span.kind.to_otlp() as u64);
        self.time(7, span.start_time_unix_nano);
        self.time(8, span.end_time_unix_nano);
        self.attributes(9, &span.attributes);
        self.uint(10, u64::from(span.dropped_attributes_count));
        for event in &span.events {
            self.message(11, |w| {
                w.time(1, event.time_unix_nano);
                w.bytes(2, event.name.as_bytes());
                w.attributes(3, &event.attributes);
                w.uint(4, u64::from(event.dropped_attributes_count));
            });
        }
        self.uint(12, u64::from(span.dropped_events_count));
        for link in &span.links {
            self.message(13, |w| {
                w.bytes(1, &link.trace_id.to_bytes());
                w.bytes(2, &link.span_id.to_bytes());
                w.bytes(3, link.trace_state.as_bytes());
                w.attributes(4, &link.attributes);
                w.uint(5, u64::from(link.dropped_attributes_count));
                if link.flags != 0 {
                    w.key(6, 5);
                    w.buf.extend_from_slice(&link.flags.to_le_bytes());
                }
            });
        }
        self.uint(14, u64::from(span.dropped_links_count));
        self.message(15, |w| {
            w.bytes(2, span.status.message.as_bytes());
            w.uint(3, span.status.code.to_otlp() as u64);
        });
        if span.flags != 0 {
            self.key(16, 5);
            self.buf.extend_from_slice(&span.flags.to_le_bytes());
        }
    }
}

/// The span names of `--distinct-names`: `<prefix><n>` with `n` zero-padded to a fixed
/// width, so a name is rewritten in place; successive spans take successive `n`, modulo
/// the number of names.
pub struct NameCycle {
    next: u64,
    count: u64,
    digits: usize,
}

impl NameCycle {
    /// `count` names (at least one), starting at name `first`.
    pub fn new(count: u64, first: u64) -> Self {
        let count = count.max(1);
        NameCycle { next: first % count, count, digits: (count - 1).max(1).ilog10() as usize + 1 }
    }

    /// Digits of every name's number.
    pub fn digits(&self) -> usize {
        self.digits
    }

    /// The name numbered `n` with `prefix`, as the template writes it before rendering.
    pub fn name(&self, prefix: &str, n: u64) -> String {
        format!("{prefix}{n:0width$}", width = self.digits)
    }

    fn write_next(&mut self, out: &mut [u8]) {
        let mut n = self.next;
        for b in out.iter_mut().rev() {
            *b = b'0' + (n % 10) as u8;
            n /= 10;
        }
        self.next = (self.next + 1) % self.count;
    }
}

/// One batch of the workload as an encoded `ExportTraceServiceRequest`.
pub struct Template {
    bytes: Vec<u8>,
    trace_ids: Vec<(usize, usize)>,
    span_ids: Vec<(usize, usize)>,
    spans: usize,
    request_ids: Vec<usize>,
    times: Vec<usize>,
    /// Offsets of the digits ending each span name, with `--distinct-names`.
    names: Vec<usize>,
    name_digits: usize,
    traces: usize,
    /// The earliest time in the batch: rendering shifts every time by `now - base`.
    base: u64,
}

impl Template {
    /// Encodes `spans` grouped by resource, then scope
    /// (`spindle_codec::otlp::group_by_resource_and_scope`, as the ordinary conversion does).
    pub fn new(spans: &[Span]) -> Self {
        Self::encode(spans, None)
    }

    /// As [`Template::new`], every span name ending in `digits` digits that each rendering
    /// rewrites from a [`NameCycle`].
    pub fn with_names(spans: &[Span], digits: usize) -> Self {
        Self::encode(spans, Some(digits))
    }

    fn encode(spans: &[Span], name_digits: Option<usize>) -> Self {
        // Each trace's index among the batch's traces, in order of first appearance.
        let mut traces: HashMap<TraceId, usize> = HashMap::new();
        for span in spans {
            let next = traces.len();
            traces.entry(span.trace_id).or_insert(next);
        }
        // Each span's index, so that its id and its children's parent id get one new id.
        let mut ids: HashMap<(TraceId, SpanId), usize> = HashMap::new();
        for span in spans {
            let next = ids.len();
            ids.entry((span.trace_id, span.span_id)).or_insert(next);
        }
        let mut w = Writer { name_digits, ..Writer::default() };
        for (resource, scopes) in group_by_resource_and_scope(spans) {
            w.message(1, |w| {
                w.message(1, |w| w.resource(resource));
                for (scope, spans) in &scopes {
                    w.message(2, |w| {
                        w.message(1, |w| w.scope(scope));
                        for span in spans {
                            w.message(2, |w| w.span(span, traces[&span.trace_id], &ids));
                        }
                    });
                }
            });
        }
        Template {
            bytes: w.buf,
            trace_ids: w.trace_ids,
            span_ids: w.span_ids,
            spans: ids.len(),
            request_ids: w.request_ids,
            times: w.times,
            names: w.names,
            name_digits: name_digits.unwrap_or(0),
            traces: traces.len(),
            base: spans.iter().map(|s| s.start_time_unix_nano).min().unwrap_or(0),
        }
    }

    /// The batch with new trace, span and request ids drawn from `rng`, its earliest span
    /// starting at `start_unix_nano`, and, for a template [`Template::with_names`], the
    /// next span names of `names`.
    pub fn render(&self, rng: &mut Rng, start_unix_nano: u64, names: Option<&mut NameCycle>) -> Vec<u8> {
        let mut out = self.bytes.clone();
        if let Some(names) = names {
            if names.digits == self.name_digits {
                for &at in &self.names {
                    names.write_next(&mut out[at..at + self.name_digits]);
                }
            }
        }
        let ids: Vec<[u8; 16]> = (0..self.traces)
            .map(|_| (u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64() | 1)).to_be_bytes())
            .collect();
        for &(at, trace) in &self.trace_ids {
            out[at..at + 16].copy_from_slice(&ids[trace]);
        }
        // New span ids too, as SDKs draw them: random per span, so no two traces share one.
        let span_ids: Vec<[u8; 8]> = (0..self.spans).map(|_| (rng.next_u64() | 1).to_be_bytes()).collect();
        for &(at, span) in &self.span_ids {
            out[at..at + 8].copy_from_slice(&span_ids[span]);
        }
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for &at in &self.request_ids {
            let v = rng.next_u64();
            for (i, b) in out[at..at + REQUEST_ID_LEN].iter_mut().enumerate() {
                *b = HEX[(v >> (60 - 4 * i) & 0xf) as usize];
            }
        }
        let shift = start_unix_nano.wrapping_sub(self.base);
        for &at in &self.times {
            let t = u64::from_le_bytes(out[at..at + 8].try_into().expect("8 bytes"));
            out[at..at + 8].copy_from_slice(&t.wrapping_add(shift).to_le_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;
    use spindle_codec::otlp::{request_to_spans, spans_to_resource_spans};
    use spindle_model::{Event, Link, SpanId, TraceId};
    use spindle_workload::Workload;

    use super::*;

    #[test]
    fn the_encoding_is_the_one_opentelemetry_proto_decodes() {
        let mut spans = Workload::new(3).batch(50, 1_700_000_000_000_000_000, 1_000_000);
        // Fields the workload leaves empty are covered too.
        spans[3].links.push(Link {
            trace_id: TraceId(7),
            span_id: SpanId(9),
            trace_state: "k=v".into(),
            attributes: vec![KeyValue::new("n", AttributeValue::Double(1.5))],
            dropped_attributes_count: 2,
            flags: 0x101,
        });
        spans[4].attributes.push(KeyValue::new(
            "composite",
            AttributeValue::Array(vec![
                AttributeValue::Int(-3),
                AttributeValue::Bytes(vec![1, 2]),
                AttributeValue::Map(vec![KeyValue::string("a", "b")]),
            ]),
        ));
        spans[4].events.push(Event {
            time_unix_nano: 5,
            name: "e".into(),
            attributes: vec![],
            dropped_attributes_count: 1,
        });
        spans[5].flags = 0x301;
        spans[5].trace_state = "a=b".into();
        spans[5].dropped_links_count = 4;
        let template = Template::new(&spans);
        let decoded = ExportTraceServiceRequest::decode(template.bytes.as_slice()).expect("valid protobuf");
        let expected = ExportTraceServiceRequest { resource_spans: spans_to_resource_spans(&spans) };
        assert_eq!(decoded, expected);
        assert_eq!(template.traces, 50);
        assert_eq!(template.trace_ids.len(), 500);
        assert_eq!(template.request_ids.len(), 500);
    }

    #[test]
    fn rendering_gives_every_trace_and_request_a_new_id_and_moves_time() {
        let spans = Workload::new(5).batch(20, 1_000_000_000, 1_000_000);
        let template = Template::new(&spans);
        let mut rng = Rng::new(11);
        let now = 1_800_000_000_000_000_000;
        let first = request_to_spans(
            ExportTraceServiceRequest::decode(template.render(&mut rng, now, None).as_slice()).unwrap(),
        );
        let second = request_to_spans(
            ExportTraceServiceRequest::decode(template.render(&mut rng, now, None).as_slice()).unwrap(),
        );
        assert_eq!(first.rejected, 0);
        assert_eq!(first.spans.len(), 200);
        let traces = |d: &spindle_codec::Decoded| d.spans.iter().map(|s| s.trace_id).collect::<HashSet<_>>();
        assert_eq!(traces(&first).len(), 20, "one id per trace");
        assert!(traces(&first).is_disjoint(&traces(&second)), "every rendering is new traces");
        let request_ids = |d: &spindle_codec::Decoded| {
            d.spans
                .iter()
                .map(|s| s.attribute(REQUEST_ID_KEY).unwrap().as_str().unwrap().to_string())
                .collect::<HashSet<_>>()
        };
        assert_eq!(request_ids(&first).len(), 200);
        assert!(request_ids(&first).is_disjoint(&request_ids(&second)));
        assert_eq!(first.spans.iter().map(|s| s.start_time_unix_nano).min(), Some(now));
        // New span ids, each once, and parents that still name their rendered parent.
        let span_ids = |d: &spindle_codec::Decoded| d.spans.iter().map(|s| s.span_id).collect::<HashSet<_>>();
        assert_eq!(span_ids(&first).len(), 200);
        assert!(span_ids(&first).is_disjoint(&span_ids(&second)));
        assert!(span_ids(&first).is_disjoint(&spans.iter().map(|s| s.span_id).collect()));
        // Everything else is the workload's, span for span in the encoded order: same shapes,
        // durations, attributes.
        let encoded: Vec<&Span> = group_by_resource_and_scope(&spans)
            .into_iter()
            .flat_map(|(_, scopes)| scopes.into_iter().flat_map(|(_, spans)| spans))
            .collect();
        assert_eq!(encoded.len(), first.spans.len());
        let rendered_id: std::collections::HashMap<SpanId, SpanId> =
            encoded.iter().zip(&first.spans).map(|(a, b)| (a.span_id, b.span_id)).collect();
        for (a, b) in encoded.iter().zip(&first.spans) {
            assert_eq!(a.duration_nanos(), b.duration_nanos());
            assert_eq!(a.start_time_unix_nano - 1_000_000_000, b.start_time_unix_nano - now);
            assert_eq!(a.name, b.name);
            assert_eq!(a.attribute("symbol"), b.attribute("symbol"));
            assert_eq!(a.events.len(), b.events.len());
            let parent = rendered_id.get(&a.parent_span_id).copied().unwrap_or(SpanId::INVALID);
            assert_eq!(b.parent_span_id, parent, "the parent of {} is rendered with it", a.name);
        }
    }

    #[test]
    fn distinct_names_cycle_through_every_name_once_per_round() {
        let mut names = NameCycle::new(250, 240);
        assert_eq!(names.digits(), 3);
        let mut spans = Workload::new(5).batch(10, 1_000_000_000, 1_000_000);
        for span in &mut spans {
            span.name = names.name("GET /users/", 0).as_str().into();
        }
        let template = Template::with_names(&spans, names.digits());
        let mut rng = Rng::new(1);
        let mut seen = Vec::new();
        for _ in 0..3 {
            let request = ExportTraceServiceRequest::decode(template.render(&mut rng, 0, Some(&mut names)).as_slice());
            seen.extend(request_to_spans(request.unwrap()).spans.into_iter().map(|s| s.name.to_string()));
        }
        assert_eq!(seen.len(), 300);
        // Names follow on from span to span and wrap around at the count.
        assert_eq!(seen[0], "GET /users/240");
        assert_eq!(seen[9], "GET /users/249");
        assert_eq!(seen[10], "GET /users/000");
        assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 250);
        assert_eq!(NameCycle::new(1, 0).digits(), 1);
        assert_eq!(NameCycle::new(200_000, 0).digits(), 6);
    }
}
