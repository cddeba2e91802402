//! The HTTP APIs on the query port: Jaeger's `/api/*` and `/api/v3/*`; every other path
//! falls through to the embedded web UI (`crate::ui`).
//!
//! Handlers parse parameters, call [`QueryService`] on the blocking pool and shape the
//! answer exactly as Jaeger does, because Grafana's Jaeger data source and Jaeger's own
//! tools read these shapes. They never touch the store directly.

mod jaeger;
pub mod params;
mod spindle;
mod spm;
mod v3;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use spindle_query::{QueryError, QueryService};

use crate::alerting::Alerting;
use crate::telemetry::{EndpointLabels, Telemetry};

#[derive(Clone)]
pub struct ApiState {
    pub query: QueryService,
    pub telemetry: Arc<Telemetry>,
    pub alerting: Option<Arc<Alerting>>,
}

/// Times every API request into `spindle_query_duration_seconds{endpoint}`.
async fn time_queries(
    State(telemetry): State<Arc<Telemetry>>,
    path: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let response = next.run(request).await;
    if let Some(path) = path.filter(|p| p.as_str().starts_with("/api/")) {
        telemetry
            .server
            .query_duration
            .get_or_create(&EndpointLabels { endpoint: path.as_str().to_string() })
            .observe(started.elapsed().as_secs_f64());
    }
    response
}

pub fn router(state: ApiState) -> Router {
    let telemetry = Arc::clone(&state.telemetry);
    Router::new()
        .route("/api/services", get(jaeger::services))
        .route("/api/services/{service}/operations", get(jaeger::service_operations))
        .route("/api/operations", get(jaeger::operations))
        .route("/api/traces", get(jaeger::find_traces))
        .route("/api/traces/{trace_id}", get(jaeger::get_trace))
        .route("/api/dependencies", get(jaeger::dependencies))
        .route("/api/v3/services", get(v3::services))
        .route("/api/v3/operations", get(v3::operations))
        .route("/api/v3/traces", get(v3::find_traces))
        .route("/api/v3/traces/{trace_id}", get(v3::get_trace))
        .route("/api/v3/trace-summaries", get(v3::trace_summaries))
        .route("/api/metrics/latencies", get(spm::latencies))
        .route("/api/metrics/calls", get(spm::calls))
        .route("/api/metrics/errors", get(spm::errors))
        .route("/api/metrics/minstep", get(spm::minstep))
        .route("/api/spindle/stats", get(spindle::stats))
        .route("/api/spindle/slowest", get(spindle::slowest))
        .route("/api/spindle/outliers", get(spindle::outliers))
        .route("/api/spindle/errors", get(spindle::errors))
        .route("/api/spindle/traces/{trace_id}/critical-path", get(spindle::critical_path))
        .route("/api/spindle/compare", get(spindle::compare))
        .route("/api/spindle/kafka-hops", get(spindle::kafka_hops))
        .route("/api/spindle/graph", get(spindle::graph))
        .route("/api/spindle/alerts", get(spindle::alerts))
        .route("/api/{*rest}", get(unknown_api))
        .route_layer(axum::middleware::from_fn_with_state(telemetry, time_queries))
        .fallback(crate::ui::serve)
        .with_state(state)
}

/// Runs a query on the blocking pool: stores read files.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, QueryError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "query failed");
            Err(e.to_string())
        }
        Err(e) => Err(format!("query task failed: {e}")),
    }
}

pub(crate) fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding response failed: {e}")).into_response(),
    }
}

async fn unknown_api(uri: Uri) -> Response {
    jaeger::error(StatusCode::NOT_FOUND, format!("no API at {}", uri.path()))
}

#[cfg(test)]
mod tests {
    /// Every `/api/spindle` route is described in `docs/openapi.yaml`, and nothing more.
    #[test]
    fn openapi_describes_every_analytics_route() {
        let source = include_str!("mod.rs");
        let mut routes: Vec<String> = source
            .lines()
            .filter_map(|l| l.trim().strip_prefix(".route(\""))
            .filter_map(|l| l.split('"').next())
            .filter(|p| p.starts_with("/api/spindle/"))
            .map(str::to_string)
            .collect();
        routes.sort();
        let spec: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(include_str!("../../../../docs/openapi.yaml")).expect("openapi.yaml parses");
        let mut documented: Vec<String> =
            spec["paths"].as_mapping().expect("paths").keys().filter_map(|k| k.as_str().map(str::to_string)).collect();
        documented.sort();
        assert_eq!(routes, documented);
    }
}
