//! Spindle's metrics, exposed on the admin port's `/metrics`: one registry holding the
//! server's self-metrics and the span metrics derived at ingest, plus the per-minute span
//! aggregates behind Jaeger's SPM API.
//!
//! - [`self_metrics`]: ingest, queue, storage and query figures of the server itself;
//! - [`span_metrics`]: the cumulative series the OpenTelemetry spanmetrics connector would
//!   derive from the spans (`traces_span_metrics_*`), grouped off the reactor at ingest,
//!   bounded per service (an overflow series past the limit), in services (one overflow
//!   set past `max_services`) and to spans inside the accepted time window;
//! - [`persistence`]: the per-minute aggregates, snapshotted to
//!   `DATA_DIR/spanmetrics/state.bin` and trimmed to the retention window (an unreadable
//!   snapshot is set aside, never deleted);
//! - `spindle_process_metrics`'s collector: the standard `process_*` metrics (CPU, memory),
//!   read from `/proc/self` at each scrape;
//! - [`exposition`]: the registry encoded by `prometheus-client` as OpenMetrics text.

mod exposition;
mod persistence;
mod self_metrics;
mod span_metrics;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use spindle_model::Span;
use spindle_query::spanmetrics::SpanMetrics;

pub use exposition::CONTENT_TYPE;
pub use self_metrics::{DatagramLabels, DropLabels, DropReason, EndpointLabels, ProtocolLabels, SelfMetrics};
pub use span_metrics::PreparedBatch;

use crate::limits::{LimitHits, Limits};
use persistence::MinuteAggregates;
use span_metrics::SpanSeries;

pub struct Telemetry {
    registry: Registry,
    /// Spindle's own counters, gauges and histograms.
    pub server: SelfMetrics,
    /// Hits of every limit (`spindle_limit_hits_total`).
    pub limits: LimitHits,
    /// The default tenant's span metrics (series without a `tenant` label).
    default: Arc<TenantMetrics>,
}

/// One tenant's span metrics: its series in the shared families and its minute aggregates,
/// snapshotted in its own data directory.
pub struct TenantMetrics {
    spans: SpanSeries,
    minutes: MinuteAggregates,
    /// How far ahead of the server's clock a span may start and still derive span metrics;
    /// minutes beyond it are trimmed too.
    max_span_future: Duration,
}

impl Telemetry {
    /// Registers every metric and reads the default tenant's minute aggregates `data_dir`
    /// holds, if any; the series and services they hold count against the span-metric
    /// series and services limits.
    pub fn new(data_dir: &Path, limits: &Limits) -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(spindle_process_metrics::ProcessCollector));
        let server = SelfMetrics::register(&mut registry);
        let hits = LimitHits::register(&mut registry);
        let spans = SpanSeries::register(
            &mut registry,
            limits.max_span_metric_series_per_service,
            limits.max_services,
            limits.max_span_future,
            limits.max_span_age,
        );
        let default = Arc::new(TenantMetrics::new(spans, MinuteAggregates::load(data_dir), limits));
        Telemetry { registry, server, limits: hits, default }
    }

    pub fn default_metrics(&self) -> Arc<TenantMetrics> {
        Arc::clone(&self.default)
    }

    /// The span metrics of tenant `name`, whose data directory is `dir`.
    pub fn tenant_metrics(&self, name: &Arc<str>, dir: &Path, limits: &Limits) -> TenantMetrics {
        let spans = self.default.spans.for_tenant(
            Arc::clone(name),
            limits.max_span_metric_series_per_service,
            limits.max_services,
            limits.max_span_future,
            limits.max_span_age,
        );
        TenantMetrics::new(spans, MinuteAggregates::load(dir), limits)
    }

    /// The span metrics of a tenant without data: nothing, and nothing is ever written.
    pub fn empty_metrics(&self, limits: &Limits) -> TenantMetrics {
        let spans = self.default.spans.for_tenant(
            Arc::from(""),
            limits.max_span_metric_series_per_service,
            limits.max_services,
            limits.max_span_future,
            limits.max_span_age,
        );
        TenantMetrics::new(spans, MinuteAggregates::empty(), limits)
    }

    /// Groups a batch of the default tenant for span metrics (see [`TenantMetrics::prepare`]).
    #[cfg(test)]
    pub fn prepare(&self, spans: &[Span]) -> PreparedBatch {
        self.default.prepare(spans)
    }

    /// Counts a batch of the default tenant the store accepted.
    #[cfg(test)]
    pub fn record(&self, batch: PreparedBatch) {
        self.default.record(batch, &self.limits)
    }
}

impl TenantMetrics {
    fn new(spans: SpanSeries, minutes: MinuteAggregates, limits: &Limits) -> Self {
        minutes.with(|m| spans.seed(m));
        TenantMetrics { spans, minutes, max_span_future: limits.max_span_future }
    }

    /// Groups a batch for span metrics by the server's clock; cheap, done before the batch
    /// moves into the store.
    pub fn prepare(&self, spans: &[Span]) -> PreparedBatch {
        self.spans.prepare(spans, crate::api::params::now_unix_nano())
    }

    /// Counts a batch the store accepted.
    pub fn record(&self, batch: PreparedBatch, hits: &LimitHits) {
        self.minutes.merge(self.spans.record(batch, hits));
    }

    pub fn with_minutes<T>(&self, f: impl FnOnce(&SpanMetrics) -> T) -> T {
        self.minutes.with(f)
    }

    /// Drops minute aggregates older than `keep_from` or further ahead of `now` than spans
    /// are accepted (a snapshot written before the window existed may hold such minutes).
    /// Both are the server's clock.
    pub fn trim(&self, keep_from: u64, now: u64) {
        self.minutes.trim(keep_from, now.saturating_add(self.max_span_future.as_nanos() as u64));
    }

    /// Writes the minute aggregates if they changed since the last snapshot.
    pub fn snapshot(&self) -> std::io::Result<()> {
        self.minutes.snapshot()
    }
}
