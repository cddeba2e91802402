//! The in-memory part of the embedded store: spans grouped by trace, plus the services and
//! operations they introduced. It owns no files; the WAL makes its content durable until the
//! engine cuts it into a block.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use spindle_model::{ServiceNames, Span, SpanKind, TraceId};

use crate::query::{Operation, TraceQuery};

/// Trace ids come from clients: keyed hashing (ahash) instead of SipHash, which was a
/// visible cost of every span appended and every trace written.
type TraceMap = HashMap<TraceId, TraceEntry, ahash::RandomState>;

pub(crate) struct Head {
    traces: TraceMap,
    catalog: Catalog,
    spans: usize,
    /// Encoded size of what was appended: the measure the cut threshold is set in.
    bytes: usize,
    max_start: u64,
    min_start: u64,
    created: Instant,
}

impl Default for Head {
    fn default() -> Self {
        Head {
            traces: TraceMap::default(),
            catalog: Catalog::default(),
            spans: 0,
            bytes: 0,
            max_start: 0,
            min_start: u64::MAX,
            created: Instant::now(),
        }
    }
}

pub(crate) struct TraceEntry {
    pub(crate) spans: Vec<Span>,
    /// Earliest span start, the trace's position in time.
    pub(crate) start_min: u64,
}

/// Services and their operations, sorted.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Catalog {
    pub(crate) services: BTreeMap<String, BTreeSet<Operation>>,
}

impl Catalog {
    pub(crate) fn add(&mut self, service: &str, name: &str, kind: SpanKind) -> bool {
        // Look up by reference first: nearly every span names a known operation, and
        // building an owned key per span would allocate twice for nothing.
        if let Some(ops) = self.services.get(service) {
            if ops.iter().any(|o| o.kind == kind && o.name == name) {
                return false;
            }
        }
        self.services.entry(service.to_string()).or_default().insert(Operation { name: name.to_string(), kind })
    }

    /// Adds everything of `other`; true when something was new.
    pub(crate) fn merge(&mut self, other: &Catalog) -> bool {
        let mut changed = false;
        for (service, ops) in &other.services {
            for op in ops {
                changed |= self.add(service, &op.name, op.kind);
            }
        }
        changed
    }

    pub(crate) fn operations(&self, service: &str, kind: Option<SpanKind>, into: &mut BTreeSet<Operation>) {
        if let Some(ops) = self.services.get(service) {
            into.extend(ops.iter().filter(|o| kind.is_none_or(|k| o.kind == k)).cloned());
        }
    }
}

impl Head {
    /// Adds spans; a span identical to one already held (a client's retry) is skipped.
    pub(crate) fn insert(&mut self, spans: Vec<Span>, encoded_bytes: usize) {
        self.bytes += encoded_bytes;
        let mut services = ServiceNames::default();
        for span in &spans {
            self.catalog.add(services.of(span), &span.name, span.kind);
        }
        for span in spans {
            let start = span.start_time_unix_nano;
            let entry =
                self.traces.entry(span.trace_id).or_insert_with(|| TraceEntry { spans: Vec::new(), start_min: start });
            if entry.spans.iter().any(|s| s.span_id == span.span_id && *s == span) {
                continue;
            }
            entry.start_min = entry.start_min.min(start);
            entry.spans.push(span);
            self.spans += 1;
            self.max_start = self.max_start.max(start);
            self.min_start = self.min_start.min(start);
        }
    }

    pub(crate) fn get(&self, trace_id: TraceId) -> Option<&TraceEntry> {
        self.traces.get(&trace_id)
    }

    /// Every trace with a span matching the query, with the trace's earliest start.
    pub(crate) fn find(&self, query: &TraceQuery, into: &mut HashMap<TraceId, u64>) {
        if self.spans == 0
            || self.max_start < query.start_time_min_unix_nano
            || self.min_start > query.start_time_max_unix_nano
        {
            return;
        }
        for (id, trace) in &self.traces {
            if trace.spans.iter().any(|s| query.matches_span(s)) {
                let at = into.entry(*id).or_insert(trace.start_min);
                *at = (*at).min(trace.start_min);
            }
        }
    }

    pub(crate) fn traces(&self) -> impl Iterator<Item = (&TraceId, &TraceEntry)> {
        self.traces.iter()
    }

    /// Traces in ascending order of id: the order a block is written in.
    pub(crate) fn sorted_traces(&self) -> Vec<(TraceId, &TraceEntry)> {
        let mut traces: Vec<(TraceId, &TraceEntry)> = self.traces.iter().map(|(id, t)| (*id, t)).collect();
        traces.sort_unstable_by_key(|(id, _)| *id);
        traces
    }

    pub(crate) fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub(crate) fn span_count(&self) -> usize {
        self.spans
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn age(&self) -> std::time::Duration {
        self.created.elapsed()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.spans == 0
    }
}
