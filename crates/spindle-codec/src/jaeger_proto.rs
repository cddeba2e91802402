//! Jaeger's `jaeger.api_v2` protobuf model (`proto/api_v2/model.proto`, `collector.proto`)
//! as hand-written prost messages, and the one mapping of a Jaeger batch onto the model.
//!
//! The api_v2 `Batch` is the canonical Jaeger shape in Spindle: the thrift decoders
//! (`jaeger_thrift`) build these same messages, so the Jaeger → model rules live here once:
//! - process → resource (`serviceName` → `service.name`, tags → attributes); a span's own
//!   process wins over the batch's;
//! - typed tags → typed attributes; the tags Jaeger derives from OTLP fields are consumed
//!   back into them: `span.kind` → kind, `otel.status_code`/`otel.status_description` and
//!   `error=true` → status, `otel.scope.name`/`otel.scope.version` (and the older
//!   `otel.library.*`) → scope, `w3c.tracestate` → trace state;
//! - logs → events, the `event` field naming the event;
//! - the first `CHILD_OF` reference within the trace → parent; every other reference → a
//!   link carrying `opentracing.ref_type` (`child_of` / `follows_from`);
//! - times in µs (thrift) or Timestamp/Duration (proto) → unix nanoseconds.
//!
//! A span whose trace id or span id is missing or zero is rejected and counted; the rest
//! of the batch is kept. This module does no IO.

use std::sync::Arc;

use prost::Message;
use spindle_model::{
    semconv, AttributeValue, Event, KeyValue as ModelKeyValue, Link, Resource, Scope, Span as ModelSpan, SpanId,
    SpanKind, Status, StatusCode, TraceId,
};

use crate::{intern, CodecError, Decoded};

/// `google.protobuf.Timestamp`, wire-identical.
#[derive(Clone, Copy, PartialEq, Eq, Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `google.protobuf.Duration`, wire-identical.
#[derive(Clone, Copy, PartialEq, Eq, Message)]
pub struct Duration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ValueType {
    String = 0,
    Bool = 1,
    Int64 = 2,
    Float64 = 3,
    Binary = 4,
}

#[derive(Clone, PartialEq, Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(enumeration = "ValueType", tag = "2")]
    pub v_type: i32,
    #[prost(string, tag = "3")]
    pub v_str: String,
    #[prost(bool, tag = "4")]
    pub v_bool: bool,
    #[prost(int64, tag = "5")]
    pub v_int64: i64,
    #[prost(double, tag = "6")]
    pub v_float64: f64,
    #[prost(bytes = "vec", tag = "7")]
    pub v_binary: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Log {
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    #[prost(message, repeated, tag = "2")]
    pub fields: Vec<KeyValue>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum SpanRefType {
    ChildOf = 0,
    FollowsFrom = 1,
}

#[derive(Clone, PartialEq, Message)]
pub struct SpanRef {
    /// 16 bytes, big-endian.
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    /// 8 bytes, big-endian.
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    #[prost(enumeration = "SpanRefType", tag = "3")]
    pub ref_type: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct Process {
    #[prost(string, tag = "1")]
    pub service_name: String,
    #[prost(message, repeated, tag = "2")]
    pub tags: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Span {
    /// 16 bytes, big-endian.
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    /// 8 bytes, big-endian.
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    #[prost(string, tag = "3")]
    pub operation_name: String,
    #[prost(message, repeated, tag = "4")]
    pub references: Vec<SpanRef>,
    #[prost(uint32, tag = "5")]
    pub flags: u32,
    #[prost(message, optional, tag = "6")]
    pub start_time: Option<Timestamp>,
    #[prost(message, optional, tag = "7")]
    pub duration: Option<Duration>,
    #[prost(message, repeated, tag = "8")]
    pub tags: Vec<KeyValue>,
    #[prost(message, repeated, tag = "9")]
    pub logs: Vec<Log>,
    #[prost(message, optional, tag = "10")]
    pub process: Option<Process>,
    #[prost(string, tag = "11")]
    pub process_id: String,
    #[prost(string, repeated, tag = "12")]
    pub warnings: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Batch {
    #[prost(message, repeated, tag = "1")]
    pub spans: Vec<Span>,
    #[prost(message, optional, tag = "2")]
    pub process: Option<Process>,
}

/// `CollectorService/PostSpans` request.
#[derive(Clone, PartialEq, Message)]
pub struct PostSpansRequest {
    #[prost(message, optional, tag = "1")]
    pub batch: Option<Batch>,
}

/// `CollectorService/PostSpans` response: empty.
#[derive(Clone, Copy, PartialEq, Eq, Message)]
pub struct PostSpansResponse {}

/// Decodes a `PostSpansRequest` (the gRPC 14250 message body) into spans.
pub fn decode_post_spans_request(bytes: &[u8]) -> Result<Decoded, CodecError> {
    let request =
        PostSpansRequest::decode(bytes).map_err(|e| CodecError::Protobuf(format!("PostSpansRequest: {e}")))?;
    Ok(batch_to_spans(request.batch.unwrap_or_default()))
}

/// Decodes a bare api_v2 `Batch` in protobuf form.
pub fn decode_batch(bytes: &[u8]) -> Result<Decoded, CodecError> {
    let batch = Batch::decode(bytes).map_err(|e| CodecError::Protobuf(format!("jaeger Batch: {e}")))?;
    Ok(batch_to_spans(batch))
}

// ---- time ----

/// Microseconds since the epoch as a Timestamp; negative inputs clamp to the epoch.
pub fn timestamp_from_micros(micros: i64) -> Timestamp {
    let micros = micros.max(0);
    Timestamp { seconds: micros / 1_000_000, nanos: ((micros % 1_000_000) * 1000) as i32 }
}

pub fn duration_from_micros(micros: i64) -> Duration {
    let micros = micros.max(0);
    Duration { seconds: micros / 1_000_000, nanos: ((micros % 1_000_000) * 1000) as i32 }
}

fn nanos(seconds: i64, nanos: i32) -> u64 {
    let seconds = u64::try_from(seconds).unwrap_or(0);
    let nanos = u64::try_from(nanos).unwrap_or(0);
    seconds.saturating_mul(1_000_000_000).saturating_add(nanos)
}

// ---- Jaeger → model ----

/// Tags the mapping consumes because they stand for model fields.
const OTEL_LIBRARY_NAME: &str = "otel.library.name";
const OTEL_LIBRARY_VERSION: &str = "otel.library.version";
/// The OpenTelemetry convention for a link that came from an OpenTracing reference.
pub const OPENTRACING_REF_TYPE: &str = "opentracing.ref_type";

/// Maps a Jaeger batch onto model spans.
pub fn batch_to_spans(batch: Batch) -> Decoded {
    let mut out = Decoded::default();
    let batch_resource = Arc::new(batch.process.map(process_to_resource).unwrap_or_default());
    // Spans of one batch share their resource and scope allocations.
    let mut resources: Vec<Arc<Resource>> = Vec::new();
    let mut scopes: Vec<Arc<Scope>> = Vec::new();
    out.spans.reserve(batch.spans.len());
    for mut span in batch.spans {
        let resource = match span.process.take() {
            Some(p) => intern(&mut resources, process_to_resource(p)),
            None => Arc::clone(&batch_resource),
        };
        match span_to_model(span, resource, &mut scopes) {
            Ok(s) => out.spans.push(s),
            Err(reason) => out.reject(reason),
        }
    }
    out
}

fn process_to_resource(process: Process) -> Resource {
    let mut attributes = Vec::with_capacity(process.tags.len() + 1);
    if !process.service_name.is_empty() {
        attributes.push(ModelKeyValue::string(semconv::SERVICE_NAME, process.service_name));
    }
    attributes.extend(process.tags.into_iter().map(tag_to_attribute));
    Resource { attributes, dropped_attributes_count: 0 }
}

/// One typed tag as an attribute. An unknown value type keeps the string value.
pub fn tag_to_attribute(tag: KeyValue) -> ModelKeyValue {
    let value = match ValueType::try_from(tag.v_type) {
        Ok(ValueType::Bool) => AttributeValue::Bool(tag.v_bool),
        Ok(ValueType::Int64) => AttributeValue::Int(tag.v_int64),
        Ok(ValueType::Float64) => AttributeValue::Double(tag.v_float64),
        Ok(ValueType::Binary) => AttributeValue::Bytes(tag.v_binary),
        Ok(ValueType::String) | Err(_) => AttributeValue::String(tag.v_str.into()),
    };
    ModelKeyValue { key: tag.key.into(), value }
}

fn trace_id_from(bytes: &[u8]) -> Option<TraceId> {
    <[u8; 16]>::try_from(bytes).ok().map(TraceId::from_bytes)
}

fn span_id_from(bytes: &[u8]) -> Option<SpanId> {
    <[u8; 8]>::try_from(bytes).ok().map(SpanId::from_bytes)
}

fn span_to_model(span: Span, resource: Arc<Resource>, scopes: &mut Vec<Arc<Scope>>) -> Result<ModelSpan, String> {
    let name = span.operation_name;
    let trace_id = trace_id_from(&span.trace_id)
        .filter(|t| t.is_valid())
        .ok_or_else(|| format!("span {name:?}: trace id must be 16 bytes and not zero"))?;
    let span_id = span_id_from(&span.span_id)
        .filter(|s| s.is_valid())
        .ok_or_else(|| format!("span {name:?}: span id must be 8 bytes and not zero"))?;

    // The parent is what Jaeger's `Span.ParentSpanID()` names: the first CHILD_OF
    // reference within the trace, else the first FOLLOWS_FROM one. Every reference except
    // a CHILD_OF parent is also kept as a link, so its type survives.
    let refs: Vec<(TraceId, SpanId, bool)> = span
        .references
        .iter()
        .filter_map(|r| {
            // A reference that points nowhere carries nothing to keep.
            let t = trace_id_from(&r.trace_id)?;
            let s = span_id_from(&r.span_id).filter(|s| s.is_valid())?;
            Some((t, s, r.ref_type != SpanRefType::FollowsFrom as i32))
        })
        .collect();
    let parent_index = refs
        .iter()
        .position(|(t, _, child_of)| *child_of && *t == trace_id)
        .or_else(|| refs.iter().position(|(t, _, _)| *t == trace_id));
    let parent = parent_index.map(|i| refs[i].1).unwrap_or(SpanId::INVALID);
    let links = refs
        .iter()
        .enumerate()
        .filter(|(i, (_, _, child_of))| !(*child_of && Some(*i) == parent_index))
        .map(|(_, (t, s, child_of))| Link {
            trace_id: *t,
            span_id: *s,
            attributes: vec![ModelKeyValue::string(
                OPENTRACING_REF_TYPE,
                if *child_of { "child_of" } else { "follows_from" },
            )],
            ..Default::default()
        })
        .collect();

    let start = span.start_time.map(|t| nanos(t.seconds, t.nanos)).unwrap_or(0);
    let duration = span.duration.map(|d| nanos(d.seconds, d.nanos)).unwrap_or(0);

    let mut kind = SpanKind::Unspecified;
    let mut status = Status::default();
    let mut explicit_status = false;
    let mut error_tag = false;
    let mut scope_name = String::new();
    let mut scope_version = String::new();
    let mut trace_state = String::new();
    let mut attributes = Vec::with_capacity(span.tags.len());
    for tag in span.tags {
        let kv = tag_to_attribute(tag);
        match (kv.key.as_str(), &kv.value) {
            (semconv::JAEGER_SPAN_KIND, AttributeValue::String(s)) => match SpanKind::from_jaeger_str(s) {
                Some(k) => kind = k,
                None => attributes.push(kv),
            },
            (semconv::JAEGER_STATUS_CODE, AttributeValue::String(s)) if s.eq_ignore_ascii_case("ok") => {
                status.code = StatusCode::Ok;
                explicit_status = true;
            }
            (semconv::JAEGER_STATUS_CODE, AttributeValue::String(s)) if s.eq_ignore_ascii_case("error") => {
                status.code = StatusCode::Error;
                explicit_status = true;
            }
            (semconv::JAEGER_STATUS_DESCRIPTION, AttributeValue::String(s)) => status.message = s.to_string(),
            (semconv::JAEGER_ERROR, AttributeValue::Bool(true)) => error_tag = true,
            (semconv::JAEGER_ERROR, AttributeValue::String(s)) if s == "true" => error_tag = true,
            (semconv::JAEGER_SCOPE_NAME | OTEL_LIBRARY_NAME, AttributeValue::String(s)) => scope_name = s.to_string(),
            (semconv::JAEGER_SCOPE_VERSION | OTEL_LIBRARY_VERSION, AttributeValue::String(s)) => {
                scope_version = s.to_string()
            }
            (semconv::JAEGER_TRACE_STATE, AttributeValue::String(s)) => trace_state = s.to_string(),
            _ => attributes.push(kv),
        }
    }
    if error_tag && !explicit_status {
        status.code = StatusCode::Error;
    }

    let events = span.logs.into_iter().map(log_to_event).collect();
    let scope = if scope_name.is_empty() && scope_version.is_empty() {
        intern(scopes, Scope::default())
    } else {
        intern(scopes, Scope { name: scope_name, version: scope_version, ..Default::default() })
    };

    Ok(ModelSpan {
        trace_id,
        span_id,
        parent_span_id: parent,
        trace_state,
        flags: span.flags,
        name: name.into(),
        kind,
        start_time_unix_nano: start,
        end_time_unix_nano: start.saturating_add(duration),
        attributes,
        dropped_attributes_count: 0,
        events,
        dropped_events_count: 0,
        links,
        dropped_links_count: 0,
        status,
        resource,
        scope,
    })
}

/// The log field OpenTelemetry's Jaeger exporters used for the event name before `event`.
const LOG_MESSAGE: &str = "message";

fn log_to_event(log: Log) -> Event {
    let mut attributes: Vec<ModelKeyValue> = log.fields.into_iter().map(tag_to_attribute).collect();
    let name_field = attributes
        .iter()
        .position(|kv| kv.key == semconv::JAEGER_EVENT && matches!(kv.value, AttributeValue::String(_)))
        .or_else(|| {
            attributes.iter().position(|kv| kv.key == LOG_MESSAGE && matches!(kv.value, AttributeValue::String(_)))
        });
    let name = match name_field.map(|i| attributes.remove(i).value) {
        Some(AttributeValue::String(s)) => s,
        _ => Default::default(),
    };
    Event {
        time_unix_nano: log.timestamp.map(|t| nanos(t.seconds, t.nanos)).unwrap_or(0),
        name,
        attributes,
        dropped_attributes_count: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv_str(key: &str, v: &str) -> KeyValue {
        KeyValue { key: key.into(), v_type: ValueType::String as i32, v_str: v.into(), ..Default::default() }
    }

    fn sample_span() -> Span {
        Span {
            trace_id: TraceId::from_parts(0, 0xabc).to_bytes().to_vec(),
            span_id: SpanId(7).to_bytes().to_vec(),
            operation_name: "op".into(),
            references: vec![
                SpanRef {
                    trace_id: TraceId::from_parts(9, 9).to_bytes().to_vec(),
                    span_id: SpanId(1).to_bytes().to_vec(),
                    ref_type: SpanRefType::FollowsFrom as i32,
                },
                SpanRef {
                    trace_id: TraceId::from_parts(0, 0xabc).to_bytes().to_vec(),
                    span_id: SpanId(5).to_bytes().to_vec(),
                    ref_type: SpanRefType::ChildOf as i32,
                },
            ],
            flags: 1,
            start_time: Some(timestamp_from_micros(1_700_000_000_123_456)),
            duration: Some(duration_from_micros(1_500_000)),
            tags: vec![
                kv_str("span.kind", "client"),
                KeyValue { key: "error".into(), v_type: ValueType::Bool as i32, v_bool: true, ..Default::default() },
                kv_str("otel.scope.name", "lib"),
                KeyValue { key: "n".into(), v_type: ValueType::Int64 as i32, v_int64: -3, ..Default::default() },
                KeyValue { key: "d".into(), v_type: ValueType::Float64 as i32, v_float64: 0.5, ..Default::default() },
                KeyValue {
                    key: "b".into(),
                    v_type: ValueType::Binary as i32,
                    v_binary: vec![1, 2],
                    ..Default::default()
                },
                kv_str("span.kind", "sideways"),
            ],
            logs: vec![Log {
                timestamp: Some(timestamp_from_micros(1_700_000_000_200_000)),
                fields: vec![kv_str("event", "retry"), kv_str("attempt", "2")],
            }],
            ..Default::default()
        }
    }

    #[test]
    fn post_spans_request_maps_onto_the_model() {
        let request = PostSpansRequest {
            batch: Some(Batch {
                spans: vec![sample_span()],
                process: Some(Process { service_name: "svc".into(), tags: vec![kv_str("host.name", "h")] }),
            }),
        };
        let decoded = decode_post_spans_request(&request.encode_to_vec()).unwrap();
        assert_eq!(decoded.rejected, 0);
        let span = &decoded.spans[0];
        assert_eq!(span.service_name(), "svc");
        assert_eq!(span.resource.attributes[1], ModelKeyValue::string("host.name", "h"));
        assert_eq!(span.trace_id, TraceId(0xabc));
        assert_eq!(span.parent_span_id, SpanId(5));
        assert_eq!(span.links.len(), 1);
        assert_eq!(span.links[0].trace_id, TraceId::from_parts(9, 9));
        assert_eq!(span.links[0].attributes[0], ModelKeyValue::string(OPENTRACING_REF_TYPE, "follows_from"));
        assert_eq!(span.kind, SpanKind::Client);
        assert_eq!(span.status.code, StatusCode::Error);
        assert_eq!(span.scope.name, "lib");
        assert_eq!(span.start_time_unix_nano, 1_700_000_000_123_456_000);
        assert_eq!(span.duration_nanos(), 1_500_000_000);
        assert_eq!(span.attribute("n"), Some(&AttributeValue::Int(-3)));
        assert_eq!(span.attribute("d"), Some(&AttributeValue::Double(0.5)));
        assert_eq!(span.attribute("b"), Some(&AttributeValue::Bytes(vec![1, 2])));
        // An unknown kind stays visible as a tag rather than vanishing.
        assert_eq!(span.attribute("span.kind"), Some(&AttributeValue::String("sideways".into())));
        assert_eq!(span.attribute("error"), None, "consumed into the status");
        assert_eq!(span.events[0].name, "retry");
        assert_eq!(span.events[0].time_unix_nano, 1_700_000_000_200_000_000);
        assert_eq!(span.events[0].attributes, vec![ModelKeyValue::string("attempt", "2")]);
    }

    #[test]
    fn span_process_wins_and_bad_ids_are_rejected() {
        let mut own = sample_span();
        own.process = Some(Process { service_name: "own".into(), tags: vec![] });
        let mut bad = sample_span();
        bad.trace_id = vec![0; 16];
        let mut short = sample_span();
        short.span_id = vec![1; 4];
        let decoded = batch_to_spans(Batch {
            spans: vec![own, bad, short, sample_span()],
            process: Some(Process { service_name: "batch".into(), tags: vec![] }),
        });
        assert_eq!(decoded.spans.len(), 2);
        assert_eq!(decoded.spans[0].service_name(), "own");
        assert_eq!(decoded.spans[1].service_name(), "batch");
        assert_eq!(decoded.rejected, 2);
        assert!(decoded.rejection_reason.contains("trace id must be 16 bytes and not zero"));
        assert!(decoded.rejection_reason.contains("span id must be 8 bytes"));
    }

    #[test]
    fn many_distinct_processes_keep_their_own_services() {
        // Past the intern pool's limit spans get their own resource; none is mixed up.
        let spans = (0..500)
            .map(|i| {
                let mut s = sample_span();
                s.process = Some(Process { service_name: format!("svc-{i}"), tags: vec![] });
                s
            })
            .collect();
        let decoded = batch_to_spans(Batch { spans, process: None });
        for (i, span) in decoded.spans.iter().enumerate() {
            assert_eq!(span.service_name(), format!("svc-{i}"));
        }
    }

    #[test]
    fn explicit_otel_status_wins_over_the_error_tag() {
        let mut span = sample_span();
        span.tags.push(kv_str("otel.status_code", "OK"));
        span.tags.push(kv_str("otel.status_description", "fine"));
        let decoded = batch_to_spans(Batch { spans: vec![span], process: None });
        assert_eq!(decoded.spans[0].status, Status { code: StatusCode::Ok, message: "fine".into() });
        assert_eq!(decoded.spans[0].service_name(), semconv::UNKNOWN_SERVICE);
    }

    #[test]
    fn malformed_protobuf_is_an_error() {
        let err = decode_post_spans_request(&[0x0a, 0xff, 0xff, 0xff, 0x0f]).unwrap_err();
        assert!(err.to_string().contains("PostSpansRequest"), "{err}");
        let good =
            PostSpansRequest { batch: Some(Batch { spans: vec![sample_span()], process: None }) }.encode_to_vec();
        assert!(decode_post_spans_request(&good[..good.len() - 5]).is_err());
        // Wrong wire type for field 1 (a varint where a message belongs).
        assert!(decode_post_spans_request(&[0x08, 0x01]).is_err());
    }
}
