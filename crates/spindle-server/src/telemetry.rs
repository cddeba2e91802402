//! Spindle's metrics: self-metrics of ingest, queue, storage and queries, and the span
//! metrics derived at ingest — named as the OpenTelemetry spanmetrics connector names
//! them — exposed on the admin port's `/metrics`.
//!
//! Span metrics have two forms. Cumulative Prometheus series
//! (`traces_span_metrics_calls_total`, `traces_span_metrics_duration_seconds_*`, with
//! trace-id exemplars in OpenMetrics) live in the registry. Per-minute aggregates
//! ([`SpanMetrics`]) back the Jaeger SPM API; they are snapshotted to
//! `DATA_DIR/spanmetrics/state.bin` every few seconds and at shutdown, and trimmed to
//! the retention window, so they survive restarts and follow retention.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use spindle_model::{Span, SpanKind, StatusCode, TraceId};
use spindle_query::spanmetrics::{BatchAggregate, SpanMetrics};

/// The spanmetrics connector's default explicit buckets, in seconds.
pub const DURATION_BUCKETS: [f64; 16] =
    [0.002, 0.004, 0.006, 0.008, 0.01, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.4, 2.0, 5.0, 10.0, 15.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SpanLabels {
    pub service_name: String,
    pub span_name: String,
    pub span_kind: &'static str,
    pub status_code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TraceExemplar {
    pub trace_id: String,
}

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

pub fn kind_label(kind: SpanKind) -> &'static str {
    match kind {
        SpanKind::Unspecified => "SPAN_KIND_UNSPECIFIED",
        SpanKind::Internal => "SPAN_KIND_INTERNAL",
        SpanKind::Server => "SPAN_KIND_SERVER",
        SpanKind::Client => "SPAN_KIND_CLIENT",
        SpanKind::Producer => "SPAN_KIND_PRODUCER",
        SpanKind::Consumer => "SPAN_KIND_CONSUMER",
    }
}

pub fn status_label(status: StatusCode) -> &'static str {
    match status {
        StatusCode::Unset => "STATUS_CODE_UNSET",
        StatusCode::Ok => "STATUS_CODE_OK",
        StatusCode::Error => "STATUS_CODE_ERROR",
    }
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

pub struct Telemetry {
    registry: Registry,
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
    calls: Family<SpanLabels, Counter>,
    durations: Family<SpanLabels, HistogramWithExemplars<TraceExemplar>>,
    minutes: RwLock<SpanMetrics>,
    dirty: AtomicBool,
    snapshot_path: PathBuf,
}

impl Telemetry {
    pub fn new(data_dir: &Path) -> Self {
        let mut registry = Registry::default();
        let spans_received = Family::<ProtocolLabels, Counter>::default();
        let spans_accepted = Family::<ProtocolLabels, Counter>::default();
        let spans_dropped = Family::<DropLabels, Counter>::default();
        let requests_failed = Family::<ProtocolLabels, Counter>::default();
        let queue_spans = Gauge::default();
        let storage_bytes = Gauge::default();
        let datagrams = Family::<DatagramLabels, Counter>::default();
        let query_duration = Family::<EndpointLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
        });
        let calls = Family::<SpanLabels, Counter>::default();
        let durations = Family::<SpanLabels, HistogramWithExemplars<TraceExemplar>>::new_with_constructor(|| {
            HistogramWithExemplars::new(DURATION_BUCKETS.into_iter())
        });
        registry.register("spindle_spans_received", "Spans received, valid or not", spans_received.clone());
        registry.register("spindle_spans_accepted", "Spans stored durably and acknowledged", spans_accepted.clone());
        registry.register(
            "spindle_spans_dropped",
            "Spans not stored, by reason (invalid or queue full)",
            spans_dropped.clone(),
        );
        registry.register(
            "spindle_requests_failed",
            "Requests that failed to decode or store",
            requests_failed.clone(),
        );
        registry.register("spindle_udp_datagrams", "UDP datagrams by protocol and outcome", datagrams.clone());
        registry.register("spindle_ingest_queue_spans", "Spans accepted but not yet stored", queue_spans.clone());
        registry.register_with_unit(
            "spindle_storage",
            "Size of the data directory",
            Unit::Bytes,
            storage_bytes.clone(),
        );
        let store = StoreGauges::default();
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
            query_duration.clone(),
        );
        registry.register("traces_span_metrics_calls", "Spans by service, name, kind and status", calls.clone());
        registry.register_with_unit(
            "traces_span_metrics_duration",
            "Span durations by service, name, kind and status",
            Unit::Seconds,
            durations.clone(),
        );
        let snapshot_path = data_dir.join("spanmetrics").join("state.bin");
        let minutes = read_snapshot(&snapshot_path);
        Telemetry {
            registry,
            spans_received,
            spans_accepted,
            spans_dropped,
            requests_failed,
            queue_spans,
            storage_bytes,
            store,
            datagrams,
            query_duration,
            calls,
            durations,
            minutes: RwLock::new(minutes),
            dirty: AtomicBool::new(false),
            snapshot_path,
        }
    }

    /// Groups a batch for span metrics; cheap, done before the batch moves into the store.
    pub fn prepare(spans: &[Span]) -> PreparedBatch {
        // ahash: SipHash over two strings per span was a visible part of the receivers' time.
        let mut groups: HashMap<(&str, &str, SpanKind, StatusCode), (Vec<f64>, TraceId), ahash::RandomState> =
            HashMap::default();
        let mut services = spindle_model::ServiceNames::default();
        for span in spans {
            let g = groups
                .entry((services.of(span), span.name.as_str(), span.kind, span.status.code))
                .or_insert_with(|| (Vec::new(), span.trace_id));
            g.0.push(span.duration_nanos() as f64 / 1e9);
            g.1 = span.trace_id;
        }
        PreparedBatch {
            minutes: BatchAggregate::from_spans(spans),
            series: groups
                .into_iter()
                .map(|((service, name, kind, status), (durations, trace))| {
                    let labels = SpanLabels {
                        service_name: service.to_string(),
                        span_name: name.to_string(),
                        span_kind: kind_label(kind),
                        status_code: status_label(status),
                    };
                    (labels, durations, trace)
                })
                .collect(),
        }
    }

    /// Counts a batch the store accepted.
    pub fn record(&self, batch: PreparedBatch) {
        for (labels, durations, trace) in batch.series {
            self.calls.get_or_create(&labels).inc_by(durations.len() as u64);
            let histogram = self.durations.get_or_create(&labels);
            if let Some((last, rest)) = durations.split_last() {
                for d in rest {
                    histogram.observe(*d, None, None);
                }
                histogram.observe(*last, Some(TraceExemplar { trace_id: trace.to_hex() }), None);
            }
        }
        if !batch.minutes.is_empty() {
            self.minutes.write().unwrap_or_else(|p| p.into_inner()).merge(batch.minutes);
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    pub fn with_minutes<T>(&self, f: impl FnOnce(&SpanMetrics) -> T) -> T {
        f(&self.minutes.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Drops minute aggregates older than `unix_nano`.
    pub fn drop_before(&self, unix_nano: u64) {
        let mut minutes = self.minutes.write().unwrap_or_else(|p| p.into_inner());
        let before = minutes.minutes();
        minutes.drop_before(unix_nano);
        if minutes.minutes() != before {
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// Writes the minute aggregates when they changed: to a temporary file, synced, then
    /// renamed over the previous snapshot, so a crash leaves one whole snapshot.
    pub fn snapshot(&self) -> std::io::Result<()> {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let bytes = {
            let minutes = self.minutes.read().unwrap_or_else(|p| p.into_inner());
            postcard::to_stdvec(&*minutes).map_err(std::io::Error::other)?
        };
        if let Some(dir) = self.snapshot_path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.snapshot_path.with_extension("tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.snapshot_path)?;
        Ok(())
    }

    /// The exposition: OpenMetrics with exemplars when asked for, else the Prometheus text
    /// format (no exemplars, no `# EOF`), which `promtool check metrics` reads.
    pub fn encode(&self, openmetrics: bool) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode_registry(&mut out, &self.registry).is_err() {
            return String::new();
        }
        if openmetrics {
            let _ = prometheus_client::encoding::text::encode_eof(&mut out);
            return out;
        }
        // The text format names a counter family after its samples (`x_total`), where
        // OpenMetrics names it `x`; exemplars and `# UNIT` do not exist there.
        let counters: std::collections::HashSet<&str> =
            out.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.strip_suffix(" counter")).collect();
        let mut text = String::with_capacity(out.len());
        for line in out.lines() {
            if line.starts_with("# UNIT") {
                continue;
            }
            let rewritten;
            let line = if let Some(rest) = line.strip_prefix("# HELP ").or_else(|| line.strip_prefix("# TYPE ")) {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) {
                    rewritten = format!("{}{name}_total {tail}", &line[..7]);
                    rewritten.as_str()
                } else {
                    line
                }
            } else {
                match line.find(" # {") {
                    Some(at) => &line[..at],
                    None => line,
                }
            };
            text.push_str(line);
            text.push('\n');
        }
        text
    }
}

pub struct PreparedBatch {
    minutes: BatchAggregate,
    series: Vec<(SpanLabels, Vec<f64>, TraceId)>,
}

fn read_snapshot(path: &Path) -> SpanMetrics {
    match std::fs::read(path) {
        Ok(bytes) => postcard::from_bytes(&bytes).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), error = %e, "span metrics snapshot unreadable, starting empty");
            SpanMetrics::default()
        }),
        Err(_) => SpanMetrics::default(),
    }
}

/// Snapshots span metrics every `every` until `stop` flips, then once more.
pub async fn snapshot_loop(
    telemetry: Arc<Telemetry>,
    every: Duration,
    retention: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let t = Arc::clone(&telemetry);
        let keep_from = crate::api::params::now_unix_nano().saturating_sub(retention.as_nanos() as u64);
        let _ = tokio::task::spawn_blocking(move || {
            t.drop_before(keep_from);
            if let Err(e) = t.snapshot() {
                tracing::warn!(error = %e, "span metrics snapshot failed");
            }
        })
        .await;
    }
    let t = Arc::clone(&telemetry);
    let _ = tokio::task::spawn_blocking(move || t.snapshot()).await;
}
