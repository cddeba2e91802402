//! Test harness shared by the integration tests: an in-process OTLP sink and per-thread
//! "services" with their own tracing pipeline; ports, polling and the launchers for the
//! tansu broker and the spindle server come from `spindle-test-support`.

#![allow(dead_code, unused_imports)] // each test binary uses a different part of the harness

pub mod otlp_sink;
pub mod scenarios;
pub mod stacks;
pub mod tls_sink;
pub mod workload;

use std::future::Future;
use std::time::Duration;

use spindle_sdk::tracing::Dispatch;
use spindle_sdk::tracing_subscriber::layer::SubscriberExt;
use spindle_sdk::tracing_subscriber::Registry;
use spindle_sdk::{Protocol, TracingGuard};

pub use otlp_sink::{OtlpSink, SinkSpan};
pub use spindle_test_support::{free_port, free_udp_port, http_get, wait_until, Spindle, Tansu};

/// A span exporter that accepts and discards every batch: benchmarks measure the SDK with
/// it, not a backend.
#[derive(Debug)]
pub struct DiscardingExporter;

impl opentelemetry_sdk::trace::SpanExporter for DiscardingExporter {
    async fn export(&self, batch: Vec<opentelemetry_sdk::trace::SpanData>) -> opentelemetry_sdk::error::OTelSdkResult {
        std::hint::black_box(batch);
        Ok(())
    }
}

/// One traced "service": its own tracer provider (so its own `service.name`) and subscriber.
/// Code runs as this service on threads where its dispatch is the default.
pub struct TestService {
    pub name: String,
    pub dispatch: Dispatch,
    pub guard: TracingGuard,
}

impl TestService {
    /// A service exporting over OTLP `protocol` to `endpoint`, with short batching delays.
    pub fn new(name: &str, endpoint: &str, protocol: Protocol) -> Self {
        Self::with_builder(
            name,
            spindle_sdk::builder(name)
                .endpoint(endpoint)
                .protocol(protocol)
                .scheduled_delay(Duration::from_millis(50))
                .export_timeout(Duration::from_secs(5)),
        )
    }

    pub fn with_builder(name: &str, builder: spindle_sdk::SpindleBuilder) -> Self {
        let (layer, guard) = builder.into_layer::<Registry>().expect("tracing pipeline builds");
        Self { name: name.to_owned(), dispatch: Dispatch::new(Registry::default().with(layer)), guard }
    }

    /// Runs `future` to completion as this service on a fresh current-thread runtime in a new
    /// thread.
    pub fn run<F, T>(&self, future: F) -> T
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.spawn(future).join().expect("service thread does not panic")
    }

    /// Starts `future` as this service in the background (a server, a consumer loop) on a
    /// fresh current-thread runtime in a new thread, which ends when the future does.
    pub fn spawn<F, T>(&self, future: F) -> std::thread::JoinHandle<T>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let dispatch = self.dispatch.clone();
        std::thread::spawn(move || {
            spindle_sdk::tracing::dispatcher::with_default(&dispatch, || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime builds")
                    .block_on(future)
            })
        })
    }
}

/// Runs `work` on a new thread and fails the test if it has not finished within `limit`
/// (a deadlock shows up as this failure rather than a hung test run).
pub fn within<T: Send + 'static>(what: &str, limit: Duration, work: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(work());
    });
    match rx.recv_timeout(limit) {
        Ok(value) => value,
        Err(_) => panic!("{what} did not finish within {limit:?}: deadlock or hang"),
    }
}
