//! Grafana Tempo's HTTP API (docs/TEMPO_API.md): TraceQL search and metrics, traces by id
//! as OTLP (JSON or protobuf by `Accept`), tag names and values, echo and build info, so
//! Grafana's Tempo data source and Tempo clients read Spindle unchanged.
//!
//! Every route is served under `/tempo` (a data source URL of `http://host:16686/tempo`)
//! and, where Jaeger's API has no route of the same path, also under `/api`.
//! `/api/traces/{id}` is Jaeger's unless the client asks for `application/protobuf`.
//! Errors are plain text, as Tempo's.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Path, RawQuery};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use prost::Message as _;
use serde_json::{json, Value};
use spindle_codec::{otlp, otlp_json};
use spindle_model::{Span, TraceId};
use spindle_traceql::ast::{Field, Intrinsic, MetricsExpr, MetricsFunction, Query, Scope, SpansetExpr, Static};
use spindle_traceql::engine::{self, SearchAnswer, SearchOptions};
use spindle_traceql::eval::{eval_field, TraceView, Value as FieldValue};
use spindle_traceql::metrics::{Series, Window};

use super::jaeger::{cap_limit, cap_range, parse_trace_id};
use super::params::{now_unix_nano, parse_go_duration, parse_rfc3339_nanos, Params};
use super::{blocking, heavy, json_response, ApiState, TenantState};
use crate::limits::Limit;

const HOUR_NANOS: u64 = 3_600_000_000_000;
const DEFAULT_LIMIT: usize = 20;
const DEFAULT_SPSS: usize = 3;
const MAX_SPSS: usize = 1000;
/// Spans a tag-name or tag-value request reads at most: a sample of recent data, as Tempo's.
const TAG_SAMPLE_SPANS: u64 = 200_000;
/// Names per scope, and values, a tag request answers at most.
const MAX_TAG_ANSWERS: usize = 1000;
/// Steps a metrics range query may have.
const MAX_STEPS: u64 = 11_000;

/// Intrinsics as Tempo lists them in `/api/v2/search/tags` (docs/TEMPO_API.md).
const INTRINSIC_TAGS: [&str; 25] = [
    "duration",
    "name",
    "status",
    "statusMessage",
    "kind",
    "rootServiceName",
    "rootName",
    "traceDuration",
    "event:name",
    "event:timeSinceStart",
    "link:spanID",
    "link:traceID",
    "instrumentation:name",
    "instrumentation:version",
    "trace:id",
    "span:id",
    "span:parentID",
    "span:status",
    "span:statusMessage",
    "span:duration",
    "span:name",
    "span:kind",
    "trace:rootName",
    "trace:rootService",
    "trace:duration",
];

fn text(status: StatusCode, message: impl Into<String>) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message.into()).into_response()
}

fn bad(message: impl Into<String>) -> Response {
    text(StatusCode::BAD_REQUEST, message)
}

fn failed(state: &ApiState, e: super::QueryFailure) -> Response {
    text(e.status(), e.message(&state.limits))
}

pub async fn echo() -> Response {
    text(StatusCode::OK, "echo\n")
}

/// Version 2.1.0: Grafana then searches over HTTP (Tempo's gRPC streaming is not served).
pub async fn buildinfo() -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "version": "2.1.0",
            "revision": concat!("spindle-", env!("CARGO_PKG_VERSION")),
            "branch": "main",
            "buildUser": "",
            "buildDate": "",
            "goVersion": "",
        }),
    )
}

// ---- values as Tempo's JSON writes them ----

/// A Go duration string, as Tempo shows duration values: `446.979497ms`, `1.5s`, `2m3s`.
fn go_duration(nanos: i64) -> String {
    let negative = nanos < 0;
    let n = nanos.unsigned_abs();
    let fraction = |value: u64, unit: u64, suffix: &str| {
        let whole = value / unit;
        let rest = value % unit;
        if rest == 0 {
            format!("{whole}{suffix}")
        } else {
            let digits = format!("{rest:0width$}", width = unit.ilog10() as usize);
            format!("{whole}.{}{suffix}", digits.trim_end_matches('0'))
        }
    };
    let body = if n == 0 {
        "0s".to_string()
    } else if n < 1_000 {
        format!("{n}ns")
    } else if n < 1_000_000 {
        fraction(n, 1_000, "µs")
    } else if n < 1_000_000_000 {
        fraction(n, 1_000_000, "ms")
    } else {
        let (h, rest) = (n / HOUR_NANOS, n % HOUR_NANOS);
        let (m, rest) = (rest / 60_000_000_000, rest % 60_000_000_000);
        let s = fraction(rest, 1_000_000_000, "s");
        match (h, m) {
            (0, 0) => s,
            (0, m) => format!("{m}m{s}"),
            (h, m) => format!("{h}h{m}m{s}"),
        }
    };
    if negative {
        format!("-{body}")
    } else {
        body
    }
}

fn any_value(value: &Static) -> Option<Value> {
    Some(match value {
        Static::Nil => return None,
        Static::Str(s) => json!({ "stringValue": s }),
        Static::Int(i) => json!({ "intValue": i.to_string() }),
        Static::Float(f) if f.is_finite() => json!({ "doubleValue": f }),
        Static::Float(f) => json!({ "doubleValue": f.to_string() }),
        Static::Bool(b) => json!({ "boolValue": b }),
        Static::Duration(d) => json!({ "stringValue": go_duration(*d) }),
        other => json!({ "stringValue": other.to_string() }),
    })
}

fn key_values(pairs: &[(String, Static)]) -> Vec<Value> {
    pairs.iter().filter_map(|(k, v)| any_value(v).map(|v| json!({ "key": k, "value": v }))).collect()
}

/// An attribute's name as Tempo shows it on a matched span: without its scope.
fn shown_name(name: &str) -> String {
    for scope in ["span.", "resource.", "event.", "link.", "instrumentation."] {
        if let Some(rest) = name.strip_prefix(scope) {
            return rest.to_string();
        }
    }
    name.trim_start_matches('.').to_string()
}

/// A trace id as Tempo's search writes it: hex without leading zeros.
fn search_trace_id(id: TraceId) -> String {
    let hex = id.to_hex();
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".into()
    } else {
        trimmed.to_string()
    }
}

fn search_json(answer: &SearchAnswer) -> Value {
    let traces: Vec<Value> = answer
        .traces
        .iter()
        .map(|t| {
            let spansets: Vec<Value> = t
                .spansets
                .iter()
                .map(|set| {
                    let spans: Vec<Value> = set
                        .spans
                        .iter()
                        .map(|s| {
                            let attributes: Vec<(String, Static)> =
                                s.attributes.iter().map(|(k, v)| (shown_name(k), v.clone())).collect();
                            let mut span = json!({
                                "spanID": s.span_id.to_hex(),
                                "name": s.name,
                                "startTimeUnixNano": s.start_unix_nano.to_string(),
                                "durationNanos": s.duration_nanos.to_string(),
                            });
                            let attributes = key_values(&attributes);
                            if !attributes.is_empty() {
                                span["attributes"] = json!(attributes);
                            }
                            span
                        })
                        .collect();
                    let mut value = json!({ "spans": spans, "matched": set.matched });
                    let attributes: Vec<(String, Static)> = set
                        .attributes
                        .iter()
                        .map(|(k, v)| (if k == "aggregate" { k.clone() } else { format!("by({k})") }, v.clone()))
                        .collect();
                    if !attributes.is_empty() {
                        value["attributes"] = json!(key_values(&attributes));
                    }
                    value
                })
                .collect();
            let mut trace = json!({
                "traceID": search_trace_id(t.trace_id),
                "rootServiceName": t.root_service.as_deref().unwrap_or("<root span not yet received>"),
                "rootTraceName": t.root_name.as_deref().unwrap_or("<root span not yet received>"),
                "startTimeUnixNano": t.start_unix_nano.to_string(),
            });
            let ms = t.duration_nanos / 1_000_000;
            if ms > 0 {
                trace["durationMs"] = json!(ms);
            }
            if let Some(first) = spansets.first() {
                trace["spanSet"] = first.clone();
                trace["spanSets"] = json!(spansets);
            }
            trace
        })
        .collect();
    json!({
        "traces": traces,
        "metrics": {
            "inspectedTraces": answer.inspected_traces,
            "inspectedSpans": answer.inspected_spans.to_string(),
            "completedJobs": 1,
            "totalJobs": 1,
        }
    })
}

// ---- parameters ----

/// `start`/`end` of search and tag requests: unix seconds; default the last hour.
fn seconds_range(params: &Params) -> Result<(u64, u64), String> {
    let read = |name: &str| -> Result<Option<u64>, String> {
        match params.value(&[name]).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => v
                .parse::<u64>()
                .map(|s| Some(s.saturating_mul(1_000_000_000)))
                .map_err(|_| format!("invalid {name}: {v} is not unix epoch seconds")),
        }
    };
    let end = read("end")?.unwrap_or_else(now_unix_nano);
    let start = read("start")?.unwrap_or_else(|| end.saturating_sub(HOUR_NANOS));
    if start > end {
        return Err("invalid start: it must not be after end".into());
    }
    // `end` in seconds covers that whole second.
    Ok((start, end.saturating_add(999_999_999)))
}

/// A time of the metrics API: unix seconds, nanoseconds, fractional seconds or RFC 3339.
fn metrics_time(value: &str) -> Option<u64> {
    if let Ok(n) = value.parse::<u64>() {
        return Some(if value.len() <= 10 { n.saturating_mul(1_000_000_000) } else { n });
    }
    if let Ok(f) = value.parse::<f64>() {
        return (f.is_finite() && f >= 0.0).then_some((f * 1e9) as u64);
    }
    parse_rfc3339_nanos(value)
}

fn duration_param(params: &Params, name: &str) -> Result<Option<u64>, String> {
    match params.value(&[name]).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => parse_go_duration(v)
            .or_else(|| v.parse::<f64>().ok().filter(|s| s.is_finite() && *s > 0.0).map(|s| (s * 1e9) as u64))
            .map(Some)
            .ok_or_else(|| format!("invalid {name}: {v} is not a duration like 30s or 5m")),
    }
}

fn count_param(params: &Params, name: &str, default: usize) -> Result<usize, String> {
    match params.value(&[name]).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => v.parse::<usize>().map_err(|_| format!("invalid {name}: must be a positive number")),
    }
}

fn parse_traceql(q: &str) -> Result<Query, String> {
    spindle_traceql::parse(q).map(|p| p.query).map_err(|e| format!("invalid TraceQL query: {e}"))
}

/// Tempo's tag search (`tags=key=value …`, logfmt) as the TraceQL filter it means.
fn tags_query(tags: &str) -> Result<String, String> {
    let mut terms = Vec::new();
    let mut rest = tags.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { return Err(format!("invalid tags: '{rest}' has no '='")) };
        let key = rest[..eq].trim();
        rest = &rest[eq + 1..];
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let Some(end) = quoted.find('"') else { return Err("invalid tags: a closing quote is missing".into()) };
            value = quoted[..end].to_string();
            rest = quoted[end + 1..].trim_start();
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            value = rest[..end].to_string();
            rest = rest[end..].trim_start();
        }
        let field = match key {
            "service.name" => "resource.service.name".to_string(),
            "name" => "name".to_string(),
            "status.code" | "status" => format!("status = {}", value.to_ascii_lowercase()),
            k => format!(".\"{}\"", k.replace('\\', "\\\\").replace('"', "\\\"")),
        };
        if key == "status.code" || key == "status" {
            terms.push(field);
        } else if key == "error" && value == "true" {
            terms.push("status = error".into());
        } else {
            terms.push(format!("{field} = \"{}\"", value.replace('\\', "\\\\").replace('"', "\\\"")));
        }
    }
    Ok(if terms.is_empty() { "{ }".into() } else { format!("{{ {} }}", terms.join(" && ")) })
}

// ---- search ----

pub async fn search(TenantState(state): TenantState, RawQuery(raw): RawQuery) -> Response {
    let params = Params::parse(raw.as_deref());
    let q = params.value(&["q"]).filter(|v| !v.is_empty());
    let tags = params.value(&["tags"]).filter(|v| !v.is_empty());
    let text = match (q, tags) {
        (Some(_), Some(_)) => return bad("invalid request: can't specify tags and q in the same query"),
        (Some(q), None) => q.to_string(),
        (None, Some(tags)) => match tags_query(tags) {
            Ok(t) => t,
            Err(e) => return bad(e),
        },
        (None, None) => "{ }".to_string(),
    };
    let expr = match parse_traceql(&text) {
        Ok(Query::Search(expr)) => expr,
        Ok(Query::Metrics(_)) => {
            return bad("invalid TraceQL query: this is a metrics query; send it to /api/metrics/query_range")
        }
        Err(e) => return bad(e),
    };
    let (start, end) = match seconds_range(&params) {
        Ok(r) => r,
        Err(e) => return bad(e),
    };
    let (min, max) = match (duration_param(&params, "minDuration"), duration_param(&params, "maxDuration")) {
        (Ok(min), Ok(max)) => (min, max),
        (Err(e), _) | (_, Err(e)) => return bad(e),
    };
    let (limit, spss) = match (count_param(&params, "limit", DEFAULT_LIMIT), count_param(&params, "spss", DEFAULT_SPSS))
    {
        (Ok(l), Ok(s)) if l > 0 && s <= MAX_SPSS => (l, if s == 0 { MAX_SPSS } else { s }),
        (Ok(0), _) => return bad("invalid limit: must be a positive number"),
        (Ok(_), Ok(_)) => return bad(format!("invalid spss: at most {MAX_SPSS}")),
        (Err(e), _) | (_, Err(e)) => return bad(e),
    };
    let mut warnings = Vec::new();
    let limit = cap_limit(&state, limit, "limit", &mut warnings);
    let start = cap_range(&state, start, end, &mut warnings);
    let query = state.query.clone();
    let result = heavy(&state, "TraceQL search", move |control| {
        let opts = SearchOptions {
            start_unix_nano: start,
            end_unix_nano: end,
            limit,
            spans_per_spanset: spss,
            min_trace_duration_nanos: min,
            max_trace_duration_nanos: max,
            control: control.clone(),
        };
        engine::search(&query, &expr, &opts)
    })
    .await;
    match result {
        Ok(answer) => {
            let mut body = search_json(&answer);
            if !warnings.is_empty() {
                body["warnings"] = json!(warnings);
            }
            json_response(StatusCode::OK, &body)
        }
        Err(e) => failed(&state, e),
    }
}

// ---- traces by id ----

fn wants_protobuf(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("application/protobuf"))
}

/// OTLP `TracesData` bytes of a trace (`tempopb.Trace` is wire-compatible).
fn trace_protobuf(spans: &[Span]) -> Vec<u8> {
    let data =
        opentelemetry_proto::tonic::trace::v1::TracesData { resource_spans: otlp::spans_to_resource_spans(spans) };
    data.encode_to_vec()
}

/// OTLP JSON as Tempo writes it (protobuf's JSON mapping): ids as base64, enums by name.
fn trace_json(spans: &[Span]) -> Value {
    let mut value = otlp_json::encode_traces_data(spans);
    fn rebase(value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    if matches!(k.as_str(), "traceId" | "spanId" | "parentSpanId") {
                        if let Value::String(hex) = v {
                            let bytes: Option<Vec<u8>> = (0..hex.len() / 2)
                                .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
                                .collect();
                            if let Some(bytes) = bytes.filter(|b| !b.is_empty()) {
                                *v = Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
                            }
                        }
                    } else if k == "kind" || k == "code" {
                        let names: &[&str] =
                            if k == "kind" { &otlp_json::SPAN_KIND_NAMES } else { &otlp_json::STATUS_CODE_NAMES };
                        if let Some(name) = v.as_u64().and_then(|i| names.get(i as usize)) {
                            *v = json!(name);
                        }
                    } else {
                        rebase(v);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(rebase),
            _ => {}
        }
    }
    rebase(&mut value);
    value
}

async fn read_trace(state: &ApiState, id: &str) -> Result<Option<(Vec<Span>, usize)>, Response> {
    let id = parse_trace_id("traceID", id).map_err(|e| bad(e.message))?;
    let query = state.query.clone();
    match blocking(move || query.get_trace(id)).await {
        Ok(trace) => Ok(trace.map(|t| (t.spans, t.omitted_spans))),
        Err(e) => Err(text(super::failure_status(&e), e)),
    }
}

/// `/api/v2/traces/{id}`: `TraceByIDResponse`, 200 with an empty trace when unknown.
pub async fn trace_v2(TenantState(state): TenantState, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let (spans, omitted) = match read_trace(&state, &id).await {
        Ok(Some(found)) => found,
        Ok(None) => (Vec::new(), 0),
        Err(response) => return response,
    };
    let message = (omitted > 0).then(|| {
        let message = format!(
            "trace has {} spans; only the first {} are served (query_max_trace_spans)",
            spans.len() + omitted,
            spans.len()
        );
        state.hit(Limit::TraceSpans, &message);
        message
    });
    if wants_protobuf(&headers) {
        // TraceByIDResponse: trace = 1, status = 3 (PARTIAL = 1), message = 4.
        let trace = trace_protobuf(&spans);
        let mut body = Vec::with_capacity(trace.len() + 16);
        prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut body);
        prost::encoding::encode_varint(trace.len() as u64, &mut body);
        body.extend_from_slice(&trace);
        if let Some(message) = &message {
            prost::encoding::int32::encode(3, &1, &mut body);
            prost::encoding::string::encode(4, message, &mut body);
        }
        return (StatusCode::OK, [(header::CONTENT_TYPE, "application/protobuf")], body).into_response();
    }
    let trace = if spans.is_empty() { json!({}) } else { trace_json(&spans) };
    let mut body = json!({ "trace": trace, "metrics": {} });
    if let Some(message) = message {
        body["status"] = json!("PARTIAL");
        body["message"] = json!(message);
    }
    json_response(StatusCode::OK, &body)
}

/// `/tempo/api/traces/{id}`: the bare trace (`batches` in JSON), 404 when unknown.
pub async fn trace_v1(TenantState(state): TenantState, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let spans = match read_trace(&state, &id).await {
        Ok(Some((spans, _))) => spans,
        Ok(None) => return text(StatusCode::NOT_FOUND, ""),
        Err(response) => return response,
    };
    if wants_protobuf(&headers) {
        return (StatusCode::OK, [(header::CONTENT_TYPE, "application/protobuf")], trace_protobuf(&spans))
            .into_response();
    }
    let resource_spans = trace_json(&spans)["resourceSpans"].take();
    json_response(StatusCode::OK, &json!({ "batches": resource_spans }))
}

/// `/api/traces/{id}`: Tempo's protobuf trace when asked for, else Jaeger's answer.
pub async fn trace_v1_or_jaeger(tenant: TenantState, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if wants_protobuf(&headers) {
        trace_v1(tenant, Path(id), headers).await
    } else {
        super::jaeger::get_trace(tenant, Path(id)).await
    }
}

// ---- tags ----

/// The `q` filter of a tag request, leniently: anything but one spanset filter is ignored.
fn tag_filter(params: &Params) -> Option<Field> {
    let q = params.value(&["q"]).filter(|v| !v.is_empty())?;
    match spindle_traceql::parse(q).ok()?.query {
        Query::Search(SpansetExpr::Filter(field)) => Some(field),
        _ => None,
    }
}

const SCOPES: [&str; 5] = ["resource", "span", "event", "link", "instrumentation"];

async fn tag_names(
    state: &ApiState,
    params: &Params,
) -> Result<BTreeMap<&'static str, BTreeSet<String>>, Box<Response>> {
    let (start, end) = seconds_range(params).map_err(|e| Box::new(bad(e)))?;
    let filter = tag_filter(params);
    let query = state.query.clone();
    let result = heavy(state, "tag names", move |control| {
        let mut names: BTreeMap<&'static str, BTreeSet<String>> =
            SCOPES.iter().map(|s| (*s, BTreeSet::new())).collect();
        engine::sample_spans(&query, filter.as_ref(), start, end, TAG_SAMPLE_SPANS, control, &mut |span| {
            let mut add = |scope: &'static str, key: &str| {
                let set = names.get_mut(scope).expect("scope");
                if set.len() < MAX_TAG_ANSWERS {
                    set.insert(key.to_string());
                }
            };
            span.attributes.iter().for_each(|kv| add("span", &kv.key));
            span.resource.attributes.iter().for_each(|kv| add("resource", &kv.key));
            span.events.iter().flat_map(|e| &e.attributes).for_each(|kv| add("event", &kv.key));
            span.links.iter().flat_map(|l| &l.attributes).for_each(|kv| add("link", &kv.key));
            span.scope.attributes.iter().for_each(|kv| add("instrumentation", &kv.key));
            false
        })?;
        Ok(names)
    })
    .await;
    result.map_err(|e| Box::new(failed(state, e)))
}

fn scope_param(params: &Params) -> Result<Option<String>, String> {
    match params.value(&["scope"]).filter(|v| !v.is_empty() && *v != "none") {
        None => Ok(None),
        Some(s) if s == "intrinsic" || SCOPES.contains(&s) => Ok(Some(s.to_string())),
        Some(s) => Err(format!("invalid scope: {s}")),
    }
}

pub async fn tags_v2(TenantState(state): TenantState, RawQuery(raw): RawQuery) -> Response {
    let params = Params::parse(raw.as_deref());
    let scope = match scope_param(&params) {
        Ok(s) => s,
        Err(e) => return bad(e),
    };
    let mut scopes = Vec::new();
    if scope.as_deref() != Some("intrinsic") {
        let names = match tag_names(&state, &params).await {
            Ok(n) => n,
            Err(r) => return *r,
        };
        for (name, tags) in names {
            if scope.as_deref().is_none_or(|s| s == name) {
                scopes.push(json!({ "name": name, "tags": tags }));
            }
        }
    }
    if scope.as_deref().is_none_or(|s| s == "intrinsic") {
        scopes.push(json!({ "name": "intrinsic", "tags": INTRINSIC_TAGS }));
    }
    json_response(StatusCode::OK, &json!({ "scopes": scopes, "metrics": {} }))
}

pub async fn tags_v1(TenantState(state): TenantState, RawQuery(raw): RawQuery) -> Response {
    let params = Params::parse(raw.as_deref());
    let scope = match scope_param(&params) {
        Ok(s) => s,
        Err(e) => return bad(e),
    };
    if scope.as_deref() == Some("intrinsic") {
        return json_response(StatusCode::OK, &json!({ "tagNames": INTRINSIC_TAGS, "metrics": {} }));
    }
    let names = match tag_names(&state, &params).await {
        Ok(n) => n,
        Err(r) => return *r,
    };
    let all: BTreeSet<&String> = names
        .iter()
        .filter(|(name, _)| scope.as_deref().map_or(matches!(**name, "span" | "resource"), |s| s == **name))
        .flat_map(|(_, tags)| tags)
        .collect();
    json_response(StatusCode::OK, &json!({ "tagNames": all, "metrics": {} }))
}

/// A tag as a TraceQL field: `resource.service.name`, `.foo`, `name`, `span:status`.
fn tag_field(tag: &str) -> Option<Field> {
    match spindle_traceql::parse(&format!("{{ {tag} = nil }}")).ok()?.query {
        Query::Search(SpansetExpr::Filter(Field::Binary(_, field, _))) => match *field {
            f @ (Field::Attribute(_) | Field::Intrinsic(_)) => Some(f),
            _ => None,
        },
        _ => None,
    }
}

fn typed(value: &Static) -> Option<(&'static str, String)> {
    Some(match value {
        Static::Nil => return None,
        Static::Str(s) => ("string", s.clone()),
        Static::Int(i) => ("int", i.to_string()),
        Static::Float(f) => ("float", f.to_string()),
        Static::Bool(b) => ("bool", b.to_string()),
        Static::Duration(d) => ("duration", go_duration(*d)),
        other => ("keyword", other.to_string()),
    })
}

async fn tag_values(
    state: &ApiState,
    field: Field,
    params: &Params,
) -> Result<BTreeSet<(&'static str, String)>, Box<Response>> {
    let fixed: Option<Vec<&str>> = match &field {
        Field::Intrinsic(Intrinsic::Status) => Some(vec!["error", "ok", "unset"]),
        Field::Intrinsic(Intrinsic::Kind) => {
            Some(vec!["client", "consumer", "internal", "producer", "server", "unspecified"])
        }
        Field::Intrinsic(Intrinsic::Duration | Intrinsic::TraceDuration) => Some(Vec::new()),
        _ => None,
    };
    if let Some(fixed) = fixed {
        return Ok(fixed.into_iter().map(|v| ("keyword", v.to_string())).collect());
    }
    let (start, end) = seconds_range(params).map_err(|e| Box::new(bad(e)))?;
    let filter = tag_filter(params);
    let query = state.query.clone();
    let result = heavy(state, "tag values", move |control| {
        let mut values: BTreeSet<(&'static str, String)> = BTreeSet::new();
        engine::sample_spans(&query, filter.as_ref(), start, end, TAG_SAMPLE_SPANS, control, &mut |span| {
            let value = match &field {
                // Trace-level names read the root spans.
                Field::Intrinsic(Intrinsic::RootService) if span.is_root() => {
                    FieldValue::One(Static::Str(span.service_name().to_string()))
                }
                Field::Intrinsic(Intrinsic::RootName) if span.is_root() => {
                    FieldValue::One(Static::Str(span.name.to_string()))
                }
                Field::Intrinsic(Intrinsic::RootService | Intrinsic::RootName) => return false,
                f => eval_field(f, 0, &TraceView::single(span)),
            };
            let items = match value {
                FieldValue::One(v) => vec![v],
                FieldValue::Many { items, .. } => items,
            };
            for item in items {
                if let Some(t) = typed(&item) {
                    values.insert(t);
                }
            }
            values.len() >= MAX_TAG_ANSWERS
        })?;
        Ok(values)
    })
    .await;
    result.map_err(|e| Box::new(failed(state, e)))
}

pub async fn tag_values_v2(
    TenantState(state): TenantState,
    Path(tag): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let params = Params::parse(raw.as_deref());
    let Some(field) = tag_field(&tag) else {
        return bad(format!("please provide a valid tagName: {tag} is not a TraceQL attribute or intrinsic"));
    };
    match tag_values(&state, field, &params).await {
        Ok(values) => {
            let values: Vec<Value> = values.into_iter().map(|(t, v)| json!({ "type": t, "value": v })).collect();
            json_response(StatusCode::OK, &json!({ "tagValues": values, "metrics": {} }))
        }
        Err(r) => *r,
    }
}

pub async fn tag_values_v1(
    TenantState(state): TenantState,
    Path(tag): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let params = Params::parse(raw.as_deref());
    let field = match tag.as_str() {
        "status.code" => Field::Intrinsic(Intrinsic::Status),
        "error" => return json_response(StatusCode::OK, &json!({ "tagValues": ["true"], "metrics": {} })),
        name => Field::Attribute(spindle_traceql::ast::Attribute { scope: Scope::Unscoped, name: name.to_string() }),
    };
    match tag_values(&state, field, &params).await {
        Ok(values) => {
            let values: BTreeSet<String> = values.into_iter().map(|(_, v)| v).collect();
            json_response(StatusCode::OK, &json!({ "tagValues": values, "metrics": {} }))
        }
        Err(r) => *r,
    }
}

// ---- metrics ----

/// The step Tempo derives when none is given: about range/240, rounded down to a round size.
fn default_step(range: u64) -> u64 {
    const ROUND: [u64; 6] =
        [3_600_000_000_000, 300_000_000_000, 60_000_000_000, 15_000_000_000, 5_000_000_000, 1_000_000_000];
    let want = range / 240;
    ROUND.into_iter().find(|s| *s <= want).unwrap_or(1_000_000_000)
}

fn metrics_window(params: &Params, instant: bool) -> Result<(u64, u64, u64), String> {
    let end = match params.value(&["end"]).filter(|v| !v.is_empty()) {
        Some(v) => metrics_time(v).ok_or_else(|| format!("invalid end: {v}"))?,
        None => now_unix_nano(),
    };
    let start = match (params.value(&["start"]).filter(|v| !v.is_empty()), duration_param(params, "since")?) {
        (Some(v), _) => metrics_time(v).ok_or_else(|| format!("invalid start: {v}"))?,
        (None, Some(since)) => end.saturating_sub(since),
        (None, None) => end.saturating_sub(HOUR_NANOS),
    };
    if end <= start {
        return Err("end must be greater than start".into());
    }
    let step = if instant {
        end - start
    } else {
        duration_param(params, "step")?.unwrap_or_else(|| default_step(end - start)).max(1_000_000)
    };
    if !instant && (end - start) / step > MAX_STEPS {
        return Err(format!("step too small: at most {MAX_STEPS} steps per query; widen step or narrow the range"));
    }
    Ok((start, end, step))
}

fn metric_name(expr: &MetricsExpr) -> Option<&'static str> {
    match expr {
        MetricsExpr::Query(q) if q.by.is_empty() && !matches!(q.function, MetricsFunction::Compare { .. }) => {
            Some(q.function.name())
        }
        _ => None,
    }
}

/// Series labels with `__name__` for a query not grouped by anything.
fn series_labels(series: &Series, name: Option<&str>) -> Vec<Value> {
    let mut labels = series.labels.clone();
    if let Some(name) = name {
        if !labels.iter().any(|(k, _)| k != "p" && k != "__bucket") {
            labels.insert(0, ("__name__".into(), Static::Str(name.into())));
        }
    }
    key_values(&labels)
}

async fn run_metrics(state: &ApiState, raw: Option<String>, instant: bool) -> Response {
    let params = Params::parse(raw.as_deref());
    let Some(q) = params.value(&["q", "query"]).filter(|v| !v.is_empty()).map(str::to_string) else {
        return bad("invalid request: q (a TraceQL metrics query) is required");
    };
    let expr = match parse_traceql(&q) {
        Ok(Query::Metrics(m)) => m,
        Ok(Query::Search(_)) => {
            return bad(
                "invalid TraceQL query: a metrics query ends in a function like | rate() or | count_over_time()",
            )
        }
        Err(e) => return bad(e),
    };
    let (start, end, step) = match metrics_window(&params, instant) {
        Ok(w) => w,
        Err(e) => return bad(e),
    };
    let mut warnings = Vec::new();
    let start = cap_range(state, start, end, &mut warnings);
    let step = if instant { end - start } else { step };
    let window = Window { start_unix_nano: start, end_unix_nano: end, step_nanos: step };
    let query = state.query.clone();
    let name = metric_name(&expr);
    let max_series = state.limits.query_max_series;
    let result =
        heavy(state, "TraceQL metrics", move |control| engine::metrics(&query, &expr, window, max_series, control))
            .await;
    let answer = match result {
        Ok(a) => a,
        Err(e) => return failed(state, e),
    };
    let series: Vec<Value> = answer
        .series
        .iter()
        .map(|s| {
            let labels = series_labels(s, name);
            if instant {
                json!({ "labels": labels, "value": s.samples.last().map_or(0.0, |(_, v)| *v) })
            } else {
                let samples: Vec<Value> =
                    s.samples.iter().map(|(t, v)| json!({ "timestampMs": t.to_string(), "value": v })).collect();
                json!({ "labels": labels, "samples": samples })
            }
        })
        .collect();
    let mut body = json!({
        "series": series,
        "metrics": { "inspectedSpans": answer.inspected_spans.to_string(), "completedJobs": 1, "totalJobs": 1 },
    });
    if answer.truncated {
        let message = format!("more than {max_series} series: the rest are left out (query_max_series)");
        state.hit(Limit::QuerySeries, &message);
        body["status"] = json!("PARTIAL");
        body["message"] = json!(message);
    }
    if !warnings.is_empty() {
        body["warnings"] = json!(warnings);
    }
    json_response(StatusCode::OK, &body)
}

pub async fn query_range(TenantState(state): TenantState, RawQuery(raw): RawQuery) -> Response {
    run_metrics(&state, raw, false).await
}

pub async fn query_instant(TenantState(state): TenantState, RawQuery(raw): RawQuery) -> Response {
    run_metrics(&state, raw, true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_go_writes_them() {
        assert_eq!(go_duration(446_979_497), "446.979497ms");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(3_723_000_000_000), "1h2m3s");
        assert_eq!(go_duration(1_500), "1.5µs");
        assert_eq!(go_duration(12), "12ns");
        assert_eq!(go_duration(0), "0s");
    }

    #[test]
    fn tag_searches_become_traceql() {
        assert_eq!(
            tags_query("service.name=cart http.url=\"/api/my api\"").unwrap(),
            "{ resource.service.name = \"cart\" && .\"http.url\" = \"/api/my api\" }"
        );
        assert_eq!(tags_query("error=true").unwrap(), "{ status = error }");
        assert!(tags_query("nope").is_err());
        for tags in ["service.name=cart http.url=\"/api/my api\"", "error=true", "status.code=error"] {
            spindle_traceql::parse(&tags_query(tags).unwrap()).expect("parses");
        }
    }

    #[test]
    fn default_steps_are_round() {
        assert_eq!(default_step(HOUR_NANOS), 15_000_000_000);
        assert_eq!(default_step(24 * HOUR_NANOS), 300_000_000_000);
        assert_eq!(default_step(60_000_000_000), 1_000_000_000);
    }

    #[test]
    fn tags_are_traceql_fields() {
        assert!(matches!(tag_field("resource.service.name"), Some(Field::Attribute(_))));
        assert!(matches!(tag_field("span:status"), Some(Field::Intrinsic(Intrinsic::Status))));
        assert!(matches!(tag_field(".foo"), Some(Field::Attribute(_))));
        assert!(tag_field("}{").is_none());
    }
}
