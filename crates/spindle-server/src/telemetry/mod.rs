//! Spindle's metrics, exposed on the admin port's `/metrics`: one registry holding the
//! server's self-metrics and the span metrics derived at ingest, plus the per-minute span
//! aggregates behind Jaeger's SPM API.
//!
//! - [`self_metrics`]: ingest, queue, storage and query figures of the server itself;
//! - [`span_metrics`]: the cumulative series the OpenTelemetry spanmetrics connector would
//!   derive from the spans (`traces_span_metrics_*`), grouped off the reactor at ingest;
//! - [`persistence`]: the per-minute aggregates, snapshotted to
//!   `DATA_DIR/spanmetrics/state.bin` and trimmed to the retention window;
//! - [`exposition`]: the registry encoded by `prometheus-client` as OpenMetrics text.

mod exposition;
mod persistence;
mod self_metrics;
mod span_metrics;

use std::path::Path;

use prometheus_client::registry::Registry;
use spindle_model::Span;
use spindle_query::spanmetrics::SpanMetrics;

pub use exposition::CONTENT_TYPE;
pub use persistence::snapshot_loop;
pub use self_metrics::{DatagramLabels, DropLabels, DropReason, EndpointLabels, ProtocolLabels, SelfMetrics};
pub use span_metrics::PreparedBatch;

use crate::limits::LimitHits;
use persistence::MinuteAggregates;
use span_metrics::SpanSeries;

pub struct Telemetry {
    registry: Registry,
    /// Spindle's own counters, gauges and histograms.
    pub server: SelfMetrics,
    /// Hits of every limit (`spindle_limit_hits_total`).
    pub limits: LimitHits,
    spans: SpanSeries,
    minutes: MinuteAggregates,
}

impl Telemetry {
    /// Registers every metric and reads the minute aggregates `data_dir` holds, if any.
    pub fn new(data_dir: &Path) -> Self {
        let mut registry = Registry::default();
        let server = SelfMetrics::register(&mut registry);
        let limits = LimitHits::register(&mut registry);
        let spans = SpanSeries::register(&mut registry);
        Telemetry { registry, server, limits, spans, minutes: MinuteAggregates::load(data_dir) }
    }

    /// Groups a batch for span metrics; cheap, done before the batch moves into the store.
    pub fn prepare(spans: &[Span]) -> PreparedBatch {
        span_metrics::prepare(spans)
    }

    /// Counts a batch the store accepted.
    pub fn record(&self, batch: PreparedBatch) {
        self.spans.record(batch.series);
        self.minutes.merge(batch.minutes);
    }

    pub fn with_minutes<T>(&self, f: impl FnOnce(&SpanMetrics) -> T) -> T {
        self.minutes.with(f)
    }

    /// Drops minute aggregates older than `unix_nano`.
    pub fn drop_before(&self, unix_nano: u64) {
        self.minutes.drop_before(unix_nano);
    }

    /// Writes the minute aggregates if they changed since the last snapshot.
    pub fn snapshot(&self) -> std::io::Result<()> {
        self.minutes.snapshot()
    }
}
