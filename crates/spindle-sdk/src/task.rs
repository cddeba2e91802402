//! Async helpers that keep spawned work inside the trace that started it.
//!
//! `tokio::spawn` starts a task with no current span, so whatever the task records would begin
//! a new trace. These helpers carry the caller's trace into the task, together with the
//! caller's subscriber, so they also work under a scoped (non-global) subscriber. They add no
//! spans of their own: wrap the work in `#[tracing::instrument]` or a span to see it as a child.
//!
//! Work that may outlive the caller ([`spawn_in_current_span`], [`spawn_blocking_in_current_span`])
//! carries the caller's OpenTelemetry context only, not its `tracing` span: holding the span
//! would keep it open — and unexported, with an end time that is the work's — until the work
//! finished. A batch that is awaited in place ([`join_all_in_current_span`]) runs inside the
//! caller's span itself, so its log lines carry the span's fields too.

use std::future::Future;

use opentelemetry::context::FutureExt as _;
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tracing::instrument::WithSubscriber;
use tracing::Instrument;

/// Spawns `future` on the current tokio runtime as part of the current trace.
///
/// Spans the task creates become children of the span current at the call, even when the
/// caller has finished by the time the task runs. The caller's span is not held by the task:
/// it ends (and is exported) when the caller is done with it, so a long background job never
/// stretches the request that started it. Inside the task [`tracing::Span::current`] is
/// therefore none until the task enters a span of its own, while
/// [`crate::current_context`] and [`crate::current_trace_id`] still give the caller's trace.
pub fn spawn_in_current_span<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(future.with_context(crate::propagation::current_context()).with_current_subscriber())
}

/// Runs blocking `work` on tokio's blocking pool as part of the current trace.
///
/// Spans `work` creates become children of the span current at the call. As with
/// [`spawn_in_current_span`], the caller's span itself is not held: blocking work cannot be
/// cancelled and its `JoinHandle` may be dropped, so holding the span would keep it open —
/// and unexported — until the work finished. Inside `work`, [`tracing::Span::current`] is none
/// until it enters a span of its own; [`crate::current_context`] gives the caller's trace.
pub fn spawn_blocking_in_current_span<F, R>(work: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let context = crate::propagation::current_context();
    let dispatch = tracing::dispatcher::get_default(Clone::clone);
    tokio::task::spawn_blocking(move || {
        tracing::dispatcher::with_default(&dispatch, || {
            let _attached = context.attach();
            work()
        })
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
