//! The handle a service keeps while it runs: flushes on drop, reports export counters.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_sdk::error::OTelSdkError;
use opentelemetry_sdk::trace::SdkTracerProvider;

use crate::error::ShutdownError;
use crate::export::{ExportStats, SpanFlusher, StatsCounters};

/// Keeps tracing alive; dropping it exports the spans still queued and stops the export worker.
///
/// Dropping (or [`TracingGuard::shutdown`]) is safe on any thread, including inside a
/// `current_thread` tokio runtime or a one-worker runtime: the export worker has its own
/// thread and runtime, and the wait is bounded by the configured shutdown timeout.
#[must_use = "dropping the guard shuts tracing down; keep it alive for the life of the service"]
#[derive(Debug)]
pub struct TracingGuard {
    inner: Option<Exporting>,
}

#[derive(Debug)]
struct Exporting {
    provider: SdkTracerProvider,
    stats: Arc<StatsCounters>,
    shutdown_timeout: Duration,
    flusher: SpanFlusher,
}

impl TracingGuard {
    pub(crate) fn exporting(
        provider: SdkTracerProvider,
        stats: Arc<StatsCounters>,
        shutdown_timeout: Duration,
        flusher: SpanFlusher,
    ) -> Self {
        Self { inner: Some(Exporting { provider, stats, shutdown_timeout, flusher }) }
    }

    pub(crate) fn disabled() -> Self {
        Self { inner: None }
    }

    pub(crate) fn provider(&self) -> Option<&SdkTracerProvider> {
        self.inner.as_ref().map(|i| &i.provider)
    }

    /// Whether spans are being exported (`false` after `OTEL_SDK_DISABLED` or a failed init).
    pub fn is_exporting(&self) -> bool {
        self.inner.is_some()
    }

    /// Counters of exported, dropped and failed spans so far (all zero when not exporting).
    pub fn stats(&self) -> ExportStats {
        self.inner.as_ref().map(|i| i.stats.snapshot()).unwrap_or_default()
    }

    /// Exports every span queued so far and waits for the result (bounded by twice the
    /// export timeout).
    pub fn flush(&self) -> Result<(), ShutdownError> {
        match &self.inner {
            None => Ok(()),
            Some(i) => i.provider.force_flush().map_err(|e| map_error(e, i.shutdown_timeout)),
        }
    }

    /// Exports every span ended so far and waits at most `timeout` for the result, however
    /// the backend behaves (see [`SpanFlusher::flush`]).
    pub fn flush_with_timeout(&self, timeout: Duration) -> Result<(), ShutdownError> {
        self.flusher().flush(timeout)
    }

    /// A handle that flushes with a timeout from any thread or task, for a service that must
    /// know its spans are exported before it acknowledges work (see [`SpanFlusher`]). When
    /// tracing is not exporting, its flushes succeed at once.
    pub fn flusher(&self) -> SpanFlusher {
        self.inner.as_ref().map(|i| i.flusher.clone()).unwrap_or_default()
    }

    /// Exports the remaining spans and stops the export worker, waiting at most the shutdown
    /// timeout. Spans ended afterwards are dropped (and counted).
    pub fn shutdown(mut self) -> Result<(), ShutdownError> {
        self.shutdown_inner()
    }

    fn shutdown_inner(&mut self) -> Result<(), ShutdownError> {
        match self.inner.take() {
            None => Ok(()),
            Some(i) => {
                i.provider.shutdown_with_timeout(i.shutdown_timeout).map_err(|e| map_error(e, i.shutdown_timeout))
            }
        }
    }
}

pub(crate) fn map_error(error: OTelSdkError, timeout: Duration) -> ShutdownError {
    match error {
        OTelSdkError::AlreadyShutdown => ShutdownError::AlreadyShutDown,
        OTelSdkError::Timeout(t) => ShutdownError::Timeout(t.max(timeout)),
        OTelSdkError::InternalFailure(message) => ShutdownError::Export(message),
    }
}

impl Drop for TracingGuard {
    fn drop(&mut self) {
        if let Err(error) = self.shutdown_inner() {
            tracing::warn!(%error, "tracing shutdown incomplete, some spans may be lost");
        }
    }
}
