//! Spindle's own analytics API (`/api/spindle/*`), documented in `docs/API.md` and
//! `docs/openapi.yaml`.
//!
//! Filters take the same parameters as Jaeger's `/api/traces` (`service`, `operation`,
//! `spanKind`, `tags`, `tag`, `start`/`end` in µs, `minDuration`/`maxDuration`) and match
//! single spans. Durations in answers are milliseconds, times µs since the epoch.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};
use spindle_query::analytics::{self, Stats};
use spindle_query::sketch::LatencySketch;
use spindle_store::TraceQuery;

use super::jaeger::{parse_trace_id, search_query};
use super::params::{ParamError, Params};
use super::{blocking, json_response, ApiState};

fn error(status: StatusCode, message: String) -> Response {
    json_response(status, &json!({"error": {"httpCode": status.as_u16(), "message": message}}))
}

fn bad_request(e: ParamError) -> Response {
    error(StatusCode::BAD_REQUEST, e.message)
}

fn filter(params: &Params) -> Result<TraceQuery, ParamError> {
    Ok(TraceQuery { limit: usize::MAX, ..search_query(params)? })
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

fn limit(params: &Params, default: usize) -> Result<usize, ParamError> {
    match params.get(&["limit"]) {
        None => Ok(default),
        Some((k, v)) => v
            .parse()
            .ok()
            .filter(|l| *l > 0 && *l <= 10_000)
            .ok_or_else(|| ParamError::new(k, v, "an integer from 1 to 10000")),
    }
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
pub async fn stats(State(state): State<ApiState>, RawQuery(raw): RawQuery) -> Response {
    let params = Params::parse(raw.as_deref());
    let parsed = filter(&params).and_then(|f| Ok((f, step(&params, 60_000_000_000)?)));
    let (query, step) = match parsed {
        Ok(v) => v,
        Err(e) => return bad_request(e),
    };
    let group_by = params.value(&["groupBy"]).map(str::to_string);
    let q = state.query.clone();
    let window = query.clone();
    match blocking(move || q.red(&window, group_by.as_deref(), step)).await {
        Ok(groups) => {
            let seconds = (query.start_time_max_unix_nano - query.start_time_min_unix_nano) as f64 / 1e9;
            let groups: Vec<Value> = groups
                .iter()
                .map(|g| {
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
                })
                .collect();
            json_response(StatusCode::OK, &json!({"groups": groups, "stepMs": step / 1_000_000}))
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// `GET /api/spindle/slowest`: the `limit` longest matching spans.
pub async fn slowest(State(state): State<ApiState>, RawQuery(raw): RawQuery) -> Response {
    let params = Params::parse(raw.as_deref());
    let (query, limit) = match filter(&params).and_then(|f| Ok((f, limit(&params, 20)?))) {
        Ok(v) => v,
        Err(e) => return bad_request(e),
    };
    let q = state.query.clone();
    match blocking(move || q.slowest(&query, limit)).await {
        Ok(spans) => json_response(StatusCode::OK, &json!({"spans": spans.iter().map(span_json).collect::<Vec<_>>()})),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// `GET /api/spindle/outliers`: matching spans slower than the filter's `quantile`.
pub async fn outliers(State(state): State<ApiState>, RawQuery(raw): RawQuery) -> Response {
    let params = Params::parse(raw.as_deref());
    let quantile = match params.get(&["quantile"]) {
        None => Ok(0.99),
        Some((k, v)) => v
            .parse::<f64>()
            .ok()
            .filter(|q| *q > 0.0 && *q < 1.0)
            .ok_or_else(|| ParamError::new(k, v, "a number in (0, 1), e.g. 0.99")),
    };
    let parsed = quantile.and_then(|q| Ok((q, filter(&params)?, limit(&params, 100)?)));
    let (quantile, query, limit) = match parsed {
        Ok(v) => v,
        Err(e) => return bad_request(e),
    };
    let q = state.query.clone();
    match blocking(move || q.outliers(&query, quantile, limit)).await {
        Ok((threshold, spans)) => json_response(
            StatusCode::OK,
            &json!({"quantile": quantile, "thresholdMs": ms(threshold as f64), "spans": spans.iter().map(span_json).collect::<Vec<_>>()}),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// `GET /api/spindle/errors`: error groups (service, operation, error type) with counts
/// and example traces.
pub async fn errors(State(state): State<ApiState>, RawQuery(raw): RawQuery) -> Response {
    let params = Params::parse(raw.as_deref());
    let query = match filter(&params) {
        Ok(v) => v,
        Err(e) => return bad_request(e),
    };
    let q = state.query.clone();
    match blocking(move || q.error_groups(&query, 5)).await {
        Ok(groups) => {
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
            json_response(StatusCode::OK, &json!({"groups": groups}))
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// `GET /api/spindle/traces/{id}/critical-path`.
pub async fn critical_path(State(state): State<ApiState>, Path(trace_id): Path<String>) -> Response {
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
pub async fn compare(State(state): State<ApiState>, RawQuery(raw): RawQuery) -> Response {
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
pub async fn kafka_hops(State(state): State<ApiState>, RawQuery(raw): RawQuery) -> Response {
    let params = Params::parse(raw.as_deref());
    let (query, step) = match filter(&params).and_then(|f| Ok((f, step(&params, 60_000_000_000)?))) {
        Ok(v) => v,
        Err(e) => return bad_request(e),
    };
    let q = state.query.clone();
    match blocking(move || q.kafka_hops(&query, step)).await {
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
            json_response(StatusCode::OK, &json!({"topics": topics}))
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// `GET /api/spindle/graph`: the service graph with virtual Kafka and database nodes,
/// calls, errors and p99 per edge.
pub async fn graph(State(state): State<ApiState>, RawQuery(raw): RawQuery) -> Response {
    let params = Params::parse(raw.as_deref());
    let query = match filter(&params) {
        Ok(v) => v,
        Err(e) => return bad_request(e),
    };
    let q = state.query.clone();
    let services = q.clone();
    match blocking(move || Ok((q.service_graph(&query)?, services.services()?))).await {
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
            json_response(StatusCode::OK, &json!({"nodes": nodes.into_values().collect::<Vec<_>>(), "edges": edges}))
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// `GET /api/spindle/alerts`: every rule and its state.
pub async fn alerts(State(state): State<ApiState>) -> Response {
    let alerts = state.alerting.as_ref().map(|a| a.state_json()).unwrap_or_else(|| json!([]));
    json_response(StatusCode::OK, &json!({"enabled": state.alerting.is_some(), "alerts": alerts}))
}
