use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ids::{SpanId, TraceId};
use crate::semconv;

/// The model's text for names, attribute keys and string values: strings of up to 24 bytes
/// (nearly every key, operation name and short value) are stored inline instead of in an
/// allocation of their own, which the receivers would make and the flushers free for every
/// attribute of every span.
pub type Text = compact_str::CompactString;

/// A typed attribute value, as OpenTelemetry defines `AnyValue`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AttributeValue {
    String(Text),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(Vec<u8>),
    Array(Vec<AttributeValue>),
    Map(Vec<KeyValue>),
}

impl AttributeValue {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            AttributeValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a user would type it in a search box: strings bare, numbers and
    /// booleans in their usual text form, composites as JSON-like text.
    pub fn to_display_string(&self) -> String {
        match self {
            AttributeValue::String(s) => s.to_string(),
            AttributeValue::Bool(b) => b.to_string(),
            AttributeValue::Int(i) => i.to_string(),
            AttributeValue::Double(d) => d.to_string(),
            AttributeValue::Bytes(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
            AttributeValue::Array(items) => {
                let parts: Vec<String> = items.iter().map(AttributeValue::to_json_text).collect();
                format!("[{}]", parts.join(","))
            }
            AttributeValue::Map(entries) => {
                let parts: Vec<String> =
                    entries.iter().map(|kv| format!("{}:{}", json_quote(&kv.key), kv.value.to_json_text())).collect();
                format!("{{{}}}", parts.join(","))
            }
        }
    }

    fn to_json_text(&self) -> String {
        match self {
            AttributeValue::String(s) => json_quote(s),
            AttributeValue::Double(d) if !d.is_finite() => json_quote(&d.to_string()),
            other => other.to_display_string(),
        }
    }

    /// Whether `text` names this value in a search (`key=value` filters are textual).
    pub fn matches_text(&self, text: &str) -> bool {
        match self {
            AttributeValue::String(s) => s == text,
            AttributeValue::Bool(b) => text.parse::<bool>().is_ok_and(|t| t == *b),
            AttributeValue::Int(i) => text.parse::<i64>().is_ok_and(|t| t == *i),
            AttributeValue::Double(d) => text.parse::<f64>().is_ok_and(|t| t == *d),
            other => other.to_display_string() == text,
        }
    }
}

fn json_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: Text,
    pub value: AttributeValue,
}

impl KeyValue {
    pub fn new(key: impl Into<Text>, value: AttributeValue) -> Self {
        KeyValue { key: key.into(), value }
    }

    pub fn string(key: impl Into<Text>, value: impl Into<Text>) -> Self {
        KeyValue::new(key, AttributeValue::String(value.into()))
    }
}

/// Finds the first attribute named `key`.
pub fn find_attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a AttributeValue> {
    attributes.iter().find(|kv| kv.key == key).map(|kv| &kv.value)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub enum SpanKind {
    #[default]
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

impl SpanKind {
    /// The OTLP enum number.
    pub fn to_otlp(self) -> i32 {
        match self {
            SpanKind::Unspecified => 0,
            SpanKind::Internal => 1,
            SpanKind::Server => 2,
            SpanKind::Client => 3,
            SpanKind::Producer => 4,
            SpanKind::Consumer => 5,
        }
    }

    /// Unknown numbers become `Unspecified`, as the OTLP specification asks of receivers.
    pub fn from_otlp(value: i32) -> Self {
        match value {
            1 => SpanKind::Internal,
            2 => SpanKind::Server,
            3 => SpanKind::Client,
            4 => SpanKind::Producer,
            5 => SpanKind::Consumer,
            _ => SpanKind::Unspecified,
        }
    }

    /// The lowercase name Jaeger uses in the `span.kind` tag and the operations API;
    /// empty for unspecified.
    pub fn as_jaeger_str(self) -> &'static str {
        match self {
            SpanKind::Unspecified => "",
            SpanKind::Internal => "internal",
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            SpanKind::Producer => "producer",
            SpanKind::Consumer => "consumer",
        }
    }

    pub fn from_jaeger_str(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "" | "unspecified" => SpanKind::Unspecified,
            "internal" => SpanKind::Internal,
            "server" => SpanKind::Server,
            "client" => SpanKind::Client,
            "producer" => SpanKind::Producer,
            "consumer" => SpanKind::Consumer,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub enum StatusCode {
    #[default]
    Unset,
    Ok,
    Error,
}

impl StatusCode {
    pub fn to_otlp(self) -> i32 {
        match self {
            StatusCode::Unset => 0,
            StatusCode::Ok => 1,
            StatusCode::Error => 2,
        }
    }

    pub fn from_otlp(value: i32) -> Self {
        match value {
            1 => StatusCode::Ok,
            2 => StatusCode::Error,
            _ => StatusCode::Unset,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Status {
    pub code: StatusCode,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Event {
    pub time_unix_nano: u64,
    pub name: Text,
    pub attributes: Vec<KeyValue>,
    pub dropped_attributes_count: u32,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Link {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub trace_state: String,
    pub attributes: Vec<KeyValue>,
    pub dropped_attributes_count: u32,
    pub flags: u32,
}

/// The entity that produced spans: `service.name` and the rest of its attributes.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Resource {
    pub attributes: Vec<KeyValue>,
    pub dropped_attributes_count: u32,
}

impl Resource {
    /// `service.name`, or the name Jaeger gives a resource without one.
    pub fn service_name(&self) -> &str {
        find_attribute(&self.attributes, semconv::SERVICE_NAME)
            .and_then(AttributeValue::as_str)
            .unwrap_or(semconv::UNKNOWN_SERVICE)
    }
}

/// The instrumentation scope (library) that created spans.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Scope {
    pub name: String,
    pub version: String,
    pub attributes: Vec<KeyValue>,
    pub dropped_attributes_count: u32,
}

/// `service.name` of each span in turn, looked up once per run of spans sharing a resource
/// (a batch's spans come grouped by resource): the per-span lookup in the resource's
/// attributes showed in the receivers' profile, which asks for it several times per span.
#[derive(Default)]
pub struct ServiceNames<'a> {
    last: Option<(&'a Arc<Resource>, &'a str)>,
}

impl<'a> ServiceNames<'a> {
    pub fn of(&mut self, span: &'a Span) -> &'a str {
        match self.last {
            Some((r, name)) if Arc::ptr_eq(r, &span.resource) => name,
            _ => {
                let name = span.resource.service_name();
                self.last = Some((&span.resource, name));
                name
            }
        }
    }
}

/// One span. Resource and scope are shared between the spans of one batch.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Span {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// `SpanId::INVALID` for a root span.
    pub parent_span_id: SpanId,
    pub trace_state: String,
    pub flags: u32,
    pub name: Text,
    pub kind: SpanKind,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub attributes: Vec<KeyValue>,
    pub dropped_attributes_count: u32,
    pub events: Vec<Event>,
    pub dropped_events_count: u32,
    pub links: Vec<Link>,
    pub dropped_links_count: u32,
    pub status: Status,
    pub resource: Arc<Resource>,
    pub scope: Arc<Scope>,
}

impl Span {
    /// The text a span is grouped by for `key`: `service.name` (or `service`) and
    /// `span.name` (or `operation`) name its service and name; any other key reads the
    /// span's first attribute with that key, else its resource's, as display text.
    pub fn group_text(&self, key: &str) -> Option<std::borrow::Cow<'_, str>> {
        use std::borrow::Cow;
        match key {
            "service.name" | "service" => return Some(Cow::Borrowed(self.service_name())),
            "span.name" | "operation" => return Some(Cow::Borrowed(&self.name)),
            _ => {}
        }
        self.attribute(key).or_else(|| find_attribute(&self.resource.attributes, key)).map(|v| match v {
            AttributeValue::String(s) => Cow::Borrowed(s.as_str()),
            other => Cow::Owned(other.to_display_string()),
        })
    }

    pub fn service_name(&self) -> &str {
        self.resource.service_name()
    }

    /// Duration in nanoseconds; a span that ends before it starts has duration zero.
    pub fn duration_nanos(&self) -> u64 {
        self.end_time_unix_nano.saturating_sub(self.start_time_unix_nano)
    }

    pub fn attribute(&self, key: &str) -> Option<&AttributeValue> {
        find_attribute(&self.attributes, key)
    }

    pub fn is_error(&self) -> bool {
        self.status.code == StatusCode::Error
    }

    pub fn is_root(&self) -> bool {
        !self.parent_span_id.is_valid()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_name_falls_back_like_jaeger() {
        assert_eq!(Resource::default().service_name(), "OTLPResourceNoServiceName");
        let r = Resource { attributes: vec![KeyValue::string("service.name", "api")], ..Default::default() };
        assert_eq!(r.service_name(), "api");
    }

    #[test]
    fn attribute_text_matching_is_typed() {
        assert!(AttributeValue::Int(200).matches_text("200"));
        assert!(!AttributeValue::Int(200).matches_text("200.5"));
        assert!(AttributeValue::Bool(true).matches_text("true"));
        assert!(AttributeValue::Double(1.5).matches_text("1.5"));
        assert!(AttributeValue::String("a b".into()).matches_text("a b"));
        let arr = AttributeValue::Array(vec![AttributeValue::String("x".into()), AttributeValue::Int(2)]);
        assert_eq!(arr.to_display_string(), r#"["x",2]"#);
    }

    #[test]
    fn kinds_round_trip_through_otlp_numbers() {
        for n in 0..6 {
            assert_eq!(SpanKind::from_otlp(n).to_otlp(), n);
        }
        assert_eq!(SpanKind::from_otlp(99), SpanKind::Unspecified);
    }
}
