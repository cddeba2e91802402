//! OpenTelemetry semantic-convention keys Spindle reads, and Jaeger's tag names.

pub const SERVICE_NAME: &str = "service.name";
/// What Jaeger calls a resource that has no `service.name`.
pub const UNKNOWN_SERVICE: &str = "OTLPResourceNoServiceName";

pub const MESSAGING_SYSTEM: &str = "messaging.system";
pub const MESSAGING_DESTINATION_NAME: &str = "messaging.destination.name";
pub const DB_SYSTEM: &str = "db.system";
pub const DB_SYSTEM_NAME: &str = "db.system.name";
pub const PEER_SERVICE: &str = "peer.service";
pub const ERROR_TYPE: &str = "error.type";
pub const EXCEPTION_TYPE: &str = "exception.type";

// Tags Jaeger emits for OTLP spans.
pub const JAEGER_SPAN_KIND: &str = "span.kind";
pub const JAEGER_STATUS_CODE: &str = "otel.status_code";
pub const JAEGER_STATUS_DESCRIPTION: &str = "otel.status_description";
pub const JAEGER_ERROR: &str = "error";
pub const JAEGER_SCOPE_NAME: &str = "otel.scope.name";
pub const JAEGER_SCOPE_VERSION: &str = "otel.scope.version";
pub const JAEGER_TRACE_STATE: &str = "w3c.tracestate";
pub const JAEGER_EVENT: &str = "event";
