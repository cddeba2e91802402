//! The server's own metrics (`spindle_*`): spans received, accepted and dropped per
//! protocol, failed requests, UDP datagrams, the ingest queue, the data directory and the
//! embedded store's figures, and query latency per endpoint. Their names and labels are
//! what `deploy/grafana/` and the alert rules query; changing one breaks them.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    pub protocol: String,
}

/// Why spans were not stored; the label value is the snake_case name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum DropReason {
    queue_full,
    invalid,
    /// The request had more spans than `max_spans_per_request` and was refused whole.
    too_many_spans,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    pub protocol: String,
    pub reason: DropReason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DatagramLabels {
    pub protocol: String,
    /// `received`, `rejected` (undecodable) or `dropped` (queue full).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: String,
}

/// Gauges of the embedded store; see [`StoreGauges::set`].
#[derive(Default)]
pub struct StoreGauges {
    head_spans: Gauge,
    blocks: Gauge,
    block_spans: Gauge,
    block_bytes: Gauge,
    wal_bytes: Gauge,
}

impl StoreGauges {
    pub fn set(&self, stats: &spindle_store::StoreStats) {
        let g = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.head_spans.set(g(stats.head_spans));
        self.blocks.set(g(stats.blocks as u64));
        self.block_spans.set(g(stats.block_spans));
        self.block_bytes.set(g(stats.block_bytes));
        self.wal_bytes.set(g(stats.wal_bytes));
    }
}

pub struct SelfMetrics {
    pub spans_received: Family<ProtocolLabels, Counter>,
    pub spans_accepted: Family<ProtocolLabels, Counter>,
    pub spans_dropped: Family<DropLabels, Counter>,
    pub requests_failed: Family<ProtocolLabels, Counter>,
    pub queue_spans: Gauge,
    pub storage_bytes: Gauge,
    /// The embedded store's own figures, refreshed at each scrape.
    pub store: StoreGauges,
    pub datagrams: Family<DatagramLabels, Counter>,
    pub query_duration: Family<EndpointLabels, Histogram>,
}

impl SelfMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = SelfMetrics {
            spans_received: Family::default(),
            spans_accepted: Family::default(),
            spans_dropped: Family::default(),
            requests_failed: Family::default(),
            queue_spans: Gauge::default(),
            storage_bytes: Gauge::default(),
            store: StoreGauges::default(),
            datagrams: Family::default(),
            query_duration: Family::new_with_constructor(|| {
                Histogram::new([0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
            }),
        };
        registry.register("spindle_spans_received", "Spans received, valid or not", metrics.spans_received.clone());
        registry.register(
            "spindle_spans_accepted",
            "Spans stored durably and acknowledged",
            metrics.spans_accepted.clone(),
        );
        registry.register(
            "spindle_spans_dropped",
            "Spans not stored, by reason (invalid or queue full)",
            metrics.spans_dropped.clone(),
        );
        registry.register(
            "spindle_requests_failed",
            "Requests that failed to decode or store",
            metrics.requests_failed.clone(),
        );
        registry.register("spindle_udp_datagrams", "UDP datagrams by protocol and outcome", metrics.datagrams.clone());
        registry.register(
            "spindle_ingest_queue_spans",
            "Spans accepted but not yet stored",
            metrics.queue_spans.clone(),
        );
        registry.register_with_unit(
            "spindle_storage",
            "Size of the data directory",
            Unit::Bytes,
            metrics.storage_bytes.clone(),
        );
        let store = &metrics.store;
        registry.register(
            "spindle_store_head_spans",
            "Spans in memory not yet written to blocks",
            store.head_spans.clone(),
        );
        registry.register("spindle_store_blocks", "Blocks on disk", store.blocks.clone());
        registry.register("spindle_store_block_spans", "Spans in blocks on disk", store.block_spans.clone());
        registry.register_with_unit(
            "spindle_store_block",
            "Size of the blocks on disk",
            Unit::Bytes,
            store.block_bytes.clone(),
        );
        registry.register_with_unit(
            "spindle_store_wal",
            "Size of the write-ahead log",
            Unit::Bytes,
            store.wal_bytes.clone(),
        );
        registry.register_with_unit(
            "spindle_query_duration",
            "Query API latency by endpoint",
            Unit::Seconds,
            metrics.query_duration.clone(),
        );
        metrics
    }
}
