//! OTLP JSON (the protobuf JSON mapping the OTLP specification prescribes) ↔ protobuf types.
//!
//! Decoding accepts what real clients send: lowerCamelCase or original snake_case field
//! names; trace and span ids as hex (the specification) or base64 (older clients that used
//! the generic protobuf JSON mapping); 64-bit integers as strings or numbers; enums as
//! numbers or names; `null` for absent; unknown fields ignored. Encoding writes the
//! specification's form: hex ids, integer enums, 64-bit integers as strings, zero values
//! omitted (as Jaeger's API v3 does).

use base64::Engine;
use opentelemetry_proto::tonic::common::v1 as pc;
use opentelemetry_proto::tonic::resource::v1 as pr;
use opentelemetry_proto::tonic::trace::v1 as pt;
use serde::de::{self, Deserializer};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use spindle_model::Span;

use crate::{otlp, CodecError, Decoded};

/// Decodes an OTLP JSON `ExportTraceServiceRequest` (same shape as `TracesData`).
pub fn decode_request(bytes: &[u8]) -> Result<Decoded, CodecError> {
    // serde would read a struct from an array too; OTLP JSON is always an object.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(CodecError::Json("expected a JSON object at the top level".into()));
    }
    let data: TracesData = serde_json::from_slice(bytes).map_err(|e| CodecError::Json(e.to_string()))?;
    Ok(otlp::resource_spans_to_spans(data.resource_spans.into_iter().map(Into::into).collect()))
}

/// Encodes spans as OTLP JSON `TracesData`.
pub fn encode_traces_data<'a>(spans: impl IntoIterator<Item = &'a Span>) -> serde_json::Value {
    let data = traces_data(spans);
    serde_json::to_value(&data).unwrap_or(serde_json::Value::Null)
}

/// Spans as the serializable `TracesData`, for embedding in larger responses.
pub fn traces_data<'a>(spans: impl IntoIterator<Item = &'a Span>) -> TracesData {
    TracesData { resource_spans: otlp::spans_to_resource_spans(spans).into_iter().map(Into::into).collect() }
}

// ---- field codecs ----

fn null_default<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrString {
    U(u64),
    I(i64),
    F(f64),
    S(String),
}

fn de_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match Option::<NumberOrString>::deserialize(d)? {
        None => Ok(0),
        Some(NumberOrString::U(u)) => Ok(u),
        Some(NumberOrString::S(s)) if s.is_empty() => Ok(0),
        Some(NumberOrString::S(s)) => {
            s.parse().map_err(|_| de::Error::custom(format!("{s:?} is not an unsigned 64-bit integer")))
        }
        Some(NumberOrString::I(i)) => Err(de::Error::custom(format!("{i} is negative, expected an unsigned integer"))),
        Some(NumberOrString::F(f)) => Err(de::Error::custom(format!("{f} is not an integer"))),
    }
}

fn de_u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = de_u64(d)?;
    u32::try_from(v).map_err(|_| de::Error::custom(format!("{v} does not fit in 32 bits")))
}

fn de_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    match NumberOrString::deserialize(d)? {
        NumberOrString::U(u) => {
            i64::try_from(u).map_err(|_| de::Error::custom(format!("{u} does not fit in a signed 64-bit integer")))
        }
        NumberOrString::I(i) => Ok(i),
        NumberOrString::S(s) => s.parse().map_err(|_| de::Error::custom(format!("{s:?} is not a 64-bit integer"))),
        NumberOrString::F(f) => Err(de::Error::custom(format!("{f} is not an integer"))),
    }
}

fn de_f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    match NumberOrString::deserialize(d)? {
        NumberOrString::U(u) => Ok(u as f64),
        NumberOrString::I(i) => Ok(i as f64),
        NumberOrString::F(f) => Ok(f),
        NumberOrString::S(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            other => other.parse().map_err(|_| de::Error::custom(format!("{other:?} is not a number"))),
        },
    }
}

fn ser_f64<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_nan() {
        s.serialize_str("NaN")
    } else if v.is_infinite() {
        s.serialize_str(if *v > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        s.serialize_f64(*v)
    }
}

fn enum_de<'de, D: Deserializer<'de>>(d: D, names: &[&str]) -> Result<i32, D::Error> {
    match Option::<NumberOrString>::deserialize(d)? {
        None => Ok(0),
        Some(NumberOrString::U(u)) => {
            i32::try_from(u).map_err(|_| de::Error::custom(format!("enum value {u} out of range")))
        }
        Some(NumberOrString::I(i)) => {
            i32::try_from(i).map_err(|_| de::Error::custom(format!("enum value {i} out of range")))
        }
        Some(NumberOrString::S(s)) => names
            .iter()
            .position(|n| *n == s)
            .map(|p| p as i32)
            .ok_or_else(|| de::Error::custom(format!("unknown enum name {s:?}, expected one of {names:?}"))),
        Some(NumberOrString::F(f)) => Err(de::Error::custom(format!("enum value {f} is not an integer"))),
    }
}

/// OTLP's span kinds by number, as protobuf's JSON mapping names them.
pub const SPAN_KIND_NAMES: [&str; 6] = [
    "SPAN_KIND_UNSPECIFIED",
    "SPAN_KIND_INTERNAL",
    "SPAN_KIND_SERVER",
    "SPAN_KIND_CLIENT",
    "SPAN_KIND_PRODUCER",
    "SPAN_KIND_CONSUMER",
];

/// OTLP's status codes by number, as protobuf's JSON mapping names them.
pub const STATUS_CODE_NAMES: [&str; 3] = ["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"];

fn de_kind<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    enum_de(d, &SPAN_KIND_NAMES)
}

fn de_status_code<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    enum_de(d, &STATUS_CODE_NAMES)
}

/// An id as hex (any case) or, failing that, base64 (standard or URL-safe, padded or not).
fn parse_id(text: &str, len: usize) -> Result<Vec<u8>, String> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    if text.len() == len * 2 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok((0..len).map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap_or_default()).collect());
    }
    let engines = [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    for engine in engines {
        if let Ok(bytes) = engine.decode(text) {
            if bytes.len() == len {
                return Ok(bytes);
            }
        }
    }
    Err(format!("{text:?} is neither {} hex characters nor base64 of {len} bytes", len * 2))
}

fn de_trace_id<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let text: Option<String> = Option::deserialize(d)?;
    parse_id(text.as_deref().unwrap_or(""), 16).map_err(|e| de::Error::custom(format!("trace id {e}")))
}

fn de_span_id<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let text: Option<String> = Option::deserialize(d)?;
    parse_id(text.as_deref().unwrap_or(""), 8).map_err(|e| de::Error::custom(format!("span id {e}")))
}

fn ser_hex<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    let mut out = String::with_capacity(v.len() * 2);
    for b in v {
        out.push_str(&format!("{b:02x}"));
    }
    s.serialize_str(&out)
}

fn ser_u64_string<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn ser_i64_string<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn de_base64<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let text: Option<String> = Option::deserialize(d)?;
    let text = text.unwrap_or_default();
    base64::engine::general_purpose::STANDARD
        .decode(&text)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(&text))
        .map_err(|_| de::Error::custom(format!("bytesValue {text:?} is not base64")))
}

fn ser_base64<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}
fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}

// ---- the JSON shapes ----

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TracesData {
    #[serde(default, alias = "resource_spans", deserialize_with = "null_default")]
    pub resource_spans: Vec<ResourceSpans>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceSpans {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<Resource>,
    #[serde(default, alias = "scope_spans", deserialize_with = "null_default")]
    pub scope_spans: Vec<ScopeSpans>,
    #[serde(
        default,
        alias = "schema_url",
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub schema_url: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    #[serde(default, deserialize_with = "null_default")]
    pub attributes: Vec<KeyValue>,
    #[serde(
        default,
        alias = "dropped_attributes_count",
        deserialize_with = "de_u32",
        skip_serializing_if = "is_zero_u32"
    )]
    pub dropped_attributes_count: u32,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScopeSpans {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
    #[serde(default, deserialize_with = "null_default")]
    pub spans: Vec<JsonSpan>,
    #[serde(
        default,
        alias = "schema_url",
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub schema_url: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Scope {
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "String::is_empty")]
    pub version: String,
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<KeyValue>,
    #[serde(
        default,
        alias = "dropped_attributes_count",
        deserialize_with = "de_u32",
        skip_serializing_if = "is_zero_u32"
    )]
    pub dropped_attributes_count: u32,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JsonSpan {
    #[serde(default, alias = "trace_id", deserialize_with = "de_trace_id", serialize_with = "ser_hex")]
    pub trace_id: Vec<u8>,
    #[serde(default, alias = "span_id", deserialize_with = "de_span_id", serialize_with = "ser_hex")]
    pub span_id: Vec<u8>,
    #[serde(
        default,
        alias = "trace_state",
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub trace_state: String,
    #[serde(
        default,
        alias = "parent_span_id",
        deserialize_with = "de_span_id",
        serialize_with = "ser_hex",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub parent_span_id: Vec<u8>,
    #[serde(default, deserialize_with = "de_u32", skip_serializing_if = "is_zero_u32")]
    pub flags: u32,
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    #[serde(default, deserialize_with = "de_kind", skip_serializing_if = "is_zero_i32")]
    pub kind: i32,
    #[serde(default, alias = "start_time_unix_nano", deserialize_with = "de_u64", serialize_with = "ser_u64_string")]
    pub start_time_unix_nano: u64,
    #[serde(default, alias = "end_time_unix_nano", deserialize_with = "de_u64", serialize_with = "ser_u64_string")]
    pub end_time_unix_nano: u64,
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<KeyValue>,
    #[serde(
        default,
        alias = "dropped_attributes_count",
        deserialize_with = "de_u32",
        skip_serializing_if = "is_zero_u32"
    )]
    pub dropped_attributes_count: u32,
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<JsonEvent>,
    #[serde(default, alias = "dropped_events_count", deserialize_with = "de_u32", skip_serializing_if = "is_zero_u32")]
    pub dropped_events_count: u32,
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<JsonLink>,
    #[serde(default, alias = "dropped_links_count", deserialize_with = "de_u32", skip_serializing_if = "is_zero_u32")]
    pub dropped_links_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<JsonStatus>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JsonEvent {
    #[serde(default, alias = "time_unix_nano", deserialize_with = "de_u64", serialize_with = "ser_u64_string")]
    pub time_unix_nano: u64,
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<KeyValue>,
    #[serde(
        default,
        alias = "dropped_attributes_count",
        deserialize_with = "de_u32",
        skip_serializing_if = "is_zero_u32"
    )]
    pub dropped_attributes_count: u32,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JsonLink {
    #[serde(default, alias = "trace_id", deserialize_with = "de_trace_id", serialize_with = "ser_hex")]
    pub trace_id: Vec<u8>,
    #[serde(default, alias = "span_id", deserialize_with = "de_span_id", serialize_with = "ser_hex")]
    pub span_id: Vec<u8>,
    #[serde(
        default,
        alias = "trace_state",
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub trace_state: String,
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<KeyValue>,
    #[serde(
        default,
        alias = "dropped_attributes_count",
        deserialize_with = "de_u32",
        skip_serializing_if = "is_zero_u32"
    )]
    pub dropped_attributes_count: u32,
    #[serde(default, deserialize_with = "de_u32", skip_serializing_if = "is_zero_u32")]
    pub flags: u32,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JsonStatus {
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, deserialize_with = "de_status_code", skip_serializing_if = "is_zero_i32")]
    pub code: i32,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct KeyValue {
    #[serde(default, deserialize_with = "null_default")]
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<AnyValue>,
}

/// `AnyValue`: exactly one of the fields is set.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnyValue {
    #[serde(default, alias = "string_value", skip_serializing_if = "Option::is_none")]
    pub string_value: Option<String>,
    #[serde(default, alias = "bool_value", skip_serializing_if = "Option::is_none")]
    pub bool_value: Option<bool>,
    #[serde(
        default,
        alias = "int_value",
        deserialize_with = "de_opt_i64",
        serialize_with = "ser_opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub int_value: Option<i64>,
    #[serde(
        default,
        alias = "double_value",
        deserialize_with = "de_opt_f64",
        serialize_with = "ser_opt_f64",
        skip_serializing_if = "Option::is_none"
    )]
    pub double_value: Option<f64>,
    #[serde(default, alias = "array_value", skip_serializing_if = "Option::is_none")]
    pub array_value: Option<ValueList>,
    #[serde(default, alias = "kvlist_value", skip_serializing_if = "Option::is_none")]
    pub kvlist_value: Option<KeyValueList>,
    #[serde(
        default,
        alias = "bytes_value",
        deserialize_with = "de_opt_base64",
        serialize_with = "ser_opt_base64",
        skip_serializing_if = "Option::is_none"
    )]
    pub bytes_value: Option<Vec<u8>>,
}

fn de_opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    de_i64(d).map(Some)
}
fn ser_opt_i64<S: Serializer>(v: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    ser_i64_string(&v.unwrap_or_default(), s)
}
fn de_opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    de_f64(d).map(Some)
}
fn ser_opt_f64<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    ser_f64(&v.unwrap_or_default(), s)
}
fn de_opt_base64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
    de_base64(d).map(Some)
}
fn ser_opt_base64<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    ser_base64(v.as_deref().unwrap_or_default(), s)
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ValueList {
    #[serde(default, deserialize_with = "null_default")]
    pub values: Vec<AnyValue>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct KeyValueList {
    #[serde(default, deserialize_with = "null_default")]
    pub values: Vec<KeyValue>,
}

// ---- JSON ↔ protobuf types ----

impl From<ResourceSpans> for pt::ResourceSpans {
    fn from(r: ResourceSpans) -> Self {
        pt::ResourceSpans {
            resource: r.resource.map(|res| pr::Resource {
                attributes: kvs_to_proto(res.attributes),
                dropped_attributes_count: res.dropped_attributes_count,
                entity_refs: Vec::new(),
            }),
            scope_spans: r
                .scope_spans
                .into_iter()
                .map(|ss| pt::ScopeSpans {
                    scope: ss.scope.map(|s| pc::InstrumentationScope {
                        name: s.name,
                        version: s.version,
                        attributes: kvs_to_proto(s.attributes),
                        dropped_attributes_count: s.dropped_attributes_count,
                    }),
                    spans: ss.spans.into_iter().map(span_to_proto).collect(),
                    schema_url: ss.schema_url,
                })
                .collect(),
            schema_url: r.schema_url,
        }
    }
}

fn span_to_proto(s: JsonSpan) -> pt::Span {
    pt::Span {
        trace_id: s.trace_id,
        span_id: s.span_id,
        trace_state: s.trace_state,
        parent_span_id: s.parent_span_id,
        flags: s.flags,
        name: s.name,
        kind: s.kind,
        start_time_unix_nano: s.start_time_unix_nano,
        end_time_unix_nano: s.end_time_unix_nano,
        attributes: kvs_to_proto(s.attributes),
        dropped_attributes_count: s.dropped_attributes_count,
        events: s
            .events
            .into_iter()
            .map(|e| pt::span::Event {
                time_unix_nano: e.time_unix_nano,
                name: e.name,
                attributes: kvs_to_proto(e.attributes),
                dropped_attributes_count: e.dropped_attributes_count,
            })
            .collect(),
        dropped_events_count: s.dropped_events_count,
        links: s
            .links
            .into_iter()
            .map(|l| pt::span::Link {
                trace_id: l.trace_id,
                span_id: l.span_id,
                trace_state: l.trace_state,
                attributes: kvs_to_proto(l.attributes),
                dropped_attributes_count: l.dropped_attributes_count,
                flags: l.flags,
            })
            .collect(),
        dropped_links_count: s.dropped_links_count,
        status: s.status.map(|st| pt::Status { message: st.message, code: st.code }),
    }
}

fn kvs_to_proto(kvs: Vec<KeyValue>) -> Vec<pc::KeyValue> {
    kvs.into_iter()
        .map(|kv| pc::KeyValue { key: kv.key, value: kv.value.map(value_to_proto), key_strindex: 0 })
        .collect()
}

fn value_to_proto(v: AnyValue) -> pc::AnyValue {
    use pc::any_value::Value;
    let value = if let Some(s) = v.string_value {
        Some(Value::StringValue(s))
    } else if let Some(b) = v.bool_value {
        Some(Value::BoolValue(b))
    } else if let Some(i) = v.int_value {
        Some(Value::IntValue(i))
    } else if let Some(d) = v.double_value {
        Some(Value::DoubleValue(d))
    } else if let Some(a) = v.array_value {
        Some(Value::ArrayValue(pc::ArrayValue { values: a.values.into_iter().map(value_to_proto).collect() }))
    } else if let Some(m) = v.kvlist_value {
        Some(Value::KvlistValue(pc::KeyValueList { values: kvs_to_proto(m.values) }))
    } else {
        v.bytes_value.map(Value::BytesValue)
    };
    pc::AnyValue { value }
}

impl From<pt::ResourceSpans> for ResourceSpans {
    fn from(r: pt::ResourceSpans) -> Self {
        ResourceSpans {
            resource: r.resource.map(|res| Resource {
                attributes: kvs_from_proto(res.attributes),
                dropped_attributes_count: res.dropped_attributes_count,
            }),
            scope_spans: r
                .scope_spans
                .into_iter()
                .map(|ss| ScopeSpans {
                    scope: ss.scope.map(|s| Scope {
                        name: s.name,
                        version: s.version,
                        attributes: kvs_from_proto(s.attributes),
                        dropped_attributes_count: s.dropped_attributes_count,
                    }),
                    spans: ss.spans.into_iter().map(span_from_proto).collect(),
                    schema_url: ss.schema_url,
                })
                .collect(),
            schema_url: r.schema_url,
        }
    }
}

fn span_from_proto(s: pt::Span) -> JsonSpan {
    JsonSpan {
        trace_id: s.trace_id,
        span_id: s.span_id,
        trace_state: s.trace_state,
        parent_span_id: s.parent_span_id,
        flags: s.flags,
        name: s.name,
        kind: s.kind,
        start_time_unix_nano: s.start_time_unix_nano,
        end_time_unix_nano: s.end_time_unix_nano,
        attributes: kvs_from_proto(s.attributes),
        dropped_attributes_count: s.dropped_attributes_count,
        events: s
            .events
            .into_iter()
            .map(|e| JsonEvent {
                time_unix_nano: e.time_unix_nano,
                name: e.name,
                attributes: kvs_from_proto(e.attributes),
                dropped_attributes_count: e.dropped_attributes_count,
            })
            .collect(),
        dropped_events_count: s.dropped_events_count,
        links: s
            .links
            .into_iter()
            .map(|l| JsonLink {
                trace_id: l.trace_id,
                span_id: l.span_id,
                trace_state: l.trace_state,
                attributes: kvs_from_proto(l.attributes),
                dropped_attributes_count: l.dropped_attributes_count,
                flags: l.flags,
            })
            .collect(),
        dropped_links_count: s.dropped_links_count,
        status: s
            .status
            .filter(|st| st.code != 0 || !st.message.is_empty())
            .map(|st| JsonStatus { message: st.message, code: st.code }),
    }
}

fn kvs_from_proto(kvs: Vec<pc::KeyValue>) -> Vec<KeyValue> {
    kvs.into_iter().map(|kv| KeyValue { key: kv.key, value: kv.value.map(value_from_proto) }).collect()
}

fn value_from_proto(v: pc::AnyValue) -> AnyValue {
    use pc::any_value::Value;
    let mut out = AnyValue::default();
    match v.value {
        Some(Value::StringValue(s)) => out.string_value = Some(s),
        Some(Value::BoolValue(b)) => out.bool_value = Some(b),
        Some(Value::IntValue(i)) => out.int_value = Some(i),
        Some(Value::DoubleValue(d)) => out.double_value = Some(d),
        Some(Value::ArrayValue(a)) => {
            out.array_value = Some(ValueList { values: a.values.into_iter().map(value_from_proto).collect() })
        }
        Some(Value::KvlistValue(m)) => out.kvlist_value = Some(KeyValueList { values: kvs_from_proto(m.values) }),
        Some(Value::BytesValue(b)) => out.bytes_value = Some(b),
        Some(Value::StringValueStrindex(_)) | None => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use spindle_model::{AttributeValue, SpanKind, StatusCode, TraceId};

    use super::*;

    /// The example of the OTLP specification's JSON encoding section, trimmed, with the
    /// variations real clients send.
    const SPEC_EXAMPLE: &str = r#"{
      "resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "my.service"}}]},
        "scopeSpans": [{
          "scope": {"name": "my.library", "version": "1.0.0",
                    "attributes": [{"key": "my.scope.attribute", "value": {"stringValue": "some scope attribute"}}]},
          "spans": [{
            "traceId": "5B8EFFF798038103D269B633813FC60C",
            "spanId": "EEE19B7EC3C1B174",
            "parentSpanId": "EEE19B7EC3C1B173",
            "name": "I'm a server span",
            "startTimeUnixNano": "1544712660000000000",
            "endTimeUnixNano": 1544712661000000000,
            "kind": 2,
            "attributes": [
              {"key": "my.span.attr", "value": {"stringValue": "some value"}},
              {"key": "count", "value": {"intValue": "9007199254740993"}},
              {"key": "n", "value": {"intValue": 42}},
              {"key": "ratio", "value": {"doubleValue": 0.5}},
              {"key": "ok", "value": {"boolValue": true}},
              {"key": "raw", "value": {"bytesValue": "AAEC"}},
              {"key": "list", "value": {"arrayValue": {"values": [{"stringValue": "a"}, {"intValue": "1"}]}}},
              {"key": "map", "value": {"kvlistValue": {"values": [{"key": "k", "value": {"boolValue": false}}]}}}
            ],
            "events": [{"timeUnixNano": "1544712660500000000", "name": "exception",
                        "attributes": [{"key": "exception.type", "value": {"stringValue": "ValueError"}}]}],
            "status": {"code": "STATUS_CODE_ERROR", "message": "boom"},
            "someFutureField": {"ignored": true}
          }]
        }]
      }]
    }"#;

    #[test]
    fn decodes_the_specification_example_with_client_variations() {
        let decoded = decode_request(SPEC_EXAMPLE.as_bytes()).unwrap();
        assert_eq!(decoded.rejected, 0);
        let span = &decoded.spans[0];
        assert_eq!(span.trace_id, TraceId(0x5b8efff798038103d269b633813fc60c));
        assert_eq!(span.parent_span_id.to_hex(), "eee19b7ec3c1b173");
        assert_eq!(span.kind, SpanKind::Server);
        assert_eq!(span.status.code, StatusCode::Error);
        assert_eq!(span.end_time_unix_nano, 1_544_712_661_000_000_000);
        assert_eq!(span.attribute("count"), Some(&AttributeValue::Int(9_007_199_254_740_993)));
        assert_eq!(span.attribute("n"), Some(&AttributeValue::Int(42)));
        assert_eq!(span.attribute("raw"), Some(&AttributeValue::Bytes(vec![0, 1, 2])));
        assert_eq!(
            span.attribute("list"),
            Some(&AttributeValue::Array(vec![AttributeValue::String("a".into()), AttributeValue::Int(1)]))
        );
        assert_eq!(span.scope.name, "my.library");
        assert_eq!(span.events[0].name, "exception");
        assert_eq!(span.service_name(), "my.service");
    }

    #[test]
    fn base64_ids_from_older_clients_are_accepted() {
        let body = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[
            {"traceId":"W47/95gDgQPSabYzgT/GDA==","spanId":"7uGbfsPBsXQ=","name":"x"}]}]}]}"#;
        let decoded = decode_request(body.as_bytes()).unwrap();
        assert_eq!(decoded.spans[0].trace_id, TraceId(0x5b8efff798038103d269b633813fc60c));
        assert_eq!(decoded.spans[0].span_id.to_hex(), "eee19b7ec3c1b174");
    }

    #[test]
    fn encoding_follows_the_specification() {
        let decoded = decode_request(SPEC_EXAMPLE.as_bytes()).unwrap();
        let json = encode_traces_data(&decoded.spans);
        let span = &json["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(span["traceId"], "5b8efff798038103d269b633813fc60c");
        assert_eq!(span["parentSpanId"], "eee19b7ec3c1b173");
        assert_eq!(span["kind"], 2);
        assert_eq!(span["startTimeUnixNano"], "1544712660000000000");
        assert_eq!(span["status"]["code"], 2);
        assert_eq!(span["attributes"][1]["value"]["intValue"], "9007199254740993");
        assert_eq!(span["attributes"][5]["value"]["bytesValue"], "AAEC");
        assert!(span.get("droppedAttributesCount").is_none(), "zero values are omitted");
        // And what we write, we read back unchanged.
        let again = decode_request(json.to_string().as_bytes()).unwrap();
        assert_eq!(again.spans, decoded.spans);
    }

    #[test]
    fn malformed_json_names_the_problem() {
        for (body, needle) in [
            ("{", "EOF"),
            (r#"{"resourceSpans": 5}"#, "invalid type"),
            ("[]", "JSON object"),
            (r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"xyz"}]}]}]}"#, "trace id"),
            (r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":"SPAN_KIND_BOGUS"}]}]}]}"#, "unknown enum name"),
            (r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":"soon"}]}]}]}"#, "unsigned"),
        ] {
            let err = decode_request(body.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(needle), "{body}: {err}");
        }
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(decode_request(deep.as_bytes()).is_err());
    }
}
