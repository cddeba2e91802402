//! Spans out before work is acknowledged, so that `kill -9` loses no span of acknowledged
//! work: the consumers export a batch's spans before committing its offsets (an uncommitted
//! message is redelivered and traced anew), and ingestion exports a snapshot's spans before
//! handing its record to the producer (once the record is on the broker, the rest of the
//! trace hangs off them).
//!
//! The wait is bounded and never costs much when the backend is down: a flush waits at most
//! its timeout (`PIPELINE_SPAN_FLUSH_TIMEOUT_MS`, default [`DEFAULT_FLUSH_TIMEOUT`]; 0 turns
//! the flushes off), and after one fails (the backend is down or slow) flushes are skipped
//! for [`FLUSH_COOLDOWN`] — those spans would be lost with or without waiting, and the
//! pipeline must not slow down for its tracing backend.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spindle_sdk::SpanFlusher;

use crate::metrics::Metrics;

/// Longest wait for one flush by default (an export to a healthy Spindle takes a few
/// milliseconds).
pub const DEFAULT_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// The variable that sets the timeout, in milliseconds; 0 turns the flushes off.
pub const FLUSH_TIMEOUT_VAR: &str = "PIPELINE_SPAN_FLUSH_TIMEOUT_MS";
/// How long flushes are skipped after one failed.
pub const FLUSH_COOLDOWN: Duration = Duration::from_secs(30);

/// Exports the spans ended so far before the caller acknowledges work; see the module.
#[derive(Clone)]
pub struct SpanFlush {
    flusher: SpanFlusher,
    timeout: Duration,
    metrics: Option<Arc<Metrics>>,
    skip_until: Arc<Mutex<Option<Instant>>>,
}

impl SpanFlush {
    /// Flushes through `flusher`, waiting at most `timeout` (zero: never flushes).
    pub fn new(flusher: SpanFlusher, timeout: Duration, metrics: Arc<Metrics>) -> Self {
        Self { flusher, timeout, metrics: Some(metrics), skip_until: Arc::default() }
    }

    /// No export to wait for (tracing off, or code driven without a service around it).
    pub fn disabled() -> Self {
        Self { flusher: SpanFlusher::default(), timeout: Duration::ZERO, metrics: None, skip_until: Arc::default() }
    }

    /// Whether [`SpanFlush::flush`] waits for anything (tracing on, flushes not turned off).
    pub fn is_active(&self) -> bool {
        self.flusher.is_exporting() && !self.timeout.is_zero()
    }

    /// The timeout `PIPELINE_SPAN_FLUSH_TIMEOUT_MS` sets, else the default.
    pub fn timeout_from_env() -> Result<Duration, String> {
        match std::env::var(FLUSH_TIMEOUT_VAR) {
            Err(_) => Ok(DEFAULT_FLUSH_TIMEOUT),
            Ok(ms) => ms
                .trim()
                .parse()
                .map(Duration::from_millis)
                .map_err(|_| format!("{FLUSH_TIMEOUT_VAR}={ms:?} is not a number of milliseconds")),
        }
    }

    /// Exports every span ended so far and waits for it, at most the timeout; `true` when
    /// they are out. Returns at once while tracing or the flushes are off, or in a cooldown.
    pub async fn flush(&self) -> bool {
        if !self.is_active() {
            return true;
        }
        if self.cooling_down() {
            return false;
        }
        let (flusher, timeout) = (self.flusher.clone(), self.timeout);
        // The flush blocks its thread; off the runtime's workers.
        let result = tokio::task::spawn_blocking(move || flusher.flush(timeout)).await;
        match result {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                if let Some(metrics) = &self.metrics {
                    metrics.error("span_flush");
                }
                tracing::warn!(
                    %error,
                    cooldown_s = FLUSH_COOLDOWN.as_secs(),
                    "span flush failed; not waiting for span export for a while (a crash meanwhile may lose the last spans)"
                );
                if let Ok(mut skip) = self.skip_until.lock() {
                    *skip = Some(Instant::now() + FLUSH_COOLDOWN);
                }
                false
            }
            Err(_) => false, // the runtime is shutting down
        }
    }

    fn cooling_down(&self) -> bool {
        let Ok(mut skip) = self.skip_until.lock() else { return false };
        match *skip {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                *skip = None;
                false
            }
            None => false,
        }
    }
}
