//! The export pipeline against a real OTLP receiver: every protocol, the guard on small
//! runtimes (no deadlock), async task trees and concurrent batches, errors, sampling.

mod support;

use std::time::Duration;

use spindle_sdk::tracing::instrument::WithSubscriber;
use spindle_sdk::tracing::Dispatch;
use spindle_sdk::tracing_subscriber::layer::SubscriberExt;
use spindle_sdk::tracing_subscriber::Registry;
use spindle_sdk::{ParentBasedRoot, Protocol, SamplerConfig};
use support::{within, OtlpSink, SinkSpan, TestService};
use tracing::Instrument;

const WAIT: Duration = Duration::from_secs(20);

/// A pipeline whose batches never leave on their own: only a flush or shutdown exports.
fn flush_only_pipeline(name: &str, sink: &OtlpSink) -> (Dispatch, spindle_sdk::TracingGuard) {
    let (layer, guard) = spindle_sdk::builder(name)
        .endpoint(sink.grpc_endpoint.clone())
        .scheduled_delay(Duration::from_secs(3600))
        .into_layer::<Registry>()
        .expect("pipeline builds");
    (Dispatch::new(Registry::default().with(layer)), guard)
}

fn names(spans: &[SinkSpan]) -> Vec<&str> {
    let mut names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    names
}

#[test]
fn guard_dropped_inside_a_current_thread_runtime_flushes_without_deadlock() {
    let sink = OtlpSink::start();
    let (dispatch, guard) = flush_only_pipeline("guard-current-thread", &sink);
    within("dropping the guard on a current_thread runtime", WAIT, move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        tracing::dispatcher::with_default(&dispatch, || {
            runtime.block_on(async move {
                tracing::info_span!("on_the_only_thread").in_scope(|| {});
                tokio::spawn(async { tracing::info_span!("in_a_spawned_task").in_scope(|| {}) }).await.expect("task");
                // The only runtime thread blocks here while the export (tonic) completes.
                guard.flush().expect("flush inside the runtime succeeds");
                tracing::info_span!("after_flush").in_scope(|| {});
                drop(guard);
            });
        });
    });
    let spans = sink.spans();
    assert_eq!(names(&spans), ["after_flush", "in_a_spawned_task", "on_the_only_thread"]);
    assert!(spans.iter().all(|s| s.service == "guard-current-thread"));
}

#[test]
fn guard_shut_down_from_the_single_worker_of_a_multi_thread_runtime() {
    let sink = OtlpSink::start();
    let (dispatch, guard) = flush_only_pipeline("guard-one-worker", &sink);
    within("shutting down on a one-worker runtime", WAIT, move || {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        runtime.block_on(async move {
            let work = async {
                tracing::info_span!("on_the_worker").in_scope(|| {});
            };
            tokio::spawn(work.with_subscriber(dispatch.clone())).await.expect("task");
            // Occupy the only worker with the blocking shutdown, as a service's shutdown
            // hook running in a task would.
            let shutdown = async move { guard.shutdown() };
            let result = tokio::spawn(shutdown.with_subscriber(dispatch)).await.expect("task");
            result.expect("shutdown succeeds");
        });
    });
    assert_eq!(names(&sink.spans()), ["on_the_worker"]);
}

#[test]
fn shutdown_against_an_unreachable_backend_returns_within_its_timeout() {
    let closed = format!("http://127.0.0.1:{}", support::free_port());
    let (layer, guard) = spindle_sdk::builder("unreachable")
        .endpoint(closed)
        .export_timeout(Duration::from_millis(500))
        .shutdown_timeout(Duration::from_secs(2))
        .into_layer::<Registry>()
        .expect("pipeline builds even though nothing listens");
    let dispatch = Dispatch::new(Registry::default().with(layer));
    let started = std::time::Instant::now();
    within("shutdown with the backend down", Duration::from_secs(10), move || {
        tracing::dispatcher::with_default(&dispatch, || {
            for _ in 0..100 {
                tracing::info_span!("lost").in_scope(|| {});
            }
        });
        let _ = guard.shutdown();
    });
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

#[test]
fn every_otlp_protocol_delivers_spans_with_resource_and_attributes() {
    let sink = OtlpSink::start();
    for (service, endpoint, protocol) in [
        ("over-grpc", sink.grpc_endpoint.clone(), Protocol::Grpc),
        ("over-http-protobuf", sink.http_endpoint.clone(), Protocol::HttpProtobuf),
        ("over-http-json", sink.http_endpoint.clone(), Protocol::HttpJson),
    ] {
        let svc = TestService::with_builder(
            service,
            spindle_sdk::builder(service)
                .endpoint(endpoint)
                .protocol(protocol)
                .resource_attribute("deployment.environment.name", "test"),
        );
        svc.run(async {
            tracing::info_span!("calculate_bsm", symbol = "AAPL", strike = 150.5_f64, qty = 3_i64).in_scope(|| {});
        });
        svc.guard.flush().expect("flush");
        let span = sink.wait_for_span(service, "calculate_bsm", WAIT);
        assert_eq!(span.attr("symbol"), Some("AAPL"), "{service}: {span:?}");
        assert_eq!(span.attr("qty"), Some("3"), "{service}: {span:?}");
        assert_eq!(span.attr("strike"), Some("150.5"), "{service}: {span:?}");
    }
}

#[tracing::instrument]
async fn get_stock_data(symbol: String) -> usize {
    tokio::task::yield_now().await;
    symbol.len()
}

#[test]
fn spawned_tasks_and_concurrent_batches_keep_their_parent() {
    let sink = OtlpSink::start();
    let svc = TestService::new("clstock-api", &sink.grpc_endpoint, Protocol::Grpc);
    let trace_id = svc.run(async {
        let root = tracing::info_span!("get_recommendations");
        async {
            let score =
                spindle_sdk::spawn_in_current_span(async { tracing::info_span!("calculate_score").in_scope(|| 0.7) });
            let batch = ["7203", "6758", "9984", "AAPL", "MSFT"].map(|s| get_stock_data(s.to_owned()));
            let sizes = spindle_sdk::join_all_in_current_span(batch).await;
            assert_eq!(sizes.into_iter().map(|r| r.expect("task")).collect::<Vec<_>>(), [4, 4, 4, 4, 4]);
            spindle_sdk::spawn_blocking_in_current_span(|| {
                tracing::info_span!("train_model").in_scope(|| {});
            })
            .await
            .expect("blocking task");
            score.await.expect("task");
            // Without the helpers a task starts a trace of its own.
            tokio::spawn(async { tracing::info_span!("detached").in_scope(|| {}) }).await.expect("task");
            spindle_sdk::current_trace_id().expect("inside a sampled trace")
        }
        .instrument(root)
        .await
    });
    svc.guard.flush().expect("flush");
    let spans = sink.wait_for_trace(&trace_id, 8, WAIT);
    let root = spans.iter().find(|s| s.name == "get_recommendations").expect("root span");
    assert!(root.parent_span_id.is_empty());
    for name in ["calculate_score", "train_model"] {
        let child = spans.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("{name}"));
        assert_eq!(child.parent_span_id, root.span_id, "{name}");
    }
    let batch: Vec<_> = spans.iter().filter(|s| s.name == "get_stock_data").collect();
    assert_eq!(batch.len(), 5);
    assert!(batch.iter().all(|s| s.parent_span_id == root.span_id));
    let mut symbols: Vec<_> = batch.iter().filter_map(|s| s.attr("symbol")).collect();
    symbols.sort_unstable();
    assert_eq!(symbols, ["6758", "7203", "9984", "AAPL", "MSFT"]);
    let detached = sink.wait_for_span("clstock-api", "detached", WAIT);
    assert_ne!(detached.trace_id, trace_id, "a bare tokio::spawn loses the trace");
}

#[derive(Debug)]
struct FetchError(&'static str);
impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fetch failed: {}", self.0)
    }
}
impl std::error::Error for FetchError {}

#[tracing::instrument(err)]
fn fetch_quotes() -> Result<(), FetchError> {
    Err(FetchError("upstream 503"))
}

#[test]
fn errors_become_exception_events_with_error_status() {
    let sink = OtlpSink::start();
    let svc = TestService::new("errors", &sink.grpc_endpoint, Protocol::Grpc);
    svc.run(async {
        let _ = fetch_quotes();
        let span = tracing::info_span!("store_data");
        spindle_sdk::record_error(&span, &FetchError("db down"));
        drop(span);
    });
    svc.guard.flush().expect("flush");
    for (name, message) in [("fetch_quotes", "upstream 503"), ("store_data", "db down")] {
        let span = sink.wait_for_span("errors", name, WAIT);
        assert_eq!(span.status_code, 2, "{name} has status ERROR: {span:?}");
        let exception = span
            .events
            .iter()
            .find(|(event, attrs)| event == "exception" || attrs.contains_key("exception.message"))
            .unwrap_or_else(|| panic!("{name} has an exception event: {span:?}"));
        assert!(exception.1.get("exception.message").is_some_and(|m| m.contains(message)), "{name}: {exception:?}");
    }
}

#[test]
fn parent_based_sampling_follows_the_caller_and_disabled_exports_nothing() {
    let sink = OtlpSink::start();
    let svc = TestService::with_builder(
        "sampled-by-caller",
        spindle_sdk::builder("sampled-by-caller")
            .endpoint(sink.grpc_endpoint.clone())
            .sampler(SamplerConfig::ParentBased(ParentBasedRoot::AlwaysOff)),
    );
    svc.run(async {
        tracing::info_span!("unsampled_root").in_scope(|| {});
        let mut headers = spindle_sdk::propagation::HeaderPairs(vec![(
            "traceparent".into(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        )]);
        let remote = spindle_sdk::propagation::extract_context(&headers);
        let span = tracing::info_span!("continues_sampled_caller");
        assert!(spindle_sdk::propagation::set_remote_parent(&span, remote));
        span.in_scope(|| {});
        headers.0.clear();
    });
    svc.guard.flush().expect("flush");
    let kept = sink.wait_for_span("sampled-by-caller", "continues_sampled_caller", WAIT);
    assert_eq!(kept.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(kept.parent_span_id, "00f067aa0ba902b7");
    assert!(sink.spans().iter().all(|s| s.name != "unsampled_root"));

    let off = TestService::with_builder(
        "switched-off",
        spindle_sdk::builder("switched-off").endpoint(sink.grpc_endpoint.clone()).disabled(true),
    );
    off.run(async { tracing::info_span!("never_exported").in_scope(|| {}) });
    off.guard.flush().expect("flush");
    assert!(sink.spans().iter().all(|s| s.service != "switched-off"));
}

/// The job `start` launches inside a `handle_request` span (it waits until released, then
/// opens `train_model` and returns its trace id) keeps the request as its parent, but does not
/// hold the request span open: that span ends and is exported while the job still waits.
fn job_keeps_its_parent_but_not_the_caller_span(
    start: impl FnOnce() -> (Box<dyn FnOnce()>, tokio::task::JoinHandle<Option<String>>),
) {
    use opentelemetry_sdk::trace::InMemorySpanExporter;
    let exporter = InMemorySpanExporter::default();
    let (layer, guard) = spindle_sdk::builder("clstock-api")
        .exporter(exporter.clone())
        .sampler(SamplerConfig::AlwaysOn)
        .scheduled_delay(Duration::from_secs(3600))
        .into_layer::<Registry>()
        .expect("pipeline builds");
    let dispatch = Dispatch::new(Registry::default().with(layer));
    let finished = |name: &str| exporter.get_finished_spans().expect("readable").into_iter().find(|s| s.name == name);
    tracing::dispatcher::with_default(&dispatch, || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let (release, job) = tracing::info_span!("handle_request").in_scope(start);
            // the request is done here; its span must end now, not when the job does
            guard.flush().expect("flush");
            let request = finished("handle_request").expect("the request span ended while its job still runs");
            assert!(finished("train_model").is_none(), "the job has not run yet");

            release();
            let job_trace = job.await.expect("job");
            guard.flush().expect("flush");
            let job_span = finished("train_model").expect("job span exported");
            assert_eq!(job_span.parent_span_id, request.span_context.span_id(), "child of the request");
            assert_eq!(job_span.span_context.trace_id(), request.span_context.trace_id());
            assert_eq!(job_trace, Some(request.span_context.trace_id().to_string()), "current_trace_id in the job");
            assert!(job_span.start_time >= request.end_time, "the job ran after the request ended");
        });
    });
}

/// What both jobs do once released.
fn train_model() -> Option<String> {
    let trace_id = spindle_sdk::current_trace_id();
    tracing::info_span!("train_model").in_scope(|| {});
    trace_id
}

#[test]
fn detached_task_does_not_hold_the_caller_span_open() {
    job_keeps_its_parent_but_not_the_caller_span(|| {
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let job = spindle_sdk::spawn_in_current_span(async move {
            let _ = released.await;
            train_model()
        });
        (Box::new(move || release.send(()).expect("job waiting")), job)
    });
}

/// Blocking work is treated like a detached task: its `JoinHandle` may be dropped and the work
/// cannot be cancelled, so a held span would stay open (and unexported) until the work finished.
#[test]
fn blocking_job_does_not_hold_the_caller_span_open() {
    job_keeps_its_parent_but_not_the_caller_span(|| {
        let (release, released) = std::sync::mpsc::channel::<()>();
        let job = spindle_sdk::spawn_blocking_in_current_span(move || {
            released.recv().expect("released");
            train_model()
        });
        (Box::new(move || release.send(()).expect("job waiting")), job)
    });
}
