//! The HTTP APIs on the query port: Jaeger's `/api/*` and `/api/v3/*`; every other path
//! falls through to the embedded web UI (`crate::ui`).
//!
//! Handlers parse parameters, call [`QueryService`] off the async runtime and shape the
//! answer exactly as Jaeger does, because Grafana's Jaeger data source and Jaeger's own
//! tools read these shapes. They never touch the store directly.
//!
//! Cheap reads (services, operations, a trace by id) run on the blocking pool at once.
//! Heavy queries (searches, analytics, dependencies) go through [`heavy`]: at most
//! `query_max_concurrent` run at a time, each on its own lower-priority thread, with a
//! deadline and a cancel flag the scans check (see `Limits` and docs/API.md "Limits").

mod jaeger;
pub mod params;
mod session;
mod spindle;
mod spm;
mod tempo;
mod v3;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use spindle_query::{QueryError, QueryService};
use spindle_store::{QueryControl, StoreError};
use tokio::sync::Semaphore;

use crate::alerting::Alerting;
use crate::limits::{Limit, Limits};
use crate::security::routes::{Route, Routes};
use crate::telemetry::{EndpointLabels, Telemetry, TenantMetrics};
use crate::tenancy::{Access, Caller, Tenant, Tenants};

/// What the API handlers share. `query`, `metrics` and `limits` are the default tenant's
/// here; a handler gets them for the tenant of its request through [`TenantState`].
#[derive(Clone)]
pub struct ApiState {
    pub query: QueryService,
    pub metrics: Arc<TenantMetrics>,
    pub tenant: Arc<str>,
    pub tenants: Arc<Tenants>,
    pub telemetry: Arc<Telemetry>,
    pub alerting: Option<Arc<Alerting>>,
    pub limits: Arc<Limits>,
    /// One permit per heavy query that may run (`query_max_concurrent`, for all tenants).
    heavy_slots: Arc<Semaphore>,
}

impl ApiState {
    pub fn new(
        tenants: Arc<Tenants>,
        telemetry: Arc<Telemetry>,
        alerting: Option<Arc<Alerting>>,
        limits: Limits,
    ) -> Self {
        let default = Arc::clone(tenants.default_tenant());
        ApiState {
            query: default.query.clone(),
            metrics: Arc::clone(&default.metrics),
            tenant: Arc::clone(&default.name),
            tenants,
            telemetry,
            alerting,
            heavy_slots: Arc::new(Semaphore::new(limits.query_max_concurrent.max(1))),
            limits: Arc::new(Limits {
                query_max_concurrent: limits.query_max_concurrent,
                ..default.limits.limits.clone()
            }),
        }
    }

    /// This state for the reads of `tenant`: its store, span metrics and limits.
    fn for_tenant(&self, tenant: &Tenant) -> Self {
        ApiState {
            query: tenant.query.clone(),
            metrics: Arc::clone(&tenant.metrics),
            tenant: Arc::clone(&tenant.name),
            limits: Arc::new(Limits {
                query_max_concurrent: self.limits.query_max_concurrent,
                ..tenant.limits.limits.clone()
            }),
            ..self.clone()
        }
    }

    /// Counts a hit of `limit` in `spindle_limit_hits_total`.
    pub(crate) fn hit(&self, limit: Limit, detail: &dyn std::fmt::Display) {
        self.telemetry.limits.hit(limit, 1, detail);
    }
}

/// The API state for the tenant a request reads (`X-Scope-OrgID`, else its credential's
/// tenant, else the default tenant), checked against what the request's principal may
/// read; refused with 401/403 (Jaeger's error shape) otherwise.
pub struct TenantState(pub ApiState);

impl FromRequestParts<ApiState> for TenantState {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Response> {
        let caller = Caller::from_parts(&parts.extensions, &parts.headers);
        match state.tenants.resolve(&caller, Access::Read) {
            Ok(tenant) => Ok(TenantState(state.for_tenant(&tenant))),
            Err(e) => Err(jaeger::error(e.status(), e.to_string())),
        }
    }
}

/// The status of a failed query: 503 when the store it reads is a ClickHouse server that
/// did not answer or refused (every such error names `ClickHouse at URL`), so a client or
/// load balancer retries elsewhere; 500 otherwise.
pub(crate) fn failure_status(message: &str) -> StatusCode {
    if message.contains("ClickHouse at ") {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

/// Why a heavy query gave no answer.
#[derive(Debug)]
pub(crate) enum QueryFailure {
    /// Its deadline passed, waiting for a slot or scanning: 504.
    TimedOut,
    /// Failed otherwise: 500.
    Failed(String),
}

impl QueryFailure {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            QueryFailure::TimedOut => StatusCode::GATEWAY_TIMEOUT,
            QueryFailure::Failed(message) => failure_status(message),
        }
    }

    pub(crate) fn message(&self, limits: &Limits) -> String {
        match self {
            QueryFailure::TimedOut => format!(
                "query timed out after {:?} (query_timeout); narrow the time range or the filters",
                limits.query_timeout
            ),
            QueryFailure::Failed(e) => e.clone(),
        }
    }
}

/// Sets the query's cancel flag when the handler's future is dropped: hyper drops it when
/// the client disconnects, and the scan, on another thread, stops at its next check.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs a heavy query: waits for a slot within the query's deadline, then runs `f` on a
/// thread of its own at a lower CPU priority, so that ingest and cheap reads, on the runtime
/// and the blocking pool, are scheduled first when the cores are busy. The slot is held by
/// that thread until the work really stops, also when the client has gone: a cancelled scan
/// still holds its slot until its next row group, never longer.
pub(crate) async fn heavy<T: Send + 'static>(
    state: &ApiState,
    what: &'static str,
    f: impl FnOnce(&QueryControl) -> Result<T, QueryError> + Send + 'static,
) -> Result<T, QueryFailure> {
    let deadline = Instant::now() + state.limits.query_timeout;
    let cancelled = Arc::new(AtomicBool::new(false));
    let _cancel_on_drop = CancelOnDrop(Arc::clone(&cancelled));
    let slots = Arc::clone(&state.heavy_slots);
    let permit = match Arc::clone(&slots).try_acquire_owned() {
        Ok(permit) => permit,
        Err(_) => {
            state.hit(
                Limit::QueryConcurrency,
                &format_args!("{what} waits for one of {} heavy-query slots", state.limits.query_max_concurrent),
            );
            match tokio::time::timeout_at(deadline.into(), slots.acquire_owned()).await {
                Ok(Ok(permit)) => permit,
                Ok(Err(_)) => return Err(QueryFailure::Failed("query slots closed".into())),
                Err(_) => {
                    state.hit(Limit::QueryTimeout, &format_args!("{what} waited for a slot past its deadline"));
                    return Err(QueryFailure::TimedOut);
                }
            }
        }
    };
    let control = QueryControl::new(Some(deadline), Some(cancelled));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new().name("spindle-query".into()).spawn(move || {
        let _permit = permit;
        lower_priority();
        let result = control.run(|| control.check().map_err(QueryError::from).and_then(|()| f(&control)));
        if matches!(result, Err(QueryError::Store(StoreError::Cancelled))) {
            tracing::info!(query = what, "query stopped: its client disconnected");
        }
        let _ = tx.send(result);
    });
    if let Err(e) = spawned {
        return Err(QueryFailure::Failed(format!("starting a query thread failed: {e}")));
    }
    match rx.await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(QueryError::Store(StoreError::TimedOut))) => {
            state.hit(Limit::QueryTimeout, &format_args!("{what} stopped at its deadline"));
            Err(QueryFailure::TimedOut)
        }
        Ok(Err(e)) => {
            if !matches!(e, QueryError::Store(StoreError::Cancelled)) {
                tracing::error!(error = %e, "query failed");
            }
            Err(QueryFailure::Failed(e.to_string()))
        }
        Err(_) => Err(QueryFailure::Failed("query thread failed".into())),
    }
}

/// Lowers the calling thread's CPU priority (nice 10; threads it starts inherit it): heavy
/// scans then take the cores only when ingest and cheap reads leave them idle. Best effort.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls on the calling thread, no memory passed.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
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
    if let Some(path) = path.filter(|p| p.as_str().starts_with("/api/") || p.as_str().starts_with("/tempo/api/")) {
        telemetry
            .server
            .query_duration
            .get_or_create(&EndpointLabels { endpoint: path.as_str().to_string() })
            .observe(started.elapsed().as_secs_f64());
    }
    response
}

/// The query port's routes; [`router`] and the route table (`crate::security::routes`) are
/// both built from it.
fn routes() -> Routes<ApiState> {
    Routes::new()
        .get("/api/services", jaeger::services)
        .get("/api/services/{service}/operations", jaeger::service_operations)
        .get("/api/operations", jaeger::operations)
        .get("/api/traces", jaeger::find_traces)
        .get("/api/traces/{trace_id}", tempo::trace_v1_or_jaeger)
        .get("/api/dependencies", jaeger::dependencies)
        .get("/api/v3/services", v3::services)
        .get("/api/v3/operations", v3::operations)
        .get("/api/v3/traces", v3::find_traces)
        .get("/api/v3/traces/{trace_id}", v3::get_trace)
        .get("/api/v3/trace-summaries", v3::trace_summaries)
        .get("/api/metrics/latencies", spm::latencies)
        .get("/api/metrics/calls", spm::calls)
        .get("/api/metrics/errors", spm::errors)
        .get("/api/metrics/minstep", spm::minstep)
        .get("/api/spindle/stats", spindle::stats)
        .get("/api/spindle/slowest", spindle::slowest)
        .get("/api/spindle/outliers", spindle::outliers)
        .get("/api/spindle/errors", spindle::errors)
        .get("/api/spindle/traces/{trace_id}/critical-path", spindle::critical_path)
        .get("/api/spindle/compare", spindle::compare)
        .get("/api/spindle/kafka-hops", spindle::kafka_hops)
        .get("/api/spindle/graph", spindle::graph)
        .get("/api/spindle/alerts", spindle::alerts)
        .get("/api/spindle/whoami", session::whoami)
        // Grafana Tempo's API (docs/TEMPO_API.md), all of it under /tempo, and under /api
        // where Jaeger's API has no route of the same path.
        .get("/api/echo", tempo::echo)
        .get("/api/status/buildinfo", tempo::buildinfo)
        .get("/api/v2/traces/{trace_id}", tempo::trace_v2)
        .get("/api/search", tempo::search)
        .get("/api/search/tags", tempo::tags_v1)
        .get("/api/v2/search/tags", tempo::tags_v2)
        .get("/api/search/tag/{tag}/values", tempo::tag_values_v1)
        .get("/api/v2/search/tag/{tag}/values", tempo::tag_values_v2)
        .get("/api/metrics/query_range", tempo::query_range)
        .get("/api/metrics/query", tempo::query_instant)
        .get("/tempo/api/echo", tempo::echo)
        .get("/tempo/api/status/buildinfo", tempo::buildinfo)
        .get("/tempo/api/traces/{trace_id}", tempo::trace_v1)
        .get("/tempo/api/v2/traces/{trace_id}", tempo::trace_v2)
        .get("/tempo/api/search", tempo::search)
        .get("/tempo/api/search/tags", tempo::tags_v1)
        .get("/tempo/api/v2/search/tags", tempo::tags_v2)
        .get("/tempo/api/search/tag/{tag}/values", tempo::tag_values_v1)
        .get("/tempo/api/v2/search/tag/{tag}/values", tempo::tag_values_v2)
        .get("/tempo/api/metrics/query_range", tempo::query_range)
        .get("/tempo/api/metrics/query", tempo::query_instant)
        .get("/api/{*rest}", unknown_api)
        .other(crate::ui::serve)
}

pub fn route_table() -> Vec<Route> {
    routes().table()
}

pub fn router(state: ApiState) -> Router {
    let telemetry = Arc::clone(&state.telemetry);
    routes().into_router().route_layer(axum::middleware::from_fn_with_state(telemetry, time_queries)).with_state(state)
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

/// A 200 answer of the v3 and Spindle APIs: `body` with a `warnings` field when a limit
/// changed the query (docs/API.md "Query limits").
pub(crate) fn warned(mut body: serde_json::Value, warnings: Vec<String>) -> Response {
    if !warnings.is_empty() {
        body["warnings"] = serde_json::json!(warnings);
    }
    json_response(StatusCode::OK, &body)
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
        let mut routes: Vec<String> = super::route_table()
            .into_iter()
            .map(|r| r.path.to_string())
            .filter(|p| p.starts_with("/api/spindle/"))
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
