//! What both HTTP services share: serving with graceful shutdown, the `x-trace-id` response
//! header, and JSON error bodies.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use spindle_sdk::http::axum::ServerTracingLayer;

use crate::metrics::HttpMetrics;

/// The response header that names the request's trace, so a caller can open it in Spindle.
pub const TRACE_ID_HEADER: &str = "x-trace-id";

/// Wraps a service's API routes (`routes`, state applied) in what both services do to every
/// request — request metrics, a SERVER span parented on the caller's context, the
/// `x-trace-id` header — and adds the untraced `/metrics` and `/healthz`.
pub fn with_observability(routes: Router, http_metrics: Arc<HttpMetrics>, registry: Arc<Registry>) -> Router {
    routes
        .layer(middleware::from_fn(trace_id_header))
        .layer(ServerTracingLayer::new())
        .layer(middleware::from_fn_with_state(http_metrics, HttpMetrics::track))
        .merge(crate::metrics::routes(registry))
}

/// Serves `app` on `listener` until SIGINT or SIGTERM, then lets requests in flight finish.
pub async fn serve(listener: tokio::net::TcpListener, app: Router) -> std::io::Result<()> {
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for sigterm, stopping on sigint only");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutting down");
}

/// Middleware, inside the tracing layer: adds [`TRACE_ID_HEADER`] to every response.
pub async fn trace_id_header(request: Request, next: Next) -> Response {
    let trace_id = spindle_sdk::current_trace_id();
    let mut response = next.run(request).await;
    if let Some(value) = trace_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
        response.headers_mut().insert(TRACE_ID_HEADER, value);
    }
    response
}

/// `{"error": message, "trace_id": ...}` with `status`.
pub fn error_response(status: StatusCode, message: String) -> Response {
    let body = serde_json::json!({ "error": message, "trace_id": spindle_sdk::current_trace_id() });
    (status, Json(body)).into_response()
}
