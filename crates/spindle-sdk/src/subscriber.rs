//! The SDK's own `tracing` subscriber: the span layer's work (module `layer`) without
//! `tracing-subscriber`'s registry under it (docs/adr/022-sdk-span-layer.md).
//!
//! A span is one slot of a slab that only grows: its state ([`SpanState`]) behind a lock
//! nobody else holds in practice, its reference count, and a generation that changes when
//! the span closes, so an id kept after its span closed finds nothing instead of another
//! span. Each thread keeps the stack of spans it has entered. Whether a call site's spans and
//! events are wanted at all is decided once per call site, from the span and log filters'
//! target and level directives; a span the log filter alone wants is told apart (kept for
//! log lines, not exported) when it is created.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use opentelemetry::trace::SpanId;
use opentelemetry::Context;
use parking_lot::{Mutex, MutexGuard};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Dispatch, Event, Metadata, Subscriber};
use tracing_core::span::Current;
use tracing_subscriber::filter::{LevelFilter, Targets};

use crate::export::{on_export_worker, SpanQueue};
use crate::layer::{
    add_event, add_follows_from, detach, end_span, enter_span, exit_timings, otel_current_span, parent_if_nearer,
    record_values, start_span, LayerSettings, Parent, SpanState, WithSpanState,
};
use crate::logs::Logs;

/// Slots in the slab's first chunk; chunk `k` holds `FIRST_CHUNK << k`.
const FIRST_CHUNK: usize = 256;
/// Enough chunks for 2^40 spans open at once.
const CHUNKS: usize = 32;

struct Entry {
    meta: &'static Metadata<'static>,
    /// `None` for a span of the export worker's own transport.
    state: Option<SpanState>,
    /// Exported when it closes (else kept for log lines only).
    exported: bool,
    /// The `tracing` parent, kept open while this span is, for the scope of log lines (only
    /// when logging).
    parent: Option<Id>,
}

/// One cache line: what a span costs its thread to make, enter and close is mostly the lines
/// it touches.
#[derive(Default)]
#[repr(align(64))]
struct Slot {
    /// Changes (under the entry's lock) when the span closes.
    generation: AtomicU32,
    /// Handles to the span (4 billion would take 32 GiB of `Span`s).
    refs: AtomicU32,
    entry: Mutex<Option<Entry>>,
}

/// Spans by index; chunks are allocated as the number of open spans grows and never freed.
struct Slab {
    chunks: [OnceLock<Box<[Slot]>>; CHUNKS],
    /// Indices never used yet start here.
    next: AtomicUsize,
    free: Mutex<Vec<u32>>,
}

impl Slab {
    fn new() -> Self {
        Self {
            chunks: std::array::from_fn(|_| OnceLock::new()),
            next: AtomicUsize::new(0),
            free: Mutex::new(Vec::new()),
        }
    }

    fn slot(&self, index: usize) -> Option<&Slot> {
        let chunk = (index / FIRST_CHUNK + 1).ilog2() as usize;
        let offset = index - FIRST_CHUNK * ((1 << chunk) - 1);
        self.chunks.get(chunk)?.get()?.get(offset)
    }

    /// A free slot's index, allocating its chunk when it is the first use.
    fn allocate(&self) -> Option<usize> {
        if let Some(index) = self.free.lock().pop() {
            return Some(index as usize);
        }
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        if index >= u32::MAX as usize - 1 {
            return None;
        }
        let chunk = (index / FIRST_CHUNK + 1).ilog2() as usize;
        self.chunks.get(chunk)?.get_or_init(|| (0..FIRST_CHUNK << chunk).map(|_| Slot::default()).collect());
        Some(index)
    }

    fn release(&self, index: usize) {
        self.free.lock().push(index as u32);
    }
}

/// The id of a span the slab has no room for: it reaches no slot.
const UNRECORDED: u64 = u64::MAX;

fn id_of(index: usize, generation: u32) -> Id {
    Id::from_u64((u64::from(generation) << 32) | (index as u64 + 1))
}

/// The slot index and generation of `id` (an id this subscriber did not make yields an index
/// beyond its slots).
fn parts(id: &Id) -> (usize, u32) {
    let raw = id.into_u64();
    ((raw & 0xffff_ffff).wrapping_sub(1) as u32 as usize, (raw >> 32) as u32)
}

thread_local! {
    /// The spans this thread has entered, innermost last, with their subscriber (its slab's
    /// address: several subscribers may take turns on one thread) and whether the enter
    /// attached an OpenTelemetry context.
    static ENTERED: RefCell<Vec<(usize, Id, &'static Metadata<'static>, bool)>> = const { RefCell::new(Vec::new()) };
}

/// The SDK's subscriber; see the module documentation.
pub(crate) struct SpanSubscriber {
    queue: Arc<SpanQueue>,
    settings: LayerSettings,
    filter: Targets,
    /// Every span the subscriber records is exported: the log filter enables no span the
    /// span filter leaves out (it is the same, the default, or there are no logs).
    all_exported: bool,
    max_level: LevelFilter,
    access: WithSpanState,
    slab: Slab,
    logs: Option<Logs>,
}

impl SpanSubscriber {
    pub(crate) fn new(queue: Arc<SpanQueue>, mut settings: LayerSettings, filter: Targets, logs: Option<Logs>) -> Self {
        // Log lines nobody wants need no span fields kept, nor parents held for their scope.
        let logs = logs.filter(|logs| logs.max_level() != LevelFilter::OFF);
        let access = WithSpanState::new(Self::with_state, settings.sampler);
        let spans = crate::logs::max_level(&filter);
        let max_level = logs.as_ref().map_or(spans, |logs| spans.max(logs.max_level()));
        settings.keep_fields = logs.is_some();
        let all_exported = logs.as_ref().is_none_or(|logs| *logs.filter() == filter);
        Self { queue, settings, filter, all_exported, max_level, access, slab: Slab::new(), logs }
    }

    fn key(&self) -> usize {
        &self.slab as *const Slab as usize
    }

    /// The entry of the live span `id`, locked.
    fn entry(&self, id: &Id) -> Option<MutexGuard<'_, Option<Entry>>> {
        let (index, generation) = parts(id);
        let slot = self.slab.slot(index)?;
        let entry = slot.entry.lock();
        // The generation changes only under this lock.
        (entry.is_some() && slot.generation.load(Ordering::Relaxed) == generation).then_some(entry)
    }

    /// Calls `f` with the state of span `id`, if it has one.
    fn with<R>(&self, id: &Id, f: impl FnOnce(&mut SpanState) -> R) -> Option<R> {
        let mut entry = self.entry(id)?;
        entry.as_mut()?.state.as_mut().map(f)
    }

    /// [`SpanSubscriber::with`] for a span that is exported: one kept for log lines only
    /// is nobody's parent and gets no span events, as a span the layer's filter leaves out.
    fn with_exported<R>(&self, id: &Id, f: impl FnOnce(&mut SpanState) -> R) -> Option<R> {
        let mut entry = self.entry(id)?;
        entry.as_mut().filter(|e| e.exported)?.state.as_mut().map(f)
    }

    fn with_state(dispatch: &Dispatch, id: &Id, f: &mut dyn FnMut(&mut SpanState)) {
        if let Some(subscriber) = dispatch.downcast_ref::<Self>() {
            subscriber.with(id, f);
        }
    }

    /// The innermost span this thread entered, of this subscriber (and exported, with
    /// `exported_only`).
    fn current(&self, exported_only: bool) -> Option<(Id, &'static Metadata<'static>)> {
        let key = self.key();
        ENTERED
            .try_with(|stack| {
                stack
                    .borrow()
                    .iter()
                    .rev()
                    .find(|(k, _, meta, _)| *k == key && (!exported_only || self.all_exported || self.exported(meta)))
                    .map(|(_, id, meta, _)| (id.clone(), *meta))
            })
            .ok()
            .flatten()
    }

    /// The parent of a new span (as the layer decides it).
    fn parent(&self, attrs: &Attributes<'_>, otel: SpanId) -> (Option<Parent>, Option<Context>) {
        let from = |id: &Id| {
            self.with_exported(id, |state| (Some(Parent::of_record(&state.record)), state.extra().cloned()))
                .unwrap_or((None, None))
        };
        if let Some(id) = attrs.parent() {
            return from(id);
        }
        if !attrs.is_contextual() {
            return (None, None);
        }
        if !self.settings.activation {
            if let Some((id, _)) = self.current(true) {
                match self.with_exported(&id, |state| parent_if_nearer(state, otel)) {
                    Some(Some(parent)) => return parent,
                    Some(None) => {}
                    None => return (None, None),
                }
            }
        }
        crate::layer::current_otel_parent()
    }

    /// The `tracing` parent a new span holds open for the scope of log lines.
    fn log_parent(&self, attrs: &Attributes<'_>) -> Option<Id> {
        let parent = match attrs.parent() {
            Some(id) => Some(id.clone()),
            None if attrs.is_contextual() => self.current(false).map(|(id, _)| id),
            None => None,
        }?;
        Some(self.clone_span(&parent))
    }

    fn exported(&self, meta: &Metadata<'_>) -> bool {
        self.filter.would_enable(meta.target(), meta.level())
    }

    fn logged(&self, meta: &Metadata<'_>) -> bool {
        self.logs.as_ref().is_some_and(|logs| logs.enabled(meta))
    }

    /// The spans around a log line, from `innermost` out.
    fn scope(&self, innermost: Option<Id>) -> Vec<Id> {
        let mut scope = Vec::new();
        let mut next = innermost;
        while let Some(id) = next.take() {
            next = self.entry(&id).and_then(|entry| entry.as_ref().and_then(|e| e.parent.clone()));
            scope.push(id);
        }
        scope
    }
}

impl Subscriber for SpanSubscriber {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if self.exported(meta) || self.logged(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        self.exported(meta) || self.logged(meta)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.max_level)
    }

    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let meta = attrs.metadata();
        let exported = self.all_exported || self.exported(meta);
        let state = (!on_export_worker()).then(|| {
            let otel = if self.settings.activation { SpanId::INVALID } else { otel_current_span() };
            let (parent, extra) = self.parent(attrs, otel);
            start_span(&self.queue, &self.settings, attrs, parent, extra, otel)
        });
        let parent = if self.logs.is_some() { self.log_parent(attrs) } else { None };
        // Four billion spans open at once: this one is not recorded.
        let Some(index) = self.slab.allocate() else { return Id::from_u64(UNRECORDED) };
        let Some(slot) = self.slab.slot(index) else { return Id::from_u64(UNRECORDED) };
        let generation = slot.generation.load(Ordering::Acquire);
        slot.refs.store(1, Ordering::Release);
        *slot.entry.lock() = Some(Entry { meta, state, exported, parent });
        id_of(index, generation)
    }

    fn record(&self, id: &Id, values: &Record<'_>) {
        self.with(id, |state| record_values(state, values, self.settings.keep_fields));
    }

    fn record_follows_from(&self, id: &Id, follows: &Id) {
        if let Some(linked) = self.with(follows, |state| state.record.span_context()) {
            self.with(id, |state| add_follows_from(state, linked));
        }
    }

    fn event(&self, event: &Event<'_>) {
        let meta = event.metadata();
        let explicit = event.parent().cloned();
        if self.exported(meta) {
            let span = match &explicit {
                Some(id) => Some(id.clone()),
                None if event.is_contextual() => self.current(true).map(|(id, _)| id),
                None => None,
            };
            if let Some(id) = span {
                self.with_exported(&id, |state| add_event(state, event, self.settings.details));
            }
        }
        if let Some(logs) = self.logs.as_ref().filter(|logs| logs.enabled(meta)) {
            let span = match explicit {
                Some(id) => Some(id),
                None if event.is_contextual() => self.current(false).map(|(id, _)| id),
                None => None,
            };
            let scope = self.scope(span);
            logs.write(event, &mut |f| {
                for id in scope.iter().rev() {
                    self.with(id, |state| f(&state.record));
                }
            });
        }
    }

    fn enter(&self, id: &Id) {
        let Some(mut entry) = self.entry(id) else { return };
        let Some(entry) = entry.as_mut() else { return };
        let meta = entry.meta;
        let attached = match entry.state.as_mut().filter(|_| entry.exported) {
            Some(state) => enter_span(state, id, self.settings.activation),
            None => false,
        };
        let _ = ENTERED.try_with(|stack| stack.borrow_mut().push((self.key(), id.clone(), meta, attached)));
    }

    fn exit(&self, id: &Id) {
        let key = self.key();
        let attached = ENTERED.try_with(|stack| {
            let mut stack = stack.borrow_mut();
            let at = stack.iter().rposition(|(k, entered, _, _)| *k == key && entered == id)?;
            Some(stack.remove(at).3)
        });
        if attached.ok().flatten().unwrap_or(true) {
            detach(id);
        }
        if self.settings.details {
            self.with(id, exit_timings);
        }
    }

    fn clone_span(&self, id: &Id) -> Id {
        let (index, generation) = parts(id);
        // Whoever clones holds a handle, so the span cannot close meanwhile; an id kept from
        // a closed span must not count a reference to the span in its slot now.
        if let Some(slot) = self.slab.slot(index).filter(|s| s.generation.load(Ordering::Acquire) == generation) {
            slot.refs.fetch_add(1, Ordering::Relaxed);
        }
        id.clone()
    }

    fn try_close(&self, id: Id) -> bool {
        let (index, generation) = parts(&id);
        let Some(slot) = self.slab.slot(index) else { return false };
        // Whoever closes holds a handle, so the span cannot close meanwhile: a handle that is
        // not the last one is let go without the lock.
        if slot.generation.load(Ordering::Acquire) != generation || slot.refs.fetch_sub(1, Ordering::AcqRel) != 1 {
            return false;
        }
        let entry = {
            let mut entry = slot.entry.lock();
            if entry.is_none() || slot.generation.load(Ordering::Relaxed) != generation {
                return false;
            }
            slot.generation.fetch_add(1, Ordering::AcqRel);
            entry.take()
        };
        self.slab.release(index);
        let Some(entry) = entry else { return true };
        if let Some(parent) = entry.parent {
            self.try_close(parent);
        }
        if let Some(state) = entry.state.filter(|_| entry.exported) {
            end_span(&self.queue, state);
        }
        true
    }

    fn current_span(&self) -> Current {
        match self.current(false) {
            Some((id, meta)) => Current::new(id, meta),
            None => Current::none(),
        }
    }

    // SAFETY: the pointers returned point to `self` or to its field of the asked-for type,
    // valid as long as `self` is.
    unsafe fn downcast_raw(&self, id: std::any::TypeId) -> Option<*const ()> {
        if id == std::any::TypeId::of::<Self>() {
            Some(self as *const Self as *const ())
        } else if id == std::any::TypeId::of::<WithSpanState>() {
            Some(&self.access as *const WithSpanState as *const ())
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_sdk::trace::InMemorySpanExporter;

    fn pipeline() -> (Dispatch, crate::TracingGuard, InMemorySpanExporter) {
        let exporter = InMemorySpanExporter::default();
        let (dispatch, guard) = crate::builder("subscriber")
            .exporter(exporter.clone())
            .sampler(crate::SamplerConfig::AlwaysOn)
            .max_queue_size(1 << 16)
            .log_filter("off")
            .into_dispatch()
            .expect("pipeline builds");
        (dispatch, guard, exporter)
    }

    /// A span's slot is one cache line, its state and record kept behind pointers.
    #[test]
    fn a_slot_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Slot>(), 64);
        assert_eq!(std::mem::align_of::<Slot>(), 64);
    }

    #[test]
    fn slot_indices_map_onto_growing_chunks() {
        let slab = Slab::new();
        for _ in 0..FIRST_CHUNK * 7 {
            let index = slab.allocate().expect("room");
            assert!(slab.slot(index).is_some(), "slot {index} allocated");
        }
        // Chunks 0, 1 and 2 hold 256, 512 and 1024 slots: 1792 in all, then chunk 3.
        assert!(slab.chunks[2].get().is_some() && slab.chunks[3].get().is_none());
        assert!(slab.slot(FIRST_CHUNK * 7 - 1).is_some());
        assert!(slab.slot(FIRST_CHUNK * 15).is_none(), "beyond the allocated chunks");
    }

    /// A span closes when its last handle is dropped; its slot is reused, and an id kept from
    /// the closed span reaches nothing, not the span that took the slot over.
    #[test]
    fn a_closed_spans_id_never_reaches_the_span_that_reuses_its_slot() {
        let (dispatch, guard, exporter) = pipeline();
        tracing::dispatcher::with_default(&dispatch, || {
            let first = tracing::info_span!("first", n = tracing::field::Empty);
            let handle = first.clone();
            let stale = first.id().expect("enabled");
            drop(first);
            handle.record("n", 1_i64);
            drop(handle);
            let second = tracing::info_span!("second", n = tracing::field::Empty);
            let (stale_index, _) = parts(&stale);
            assert_eq!(parts(&second.id().expect("enabled")).0, stale_index, "the freed slot is reused");
            dispatch
                .record(&stale, &tracing::span::Record::new(&second.metadata().expect("meta").fields().value_set(&[])));
            dispatch.enter(&stale);
            dispatch.exit(&stale);
            assert!(!dispatch.try_close(stale.clone()), "a stale id closes nothing");
            second.record("n", 2_i64);
        });
        guard.flush().expect("flush");
        let spans = exporter.get_finished_spans().expect("spans");
        let n = |name: &str| {
            let span = spans.iter().find(|s| s.name == name).expect(name);
            span.attributes.iter().find(|kv| kv.key.as_str() == "n").map(|kv| kv.value.clone())
        };
        assert_eq!(spans.len(), 2);
        assert_eq!(n("first"), Some(opentelemetry::Value::I64(1)));
        assert_eq!(n("second"), Some(opentelemetry::Value::I64(2)));
    }

    /// Thousands of spans open at once across threads, each closed on another thread than
    /// the one that made it: every one is exported once, with its parent.
    #[test]
    fn spans_opened_on_one_thread_close_on_another() {
        let (dispatch, guard, exporter) = pipeline();
        let (tx, rx) = std::sync::mpsc::channel::<tracing::Span>();
        let closer = std::thread::spawn(move || rx.into_iter().count());
        std::thread::scope(|scope| {
            for t in 0..4 {
                let (dispatch, tx) = (dispatch.clone(), tx.clone());
                scope.spawn(move || {
                    tracing::dispatcher::with_default(&dispatch, || {
                        let root = tracing::info_span!("root", t);
                        let mut open = Vec::new();
                        for i in 0..1_000_i64 {
                            open.push(root.in_scope(|| tracing::info_span!("child", i)));
                        }
                        for span in open {
                            tx.send(span).expect("closer running");
                        }
                    });
                });
            }
        });
        drop(tx);
        assert_eq!(closer.join().expect("closer"), 4_000);
        guard.flush().expect("flush");
        let spans = exporter.get_finished_spans().expect("spans");
        assert_eq!(spans.len(), 4_004);
        let roots: std::collections::HashMap<_, _> =
            spans.iter().filter(|s| s.name == "root").map(|s| (s.span_context.span_id(), s)).collect();
        for child in spans.iter().filter(|s| s.name == "child") {
            let root = roots.get(&child.parent_span_id).expect("every child's parent is a root");
            assert_eq!(child.span_context.trace_id(), root.span_context.trace_id());
        }
    }

    /// A span kept for log lines only (the span filter leaves it out, the log filter wants
    /// it) is not exported, is nobody's parent and gets no span events: they go to the
    /// nearest exported span around it, as with the layer's per-layer filter.
    #[test]
    fn a_span_kept_for_logs_only_is_transparent_to_the_exported_ones() {
        for activation in [true, false] {
            let exporter = InMemorySpanExporter::default();
            let (dispatch, guard) = crate::builder("subscriber")
                .exporter(exporter.clone())
                .sampler(crate::SamplerConfig::AlwaysOn)
                .otel_context_activation(activation)
                .span_filter("info,noisy=off")
                .log_filter("off,noisy=info")
                .into_dispatch()
                .expect("pipeline builds");
            tracing::dispatcher::with_default(&dispatch, || {
                tracing::info_span!(target: "app", "outer").in_scope(|| {
                    let hidden = tracing::info_span!(target: "noisy", "hidden");
                    hidden.in_scope(|| {
                        tracing::info!(target: "app", "in hidden");
                        tracing::info_span!(target: "app", "inner").in_scope(|| {});
                    });
                    tracing::info_span!(target: "app", parent: &hidden, "explicit").in_scope(|| {});
                });
            });
            guard.flush().expect("flush");
            let spans = exporter.get_finished_spans().expect("spans");
            let find = |name: &str| spans.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(spans.len(), 3, "activation {activation}: outer, inner, explicit");
            let outer = find("outer");
            assert_eq!(find("inner").parent_span_id, outer.span_context.span_id(), "activation {activation}");
            assert_eq!(outer.events.len(), 1, "the event goes to the nearest exported span");
            assert_eq!(find("explicit").parent_span_id, opentelemetry::trace::SpanId::INVALID, "a root");
        }
    }

    /// Ids this subscriber never made (zero low bits, the unrecorded id, far beyond the
    /// slab) reach no span and cost no panic.
    #[test]
    fn made_up_ids_reach_nothing() {
        let (dispatch, guard, exporter) = pipeline();
        tracing::dispatcher::with_default(&dispatch, || {
            let live = tracing::info_span!("live");
            for raw in [1_u64 << 32, UNRECORDED, 0x0000_0001_7fff_ffff, 3] {
                let id = Id::from_u64(raw);
                dispatch.enter(&id);
                dispatch.exit(&id);
                assert!(!dispatch.try_close(dispatch.clone_span(&id)));
            }
            drop(live);
        });
        guard.flush().expect("flush");
        assert_eq!(exporter.get_finished_spans().expect("spans").len(), 1, "the live span alone");
    }

    #[test]
    fn only_target_and_level_directives_make_the_subscriber() {
        for filter in ["span_filter", "log_filter"] {
            let builder = crate::builder("subscriber").exporter(InMemorySpanExporter::default());
            let directives = "info,[request{id=1}]=debug";
            let builder =
                if filter == "span_filter" { builder.span_filter(directives) } else { builder.log_filter(directives) };
            let error = builder.into_dispatch().expect_err("span directives need the registry");
            assert!(error.to_string().contains(filter), "{error}");
        }
    }
}
