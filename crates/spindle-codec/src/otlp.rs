//! OTLP protobuf (`opentelemetry.proto.trace.v1`) ↔ model.
//!
//! Validation happens here, once, for every OTLP transport: a span whose trace id is not
//! 16 non-zero bytes or whose span id is not 8 non-zero bytes is rejected and counted;
//! the rest of the request is kept.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1 as pc;
use opentelemetry_proto::tonic::resource::v1 as pr;
use opentelemetry_proto::tonic::trace::v1 as pt;
use prost::Message;
use spindle_model::{
    AttributeValue, Event, KeyValue, Link, Resource, Scope, Span, SpanId, SpanKind, Status, StatusCode, TraceId,
};

use crate::{CodecError, Decoded};

/// Decodes an `ExportTraceServiceRequest` in protobuf form, straight into spans
/// ([`crate::otlp_wire`]).
pub fn decode_request(bytes: &[u8]) -> Result<Decoded, CodecError> {
    crate::otlp_wire::decode_request(bytes)
}

/// The same through the generated `opentelemetry-proto` types and [`request_to_spans`]: the
/// reference the direct decoder is tested and fuzzed against.
pub fn decode_request_prost(bytes: &[u8]) -> Result<Decoded, CodecError> {
    let request = ExportTraceServiceRequest::decode(bytes).map_err(|e| CodecError::Protobuf(e.to_string()))?;
    Ok(request_to_spans(request))
}

/// Converts a decoded request into spans, rejecting invalid ones.
pub fn request_to_spans(request: ExportTraceServiceRequest) -> Decoded {
    resource_spans_to_spans(request.resource_spans)
}

pub fn resource_spans_to_spans(resource_spans: Vec<pt::ResourceSpans>) -> Decoded {
    let mut out = Decoded::default();
    for rs in resource_spans {
        let resource = Arc::new(rs.resource.map(resource_from_proto).unwrap_or_default());
        for ss in rs.scope_spans {
            let scope = Arc::new(ss.scope.map(scope_from_proto).unwrap_or_default());
            for span in ss.spans {
                match span_from_proto(span, &resource, &scope) {
                    Ok(s) => out.spans.push(s),
                    Err(reason) => out.reject(reason),
                }
            }
        }
    }
    out
}

fn trace_id(bytes: &[u8]) -> Option<TraceId> {
    <[u8; 16]>::try_from(bytes).ok().map(TraceId::from_bytes)
}

fn span_id(bytes: &[u8]) -> Option<SpanId> {
    <[u8; 8]>::try_from(bytes).ok().map(SpanId::from_bytes)
}

fn span_from_proto(span: pt::Span, resource: &Arc<Resource>, scope: &Arc<Scope>) -> Result<Span, String> {
    let tid = trace_id(&span.trace_id)
        .filter(|t| t.is_valid())
        .ok_or_else(|| format!("span {:?}: trace id must be 16 bytes and not all zero", span.name))?;
    let sid = span_id(&span.span_id)
        .filter(|s| s.is_valid())
        .ok_or_else(|| format!("span {:?}: span id must be 8 bytes and not all zero", span.name))?;
    let parent = if span.parent_span_id.is_empty() {
        SpanId::INVALID
    } else {
        span_id(&span.parent_span_id)
            .ok_or_else(|| format!("span {:?}: parent span id must be empty or 8 bytes", span.name))?
    };
    let status = span.status.unwrap_or_default();
    Ok(Span {
        trace_id: tid,
        span_id: sid,
        parent_span_id: parent,
        trace_state: span.trace_state,
        flags: span.flags,
        name: span.name.into(),
        kind: SpanKind::from_otlp(span.kind),
        start_time_unix_nano: span.start_time_unix_nano,
        end_time_unix_nano: span.end_time_unix_nano,
        attributes: attributes_from_proto(span.attributes),
        dropped_attributes_count: span.dropped_attributes_count,
        events: span
            .events
            .into_iter()
            .map(|e| Event {
                time_unix_nano: e.time_unix_nano,
                name: e.name.into(),
                attributes: attributes_from_proto(e.attributes),
                dropped_attributes_count: e.dropped_attributes_count,
            })
            .collect(),
        dropped_events_count: span.dropped_events_count,
        links: span
            .links
            .into_iter()
            // A link must point somewhere; malformed ones are dropped, not the span.
            .filter_map(|l| {
                Some(Link {
                    trace_id: trace_id(&l.trace_id)?,
                    span_id: span_id(&l.span_id)?,
                    trace_state: l.trace_state,
                    attributes: attributes_from_proto(l.attributes),
                    dropped_attributes_count: l.dropped_attributes_count,
                    flags: l.flags,
                })
            })
            .collect(),
        dropped_links_count: span.dropped_links_count,
        status: Status { code: StatusCode::from_otlp(status.code), message: status.message },
        resource: Arc::clone(resource),
        scope: Arc::clone(scope),
    })
}

fn resource_from_proto(r: pr::Resource) -> Resource {
    Resource { attributes: attributes_from_proto(r.attributes), dropped_attributes_count: r.dropped_attributes_count }
}

fn scope_from_proto(s: pc::InstrumentationScope) -> Scope {
    Scope {
        name: s.name,
        version: s.version,
        attributes: attributes_from_proto(s.attributes),
        dropped_attributes_count: s.dropped_attributes_count,
    }
}

fn attributes_from_proto(attributes: Vec<pc::KeyValue>) -> Vec<KeyValue> {
    attributes
        .into_iter()
        .filter_map(|kv| Some(KeyValue { key: kv.key.into(), value: value_from_proto(kv.value?)? }))
        .collect()
}

/// `None` for an empty value (no variant set), which OTLP allows and carries no data.
fn value_from_proto(v: pc::AnyValue) -> Option<AttributeValue> {
    use pc::any_value::Value;
    Some(match v.value? {
        Value::StringValue(s) => AttributeValue::String(s.into()),
        Value::BoolValue(b) => AttributeValue::Bool(b),
        Value::IntValue(i) => AttributeValue::Int(i),
        Value::DoubleValue(d) => AttributeValue::Double(d),
        Value::BytesValue(b) => AttributeValue::Bytes(b),
        Value::ArrayValue(a) => AttributeValue::Array(a.values.into_iter().filter_map(value_from_proto).collect()),
        Value::KvlistValue(m) => AttributeValue::Map(attributes_from_proto(m.values)),
        // Dictionary references belong to the profiles signal; traces carry none.
        Value::StringValueStrindex(_) => return None,
    })
}

// ---- model → protobuf ----

/// Spans of one scope, in their order.
pub type ScopeGroup<'a> = (&'a Arc<Scope>, Vec<&'a Span>);
/// Spans of one resource, by scope.
pub type ResourceGroup<'a> = (&'a Arc<Resource>, Vec<ScopeGroup<'a>>);

/// Groups spans by resource, then scope, each in order of first appearance, keeping span
/// order within each group: the shape of OTLP's `ResourceSpans`.
pub fn group_by_resource_and_scope<'a>(spans: impl IntoIterator<Item = &'a Span>) -> Vec<ResourceGroup<'a>> {
    let mut groups: Vec<ResourceGroup<'a>> = Vec::new();
    for span in spans {
        let r = match groups.iter().position(|(r, _)| Arc::ptr_eq(r, &span.resource) || **r == span.resource) {
            Some(i) => i,
            None => {
                groups.push((&span.resource, Vec::new()));
                groups.len() - 1
            }
        };
        let scopes = &mut groups[r].1;
        match scopes.iter().position(|(s, _)| Arc::ptr_eq(s, &span.scope) || **s == span.scope) {
            Some(i) => scopes[i].1.push(span),
            None => scopes.push((&span.scope, vec![span])),
        }
    }
    groups
}

/// Groups spans by resource and scope into OTLP `ResourceSpans`, keeping span order
/// within each group.
pub fn spans_to_resource_spans<'a>(spans: impl IntoIterator<Item = &'a Span>) -> Vec<pt::ResourceSpans> {
    group_by_resource_and_scope(spans)
        .into_iter()
        .map(|(resource, scopes)| pt::ResourceSpans {
            resource: Some(pr::Resource {
                attributes: attributes_to_proto(&resource.attributes),
                dropped_attributes_count: resource.dropped_attributes_count,
                entity_refs: Vec::new(),
            }),
            scope_spans: scopes
                .into_iter()
                .map(|(scope, spans)| pt::ScopeSpans {
                    scope: Some(pc::InstrumentationScope {
                        name: scope.name.clone(),
                        version: scope.version.clone(),
                        attributes: attributes_to_proto(&scope.attributes),
                        dropped_attributes_count: scope.dropped_attributes_count,
                    }),
                    spans: spans.into_iter().map(span_to_proto).collect(),
                    schema_url: String::new(),
                })
                .collect(),
            schema_url: String::new(),
        })
        .collect()
}

fn span_to_proto(s: &Span) -> pt::Span {
    pt::Span {
        trace_id: s.trace_id.to_bytes().to_vec(),
        span_id: s.span_id.to_bytes().to_vec(),
        trace_state: s.trace_state.clone(),
        parent_span_id: if s.parent_span_id.is_valid() { s.parent_span_id.to_bytes().to_vec() } else { Vec::new() },
        flags: s.flags,
        name: s.name.to_string(),
        kind: s.kind.to_otlp(),
        start_time_unix_nano: s.start_time_unix_nano,
        end_time_unix_nano: s.end_time_unix_nano,
        attributes: attributes_to_proto(&s.attributes),
        dropped_attributes_count: s.dropped_attributes_count,
        events: s
            .events
            .iter()
            .map(|e| pt::span::Event {
                time_unix_nano: e.time_unix_nano,
                name: e.name.to_string(),
                attributes: attributes_to_proto(&e.attributes),
                dropped_attributes_count: e.dropped_attributes_count,
            })
            .collect(),
        dropped_events_count: s.dropped_events_count,
        links: s
            .links
            .iter()
            .map(|l| pt::span::Link {
                trace_id: l.trace_id.to_bytes().to_vec(),
                span_id: l.span_id.to_bytes().to_vec(),
                trace_state: l.trace_state.clone(),
                attributes: attributes_to_proto(&l.attributes),
                dropped_attributes_count: l.dropped_attributes_count,
                flags: l.flags,
            })
            .collect(),
        dropped_links_count: s.dropped_links_count,
        status: Some(pt::Status { message: s.status.message.clone(), code: s.status.code.to_otlp() }),
    }
}

fn attributes_to_proto(attributes: &[KeyValue]) -> Vec<pc::KeyValue> {
    attributes
        .iter()
        .map(|kv| pc::KeyValue { key: kv.key.to_string(), value: Some(value_to_proto(&kv.value)), key_strindex: 0 })
        .collect()
}

fn value_to_proto(v: &AttributeValue) -> pc::AnyValue {
    use pc::any_value::Value;
    let value = match v {
        AttributeValue::String(s) => Value::StringValue(s.to_string()),
        AttributeValue::Bool(b) => Value::BoolValue(*b),
        AttributeValue::Int(i) => Value::IntValue(*i),
        AttributeValue::Double(d) => Value::DoubleValue(*d),
        AttributeValue::Bytes(b) => Value::BytesValue(b.clone()),
        AttributeValue::Array(items) => {
            Value::ArrayValue(pc::ArrayValue { values: items.iter().map(value_to_proto).collect() })
        }
        AttributeValue::Map(entries) => Value::KvlistValue(pc::KeyValueList { values: attributes_to_proto(entries) }),
    };
    pc::AnyValue { value: Some(value) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto_span(trace: Vec<u8>, span: Vec<u8>) -> pt::Span {
        pt::Span { trace_id: trace, span_id: span, name: "op".into(), ..Default::default() }
    }

    fn request(spans: Vec<pt::Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![pt::ResourceSpans {
                resource: Some(pr::Resource {
                    attributes: vec![pc::KeyValue {
                        key: "service.name".into(),
                        value: Some(pc::AnyValue { value: Some(pc::any_value::Value::StringValue("svc".into())) }),
                        key_strindex: 0,
                    }],
                    ..Default::default()
                }),
                scope_spans: vec![pt::ScopeSpans { spans, ..Default::default() }],
                schema_url: String::new(),
            }],
        }
    }

    #[test]
    fn invalid_ids_are_rejected_and_counted_the_rest_kept() {
        let decoded = request_to_spans(request(vec![
            proto_span(vec![1; 16], vec![2; 8]),
            proto_span(vec![0; 16], vec![2; 8]),
            proto_span(vec![1; 15], vec![2; 8]),
            proto_span(vec![1; 16], vec![0; 8]),
        ]));
        assert_eq!(decoded.spans.len(), 1);
        assert_eq!(decoded.rejected, 3);
        assert!(decoded.rejection_reason.contains("trace id must be 16 bytes and not all zero"));
        assert!(decoded.rejection_reason.contains("span id must be 8 bytes"));
        assert_eq!(decoded.spans[0].service_name(), "svc");
    }

    #[test]
    fn model_round_trips_through_protobuf() {
        let mut span = proto_span(vec![1; 16], vec![2; 8]);
        span.parent_span_id = vec![3; 8];
        span.kind = 3;
        span.status = Some(pt::Status { code: 2, message: "boom".into() });
        span.attributes = vec![pc::KeyValue {
            key: "arr".into(),
            value: Some(pc::AnyValue {
                value: Some(pc::any_value::Value::ArrayValue(pc::ArrayValue {
                    values: vec![pc::AnyValue { value: Some(pc::any_value::Value::IntValue(7)) }],
                })),
            }),
            key_strindex: 0,
        }];
        let bytes = request(vec![span]).encode_to_vec();
        let decoded = decode_request(&bytes).unwrap();
        let again = ExportTraceServiceRequest { resource_spans: spans_to_resource_spans(&decoded.spans) };
        let decoded_again = decode_request(&again.encode_to_vec()).unwrap();
        assert_eq!(decoded, decoded_again);
        assert_eq!(decoded.spans[0].kind, SpanKind::Client);
        assert_eq!(decoded.spans[0].status.code, StatusCode::Error);
    }

    #[test]
    fn garbage_and_truncated_protobuf_are_errors() {
        assert!(decode_request(&[0xff, 0xff, 0xff]).is_err());
        let bytes = request(vec![proto_span(vec![1; 16], vec![2; 8])]).encode_to_vec();
        assert!(decode_request(&bytes[..bytes.len() - 3]).is_err());
    }
}
