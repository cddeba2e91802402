//! The bounded span queue and the export worker that drains it.
//!
//! [`SpanQueue`] is the only way spans leave the process. Application threads only ever push
//! a finished span's record into it, under a lock held for the push alone: when it is full
//! the span is dropped and counted, so a slow or dead backend costs the service a counter
//! increment, never a wait or unbounded memory. Nobody waits on the queue, so a push wakes no
//! thread: the worker is woken once per two full batches (one, for a queue of fewer than
//! four; and by its timer), not once per span, and takes the whole queue at once, handing
//! back the emptied buffer of its last take.
//!
//! The worker is a dedicated OS thread with its own current-thread tokio runtime, and the
//! exporter (tonic or reqwest) is built inside it. Between exports it waits on a condition
//! variable ([`Inbox`]), not in the runtime: the runtime runs only while it exports. Export,
//! flush and shutdown therefore never need a worker of the application's runtime: shutting
//! down from a `current_thread` runtime, or from a multi-thread runtime with one worker,
//! cannot deadlock (the failure mode of opentelemetry-rust issues #2715 and #2802, where the
//! exporter's tasks live on the application's runtime while its only thread blocks on
//! shutdown). Every wait on the worker is bounded by a timeout.
//!
//! This module must not log from the application's thread inside `on_end`: that runs inside a
//! `tracing` subscriber callback, where events would be discarded or recurse.

// Records (a few hundred bytes each) move between the layer, the queue and the worker by
// pointer, and the worker hands the boxes back for reuse.
#![allow(clippy::vec_box)]

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use opentelemetry::Context;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;

use crate::config::BatchSettings;
use crate::error::{InitError, ShutdownError};
use crate::record::SpanRecord;

thread_local! {
    static ON_EXPORT_WORKER: Cell<bool> = const { Cell::new(false) };
}

/// True on the export worker thread. The OpenTelemetry layer ignores spans there, so the
/// exporter's own transport spans (h2, hyper, tonic) never feed back into the queue.
pub(crate) fn on_export_worker() -> bool {
    ON_EXPORT_WORKER.with(Cell::get)
}

/// Counters of the span pipeline, readable while the service runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExportStats {
    /// Spans handed to the exporter in a batch that it accepted.
    pub exported: u64,
    /// Spans dropped because the queue was full or tracing was shut down.
    pub dropped: u64,
    /// Spans lost because their export failed or timed out.
    pub failed: u64,
    /// Export requests that failed or timed out.
    pub failed_exports: u64,
}

#[derive(Debug, Default)]
pub(crate) struct StatsCounters {
    exported: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    failed_exports: AtomicU64,
}

impl StatsCounters {
    pub(crate) fn snapshot(&self) -> ExportStats {
        ExportStats {
            exported: self.exported.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            failed_exports: self.failed_exports.load(Ordering::Relaxed),
        }
    }
}

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the export worker sends batches of records through: the SDK's OTLP exporter
/// natively, any OpenTelemetry [`SpanExporter`] through [`SdkExporter`].
pub(crate) trait DynSpanExporter: Send + Sync + std::fmt::Debug {
    fn export_boxed<'a>(&'a self, batch: Batch<'a>) -> BoxFuture<'a, OTelSdkResult>;
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult;
    fn set_resource(&mut self, resource: &Resource);
}

/// An OpenTelemetry exporter, given `SpanData` made from the records.
#[derive(Debug)]
pub(crate) struct SdkExporter<E>(pub(crate) E);

impl<E: SpanExporter> DynSpanExporter for SdkExporter<E> {
    fn export_boxed<'a>(&'a self, batch: Batch<'a>) -> BoxFuture<'a, OTelSdkResult> {
        // The layer encodes spans itself only for the SDK's own exporter.
        debug_assert!(batch.encoded.is_empty());
        let data = batch.records.iter().map(|record| SpanRecord::clone(record).into_span_data()).collect();
        Box::pin(self.0.export(data))
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        SpanExporter::shutdown_with_timeout(&self.0, timeout)
    }
    fn set_resource(&mut self, resource: &Resource) {
        SpanExporter::set_resource(&mut self.0, resource)
    }
}

/// What one export request carries: spans the layer encoded already, as OTLP
/// `ScopeSpans.spans` entries of the SDK's scope back to back, and span records.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Batch<'a> {
    pub(crate) encoded: &'a [u8],
    pub(crate) encoded_spans: usize,
    pub(crate) records: &'a [Box<SpanRecord>],
}

impl<'a> Batch<'a> {
    pub(crate) fn records(records: &'a [Box<SpanRecord>]) -> Self {
        Self { encoded: &[], encoded_spans: 0, records }
    }

    pub(crate) fn len(&self) -> usize {
        self.encoded_spans + self.records.len()
    }
}

/// Spans the layer encoded, back to back, with where each ends.
#[derive(Debug, Default)]
struct Encoded {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

/// How many queued spans wake the export worker: two full batches when the queue holds at
/// least four (the defaults, 512 and 2,048), else one. An export's cost is mostly fixed —
/// the worker waking, the HTTP/2 and runtime code it runs coming back into cache — so the
/// second request of a wake costs much less than the first (docs/PERFORMANCE.md, "SDK");
/// half the queue stays free for what ends while the two are sent.
fn wake_threshold(batch: &BatchSettings) -> usize {
    let size = batch.max_export_batch_size.max(1);
    if batch.max_queue_size / size >= 4 {
        2 * size
    } else {
        size
    }
}

/// The encoded spans a queue holds at most, whatever their number.
const MAX_ENCODED_BYTES: usize = 16 << 20;

/// Builds the exporter; runs on the worker thread, inside its runtime.
pub(crate) type MakeExporter = Box<dyn FnOnce() -> Result<Box<dyn DynSpanExporter>, InitError> + Send>;

/// What the export worker waits for between exports: control messages, the queue's signal
/// that it reached its wake threshold, and the worker's timer.
///
/// The worker waits here, on a condition variable, rather than in its tokio runtime: a timer
/// a second away sits high in tokio's timer wheel and wakes the thread once more on its way
/// down, and each wake of an idle thread costs tens of microseconds of CPU, more than an
/// export's own work (docs/PERFORMANCE.md, "SDK"). Waiting here, the worker wakes once per
/// export cycle, and connection traffic that arrives meanwhile waits in the socket for the
/// next cycle instead of waking it.
#[derive(Debug, Default)]
struct Inbox {
    state: Mutex<InboxState>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct InboxState {
    controls: VecDeque<Control>,
    batch_ready: bool,
    /// Live [`ControlSender`]s; at zero the worker exports what is left and stops.
    senders: usize,
    /// Set when the worker stops: later messages are refused.
    closed: bool,
}

/// Why the worker woke.
enum Wake {
    Control(Control),
    BatchReady,
    Timer,
    /// Every sender is gone without a shutdown.
    Disconnected,
}

impl Inbox {
    fn lock(&self) -> MutexGuard<'_, InboxState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The queue reached its wake threshold.
    fn batch_ready(&self) {
        self.lock().batch_ready = true;
        self.wake.notify_one();
    }

    /// Waits for a message, the batch signal or `deadline`, in that order of priority.
    fn wait(&self, deadline: Instant) -> Wake {
        let mut state = self.lock();
        loop {
            if let Some(control) = state.controls.pop_front() {
                return Wake::Control(control);
            }
            if state.senders == 0 {
                return Wake::Disconnected;
            }
            if std::mem::take(&mut state.batch_ready) {
                return Wake::BatchReady;
            }
            let now = Instant::now();
            if now >= deadline {
                return Wake::Timer;
            }
            state = self.wake.wait_timeout(state, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// The worker stops: messages queued and sent later are dropped, which their callers
    /// see as a closed reply channel.
    fn close(&self) {
        let controls = {
            let mut state = self.lock();
            state.closed = true;
            std::mem::take(&mut state.controls)
        };
        drop(controls);
    }
}

/// Sends control messages to the export worker; the worker stops once every sender is gone.
#[derive(Debug)]
struct ControlSender(Arc<Inbox>);

impl ControlSender {
    fn new(inbox: Arc<Inbox>) -> Self {
        inbox.lock().senders += 1;
        Self(inbox)
    }

    fn send(&self, control: Control) -> Result<(), Control> {
        let mut state = self.0.lock();
        if state.closed {
            return Err(control);
        }
        state.controls.push_back(control);
        drop(state);
        self.0.wake.notify_one();
        Ok(())
    }

    fn is_closed(&self) -> bool {
        self.0.lock().closed
    }
}

impl Clone for ControlSender {
    fn clone(&self) -> Self {
        Self::new(Arc::clone(&self.0))
    }
}

impl Drop for ControlSender {
    fn drop(&mut self) {
        let last = {
            let mut state = self.0.lock();
            state.senders -= 1;
            state.senders == 0
        };
        if last {
            self.0.wake.notify_one();
        }
    }
}

/// Closes the inbox when the worker thread ends, however it ends.
struct CloseOnExit(Arc<Inbox>);

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        self.0.close();
    }
}

enum Control {
    Flush(std::sync::mpsc::Sender<OTelSdkResult>),
    /// A flush for every caller of [`SpanFlusher::flush`] waiting in [`FlushWaiters`].
    FlushWaiters,
    Shutdown(std::sync::mpsc::Sender<OTelSdkResult>),
    SetResource(Resource),
}

/// The bounded queue of finished spans between the service's threads and the export worker.
#[derive(Debug)]
pub(crate) struct SpanQueue {
    spans: parking_lot::Mutex<Vec<Box<SpanRecord>>>,
    /// Spans the layer encoded itself (when the exporter is the SDK's own).
    encoded: parking_lot::Mutex<Encoded>,
    encodes: bool,
    /// Emptied records of exported spans, their buffers kept, for the layer to fill again.
    free: parking_lot::Mutex<Vec<Box<SpanRecord>>>,
    /// Spans in the queue, readable without the lock.
    len: AtomicUsize,
    capacity: usize,
    /// The worker is woken when this many spans are queued; see [`wake_threshold`].
    wake_at: usize,
    /// Rung when the queue reaches `wake_at` spans.
    inbox: Arc<Inbox>,
    /// Set when the worker stops: later spans are dropped and counted.
    closed: AtomicBool,
    stats: Arc<StatsCounters>,
}

impl SpanQueue {
    fn new(batch: &BatchSettings, encodes: bool, stats: Arc<StatsCounters>, inbox: Arc<Inbox>) -> Self {
        Self {
            spans: parking_lot::Mutex::new(Vec::with_capacity(batch.max_export_batch_size.min(batch.max_queue_size))),
            encoded: parking_lot::Mutex::new(Encoded::default()),
            encodes,
            free: parking_lot::Mutex::new(Vec::new()),
            len: AtomicUsize::new(0),
            capacity: batch.max_queue_size,
            wake_at: wake_threshold(batch),
            inbox,
            closed: AtomicBool::new(false),
            stats,
        }
    }

    /// Whether the layer should hand over spans encoded ([`SpanQueue::push_encoded`]) rather
    /// than as records: true when the exporter is the SDK's own, which then only joins them.
    pub(crate) fn encodes(&self) -> bool {
        self.encodes
    }

    fn full(&self) -> bool {
        self.len.load(Ordering::Acquire) >= self.capacity || self.closed.load(Ordering::Relaxed)
    }

    /// Counts a span in; called with the lock it was pushed under still held, so the worker's
    /// `take` never subtracts a span before it was counted. `true` when the queue just reached
    /// a full batch.
    fn counted(&self) -> bool {
        self.len.fetch_add(1, Ordering::AcqRel) + 1 == self.wake_at
    }

    fn dropped(&self) {
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Queues a finished span, or drops and counts it when the queue is full or closed.
    pub(crate) fn push(&self, record: Box<SpanRecord>) {
        let mut spans = self.spans.lock();
        if self.full() {
            drop(spans);
            self.dropped();
            return;
        }
        spans.push(record);
        let full_batch = self.counted();
        drop(spans);
        if full_batch {
            self.inbox.batch_ready();
        }
    }

    /// Queues a finished span the layer encoded ([`crate::otlp::encode::encode_span_entry`]).
    pub(crate) fn push_encoded(&self, entry: &[u8]) {
        let mut encoded = self.encoded.lock();
        if self.full() || encoded.bytes.len() + entry.len() > MAX_ENCODED_BYTES {
            drop(encoded);
            self.dropped();
            return;
        }
        encoded.bytes.extend_from_slice(entry);
        let end = encoded.bytes.len();
        encoded.ends.push(end);
        let full_batch = self.counted();
        drop(encoded);
        if full_batch {
            self.inbox.batch_ready();
        }
    }

    /// Moves the queued spans into `records` and `encoded` (which must be empty), leaving
    /// their buffers in the queue. With `whole_batches`, spans beyond a whole number of
    /// batches of that size stay queued: the one or two spans that ended while the worker
    /// woke up would otherwise cost an export request of their own.
    fn take(&self, records: &mut Vec<Box<SpanRecord>>, encoded: &mut Encoded, whole_batches: Option<usize>) {
        let mut spans = self.spans.lock();
        std::mem::swap(&mut *spans, records);
        if let Some(size) = whole_batches {
            let keep = records.len() % size;
            spans.extend(records.drain(records.len() - keep..));
        }
        self.len.fetch_sub(records.len(), Ordering::AcqRel);
        drop(spans);
        let mut queued = self.encoded.lock();
        std::mem::swap(&mut *queued, encoded);
        if let Some(size) = whole_batches {
            let taken = encoded.ends.len() - encoded.ends.len() % size;
            let from = taken.checked_sub(1).map_or(0, |last| encoded.ends[last]);
            queued.bytes.extend_from_slice(&encoded.bytes[from..]);
            queued.ends.extend(encoded.ends[taken..].iter().map(|end| end - from));
            encoded.bytes.truncate(from);
            encoded.ends.truncate(taken);
        }
        self.len.fetch_sub(encoded.ends.len(), Ordering::AcqRel);
    }

    fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Moves up to `count` emptied records into `into`, for a thread's own cache.
    pub(crate) fn refill(&self, into: &mut Vec<Box<SpanRecord>>, count: usize) {
        let mut free = self.free.lock();
        let from = free.len().saturating_sub(count);
        into.extend(free.drain(from..));
    }

    /// Empties the exported records in `spent` and keeps them for reuse, as many as the queue
    /// holds at most; the others, and those that grew unusually large, are freed.
    fn recycle(&self, spent: &mut Vec<Box<SpanRecord>>) {
        let mut kept = Vec::new();
        for mut record in spent.drain(..) {
            if record.clear_for_reuse() {
                kept.push(record);
            }
        }
        let mut free = self.free.lock();
        let room = self.capacity.saturating_sub(free.len());
        kept.truncate(room);
        free.append(&mut kept);
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }
}

/// A span processor with a bounded queue, drained by a dedicated export thread. The SDK's
/// layer pushes its records into [`QueuedSpanProcessor::queue`]; spans of the OpenTelemetry
/// API come through [`SpanProcessor::on_end`].
#[derive(Debug)]
pub(crate) struct QueuedSpanProcessor {
    queue: Arc<SpanQueue>,
    control: ControlSender,
    stats: Arc<StatsCounters>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
    is_shut_down: AtomicBool,
    flush_timeout: Duration,
    waiters: Arc<FlushWaiters>,
}

/// The callers of [`SpanFlusher::flush`] waiting for the next flush. At most one
/// [`Control::FlushWaiters`] is queued at a time, whoever asks and however often: callers that
/// come while one is queued join it, so a stuck worker (a hanging backend) never piles up
/// requests.
#[derive(Debug, Default)]
struct FlushWaiters(Mutex<Vec<std::sync::mpsc::Sender<OTelSdkResult>>>);

impl FlushWaiters {
    /// Adds a waiter; `true` when it is the first, which must queue the request.
    fn join(&self, reply: std::sync::mpsc::Sender<OTelSdkResult>) -> bool {
        let mut waiters = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let first = waiters.is_empty();
        waiters.push(reply);
        first
    }

    fn take(&self) -> Vec<std::sync::mpsc::Sender<OTelSdkResult>> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

/// A handle that exports the spans ended so far and waits, at most a given time, for the
/// result: for a service that must know its spans are out before it acknowledges work (a
/// consumer committing its offsets, a producer handing records to the broker), so that a
/// crash right afterwards loses no span of acknowledged work.
///
/// Obtained from [`crate::TracingGuard::flusher`]; cheap to clone, usable from any thread.
/// When tracing is not exporting, every flush succeeds at once.
#[derive(Debug, Clone, Default)]
pub struct SpanFlusher {
    inner: Option<FlusherInner>,
}

#[derive(Debug, Clone)]
struct FlusherInner {
    control: ControlSender,
    waiters: Arc<FlushWaiters>,
    stats: Arc<StatsCounters>,
}

impl SpanFlusher {
    /// Exports every span ended before the call and waits for the backend's answer, at most
    /// `timeout`. Concurrent calls share one flush. `Ok` when no span queued at the call is
    /// left and no export failed while the call waited; spans whose export failed before the
    /// call are only counted ([`ExportStats::failed`]).
    ///
    /// Never waits longer than `timeout`, whatever the backend does: a backend that is down
    /// answers with [`ShutdownError::Export`] as soon as the export fails, one that hangs
    /// with [`ShutdownError::Timeout`] (the spans then stay queued, and the export worker
    /// goes on as usual). Blocks the calling thread: from async code call it through
    /// `spawn_blocking` (or `block_in_place`).
    pub fn flush(&self, timeout: Duration) -> Result<(), ShutdownError> {
        let Some(inner) = &self.inner else { return Ok(()) };
        if inner.control.is_closed() {
            return Err(ShutdownError::AlreadyShutDown);
        }
        // A span ended before this call may be in an export the worker started earlier (its
        // timer's): that export's failure must fail this flush too.
        let failed_before = inner.stats.failed.load(Ordering::Acquire);
        let (reply_tx, reply_rx) = std::sync::mpsc::channel();
        if inner.waiters.join(reply_tx) && inner.control.send(Control::FlushWaiters).is_err() {
            inner.waiters.take();
            return Err(ShutdownError::AlreadyShutDown);
        }
        match reply_rx.recv_timeout(timeout) {
            Ok(Ok(())) if inner.stats.failed.load(Ordering::Acquire) != failed_before => {
                Err(ShutdownError::Export("an export failed while this flush waited".to_owned()))
            }
            Ok(result) => result.map_err(|e| crate::guard::map_error(e, timeout)),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(ShutdownError::Timeout(timeout)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(ShutdownError::AlreadyShutDown),
        }
    }

    /// Whether flushing exports anything (`false` when tracing is not exporting).
    pub fn is_exporting(&self) -> bool {
        self.inner.is_some()
    }
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Control::Flush(_) => "flush",
            Control::FlushWaiters => "flush_waiters",
            Control::Shutdown(_) => "shutdown",
            Control::SetResource(_) => "set_resource",
        })
    }
}

impl QueuedSpanProcessor {
    /// Starts the worker thread, builds the exporter on it and returns once it is ready.
    pub(crate) fn start(
        make_exporter: MakeExporter,
        resource: Resource,
        batch: BatchSettings,
        drop_log_interval: Duration,
        stats: Arc<StatsCounters>,
        encode_in_layer: bool,
    ) -> Result<Self, InitError> {
        let inbox = Arc::new(Inbox::default());
        let queue = Arc::new(SpanQueue::new(&batch, encode_in_layer, Arc::clone(&stats), Arc::clone(&inbox)));
        let worker_queue = Arc::clone(&queue);
        let waiters = Arc::new(FlushWaiters::default());
        let worker_waiters = Arc::clone(&waiters);
        let control_tx = ControlSender::new(Arc::clone(&inbox));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), InitError>>();
        let worker_stats = Arc::clone(&stats);
        let worker = std::thread::Builder::new()
            .name("spindle-sdk-export".to_owned())
            .spawn(move || {
                ON_EXPORT_WORKER.with(|f| f.set(true));
                let _close = CloseOnExit(Arc::clone(&inbox));
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(InitError::Worker(e)));
                        return;
                    }
                };
                // tonic spawns its connection tasks when the exporter is built, so building
                // must happen inside this runtime.
                let exporter = {
                    let _entered = runtime.enter();
                    make_exporter()
                };
                let mut exporter = match exporter {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                exporter.set_resource(&resource);
                let _ = ready_tx.send(Ok(()));
                let worker = ExportWorker {
                    exporter,
                    queue: worker_queue,
                    pending: Vec::new(),
                    pending_encoded: Encoded::default(),
                    waiters: worker_waiters,
                    batch,
                    stats: worker_stats,
                    drop_log_interval,
                    failure_log: RateLimitedLog::new(drop_log_interval),
                    logged_dropped: 0,
                    last_drop_log: None,
                };
                let queue = Arc::clone(&worker.queue);
                worker.run(&runtime, &inbox);
                queue.close();
            })
            .map_err(InitError::Worker)?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = worker.join();
                return Err(e);
            }
            Err(_) => {
                let _ = worker.join();
                return Err(InitError::Worker(std::io::Error::other("the export worker stopped while starting")));
            }
        }
        Ok(Self {
            queue,
            control: control_tx,
            stats,
            worker: Mutex::new(Some(worker)),
            is_shut_down: AtomicBool::new(false),
            flush_timeout: batch.export_timeout.saturating_mul(2),
            waiters,
        })
    }

    /// The queue the SDK's layer pushes finished spans into.
    pub(crate) fn queue(&self) -> Arc<SpanQueue> {
        Arc::clone(&self.queue)
    }

    /// A [`SpanFlusher`] for this processor's worker.
    pub(crate) fn flusher(&self) -> SpanFlusher {
        SpanFlusher {
            inner: Some(FlusherInner {
                control: self.control.clone(),
                waiters: Arc::clone(&self.waiters),
                stats: Arc::clone(&self.stats),
            }),
        }
    }

    fn request(
        &self,
        make: impl FnOnce(std::sync::mpsc::Sender<OTelSdkResult>) -> Control,
        timeout: Duration,
    ) -> OTelSdkResult {
        let (reply_tx, reply_rx) = std::sync::mpsc::channel();
        self.control.send(make(reply_tx)).map_err(|_| OTelSdkError::AlreadyShutdown)?;
        // A blocking wait is safe on any thread, even the only thread of a current-thread
        // runtime: the worker owns its own runtime and never needs the caller's.
        match reply_rx.recv_timeout(timeout) {
            Ok(result) => result,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(OTelSdkError::Timeout(timeout)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(OTelSdkError::AlreadyShutdown),
        }
    }
}

impl SpanProcessor for QueuedSpanProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        self.queue.push(Box::new(SpanRecord::from_span_data(span)));
    }

    fn force_flush(&self) -> OTelSdkResult {
        if self.is_shut_down.load(Ordering::Acquire) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        self.request(Control::Flush, self.flush_timeout)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        if self.is_shut_down.swap(true, Ordering::AcqRel) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        let result = self.request(Control::Shutdown, timeout);
        // Spans ended from now on are dropped and counted, even if the worker did not answer.
        self.queue.close();
        if result.is_ok() {
            // The worker answered and is returning: joining takes microseconds. After a
            // timeout the thread is left to finish on its own rather than waited for.
            if let Ok(mut worker) = self.worker.lock() {
                if let Some(handle) = worker.take() {
                    let _ = handle.join();
                }
            }
        }
        result
    }

    fn set_resource(&mut self, resource: &Resource) {
        let _ = self.control.send(Control::SetResource(resource.clone()));
    }
}

/// `OTelSdkError` is not `Clone`.
fn copy_result(result: &OTelSdkResult) -> OTelSdkResult {
    match result {
        Ok(()) => Ok(()),
        Err(OTelSdkError::AlreadyShutdown) => Err(OTelSdkError::AlreadyShutdown),
        Err(OTelSdkError::Timeout(t)) => Err(OTelSdkError::Timeout(*t)),
        Err(OTelSdkError::InternalFailure(message)) => Err(OTelSdkError::InternalFailure(message.clone())),
    }
}

/// Logs a repeated condition at most once per interval.
#[derive(Debug)]
struct RateLimitedLog {
    interval: Duration,
    last: Option<Instant>,
}

impl RateLimitedLog {
    fn new(interval: Duration) -> Self {
        Self { interval, last: None }
    }

    fn ready(&mut self, now: Instant) -> bool {
        match self.last {
            Some(last) if now.duration_since(last) < self.interval => false,
            _ => {
                self.last = Some(now);
                true
            }
        }
    }
}

struct ExportWorker {
    exporter: Box<dyn DynSpanExporter>,
    queue: Arc<SpanQueue>,
    /// The spans of the last take; its buffer goes back to the queue on the next.
    pending: Vec<Box<SpanRecord>>,
    pending_encoded: Encoded,
    waiters: Arc<FlushWaiters>,
    batch: BatchSettings,
    stats: Arc<StatsCounters>,
    drop_log_interval: Duration,
    failure_log: RateLimitedLog,
    logged_dropped: u64,
    last_drop_log: Option<Instant>,
}

/// How much of the queue one pass of the worker exports.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Drain {
    /// Full batches only; a partial batch waits for the timer.
    FullBatches,
    /// Everything queued, the last batch possibly partial.
    Everything,
}

impl ExportWorker {
    fn run(mut self, runtime: &tokio::runtime::Runtime, inbox: &Inbox) {
        // A delay of zero (`OTEL_BSP_SCHEDULE_DELAY=0`) is taken as a millisecond.
        let delay = self.batch.scheduled_delay.max(Duration::from_millis(1));
        let mut deadline = Instant::now() + delay;
        loop {
            match inbox.wait(deadline) {
                Wake::Control(Control::Flush(reply)) => {
                    let result = runtime.block_on(self.drain(Drain::Everything));
                    let _ = reply.send(result);
                }
                Wake::Control(Control::FlushWaiters) => {
                    // Taken before draining: a caller that joins during the drain queues the
                    // next flush, which exports what it ended meanwhile.
                    let waiters = self.waiters.take();
                    let result = runtime.block_on(self.drain(Drain::Everything));
                    for reply in waiters {
                        let _ = reply.send(copy_result(&result));
                    }
                }
                Wake::Control(Control::SetResource(resource)) => self.exporter.set_resource(&resource),
                Wake::Control(Control::Shutdown(reply)) => {
                    let result = runtime.block_on(self.drain(Drain::Everything));
                    for waiter in self.waiters.take() {
                        let _ = waiter.send(copy_result(&result));
                    }
                    self.log_drops(true);
                    let shutdown = self.exporter.shutdown_with_timeout(self.batch.export_timeout);
                    let _ = reply.send(result.and(shutdown));
                    return;
                }
                Wake::Disconnected => {
                    // The processor is gone without a shutdown: export what is left.
                    let _ = runtime.block_on(self.drain(Drain::Everything));
                    return;
                }
                Wake::Timer => {
                    // An idle service's tick costs the wake alone, not a pass of the runtime.
                    if self.queue.len() > 0 {
                        let _ = runtime.block_on(self.drain(Drain::Everything));
                    }
                    self.log_drops(false);
                    deadline = Instant::now() + delay;
                }
                Wake::BatchReady => {
                    let _ = runtime.block_on(self.drain(Drain::FullBatches));
                    deadline = Instant::now() + delay;
                }
            }
        }
    }

    /// Exports queued spans in batches; the result of the last failed export, if any.
    async fn drain(&mut self, how: Drain) -> OTelSdkResult {
        // The connection's tasks first take in what arrived while the worker waited outside
        // the runtime (a server closing an idle connection), so the export below goes out on
        // a connection known to be open.
        tokio::task::yield_now().await;
        let size = self.batch.max_export_batch_size.max(1);
        let mut result = Ok(());
        loop {
            let queued = self.queue.len();
            if queued == 0 || (how == Drain::FullBatches && queued < size) {
                return result;
            }
            self.pending.clear();
            let mut encoded = std::mem::take(&mut self.pending_encoded);
            encoded.bytes.clear();
            encoded.ends.clear();
            let whole_batches = (how == Drain::FullBatches).then_some(size);
            self.queue.take(&mut self.pending, &mut encoded, whole_batches);
            let pending = std::mem::take(&mut self.pending);
            // Full batches of neither kind (some spans encoded, some records): the timer
            // exports them.
            let nothing_taken = pending.is_empty() && encoded.ends.is_empty();
            let mut start = 0;
            let batches = encoded
                .ends
                .chunks(size)
                .map(|ends| {
                    let end = ends.last().copied().unwrap_or(start);
                    let batch = Batch { encoded: &encoded.bytes[start..end], encoded_spans: ends.len(), records: &[] };
                    start = end;
                    batch
                })
                .chain(pending.chunks(size).map(Batch::records));
            for batch in batches.collect::<Vec<_>>() {
                if let Err(e) = self.export(batch).await {
                    result = Err(e);
                }
                // Drops happen while exports are slow: report them between batches too.
                self.log_drops(false);
            }
            // A burst's buffer is not kept for ever.
            if encoded.bytes.capacity() <= MAX_ENCODED_BYTES / 4 {
                self.pending_encoded = encoded;
            }
            self.pending = pending;
            self.queue.recycle(&mut self.pending);
            if nothing_taken {
                return result;
            }
        }
    }

    async fn export(&mut self, batch: Batch<'_>) -> OTelSdkResult {
        if batch.len() == 0 {
            return Ok(());
        }
        let count = batch.len() as u64;
        let timeout = self.batch.export_timeout;
        let result = match tokio::time::timeout(timeout, self.exporter.export_boxed(batch)).await {
            Ok(result) => result,
            Err(_) => Err(OTelSdkError::Timeout(timeout)),
        };
        match &result {
            Ok(()) => {
                self.stats.exported.fetch_add(count, Ordering::Relaxed);
            }
            Err(error) => {
                self.stats.failed.fetch_add(count, Ordering::Relaxed);
                let failures = self.stats.failed_exports.fetch_add(1, Ordering::Relaxed) + 1;
                if self.failure_log.ready(Instant::now()) {
                    tracing::warn!(
                        %error,
                        spans = count,
                        failed_exports = failures,
                        "span export failed, spans lost; the service is unaffected"
                    );
                }
            }
        }
        result
    }

    /// Reports new drops at most once per interval (or now, when shutting down).
    fn log_drops(&mut self, force: bool) {
        let dropped = self.stats.dropped.load(Ordering::Relaxed);
        if dropped == self.logged_dropped {
            return;
        }
        let now = Instant::now();
        let due = match self.last_drop_log {
            None => true,
            Some(last) => force || now.duration_since(last) >= self.drop_log_interval,
        };
        if due {
            tracing::warn!(
                dropped_since_last_report = dropped - self.logged_dropped,
                dropped_total = dropped,
                "span queue full, spans dropped; the service is unaffected"
            );
            self.logged_dropped = dropped;
            self.last_drop_log = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanEvents, SpanLinks};
    use std::borrow::Cow;
    use std::time::SystemTime;

    fn span(n: u64) -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(u128::from(n) + 1),
                SpanId::from(n + 1),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: Cow::Owned(format!("span-{n}")),
            start_time: SystemTime::now(),
            end_time: SystemTime::now(),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: Default::default(),
        }
    }

    fn settings(queue: usize, batch: usize) -> BatchSettings {
        BatchSettings {
            max_queue_size: queue,
            max_export_batch_size: batch,
            scheduled_delay: Duration::from_secs(3600),
            export_timeout: Duration::from_millis(500),
        }
    }

    fn start(exporter: impl SpanExporter + 'static, batch: BatchSettings) -> (QueuedSpanProcessor, Arc<StatsCounters>) {
        start_with(SdkExporter(exporter), batch, false)
    }

    fn start_with(
        exporter: impl DynSpanExporter + 'static,
        batch: BatchSettings,
        encode_in_layer: bool,
    ) -> (QueuedSpanProcessor, Arc<StatsCounters>) {
        let stats = Arc::new(StatsCounters::default());
        let make: MakeExporter = Box::new(move || Ok(Box::new(exporter) as Box<dyn DynSpanExporter>));
        let p = QueuedSpanProcessor::start(
            make,
            Resource::builder_empty().build(),
            batch,
            Duration::from_secs(10),
            Arc::clone(&stats),
            encode_in_layer,
        )
        .expect("worker starts");
        (p, stats)
    }

    #[test]
    fn flush_exports_every_queued_span_in_batches() {
        let exporter = InMemorySpanExporter::default();
        let (p, stats) = start(exporter.clone(), settings(100, 7));
        for n in 0..50 {
            p.on_end(span(n));
        }
        p.force_flush().expect("flush succeeds");
        let got = exporter.get_finished_spans().expect("spans readable");
        assert_eq!(got.len(), 50);
        assert_eq!(stats.snapshot(), ExportStats { exported: 50, ..ExportStats::default() });
        p.shutdown_with_timeout(Duration::from_secs(5)).expect("shutdown succeeds");
        assert!(p.force_flush().is_err(), "flush after shutdown is refused");
    }

    /// `OTEL_BSP_SCHEDULE_DELAY=0`: the worker exports at once instead of dying on a timer of
    /// no period.
    #[test]
    fn a_zero_schedule_delay_exports_soon() {
        let exporter = InMemorySpanExporter::default();
        let batch = BatchSettings { scheduled_delay: Duration::ZERO, ..settings(100, 50) };
        let (p, stats) = start(exporter.clone(), batch);
        p.on_end(span(1));
        wait_for(&stats, 1);
        p.shutdown_with_timeout(Duration::from_secs(5)).expect("the worker is alive");
    }

    fn wait_for(stats: &StatsCounters, exported: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while stats.snapshot().exported < exported {
            assert!(Instant::now() < deadline, "not exported: {:?}", stats.snapshot());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The timer is an hour away: only the queue reaching its threshold wakes the worker.
    #[test]
    fn a_full_batch_wakes_the_worker_before_its_timer() {
        let (p, stats) = start(InMemorySpanExporter::default(), settings(100, 10));
        for n in 0..25 {
            p.on_end(span(n));
        }
        // Two whole batches of the 25 (the threshold: four batches fit in the queue).
        wait_for(&stats, 20);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(stats.snapshot().exported, 20, "the partial batch waits for the timer or a flush");
        p.shutdown_with_timeout(Duration::from_secs(5)).expect("shutdown succeeds");
        assert_eq!(stats.snapshot().exported, 25, "shutdown exports the rest");
    }

    /// A processor dropped without a shutdown (and with no flusher left) still gets its spans
    /// out: the worker exports what is queued and stops.
    #[test]
    fn a_dropped_processor_exports_what_is_left() {
        let (p, stats) = start(InMemorySpanExporter::default(), settings(100, 10));
        let flusher = p.flusher();
        let queue = p.queue();
        for n in 0..3 {
            p.on_end(span(n));
        }
        drop(p);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(stats.snapshot().exported, 0, "a flusher still holds the worker");
        drop(flusher);
        wait_for(&stats, 3);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !queue.full() {
            assert!(Instant::now() < deadline, "the worker stopped and closed the queue");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// An exporter that never finishes, like a backend that accepts the connection and hangs.
    #[derive(Debug)]
    struct HangingExporter;
    impl SpanExporter for HangingExporter {
        async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
            std::future::pending::<()>().await;
            Ok(())
        }
    }

    #[test]
    fn a_hanging_backend_drops_and_counts_instead_of_blocking() {
        let (p, stats) = start(HangingExporter, settings(16, 4));
        let started = Instant::now();
        for n in 0..10_000 {
            p.on_end(span(n));
        }
        assert!(started.elapsed() < Duration::from_secs(2), "on_end never waits for export");
        let s = stats.snapshot();
        // At most a queue's worth waits, and a queue's worth is in the hanging export.
        assert!(s.dropped >= 10_000 - 2 * 16, "queue is bounded: {s:?}");
        // Shutdown waits at most its timeout even though the exporter hangs.
        let started = Instant::now();
        let _ = p.shutdown_with_timeout(Duration::from_secs(3));
        assert!(started.elapsed() < Duration::from_secs(4));
        let s = stats.snapshot();
        assert!(s.failed_exports >= 1, "timed out exports are counted: {s:?}");
    }

    #[test]
    fn a_flusher_exports_what_was_ended_and_shares_one_flush() {
        let exporter = InMemorySpanExporter::default();
        let (p, _stats) = start(exporter.clone(), settings(1000, 7));
        let flusher = p.flusher();
        for n in 0..50 {
            p.on_end(span(n));
        }
        flusher.flush(Duration::from_secs(5)).expect("flush succeeds");
        assert_eq!(exporter.get_finished_spans().expect("readable").len(), 50);
        // Callers on several threads at once each see their spans exported.
        std::thread::scope(|scope| {
            for t in 0..4u64 {
                let (p, flusher, exporter) = (&p, flusher.clone(), exporter.clone());
                scope.spawn(move || {
                    for n in 0..10 {
                        p.on_end(span(1000 + t * 100 + n));
                    }
                    flusher.flush(Duration::from_secs(5)).expect("flush succeeds");
                    let got = exporter.get_finished_spans().expect("readable");
                    let names: Vec<String> = (0..10).map(|n| format!("span-{}", 1000 + t * 100 + n)).collect();
                    let mine = got.iter().filter(|s| names.iter().any(|n| *n == s.name)).count();
                    assert_eq!(mine, 10, "thread {t}'s spans are exported when its flush returns");
                });
            }
        });
        p.shutdown_with_timeout(Duration::from_secs(5)).expect("shutdown succeeds");
        assert!(matches!(flusher.flush(Duration::from_secs(1)), Err(ShutdownError::AlreadyShutDown)));
    }

    #[test]
    fn a_flusher_waits_no_longer_than_its_timeout_on_a_hanging_backend() {
        // Each export hangs for 10 s, longer than the twenty flushes take.
        let (p, _stats) =
            start(HangingExporter, BatchSettings { export_timeout: Duration::from_secs(10), ..settings(100, 4) });
        let flusher = p.flusher();
        p.on_end(span(1));
        for i in 0..20 {
            let started = Instant::now();
            let result = flusher.flush(Duration::from_millis(100));
            if i == 0 {
                assert!(result.is_err(), "the span is stuck in the hanging export: {result:?}");
            }
            assert!(started.elapsed() < Duration::from_secs(1), "bounded by the timeout: {:?}", started.elapsed());
        }
        // Twenty flushes while the worker hangs wait on one request, not twenty.
        let waiting = p.waiters.0.lock().expect("waiters").len();
        assert!(waiting >= 1, "the callers joined one queued request: {waiting}");
        assert!(!p.waiters.join(std::sync::mpsc::channel().0), "a request is already queued");
        let _ = p.shutdown_with_timeout(Duration::from_secs(3));
    }

    #[test]
    fn a_flusher_of_a_disabled_sdk_succeeds_at_once() {
        let flusher = SpanFlusher::default();
        assert!(!flusher.is_exporting());
        flusher.flush(Duration::ZERO).expect("nothing to export");
    }

    #[test]
    fn unsampled_spans_are_not_queued() {
        let exporter = InMemorySpanExporter::default();
        let (p, _stats) = start(exporter.clone(), settings(10, 10));
        let mut s = span(1);
        s.span_context = SpanContext::new(
            TraceId::from(9u128),
            SpanId::from(9u64),
            TraceFlags::default(),
            false,
            TraceState::default(),
        );
        p.on_end(s);
        p.force_flush().expect("flush");
        assert!(exporter.get_finished_spans().expect("readable").is_empty());
    }

    #[test]
    fn rate_limited_log_fires_once_per_interval() {
        let mut log = RateLimitedLog::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(log.ready(t0));
        assert!(!log.ready(t0 + Duration::from_secs(9)));
        assert!(log.ready(t0 + Duration::from_secs(10)));
    }

    /// Threads pushing while the worker takes: every span is exported or dropped and counted
    /// once, and the count never goes below zero (debug builds check the arithmetic).
    #[test]
    fn concurrent_pushes_and_takes_count_every_span_once() {
        /// Takes encoded batches, as the SDK's OTLP exporter does.
        #[derive(Debug)]
        struct Accepting;
        impl DynSpanExporter for Accepting {
            fn export_boxed<'a>(&'a self, _batch: Batch<'a>) -> BoxFuture<'a, OTelSdkResult> {
                Box::pin(async { Ok(()) })
            }
            fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
                Ok(())
            }
            fn set_resource(&mut self, _resource: &Resource) {}
        }
        let batch = BatchSettings { scheduled_delay: Duration::from_millis(5), ..settings(64, 7) };
        let (p, stats) = start_with(Accepting, batch, true);
        let queue = p.queue();
        let (threads, per_thread) = (4, 100_000_u64);
        std::thread::scope(|scope| {
            for _ in 0..threads {
                let queue = Arc::clone(&queue);
                scope.spawn(move || {
                    for _ in 0..per_thread {
                        queue.push_encoded(&[0x12, 0x00]);
                    }
                });
            }
        });
        p.force_flush().expect("flush");
        let s = stats.snapshot();
        assert_eq!(s.exported + s.dropped + s.failed, threads * per_thread, "{s:?}");
        assert_eq!(queue.len(), 0);
    }

    #[test]
    fn the_worker_wakes_at_two_batches_when_the_queue_holds_four() {
        assert_eq!(wake_threshold(&settings(2048, 512)), 1024, "the defaults");
        assert_eq!(wake_threshold(&settings(2047, 512)), 512);
        assert_eq!(wake_threshold(&settings(100, 100)), 100);
        assert_eq!(wake_threshold(&settings(100, 0)), 2, "a zero batch size is refused before; no panic");
    }

    /// Full batches wake the worker; the spans that end while it wakes stay queued for the
    /// next batch instead of going out as a request of their own.
    #[test]
    fn a_full_batch_leaves_what_ended_after_it_queued() {
        #[derive(Debug, Default, Clone)]
        struct Recording(Arc<Mutex<Vec<Vec<u8>>>>);
        impl DynSpanExporter for Recording {
            fn export_boxed<'a>(&'a self, batch: Batch<'a>) -> BoxFuture<'a, OTelSdkResult> {
                assert_eq!(batch.encoded.len(), batch.encoded_spans * 3, "whole three-byte entries");
                self.0.lock().expect("lock").push(batch.encoded.to_vec());
                Box::pin(async { Ok(()) })
            }
            fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
                Ok(())
            }
            fn set_resource(&mut self, _resource: &Resource) {}
        }
        let exporter = Recording::default();
        let (p, stats) = start_with(exporter.clone(), settings(100, 10), true);
        let queue = p.queue();
        let wait_for = |exported: u64| {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while stats.snapshot().exported < exported {
                assert!(std::time::Instant::now() < deadline, "{:?}", stats.snapshot());
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        // A queue of ten batches: the worker wakes at two.
        for n in 0..13_u8 {
            queue.push_encoded(&[0x12, 0x01, n]);
        }
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(stats.snapshot().exported, 0, "one batch does not wake the worker");
        for n in 13..25_u8 {
            queue.push_encoded(&[0x12, 0x01, n]);
        }
        wait_for(20);
        assert_eq!(queue.len(), 5, "what does not fill a batch waits");
        p.force_flush().expect("flush");
        let batches = exporter.0.lock().expect("lock").clone();
        let sizes: Vec<usize> = batches.iter().map(|b| b.len() / 3).collect();
        assert_eq!(sizes, [10, 10, 5]);
        let mut seen: Vec<u8> = batches.concat().chunks(3).map(|entry| entry[2]).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..25).collect::<Vec<u8>>(), "every span once, its bytes intact");
    }

    #[test]
    fn exported_records_come_back_for_reuse() {
        let (p, _stats) = start(InMemorySpanExporter::default(), settings(100, 10));
        let queue = p.queue();
        for _ in 0..25 {
            queue.push(Box::new(SpanRecord::new("x", 2, 0)));
        }
        p.force_flush().expect("flush");
        let mut spare = Vec::new();
        queue.refill(&mut spare, 100);
        assert_eq!(spare.len(), 25);
    }
}
