//! Each service's own telemetry besides traces: Prometheus metrics and health, served on
//! `/metrics` and `/healthz` (ports 9101, 9102, 9103 by default).
//!
//! Every metric name starts with `pipeline_` and carries a constant `service` label, so one
//! Prometheus job can scrape all three services; beside them the standard `process_*`
//! metrics (`spindle_process_metrics`), with the same label. The exposition is OpenMetrics text,
//! which Prometheus reads natively.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use spindle_process_metrics::ProcessCollector;

type Labels = Vec<(&'static str, String)>;

/// The metrics one service exports.
pub struct Metrics {
    registry: Registry,
    messages_in: Family<Labels, Counter>,
    messages_out: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    processing: Histogram,
    consumer_lag: Family<Labels, Gauge>,
    /// The (group, topic, partition) lag series set by the last measurement, so that a
    /// partition handed to another instance stops being reported here.
    lag_series: Mutex<BTreeSet<(String, i32)>>,
    /// The `group` label of the lag series.
    consumer_group: OnceLock<String>,
    db_retries: Counter,
    db_write: Histogram,
    db_pool: Arc<DbPoolCollector>,
    cache_requests: Family<Labels, Counter>,
    health: Mutex<Health>,
}

/// The outcome of one cache lookup, the `result` label of `pipeline_cache_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    Hit,
    Miss,
    /// The cache failed or was unreachable; the value came from the source.
    Error,
}

impl CacheResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Error => "error",
        }
    }
}

/// The PostgreSQL pool's state, read at each scrape (`pipeline_db_pool_*`); nothing until
/// storage hands over its pool.
#[derive(Debug, Default)]
struct DbPoolCollector {
    pool: Mutex<Option<deadpool_postgres::Pool>>,
}

impl Collector for DbPoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(status) = self.pool.lock().ok().and_then(|p| p.as_ref().map(deadpool_postgres::Pool::status)) else {
            return Ok(());
        };
        for (name, help, value) in [
            (
                "db_pool_connections_in_use",
                "PostgreSQL connections taken from the pool",
                status.size - status.available,
            ),
            ("db_pool_connections_idle", "PostgreSQL connections open and idle in the pool", status.available),
            ("db_pool_waiting", "Writers waiting for a PostgreSQL connection", status.waiting),
            ("db_pool_max_connections", "Connections the pool opens at most (--pool-size)", status.max_size),
        ] {
            let gauge = ConstGauge::new(value as i64);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
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
        let mut root = Registry::with_labels([("service".into(), service.to_owned().into())].into_iter());
        root.register_collector(Box::new(ProcessCollector));
        let registry = root.sub_registry_with_prefix("pipeline");
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
            "Messages in a partition not yet processed by this instance's group: high watermark minus next offset to commit",
            consumer_lag.clone(),
        );
        let db_retries = Counter::default();
        registry.register("db_retries", "PostgreSQL writes retried after a transient failure", db_retries.clone());
        let db_write = Histogram::new(exponential_buckets(0.000_25, 2.0, 16));
        registry.register(
            "db_write_duration_seconds",
            "Time of one PostgreSQL insert statement (a batch), failed attempts included",
            db_write.clone(),
        );
        let db_pool = Arc::new(DbPoolCollector::default());
        registry.register_collector(Box::new(Arc::clone(&db_pool)));
        let cache_requests = Family::<Labels, Counter>::default();
        registry.register(
            "cache_requests",
            "Cache lookups, by cache and result (hit, miss, error: the cache failed and the source answered)",
            cache_requests.clone(),
        );
        Arc::new(Self {
            registry: root,
            messages_in,
            messages_out,
            errors,
            processing,
            consumer_lag,
            lag_series: Mutex::new(BTreeSet::new()),
            consumer_group: OnceLock::new(),
            db_retries,
            db_write,
            db_pool,
            cache_requests,
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

    /// The consumer group this service's lag is reported for (the `group` label); set once.
    pub fn set_consumer_group(&self, group: &str) {
        let _ = self.consumer_group.set(group.to_owned());
    }

    /// Sets the lag of every partition in `lags` (topic, partition, lag) and removes the
    /// series of partitions no longer assigned here, so that the instances of a group never
    /// report one partition twice.
    pub fn set_lags(&self, lags: &[(&str, i32, i64)]) {
        let group = self.consumer_group.get().map_or("", String::as_str);
        let labels = |topic: &str, partition: i32| -> Labels {
            vec![("group", group.to_owned()), ("topic", topic.to_owned()), ("partition", partition.to_string())]
        };
        let now: BTreeSet<(String, i32)> = lags.iter().map(|(t, p, _)| ((*t).to_owned(), *p)).collect();
        if let Ok(mut series) = self.lag_series.lock() {
            for (topic, partition) in series.difference(&now) {
                self.consumer_lag.remove(&labels(topic, *partition));
            }
            *series = now;
        }
        for (topic, partition, lag) in lags {
            self.consumer_lag.get_or_create(&labels(topic, *partition)).set(*lag);
        }
    }

    pub fn db_retry(&self) {
        self.db_retries.inc();
    }

    /// One insert statement took `elapsed`.
    pub fn db_write(&self, elapsed: Duration) {
        self.db_write.observe(elapsed.as_secs_f64());
    }

    /// Reports `pool`'s connections at every scrape from now on.
    pub fn watch_db_pool(&self, pool: deadpool_postgres::Pool) {
        if let Ok(mut slot) = self.db_pool.pool.lock() {
            *slot = Some(pool);
        }
    }

    /// Creates the three series of `cache` at 0, so that a rate or a ratio of them has data
    /// from the first scrape.
    pub fn register_cache(&self, cache: &str) {
        for result in [CacheResult::Hit, CacheResult::Miss, CacheResult::Error] {
            let _ = self
                .cache_requests
                .get_or_create(&vec![("cache", cache.to_owned()), ("result", result.as_str().to_owned())]);
        }
    }

    pub fn cache_request(&self, cache: &str, result: CacheResult) {
        self.cache_requests
            .get_or_create(&vec![("cache", cache.to_owned()), ("result", result.as_str().to_owned())])
            .inc();
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
        m.set_consumer_group("processor-service");
        m.set_lags(&[("market-data", 0, 7), ("market-data", 1, 5)]);
        m.set_lags(&[("market-data", 1, 5)]); // partition 0 went to another instance
        m.processed(Duration::from_millis(2));
        m.register_cache("reference");
        m.cache_request("reference", CacheResult::Hit);
        let text = m.encode();
        assert!(!text.contains(r#"partition="0""#), "a revoked partition is no longer reported:\n{text}");
        for expected in [
            r#"pipeline_messages_in_total{service="processor-service",topic="market-data"} 1"#,
            r#"pipeline_messages_out_total{service="processor-service",destination="postgresql"} 3"#,
            r#"pipeline_errors_total{service="processor-service",kind="invalid_record"} 1"#,
            r#"pipeline_consumer_lag{service="processor-service",group="processor-service",topic="market-data",partition="1"} 5"#,
            r#"pipeline_processing_duration_seconds_count{service="processor-service"} 1"#,
            r#"pipeline_cache_requests_total{service="processor-service",cache="reference",result="hit"} 1"#,
            r#"pipeline_cache_requests_total{service="processor-service",cache="reference",result="error"} 0"#,
            "# TYPE process_cpu_seconds counter",
            r#"process_resident_memory_bytes{service="processor-service"} "#,
            "# EOF",
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
    }
}
