//! What a trace search asks for, and how one span is tested against it.

use spindle_model::{semconv, KeyValue, Span, SpanKind, StatusCode};

/// A search. Every filter applies to one span: a trace matches when one of its spans
/// matches all filters at once.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceQuery {
    /// `None` searches all services.
    pub service: Option<String>,
    pub operation: Option<String>,
    pub span_kind: Option<SpanKind>,
    /// `key=value` pairs; a pair matches a span attribute, a resource attribute, an event
    /// attribute, or one of the tags Jaeger derives from kind, status and scope.
    pub attributes: Vec<(String, String)>,
    pub start_time_min_unix_nano: u64,
    pub start_time_max_unix_nano: u64,
    pub duration_min_nanos: Option<u64>,
    pub duration_max_nanos: Option<u64>,
    pub limit: usize,
}

impl Default for TraceQuery {
    fn default() -> Self {
        TraceQuery {
            service: None,
            operation: None,
            span_kind: None,
            attributes: Vec::new(),
            start_time_min_unix_nano: 0,
            start_time_max_unix_nano: u64::MAX,
            duration_min_nanos: None,
            duration_max_nanos: None,
            limit: 100,
        }
    }
}

/// An operation of a service: span name and kind.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Operation {
    pub name: String,
    pub kind: SpanKind,
}

fn any_matches(attributes: &[KeyValue], key: &str, value: &str) -> bool {
    attributes.iter().any(|kv| kv.key == key && kv.value.matches_text(value))
}

fn derived_tag_matches(span: &Span, key: &str, value: &str) -> bool {
    match key {
        semconv::JAEGER_SPAN_KIND => span.kind != SpanKind::Unspecified && span.kind.as_jaeger_str() == value,
        semconv::JAEGER_ERROR => span.is_error() && value == "true",
        semconv::JAEGER_STATUS_CODE => match span.status.code {
            StatusCode::Ok => value == "OK",
            StatusCode::Error => value == "ERROR",
            StatusCode::Unset => false,
        },
        semconv::JAEGER_STATUS_DESCRIPTION => !span.status.message.is_empty() && span.status.message == value,
        semconv::JAEGER_SCOPE_NAME => !span.scope.name.is_empty() && span.scope.name == value,
        semconv::JAEGER_SCOPE_VERSION => !span.scope.version.is_empty() && span.scope.version == value,
        _ => false,
    }
}

/// Whether `key=value` holds for a span, looking where Jaeger looks.
pub fn tag_matches(span: &Span, key: &str, value: &str) -> bool {
    any_matches(&span.attributes, key, value)
        || any_matches(&span.resource.attributes, key, value)
        || span
            .events
            .iter()
            .any(|e| any_matches(&e.attributes, key, value) || (key == semconv::JAEGER_EVENT && e.name == value))
        || derived_tag_matches(span, key, value)
}

impl TraceQuery {
    pub fn matches_span(&self, span: &Span) -> bool {
        if let Some(service) = &self.service {
            if span.service_name() != service {
                return false;
            }
        }
        if let Some(operation) = &self.operation {
            if span.name != operation {
                return false;
            }
        }
        if let Some(kind) = self.span_kind {
            if span.kind != kind {
                return false;
            }
        }
        let start = span.start_time_unix_nano;
        if start < self.start_time_min_unix_nano || start > self.start_time_max_unix_nano {
            return false;
        }
        let duration = span.duration_nanos();
        if self.duration_min_nanos.is_some_and(|min| duration < min)
            || self.duration_max_nanos.is_some_and(|max| duration > max)
        {
            return false;
        }
        self.attributes.iter().all(|(k, v)| tag_matches(span, k, v))
    }
}
