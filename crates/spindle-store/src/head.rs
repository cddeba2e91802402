//! The in-memory part of the embedded store: spans grouped by trace, plus the services and
//! operations they introduced. It owns no files; the WAL makes its content durable until the
//! engine cuts it into a block.

use std::collections::{HashMap, HashSet};
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
        Head::new(usize::MAX, usize::MAX)
    }
}

impl Head {
    /// An empty head whose catalog lists at most `max_services` services and
    /// `max_operations_per_service` operations per service.
    pub(crate) fn new(max_operations_per_service: usize, max_services: usize) -> Self {
        Head {
            traces: TraceMap::default(),
            catalog: Catalog::new(max_operations_per_service, max_services),
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

/// Names come from clients: keyed hashing, so that no client can choose names that collide.
type Keyed<K, V> = HashMap<K, V, ahash::RandomState>;

const KINDS: [SpanKind; 6] = [
    SpanKind::Unspecified,
    SpanKind::Internal,
    SpanKind::Server,
    SpanKind::Client,
    SpanKind::Producer,
    SpanKind::Consumer,
];

fn kind_bit(kind: SpanKind) -> u8 {
    1 << KINDS.iter().position(|k| *k == kind).unwrap_or(0)
}

/// One service's operations: span name to the set of kinds seen with it (one bit each), so
/// a span's lookup is one hash of its name, with no allocation.
#[derive(Debug, Default, Clone)]
pub(crate) struct ServiceOperations {
    names: Keyed<String, u8>,
    /// (name, kind) pairs held.
    count: usize,
}

/// What [`Catalog::add`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Added {
    Known,
    New,
    /// The service already lists `max_per_service` operations; the name is not listed.
    Full,
    /// The catalog already lists `max_services` services; this one is not listed.
    ServiceUnlisted,
}

/// What [`Catalog::merge`] and [`Head::insert`] could not list.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unlisted {
    /// Entries (or spans) whose service's operations list was full.
    pub(crate) operations: u64,
    /// Services (merge) or spans (insert) that found the services list full.
    pub(crate) services: u64,
}

/// Services and their operations, at most `max_services` services and `max_per_service`
/// operations per service: names are client-controlled (an id in a span name makes one per
/// request, a `service.name` per host one per host), and every name listed costs memory here
/// and bytes in every services or operations answer. Spans beyond the bounds are stored and
/// searchable as any other (searches read the spans, never the catalog); only the listing
/// leaves their names out. The first names seen are the ones listed.
#[derive(Debug, Clone)]
pub(crate) struct Catalog {
    services: Keyed<String, ServiceOperations>,
    max_per_service: usize,
    max_services: usize,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog::new(usize::MAX, usize::MAX)
    }
}

impl Catalog {
    pub(crate) fn new(max_per_service: usize, max_services: usize) -> Self {
        Catalog { services: Keyed::default(), max_per_service, max_services }
    }

    /// Lists `service` (with no operation yet) if it is new and there is room; false when
    /// it is not listed.
    fn add_service(&mut self, service: &str) -> bool {
        if self.services.contains_key(service) {
            return true;
        }
        if self.services.len() >= self.max_services {
            return false;
        }
        self.services.insert(service.to_string(), ServiceOperations::default());
        true
    }

    pub(crate) fn add(&mut self, service: &str, name: &str, kind: SpanKind) -> Added {
        let bit = kind_bit(kind);
        // Look up by reference first: nearly every span names a known operation, and
        // building an owned key per span would allocate for nothing.
        if let Some(ops) = self.services.get_mut(service) {
            if let Some(kinds) = ops.names.get_mut(name) {
                if *kinds & bit != 0 {
                    return Added::Known;
                }
                if ops.count >= self.max_per_service {
                    return Added::Full;
                }
                *kinds |= bit;
                ops.count += 1;
                return Added::New;
            }
            if ops.count >= self.max_per_service {
                return Added::Full;
            }
            ops.names.insert(name.to_string(), bit);
            ops.count += 1;
            return Added::New;
        }
        // A new service: a span of a service past the bound costs this length check too, and
        // allocates nothing.
        if self.services.len() >= self.max_services {
            return Added::ServiceUnlisted;
        }
        let mut ops = ServiceOperations::default();
        if self.max_per_service > 0 {
            ops.names.insert(name.to_string(), bit);
            ops.count = 1;
        }
        self.services.insert(service.to_string(), ops);
        if self.max_per_service > 0 {
            Added::New
        } else {
            Added::Full
        }
    }

    /// Adds everything of `other`, calling `added` with each entry that was new; returns how
    /// many entries found their service full and how many services found no room.
    pub(crate) fn merge(&mut self, other: &Catalog, mut added: impl FnMut(&str, &str, SpanKind)) -> Unlisted {
        let mut unlisted = Unlisted::default();
        // By name, so which services get the last places does not depend on hash order.
        let mut services: Vec<&str> = other.service_names().collect();
        services.sort_unstable();
        for service in services {
            // A service is listed even when its bound leaves it no operation.
            if !self.add_service(service) {
                unlisted.services += 1;
            }
        }
        for (service, name, kind) in other.entries() {
            match self.add(service, name, kind) {
                Added::New => added(service, name, kind),
                Added::Known | Added::ServiceUnlisted => {}
                Added::Full => unlisted.operations += 1,
            }
        }
        unlisted
    }

    /// Lists `service` with no operation (a snapshot's service whose list was empty).
    pub(crate) fn insert_service(&mut self, service: &str) {
        self.add_service(service);
    }

    /// Every (service, name, kind), in no particular order. A service whose list is empty
    /// (its bound is 0) is left out; see [`Catalog::service_names`].
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&str, &str, SpanKind)> {
        self.services.iter().flat_map(|(service, ops)| {
            ops.names.iter().flat_map(move |(name, kinds)| {
                KINDS
                    .iter()
                    .filter(move |k| kinds & kind_bit(**k) != 0)
                    .map(move |k| (service.as_str(), name.as_str(), *k))
            })
        })
    }

    /// How many operations `service` lists.
    pub(crate) fn count(&self, service: &str) -> usize {
        self.services.get(service).map_or(0, |ops| ops.count)
    }

    pub(crate) fn service_names(&self) -> impl Iterator<Item = &str> {
        self.services.keys().map(String::as_str)
    }

    /// Adds the operations of `service` (of `kind` when given) to `into`, stopping once
    /// `into` holds the catalog's bound.
    pub(crate) fn operations(&self, service: &str, kind: Option<SpanKind>, into: &mut HashSet<Operation>) {
        let Some(ops) = self.services.get(service) else { return };
        for (name, kinds) in &ops.names {
            for k in KINDS.iter().filter(|k| kinds & kind_bit(**k) != 0 && kind.is_none_or(|want| want == **k)) {
                if into.len() >= self.max_per_service {
                    return;
                }
                into.insert(Operation { name: name.clone(), kind: *k });
            }
        }
    }
}

impl Head {
    /// Adds spans; a span identical to one already held (a client's retry) is skipped.
    /// Returns how many spans named an operation their service's list had no room for, and
    /// how many were of a service the services list had no room for.
    pub(crate) fn insert(&mut self, spans: Vec<Span>, encoded_bytes: usize) -> Unlisted {
        self.bytes += encoded_bytes;
        let mut services = ServiceNames::default();
        let mut unlisted = Unlisted::default();
        for span in &spans {
            match self.catalog.add(services.of(span), &span.name, span.kind) {
                Added::Full => unlisted.operations += 1,
                Added::ServiceUnlisted => unlisted.services += 1,
                Added::Known | Added::New => {}
            }
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
        unlisted
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
