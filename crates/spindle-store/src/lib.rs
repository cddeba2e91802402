//! Where spans live: the [`TraceStore`] trait and Spindle's embedded implementation.
//!
//! The trait is what receivers write to and what the query layer reads from; every backend
//! (the embedded engine here, a distributed one later) implements it. The embedded store
//! ([`EmbeddedStore`]) is durable: a batch is in its write-ahead log, synced per the
//! configured [`SyncPolicy`], before `append` returns.
//!
//! Architecture Invariant: `append` returning `Ok` means the batch survives `kill -9`
//! (with `SyncPolicy::Always`, also power loss).

mod batch_codec;
mod block;
mod block_format;
mod dict_column;
mod embedded;
mod head;
mod query;
mod scan;
mod wal;

#[cfg(feature = "test-model")]
pub mod test_model;

#[cfg(test)]
#[path = "../tests/support/generator.rs"]
mod generator;

use std::borrow::Cow;

use spindle_model::{DependencyLink, Span, SpanId, SpanKind, StatusCode, TraceId};

pub use embedded::{EmbeddedStore, StoreOptions, StoreStats};
pub use query::{Operation, QueryControl, TraceQuery};
pub use scan::SCAN_THREADS;
pub use wal::SyncPolicy;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("io error on {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("data directory {path} is in use by another process")]
    Locked { path: String },
    #[error("block {path} is unreadable: {reason}")]
    Block { path: String, reason: String },
    #[error("could not encode batch: {0}")]
    Encode(String),
    #[error("store is closed")]
    Closed,
    /// The data directory's format marker refuses this release (written by a newer one, or
    /// unreadable); `message` says what to do.
    #[error("data directory marker {path}: {message}")]
    DataFormat { path: String, message: String },
    /// The query's deadline ([`QueryControl`]) passed before it finished.
    #[error("query timed out")]
    TimedOut,
    /// The query's caller no longer waits for it ([`QueryControl`]).
    #[error("query cancelled")]
    Cancelled,
}

impl StoreError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        StoreError::Io { path: path.display().to_string(), source }
    }
}

/// A place spans are written to and read from. Implementations are shared between threads;
/// every method may block on IO, so async callers run them on a blocking pool.
pub trait TraceStore: Send + Sync + 'static {
    /// Stores a batch. When this returns `Ok` the batch is durable and visible to queries.
    fn append(&self, spans: Vec<Span>) -> Result<(), StoreError>;

    /// All spans of a trace, in no particular order; empty when the trace is unknown.
    fn get_trace(&self, trace_id: TraceId) -> Result<Vec<Span>, StoreError>;

    /// [`TraceStore::get_trace`] of each id, in the order given. A store that answers a
    /// lookup per round trip (ClickHouse) reads them all at once: a search's page of traces
    /// then costs one read, not one per trace. Stops early when the current query's time is
    /// up.
    fn get_traces(&self, trace_ids: &[TraceId]) -> Result<Vec<Vec<Span>>, StoreError> {
        trace_ids
            .iter()
            .map(|id| {
                QueryControl::check_current()?;
                self.get_trace(*id)
            })
            .collect()
    }

    /// [`TraceStore::get_traces`] where the spans need to carry only `fields` (identity,
    /// name, kind, times, status, resource and scope always; links are not carried): a
    /// columnar store then reads a few columns of each trace, not all. By default whole.
    fn get_traces_fields(&self, trace_ids: &[TraceId], fields: &SpanFields) -> Result<Vec<Vec<Span>>, StoreError> {
        let _ = fields;
        self.get_traces(trace_ids)
    }

    /// Ids of traces with at least one span matching the query, newest trace first,
    /// at most `query.limit` of them.
    fn find_trace_ids(&self, query: &TraceQuery) -> Result<Vec<TraceId>, StoreError>;

    /// Every service name seen, sorted.
    fn services(&self) -> Result<Vec<String>, StoreError>;

    /// Operations of a service, optionally of one span kind, sorted by name then kind.
    fn operations(&self, service: &str, kind: Option<SpanKind>) -> Result<Vec<Operation>, StoreError>;

    /// Whether [`TraceStore::operations`] of `service` may leave names out: its list holds
    /// as many as the store lists per service, so further names are stored and searchable
    /// but unlisted. An answer built from the list should then say that it is partial.
    fn operations_capped(&self, service: &str) -> Result<bool, StoreError> {
        let _ = service;
        Ok(false)
    }

    /// Service-graph edges of traces that started in `[start_unix_nano, end_unix_nano]`.
    fn dependencies(&self, start_unix_nano: u64, end_unix_nano: u64) -> Result<Vec<DependencyLink>, StoreError>;

    /// Makes everything appended so far durable; called on shutdown.
    fn sync(&self) -> Result<(), StoreError>;

    /// Calls `visit` with every stored span matching `query` (its `limit` is ignored), in
    /// no particular order. Analytics read through this; stores override it with a scan
    /// that does not assemble whole traces.
    fn scan_spans(&self, query: &TraceQuery, visit: &mut dyn FnMut(&Span)) -> Result<(), StoreError> {
        let all = TraceQuery { limit: usize::MAX, ..query.clone() };
        for id in self.find_trace_ids(&all)? {
            for span in self.get_trace(id)?.iter().filter(|s| query.matches_span(s)) {
                visit(span);
            }
        }
        Ok(())
    }

    /// Like [`TraceStore::scan_spans`], but the visited spans need to carry only `fields`:
    /// a columnar store then decodes a few columns instead of whole spans. Spans may carry
    /// more than asked; by default they are whole.
    fn scan_fields(
        &self,
        query: &TraceQuery,
        fields: &SpanFields,
        visit: &mut dyn FnMut(&Span),
    ) -> Result<(), StoreError> {
        let _ = fields;
        self.scan_spans(query, visit)
    }

    /// Calls `visit` with every span matching `query` reduced to a [`SpanRow`]: what RED
    /// statistics, slowest spans and outliers read. Columnar stores answer it without
    /// building spans.
    fn scan_rows(
        &self,
        query: &TraceQuery,
        fields: &RowFields,
        visit: &mut dyn FnMut(&SpanRow),
    ) -> Result<(), StoreError> {
        let projection = SpanFields::with_attributes(fields.group_by.as_deref());
        self.scan_fields(query, &projection, &mut |span| visit(&SpanRow::of(span, fields)))
    }

    /// Like [`TraceStore::scan_rows`], visiting from up to `visitors.len()` threads at once:
    /// each visitor is called from one thread, and each matching span reaches exactly one of
    /// them. Aggregations keep one partial result per visitor and merge them, so the
    /// aggregating runs on every core. By default every span goes to the first visitor.
    fn scan_rows_split(
        &self,
        query: &TraceQuery,
        fields: &RowFields,
        visitors: &mut [&mut (dyn FnMut(&SpanRow) + Send)],
    ) -> Result<(), StoreError> {
        match visitors.first_mut() {
            Some(visit) => self.scan_rows(query, fields, &mut **visit),
            None => Ok(()),
        }
    }

    /// Calls `visit` with the spans of every trace whose earliest span started in
    /// `[start_unix_nano, end_unix_nano]`, each span carrying at least `fields`, traces in
    /// no particular order. Service graphs read through this.
    fn scan_traces(
        &self,
        start_unix_nano: u64,
        end_unix_nano: u64,
        fields: &SpanFields,
        visit: &mut dyn FnMut(&[Span]),
    ) -> Result<(), StoreError> {
        let _ = fields;
        let window = TraceQuery {
            start_time_min_unix_nano: start_unix_nano,
            start_time_max_unix_nano: end_unix_nano,
            limit: usize::MAX,
            ..TraceQuery::default()
        };
        for id in self.find_trace_ids(&window)? {
            let trace = self.get_trace(id)?;
            if starts_within(&trace, start_unix_nano, end_unix_nano) {
                visit(&trace);
            }
        }
        Ok(())
    }

    /// RED statistics of the spans matching `query`, grouped by `group_by` and by steps of
    /// `step_nanos` (a span's step is `start / step_nanos`), computed by the store itself:
    /// a store that runs the aggregation where the rows are (ClickHouse) sends buckets, not
    /// rows. `false` (the default) means the store does not, and nothing was visited;
    /// callers then aggregate [`TraceStore::scan_rows`].
    fn red_buckets(
        &self,
        query: &TraceQuery,
        group_by: Option<&str>,
        step_nanos: u64,
        visit: &mut dyn FnMut(&RedBucket),
    ) -> Result<bool, StoreError> {
        let _ = (query, group_by, step_nanos, visit);
        Ok(false)
    }

    /// Per-minute span statistics of `[start_unix_nano, end_unix_nano)` computed by the
    /// store itself, for stores that several processes share (ClickHouse): every instance
    /// then answers span-metric queries the same, whichever process appended the spans.
    /// `None` (the default) means the process's own minute aggregates, derived at append,
    /// are the answer. Empty `services` or `kinds` mean all.
    fn minute_buckets(
        &self,
        start_unix_nano: u64,
        end_unix_nano: u64,
        services: &[String],
        kinds: &[SpanKind],
    ) -> Result<Option<Vec<MinuteBucket>>, StoreError> {
        let _ = (start_unix_nano, end_unix_nano, services, kinds);
        Ok(None)
    }
}

/// Spans of one group whose starts fall in one step and whose durations fall in one
/// latency-sketch bucket (as [`MinuteBucket`]), all errors or none: what
/// [`TraceStore::red_buckets`] visits, mergeable into the RED statistics that span-by-span
/// rows give.
#[derive(Debug, Clone, PartialEq)]
pub struct RedBucket<'a> {
    /// The text of the grouping key as `Span::group_text` reads it; `None` when the spans
    /// lack the key, or the scan is not grouped.
    pub group: Option<Cow<'a, str>>,
    /// The earliest start among the spans, which fixes their step.
    pub start_unix_nano: u64,
    pub error: bool,
    pub bucket: i32,
    pub count: u64,
    pub sum_nanos: u128,
    pub min_nanos: u64,
    pub max_nanos: u64,
}

/// Whether the earliest span of `trace` started in `[start_unix_nano, end_unix_nano]`:
/// which traces [`TraceStore::scan_traces`] visits.
pub(crate) fn starts_within(trace: &[Span], start_unix_nano: u64, end_unix_nano: u64) -> bool {
    let first = trace.iter().map(|s| s.start_time_unix_nano).min().unwrap_or(0);
    (start_unix_nano..=end_unix_nano).contains(&first)
}

/// Spans of one series (service, name, kind, status) in one minute whose durations fall in
/// one bucket of the latency sketch (`spindle_query::sketch`, bucket `i` holds durations in
/// `(γ^(i-2), γ^(i-1)]` nanoseconds, 0 holds zero): what [`TraceStore::minute_buckets`]
/// answers, mergeable into the same minute aggregates as spans counted at append.
#[derive(Debug, Clone, PartialEq)]
pub struct MinuteBucket {
    /// Minutes since the epoch.
    pub minute: u64,
    pub service: String,
    pub name: String,
    pub kind: SpanKind,
    pub status: StatusCode,
    pub bucket: i32,
    pub count: u64,
    pub sum_nanos: u128,
    pub min_nanos: u64,
    pub max_nanos: u64,
}

/// A span reduced to what aggregations read, borrowed from the store's buffers.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRow<'a> {
    /// Zero unless [`RowFields::ids`] asked for them.
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub service: &'a str,
    pub name: &'a str,
    pub kind: SpanKind,
    pub start_unix_nano: u64,
    pub duration_nanos: u64,
    pub error: bool,
    /// The text of [`RowFields::group_by`] as `Span::group_text` reads it.
    pub group: Option<Cow<'a, str>>,
}

impl<'a> SpanRow<'a> {
    /// A row of [`RowFields::trace_only`]: the trace and the span's start, nothing else.
    pub fn of_trace(trace_id: TraceId, start_unix_nano: u64) -> Self {
        SpanRow {
            trace_id,
            span_id: SpanId::default(),
            service: "",
            name: "",
            kind: SpanKind::Unspecified,
            start_unix_nano,
            duration_nanos: 0,
            error: false,
            group: None,
        }
    }

    pub fn of(span: &'a Span, fields: &RowFields) -> Self {
        if fields.trace_only {
            return SpanRow::of_trace(span.trace_id, span.start_time_unix_nano);
        }
        SpanRow {
            trace_id: if fields.ids { span.trace_id } else { TraceId::default() },
            span_id: if fields.ids { span.span_id } else { SpanId::default() },
            service: span.service_name(),
            name: if fields.operation { &span.name } else { "" },
            kind: if fields.operation { span.kind } else { SpanKind::Unspecified },
            start_unix_nano: span.start_time_unix_nano,
            duration_nanos: span.duration_nanos(),
            error: span.is_error(),
            group: fields.group_by.as_deref().and_then(|key| span.group_text(key)),
        }
    }
}

/// What a row scan reads besides service, times and status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowFields {
    /// The key whose text fills [`SpanRow::group`].
    pub group_by: Option<String>,
    /// Whether trace and span ids are needed.
    pub ids: bool,
    /// Whether [`SpanRow::name`] and [`SpanRow::kind`] are needed; without, they are empty
    /// and `Unspecified`, and a columnar store leaves their columns unread.
    pub operation: bool,
    /// Only [`SpanRow::trace_id`] and [`SpanRow::start_unix_nano`] (which traces have a
    /// matching span, and when): the other fields are empty and a columnar store leaves
    /// their columns unread. `group_by`, `ids` and `operation` are then ignored. A store may
    /// visit each trace once, with the latest start of its matching spans.
    pub trace_only: bool,
}

/// Span attributes that decide service-graph edges (see `spindle_model::for_each_edge`).
pub const GRAPH_KEYS: [&str; 5] = [
    spindle_model::semconv::MESSAGING_SYSTEM,
    spindle_model::semconv::MESSAGING_DESTINATION_NAME,
    spindle_model::semconv::DB_SYSTEM,
    spindle_model::semconv::DB_SYSTEM_NAME,
    spindle_model::semconv::PEER_SERVICE,
];

/// What a projected scan must fill in besides the span's identity (trace, span and parent
/// ids), name, kind, times, status, resource and scope, which it always carries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpanFields {
    /// Span attributes to keep, by key; `None` keeps them all.
    pub attributes: Option<Vec<String>>,
    /// Whether events (with their attributes) are needed.
    pub events: bool,
}

impl SpanFields {
    /// Only the always-present fields.
    pub fn bare() -> Self {
        SpanFields { attributes: Some(Vec::new()), events: false }
    }

    /// The always-present fields plus these span attributes.
    pub fn with_attributes<'a>(keys: impl IntoIterator<Item = &'a str>) -> Self {
        SpanFields { attributes: Some(keys.into_iter().map(str::to_string).collect()), events: false }
    }
}
