//! The path from a receiver to the store: count, bound, append off the reactor, derive
//! span metrics.
//!
//! Receivers decode requests into [`Decoded`] batches and hand them to [`Ingest::accept`].
//! A semaphore bounds the spans accepted but not yet stored; when it is exhausted the
//! batch is refused at once with [`IngestError::Overloaded`], which each receiver turns
//! into its protocol's backpressure answer, so memory never grows without bound.
//!
//! Architecture Invariant: `accept` returns `Ok` only after the store made the batch
//! durable, so a receiver acknowledges nothing that a crash could lose.

use std::sync::Arc;

use spindle_codec::Decoded;
use spindle_store::TraceStore;
use tokio::sync::Semaphore;

use crate::telemetry::{DropLabels, DropReason, ProtocolLabels, Telemetry};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("ingest queue is full, retry later")]
    Overloaded,
    #[error("store failed: {0}")]
    Store(String),
}

pub struct Ingest {
    store: Arc<dyn TraceStore>,
    queue: Arc<Semaphore>,
    queue_capacity: usize,
    telemetry: Arc<Telemetry>,
}

impl Ingest {
    pub fn new(store: Arc<dyn TraceStore>, queue_spans: usize, telemetry: Arc<Telemetry>) -> Self {
        let queue_capacity = queue_spans.min(Semaphore::MAX_PERMITS);
        Ingest { store, queue: Arc::new(Semaphore::new(queue_capacity)), queue_capacity, telemetry }
    }

    fn protocol(protocol: &str) -> ProtocolLabels {
        ProtocolLabels { protocol: protocol.to_string() }
    }

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

    /// Stores the valid spans of a batch; returns once they are durable.
    pub async fn accept(&self, protocol: &'static str, decoded: Decoded) -> Result<(), IngestError> {
        let n = decoded.spans.len() as u64;
        self.telemetry.server.spans_received.get_or_create(&Self::protocol(protocol)).inc_by(n + decoded.rejected);
        self.dropped(protocol, DropReason::invalid, decoded.rejected);
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
        let store = Arc::clone(&self.store);
        let telemetry = Arc::clone(&self.telemetry);
        let spans = decoded.spans;
        let result = tokio::task::spawn_blocking(move || {
            let prepared = Telemetry::prepare(&spans);
            let result = store.append(spans);
            drop(permit);
            if result.is_ok() {
                telemetry.record(prepared);
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
