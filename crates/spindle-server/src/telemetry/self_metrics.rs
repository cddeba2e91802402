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
    /// Refused for its tenant: not allowed, unknown past `max_tenants`, or over the tenant's
    /// ingest rate.
    tenant,
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RecoveredLabels {
    /// What the store could not read and kept aside: `block_set_aside`,
    /// `wal_record_skipped`, `wal_record_undecodable`, `catalog_rebuilt`.
    pub event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthFailureLabels {
    /// The listener group: `ingest`, `query` or `admin`.
    pub group: &'static str,
    /// `missing`, `invalid` or `unavailable` credentials (401), or `forbidden` (403).
    pub reason: &'static str,
}

/// Gauges and counters of the embedded store; see [`StoreGauges::set`].
#[derive(Default)]
pub struct StoreGauges {
    head_spans: Gauge,
    blocks: Gauge,
    block_spans: Gauge,
    block_bytes: Gauge,
    wal_bytes: Gauge,
    recovered: Family<RecoveredLabels, Counter>,
    wal_bytes_set_aside: Counter,
    /// The store's counters at the previous scrape: the store counts since it opened, the
    /// counters here are fed the difference.
    last: std::sync::Mutex<Option<spindle_store::StoreStats>>,
}

impl StoreGauges {
    /// Refreshes the gauges and feeds the counters from `stats`; returns how many operation
    /// names and how many services went unlisted since the previous call, for
    /// `spindle_limit_hits_total`.
    pub fn set(&self, stats: &spindle_store::StoreStats) -> (u64, u64) {
        let g = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.head_spans.set(g(stats.head_spans));
        self.blocks.set(g(stats.blocks as u64));
        self.block_spans.set(g(stats.block_spans));
        self.block_bytes.set(g(stats.block_bytes));
        self.wal_bytes.set(g(stats.wal_bytes));
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let before = last.unwrap_or_default();
        let delta = |now: u64, then: u64| now.saturating_sub(then);
        for (event, now, then) in [
            ("block_set_aside", stats.blocks_set_aside, before.blocks_set_aside),
            ("wal_record_skipped", stats.wal_records_skipped, before.wal_records_skipped),
            ("wal_record_undecodable", stats.wal_records_undecodable, before.wal_records_undecodable),
            ("catalog_rebuilt", stats.catalog_rebuilds, before.catalog_rebuilds),
        ] {
            // Created at zero too, so that alert rules see the series before the first event.
            self.recovered.get_or_create(&RecoveredLabels { event }).inc_by(delta(now, then));
        }
        self.wal_bytes_set_aside.inc_by(delta(stats.wal_bytes_set_aside, before.wal_bytes_set_aside));
        *last = Some(*stats);
        (
            delta(stats.operations_unlisted, before.operations_unlisted),
            delta(stats.services_unlisted, before.services_unlisted),
        )
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
    /// Requests refused by the authentication layers; see [`SelfMetrics::auth_failure`].
    pub auth_failures: Family<AuthFailureLabels, Counter>,
    /// TLS handshakes that failed or timed out, per listener.
    pub tls_handshake_failures: Family<ListenerLabels, Counter>,
    /// An ingester's appends (one per tenant of each batch it gathered from Kafka).
    pub ingester_appends: Counter,
    /// Spans per ingester append.
    pub ingester_append_spans: Histogram,
}

impl SelfMetrics {
    /// Counts `n` failed TLS handshakes on `listener` (0 creates the series).
    pub fn count_tls_handshake_failures(&self, listener: &'static str, n: u64) {
        self.tls_handshake_failures.get_or_create(&ListenerLabels { listener }).inc_by(n);
    }

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
            tls_handshake_failures: Family::default(),
            auth_failures: Family::default(),
            ingester_appends: Counter::default(),
            ingester_append_spans: Histogram::new([
                1.0, 10.0, 100.0, 1000.0, 2500.0, 5000.0, 10000.0, 20000.0, 50000.0,
            ]),
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
        registry.register(
            "spindle_store_recovered",
            "Damage the store met and survived, by event: blocks set aside, write-ahead log records skipped or undecodable, catalog rebuilds",
            store.recovered.clone(),
        );
        registry.register_with_unit(
            "spindle_store_wal_set_aside",
            "Bytes of the write-ahead log replay could not read, copied to .unread files",
            Unit::Bytes,
            store.wal_bytes_set_aside.clone(),
        );
        registry.register_with_unit(
            "spindle_query_duration",
            "Query API latency by endpoint",
            Unit::Seconds,
            metrics.query_duration.clone(),
        );
        registry.register(
            "spindle_tls_handshake_failures",
            "TLS handshakes that failed or timed out, by listener",
            metrics.tls_handshake_failures.clone(),
        );
        registry.register(
            "spindle_auth_failures",
            "Requests refused by authentication (401) or authorization (403), by listener group and reason",
            metrics.auth_failures.clone(),
        );
        registry.register(
            "spindle_ingester_appends",
            "Appends by the Kafka ingester, one per tenant of each batch of messages",
            metrics.ingester_appends.clone(),
        );
        registry.register(
            "spindle_ingester_append_spans",
            "Spans per append by the Kafka ingester",
            metrics.ingester_append_spans.clone(),
        );
        metrics
    }

    /// Counts a request refused by a listener group's authentication layer.
    pub fn auth_failure(&self, group: &'static str, reason: &'static str) {
        self.auth_failures.get_or_create(&AuthFailureLabels { group, reason }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_counters_are_fed_the_differences_between_scrapes() {
        let mut registry = Registry::default();
        let metrics = SelfMetrics::register(&mut registry);
        let first = spindle_store::StoreStats {
            blocks_set_aside: 2,
            wal_records_skipped: 1,
            wal_bytes_set_aside: 40,
            operations_unlisted: 5,
            services_unlisted: 2,
            ..Default::default()
        };
        assert_eq!(metrics.store.set(&first), (5, 2));
        let second =
            spindle_store::StoreStats { operations_unlisted: 8, services_unlisted: 6, catalog_rebuilds: 1, ..first };
        assert_eq!(metrics.store.set(&second), (3, 4), "only what is new since the last scrape");
        assert_eq!(metrics.store.set(&second), (0, 0));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "spindle_store_recovered_total{event=\"block_set_aside\"} 2",
            "spindle_store_recovered_total{event=\"wal_record_skipped\"} 1",
            "spindle_store_recovered_total{event=\"wal_record_undecodable\"} 0",
            "spindle_store_recovered_total{event=\"catalog_rebuilt\"} 1",
            "spindle_store_wal_set_aside_bytes_total 40",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}
