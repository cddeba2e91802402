//! Zipkin → model: v2 JSON and v2 proto3 `ListOfSpans` (`POST /api/v2/spans`), and v1
//! JSON (`POST /api/v1/spans`).
//!
//! All three are first normalized into one v2-shaped span, then mapped once:
//! - `localEndpoint.serviceName` → resource `service.name`; the local address and port →
//!   `network.local.address` / `network.local.port`;
//! - `remoteEndpoint` → `peer.service`, `network.peer.address`, `network.peer.port`;
//! - `kind` CLIENT/SERVER/PRODUCER/CONSUMER → the same kind; absent → unspecified;
//! - `timestamp`/`duration` µs → start/end ns;
//! - annotations → events named by their value. OpenTelemetry's Zipkin exporters write
//!   an event as the JSON text `{"<name>":{<attributes>}}`; such a value is unpacked back
//!   into the event's name and typed attributes;
//! - tags → string attributes, except the ones that stand for model fields: `error` →
//!   error status (its value, when not `"true"`, is the status message), `otel.status_code`
//!   and `otel.status_description` → status, `otel.scope.name`/`otel.scope.version` (and
//!   `otel.library.*`) → scope;
//! - `debug` → flags 0b11 (sampled and debug, as Jaeger's flags), otherwise 0b01;
//! - `shared` on a SERVER span (the server half of an RPC whose client reported the same
//!   id) → the span gets an id derived from the shared one and the shared id as parent, so
//!   client and server stay two distinct spans of one tree, as Jaeger's
//!   dedupe-span-ids adjuster arranges at query time.
//!
//! A span with a missing, malformed or zero trace id or id is rejected and counted; a body
//! that is not the expected JSON or protobuf is an error. This module does no IO.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use prost::Message;
use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_json::Value;
use spindle_model::{
    semconv, AttributeValue, Event, KeyValue, Resource, Scope, Span, SpanId, SpanKind, Status, StatusCode, TraceId,
};

use crate::{intern, CodecError, Decoded};

/// Attribute keys the endpoint mapping writes (OpenTelemetry semantic conventions).
pub const NETWORK_PEER_ADDRESS: &str = "network.peer.address";
pub const NETWORK_PEER_PORT: &str = "network.peer.port";
pub const NETWORK_LOCAL_ADDRESS: &str = "network.local.address";
pub const NETWORK_LOCAL_PORT: &str = "network.local.port";

const OTEL_LIBRARY_NAME: &str = "otel.library.name";
const OTEL_LIBRARY_VERSION: &str = "otel.library.version";

/// Decodes a Zipkin v2 JSON body (`application/json` on `/api/v2/spans`).
pub fn decode_v2_json(body: &[u8]) -> Result<Decoded, CodecError> {
    let spans: Vec<JsonSpan> =
        serde_json::from_slice(body).map_err(|e| CodecError::Json(format!("zipkin v2 spans: {e}")))?;
    let mut out = Decoded::default();
    let mut pools = Pools::default();
    for span in spans {
        match span.normalize() {
            Ok(z) => push(&mut out, &mut pools, z),
            Err(reason) => out.reject(reason),
        }
    }
    Ok(out)
}

/// Decodes a Zipkin v2 proto3 `ListOfSpans` (`application/x-protobuf` on `/api/v2/spans`).
pub fn decode_v2_proto(body: &[u8]) -> Result<Decoded, CodecError> {
    let list = ListOfSpans::decode(body).map_err(|e| CodecError::Protobuf(format!("zipkin ListOfSpans: {e}")))?;
    let mut out = Decoded::default();
    let mut pools = Pools::default();
    for span in list.spans {
        match span.normalize() {
            Ok(z) => push(&mut out, &mut pools, z),
            Err(reason) => out.reject(reason),
        }
    }
    Ok(out)
}

/// Decodes a Zipkin v1 JSON body (`/api/v1/spans`). A v1 span that carries both the
/// client (`cs`/`cr`) and the server (`sr`/`ss`) side becomes two spans, as Zipkin's own
/// v1 → v2 conversion does.
pub fn decode_v1_json(body: &[u8]) -> Result<Decoded, CodecError> {
    let spans: Vec<V1Span> =
        serde_json::from_slice(body).map_err(|e| CodecError::Json(format!("zipkin v1 spans: {e}")))?;
    let mut out = Decoded::default();
    let mut pools = Pools::default();
    for span in spans {
        match span.normalize() {
            Ok(zs) => zs.into_iter().for_each(|z| push(&mut out, &mut pools, z)),
            Err(reason) => out.reject(reason),
        }
    }
    Ok(out)
}

// ---- the normalized (v2-shaped) span ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ZipkinKind {
    Client,
    Server,
    Producer,
    Consumer,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Endpoint {
    service_name: String,
    address: Option<String>,
    port: Option<i64>,
}

#[derive(Debug, Clone, Default)]
struct ZSpan {
    trace_id: TraceId,
    id: SpanId,
    parent: SpanId,
    name: String,
    kind: Option<ZipkinKind>,
    timestamp_us: u64,
    duration_us: u64,
    local: Option<Endpoint>,
    remote: Option<Endpoint>,
    annotations: Vec<(u64, String)>,
    tags: Vec<(String, String)>,
    debug: bool,
    shared: bool,
}

/// Resource and scope allocations shared by the spans of one request.
#[derive(Default)]
struct Pools {
    resources: Vec<Arc<Resource>>,
    scopes: Vec<Arc<Scope>>,
}

fn parse_trace_id(text: &str, name: &str) -> Result<TraceId, String> {
    TraceId::from_hex(text)
        .ok()
        .filter(|t| t.is_valid())
        .ok_or_else(|| format!("span {name:?}: traceId {text:?} is not up to 32 hex characters of a non-zero id"))
}

fn parse_span_id(text: &str, what: &str, name: &str) -> Result<SpanId, String> {
    SpanId::from_hex(text)
        .ok()
        .filter(|s| s.is_valid())
        .ok_or_else(|| format!("span {name:?}: {what} {text:?} is not up to 16 hex characters of a non-zero id"))
}

/// The hex ids of a JSON span (v1 or v2); an empty parent means a root span.
fn parse_ids(trace_id: &str, id: &str, parent_id: &str, name: &str) -> Result<(TraceId, SpanId, SpanId), String> {
    let parent = if parent_id.is_empty() { SpanId::INVALID } else { parse_span_id(parent_id, "parentId", name)? };
    Ok((parse_trace_id(trace_id, name)?, parse_span_id(id, "id", name)?, parent))
}

/// A span id for the server half of a shared span: deterministic, distinct from the
/// shared id, never zero (splitmix64's finalizer).
fn derived_span_id(shared: SpanId) -> SpanId {
    let mut z = shared.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    if z == 0 || z == shared.0 {
        z = shared.0 ^ 0x5a5a_5a5a_5a5a_5a5a;
    }
    SpanId(z)
}

fn push(out: &mut Decoded, pools: &mut Pools, z: ZSpan) {
    let mut attributes = Vec::with_capacity(z.tags.len() + 4);
    let mut status = Status::default();
    let mut explicit_status = false;
    let mut error_message = None;
    let (mut scope_name, mut scope_version) = (String::new(), String::new());
    for (key, value) in z.tags {
        match key.as_str() {
            semconv::JAEGER_ERROR => error_message = Some(value),
            semconv::JAEGER_STATUS_CODE if value.eq_ignore_ascii_case("error") => {
                status.code = StatusCode::Error;
                explicit_status = true;
            }
            semconv::JAEGER_STATUS_CODE if value.eq_ignore_ascii_case("ok") => {
                status.code = StatusCode::Ok;
                explicit_status = true;
            }
            semconv::JAEGER_STATUS_DESCRIPTION => status.message = value,
            semconv::JAEGER_SCOPE_NAME | OTEL_LIBRARY_NAME => scope_name = value,
            semconv::JAEGER_SCOPE_VERSION | OTEL_LIBRARY_VERSION => scope_version = value,
            _ => attributes.push(KeyValue::string(key, value)),
        }
    }
    if let Some(message) = error_message {
        // `error` with an empty value or "true" marks failure without saying why.
        if !explicit_status {
            status.code = StatusCode::Error;
        }
        if status.message.is_empty() && !message.is_empty() && message != "true" {
            status.message = message;
        }
    }

    let mut resource_attributes = Vec::new();
    if let Some(local) = &z.local {
        if !local.service_name.is_empty() {
            resource_attributes.push(KeyValue::string(semconv::SERVICE_NAME, local.service_name.clone()));
        }
        push_address(&mut attributes, local, NETWORK_LOCAL_ADDRESS, NETWORK_LOCAL_PORT);
    }
    if let Some(remote) = &z.remote {
        if !remote.service_name.is_empty() {
            attributes.push(KeyValue::string(semconv::PEER_SERVICE, remote.service_name.clone()));
        }
        push_address(&mut attributes, remote, NETWORK_PEER_ADDRESS, NETWORK_PEER_PORT);
    }

    let kind = match z.kind {
        None => SpanKind::Unspecified,
        Some(ZipkinKind::Client) => SpanKind::Client,
        Some(ZipkinKind::Server) => SpanKind::Server,
        Some(ZipkinKind::Producer) => SpanKind::Producer,
        Some(ZipkinKind::Consumer) => SpanKind::Consumer,
    };
    let (span_id, parent) =
        if z.shared && z.kind == Some(ZipkinKind::Server) { (derived_span_id(z.id), z.id) } else { (z.id, z.parent) };
    let start = z.timestamp_us.saturating_mul(1000);
    let resource =
        intern(&mut pools.resources, Resource { attributes: resource_attributes, dropped_attributes_count: 0 });
    let scope = intern(&mut pools.scopes, Scope { name: scope_name, version: scope_version, ..Default::default() });
    out.spans.push(Span {
        trace_id: z.trace_id,
        span_id,
        parent_span_id: parent,
        trace_state: String::new(),
        flags: if z.debug { 0b11 } else { 0b01 },
        name: z.name.into(),
        kind,
        start_time_unix_nano: start,
        end_time_unix_nano: start.saturating_add(z.duration_us.saturating_mul(1000)),
        attributes,
        dropped_attributes_count: 0,
        events: z.annotations.into_iter().map(|(ts, value)| annotation_to_event(ts, value)).collect(),
        dropped_events_count: 0,
        links: Vec::new(),
        dropped_links_count: 0,
        status,
        resource,
        scope,
    });
}

fn push_address(attributes: &mut Vec<KeyValue>, endpoint: &Endpoint, address_key: &str, port_key: &str) {
    if let Some(address) = &endpoint.address {
        attributes.push(KeyValue::string(address_key, address.clone()));
    }
    if let Some(port) = endpoint.port {
        attributes.push(KeyValue::new(port_key, AttributeValue::Int(port)));
    }
}

/// An annotation as an event; OpenTelemetry's `{"name":{attributes}}` form is unpacked.
fn annotation_to_event(timestamp_us: u64, value: String) -> Event {
    let time_unix_nano = timestamp_us.saturating_mul(1000);
    if value.starts_with('{') {
        if let Ok(map) = serde_json::from_str::<serde_json::Map<String, Value>>(&value) {
            if map.len() == 1 {
                if let Some((name, Value::Object(attrs))) = map.into_iter().next() {
                    let attributes = attrs.into_iter().map(|(k, v)| KeyValue::new(k, json_to_attribute(v))).collect();
                    return Event { time_unix_nano, name: name.into(), attributes, dropped_attributes_count: 0 };
                }
            }
        }
    }
    Event { time_unix_nano, name: value.into(), attributes: Vec::new(), dropped_attributes_count: 0 }
}

fn json_to_attribute(v: Value) -> AttributeValue {
    match v {
        Value::String(s) => AttributeValue::String(s.into()),
        Value::Bool(b) => AttributeValue::Bool(b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AttributeValue::Int(i),
            None => {
                n.as_f64().map(AttributeValue::Double).unwrap_or_else(|| AttributeValue::String(n.to_string().into()))
            }
        },
        Value::Array(items) => AttributeValue::Array(items.into_iter().map(json_to_attribute).collect()),
        other => AttributeValue::String(other.to_string().into()),
    }
}

// ---- v2 JSON ----

/// A JSON integer that some clients send as a string.
fn de_opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(u), _) => Ok(Some(u)),
            (None, Some(f)) if f >= 0.0 && f.fract() == 0.0 && f < 1.8e19 => Ok(Some(f as u64)),
            _ => Err(de::Error::custom(format!("{n} is not an unsigned integer"))),
        },
        Some(Value::String(s)) => {
            s.parse().map(Some).map_err(|_| de::Error::custom(format!("{s:?} is not an unsigned integer")))
        }
        Some(other) => Err(de::Error::custom(format!("{other} is not an unsigned integer"))),
    }
}

/// Tags are strings in Zipkin; numbers and booleans some tracers send are kept as text.
fn de_tags<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
    let map = Option::<BTreeMap<String, Value>>::deserialize(d)?.unwrap_or_default();
    map.into_iter()
        .filter_map(|(k, v)| match v {
            Value::Null => None,
            Value::String(s) => Some(Ok((k, s))),
            Value::Bool(_) | Value::Number(_) => Some(Ok((k, v.to_string()))),
            other => Some(Err(de::Error::custom(format!("tag {k:?} has a non-scalar value {other}")))),
        })
        .collect()
}

fn null_default<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonSpan {
    #[serde(default, deserialize_with = "null_default")]
    trace_id: String,
    #[serde(default, deserialize_with = "null_default")]
    id: String,
    #[serde(default, deserialize_with = "null_default")]
    parent_id: String,
    #[serde(default, deserialize_with = "null_default")]
    name: String,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default, deserialize_with = "de_opt_u64")]
    timestamp: Option<u64>,
    #[serde(default, deserialize_with = "de_opt_u64")]
    duration: Option<u64>,
    #[serde(default)]
    debug: Option<bool>,
    #[serde(default)]
    shared: Option<bool>,
    #[serde(default)]
    local_endpoint: Option<JsonEndpoint>,
    #[serde(default)]
    remote_endpoint: Option<JsonEndpoint>,
    #[serde(default, deserialize_with = "null_default")]
    annotations: Vec<JsonAnnotation>,
    #[serde(default, deserialize_with = "de_tags")]
    tags: Vec<(String, String)>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonEndpoint {
    #[serde(default, deserialize_with = "null_default")]
    service_name: String,
    #[serde(default)]
    ipv4: Option<String>,
    #[serde(default)]
    ipv6: Option<String>,
    #[serde(default)]
    port: Option<i64>,
}

impl JsonEndpoint {
    fn normalize(self) -> Endpoint {
        Endpoint {
            service_name: self.service_name,
            address: self.ipv4.filter(|s| !s.is_empty()).or(self.ipv6.filter(|s| !s.is_empty())),
            port: self.port.filter(|p| *p != 0),
        }
    }
}

#[derive(Debug, Deserialize)]
struct JsonAnnotation {
    #[serde(default, deserialize_with = "de_opt_u64")]
    timestamp: Option<u64>,
    #[serde(default, deserialize_with = "null_default")]
    value: String,
}

fn parse_kind(kind: Option<&str>, name: &str) -> Result<Option<ZipkinKind>, String> {
    Ok(match kind {
        None | Some("") => None,
        Some(k) if k.eq_ignore_ascii_case("client") => Some(ZipkinKind::Client),
        Some(k) if k.eq_ignore_ascii_case("server") => Some(ZipkinKind::Server),
        Some(k) if k.eq_ignore_ascii_case("producer") => Some(ZipkinKind::Producer),
        Some(k) if k.eq_ignore_ascii_case("consumer") => Some(ZipkinKind::Consumer),
        Some(other) => return Err(format!("span {name:?}: unknown kind {other:?}")),
    })
}

impl JsonSpan {
    fn normalize(self) -> Result<ZSpan, String> {
        let (trace_id, id, parent) = parse_ids(&self.trace_id, &self.id, &self.parent_id, &self.name)?;
        Ok(ZSpan {
            trace_id,
            id,
            parent,
            kind: parse_kind(self.kind.as_deref(), &self.name)?,
            name: self.name,
            timestamp_us: self.timestamp.unwrap_or(0),
            duration_us: self.duration.unwrap_or(0),
            local: self.local_endpoint.map(JsonEndpoint::normalize),
            remote: self.remote_endpoint.map(JsonEndpoint::normalize),
            annotations: self.annotations.into_iter().map(|a| (a.timestamp.unwrap_or(0), a.value)).collect(),
            tags: self.tags,
            debug: self.debug.unwrap_or(false),
            shared: self.shared.unwrap_or(false),
        })
    }
}

// ---- v2 proto3 (zipkin.proto, package zipkin.proto3) ----

#[derive(Clone, PartialEq, Message)]
pub struct ListOfSpans {
    #[prost(message, repeated, tag = "1")]
    pub spans: Vec<ProtoSpan>,
}

/// `zipkin.proto3.Span`.
#[derive(Clone, PartialEq, Message)]
pub struct ProtoSpan {
    /// 8 or 16 bytes.
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    /// Empty or 8 bytes.
    #[prost(bytes = "vec", tag = "2")]
    pub parent_id: Vec<u8>,
    /// 8 bytes.
    #[prost(bytes = "vec", tag = "3")]
    pub id: Vec<u8>,
    #[prost(enumeration = "ProtoKind", tag = "4")]
    pub kind: i32,
    #[prost(string, tag = "5")]
    pub name: String,
    /// Epoch µs.
    #[prost(fixed64, tag = "6")]
    pub timestamp: u64,
    /// µs.
    #[prost(uint64, tag = "7")]
    pub duration: u64,
    #[prost(message, optional, tag = "8")]
    pub local_endpoint: Option<ProtoEndpoint>,
    #[prost(message, optional, tag = "9")]
    pub remote_endpoint: Option<ProtoEndpoint>,
    #[prost(message, repeated, tag = "10")]
    pub annotations: Vec<ProtoAnnotation>,
    #[prost(btree_map = "string, string", tag = "11")]
    pub tags: BTreeMap<String, String>,
    #[prost(bool, tag = "12")]
    pub debug: bool,
    #[prost(bool, tag = "13")]
    pub shared: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ProtoKind {
    Unspecified = 0,
    Client = 1,
    Server = 2,
    Producer = 3,
    Consumer = 4,
}

#[derive(Clone, PartialEq, Message)]
pub struct ProtoEndpoint {
    #[prost(string, tag = "1")]
    pub service_name: String,
    /// 4 bytes.
    #[prost(bytes = "vec", tag = "2")]
    pub ipv4: Vec<u8>,
    /// 16 bytes.
    #[prost(bytes = "vec", tag = "3")]
    pub ipv6: Vec<u8>,
    #[prost(int32, tag = "4")]
    pub port: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct ProtoAnnotation {
    #[prost(fixed64, tag = "1")]
    pub timestamp: u64,
    #[prost(string, tag = "2")]
    pub value: String,
}

impl ProtoEndpoint {
    fn normalize(self) -> Endpoint {
        let v4 = <[u8; 4]>::try_from(self.ipv4.as_slice()).ok().map(|b| Ipv4Addr::from(b).to_string());
        let v6 = <[u8; 16]>::try_from(self.ipv6.as_slice()).ok().map(|b| Ipv6Addr::from(b).to_string());
        Endpoint {
            service_name: self.service_name,
            address: v4.or(v6),
            port: (self.port != 0).then_some(i64::from(self.port)),
        }
    }
}

impl ProtoSpan {
    fn normalize(self) -> Result<ZSpan, String> {
        let name = self.name;
        let trace_id = match self.trace_id.len() {
            8 => <[u8; 8]>::try_from(self.trace_id.as_slice()).ok().map(|b| TraceId(u128::from(u64::from_be_bytes(b)))),
            16 => <[u8; 16]>::try_from(self.trace_id.as_slice()).ok().map(TraceId::from_bytes),
            _ => None,
        }
        .filter(|t| t.is_valid())
        .ok_or_else(|| format!("span {name:?}: trace_id must be 8 or 16 bytes and not zero"))?;
        let id = <[u8; 8]>::try_from(self.id.as_slice())
            .ok()
            .map(SpanId::from_bytes)
            .filter(|s| s.is_valid())
            .ok_or_else(|| format!("span {name:?}: id must be 8 bytes and not zero"))?;
        let parent = if self.parent_id.is_empty() {
            SpanId::INVALID
        } else {
            <[u8; 8]>::try_from(self.parent_id.as_slice())
                .ok()
                .map(SpanId::from_bytes)
                .ok_or_else(|| format!("span {name:?}: parent_id must be empty or 8 bytes"))?
        };
        let kind = match ProtoKind::try_from(self.kind) {
            Ok(ProtoKind::Client) => Some(ZipkinKind::Client),
            Ok(ProtoKind::Server) => Some(ZipkinKind::Server),
            Ok(ProtoKind::Producer) => Some(ZipkinKind::Producer),
            Ok(ProtoKind::Consumer) => Some(ZipkinKind::Consumer),
            Ok(ProtoKind::Unspecified) | Err(_) => None,
        };
        Ok(ZSpan {
            trace_id,
            id,
            parent,
            name,
            kind,
            timestamp_us: self.timestamp,
            duration_us: self.duration,
            local: self.local_endpoint.map(ProtoEndpoint::normalize),
            remote: self.remote_endpoint.map(ProtoEndpoint::normalize),
            annotations: self.annotations.into_iter().map(|a| (a.timestamp, a.value)).collect(),
            tags: self.tags.into_iter().collect(),
            debug: self.debug,
            shared: self.shared,
        })
    }
}

// ---- v1 JSON ----

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct V1Span {
    #[serde(default, deserialize_with = "null_default")]
    trace_id: String,
    #[serde(default, deserialize_with = "null_default")]
    id: String,
    #[serde(default, deserialize_with = "null_default")]
    parent_id: String,
    #[serde(default, deserialize_with = "null_default")]
    name: String,
    #[serde(default, deserialize_with = "de_opt_u64")]
    timestamp: Option<u64>,
    #[serde(default, deserialize_with = "de_opt_u64")]
    duration: Option<u64>,
    #[serde(default)]
    debug: Option<bool>,
    #[serde(default, deserialize_with = "null_default")]
    annotations: Vec<V1Annotation>,
    #[serde(default, deserialize_with = "null_default")]
    binary_annotations: Vec<V1BinaryAnnotation>,
}

#[derive(Debug, Deserialize)]
struct V1Annotation {
    #[serde(default, deserialize_with = "de_opt_u64")]
    timestamp: Option<u64>,
    #[serde(default, deserialize_with = "null_default")]
    value: String,
    #[serde(default)]
    endpoint: Option<JsonEndpoint>,
}

#[derive(Debug, Deserialize)]
struct V1BinaryAnnotation {
    #[serde(default, deserialize_with = "null_default")]
    key: String,
    #[serde(default)]
    value: Value,
    #[serde(default)]
    endpoint: Option<JsonEndpoint>,
}

impl V1Span {
    /// Zipkin's v1 → v2 rules: the core annotations cs/cr (client), sr/ss (server), ms
    /// (producer) and mr (consumer) set kind, timestamp and duration; the address
    /// annotations sa/ca/ma set the remote endpoint; every other annotation is kept, and
    /// every other binary annotation becomes a tag.
    fn normalize(self) -> Result<Vec<ZSpan>, String> {
        let (trace_id, id, parent) = parse_ids(&self.trace_id, &self.id, &self.parent_id, &self.name)?;

        let mut core: BTreeMap<&str, (u64, Option<Endpoint>)> = BTreeMap::new();
        let mut annotations = Vec::new();
        let mut any_endpoint = None;
        for a in self.annotations {
            let endpoint = a.endpoint.map(JsonEndpoint::normalize);
            if any_endpoint.is_none() {
                any_endpoint = endpoint.clone();
            }
            let ts = a.timestamp.unwrap_or(0);
            match a.value.as_str() {
                "cs" => drop(core.insert("cs", (ts, endpoint))),
                "cr" => drop(core.insert("cr", (ts, endpoint))),
                "sr" => drop(core.insert("sr", (ts, endpoint))),
                "ss" => drop(core.insert("ss", (ts, endpoint))),
                "ms" => drop(core.insert("ms", (ts, endpoint))),
                "mr" => drop(core.insert("mr", (ts, endpoint))),
                _ => annotations.push((ts, a.value)),
            }
        }
        let mut tags = Vec::new();
        let (mut server_addr, mut client_addr, mut broker_addr, mut local_component) = (None, None, None, None);
        for b in self.binary_annotations {
            let endpoint = b.endpoint.map(JsonEndpoint::normalize);
            match b.key.as_str() {
                "sa" => server_addr = endpoint,
                "ca" => client_addr = endpoint,
                "ma" => broker_addr = endpoint,
                key => {
                    if key == "lc" && local_component.is_none() {
                        local_component = endpoint.clone();
                    }
                    if any_endpoint.is_none() {
                        any_endpoint = endpoint;
                    }
                    let value = match b.value {
                        Value::String(s) => s,
                        Value::Null => continue,
                        other => other.to_string(),
                    };
                    tags.push((b.key, value));
                }
            }
        }

        let base = ZSpan {
            trace_id,
            id,
            parent,
            name: self.name,
            debug: self.debug.unwrap_or(false),
            annotations,
            tags,
            ..Default::default()
        };
        let side = |start: &str, end: &str| {
            let (s, e) = (core.get(start), core.get(end));
            s.or(e).map(|_| {
                let ts = s.map(|x| x.0);
                let dur = match (s, e) {
                    (Some(s), Some(e)) => e.0.checked_sub(s.0),
                    _ => None,
                };
                let endpoint = s.and_then(|x| x.1.clone()).or_else(|| e.and_then(|x| x.1.clone()));
                (ts, dur, endpoint)
            })
        };
        let client = side("cs", "cr");
        let server = side("sr", "ss");
        let messaging = side("ms", "mr").map(|x| (x, core.contains_key("ms")));

        let fallback_local = local_component.or(any_endpoint);
        let mut out = Vec::new();
        match (client, server) {
            (Some((cts, cdur, cep)), Some((sts, sdur, sep))) => {
                // One v1 span for both sides of an RPC: the client keeps the id, the server
                // half is shared.
                let mut c = base.clone();
                c.kind = Some(ZipkinKind::Client);
                c.timestamp_us = self.timestamp.or(cts).unwrap_or(0);
                c.duration_us = self.duration.or(cdur).unwrap_or(0);
                c.local = cep.or(fallback_local.clone());
                c.remote = server_addr.or(sep.clone());
                let mut s = base;
                s.kind = Some(ZipkinKind::Server);
                s.shared = true;
                s.timestamp_us = sts.unwrap_or(0);
                s.duration_us = sdur.unwrap_or(0);
                s.local = sep.or(fallback_local);
                s.remote = client_addr;
                s.annotations = Vec::new();
                s.tags = Vec::new();
                out.push(c);
                out.push(s);
            }
            (Some((ts, dur, ep)), None) | (None, Some((ts, dur, ep))) => {
                let is_client = core.contains_key("cs") || core.contains_key("cr");
                let mut z = base;
                z.kind = Some(if is_client { ZipkinKind::Client } else { ZipkinKind::Server });
                z.timestamp_us = self.timestamp.or(ts).unwrap_or(0);
                z.duration_us = self.duration.or(dur).unwrap_or(0);
                z.local = ep.or(fallback_local);
                z.remote = if is_client { server_addr } else { client_addr };
                out.push(z);
            }
            (None, None) => {
                let mut z = base;
                if let Some(((ts, _, ep), producer)) = messaging {
                    z.kind = Some(if producer { ZipkinKind::Producer } else { ZipkinKind::Consumer });
                    z.timestamp_us = self.timestamp.or(ts).unwrap_or(0);
                    z.local = ep.or(fallback_local);
                    z.remote = broker_addr;
                } else {
                    z.timestamp_us = self.timestamp.unwrap_or(0);
                    z.local = fallback_local;
                    z.remote = server_addr.or(client_addr).or(broker_addr);
                }
                z.duration_us = self.duration.unwrap_or(0);
                out.push(z);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2: &str = r#"[
      {"traceId":"5af7183fb1d4cf5f","parentId":"6b221d5bc9e6496c","id":"352bff9a74ca9ad2",
       "kind":"CLIENT","name":"get /api","timestamp":1556604172355737,"duration":1431,
       "localEndpoint":{"serviceName":"frontend","ipv4":"192.168.99.1","port":3306},
       "remoteEndpoint":{"serviceName":"backend","ipv4":"172.19.0.2","port":9000},
       "annotations":[{"timestamp":1556604172355800,"value":"ws"},
                      {"timestamp":1556604172355900,"value":"{\"cache miss\":{\"symbol\":\"AAPL\",\"attempt\":2}}"}],
       "tags":{"http.method":"GET","error":"connection refused","otel.scope.name":"lib","n":5}},
      {"traceId":"5af7183fb1d4cf5f","id":"352bff9a74ca9ad2","kind":"SERVER","shared":true,
       "name":"get /api","timestamp":"1556604172355800","duration":1000,"debug":true,
       "localEndpoint":{"serviceName":"backend"}}
    ]"#;

    #[test]
    fn v2_json_maps_endpoints_tags_and_shared_spans() {
        let decoded = decode_v2_json(V2.as_bytes()).unwrap();
        assert_eq!(decoded.rejected, 0, "{}", decoded.rejection_reason);
        let client = &decoded.spans[0];
        assert_eq!(client.trace_id, TraceId(0x5af7183fb1d4cf5f));
        assert_eq!(client.parent_span_id, SpanId(0x6b221d5bc9e6496c));
        assert_eq!(client.kind, SpanKind::Client);
        assert_eq!(client.service_name(), "frontend");
        assert_eq!(client.start_time_unix_nano, 1_556_604_172_355_737_000);
        assert_eq!(client.duration_nanos(), 1_431_000);
        assert_eq!(client.attribute("peer.service"), Some(&AttributeValue::String("backend".into())));
        assert_eq!(client.attribute(NETWORK_PEER_ADDRESS), Some(&AttributeValue::String("172.19.0.2".into())));
        assert_eq!(client.attribute(NETWORK_PEER_PORT), Some(&AttributeValue::Int(9000)));
        assert_eq!(client.attribute(NETWORK_LOCAL_PORT), Some(&AttributeValue::Int(3306)));
        assert_eq!(client.attribute("n"), Some(&AttributeValue::String("5".into())));
        assert_eq!(client.status, Status { code: StatusCode::Error, message: "connection refused".into() });
        assert_eq!(client.attribute("error"), None);
        assert_eq!(client.scope.name, "lib");
        assert_eq!(client.events[0].name, "ws");
        assert_eq!(client.events[1].name, "cache miss");
        assert_eq!(client.events[1].attributes[0], KeyValue::new("attempt", AttributeValue::Int(2)));
        assert_eq!(client.flags, 1);

        let server = &decoded.spans[1];
        assert_eq!(server.kind, SpanKind::Server);
        assert_eq!(server.parent_span_id, client.span_id, "shared server span hangs under the client");
        assert_ne!(server.span_id, client.span_id);
        assert_eq!(server.flags, 3);
        assert_eq!(server.start_time_unix_nano, 1_556_604_172_355_800_000);
        assert_eq!(server.service_name(), "backend");
    }

    #[test]
    fn v2_proto_matches_v2_json() {
        let mut tags = BTreeMap::new();
        tags.insert("http.method".to_string(), "GET".to_string());
        let list = ListOfSpans {
            spans: vec![ProtoSpan {
                trace_id: 0x5af7183fb1d4cf5fu64.to_be_bytes().to_vec(),
                parent_id: 0x6b221d5bc9e6496cu64.to_be_bytes().to_vec(),
                id: 0x352bff9a74ca9ad2u64.to_be_bytes().to_vec(),
                kind: ProtoKind::Client as i32,
                name: "get /api".into(),
                timestamp: 1_556_604_172_355_737,
                duration: 1431,
                local_endpoint: Some(ProtoEndpoint {
                    service_name: "frontend".into(),
                    ipv4: vec![192, 168, 99, 1],
                    port: 3306,
                    ..Default::default()
                }),
                remote_endpoint: Some(ProtoEndpoint {
                    service_name: "backend".into(),
                    ipv6: Ipv6Addr::LOCALHOST.octets().to_vec(),
                    ..Default::default()
                }),
                annotations: vec![ProtoAnnotation { timestamp: 1_556_604_172_355_800, value: "ws".into() }],
                tags,
                ..Default::default()
            }],
        };
        let decoded = decode_v2_proto(&list.encode_to_vec()).unwrap();
        let span = &decoded.spans[0];
        assert_eq!(span.trace_id, TraceId(0x5af7183fb1d4cf5f));
        assert_eq!(span.kind, SpanKind::Client);
        assert_eq!(span.service_name(), "frontend");
        assert_eq!(span.attribute(NETWORK_LOCAL_ADDRESS), Some(&AttributeValue::String("192.168.99.1".into())));
        assert_eq!(span.attribute(NETWORK_PEER_ADDRESS), Some(&AttributeValue::String("::1".into())));
        assert_eq!(span.attribute("http.method"), Some(&AttributeValue::String("GET".into())));
        assert_eq!(span.events[0].time_unix_nano, 1_556_604_172_355_800_000);
    }

    #[test]
    fn v1_json_splits_rpc_sides_and_reads_addresses() {
        let body = r#"[{"traceId":"00000000000000000000000000000abc","id":"0000000000000002","parentId":"0000000000000001",
          "name":"get","annotations":[
            {"timestamp":100,"value":"cs","endpoint":{"serviceName":"client-svc","ipv4":"10.0.0.1"}},
            {"timestamp":110,"value":"sr","endpoint":{"serviceName":"server-svc","ipv4":"10.0.0.2","port":80}},
            {"timestamp":150,"value":"ss","endpoint":{"serviceName":"server-svc"}},
            {"timestamp":160,"value":"cr","endpoint":{"serviceName":"client-svc"}},
            {"timestamp":120,"value":"cache.hit","endpoint":{"serviceName":"client-svc"}}],
          "binaryAnnotations":[{"key":"http.path","value":"/x","endpoint":{"serviceName":"client-svc"}},
            {"key":"retried","value":true},
            {"key":"sa","value":true,"endpoint":{"serviceName":"server-svc","ipv4":"10.0.0.2","port":80}}]},
          {"traceId":"abc","id":"3","name":"local","timestamp":200,"duration":5,
           "binaryAnnotations":[{"key":"lc","value":"worker","endpoint":{"serviceName":"batch"}}]}]"#;
        let decoded = decode_v1_json(body.as_bytes()).unwrap();
        assert_eq!(decoded.rejected, 0, "{}", decoded.rejection_reason);
        assert_eq!(decoded.spans.len(), 3);
        let (client, server, local) = (&decoded.spans[0], &decoded.spans[1], &decoded.spans[2]);
        assert_eq!(client.kind, SpanKind::Client);
        assert_eq!(client.service_name(), "client-svc");
        assert_eq!(client.start_time_unix_nano, 100_000);
        assert_eq!(client.duration_nanos(), 60_000);
        assert_eq!(client.attribute("peer.service"), Some(&AttributeValue::String("server-svc".into())));
        assert_eq!(client.attribute("retried"), Some(&AttributeValue::String("true".into())));
        assert_eq!(client.events.len(), 1);
        assert_eq!(server.kind, SpanKind::Server);
        assert_eq!(server.service_name(), "server-svc");
        assert_eq!(server.parent_span_id, SpanId(2));
        assert_eq!(server.duration_nanos(), 40_000);
        assert_eq!(local.trace_id, TraceId(0xabc));
        assert_eq!(local.service_name(), "batch");
        assert_eq!(local.kind, SpanKind::Unspecified);
        assert_eq!(local.attribute("lc"), Some(&AttributeValue::String("worker".into())));
    }

    #[test]
    fn malformed_bodies_are_errors_and_bad_ids_are_rejected() {
        for (body, needle) in [
            ("", "EOF"),
            ("{}", "invalid type: map"),
            (r#"[{"traceId":5}]"#, "invalid type"),
            (r#"[{"traceId":"a","id":"b","timestamp":-5}]"#, "not an unsigned integer"),
            (r#"[{"traceId":"a","id":"b","tags":{"k":{"x":1}}}]"#, "non-scalar"),
        ] {
            let err = decode_v2_json(body.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(needle), "{body}: {err}");
        }
        let decoded = decode_v2_json(
            br#"[{"traceId":"xyz","id":"1"},{"traceId":"1","id":"0"},{"traceId":"1","id":"1","kind":"SIDEWAYS"},{"traceId":"1","id":"2"}]"#,
        )
        .unwrap();
        assert_eq!(decoded.spans.len(), 1);
        assert_eq!(decoded.rejected, 3);
        assert!(decoded.rejection_reason.contains("traceId \"xyz\""), "{}", decoded.rejection_reason);
        assert!(decoded.rejection_reason.contains("unknown kind"), "{}", decoded.rejection_reason);

        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(decode_v2_json(deep.as_bytes()).is_err());
        assert!(decode_v1_json(deep.as_bytes()).is_err());
        assert!(decode_v2_proto(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
        let bad_ids =
            ListOfSpans { spans: vec![ProtoSpan { trace_id: vec![1; 5], id: vec![1; 8], ..Default::default() }] };
        let decoded = decode_v2_proto(&bad_ids.encode_to_vec()).unwrap();
        assert_eq!(decoded.rejected, 1);
        assert!(decoded.rejection_reason.contains("trace_id must be 8 or 16 bytes"));
    }
}
