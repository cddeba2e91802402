//! Model → the JSON of Jaeger's query API (`/api/traces`), exactly as Jaeger serves it.
//!
//! The rules, from Jaeger's `uimodel` converter: lowercase hex ids (16 characters for a
//! trace id whose high half is zero), µs times, processes deduplicated as `p1`, `p2`, … in
//! order of first appearance, `references`/`tags`/`logs` always arrays, `warnings` null
//! when empty, `flags` omitted when zero, int64 tags beyond ±(2^53−1) as strings, binary
//! tags as base64, maps and arrays as JSON text. OTLP-only fields become the tags Jaeger
//! emits for OTLP spans: `span.kind`, `otel.status_code`, `otel.status_description`,
//! `error=true`, `otel.scope.name`, `otel.scope.version`, `w3c.tracestate`.

use base64::Engine;
use serde::Serialize;
use serde_json::{json, Value};
use spindle_model::{semconv, AttributeValue, KeyValue, Span, SpanKind, StatusCode, TraceId};

const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Trace {
    #[serde(rename = "traceID")]
    pub trace_id: String,
    pub spans: Vec<JaegerSpan>,
    /// Kept in `p1, p2, …` order.
    pub processes: serde_json::Map<String, Value>,
    pub warnings: Option<Vec<String>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JaegerSpan {
    #[serde(rename = "traceID")]
    pub trace_id: String,
    #[serde(rename = "spanID")]
    pub span_id: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub flags: u32,
    pub operation_name: String,
    pub references: Vec<Reference>,
    pub start_time: u64,
    pub duration: u64,
    pub tags: Vec<Tag>,
    pub logs: Vec<Log>,
    #[serde(rename = "processID")]
    pub process_id: String,
    pub warnings: Option<Vec<String>>,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reference {
    pub ref_type: &'static str,
    #[serde(rename = "traceID")]
    pub trace_id: String,
    #[serde(rename = "spanID")]
    pub span_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tag {
    pub key: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub value: Value,
}

#[derive(Debug, Serialize)]
pub struct Log {
    pub timestamp: u64,
    pub fields: Vec<Tag>,
}

/// One attribute as a Jaeger tag.
pub fn tag(key: &str, value: &AttributeValue) -> Tag {
    let (kind, value) = match value {
        AttributeValue::String(s) => ("string", Value::String(s.to_string())),
        AttributeValue::Bool(b) => ("bool", Value::Bool(*b)),
        AttributeValue::Int(i) if (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(i) => ("int64", json!(i)),
        AttributeValue::Int(i) => ("int64", Value::String(i.to_string())),
        AttributeValue::Double(d) => match serde_json::Number::from_f64(*d) {
            Some(n) => ("float64", Value::Number(n)),
            // JSON has no NaN or infinity; Jaeger's Go encoder would fail, we keep the text.
            None => ("string", Value::String(d.to_string())),
        },
        AttributeValue::Bytes(b) => ("binary", Value::String(base64::engine::general_purpose::STANDARD.encode(b))),
        composite => ("string", Value::String(composite.to_display_string())),
    };
    Tag { key: key.to_string(), kind, value }
}

fn tags(attributes: &[KeyValue]) -> Vec<Tag> {
    attributes.iter().map(|kv| tag(&kv.key, &kv.value)).collect()
}

fn str_tag(key: &str, value: &str) -> Tag {
    Tag { key: key.to_string(), kind: "string", value: Value::String(value.to_string()) }
}

/// The span's own tags followed by those derived from OTLP-only fields.
pub fn span_tags(span: &Span) -> Vec<Tag> {
    let mut out = tags(&span.attributes);
    if !span.scope.name.is_empty() {
        out.push(str_tag(semconv::JAEGER_SCOPE_NAME, &span.scope.name));
    }
    if !span.scope.version.is_empty() {
        out.push(str_tag(semconv::JAEGER_SCOPE_VERSION, &span.scope.version));
    }
    if span.kind != SpanKind::Unspecified {
        out.push(str_tag(semconv::JAEGER_SPAN_KIND, span.kind.as_jaeger_str()));
    }
    match span.status.code {
        StatusCode::Unset => {}
        StatusCode::Ok => out.push(str_tag(semconv::JAEGER_STATUS_CODE, "OK")),
        StatusCode::Error => {
            out.push(str_tag(semconv::JAEGER_STATUS_CODE, "ERROR"));
            out.push(Tag { key: semconv::JAEGER_ERROR.into(), kind: "bool", value: Value::Bool(true) });
        }
    }
    if !span.status.message.is_empty() {
        out.push(str_tag(semconv::JAEGER_STATUS_DESCRIPTION, &span.status.message));
    }
    if !span.trace_state.is_empty() {
        out.push(str_tag(semconv::JAEGER_TRACE_STATE, &span.trace_state));
    }
    out
}

fn process_json(span: &Span) -> Value {
    let tags: Vec<Tag> = span
        .resource
        .attributes
        .iter()
        .filter(|kv| kv.key != semconv::SERVICE_NAME)
        .map(|kv| tag(&kv.key, &kv.value))
        .collect();
    json!({ "serviceName": span.service_name(), "tags": tags })
}

/// Builds one Jaeger trace from its spans, ordered by start time.
pub fn trace(trace_id: TraceId, spans: &[Span]) -> Trace {
    let mut ordered: Vec<&Span> = spans.iter().collect();
    ordered.sort_by_key(|s| (s.start_time_unix_nano, s.span_id));
    let mut processes = serde_json::Map::new();
    let mut process_keys: Vec<(Value, String)> = Vec::new();
    let mut out = Vec::with_capacity(ordered.len());
    for span in ordered {
        let process = process_json(span);
        let process_id = match process_keys.iter().find(|(p, _)| *p == process) {
            Some((_, key)) => key.clone(),
            None => {
                let key = format!("p{}", process_keys.len() + 1);
                processes.insert(key.clone(), process.clone());
                process_keys.push((process, key.clone()));
                key
            }
        };
        out.push(span_json(span, process_id));
    }
    Trace { trace_id: trace_id.to_jaeger_hex(), spans: out, processes, warnings: None }
}

fn span_json(span: &Span, process_id: String) -> JaegerSpan {
    let mut references = Vec::with_capacity(1 + span.links.len());
    if span.parent_span_id.is_valid() {
        references.push(Reference {
            ref_type: "CHILD_OF",
            trace_id: span.trace_id.to_jaeger_hex(),
            span_id: span.parent_span_id.to_hex(),
        });
    }
    for link in &span.links {
        references.push(Reference {
            ref_type: "FOLLOWS_FROM",
            trace_id: link.trace_id.to_jaeger_hex(),
            span_id: link.span_id.to_hex(),
        });
    }
    let logs = span
        .events
        .iter()
        .map(|e| {
            let mut fields = vec![str_tag(semconv::JAEGER_EVENT, &e.name)];
            fields.extend(tags(&e.attributes));
            Log { timestamp: e.time_unix_nano / 1000, fields }
        })
        .collect();
    JaegerSpan {
        trace_id: span.trace_id.to_jaeger_hex(),
        span_id: span.span_id.to_hex(),
        flags: span.flags & 0xff,
        operation_name: span.name.to_string(),
        references,
        start_time: span.start_time_unix_nano / 1000,
        duration: span.duration_nanos() / 1000,
        tags: span_tags(span),
        logs,
        process_id,
        warnings: None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use spindle_model::{Event, Link, Resource, Scope, SpanId, Status};

    use super::*;

    fn sample() -> Vec<Span> {
        let resource = Arc::new(Resource {
            attributes: vec![KeyValue::string("service.name", "service-x"), KeyValue::string("host.name", "h1")],
            ..Default::default()
        });
        let scope = Arc::new(Scope { name: "lib".into(), version: "1.2".into(), ..Default::default() });
        let root = Span {
            trace_id: TraceId(1),
            span_id: SpanId(2),
            name: "some-operation".into(),
            kind: SpanKind::Server,
            flags: 0x101,
            start_time_unix_nano: 1_485_467_191_639_875_000,
            end_time_unix_nano: 1_485_467_191_639_880_000,
            attributes: vec![
                KeyValue::new("peer.ipv4", AttributeValue::Int(23456)),
                KeyValue::new("temperature", AttributeValue::Double(72.5)),
                KeyValue::new("javascript_limit", AttributeValue::Int(9_223_372_036_854_775_222)),
                KeyValue::new("blob", AttributeValue::Bytes(vec![0, 0, 0x30, 0x39])),
                KeyValue::new(
                    "list",
                    AttributeValue::Array(vec![AttributeValue::Int(1), AttributeValue::String("a".into())]),
                ),
            ],
            events: vec![Event {
                time_unix_nano: 1_485_467_191_639_875_000,
                name: "some-event".into(),
                attributes: vec![KeyValue::string("k", "v")],
                ..Default::default()
            }],
            status: Status { code: StatusCode::Error, message: "boom".into() },
            resource: resource.clone(),
            scope: scope.clone(),
            ..Default::default()
        };
        let child = Span {
            trace_id: TraceId(1),
            span_id: SpanId(3),
            parent_span_id: SpanId(2),
            name: "child".into(),
            start_time_unix_nano: 1_485_467_191_639_876_000,
            end_time_unix_nano: 1_485_467_191_639_877_000,
            links: vec![Link { trace_id: TraceId::from_parts(5, 6), span_id: SpanId(7), ..Default::default() }],
            resource: Arc::new(Resource {
                attributes: vec![KeyValue::string("service.name", "service-y")],
                ..Default::default()
            }),
            scope,
            ..Default::default()
        };
        vec![child, root]
    }

    /// Golden test: the shape of Jaeger's `ui_01.json` fixture, field for field.
    #[test]
    fn trace_matches_jaeger_fixture_shape() {
        let json = serde_json::to_value(trace(TraceId(1), &sample())).unwrap();
        let expected = json!({
          "traceID": "0000000000000001",
          "spans": [
            {"traceID": "0000000000000001", "spanID": "0000000000000002", "flags": 1,
             "operationName": "some-operation", "references": [],
             "startTime": 1485467191639875u64, "duration": 5,
             "tags": [
               {"key": "peer.ipv4", "type": "int64", "value": 23456},
               {"key": "temperature", "type": "float64", "value": 72.5},
               {"key": "javascript_limit", "type": "int64", "value": "9223372036854775222"},
               {"key": "blob", "type": "binary", "value": "AAAwOQ=="},
               {"key": "list", "type": "string", "value": "[1,\"a\"]"},
               {"key": "otel.scope.name", "type": "string", "value": "lib"},
               {"key": "otel.scope.version", "type": "string", "value": "1.2"},
               {"key": "span.kind", "type": "string", "value": "server"},
               {"key": "otel.status_code", "type": "string", "value": "ERROR"},
               {"key": "error", "type": "bool", "value": true},
               {"key": "otel.status_description", "type": "string", "value": "boom"}
             ],
             "logs": [{"timestamp": 1485467191639875u64, "fields": [
               {"key": "event", "type": "string", "value": "some-event"},
               {"key": "k", "type": "string", "value": "v"}]}],
             "processID": "p1", "warnings": null},
            {"traceID": "0000000000000001", "spanID": "0000000000000003",
             "operationName": "child",
             "references": [
               {"refType": "CHILD_OF", "traceID": "0000000000000001", "spanID": "0000000000000002"},
               {"refType": "FOLLOWS_FROM", "traceID": "00000000000000050000000000000006", "spanID": "0000000000000007"}
             ],
             "startTime": 1485467191639876u64, "duration": 1,
             "tags": [
               {"key": "otel.scope.name", "type": "string", "value": "lib"},
               {"key": "otel.scope.version", "type": "string", "value": "1.2"}
             ],
             "logs": [], "processID": "p2", "warnings": null}
          ],
          "processes": {
            "p1": {"serviceName": "service-x", "tags": [{"key": "host.name", "type": "string", "value": "h1"}]},
            "p2": {"serviceName": "service-y", "tags": []}
          },
          "warnings": null
        });
        assert_eq!(json, expected);
    }
}
