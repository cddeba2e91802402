//! Each service's own telemetry besides traces: Prometheus metrics and health, served on
//! `/metrics` and `/healthz` (ports 9101, 9102, 9103 by default).
//!
//! Every metric name starts with `pipeline_` and carries a constant `service` label, so one
//! Prometheus job can scrape all three services. The exposition is OpenMetrics text, which
//! Prometheus reads natively.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

type Labels = Vec<(&'static str, String)>;

/// The metrics one service exports.
pub struct Metrics {
    registry: Registry,
    messages_in: Family<Labels, Counter>,
    messages_out: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    processing: Histogram,
    consumer_lag: Family<Labels, Gauge>,
    db_retries: Counter,
    health: Mutex<Health>,
}

/// What `/healthz` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// 200 `ok`.
    Ok,
    /// 503 with the reason: a dependency is down and the service is retrying.
    Degraded(String),
    /// 503 `stopping`: shutting down, finishing in-flight work.
    Stopping,
}

impl Metrics {
    /// Metrics for `service`, every name prefixed `pipeline_`.
    pub fn new(service: &str) -> Arc<Self> {
        let mut registry =
            Registry::with_prefix_and_labels("pipeline", [("service".into(), service.to_owned().into())].into_iter());
        let messages_in = Family::<Labels, Counter>::default();
        registry.register("messages_in", "Messages consumed, by topic", messages_in.clone());
        let messages_out = Family::<Labels, Counter>::default();
        registry.register(
            "messages_out",
            "Messages delivered, by destination (a topic, or postgresql for stored rows)",
            messages_out.clone(),
        );
        let errors = Family::<Labels, Counter>::default();
        registry.register("errors", "Errors, by kind", errors.clone());
        let processing = Histogram::new(exponential_buckets(0.000_25, 2.0, 16));
        registry.register(
            "processing_duration_seconds",
            "Time from taking a message (or fetching a snapshot) to having delivered its result",
            processing.clone(),
        );
        let consumer_lag = Family::<Labels, Gauge>::default();
        registry.register(
            "consumer_lag",
            "Messages in a partition not yet processed: high watermark minus next offset to commit",
            consumer_lag.clone(),
        );
        let db_retries = Counter::default();
        registry.register("db_retries", "PostgreSQL writes retried after a transient failure", db_retries.clone());
        Arc::new(Self {
            registry,
            messages_in,
            messages_out,
            errors,
            processing,
            consumer_lag,
            db_retries,
            health: Mutex::new(Health::Ok),
        })
    }

    pub fn message_in(&self, topic: &str) {
        self.messages_in.get_or_create(&vec![("topic", topic.to_owned())]).inc();
    }

    pub fn message_out(&self, destination: &str) {
        self.messages_out.get_or_create(&vec![("destination", destination.to_owned())]).inc();
    }

    pub fn messages_out(&self, destination: &str, count: u64) {
        self.messages_out.get_or_create(&vec![("destination", destination.to_owned())]).inc_by(count);
    }

    pub fn error(&self, kind: &str) {
        self.errors.get_or_create(&vec![("kind", kind.to_owned())]).inc();
    }

    pub fn processed(&self, elapsed: Duration) {
        self.processing.observe(elapsed.as_secs_f64());
    }

    pub fn set_lag(&self, topic: &str, partition: i32, lag: i64) {
        self.consumer_lag
            .get_or_create(&vec![("topic", topic.to_owned()), ("partition", partition.to_string())])
            .set(lag);
    }

    pub fn db_retry(&self) {
        self.db_retries.inc();
    }

    pub fn set_health(&self, health: Health) {
        if let Ok(mut h) = self.health.lock() {
            *h = health;
        }
    }

    pub fn health(&self) -> Health {
        self.health.lock().map(|h| h.clone()).unwrap_or(Health::Ok)
    }

    /// The OpenMetrics exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            return String::new();
        }
        out
    }
}

async fn metrics(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], m.encode())
}

async fn healthz(State(m): State<Arc<Metrics>>) -> (StatusCode, String) {
    match m.health() {
        Health::Ok => (StatusCode::OK, "ok\n".to_owned()),
        Health::Degraded(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("degraded: {reason}\n")),
        Health::Stopping => (StatusCode::SERVICE_UNAVAILABLE, "stopping\n".to_owned()),
    }
}

/// Binds `addr` and serves `/metrics` and `/healthz` until the returned task is aborted.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    let app = Router::new().route("/metrics", get(self::metrics)).route("/healthz", get(healthz)).with_state(metrics);
    tracing::info!(%addr, "serving /metrics and /healthz");
    Ok(tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::warn!(%error, "metrics server stopped");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed_and_labelled_with_the_service() {
        let m = Metrics::new("processor-service");
        m.message_in("market-data");
        m.messages_out("postgresql", 3);
        m.error("invalid_record");
        m.set_lag("market-data", 1, 5);
        m.processed(Duration::from_millis(2));
        let text = m.encode();
        for expected in [
            r#"pipeline_messages_in_total{service="processor-service",topic="market-data"} 1"#,
            r#"pipeline_messages_out_total{service="processor-service",destination="postgresql"} 3"#,
            r#"pipeline_errors_total{service="processor-service",kind="invalid_record"} 1"#,
            r#"pipeline_consumer_lag{service="processor-service",topic="market-data",partition="1"} 5"#,
            r#"pipeline_processing_duration_seconds_count{service="processor-service"} 1"#,
            "# EOF",
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
    }
}
