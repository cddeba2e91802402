//! What every service binary does around its work: tracing set-up, `/metrics` and
//! `/healthz`, signal handling, and the flush of the last spans on the way out.

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::flush::SpanFlush;
use crate::metrics::{self, Metrics};

/// Runs `work` as service `name` on a multi-threaded runtime: traced with spindle-sdk (the
/// `OTEL_*` variables apply; `OTEL_SDK_DISABLED=true` turns export off), metrics served on
/// `metrics_addr`, stopped gracefully by SIGINT or SIGTERM; `work` gets a [`SpanFlush`] to
/// export its spans before it acknowledges work. Returns failure when `work` or the set-up
/// fails.
pub fn main<F, Fut>(name: &'static str, metrics_addr: SocketAddr, work: F) -> ExitCode
where
    F: FnOnce(CancellationToken, Arc<Metrics>, SpanFlush) -> Fut,
    Fut: Future<Output = Result<(), Error>>,
{
    let guard = spindle_sdk::init(name);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let flusher = guard.flusher();
    let flush_timeout = match SpanFlush::timeout_from_env() {
        Ok(timeout) => timeout,
        Err(reason) => {
            tracing::error!(%reason, "invalid setting");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let metrics = Metrics::new(name);
        let server = metrics::serve(metrics_addr, Arc::clone(&metrics))
            .await
            .map_err(|source| Error::MetricsBind { addr: metrics_addr, source })?;
        let stop = crate::shutdown::on_signals();
        let spans = SpanFlush::new(flusher, flush_timeout, Arc::clone(&metrics));
        let result = work(stop, metrics, spans).await;
        server.abort();
        result
    });
    // Drop the runtime first: its tasks may hold the last spans.
    drop(runtime);
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %anyhow::Error::from(error), "{name} failed");
            ExitCode::FAILURE
        }
    };
    if let Err(error) = guard.shutdown() {
        tracing::warn!(%error, "some spans may not have been exported");
    }
    code
}
