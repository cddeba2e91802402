//! Jaeger's internal JSON API (`/api/*`), the one Jaeger UI and Grafana call.
//!
//! Envelope: `{"data":…,"total":n,"limit":0,"offset":0,"errors":null}`; errors as
//! `{"data":null,…,"errors":[{"code":400,"msg":"…"}]}`. Times in µs (traces) and ms
//! (dependencies), durations in Go syntax. Searching without `service` searches all
//! services (Jaeger refuses; its issue #423).
//!
//! An answer a limit changed (a `limit` lowered, a range shortened, a trace cut) says so in
//! `errors` of a 200 answer, as `{"msg": …}` without a code: Jaeger UI and Grafana read
//! `data` of a 200 answer and leave `errors` aside, so they keep working.

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use serde_json::{json, Value};
use spindle_codec::jaeger_json;
use spindle_model::{SpanKind, TraceId};
use spindle_query::Trace;
use spindle_store::TraceQuery;

use super::params::{now_unix_nano, ParamError, Params};
use super::TenantState;
use super::{blocking, heavy, json_response, ApiState, QueryFailure};
use crate::limits::Limit;

const DEFAULT_SEARCH_WINDOW_NANOS: u64 = 48 * 3600 * 1_000_000_000;
const DEFAULT_DEPENDENCIES_LOOKBACK_MS: u64 = 24 * 3600 * 1000;
pub const DEFAULT_LIMIT: usize = 100;

#[derive(Serialize)]
struct Envelope<T: Serialize> {
    data: T,
    total: usize,
    limit: usize,
    offset: usize,
    errors: Option<Vec<Value>>,
}

fn ok<T: Serialize>(data: T, total: usize) -> Response {
    json_response(StatusCode::OK, &Envelope { data, total, limit: 0, offset: 0, errors: None })
}

/// A 200 answer whose `errors` carry `warnings` (limits that changed it), if any.
fn ok_warned<T: Serialize>(data: T, total: usize, warnings: Vec<String>) -> Response {
    let errors = (!warnings.is_empty()).then(|| warnings.into_iter().map(|w| json!({ "msg": w })).collect());
    json_response(StatusCode::OK, &Envelope { data, total, limit: 0, offset: 0, errors })
}

fn failed(state: &ApiState, e: QueryFailure) -> Response {
    error(e.status(), e.message(&state.limits))
}

pub fn error(status: StatusCode, msg: String) -> Response {
    let errors = vec![json!({"code": status.as_u16(), "msg": msg})];
    json_response(status, &Envelope { data: Value::Null, total: 0, limit: 0, offset: 0, errors: Some(errors) })
}

fn bad_request(e: ParamError) -> Response {
    error(StatusCode::BAD_REQUEST, e.message)
}

fn internal(msg: String) -> Response {
    error(super::failure_status(&msg), msg)
}

pub async fn services(TenantState(state): TenantState) -> Response {
    let query = state.query.clone();
    match blocking(move || query.services()).await {
        Ok(services) => {
            let total = services.len();
            ok(services, total)
        }
        Err(e) => internal(e),
    }
}

/// The warning of an operations list the store keeps bounded (`max_operations_per_service`).
pub(super) fn operations_partial(service: &str) -> String {
    format!(
        "service {service} has more operations than are listed (max_operations_per_service); the rest are stored and searchable by name"
    )
}

pub async fn service_operations(TenantState(state): TenantState, Path(service): Path<String>) -> Response {
    let query = state.query.clone();
    let name = service.clone();
    match blocking(move || Ok((query.operations(&service, None)?, query.operations_capped(&service)?))).await {
        Ok((ops, capped)) => {
            let mut names: Vec<String> = ops.into_iter().map(|o| o.name).collect();
            names.dedup();
            let total = names.len();
            let warnings = if capped { vec![operations_partial(&name)] } else { Vec::new() };
            // Jaeger's Go handler answers a nil slice, `null`, when there are none.
            ok_warned((total > 0).then_some(names), total, warnings)
        }
        Err(e) => internal(e),
    }
}

pub fn parse_span_kind(params: &Params, names: &[&str]) -> Result<Option<SpanKind>, ParamError> {
    match params.get(names) {
        None => Ok(None),
        Some((k, v)) => SpanKind::from_jaeger_str(v)
            .map(|kind| (kind != SpanKind::Unspecified).then_some(kind))
            .ok_or_else(|| ParamError::new(k, v, "one of server, client, producer, consumer, internal")),
    }
}

pub async fn operations(TenantState(state): TenantState, RawQuery(raw): RawQuery) -> Response {
    let params = Params::parse(raw.as_deref());
    let Some(service) = params.value(&["service"]).map(str::to_string) else {
        return bad_request(ParamError::missing("service", "a service name"));
    };
    let kind = match parse_span_kind(&params, &["spanKind"]) {
        Ok(k) => k,
        Err(e) => return bad_request(e),
    };
    let query = state.query.clone();
    let name = service.clone();
    match blocking(move || Ok((query.operations(&service, kind)?, query.operations_capped(&service)?))).await {
        Ok((ops, capped)) => {
            let data: Vec<Value> =
                ops.iter().map(|o| json!({"name": o.name, "spanKind": o.kind.as_jaeger_str()})).collect();
            let total = data.len();
            let warnings = if capped { vec![operations_partial(&name)] } else { Vec::new() };
            ok_warned(data, total, warnings)
        }
        Err(e) => internal(e),
    }
}

/// Parses a trace id as Jaeger's API takes it: up to 32 hex characters.
pub fn parse_trace_id(name: &str, value: &str) -> Result<TraceId, ParamError> {
    TraceId::from_hex(value)
        .ok()
        .filter(|t| t.is_valid())
        .ok_or_else(|| ParamError::new(name, value, "a non-zero trace id of 1 to 32 hex characters"))
}

/// `tags` (a JSON object, URL-encoded) and repeated `tag=key:value`.
fn parse_tags(params: &Params) -> Result<Vec<(String, String)>, ParamError> {
    let mut out = Vec::new();
    if let Some(text) = params.value(&["tags"]) {
        out.extend(parse_attribute_map("tags", text)?);
    }
    for tag in params.all("tag") {
        let (k, v) = tag.split_once(':').ok_or_else(|| ParamError::new("tag", tag, "key:value"))?;
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// A JSON object of attribute filters; non-string values are taken as their JSON text.
pub fn parse_attribute_map(name: &str, text: &str) -> Result<Vec<(String, String)>, ParamError> {
    let map: BTreeMap<String, Value> = serde_json::from_str(text)
        .map_err(|_| ParamError::new(name, text, r#"a JSON object such as {"http.status_code":"500"}"#))?;
    Ok(map
        .into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect())
}

fn parse_limit(params: &Params, names: &[&str]) -> Result<usize, ParamError> {
    match params.get(names) {
        None => Ok(DEFAULT_LIMIT),
        Some((k, v)) => {
            v.parse::<usize>().ok().filter(|l| *l > 0).ok_or_else(|| ParamError::new(k, v, "a positive integer"))
        }
    }
}

/// Lowers a search's `limit` to `query_max_limit`, saying so in `warnings`.
pub(super) fn cap_limit(state: &ApiState, limit: usize, name: &str, warnings: &mut Vec<String>) -> usize {
    let max = state.limits.query_max_limit;
    if limit <= max {
        return limit;
    }
    let warning = format!("{name}={limit} lowered to {max} (query_max_limit)");
    state.hit(Limit::QueryLimit, &warning);
    warnings.push(warning);
    max
}

/// Shortens `[start, end]` (ns) to its most recent `query_max_lookback`, saying so in
/// `warnings`; returns the new start.
pub(super) fn cap_range(state: &ApiState, start: u64, end: u64, warnings: &mut Vec<String>) -> u64 {
    let max = state.limits.query_max_lookback;
    let max_nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    if end.saturating_sub(start) <= max_nanos {
        return start;
    }
    let warning = format!(
        "time range of {}h shortened to its most recent {}h (query_max_lookback)",
        end.saturating_sub(start) / 3_600_000_000_000,
        max.as_secs() / 3600
    );
    state.hit(Limit::QueryLookback, &warning);
    warnings.push(warning);
    end - max_nanos
}

/// A parsed search with `limit` and time range capped by the settings.
pub(super) fn capped(
    state: &ApiState,
    mut query: TraceQuery,
    limit_name: &str,
    warnings: &mut Vec<String>,
) -> TraceQuery {
    query.limit = cap_limit(state, query.limit, limit_name, warnings);
    query.start_time_min_unix_nano =
        cap_range(state, query.start_time_min_unix_nano, query.start_time_max_unix_nano, warnings);
    query
}

/// The warning of a trace cut to `query_max_trace_spans`, counted; `None` when whole.
pub(super) fn trace_cut(state: &ApiState, trace: &Trace) -> Option<String> {
    (trace.omitted_spans > 0).then(|| {
        let warning = format!(
            "trace {} has {} spans; only the first {} (by start time) are served (query_max_trace_spans)",
            trace.trace_id.to_jaeger_hex(),
            trace.spans.len() + trace.omitted_spans,
            trace.spans.len()
        );
        state.hit(Limit::TraceSpans, &warning);
        warning
    })
}

pub(super) fn search_query(params: &Params) -> Result<TraceQuery, ParamError> {
    let micros = "microseconds since the unix epoch";
    let end = params.u64(&["end"], micros)?.map(|us| us.saturating_mul(1000)).unwrap_or_else(now_unix_nano);
    let start = params
        .u64(&["start"], micros)?
        .map(|us| us.saturating_mul(1000))
        .unwrap_or_else(|| end.saturating_sub(DEFAULT_SEARCH_WINDOW_NANOS));
    if start > end {
        return Err(ParamError { message: format!("invalid time range: start ({start} ns) is after end ({end} ns)") });
    }
    let min = params.duration_nanos(&["minDuration"])?;
    let max = params.duration_nanos(&["maxDuration"])?;
    if let (Some(min), Some(max)) = (min, max) {
        if min > max {
            return Err(ParamError { message: "invalid durations: minDuration is greater than maxDuration".into() });
        }
    }
    Ok(TraceQuery {
        service: params.value(&["service"]).map(str::to_string),
        operation: params.value(&["operation"]).map(str::to_string),
        span_kind: parse_span_kind(params, &["spanKind"])?,
        attributes: parse_tags(params)?,
        start_time_min_unix_nano: start,
        start_time_max_unix_nano: end,
        duration_min_nanos: min,
        duration_max_nanos: max,
        limit: parse_limit(params, &["limit"])?,
        ..TraceQuery::default()
    })
}

/// Traces as Jaeger JSON; a trace cut by the span cap carries the warning in its own
/// `warnings` too (the UI shows a trace's warnings), and in `warnings` for the envelope.
fn traces_json(state: &ApiState, traces: &[Trace], warnings: &mut Vec<String>) -> Vec<jaeger_json::Trace> {
    traces
        .iter()
        .map(|t| {
            let mut json = jaeger_json::trace(t.trace_id, &t.spans);
            if let Some(cut) = trace_cut(state, t) {
                json.warnings = Some(vec![cut.clone()]);
                warnings.push(cut);
            }
            json
        })
        .collect()
}

pub async fn find_traces(TenantState(state): TenantState, RawQuery(raw): RawQuery) -> Response {
    let params = Params::parse(raw.as_deref());
    let ids: Result<Vec<TraceId>, ParamError> = params.all("traceID").map(|v| parse_trace_id("traceID", v)).collect();
    let ids = match ids {
        Ok(ids) => ids,
        Err(e) => return bad_request(e),
    };
    let query = state.query.clone();
    if !ids.is_empty() {
        // Jaeger's multi-get: found traces in data, missing ones as 404 errors.
        let result = blocking(move || {
            let mut found = Vec::new();
            let mut missing = Vec::new();
            for id in ids {
                match query.get_trace(id)? {
                    Some(t) => found.push(t),
                    None => missing.push(id),
                }
            }
            Ok((found, missing))
        })
        .await;
        return match result {
            Ok((found, missing)) => {
                let mut warnings = Vec::new();
                let data = traces_json(&state, &found, &mut warnings);
                let errors: Vec<Value> = missing
                    .iter()
                    .map(|id| json!({"code": 404, "msg": "trace not found", "traceID": id.to_jaeger_hex()}))
                    .chain(warnings.into_iter().map(|w| json!({ "msg": w })))
                    .collect();
                json_response(
                    StatusCode::OK,
                    &Envelope { data, total: 0, limit: 0, offset: 0, errors: (!errors.is_empty()).then_some(errors) },
                )
            }
            Err(e) => internal(e),
        };
    }
    let mut warnings = Vec::new();
    let search = match search_query(&params) {
        Ok(q) => capped(&state, q, "limit", &mut warnings),
        Err(e) => return bad_request(e),
    };
    let found =
        heavy(&state, "search", move |control| query.find_traces(&TraceQuery { control: control.clone(), ..search }))
            .await;
    match found {
        Ok(traces) => {
            let data = traces_json(&state, &traces, &mut warnings);
            ok_warned(data, 0, warnings)
        }
        Err(e) => failed(&state, e),
    }
}

pub async fn get_trace(TenantState(state): TenantState, Path(trace_id): Path<String>) -> Response {
    let id = match parse_trace_id("traceID", &trace_id) {
        Ok(id) => id,
        Err(e) => return bad_request(e),
    };
    let query = state.query.clone();
    match blocking(move || query.get_trace(id)).await {
        Ok(Some(trace)) => {
            let mut warnings = Vec::new();
            let data = traces_json(&state, std::slice::from_ref(&trace), &mut warnings);
            ok_warned(data, 0, warnings)
        }
        Ok(None) => error(StatusCode::NOT_FOUND, "trace not found".into()),
        Err(e) => internal(e),
    }
}

pub async fn dependencies(TenantState(state): TenantState, RawQuery(raw): RawQuery) -> Response {
    let params = Params::parse(raw.as_deref());
    let millis = "milliseconds";
    let parsed = params
        .u64(&["endTs"], "milliseconds since the unix epoch")
        .and_then(|end| Ok((end.unwrap_or(now_unix_nano() / 1_000_000), params.u64(&["lookback"], millis)?)));
    let (end_ms, lookback_ms) = match parsed {
        Ok((end, lookback)) => (end, lookback.unwrap_or(DEFAULT_DEPENDENCIES_LOOKBACK_MS)),
        Err(e) => return bad_request(e),
    };
    let end = end_ms.saturating_mul(1_000_000);
    let mut warnings = Vec::new();
    let start = cap_range(&state, end.saturating_sub(lookback_ms.saturating_mul(1_000_000)), end, &mut warnings);
    let query = state.query.clone();
    // The store's dependency scan takes its deadline from the thread (`QueryControl::run`).
    match heavy(&state, "dependencies", move |_| query.dependencies(start, end)).await {
        Ok(links) => {
            let data: Vec<Value> = links
                .iter()
                .map(|l| json!({"parent": l.parent, "child": l.child, "callCount": l.call_count}))
                .collect();
            ok_warned(data, 0, warnings)
        }
        Err(e) => failed(&state, e),
    }
}
