//! Every limit that keeps what a client sends from growing memory, `/metrics` or latency
//! without bound, in one place: its setting (see `config.rs`, documented in
//! docs/OPERATIONS.md "Limits"), and [`LimitHits`], which counts each hit in
//! `spindle_limit_hits_total{limit}` and logs it at most once per [`LOG_INTERVAL`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// The limits in effect; every field is a setting with the default of [`Limits::default`].
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    // Ingest, checked before decoding where the wire allows.
    /// Open TCP connections per receiver listener.
    pub max_connections: usize,
    /// Requests being read, decoded or stored at once, per receiver listener.
    pub max_concurrent_requests: usize,
    /// Request bytes (as received) held at once by all receivers together.
    pub max_inflight_bytes: usize,
    /// Spans in one request; a larger request is refused whole.
    pub max_spans_per_request: usize,
    /// Attributes kept per span (span attributes; resource and event attributes alike); the
    /// rest are dropped and counted in the span's `dropped_attributes_count`.
    pub max_attributes_per_span: usize,
    /// Bytes of one string attribute value; longer values are cut at a character boundary
    /// and the span says so.
    pub max_attribute_value_bytes: usize,
    /// Time a request's body may take to arrive once its headers are in; a slower upload
    /// is answered 408 / DEADLINE_EXCEEDED and its bytes released.
    pub request_body_timeout: Duration,

    // Cardinality of what ingest derives from client-chosen values.
    /// Span-metric series per service (Prometheus and per-minute); beyond it, an overflow series.
    pub max_span_metric_series_per_service: usize,
    /// Operations per service in the catalog (`/api/services/{s}/operations`).
    pub max_operations_per_service: usize,
    /// Services with span metrics of their own and listed by the catalog (`/api/services`);
    /// further ones share one overflow series set and are stored and searchable, unlisted.
    pub max_services: usize,
    /// Groups in one analytics answer: the top N and an "other" row.
    pub max_analytics_groups: usize,
    /// Spans starting further than this ahead of the server's clock are stored but derive
    /// no span metrics.
    pub max_span_future: Duration,
    /// Spans starting longer than this ago are stored but derive no span metrics.
    pub max_span_age: Duration,

    // Queries.
    /// Largest `limit` a search takes; a larger one is lowered, with a warning.
    pub query_max_limit: usize,
    /// Longest time range a search or analytics query covers; a longer one is shortened
    /// to its most recent part, with a warning.
    pub query_max_lookback: Duration,
    /// Deadline of one query; the scan stops when it passes.
    pub query_timeout: Duration,
    /// Heavy queries (searches, analytics, dependencies) running at once; others wait in
    /// line within their deadline. Cheap reads never wait for them.
    pub query_max_concurrent: usize,
    /// Spans served of one trace; the rest are left out and the answer says so.
    pub query_max_trace_spans: usize,
    /// Series one TraceQL metrics query answers; the rest are left out, the answer partial.
    pub query_max_series: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_concurrent_requests: 256,
            max_inflight_bytes: 256 * 1024 * 1024,
            max_spans_per_request: 100_000,
            max_attributes_per_span: 1024,
            max_attribute_value_bytes: 64 * 1024,
            request_body_timeout: Duration::from_secs(30),
            max_span_metric_series_per_service: 200,
            max_operations_per_service: 2000,
            max_services: 1000,
            max_analytics_groups: 1000,
            max_span_future: Duration::from_secs(3600),
            max_span_age: Duration::from_secs(7 * 24 * 3600),
            query_max_limit: 1500,
            query_max_lookback: Duration::from_secs(30 * 24 * 3600),
            query_timeout: Duration::from_secs(30),
            query_max_concurrent: std::thread::available_parallelism().map_or(2, |n| n.get()).max(2),
            query_max_trace_spans: 100_000,
            query_max_series: 10_000,
        }
    }
}

/// The `limit` label of `spindle_limit_hits_total`; one value per setting.
// `QueryLimit` names the query's `limit` parameter, not this enum.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Limit {
    Connections,
    ConcurrentRequests,
    InflightBytes,
    SpansPerRequest,
    AttributesPerSpan,
    AttributeValueBytes,
    RequestBodyTimeout,
    SpanMetricSeries,
    OperationsPerService,
    Services,
    AnalyticsGroups,
    SpanTimeWindow,
    QueryLimit,
    QueryLookback,
    QueryTimeout,
    QueryConcurrency,
    TraceSpans,
    QuerySeries,
    Tenants,
    TenantIngestRate,
}

impl Limit {
    pub fn name(self) -> &'static str {
        match self {
            Limit::Connections => "connections",
            Limit::ConcurrentRequests => "concurrent_requests",
            Limit::InflightBytes => "inflight_bytes",
            Limit::SpansPerRequest => "spans_per_request",
            Limit::AttributesPerSpan => "attributes_per_span",
            Limit::AttributeValueBytes => "attribute_value_bytes",
            Limit::RequestBodyTimeout => "request_body_timeout",
            Limit::SpanMetricSeries => "span_metric_series",
            Limit::OperationsPerService => "operations_per_service",
            Limit::Services => "services",
            Limit::AnalyticsGroups => "analytics_groups",
            Limit::SpanTimeWindow => "span_time_window",
            Limit::QueryLimit => "query_limit",
            Limit::QueryLookback => "query_lookback",
            Limit::QueryTimeout => "query_timeout",
            Limit::QueryConcurrency => "query_concurrency",
            Limit::TraceSpans => "trace_spans",
            Limit::QuerySeries => "query_series",
            Limit::Tenants => "tenants",
            Limit::TenantIngestRate => "tenant_ingest_rate",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

/// How often one limit's hits are logged at most.
pub const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Counts limit hits and logs them, once per [`LOG_INTERVAL`] per limit, with how many
/// hits the interval had.
pub struct LimitHits {
    hits: Family<LimitLabels, Counter>,
    /// Per limit: when it was last logged and hits since.
    logged: Mutex<HashMap<Limit, (Instant, u64)>>,
}

impl LimitHits {
    pub fn register(registry: &mut Registry) -> Self {
        let hits = Family::<LimitLabels, Counter>::default();
        registry.register(
            "spindle_limit_hits",
            "Times a limit was hit (items refused, dropped, cut or grouped as overflow), by limit",
            hits.clone(),
        );
        LimitHits { hits, logged: Mutex::default() }
    }

    /// Counts `n` hits of `limit`; `detail` says what was limited (a service, a listener),
    /// and is logged with the first hit of an interval.
    pub fn hit(&self, limit: Limit, n: u64, detail: &dyn std::fmt::Display) {
        if n == 0 {
            return;
        }
        self.hits.get_or_create(&LimitLabels { limit: limit.name() }).inc_by(n);
        let now = Instant::now();
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        match logged.get_mut(&limit) {
            Some((at, since)) if now.duration_since(*at) < LOG_INTERVAL => *since += n,
            Some((at, since)) => {
                let earlier = std::mem::take(since);
                *at = now;
                drop(logged);
                tracing::warn!(limit = limit.name(), hits = n, earlier_hits = earlier, "limit hit: {detail}");
            }
            None => {
                logged.insert(limit, (now, 0));
                drop(logged);
                tracing::warn!(limit = limit.name(), hits = n, "limit hit: {detail}");
            }
        }
    }

    /// The hits of `limit` so far.
    #[cfg(test)]
    pub fn count(&self, limit: Limit) -> u64 {
        self.hits.get_or_create(&LimitLabels { limit: limit.name() }).get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_are_counted_by_limit_and_exposed() {
        let mut registry = Registry::default();
        let hits = LimitHits::register(&mut registry);
        hits.hit(Limit::QueryLimit, 1, &"limit=5000 lowered to 1500");
        hits.hit(Limit::QueryLimit, 2, &"again");
        hits.hit(Limit::TraceSpans, 0, &"nothing");
        assert_eq!(hits.count(Limit::QueryLimit), 3);
        assert_eq!(hits.count(Limit::TraceSpans), 0);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("spindle_limit_hits_total{limit=\"query_limit\"} 3"), "{text}");
    }
}
