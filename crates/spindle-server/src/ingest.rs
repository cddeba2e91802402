//! The path from a receiver to the store: count, bound, append off the reactor, derive
//! span metrics.
//!
//! Receivers decode requests into [`Decoded`] batches and hand them to [`Ingest::accept`].
//! A semaphore bounds the spans accepted but not yet stored; when it is exhausted the
//! batch is refused at once with [`IngestError::Overloaded`], which each receiver turns
//! into its protocol's backpressure answer, so memory never grows without bound.
//!
//! Architecture Invariant: `accept` returns `Ok` only after the store made the batch
//! durable, so a receiver acknowledges nothing that a crash could lose. A collector
//! (`--target collector`) produces the batch to Kafka instead, and `accept` returns `Ok`
//! only once every in-sync replica has it (`crate::kafka`).
//!
//! The queue's permit is taken after decoding, when the span count is known: counting the
//! spans of a request without decoding it would cost most of a decode. What a request holds
//! while it decodes is bounded before that, by the byte budget its receiver admitted it
//! against (`receivers::admission`): decoded spans take a small multiple of their wire bytes,
//! and the reservation is held until `accept` returns.
//!
//! Receivers decode on [`decode_threads`] threads of their own ([`Ingest::decode`]) and
//! appends run on [`APPEND_THREADS`] threads of their own; the rest wait their turn (holding
//! what admission and the queue bound). On tokio's blocking pool, unbounded, 2× overload ran
//! ~520 threads and RSS reached 2.4 GB in 20 s, still rising; on threads of their own, 77
//! threads and a plateau of 0.9–1.2 GB (docs/RELIABILITY.md). The allocator returns what the
//! store frees of a thread's spans to that thread's own pages, reused only when that thread
//! allocates again, so allocations spread over hundreds of pool threads left each with pages
//! of its own.
//!
//! Here too, for every protocol alike, the per-request and per-span limits: a request with
//! more than `max_spans_per_request` spans is refused whole; attributes beyond
//! `max_attributes_per_span` are dropped and counted in the owner's
//! `dropped_attributes_count`; values longer than `max_attribute_value_bytes` are cut and
//! their span (or event, link, resource) gets [`TRUNCATED_ATTRIBUTES`].

use std::sync::{Arc, Mutex};

use spindle_codec::Decoded;
use spindle_model::{AttributeValue, KeyValue, Resource, Span};
use tokio::sync::Semaphore;

use crate::kafka::KafkaSink;
use crate::limits::{Limit, Limits};
use crate::telemetry::{DropLabels, DropReason, ProtocolLabels, Telemetry};
use crate::tenancy::{Access, Caller, TenantError, Tenants};

/// The attribute that marks a span, event, link or resource whose attribute values were
/// cut to `max_attribute_value_bytes`: how many were. OpenTelemetry's SDKs cut such values
/// silently (attribute limits); a backend that cuts what it received says so instead.
pub const TRUNCATED_ATTRIBUTES: &str = "spindle.truncated_attributes";

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("ingest queue is full, retry later")]
    Overloaded,
    #[error("request has {spans} spans, more than the limit of {limit} (--max-spans-per-request)")]
    TooManySpans { spans: usize, limit: usize },
    #[error("store failed: {0}")]
    Store(String),
    #[error("{0}")]
    Tenant(#[from] TenantError),
}

/// Decodes running at once: CPU work, so two per core (at least 4) keep the cores busy.
pub fn decode_threads() -> usize {
    (2 * std::thread::available_parallelism().map_or(2, |n| n.get())).max(4)
}

/// A decode that panicked (its request is answered 500; the thread goes on).
#[derive(Debug)]
pub struct DecodePanicked;

impl std::fmt::Display for DecodePanicked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the decoder panicked")
    }
}

type DecodeJob = Box<dyn FnOnce() + Send>;

/// Threads of their own rather than tokio's blocking pool: spans (and the head's entries) are
/// allocated on the thread that decodes (appends) them and freed by the store's threads, and the allocator reuses such memory
/// only on the thread that allocated it; spread over the pool's hundreds of threads, each
/// kept pages of its own (see the module comment).
fn start_threads(name: &str, threads: usize) -> std::sync::mpsc::Sender<DecodeJob> {
    let (tx, rx) = std::sync::mpsc::channel::<DecodeJob>();
    let rx = Arc::new(Mutex::new(rx));
    for n in 0..threads {
        let rx = Arc::clone(&rx);
        let spawned = std::thread::Builder::new().name(format!("{name}-{n}")).spawn(move || loop {
            let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
            match job {
                Ok(job) => job(),
                // The `Ingest` is gone.
                Err(_) => return,
            }
            crate::memory::collect_freed_memory();
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, thread = name, "could not start an ingest thread");
        }
    }
    tx
}

/// Store appends running at once. An append waits for its log group's sync and, when the
/// store is behind, for memory; the log commits concurrent appends together, and 16 clients
/// flat out reach full throughput with up to 16 (docs/PERFORMANCE.md), so 64 leave room.
pub const APPEND_THREADS: usize = 64;

pub struct Ingest {
    tenants: Arc<Tenants>,
    queue: Arc<Semaphore>,
    decoders: Arc<Semaphore>,
    decode_jobs: Mutex<std::sync::mpsc::Sender<DecodeJob>>,
    appenders: Arc<Semaphore>,
    append_jobs: Mutex<std::sync::mpsc::Sender<DecodeJob>>,
    queue_capacity: usize,
    max_spans_per_request: usize,
    attribute_limits: AttributeLimits,
    telemetry: Arc<Telemetry>,
    /// A collector's: batches go to Kafka, not to a store.
    kafka: Option<Arc<KafkaSink>>,
}

impl Ingest {
    pub fn new(tenants: Arc<Tenants>, queue_spans: usize, limits: &Limits, telemetry: Arc<Telemetry>) -> Self {
        let queue_capacity = queue_spans.min(Semaphore::MAX_PERMITS);
        Ingest {
            tenants,
            queue: Arc::new(Semaphore::new(queue_capacity)),
            decoders: Arc::new(Semaphore::new(decode_threads())),
            decode_jobs: Mutex::new(start_threads("spindle-decode", decode_threads())),
            appenders: Arc::new(Semaphore::new(APPEND_THREADS)),
            append_jobs: Mutex::new(start_threads("spindle-append", APPEND_THREADS)),
            queue_capacity,
            max_spans_per_request: limits.max_spans_per_request,
            attribute_limits: AttributeLimits {
                max_attributes: limits.max_attributes_per_span,
                max_value_bytes: limits.max_attribute_value_bytes,
            },
            telemetry,
            kafka: None,
        }
    }

    /// Makes this a collector's ingest: accepted batches are produced to Kafka.
    pub fn with_kafka(mut self, sink: KafkaSink) -> Self {
        self.kafka = Some(Arc::new(sink));
        self
    }

    fn protocol(protocol: &str) -> ProtocolLabels {
        ProtocolLabels { protocol: protocol.to_string() }
    }

    /// Runs a receiver's decoding (inflating included) on one of the [`decode_threads`]
    /// decode threads, waiting for one to be free.
    pub async fn decode<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> Result<R, DecodePanicked> {
        // The semaphore is never closed. The slot goes with the job: a request given up on
        // (its client gone) leaves its decode running, still counted; so no more jobs wait
        // in the channel than there are threads.
        let slot = Arc::clone(&self.decoders).acquire_owned().await.expect("decode slots");
        run_on(&self.decode_jobs, slot, f).await
    }
}

/// Runs `f` on one of the threads `jobs` feeds, holding `slot` until it is done.
async fn run_on<R: Send + 'static>(
    jobs: &Mutex<std::sync::mpsc::Sender<DecodeJob>>,
    slot: tokio::sync::OwnedSemaphorePermit,
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, DecodePanicked> {
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: DecodeJob = Box::new(move || {
            let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            drop(slot);
            let _ = tx.send(decoded.map_err(|_| DecodePanicked));
        });
        let sent = jobs.lock().unwrap_or_else(|e| e.into_inner()).send(job);
        if sent.is_err() {
            return Err(DecodePanicked);
        }
        rx.await.unwrap_or(Err(DecodePanicked))
    }
}

impl Ingest {
    /// Counts a request that could not be decoded.
    pub fn count_failed_request(&self, protocol: &str) {
        self.telemetry.server.requests_failed.get_or_create(&Self::protocol(protocol)).inc();
    }

    fn dropped(&self, protocol: &str, reason: DropReason, n: u64) {
        if n > 0 {
            self.telemetry
                .server
                .spans_dropped
                .get_or_create(&DropLabels { protocol: protocol.to_string(), reason })
                .inc_by(n);
        }
    }

    /// Stores the valid spans of a batch in the tenant `caller` writes to; returns once they
    /// are durable.
    pub async fn accept(&self, caller: &Caller, protocol: &'static str, decoded: Decoded) -> Result<(), IngestError> {
        let n = decoded.spans.len() as u64;
        self.telemetry.server.spans_received.get_or_create(&Self::protocol(protocol)).inc_by(n + decoded.rejected);
        self.dropped(protocol, DropReason::invalid, decoded.rejected);
        let spans = decoded.spans.len().saturating_add(usize::try_from(decoded.rejected).unwrap_or(usize::MAX));
        if spans > self.max_spans_per_request {
            self.dropped(protocol, DropReason::too_many_spans, n);
            let limit = self.max_spans_per_request;
            self.telemetry.limits.hit(
                Limit::SpansPerRequest,
                1,
                &format_args!("{protocol} request of {spans} spans refused (limit {limit})"),
            );
            return Err(IngestError::TooManySpans { spans, limit });
        }
        let tenant = match self.tenants.resolve(caller, Access::Write).and_then(|t| t.take(n).map(|()| t)) {
            Ok(tenant) => tenant,
            Err(e) => {
                self.dropped(protocol, DropReason::tenant, n);
                if let TenantError::RateLimited { tenant, rate } = &e {
                    self.telemetry.limits.hit(
                        Limit::TenantIngestRate,
                        n,
                        &format_args!("tenant {tenant:?} over its {rate} spans/s: {protocol} batch of {n} refused"),
                    );
                }
                return Err(e.into());
            }
        };
        if decoded.spans.is_empty() {
            return Ok(());
        }
        // A batch larger than the whole queue still gets in when the queue is empty.
        let permits = u32::try_from(decoded.spans.len().min(self.queue_capacity)).unwrap_or(u32::MAX);
        let Ok(permit) = Arc::clone(&self.queue).try_acquire_many_owned(permits) else {
            self.dropped(protocol, DropReason::queue_full, n);
            return Err(IngestError::Overloaded);
        };
        self.telemetry.server.queue_spans.set((self.queue_capacity - self.queue.available_permits()) as i64);
        let telemetry = Arc::clone(&self.telemetry);
        let mut spans = decoded.spans;
        let attribute_limits = self.attribute_limits;
        // The semaphore is never closed; the slot goes with the job, as in `decode`.
        let slot = Arc::clone(&self.appenders).acquire_owned().await.expect("append slots");
        if let Some(kafka) = &self.kafka {
            // A collector derives no span metrics: the ingester that stores the batch does.
            let encoded = run_on(&self.append_jobs, slot, move || {
                limit_attributes(attribute_limits, &telemetry, protocol, &mut spans);
                crate::kafka::encode(&spans)
            })
            .await;
            let result = match encoded {
                Ok(value) => kafka.send(&tenant.name, protocol, n as usize, value).await,
                Err(e) => Err(IngestError::Store(format!("encoding task failed: {e}"))),
            };
            drop(permit);
            self.telemetry.server.queue_spans.set((self.queue_capacity - self.queue.available_permits()) as i64);
            return match result {
                Ok(()) => {
                    self.telemetry.server.spans_accepted.get_or_create(&Self::protocol(protocol)).inc_by(n);
                    Ok(())
                }
                Err(IngestError::Overloaded) => {
                    self.dropped(protocol, DropReason::queue_full, n);
                    Err(IngestError::Overloaded)
                }
                Err(e) => {
                    self.count_failed_request(protocol);
                    Err(e)
                }
            };
        }
        let result = run_on(&self.append_jobs, slot, move || {
            limit_attributes(attribute_limits, &telemetry, protocol, &mut spans);
            let prepared = tenant.metrics.prepare(&spans);
            let result = tenant.store.append(spans);
            drop(permit);
            if result.is_ok() {
                tenant.metrics.record(prepared, &telemetry.limits);
            }
            result
        })
        .await;
        self.telemetry.server.queue_spans.set((self.queue_capacity - self.queue.available_permits()) as i64);
        match result {
            Ok(Ok(())) => {
                self.telemetry.server.spans_accepted.get_or_create(&Self::protocol(protocol)).inc_by(n);
                Ok(())
            }
            Ok(Err(e)) => {
                self.count_failed_request(protocol);
                tracing::error!(error = %e, protocol, "store append failed");
                Err(IngestError::Store(e.to_string()))
            }
            Err(e) => {
                self.count_failed_request(protocol);
                Err(IngestError::Store(format!("append task failed: {e}")))
            }
        }
    }
}

/// Applies the attribute limits to a batch, counting what they changed.
fn limit_attributes(limits: AttributeLimits, telemetry: &Telemetry, protocol: &str, spans: &mut [Span]) {
    let limited = limits.apply(spans);
    if limited.dropped > 0 || limited.cut > 0 {
        let service = spans.first().map_or("", |s| s.service_name());
        let what = format_args!(
            "{protocol} batch (service {service:?}): {} attributes dropped, {} values cut",
            limited.dropped, limited.cut
        );
        telemetry.limits.hit(Limit::AttributesPerSpan, limited.dropped, &what);
        telemetry.limits.hit(Limit::AttributeValueBytes, limited.cut, &what);
    }
}

/// The per-span attribute limits.
#[derive(Clone, Copy, Debug)]
pub struct AttributeLimits {
    pub max_attributes: usize,
    pub max_value_bytes: usize,
}

/// What [`AttributeLimits::apply`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Limited {
    /// Attributes dropped.
    pub dropped: u64,
    /// Values cut.
    pub cut: u64,
}

impl AttributeLimits {
    /// Applies the limits to the spans, their events and links, and their resources. Runs
    /// on every span, so a span within the limits costs one length check per attribute.
    pub fn apply(&self, spans: &mut [Span]) -> Limited {
        let mut limited = Limited::default();
        // Spans of a batch share their resource: each distinct one is checked once, and
        // replaced in every span that shares it when it had to change.
        let mut last: Option<(*const Resource, Option<Arc<Resource>>)> = None;
        for span in spans.iter_mut() {
            let ptr = Arc::as_ptr(&span.resource);
            match &last {
                Some((p, replacement)) if *p == ptr => {
                    if let Some(r) = replacement {
                        span.resource = Arc::clone(r);
                    }
                }
                _ => {
                    let replacement = if self.exceeded(&span.resource.attributes) {
                        let mut resource = Resource::clone(&span.resource);
                        self.limit(&mut resource.attributes, &mut resource.dropped_attributes_count, &mut limited);
                        let resource = Arc::new(resource);
                        span.resource = Arc::clone(&resource);
                        Some(resource)
                    } else {
                        None
                    };
                    last = Some((ptr, replacement));
                }
            }
            if self.exceeded(&span.attributes) {
                self.limit(&mut span.attributes, &mut span.dropped_attributes_count, &mut limited);
            }
            for event in &mut span.events {
                if self.exceeded(&event.attributes) {
                    self.limit(&mut event.attributes, &mut event.dropped_attributes_count, &mut limited);
                }
            }
            for link in &mut span.links {
                if self.exceeded(&link.attributes) {
                    self.limit(&mut link.attributes, &mut link.dropped_attributes_count, &mut limited);
                }
            }
        }
        limited
    }

    fn exceeded(&self, attributes: &[KeyValue]) -> bool {
        attributes.len() > self.max_attributes || attributes.iter().any(|kv| self.too_long(&kv.value))
    }

    fn too_long(&self, value: &AttributeValue) -> bool {
        match value {
            AttributeValue::String(s) => s.len() > self.max_value_bytes,
            AttributeValue::Bytes(b) => b.len() > self.max_value_bytes,
            AttributeValue::Array(items) => items.iter().any(|v| self.too_long(v)),
            AttributeValue::Map(entries) => entries.iter().any(|kv| self.too_long(&kv.value)),
            _ => false,
        }
    }

    fn limit(&self, attributes: &mut Vec<KeyValue>, dropped_count: &mut u32, limited: &mut Limited) {
        if attributes.len() > self.max_attributes {
            let dropped = attributes.len() - self.max_attributes;
            attributes.truncate(self.max_attributes);
            *dropped_count = dropped_count.saturating_add(u32::try_from(dropped).unwrap_or(u32::MAX));
            limited.dropped += dropped as u64;
        }
        let mut cut = 0u64;
        for kv in attributes.iter_mut() {
            cut += self.cut(&mut kv.value);
        }
        if cut > 0 {
            limited.cut += cut;
            // The marker comes on top of the kept attributes: it is the server's, not the client's.
            let marker = AttributeValue::Int(i64::try_from(cut).unwrap_or(i64::MAX));
            match attributes.iter_mut().find(|kv| kv.key == TRUNCATED_ATTRIBUTES) {
                Some(kv) => kv.value = marker,
                None => attributes.push(KeyValue::new(TRUNCATED_ATTRIBUTES, marker)),
            }
        }
    }

    /// Cuts the value's strings and byte strings to the limit; how many were cut.
    fn cut(&self, value: &mut AttributeValue) -> u64 {
        let max = self.max_value_bytes;
        match value {
            AttributeValue::String(s) if s.len() > max => {
                // The longest prefix that ends on a character boundary.
                let end = (0..=max).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
                s.truncate(end);
                1
            }
            AttributeValue::Bytes(b) if b.len() > max => {
                b.truncate(max);
                1
            }
            AttributeValue::Array(items) => items.iter_mut().map(|v| self.cut(v)).sum(),
            AttributeValue::Map(entries) => entries.iter_mut().map(|kv| self.cut(&mut kv.value)).sum(),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span_with(attributes: Vec<KeyValue>, resource: &Arc<Resource>) -> Span {
        Span { attributes, resource: Arc::clone(resource), ..Span::default() }
    }

    #[test]
    fn spans_within_the_limits_are_untouched() {
        let resource =
            Arc::new(Resource { attributes: vec![KeyValue::string("service.name", "a")], ..Default::default() });
        let mut spans = vec![span_with(vec![KeyValue::string("k", "short")], &resource)];
        let before = spans.clone();
        let limits = AttributeLimits { max_attributes: 4, max_value_bytes: 8 };
        assert_eq!(limits.apply(&mut spans), Limited::default());
        assert_eq!(spans, before);
        assert!(Arc::ptr_eq(&spans[0].resource, &resource));
    }

    #[test]
    fn extra_attributes_are_dropped_and_counted_and_long_values_cut_at_a_char_boundary() {
        let resource = Arc::new(Resource {
            attributes: vec![KeyValue::string("service.name", "a"), KeyValue::string("host", "hhhhhhhhhhhh")],
            ..Default::default()
        });
        let attributes = vec![
            // "é" is two bytes: a cut at 5 bytes would split the third one.
            KeyValue::string("text", "éééééé"),
            KeyValue::new("list", AttributeValue::Array(vec![AttributeValue::String("0123456789".into())])),
            KeyValue::new("n", AttributeValue::Int(1)),
            KeyValue::string("extra", "x"),
        ];
        let mut spans = vec![span_with(attributes.clone(), &resource), span_with(attributes, &resource)];
        spans[1].dropped_attributes_count = 2;
        let limits = AttributeLimits { max_attributes: 3, max_value_bytes: 5 };
        let limited = limits.apply(&mut spans);
        // Per span: one attribute dropped, two values cut; the shared resource once: one cut.
        assert_eq!(limited, Limited { dropped: 2, cut: 5 });
        for span in &spans {
            assert_eq!(span.attributes[0].value, AttributeValue::String("éé".into()));
            assert_eq!(span.attributes[1].value, AttributeValue::Array(vec![AttributeValue::String("01234".into())]));
            assert_eq!(span.attributes.len(), 4, "three kept and the marker");
            assert_eq!(span.attributes[3], KeyValue::new(TRUNCATED_ATTRIBUTES, AttributeValue::Int(2)));
            assert_eq!(span.resource.attributes[1].value, AttributeValue::String("hhhhh".into()));
            assert_eq!(span.service_name(), "a");
        }
        assert_eq!(spans[0].dropped_attributes_count, 1);
        assert_eq!(spans[1].dropped_attributes_count, 3);
        assert!(Arc::ptr_eq(&spans[0].resource, &spans[1].resource), "the replaced resource is shared still");
    }
}
