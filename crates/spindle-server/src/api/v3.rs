//! Jaeger's API v3 over HTTP (`/api/v3/*`): OTLP JSON traces under `{"result": …}`,
//! errors as `{"error":{…}}`, 404 when nothing matches. Query parameters take the
//! canonical camelCase names and the snake_case aliases Grafana still sends.
//!
//! An answer a limit changed carries a top-level `warnings` array of strings beside
//! `result` (Jaeger's v3 has none; its clients ignore fields they do not know).

use axum::extract::{Path, RawQuery};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};
use spindle_codec::otlp_json;
use spindle_query::Trace;
use spindle_store::TraceQuery;

use super::jaeger::{capped, parse_attribute_map, parse_span_kind, parse_trace_id, trace_cut, DEFAULT_LIMIT};
use super::params::{now_unix_nano, parse_rfc3339_nanos, ParamError, Params};
use super::TenantState;
use super::{blocking, heavy, json_response, warned, ApiState, QueryFailure};

const DEFAULT_SEARCH_WINDOW_NANOS: u64 = 48 * 3600 * 1_000_000_000;

fn error(status: StatusCode, message: String) -> Response {
    let grpc_code = match status {
        StatusCode::BAD_REQUEST => 3,
        StatusCode::NOT_FOUND => 5,
        _ => 13,
    };
    json_response(
        status,
        &json!({"error": {
            "grpcCode": grpc_code,
            "httpCode": status.as_u16(),
            "message": message,
            "httpStatus": status.canonical_reason().unwrap_or(""),
        }}),
    )
}

fn bad_request(e: ParamError) -> Response {
    error(StatusCode::BAD_REQUEST, e.message)
}

fn failed(state: &ApiState, e: QueryFailure) -> Response {
    error(e.status(), e.message(&state.limits))
}

pub async fn services(TenantState(state): TenantState) -> Response {
    let query = state.query.clone();
    match blocking(move || query.services()).await {
        Ok(services) => json_response(StatusCode::OK, &json!({ "services": services })),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

pub async fn operations(TenantState(state): TenantState, RawQuery(raw): RawQuery) -> Response {
    let params = Params::parse(raw.as_deref());
    let Some(service) = params.value(&["service"]).map(str::to_string) else {
        return bad_request(ParamError::missing("service", "a service name"));
    };
    let kind = match parse_span_kind(&params, &["spanKind", "span_kind"]) {
        Ok(k) => k,
        Err(e) => return bad_request(e),
    };
    let query = state.query.clone();
    let name = service.clone();
    match blocking(move || Ok((query.operations(&service, kind)?, query.operations_capped(&service)?))).await {
        Ok((ops, capped)) => {
            let operations: Vec<Value> = ops
                .iter()
                .map(|o| {
                    // v3 reports an unspecified kind as internal.
                    let kind = match o.kind.as_jaeger_str() {
                        "" => "internal",
                        k => k,
                    };
                    json!({"name": o.name, "spanKind": kind})
                })
                .collect();
            let warnings = if capped { vec![super::jaeger::operations_partial(&name)] } else { Vec::new() };
            warned(json!({ "operations": operations }), warnings)
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

fn time_param(params: &Params, names: &[&str]) -> Result<Option<u64>, ParamError> {
    match params.get(names) {
        None => Ok(None),
        Some((k, v)) => parse_rfc3339_nanos(v)
            .map(Some)
            .ok_or_else(|| ParamError::new(k, v, "an RFC 3339 time such as 2024-05-01T10:00:00.000000000Z")),
    }
}

fn search_query(params: &Params) -> Result<TraceQuery, ParamError> {
    let end = time_param(params, &["query.startTimeMax", "query.start_time_max"])?.unwrap_or_else(now_unix_nano);
    let start = time_param(params, &["query.startTimeMin", "query.start_time_min"])?
        .unwrap_or_else(|| end.saturating_sub(DEFAULT_SEARCH_WINDOW_NANOS));
    if start > end {
        return Err(ParamError {
            message: "invalid time range: query.startTimeMin is after query.startTimeMax".into(),
        });
    }
    let attributes = match params.get(&["query.attributes"]) {
        Some((k, v)) => parse_attribute_map(k, v)?,
        None => Vec::new(),
    };
    let limit = match params.get(&["query.searchDepth", "query.search_depth", "query.num_traces"]) {
        None => DEFAULT_LIMIT,
        Some((k, v)) => {
            v.parse::<usize>().ok().filter(|l| *l > 0).ok_or_else(|| ParamError::new(k, v, "a positive integer"))?
        }
    };
    Ok(TraceQuery {
        service: params.value(&["query.serviceName", "query.service_name"]).map(str::to_string),
        operation: params.value(&["query.operationName", "query.operation_name"]).map(str::to_string),
        span_kind: parse_span_kind(params, &["query.spanKind", "query.span_kind"])?,
        attributes,
        start_time_min_unix_nano: start,
        start_time_max_unix_nano: end,
        duration_min_nanos: params.duration_nanos(&["query.durationMin", "query.duration_min"])?,
        duration_max_nanos: params.duration_nanos(&["query.durationMax", "query.duration_max"])?,
        limit,
        ..TraceQuery::default()
    })
}

fn result(state: &ApiState, traces: &[Trace], mut warnings: Vec<String>) -> Response {
    warnings.extend(traces.iter().filter_map(|t| trace_cut(state, t)));
    let spans = traces.iter().flat_map(|t| t.spans.iter());
    warned(json!({ "result": otlp_json::traces_data(spans) }), warnings)
}

const SEARCH_DEPTH: &str = "query.searchDepth";

async fn search(state: &ApiState, raw: Option<String>) -> Result<(Vec<Trace>, Vec<String>), Response> {
    let params = Params::parse(raw.as_deref());
    let mut warnings = Vec::new();
    let search = match search_query(&params) {
        Ok(q) => capped(state, q, SEARCH_DEPTH, &mut warnings),
        Err(e) => return Err(bad_request(e)),
    };
    let query = state.query.clone();
    match heavy(state, "search", move |control| query.find_traces(&TraceQuery { control: control.clone(), ..search }))
        .await
    {
        Ok(traces) => Ok((traces, warnings)),
        Err(e) => Err(failed(state, e)),
    }
}

pub async fn find_traces(TenantState(state): TenantState, RawQuery(raw): RawQuery) -> Response {
    match search(&state, raw).await {
        Ok((traces, _)) if traces.is_empty() => error(StatusCode::NOT_FOUND, "No traces found".into()),
        Ok((traces, warnings)) => result(&state, &traces, warnings),
        Err(response) => response,
    }
}

pub async fn get_trace(TenantState(state): TenantState, Path(trace_id): Path<String>) -> Response {
    let id = match parse_trace_id("trace_id", &trace_id) {
        Ok(id) => id,
        Err(e) => return bad_request(e),
    };
    let query = state.query.clone();
    match blocking(move || query.get_trace(id)).await {
        Ok(Some(trace)) => result(&state, std::slice::from_ref(&trace), Vec::new()),
        Ok(None) => error(StatusCode::NOT_FOUND, "trace not found".into()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

pub async fn trace_summaries(TenantState(state): TenantState, RawQuery(raw): RawQuery) -> Response {
    match search(&state, raw).await {
        Ok((traces, _)) if traces.is_empty() => error(StatusCode::NOT_FOUND, "No traces found".into()),
        Ok((traces, mut warnings)) => {
            warnings.extend(traces.iter().filter_map(|t| trace_cut(&state, t)));
            let summaries: Vec<Value> = traces
                .iter()
                .map(|t| {
                    let s = t.summary();
                    json!({
                        "traceId": s.trace_id.to_hex(),
                        "rootServiceName": s.root_service_name,
                        "rootOperationName": s.root_operation_name,
                        "minStartTimeUnixNano": s.min_start_time_unix_nano.to_string(),
                        "maxEndTimeUnixNano": s.max_end_time_unix_nano.to_string(),
                        "spanCount": s.span_count,
                        "errorSpanCount": s.error_span_count,
                        "orphanSpanCount": s.orphan_span_count,
                        "services": s.services.iter().map(|svc| json!({
                            "name": svc.name,
                            "spanCount": svc.span_count,
                            "errorSpanCount": svc.error_span_count,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            warned(json!({ "summaries": summaries }), warnings)
        }
        Err(response) => response,
    }
}
