//! The `tracing` layer that turns spans into OpenTelemetry spans: the SDK's own, in place of
//! `tracing-opentelemetry` (docs/adr/022-sdk-span-layer.md).
//!
//! Each span's state is one [`SpanState`] in the registry's extensions: the record being
//! built ([`SpanRecord`]), the parent's context when it carries baggage, and the span as an
//! OpenTelemetry [`Context`] once something asks for it. Nothing goes through
//! `opentelemetry_sdk`'s tracer: ids come from a per-thread generator, the sampler is the
//! configured one applied here, and a closed span is encoded into the export queue (or, for
//! an exporter other than the SDK's, its record is moved there).
//!
//! What users of `tracing-opentelemetry` rely on keeps working the same way:
//! - `otel.name`, `otel.kind`, `otel.status_code`, `otel.status_description` fields;
//! - events become span events (`level`, `target`, fields); an `ERROR` event sets status
//!   error; an event whose only field is `error` (what `#[instrument(err)]` emits) becomes an
//!   `exception` event with `exception.message` and sets the status to that message;
//! - `Error` values recorded as fields add `exception.message` and `exception.stacktrace`;
//! - `follows_from` becomes a link;
//! - the OpenTelemetry API's spans started inside a `tracing` span become its children (through
//!   the SDK's global tracer, module `bridge`, or with context activation because each entered
//!   span is then the current OpenTelemetry context), and a `tracing` span started inside an
//!   OpenTelemetry API span made current becomes that span's child;
//! - [`crate::SpanExt`] reads and changes a span's context, attributes, events and status.

// Records (a few hundred bytes each) move between the layer, the queue and the worker by
// pointer, and the worker hands the boxes back for reuse.
#![allow(clippy::vec_box)]

use std::any::TypeId;
use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::hash::{BuildHasher, Hash as _, Hasher};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use opentelemetry::baggage::BaggageExt;
use opentelemetry::trace::{
    Event as OtelEvent, Link, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Array, Context, ContextGuard, Key, KeyValue, StringValue, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::layer::Context as LayerContext;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::config::{ParentBasedRoot, SamplerConfig};
use crate::export::SpanQueue;
use crate::otlp::encode::write_span_entry;
use crate::record::{unix_nanos_now, AttrValue, Scalar, SpanRecord, Str};

/// What the layer keeps per span, in the registry's extensions.
pub(crate) struct SpanState {
    pub(crate) record: Box<SpanRecord>,
    /// The span of the current OpenTelemetry context when this span was created (without
    /// activation): one attached since is nearer than this span to what starts inside it.
    otel_outer: SpanId,
    /// What most spans lack, apart: a span's state stays small enough for its slot in the
    /// SDK's subscriber to take one cache line.
    rare: Option<Box<RareState>>,
}

#[derive(Default)]
struct RareState {
    /// The parent's context when it carries more than a span (baggage): handed on to the
    /// children and to [`crate::SpanExt::context`].
    extra: Option<Context>,
    /// This span as an OpenTelemetry context, built when first needed.
    cx: Option<Context>,
    timings: Option<Timings>,
}

impl SpanState {
    /// The parent's context when it carries more than a span (baggage).
    pub(crate) fn extra(&self) -> Option<&Context> {
        self.rare.as_ref()?.extra.as_ref()
    }

    fn timings(&mut self) -> Option<&mut Timings> {
        self.rare.as_mut()?.timings.as_mut()
    }

    /// This span as an OpenTelemetry context (its baggage included).
    pub(crate) fn context(&mut self) -> Context {
        if let Some(cx) = self.rare.as_ref().and_then(|rare| rare.cx.as_ref()) {
            return cx.clone();
        }
        let sc = self.record.span_context();
        let cx = match self.extra() {
            Some(extra) => extra.with_remote_span_context(sc),
            None => Context::new().with_remote_span_context(sc),
        };
        self.rare.get_or_insert_with(Box::default).cx = Some(cx.clone());
        cx
    }

    /// Makes `parent`, a context from another process (or from the OpenTelemetry API), this
    /// span's parent, and decides sampling again with it.
    pub(crate) fn set_parent(&mut self, cx: &Context, sampler: &SamplerConfig) {
        let span = cx.span();
        let sc = span.span_context();
        let parent = sc.is_valid().then(|| Parent::of(sc));
        let trace_id = match &parent {
            Some(p) => p.trace_id,
            None => self.record.trace_id,
        };
        self.record.trace_id = trace_id;
        self.record.parent_span_id = parent.as_ref().map_or(SpanId::INVALID, |p| p.span_id);
        self.record.parent_is_remote = parent.as_ref().is_some_and(|p| p.remote);
        self.record.trace_state = parent.as_ref().map_or(TraceState::NONE, |p| p.trace_state.clone());
        self.record.flags = sample(sampler, parent.as_ref(), trace_id);
        let extra = (!cx.baggage().is_empty()).then(|| cx.clone());
        if extra.is_some() || self.rare.is_some() {
            let rare = self.rare.get_or_insert_with(Box::default);
            rare.extra = extra;
            rare.cx = None;
        }
    }
}

/// Busy and idle time of a span (with `span_details`).
struct Timings {
    idle: i64,
    busy: i64,
    last: Instant,
    entered: u32,
}

/// A parent's span context, copied out of its state or of an OpenTelemetry context.
pub(crate) struct Parent {
    trace_id: TraceId,
    span_id: SpanId,
    flags: TraceFlags,
    trace_state: TraceState,
    remote: bool,
}

impl Parent {
    pub(crate) fn of(sc: &SpanContext) -> Self {
        Self {
            trace_id: sc.trace_id(),
            span_id: sc.span_id(),
            flags: sc.trace_flags(),
            trace_state: sc.trace_state().clone(),
            remote: sc.is_remote(),
        }
    }

    pub(crate) fn of_record(record: &SpanRecord) -> Self {
        Self {
            trace_id: record.trace_id,
            span_id: record.span_id,
            flags: record.flags,
            trace_state: record.trace_state.clone(),
            remote: false,
        }
    }
}

/// The sampling decision for a span of trace `trace_id` with `parent`, as the OpenTelemetry
/// specification defines the SDK's samplers (the ratio test is `opentelemetry_sdk`'s, so a
/// trace gets the same decision from this layer and from the OpenTelemetry API's tracer).
fn sample(sampler: &SamplerConfig, parent: Option<&Parent>, trace_id: TraceId) -> TraceFlags {
    let sampled = match sampler {
        SamplerConfig::AlwaysOn => true,
        SamplerConfig::AlwaysOff => false,
        SamplerConfig::Ratio(ratio) => ratio_sampled(*ratio, trace_id),
        SamplerConfig::ParentBased(root) => match parent {
            Some(parent) => parent.flags.is_sampled(),
            None => match root {
                ParentBasedRoot::AlwaysOn => true,
                ParentBasedRoot::AlwaysOff => false,
                ParentBasedRoot::Ratio(ratio) => ratio_sampled(*ratio, trace_id),
            },
        },
    };
    if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    }
}

fn ratio_sampled(ratio: f64, trace_id: TraceId) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    let bound = (ratio.max(0.0) * (1_u64 << 63) as f64) as u64;
    let low = u64::from_be_bytes(trace_id.to_bytes()[8..].try_into().unwrap_or_default());
    (low >> 1) < bound
}

thread_local! {
    /// State of this thread's id generator (wyrand), seeded on first use from the standard
    /// library's per-process random keys and the thread.
    static RNG: Cell<u64> = const { Cell::new(0) };
    /// This thread's buffers for spans, one thread-local so that closing a span reaches them
    /// at once.
    static BUFFERS: RefCell<SpanBuffers> = const {
        RefCell::new(SpanBuffers { spare: Vec::new(), entry: Vec::new(), scratch: Vec::new() })
    };
    /// Guards of the contexts attached on enter, with their span's id.
    static ATTACHED: RefCell<Vec<(u64, ContextGuard)>> = const { RefCell::new(Vec::new()) };
}

#[cold]
#[inline(never)]
fn seed() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(std::process::id().into());
    std::thread::current().id().hash(&mut hasher);
    hasher.write_u128(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    hasher.finish()
}

fn next_u64() -> u64 {
    RNG.with(|state| {
        // Zero: not seeded yet (a state that steps onto zero is seeded again, which is harmless).
        let mut s = state.get();
        if s == 0 {
            s = seed();
        }
        let s = s.wrapping_add(0xa076_1d64_78bd_642f);
        state.set(s);
        let t = u128::from(s) * u128::from(s ^ 0xe703_7ed1_a0b4_28db);
        (t >> 64) as u64 ^ t as u64
    })
}

fn new_span_id() -> SpanId {
    loop {
        let id = next_u64();
        if id != 0 {
            return SpanId::from(id);
        }
    }
}

fn new_trace_id() -> TraceId {
    loop {
        let id = (u128::from(next_u64()) << 64) | u128::from(next_u64());
        if id != 0 {
            return TraceId::from(id);
        }
    }
}

struct SpanBuffers {
    /// Emptied records for this thread's next spans: its own, or taken from the export
    /// worker's, to fill without locking.
    spare: Vec<Box<SpanRecord>>,
    /// A closed span's encoded entry ([`write_span_entry`]), and the encoder's scratch buffer.
    entry: Vec<u8>,
    scratch: Vec<u8>,
}

/// How many emptied records a thread takes at once, and keeps at most.
const SPARE_REFILL: usize = 32;
const SPARE_KEPT: usize = 64;

/// An empty record: one this thread kept from an earlier span, else one the export worker
/// emptied, else a new one.
fn fresh_record(queue: &SpanQueue, name: &'static str) -> Box<SpanRecord> {
    let kept = BUFFERS.try_with(|buffers| buffers.borrow_mut().spare.pop());
    let mut record = match kept {
        Ok(Some(record)) => record,
        _ => refilled_record(queue),
    };
    record.name = Str::Static(name);
    record
}

/// A record when this thread kept none: one the export worker emptied (a few taken at once),
/// else a new one. Out of line: a thread takes this path once every [`SPARE_REFILL`] spans at
/// most.
#[cold]
#[inline(never)]
fn refilled_record(queue: &SpanQueue) -> Box<SpanRecord> {
    let reused = BUFFERS.try_with(|buffers| {
        let spare = &mut buffers.borrow_mut().spare;
        queue.refill(spare, SPARE_REFILL);
        spare.pop()
    });
    match reused {
        Ok(Some(record)) => record,
        _ => Box::new(SpanRecord::new("", 0, 256)),
    }
}

/// A new span's state: ids, sampling decision, start time and fields.
pub(crate) fn start_span(
    queue: &SpanQueue,
    settings: &LayerSettings,
    attrs: &Attributes<'_>,
    parent: Option<Parent>,
    extra: Option<Context>,
    otel_outer: SpanId,
) -> SpanState {
    let meta = attrs.metadata();
    let trace_id = parent.as_ref().map_or_else(new_trace_id, |p| p.trace_id);
    let flags = sample(&settings.sampler, parent.as_ref(), trace_id);
    // A root the sampler dropped may still get a sampled remote parent (`set_parent`, as the
    // HTTP and Kafka helpers do right after creating their spans), so its fields are kept.
    let recording = flags.is_sampled() || parent.is_none() || settings.keep_fields;
    let details = settings.details && recording;
    let mut record = fresh_record(queue, meta.name());
    record.start = unix_nanos_now();
    record.trace_id = trace_id;
    record.span_id = new_span_id();
    record.flags = flags;
    if let Some(parent) = parent {
        record.parent_span_id = parent.span_id;
        record.parent_is_remote = parent.remote;
        record.trace_state = parent.trace_state;
    }
    if recording {
        if details {
            push_details(&mut record, meta);
        }
        attrs.record(&mut SpanFields { record: &mut record });
    }
    let timings = details.then(|| Timings { idle: 0, busy: 0, last: Instant::now(), entered: 0 });
    let rare = (extra.is_some() || timings.is_some()).then(|| Box::new(RareState { extra, cx: None, timings }));
    SpanState { record, otel_outer, rare }
}

/// Fields recorded after the span was created.
pub(crate) fn record_values(state: &mut SpanState, values: &Record<'_>, keep_fields: bool) {
    if keep_fields || state.record.is_sampled() || state.record.parent_span_id == SpanId::INVALID {
        values.record(&mut SpanFields { record: &mut state.record });
    }
}

/// `follows_from`: a link to `linked`.
pub(crate) fn add_follows_from(state: &mut SpanState, linked: SpanContext) {
    if state.record.is_sampled() {
        state.record.push_link(Link::with_context(linked));
    }
}

/// An event inside the span: a span event, and the status it implies.
pub(crate) fn add_event(state: &mut SpanState, event: &Event<'_>, details: bool) {
    if !state.record.is_sampled() {
        return;
    }
    let meta = event.metadata();
    let mut fields = EventFields {
        name: None,
        attributes: vec![
            KeyValue::new("level", meta.level().as_str()),
            KeyValue::new("target", Value::String(StringValue::from(meta.target()))),
        ],
        status: None,
        span_attributes: Vec::new(),
    };
    event.record(&mut fields);
    let record = &mut state.record;
    if *meta.level() == tracing::Level::ERROR && record.status == Status::Unset {
        record.status = Status::error("");
    }
    // `Ok`, once set, is final (the OpenTelemetry API's rule).
    if let Some(status) = fields.status.filter(|_| record.status != Status::Ok) {
        record.status = status;
    }
    for kv in fields.span_attributes {
        record.push_attr(kv.key, AttrValue::Value(kv.value));
    }
    if details {
        if let Some(file) = meta.file() {
            fields.attributes.push(KeyValue::new("code.file.path", file));
        }
        if let Some(module) = meta.module_path() {
            fields.attributes.push(KeyValue::new("code.module.name", module));
        }
        if let Some(line) = meta.line() {
            fields.attributes.push(KeyValue::new("code.line.number", i64::from(line)));
        }
    }
    let name = fields.name.unwrap_or(Cow::Borrowed(meta.name()));
    record.push_event(OtelEvent::new(name, SystemTime::now(), fields.attributes, 0));
}

/// The span `id` is entered on this thread: its busy / idle time, and its context becomes the
/// current OpenTelemetry context with activation, or without it when the span carries
/// baggage (for `Context::current().baggage()`). Whether a context was attached.
pub(crate) fn enter_span(state: &mut SpanState, id: &Id, activation: bool) -> bool {
    if let Some(timings) = state.timings() {
        if timings.entered == 0 {
            let now = Instant::now();
            timings.idle += (now - timings.last).as_nanos() as i64;
            timings.last = now;
        }
        timings.entered += 1;
    }
    let attach = activation || state.extra().is_some();
    if attach {
        let guard = state.context().attach();
        ATTACHED.with(|stack| stack.borrow_mut().push((id.into_u64(), guard)));
    }
    attach
}

/// The span `id` is exited on this thread: the context its enter attached is detached.
pub(crate) fn detach(id: &Id) {
    let raw = id.into_u64();
    // Dropped outside the borrow: dropping a guard touches the context stack only.
    let guard = ATTACHED.with(|stack| {
        let mut stack = stack.borrow_mut();
        let at = stack.iter().rposition(|(entry, _)| *entry == raw)?;
        Some(stack.remove(at))
    });
    drop(guard);
}

/// Busy time of a span exited as often as it was entered.
pub(crate) fn exit_timings(state: &mut SpanState) {
    if let Some(timings) = state.timings() {
        timings.entered = timings.entered.saturating_sub(1);
        if timings.entered == 0 {
            let now = Instant::now();
            timings.busy += (now - timings.last).as_nanos() as i64;
            timings.last = now;
        }
    }
}

/// A closed span: encoded into the export queue (or its record moved there).
pub(crate) fn end_span(queue: &SpanQueue, state: SpanState) {
    let SpanState { mut record, rare, .. } = state;
    if !record.is_sampled() {
        return;
    }
    record.end = unix_nanos_now();
    if let Some(timings) = rare.and_then(|rare| rare.timings) {
        push_timings(&mut record, &timings);
    }
    if !queue.encodes() {
        queue.push(record);
        return;
    }
    // Encoded here, while the record is in this core's cache, and kept by this thread for
    // its next span: the export worker only joins the bytes.
    let mut record = Some(record);
    let _ = BUFFERS.try_with(|buffers| {
        let Some(mut span) = record.take() else { return };
        let buffers = &mut *buffers.borrow_mut();
        let len = write_span_entry(&mut buffers.entry, 0, &mut buffers.scratch, &span);
        queue.push_encoded(&buffers.entry[..len]);
        if buffers.spare.len() < SPARE_KEPT && span.clear_for_reuse() {
            buffers.spare.push(span);
        }
    });
    if let Some(record) = record {
        // A span closed while its thread exits: the worker encodes it.
        queue.push(record);
    }
}

#[cold]
#[inline(never)]
fn push_timings(record: &mut SpanRecord, timings: &Timings) {
    record.push_attr(Key::from_static_str("busy_ns"), AttrValue::Value(Value::I64(timings.busy)));
    record.push_attr(Key::from_static_str("idle_ns"), AttrValue::Value(Value::I64(timings.idle)));
}

/// The layer's settings besides the queue.
#[derive(Debug, Clone)]
pub(crate) struct LayerSettings {
    pub(crate) sampler: SamplerConfig,
    /// Source location, target, thread and busy / idle time on every span.
    pub(crate) details: bool,
    /// Each entered span becomes the current OpenTelemetry context.
    pub(crate) activation: bool,
    /// Fields of spans the sampler dropped are kept too (log lines show them).
    pub(crate) keep_fields: bool,
}

type WithFn = fn(&Dispatch, &Id, &mut dyn FnMut(&mut SpanState));

/// What [`crate::SpanExt`] finds through `Dispatch::downcast_ref`: a way to the state of a
/// span of this layer's subscriber, and the sampler for new parents.
pub(crate) struct WithSpanState {
    with: WithFn,
    pub(crate) sampler: SamplerConfig,
}

impl WithSpanState {
    pub(crate) fn new(with: WithFn, sampler: SamplerConfig) -> Self {
        Self { with, sampler }
    }

    /// Calls `f` with the state of span `id`, if this layer records it.
    pub(crate) fn with(&self, dispatch: &Dispatch, id: &Id, f: &mut dyn FnMut(&mut SpanState)) {
        (self.with)(dispatch, id, f)
    }
}

/// The SDK's `tracing` layer; see the module documentation.
pub(crate) struct SpanLayer<S> {
    queue: Arc<SpanQueue>,
    settings: LayerSettings,
    access: WithSpanState,
    _subscriber: std::marker::PhantomData<fn(S)>,
}

impl<S> SpanLayer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    pub(crate) fn new(queue: Arc<SpanQueue>, settings: LayerSettings) -> Self {
        let access = WithSpanState { with: Self::with_state, sampler: settings.sampler };
        Self { queue, settings, access, _subscriber: std::marker::PhantomData }
    }

    fn with_state(dispatch: &Dispatch, id: &Id, f: &mut dyn FnMut(&mut SpanState)) {
        let Some(subscriber) = dispatch.downcast_ref::<S>() else { return };
        let Some(span) = subscriber.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(state) = extensions.get_mut::<SpanState>() {
            f(state);
        }
    }

    /// The parent of a new span: its explicit parent, else the current span (the current
    /// OpenTelemetry context with activation, which is the current `tracing` span unless the
    /// OpenTelemetry API made one of its own spans current inside it). The second value is
    /// the parent's context when it carries baggage.
    fn parent(
        &self,
        attrs: &Attributes<'_>,
        ctx: &LayerContext<'_, S>,
        otel: SpanId,
    ) -> (Option<Parent>, Option<Context>) {
        if let Some(id) = attrs.parent() {
            // A parent this layer does not record (filtered out) makes the span a root.
            return ctx.span(id).map_or((None, None), |span| from_state(&span.extensions()));
        }
        if !attrs.is_contextual() {
            return (None, None);
        }
        if !self.settings.activation {
            if let Some(span) = ctx.lookup_current() {
                match span.extensions().get::<SpanState>().map(|state| parent_if_nearer(state, otel)) {
                    Some(Some(parent)) => return parent,
                    Some(None) => {}
                    None => return (None, None),
                }
            }
        }
        current_otel_parent()
    }
}

/// The span of the current OpenTelemetry context; the invalid id when it has none.
pub(crate) fn otel_current_span() -> SpanId {
    Context::map_current(|cx| if cx.has_active_span() { cx.span().span_context().span_id() } else { SpanId::INVALID })
}

/// Without activation: whether the current `tracing` span (`state`), rather than `otel`, the
/// span of the current OpenTelemetry context, is the parent of a span starting now. It is,
/// unless the OpenTelemetry API attached a span of its own since `state` was created.
pub(crate) fn tracing_span_is_nearer(state: &SpanState, otel: SpanId) -> bool {
    otel == SpanId::INVALID || otel == state.record.span_id || otel == state.otel_outer
}

/// `state`'s span as the parent of a span starting now (with its context when it carries
/// baggage), if it is nearer than `otel` ([`tracing_span_is_nearer`]).
pub(crate) fn parent_if_nearer(state: &SpanState, otel: SpanId) -> Option<(Option<Parent>, Option<Context>)> {
    tracing_span_is_nearer(state, otel).then(|| (Some(Parent::of_record(&state.record)), state.extra().cloned()))
}

/// The current OpenTelemetry context as a parent, with the context itself when it carries
/// baggage.
pub(crate) fn current_otel_parent() -> (Option<Parent>, Option<Context>) {
    Context::map_current(|cx| {
        let extra = (!cx.baggage().is_empty()).then(|| cx.clone());
        let span = cx.span();
        let sc = span.span_context();
        (sc.is_valid().then(|| Parent::of(sc)), extra)
    })
}

fn from_state(extensions: &tracing_subscriber::registry::Extensions<'_>) -> (Option<Parent>, Option<Context>) {
    match extensions.get::<SpanState>() {
        Some(state) => (Some(Parent::of_record(&state.record)), state.extra().cloned()),
        None => (None, None),
    }
}

impl<S> Layer<S> for SpanLayer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let otel = if self.settings.activation { SpanId::INVALID } else { otel_current_span() };
        let (parent, extra) = self.parent(attrs, &ctx, otel);
        let state = start_span(&self.queue, &self.settings, attrs, parent, extra, otel);
        span.extensions_mut().insert(state);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(state) = extensions.get_mut::<SpanState>() {
            record_values(state, values, false);
        }
    }

    fn on_follows_from(&self, id: &Id, follows: &Id, ctx: LayerContext<'_, S>) {
        let Some(follows) = ctx.span(follows) else { return };
        let Some(linked) = follows.extensions().get::<SpanState>().map(|s| s.record.span_context()) else {
            return;
        };
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(state) = extensions.get_mut::<SpanState>() {
            add_follows_from(state, linked);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: LayerContext<'_, S>) {
        let span = match event.parent() {
            Some(id) => ctx.span(id),
            None if event.is_contextual() => ctx.lookup_current(),
            None => None,
        };
        let Some(span) = span else { return };
        let mut extensions = span.extensions_mut();
        if let Some(state) = extensions.get_mut::<SpanState>() {
            add_event(state, event, self.settings.details);
        }
    }

    fn on_enter(&self, id: &Id, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(state) = extensions.get_mut::<SpanState>() {
            enter_span(state, id, self.settings.activation);
        }
    }

    fn on_exit(&self, id: &Id, ctx: LayerContext<'_, S>) {
        detach(id);
        if !self.settings.details {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(state) = extensions.get_mut::<SpanState>() {
            exit_timings(state);
        }
    }

    fn on_close(&self, id: Id, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(state) = span.extensions_mut().remove::<SpanState>() else { return };
        end_span(&self.queue, state);
    }

    // SAFETY: the pointers returned point to `self` or to its field of the asked-for type,
    // valid as long as `self` is.
    unsafe fn downcast_raw(&self, id: TypeId) -> Option<*const ()> {
        if id == TypeId::of::<Self>() {
            Some(self as *const Self as *const ())
        } else if id == TypeId::of::<WithSpanState>() {
            Some(&self.access as *const WithSpanState as *const ())
        } else {
            None
        }
    }
}

#[cold]
#[inline(never)]
fn push_details(record: &mut SpanRecord, meta: &tracing::Metadata<'static>) {
    let mut push =
        |key: &'static str, value: Value| record.push_attr(Key::from_static_str(key), AttrValue::Value(value));
    if let Some(file) = meta.file() {
        push("code.file.path", Value::from(file));
    }
    if let Some(module) = meta.module_path() {
        push("code.module.name", Value::from(module));
    }
    if let Some(line) = meta.line() {
        push("code.line.number", Value::I64(i64::from(line)));
    }
    push("target", Value::from(meta.target()));
    let thread = std::thread::current();
    push("thread.id", Value::I64(thread_number(thread.id())));
    if let Some(name) = thread.name() {
        record.push_text_attr(Key::from_static_str("thread.name"), name);
    }
}

/// The number in `ThreadId`'s debug form (`ThreadId(7)`): the standard library gives no other.
fn thread_number(id: std::thread::ThreadId) -> i64 {
    let text = format!("{id:?}");
    text.trim_start_matches("ThreadId(").trim_end_matches(')').parse().unwrap_or(0)
}

fn span_kind(text: &str) -> Option<SpanKind> {
    match text {
        "server" => Some(SpanKind::Server),
        "client" => Some(SpanKind::Client),
        "producer" => Some(SpanKind::Producer),
        "consumer" => Some(SpanKind::Consumer),
        "internal" => Some(SpanKind::Internal),
        _ if text.bytes().any(|b| b.is_ascii_uppercase()) => span_kind_lowercased(text),
        _ => None,
    }
}

/// A kind written with capitals (`SERVER`, `Consumer`): out of line, as rare.
#[cold]
#[inline(never)]
fn span_kind_lowercased(text: &str) -> Option<SpanKind> {
    span_kind(&text.to_ascii_lowercase())
}

/// `otel.status_code`, `otel.status_description` and `otel.status_message`.
#[cold]
#[inline(never)]
fn special_status(record: &mut SpanRecord, name: &str, text: Str) -> bool {
    match name {
        "otel.status_code" => record.status = status(record.str(text)),
        "otel.status_description" | "otel.status_message" => record.status = Status::error(record.str(text).to_owned()),
        _ => return false,
    }
    true
}

fn status(text: &str) -> Status {
    if text.eq_ignore_ascii_case("ok") {
        Status::Ok
    } else if text.eq_ignore_ascii_case("error") {
        Status::error("")
    } else {
        Status::Unset
    }
}

/// An error's sources, outermost first: OpenTelemetry's `exception.stacktrace` stand-in.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> Value {
    let mut chain = Vec::new();
    let mut next = error.source();
    while let Some(source) = next {
        chain.push(StringValue::from(source.to_string()));
        next = source.source();
    }
    Value::Array(Array::String(chain))
}

/// Records a span's fields into its record.
struct SpanFields<'a> {
    record: &'a mut SpanRecord,
}

impl SpanFields<'_> {
    /// An `otel.*` field (`name` starts with `otel.`): the span's name, kind or status
    /// rather than an attribute. Names and kinds are the common case (the HTTP and Kafka
    /// helpers set them on every span), so they are told apart by one byte here and the
    /// status fields are handled out of line.
    fn special(&mut self, name: &str, text: Str) -> bool {
        let record = &mut *self.record;
        match name.as_bytes().get(5) {
            Some(b'n') if name == "otel.name" => record.name = text,
            Some(b'k') if name == "otel.kind" => {
                if let Some(kind) = span_kind(record.str(text)) {
                    record.kind = kind;
                }
            }
            Some(b's') => return special_status(record, name, text),
            _ => return false,
        }
        true
    }

    /// A field attribute whose value was just written to the text buffer (which lets it go).
    fn text_field(&mut self, name: &str, text: Str) {
        match text {
            Str::Text(from, _) => self.record.push_field_text(name, from),
            Str::Static(s) => self.record.push_field_str(name, s),
        }
    }

    /// Out of line: the visitor's int, double and bool methods share this one copy (what a
    /// span costs is mostly the code lines it runs).
    #[inline(never)]
    fn scalar(&mut self, field: &Field, value: Scalar) {
        self.record.push_field_scalar(field.name(), value);
    }

    /// A `u64` beyond `i64`: as text, as OpenTelemetry has no unsigned ints.
    #[cold]
    #[inline(never)]
    fn large_u64(&mut self, field: &Field, value: u64) {
        self.record_debug(field, &value);
    }
}

impl Visit for SpanFields<'_> {
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.scalar(field, Scalar::Bool(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.scalar(field, Scalar::I64(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        match i64::try_from(value) {
            Ok(value) => self.scalar(field, Scalar::I64(value)),
            Err(_) => self.large_u64(field, value),
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.scalar(field, Scalar::F64(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        let name = field.name();
        if !name.starts_with("otel.") {
            return self.record.push_field_str(name, value);
        }
        let text = self.record.push_text(value);
        if !self.special(name, text) {
            self.text_field(name, text);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let name = field.name();
        let text = self.record.push_debug(value);
        if !(name.starts_with("otel.") && self.special(name, text)) {
            self.text_field(name, text);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let message = value.to_string();
        let chain = error_chain(value);
        self.record.push_text_attr(Key::from_static_str("exception.message"), &message);
        self.record.push_attr(Key::from_static_str("exception.stacktrace"), AttrValue::Value(chain.clone()));
        self.record.push_text_attr(Key::from_static_str(field.name()), &message);
        self.record.push_attr(Key::from(format!("{}.chain", field.name())), AttrValue::Value(chain));
    }
}

/// Records an event's fields into a span event.
struct EventFields {
    name: Option<Cow<'static, str>>,
    attributes: Vec<KeyValue>,
    status: Option<Status>,
    span_attributes: Vec<KeyValue>,
}

impl EventFields {
    /// An `error` field of an event without a message: the exception of `#[instrument(err)]`.
    fn error(&mut self, message: String) {
        self.status = Some(Status::error(message.clone()));
        self.name = Some(Cow::Borrowed("exception"));
        self.attributes.push(KeyValue::new("exception.message", message));
    }
}

impl Visit for EventFields {
    fn record_bool(&mut self, field: &Field, value: bool) {
        match field.name() {
            "message" => self.name = Some(value.to_string().into()),
            name => self.attributes.push(KeyValue::new(name, value)),
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        match field.name() {
            "message" => self.name = Some(value.to_string().into()),
            name => self.attributes.push(KeyValue::new(name, value)),
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        match i64::try_from(value) {
            Ok(v) => self.record_i64(field, v),
            Err(_) => self.record_debug(field, &value),
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        match field.name() {
            "message" => self.name = Some(value.to_string().into()),
            name => self.attributes.push(KeyValue::new(name, value)),
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.name = Some(value.to_owned().into()),
            "error" if self.name.is_none() => self.error(value.to_owned()),
            name => self.attributes.push(KeyValue::new(name, value.to_owned())),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.name = Some(format!("{value:?}").into()),
            "error" if self.name.is_none() => self.error(format!("{value:?}")),
            name => self.attributes.push(KeyValue::new(name, format!("{value:?}"))),
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let message = value.to_string();
        let chain = error_chain(value);
        self.attributes.push(KeyValue::new("exception.message", message.clone()));
        self.attributes.push(KeyValue::new("exception.stacktrace", chain.clone()));
        self.span_attributes.push(KeyValue::new("exception.message", message.clone()));
        self.span_attributes.push(KeyValue::new("exception.stacktrace", chain.clone()));
        self.attributes.push(KeyValue::new(field.name(), message));
        self.attributes.push(KeyValue::new(format!("{}.chain", field.name()), chain));
    }
}
