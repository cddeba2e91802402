//! `/metrics` and `/healthz` for both services, and the per-route HTTP request metrics they
//! share. Each service registers its own metrics next to these in one registry.
//!
//! The exposition is OpenMetrics text, which Prometheus scrapes natively.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

/// Requests and their latency per method and route template.
#[derive(Debug)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram>,
}

impl HttpMetrics {
    /// Creates the families and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let requests = Family::<RequestLabels, Counter>::default();
        // 1 ms to about 16 s.
        let duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 15))
        });
        registry.register("http_server_requests", "HTTP requests answered", requests.clone());
        registry.register_with_unit(
            "http_server_request_duration",
            "Time from request to response headers",
            Unit::Seconds,
            duration.clone(),
        );
        Arc::new(Self { requests, duration })
    }

    /// Axum middleware that counts and times every request it wraps.
    pub async fn track(State(metrics): State<Arc<HttpMetrics>>, request: Request, next: Next) -> Response {
        let method = request.method().as_str().to_owned();
        // Unmatched paths share one label so scanners cannot grow the series without bound.
        let route =
            request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
        let started = Instant::now();
        let response = next.run(request).await;
        let labels = RouteLabels { method, route };
        metrics.duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
        let status = response.status().as_u16();
        metrics.requests.get_or_create(&RequestLabels { method: labels.method, route: labels.route, status }).inc();
        response
    }
}

/// `GET /metrics` over `registry` and `GET /healthz`, untraced: scrapes and probes would
/// otherwise bury real traces.
pub fn routes(registry: Arc<Registry>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = Arc::clone(&registry);
                async move { render(&registry) }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
}

fn render(registry: &Registry) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, registry) {
        Ok(()) => ([(CONTENT_TYPE, OPENMETRICS)], text).into_response(),
        Err(error) => {
            tracing::warn!(%error, "cannot encode metrics");
            (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n").into_response()
        }
    }
}
