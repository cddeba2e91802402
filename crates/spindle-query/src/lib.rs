//! Reads over a [`TraceStore`]: trace assembly, search, summaries, dependency graphs.
//!
//! The HTTP APIs of the server call this layer, never the store directly, so that every
//! API answers the same question the same way (what a trace is, how results are ordered,
//! what a summary counts). It knows no wire format.

pub mod analytics;
pub mod sketch;
pub mod spanmetrics;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use spindle_model::{DependencyLink, Span, SpanId, SpanKind, TraceId};
use spindle_store::{Operation, StoreError, TraceQuery, TraceStore};

/// Traces a search reads from the store at once ([`TraceStore::get_traces`]).
const TRACES_PER_READ: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A trace: its id and its spans ordered by start time.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub trace_id: TraceId,
    pub spans: Vec<Span>,
    /// Spans left out of `spans` by the span cap ([`QueryService::with_max_trace_spans`]):
    /// the latest-starting ones.
    pub omitted_spans: usize,
}

/// Per-service counts within a trace summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSummary {
    pub name: String,
    pub span_count: u64,
    pub error_span_count: u64,
}

/// What a search result list shows of a trace without its spans.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSummary {
    pub trace_id: TraceId,
    /// Service and operation of the root span; of the earliest span when no root is present.
    pub root_service_name: String,
    pub root_operation_name: String,
    pub min_start_time_unix_nano: u64,
    pub max_end_time_unix_nano: u64,
    pub span_count: u64,
    pub error_span_count: u64,
    /// Spans whose parent is not in the trace.
    pub orphan_span_count: u64,
    pub services: Vec<ServiceSummary>,
}

#[derive(Clone)]
pub struct QueryService {
    store: Arc<dyn TraceStore>,
    max_trace_spans: usize,
}

impl QueryService {
    pub fn new(store: Arc<dyn TraceStore>) -> Self {
        QueryService { store, max_trace_spans: usize::MAX }
    }

    /// Traces are served with at most `max` spans (the earliest-starting ones); the rest are
    /// counted in [`Trace::omitted_spans`].
    pub fn with_max_trace_spans(mut self, max: usize) -> Self {
        self.max_trace_spans = max.max(1);
        self
    }

    /// The store this service reads.
    pub fn store(&self) -> &Arc<dyn TraceStore> {
        &self.store
    }

    /// The trace, or `None` when no span of it is stored.
    pub fn get_trace(&self, trace_id: TraceId) -> Result<Option<Trace>, QueryError> {
        Ok(self.trace_of(trace_id, self.store.get_trace(trace_id)?))
    }

    /// The trace of `spans`, cut to [`QueryService::with_max_trace_spans`]; `None` without spans.
    fn trace_of(&self, trace_id: TraceId, spans: Vec<Span>) -> Option<Trace> {
        if spans.is_empty() {
            return None;
        }
        let mut trace = assemble(trace_id, spans);
        if trace.spans.len() > self.max_trace_spans {
            trace.omitted_spans = trace.spans.len() - self.max_trace_spans;
            trace.spans.truncate(self.max_trace_spans);
            trace.spans.shrink_to_fit();
        }
        Some(trace)
    }

    /// Whole traces with at least one span matching `query`, newest first.
    pub fn find_traces(&self, query: &TraceQuery) -> Result<Vec<Trace>, QueryError> {
        let ids = self.store.find_trace_ids(query)?;
        let mut out = Vec::with_capacity(ids.len());
        // Pages of traces read at once; assembling a thousand takes long too, so the query's
        // time is checked between pages.
        for page in ids.chunks(TRACES_PER_READ) {
            query.check()?;
            for (id, spans) in page.iter().zip(self.store.get_traces(page)?) {
                if let Some(trace) = self.trace_of(*id, spans) {
                    out.push(trace);
                }
            }
        }
        Ok(out)
    }

    pub fn services(&self) -> Result<Vec<String>, QueryError> {
        Ok(self.store.services()?)
    }

    pub fn operations(&self, service: &str, kind: Option<SpanKind>) -> Result<Vec<Operation>, QueryError> {
        Ok(self.store.operations(service, kind)?)
    }

    /// Whether [`QueryService::operations`] of `service` may leave names out (the store lists
    /// a bounded number per service).
    pub fn operations_capped(&self, service: &str) -> Result<bool, QueryError> {
        Ok(self.store.operations_capped(service)?)
    }

    pub fn dependencies(&self, start_unix_nano: u64, end_unix_nano: u64) -> Result<Vec<DependencyLink>, QueryError> {
        Ok(self.store.dependencies(start_unix_nano, end_unix_nano)?)
    }
}

/// Orders spans by start time (then span id) and drops exact duplicates.
pub fn assemble(trace_id: TraceId, mut spans: Vec<Span>) -> Trace {
    spans.sort_by_key(|s| (s.start_time_unix_nano, s.span_id));
    spans.dedup_by(|a, b| a.span_id == b.span_id && a == b);
    Trace { trace_id, spans, omitted_spans: 0 }
}

impl Trace {
    pub fn summary(&self) -> TraceSummary {
        let ids: HashSet<SpanId> = self.spans.iter().map(|s| s.span_id).collect();
        let root = self.spans.iter().find(|s| s.is_root()).or_else(|| self.spans.first());
        let mut services: BTreeMap<&str, ServiceSummary> = BTreeMap::new();
        let mut summary = TraceSummary {
            trace_id: self.trace_id,
            root_service_name: root.map(|s| s.service_name().to_string()).unwrap_or_default(),
            root_operation_name: root.map(|s| s.name.to_string()).unwrap_or_default(),
            min_start_time_unix_nano: self.spans.iter().map(|s| s.start_time_unix_nano).min().unwrap_or(0),
            max_end_time_unix_nano: self.spans.iter().map(|s| s.end_time_unix_nano).max().unwrap_or(0),
            span_count: self.spans.len() as u64,
            error_span_count: 0,
            orphan_span_count: 0,
            services: Vec::new(),
        };
        for span in &self.spans {
            let entry = services.entry(span.service_name()).or_insert_with(|| ServiceSummary {
                name: span.service_name().to_string(),
                span_count: 0,
                error_span_count: 0,
            });
            entry.span_count += 1;
            if span.is_error() {
                entry.error_span_count += 1;
                summary.error_span_count += 1;
            }
            if !span.is_root() && !ids.contains(&span.parent_span_id) {
                summary.orphan_span_count += 1;
            }
        }
        summary.services = services.into_values().collect();
        summary
    }
}

#[cfg(test)]
mod tests {
    use spindle_model::{KeyValue, Resource, Status, StatusCode};
    use spindle_store::{EmbeddedStore, StoreOptions, SyncPolicy};

    use super::*;

    fn span(id: u64, parent: u64, service: &str, start: u64, error: bool) -> Span {
        Span {
            trace_id: TraceId(9),
            span_id: SpanId(id),
            parent_span_id: SpanId(parent),
            name: format!("op{id}").into(),
            start_time_unix_nano: start,
            end_time_unix_nano: start + 10,
            status: Status { code: if error { StatusCode::Error } else { StatusCode::Unset }, message: String::new() },
            resource: Arc::new(Resource {
                attributes: vec![KeyValue::string("service.name", service)],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn summary_counts_errors_orphans_and_services() {
        let trace = assemble(
            TraceId(9),
            vec![span(2, 1, "b", 20, true), span(1, 0, "a", 10, false), span(3, 77, "b", 30, false)],
        );
        assert_eq!(trace.spans[0].span_id, SpanId(1), "ordered by start");
        let s = trace.summary();
        assert_eq!((s.root_service_name.as_str(), s.root_operation_name.as_str()), ("a", "op1"));
        assert_eq!((s.span_count, s.error_span_count, s.orphan_span_count), (3, 1, 1));
        assert_eq!((s.min_start_time_unix_nano, s.max_end_time_unix_nano), (10, 40));
        assert_eq!(s.services.len(), 2);
        assert_eq!(s.services[1], ServiceSummary { name: "b".into(), span_count: 2, error_span_count: 1 });
    }

    #[test]
    fn find_returns_whole_traces_for_span_level_matches() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            EmbeddedStore::open(StoreOptions { sync: SyncPolicy::Always, ..StoreOptions::new(dir.path()) }).unwrap();
        store.append(vec![span(1, 0, "a", 10, false), span(2, 1, "b", 20, true)]).unwrap();
        let query = QueryService::new(Arc::new(store));
        let found = query.find_traces(&TraceQuery { service: Some("b".into()), ..Default::default() }).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].spans.len(), 2, "the whole trace, not only the matching span");
        assert!(query.get_trace(TraceId(10)).unwrap().is_none());
    }
}
