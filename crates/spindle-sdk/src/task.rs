//! Async helpers that keep spawned work inside the trace that started it.
//!
//! `tokio::spawn` starts a task with no current span, so whatever the task records would begin
//! a new trace. These helpers carry the caller's current `tracing` span (and with it the
//! OpenTelemetry context and baggage) into the task, together with the caller's subscriber,
//! so they also work under a scoped (non-global) subscriber. They add no spans of their own: wrap the
//! work in `#[tracing::instrument]` or a span to see it as a child.

use std::future::Future;

use tokio::task::{JoinError, JoinHandle, JoinSet};
use tracing::instrument::WithSubscriber;
use tracing::Instrument;

/// Spawns `future` on the current tokio runtime as part of the current span.
///
/// Spans the task creates become children of the span current at the call, even when the
/// caller has finished by the time the task runs.
pub fn spawn_in_current_span<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(future.instrument(tracing::Span::current()).with_current_subscriber())
}

/// Runs blocking `work` on tokio's blocking pool as part of the current span.
pub fn spawn_blocking_in_current_span<F, R>(work: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let span = tracing::Span::current();
    let dispatch = tracing::dispatcher::get_default(Clone::clone);
    tokio::task::spawn_blocking(move || {
        tracing::dispatcher::with_default(&dispatch, || span.in_scope(work))
    })
}

/// Runs every future of `batch` concurrently as its own task, each part of the current span,
/// and returns their outputs in the order given. A task that panicked yields its `JoinError`.
///
/// This is the traced form of "fan out a batch and gather the results".
pub async fn join_all_in_current_span<I, F>(batch: I) -> Vec<Result<F::Output, JoinError>>
where
    I: IntoIterator<Item = F>,
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let span = tracing::Span::current();
    let mut set = JoinSet::new();
    let mut ids = Vec::new();
    for (index, future) in batch.into_iter().enumerate() {
        let fut = future.instrument(span.clone()).with_current_subscriber();
        ids.push(set.spawn(async move { (index, fut.await) }).id());
    }
    let mut slots: Vec<Option<Result<F::Output, JoinError>>> = ids.iter().map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((index, output)) => slots[index] = Some(Ok(output)),
            Err(error) => {
                if let Some(index) = ids.iter().position(|id| *id == error.id()) {
                    slots[index] = Some(Err(error));
                }
            }
        }
    }
    // Every spawned task is joined exactly once, so every slot is filled.
    slots.into_iter().flatten().collect()
}
