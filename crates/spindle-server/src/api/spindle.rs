//! Spindle's own analytics API (`/api/spindle/*`), documented in `docs/API.md` and
//! `docs/openapi.yaml`.
//!
//! Filters take the same parameters as Jaeger's `/api/traces` (`service`, `operation`,
//! `spanKind`, `tags`, `tag`, `start`/`end` in µs, `minDuration`/`maxDuration`) and match
//! single spans. Durations in answers are milliseconds, times µs since the epoch.
//!
//! An answer a limit changed (a range shortened, groups folded into "other", a `limit`
//! lowered) carries a top-level `warnings` array of strings.

use axum::extract::{Path, RawQuery};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};
use spindle_query::analytics::{self, Stats};
use spindle_query::sketch::LatencySketch;
use spindle_store::TraceQuery;

use super::jaeger::{cap_limit, cap_range, parse_trace_id, search_query};
use super::params::{ParamError, Params};
use super::TenantState;
use super::{blocking, heavy, json_response, warned, ApiState, QueryFailure};
use crate::limits::Limit;

fn error(status: StatusCode, message: String) -> Response {
    json_response(status, &json!({"error": {"httpCode": status.as_u16(), "message": message}}))
}

fn bad_request(e: ParamError) -> Response {
    error(StatusCode::BAD_REQUEST, e.message)
}

fn failed(state: &ApiState, e: QueryFailure) -> Response {
    error(e.status(), e.message(&state.limits))
}

/// The span filter of an analytics query, its range capped by `query_max_lookback`.
fn filter(state: &ApiState, params: &Params, warnings: &mut Vec<String>) -> Result<TraceQuery, ParamError> {
    let mut query = TraceQuery { limit: usize::MAX, ..search_query(params)? };
    query.start_time_min_unix_nano =
        cap_range(state, query.start_time_min_unix_nano, query.start_time_max_unix_nano, warnings);
    Ok(query)
}

fn ms(nanos: f64) -> f64 {
    (nanos / 1e3).round() / 1e3
}

fn quantiles(sketch: &LatencySketch) -> Value {
    let q = |p| sketch.quantile(p).map(ms);
    json!({"p50Ms": q(0.5), "p90Ms": q(0.9), "p95Ms": q(0.95), "p99Ms": q(0.99)})
}

fn stats_json(stats: &Stats, seconds: f64) -> Value {
    let mut v = quantiles(&stats.latency);
    v["calls"] = json!(stats.calls);
    v["errors"] = json!(stats.errors);
    v["errorRatio"] = json!(stats.error_ratio());
    v["ratePerSec"] = json!(if seconds > 0.0 { stats.calls as f64 / seconds } else { 0.0 });
    v
}

fn step(params: &Params, default_nanos: u64) -> Result<u64, ParamError> {
    Ok(params.duration_nanos(&["step"])?.unwrap_or(default_nanos).max(1_000_000_000))
}

/// `limit`: a positive integer, lowered to `query_max_limit` with a warning.
fn limit(state: &ApiState, params: &Params, default: usize, warnings: &mut Vec<String>) -> Result<usize, ParamError> {
    let requested = match params.get(&["limit"]) {
        None => default,
        Some((k, v)) => v.parse().ok().filter(|l| *l > 0).ok_or_else(|| ParamError::new(k, v, "a positive integer"))?,
    };
    Ok(cap_limit(state, requested, "limit", warnings))
}

fn span_json(s: &analytics::SpanRef) -> Value {
    json!({
        "traceID": s.trace_id.to_jaeger_hex(),
        "spanID": s.span_id.to_hex(),
        "service": s.service,
        "operation": s.operation,
        "startTime": s.start_unix_nano / 1000,
        "durationMs": ms(s.duration_nanos as f64),
        "error": s.error,
    })
}

/// `GET /api/spindle/stats`: rate, error ratio and p50/p90/p95/p99 per `groupBy` value
/// (any attribute, e.g. `symbol`), as totals and a series of `step` points.
pub async fn stats(TenantState(state): TenantState, RawQuery(raw): RawQuery) -> Response {
    let params = Params::parse(raw.as_deref());
    let mut warnings = Vec::new();
    let parsed = filter(&state, &params, &mut warnings).and_then(|f| Ok((f, step(&params, 60_000_000_000)?)));
    let (query, step) = match parsed {
        Ok(v) => v,
        Err(e) => return bad_request(e),
    };
    let group_by = params.value(&["groupBy"]).map(str::to_string);
    let q = state.query.clone();
    let window = query.clone();
    let max_groups = state.limits.max_analytics_groups;
    let answer = heavy(&state, "stats", move |control| {
        q.red_top(&TraceQuery { control: control.clone(), ..window }, group_by.as_deref(), step, max_groups)
    })
    .await;
    match answer {
        Ok(answer) => {
            let seconds = (query.start_time_max_unix_nano - query.start_time_min_unix_nano) as f64 / 1e9;
            let group_json = |g: &analytics::GroupStats| {
                let series: Vec<Value> = g
                    .series
                    .iter()
                    .map(|(t, s)| {
                        let mut v = stats_json(s, step as f64 / 1e9);
                        v["time"] = json!(t / 1000);
                        v
                    })
                    .collect();
                json!({"group": g.group, "total": stats_json(&g.total, seconds), "series": series})
            };
            let mut groups: Vec<Value> = answer.groups.iter().map(group_json).collect();
            if let Some(other) = &answer.other {
                // Tempo and Prometheus users expect the top N plus one row for the rest.
                let folded = answer.other_groups;
                let at_least = if answer.other_uncounted { "at least " } else { "" };
                let warning = format!(
                    "{} groups with most calls shown; {at_least}{folded} more merged into the \"other\" row (max_analytics_groups)",
                    answer.groups.len()
                );
                state.hit(Limit::AnalyticsGroups, &warning);
                warnings.push(warning);
                let mut row = group_json(other);
                row["group"] = json!("other");
                row["other"] = json!(true);
                row["otherGroups"] = json!(folded);
                groups.push(row);
            }
            warned(json!({"groups": groups, "stepMs": step / 1_000_000}), warnings)
        }
        Err(e) => failed(&state, e),
    }
}

/// `GET /api/spindle/slowest`: the `limit` longest matching spans.
pub async fn slowest(TenantState(state): TenantState, RawQuery(raw): RawQuery) -> Response {
    let params = Params::parse(raw.as_deref());
    let mut warnings = Vec::new();
    let parsed =
        filter(&state, &params, &mut warnings).and_then(|f| Ok((f, limit(&state, &params, 20, &mut warnings)?)));
    let (query, limit) = match parsed {
        Ok(v) => v,
        Err(e) => return bad_request(e),
    };
    let q = state.query.clone();
    match heavy(&state, "slowest", move |control| q.slowest(&TraceQuery { control: control.clone(), ..query }, limit))
        .await
    {
        Ok(spans) => warned(json!({"spans": spans.iter().map(span_json).collect::<Vec<_>>()}), warnings),
        Err(e) => failed(&state, e),
    }
}

/// `GET /api/spindle/outliers`: matching spans slower than the filter's `quantile`.
pub async fn outliers(TenantState(state): TenantState, RawQuery(raw): RawQuery) -> Response {
    let params = Params::parse(raw.as_deref());
    let quantile = match params.get(&["quantile"]) {
        None => Ok(0.99),
        Some((k, v)) => v
            .parse::<f64>()
            .ok()
            .filter(|q| *q > 0.0 && *q < 1.0)
            .ok_or_else(|| ParamError::new(k, v, "a number in (0, 1), e.g. 0.99")),
    };
    let mut warnings = Vec::new();
    let parsed = quantile
        .and_then(|q| Ok((q, filter(&state, &params, &mut warnings)?, limit(&state, &params, 100, &mut warnings)?)));
    let (quantile, query, limit) = match parsed {
        Ok(v) => v,
        Err(e) => return bad_request(e),
    };
    let q = state.query.clone();
    let found = heavy(&state, "outliers", move |control| {
        q.outliers(&TraceQuery { control: control.clone(), ..query }, quantile, limit)
    })
    .await;
    match found {
        Ok((threshold, spans)) => warned(
            json!({"quantile": quantile, "thresholdMs": ms(threshold as f64), "spans": spans.iter().map(span_json).collect::<Vec<_>>()}),
            warnings,
        ),
        Err(e) => failed(&state, e),
    }
}

/// `GET /api/spindle/errors`: error groups (service, operation, error type) with counts
/// and example traces.
pub async fn errors(TenantState(state): TenantState, RawQuery(raw): RawQuery) -> Response {
    let params = Params::parse(raw.as_deref());
    let mut warnings = Vec::new();
    let query = match filter(&state, &params, &mut warnings) {
        Ok(v) => v,
        Err(e) => return bad_request(e),
    };
    let q = state.query.clone();
    match heavy(&state, "errors", move |control| q.error_groups(&TraceQuery { control: control.clone(), ..query }, 5))
        .await
    {
        Ok(mut groups) => {
            let max = state.limits.max_analytics_groups;
            if groups.len() > max {
                // Largest first already: the smallest groups are the ones left out.
                let warning = format!("{max} largest of {} error groups shown (max_analytics_groups)", groups.len());
                state.hit(Limit::AnalyticsGroups, &warning);
                warnings.push(warning);
                groups.truncate(max);
            }
            let groups: Vec<Value> = groups
                .iter()
                .map(|g| {
                    json!({
                        "service": g.service,
                        "operation": g.operation,
                        "errorType": g.error_type,
                        "count": g.count,
                        "exampleTraceIDs": g.example_traces.iter().map(|t| t.to_jaeger_hex()).collect::<Vec<_>>(),
                        "lastSeen": g.last_seen_unix_nano / 1000,
                    })
                })
                .collect();
            warned(json!({"groups": groups}), warnings)
        }
        Err(e) => failed(&state, e),
    }
}

/// `GET /api/spindle/traces/{id}/critical-path`.
pub async fn critical_path(TenantState(state): TenantState, Path(trace_id): Path<String>) -> Response {
    let id = match parse_trace_id("traceID", &trace_id) {
        Ok(id) => id,
        Err(e) => return bad_request(e),
    };
    let q = state.query.clone();
    match blocking(move || q.get_trace(id)).await {
        Ok(Some(trace)) => {
            let segments: Vec<Value> = analytics::critical_path(&trace)
                .iter()
                .map(|s| json!({"spanID": s.span_id.to_hex(), "start": s.start_unix_nano / 1000, "end": s.end_unix_nano / 1000}))
                .collect();
            json_response(StatusCode::OK, &json!({"traceID": id.to_jaeger_hex(), "segments": segments}))
        }
        Ok(None) => error(StatusCode::NOT_FOUND, "trace not found".into()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// `GET /api/spindle/compare?a=&b=`: structure diff and per-operation latency deltas.
pub async fn compare(TenantState(state): TenantState, RawQuery(raw): RawQuery) -> Response {
    let params = Params::parse(raw.as_deref());
    let ids = ["a", "b"].map(|name| match params.value(&[name]) {
        Some(v) => parse_trace_id(name, v),
        None => Err(ParamError::missing(name, "a trace id")),
    });
    let (a, b) = match ids {
        [Ok(a), Ok(b)] => (a, b),
        [Err(e), _] | [_, Err(e)] => return bad_request(e),
    };
    let q = state.query.clone();
    match blocking(move || Ok((q.get_trace(a)?, q.get_trace(b)?))).await {
        Ok((Some(ta), Some(tb))) => {
            let c = analytics::compare(&ta, &tb);
            let structure: Vec<Value> =
                c.structure.iter().map(|d| json!({"path": d.path, "countA": d.count_a, "countB": d.count_b})).collect();
            let operations: Vec<Value> = c
                .operations
                .iter()
                .map(|o| {
                    json!({
                        "service": o.service, "operation": o.operation,
                        "countA": o.count_a, "countB": o.count_b,
                        "totalMsA": ms(o.total_nanos_a as f64), "totalMsB": ms(o.total_nanos_b as f64),
                        "deltaMs": ms(o.total_nanos_b as f64 - o.total_nanos_a as f64),
                    })
                })
                .collect();
            json_response(
                StatusCode::OK,
                &json!({"a": a.to_jaeger_hex(), "b": b.to_jaeger_hex(), "structure": structure, "operations": operations}),
            )
        }
        Ok(_) => error(StatusCode::NOT_FOUND, "trace not found".into()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// `GET /api/spindle/kafka-hops`: producer end → consumer start per topic, as a series.
pub async fn kafka_hops(TenantState(state): TenantState, RawQuery(raw): RawQuery) -> Response {
    let params = Params::parse(raw.as_deref());
    let mut warnings = Vec::new();
    let (query, step) =
        match filter(&state, &params, &mut warnings).and_then(|f| Ok((f, step(&params, 60_000_000_000)?))) {
            Ok(v) => v,
            Err(e) => return bad_request(e),
        };
    let q = state.query.clone();
    match heavy(&state, "kafka-hops", move |control| {
        q.kafka_hops(&TraceQuery { control: control.clone(), ..query }, step)
    })
    .await
    {
        Ok(topics) => {
            let topics: Vec<Value> = topics
                .iter()
                .map(|(topic, points)| {
                    let series: Vec<Value> = points
                        .iter()
                        .map(|(t, s)| {
                            let mut v = quantiles(s);
                            v["time"] = json!(t / 1000);
                            v["count"] = json!(s.count());
                            v["maxMs"] = json!(ms(s.max() as f64));
                            v
                        })
                        .collect();
                    json!({"topic": topic, "series": series})
                })
                .collect();
            warned(json!({"topics": topics}), warnings)
        }
        Err(e) => failed(&state, e),
    }
}

/// `GET /api/spindle/graph`: the service graph with virtual Kafka and database nodes,
/// calls, errors and p99 per edge.
pub async fn graph(TenantState(state): TenantState, RawQuery(raw): RawQuery) -> Response {
    let params = Params::parse(raw.as_deref());
    let mut warnings = Vec::new();
    let query = match filter(&state, &params, &mut warnings) {
        Ok(v) => v,
        Err(e) => return bad_request(e),
    };
    let q = state.query.clone();
    let services = q.clone();
    let graph = heavy(&state, "graph", move |control| {
        Ok((q.service_graph(&TraceQuery { control: control.clone(), ..query })?, services.services()?))
    })
    .await;
    match graph {
        Ok((edges, services)) => {
            let mut nodes: std::collections::BTreeMap<String, Value> = std::collections::BTreeMap::new();
            for s in &services {
                nodes.insert(s.clone(), json!({"id": s, "kind": "service", "virtual": false}));
            }
            for e in &edges {
                for name in [&e.parent, &e.child] {
                    // Peers that spans name but that send no spans: Kafka topics, databases, …
                    // A peer with edges out is a broker, or one topic of it (`kafka/topic`).
                    let forwards = edges.iter().any(|x| x.parent == *name);
                    nodes.entry(name.clone()).or_insert_with(|| match name.split_once('/') {
                        Some((system, topic)) if forwards => {
                            json!({"id": name, "kind": "topic", "virtual": true, "system": system, "topic": topic})
                        }
                        _ if forwards => json!({"id": name, "kind": "broker", "virtual": true, "system": name}),
                        _ => json!({"id": name, "kind": "peer", "virtual": true}),
                    });
                }
            }
            let edges: Vec<Value> = edges
                .iter()
                .map(|e| {
                    json!({
                        "parent": e.parent, "child": e.child,
                        "callCount": e.stats.calls, "errorCount": e.stats.errors,
                        "p99Ms": e.stats.latency.quantile(0.99).map(ms),
                    })
                })
                .collect();
            warned(json!({"nodes": nodes.into_values().collect::<Vec<_>>(), "edges": edges}), warnings)
        }
        Err(e) => failed(&state, e),
    }
}

/// `GET /api/spindle/alerts`: every rule and its state.
pub async fn alerts(TenantState(state): TenantState) -> Response {
    let alerts = state
        .alerting
        .as_ref()
        .map(|a| a.state_json(&state.tenant, &state.tenants.settings().default_tenant))
        .unwrap_or_else(|| json!([]));
    json_response(StatusCode::OK, &json!({"enabled": state.alerting.is_some(), "alerts": alerts}))
}
