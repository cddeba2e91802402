//! Jaeger's Service Performance Monitoring API (`/api/metrics/*`), answered from the
//! per-minute span metrics rather than a Prometheus query, so Jaeger UI's Monitor tab
//! and Grafana work against Spindle alone.
//!
//! Parameters and the bare `MetricFamily` response are Jaeger's: `service` (repeatable),
//! `groupByOperation`, `spanKind` (repeatable, default `server`), `endTs`, `lookback`,
//! `step`, `ratePer` (all ms), `quantile` for latencies. Each point covers the `ratePer`
//! window ending at its timestamp, like `rate(...[ratePer])` in Jaeger's PromQL.

use axum::extract::RawQuery;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};
use spindle_model::SpanKind;
use spindle_query::spanmetrics::{Point, SeriesFilter, SpanMetrics, BUCKET_NANOS};

use super::params::{format_rfc3339_millis, now_unix_nano, ParamError, Params};
use super::TenantState;
use super::{json_response, ApiState};

const MS: u64 = 1_000_000;
/// Points per query at most, to keep a bad `step` from asking for millions.
const MAX_POINTS: u64 = 2_000;

fn error(status: StatusCode, msg: String) -> Response {
    json_response(
        status,
        &json!({"data": null, "total": 0, "limit": 0, "offset": 0, "errors": [{"code": status.as_u16(), "msg": msg}]}),
    )
}

#[derive(Clone, Copy)]
enum Metric {
    Latencies(f64),
    Calls,
    Errors,
}

struct SpmQuery {
    filter: SeriesFilter,
    by_operation: bool,
    end: u64,
    lookback: u64,
    step: u64,
    rate_per: u64,
}

fn parse(params: &Params) -> Result<SpmQuery, ParamError> {
    let services: Vec<String> = params.all("service").map(str::to_string).collect();
    if services.is_empty() {
        return Err(ParamError::missing("service", "at least one service name"));
    }
    let mut kinds = Vec::new();
    for k in params.all("spanKind") {
        let trimmed = k.strip_prefix("SPAN_KIND_").unwrap_or(k);
        kinds.push(SpanKind::from_jaeger_str(trimmed).ok_or_else(|| {
            ParamError::new("spanKind", k, "unspecified, internal, server, client, producer or consumer")
        })?);
    }
    if kinds.is_empty() {
        kinds.push(SpanKind::Server);
    }
    let by_operation = match params.get(&["groupByOperation"]) {
        None => false,
        Some((k, v)) => v.parse::<bool>().map_err(|_| ParamError::new(k, v, "true or false"))?,
    };
    let ms = "milliseconds";
    let end = params
        .u64(&["endTs"], "milliseconds since the unix epoch")?
        .map(|v| v.saturating_mul(MS))
        .unwrap_or_else(now_unix_nano);
    let lookback = params.u64(&["lookback"], ms)?.unwrap_or(3_600_000).saturating_mul(MS);
    let step = params.u64(&["step"], ms)?.unwrap_or(5_000).saturating_mul(MS).max(BUCKET_NANOS);
    let rate_per = params.u64(&["ratePer"], ms)?.unwrap_or(600_000).saturating_mul(MS).max(BUCKET_NANOS);
    if lookback / step > MAX_POINTS {
        return Err(ParamError {
            message: format!("lookback/step asks for more than {MAX_POINTS} points; raise step"),
        });
    }
    Ok(SpmQuery {
        filter: SeriesFilter { services, kinds, operation: None },
        by_operation,
        end,
        lookback,
        step,
        rate_per,
    })
}

fn point_value(metric: Metric, point: &Point, rate_per: u64) -> Option<f64> {
    match metric {
        Metric::Latencies(q) => point.latency.quantile(q).map(|ns| ns / 1e6),
        Metric::Calls => Some(point.calls as f64 / (rate_per as f64 / 1e9)),
        Metric::Errors => (point.calls > 0).then(|| point.errors as f64 / point.calls as f64),
    }
}

async fn serve(state: ApiState, raw: Option<String>, metric: Metric) -> Response {
    let params = Params::parse(raw.as_deref());
    let metric = match (metric, params.get(&["quantile"])) {
        (Metric::Latencies(_), None) => {
            return error(
                StatusCode::BAD_REQUEST,
                ParamError::missing("quantile", "a number in (0, 1], e.g. 0.95").message,
            )
        }
        (Metric::Latencies(_), Some((k, v))) => match v.parse::<f64>() {
            Ok(q) if q > 0.0 && q <= 1.0 => Metric::Latencies(q),
            _ => return error(StatusCode::BAD_REQUEST, ParamError::new(k, v, "a number in (0, 1], e.g. 0.95").message),
        },
        (m, _) => m,
    };
    let query = match parse(&params) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.message),
    };
    let metrics = std::sync::Arc::clone(&state.metrics);
    let store = std::sync::Arc::clone(state.query.store());
    let family = tokio::task::spawn_blocking(move || {
        let answer = |minutes: &SpanMetrics| {
            let start = query.end.saturating_sub(query.lookback);
            let mut series: std::collections::BTreeMap<(String, Option<String>), Vec<Value>> = Default::default();
            let mut t = start - start % query.step + query.step;
            while t <= query.end {
                let window = minutes.series(
                    &query.filter,
                    t.saturating_sub(query.rate_per),
                    t,
                    query.rate_per,
                    query.by_operation,
                );
                for (group, points) in window {
                    let merged = points.into_iter().fold(Point::default(), |mut acc, p| {
                        acc.calls += p.calls;
                        acc.errors += p.errors;
                        acc.latency.merge(&p.latency);
                        acc
                    });
                    if let Some(value) = point_value(metric, &merged, query.rate_per) {
                        series.entry(group).or_default().push(json!({
                            "gaugeValue": {"doubleValue": value},
                            "timestamp": format_rfc3339_millis(t),
                        }));
                    }
                }
                t += query.step;
            }
            series
        };
        // A shared store (ClickHouse) computes the minutes over its spans, so every instance
        // answers alike; otherwise this process's minutes, counted at append, are the answer.
        let start = query.end.saturating_sub(query.lookback).saturating_sub(query.rate_per);
        let from = start - start % BUCKET_NANOS;
        match store.minute_buckets(from, query.end, &query.filter.services, &query.filter.kinds) {
            Ok(Some(rows)) => Ok(answer(&SpanMetrics::from_minute_buckets(rows))),
            Ok(None) => Ok(metrics.with_minutes(answer)),
            Err(e) => Err(e),
        }
    })
    .await;
    let family = match family {
        Ok(Ok(family)) => family,
        Ok(Err(e)) => return error(StatusCode::SERVICE_UNAVAILABLE, format!("span metrics unavailable: {e}")),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("span metrics query failed: {e}")),
    };
    let (name, help) = match metric {
        Metric::Latencies(q) => ("service_latencies", format!("{q}th quantile latency, grouped by service")),
        Metric::Calls => ("service_call_rate", "calls/sec, grouped by service".to_string()),
        Metric::Errors => (
            "service_error_rate",
            "error rate, computed as a fraction of errors/sec over calls/sec, grouped by service".to_string(),
        ),
    };
    let metrics: Vec<Value> = family
        .into_iter()
        .map(|((service, operation), points)| {
            let mut labels = vec![json!({"name": "service_name", "value": service})];
            if let Some(op) = operation {
                labels.push(json!({"name": "operation", "value": op}));
            }
            json!({"labels": labels, "metricPoints": points})
        })
        .collect();
    json_response(StatusCode::OK, &json!({"name": name, "type": "GAUGE", "help": help, "metrics": metrics}))
}

pub async fn latencies(TenantState(state): TenantState, RawQuery(raw): RawQuery) -> Response {
    serve(state, raw, Metric::Latencies(0.0)).await
}

pub async fn calls(TenantState(state): TenantState, RawQuery(raw): RawQuery) -> Response {
    serve(state, raw, Metric::Calls).await
}

pub async fn errors(TenantState(state): TenantState, RawQuery(raw): RawQuery) -> Response {
    serve(state, raw, Metric::Errors).await
}

/// The smallest step this backend resolves, in ms (one minute bucket).
pub async fn minstep() -> Response {
    json_response(
        StatusCode::OK,
        &json!({"data": BUCKET_NANOS / MS, "total": 0, "limit": 0, "offset": 0, "errors": null}),
    )
}
