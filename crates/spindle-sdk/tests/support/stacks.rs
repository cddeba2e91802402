//! The tracing stacks the benchmarks compare the SDK with: the OpenTelemetry SDK's own tracer
//! provider (thread-based `BatchSpanProcessor`, `Sampler::AlwaysOn`), used directly or under
//! `tracing-opentelemetry`, exporting over OTLP/gRPC with `opentelemetry-otlp` or discarding.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, SpanExporter,
};
use opentelemetry_sdk::Resource;
use spindle_sdk::tracing::Dispatch;
use spindle_sdk::tracing_subscriber::filter::LevelFilter;
use spindle_sdk::tracing_subscriber::layer::SubscriberExt;
use spindle_sdk::tracing_subscriber::Registry;

/// Name of the batch processor's export thread, as `/proc` shows it (15 bytes at most).
pub const BATCH_PROCESSOR_THREAD: &str = "OpenTelemetry.Traces.BatchProcessor";
/// Name of the threads of the runtime that drives the OTLP/gRPC exporter's channel.
pub const OTLP_RUNTIME_THREAD: &str = "otel-export";

/// A tracer provider for `service` with the SDK's batch processor over `exporter`: default
/// batch settings but the queue (and, when given, the schedule delay).
pub fn otel_provider<E>(service: &str, exporter: E, queue: usize, delay: Option<Duration>) -> SdkTracerProvider
where
    E: SpanExporter + 'static,
{
    let mut batch = BatchConfigBuilder::default().with_max_queue_size(queue);
    if let Some(delay) = delay {
        batch = batch.with_scheduled_delay(delay);
    }
    let processor = BatchSpanProcessor::builder(exporter).with_batch_config(batch.build()).build();
    SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::AlwaysOn)
        .with_resource(Resource::builder().with_service_name(service.to_owned()).build())
        .build()
}

/// A tracer provider exporting to the OTLP/gRPC `endpoint` with `opentelemetry-otlp`'s tonic
/// exporter, as a service would set it up.
pub struct OtlpStack {
    pub provider: SdkTracerProvider,
    pub tracer: SdkTracer,
    // The batch processor's thread blocks on each export; the tonic channel's connection
    // runs as tasks of this runtime, so it must outlive the provider.
    runtime: Option<tokio::runtime::Runtime>,
}

impl OtlpStack {
    pub fn new(service: &str, endpoint: &str, queue: usize) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(OTLP_RUNTIME_THREAD)
            .enable_all()
            .build()
            .expect("exporter runtime");
        let exporter = {
            // The channel spawns its worker on the current runtime.
            let _entered = runtime.enter();
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()
                .expect("otlp grpc exporter")
        };
        let provider = otel_provider(service, exporter, queue, None);
        let tracer = provider.tracer("spindle-bench");
        Self { provider, tracer, runtime: Some(runtime) }
    }

    /// Exports every span ended so far; blocks until the backend answered.
    pub fn flush(&self) {
        self.provider.force_flush().expect("otel flush");
    }

    /// `tracing` spans under the returned dispatch go through `tracing-opentelemetry` to this
    /// provider; at `info` and above, as a service installs it as its default: the
    /// exporter's own `debug` and `trace` spans (h2, tonic) would otherwise be traced too.
    pub fn tracing_dispatch(&self) -> Dispatch {
        tracing_opentelemetry_dispatch(self.tracer.clone())
    }
}

impl Drop for OtlpStack {
    fn drop(&mut self) {
        // Shut the processor down (a last export) while the exporter's runtime still runs.
        let _ = self.provider.shutdown();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// The SDK built by `builder` as a service gets it from `init()` (its own subscriber), or with
/// `SDK_SUBSCRIBER=registry` its layer on `tracing-subscriber`'s registry (`into_layer`).
pub fn spindle_dispatch(builder: spindle_sdk::SpindleBuilder) -> (Dispatch, spindle_sdk::TracingGuard) {
    if std::env::var("SDK_SUBSCRIBER").is_ok_and(|v| v == "registry") {
        let (layer, guard) = builder.into_layer::<Registry>().expect("pipeline");
        return (Dispatch::new(Registry::default().with(layer)), guard);
    }
    builder.into_dispatch().expect("pipeline")
}

/// `tracing-opentelemetry`'s layer with its default settings, over `tracer`, at `info` and
/// above.
pub fn tracing_opentelemetry_dispatch(tracer: SdkTracer) -> Dispatch {
    let layer = tracing_opentelemetry::layer().with_tracer(tracer);
    Dispatch::new(Registry::default().with(LevelFilter::INFO).with(layer))
}

/// An exporter that discards every batch and counts its spans, to check that benchmarked
/// spans did go through the pipeline.
#[derive(Debug, Clone, Default)]
pub struct CountingExporter {
    pub spans: Arc<AtomicU64>,
}

impl SpanExporter for CountingExporter {
    async fn export(&self, batch: Vec<opentelemetry_sdk::trace::SpanData>) -> opentelemetry_sdk::error::OTelSdkResult {
        self.spans.fetch_add(batch.len() as u64, Ordering::Relaxed);
        std::hint::black_box(batch);
        Ok(())
    }
}
