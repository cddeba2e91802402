//! What one span and one propagation step cost.
//!
//! `span/*`: start and end a `tracing` span through the whole SDK pipeline (layer, sampler,
//! bounded queue, export worker, with an exporter that discards) against no subscriber at
//! all (`sdk_on`, `sdk_off`), and side by side the same spans through `tracing-opentelemetry`
//! into the OpenTelemetry SDK (`tracing_opentelemetry`) and made with the OpenTelemetry API
//! alone (`otel_api`), both with the SDK's `BatchSpanProcessor` and an exporter that discards. `export/*`: one OTLP batch of 512 spans encoded and sent to a local receiver.
//! `propagation/*`: W3C inject and extract in HTTP headers and Kafka record headers.
//!
//! Times are CPU time of the benchmarking thread, not wall time: on a shared machine other
//! processes' load inflates wall time but hardly CPU time. The export worker's share of a
//! span's cost is what `export/*` measures, divided by 512.
//!
//! Run: `cargo bench -p spindle-sdk --bench span_cost`

#[path = "../tests/support/mod.rs"]
mod support;

use std::borrow::Cow;
use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkGroup, Criterion, Throughput};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, SpanData, SpanEvents, SpanExporter, SpanLinks};
use rdkafka::message::OwnedHeaders;
use spindle_sdk::tracing::Dispatch;
use spindle_sdk::tracing_subscriber::layer::SubscriberExt;
use spindle_sdk::tracing_subscriber::Registry;
use spindle_sdk::Compression;

/// CPU time of the calling thread, in nanoseconds.
struct ThreadCpuTime;

fn thread_cpu_ns() -> u64 {
    support::workload::thread_cpu_time().as_nanos() as u64
}

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, started: u64) -> u64 {
        thread_cpu_ns().saturating_sub(started)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, value: &u64) -> f64 {
        *value as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        // Values are nanoseconds, like wall time's.
        WallTime.formatter()
    }
}

type Cpu = Criterion<ThreadCpuTime>;

fn sdk_builder() -> spindle_sdk::SpindleBuilder {
    spindle_sdk::builder("bench")
        .exporter(support::DiscardingExporter)
        .max_queue_size(1 << 16)
        .scheduled_delay(Duration::from_millis(100))
}

/// What `init()` installs: the SDK's own subscriber.
fn sdk_dispatch() -> (Dispatch, spindle_sdk::TracingGuard) {
    sdk_builder().into_dispatch().expect("pipeline builds")
}

/// The SDK's layer on `tracing-subscriber`'s registry (`into_layer`).
fn sdk_registry_dispatch() -> (Dispatch, spindle_sdk::TracingGuard) {
    let (layer, guard) = sdk_builder().into_layer::<Registry>().expect("pipeline builds");
    (Dispatch::new(Registry::default().with(layer)), guard)
}

/// The span benches for one mode. A macro, so each mode has call sites of its own: tracing
/// caches per call site whether anyone is interested, and a call site first hit with no
/// subscriber would stay disabled for the SDK afterwards.
macro_rules! span_benches {
    ($group:expr, $mode:literal) => {
        $group.bench_function(concat!("start_end/", $mode), |b| {
            b.iter(|| tracing::info_span!("calculate_bsm").in_scope(|| black_box(1)))
        });
        $group.bench_function(concat!("start_4_attributes_end/", $mode), |b| {
            let mut id = 0_i64;
            b.iter(|| {
                id += 1;
                tracing::info_span!(
                    "calculate_bsm",
                    symbol = "AAPL",
                    message.id = id,
                    strike = 150.5_f64,
                    model = "bsm"
                )
                .in_scope(|| black_box(1))
            })
        });
        $group.bench_function(concat!("parent_with_child/", $mode), |b| {
            b.iter(|| {
                tracing::info_span!("process_message")
                    .in_scope(|| tracing::info_span!("clean_data").in_scope(|| black_box(1)))
            })
        });
    };
}

/// The OpenTelemetry SDK's pipeline with the SDK bench's queue and delay; the exporter
/// discards and counts.
fn otel_provider() -> (SdkTracerProvider, support::stacks::CountingExporter) {
    let exporter = support::stacks::CountingExporter::default();
    let provider = support::stacks::otel_provider("bench", exporter.clone(), 1 << 16, Some(Duration::from_millis(100)));
    (provider, exporter)
}

/// `span_benches!` through the OpenTelemetry API: the same spans and attributes, the
/// parent passed to the child as a context.
fn otel_api_benches(group: &mut BenchmarkGroup<'_, ThreadCpuTime>, tracer: &SdkTracer) {
    group.bench_function("start_end/otel_api", |b| {
        b.iter(|| {
            let mut span = tracer.start("calculate_bsm");
            black_box(1);
            span.end();
        })
    });
    group.bench_function("start_4_attributes_end/otel_api", |b| {
        let mut id = 0_i64;
        b.iter(|| {
            id += 1;
            let mut span = tracer
                .span_builder("calculate_bsm")
                .with_attributes([
                    KeyValue::new("symbol", "AAPL"),
                    KeyValue::new("message.id", id),
                    KeyValue::new("strike", 150.5_f64),
                    KeyValue::new("model", "bsm"),
                ])
                .start(tracer);
            black_box(1);
            span.end();
        })
    });
    group.bench_function("parent_with_child/otel_api", |b| {
        b.iter(|| {
            let cx = Context::current_with_span(tracer.start("process_message"));
            let mut child = tracer.start_with_context("clean_data", &cx);
            black_box(1);
            child.end();
            cx.span().end();
        })
    });
}

fn spans(c: &mut Cpu) {
    let (sdk, guard) = sdk_dispatch();
    let mut group = c.benchmark_group("span");
    tracing::dispatcher::with_default(&Dispatch::none(), || {
        span_benches!(group, "sdk_off");
    });
    tracing::dispatcher::with_default(&sdk, || {
        span_benches!(group, "sdk_on");
    });
    let (registry, registry_guard) = sdk_registry_dispatch();
    tracing::dispatcher::with_default(&registry, || {
        span_benches!(group, "sdk_registry");
    });
    let (layered, layered_spans) = otel_provider();
    let tracing_otel = support::stacks::tracing_opentelemetry_dispatch(layered.tracer("bench"));
    tracing::dispatcher::with_default(&tracing_otel, || {
        span_benches!(group, "tracing_opentelemetry");
    });
    let (direct, direct_spans) = otel_provider();
    tracing::dispatcher::with_default(&Dispatch::none(), || {
        otel_api_benches(&mut group, &direct.tracer("bench"));
    });
    group.finish();
    for (mode, guard) in [("sdk_on", &guard), ("sdk_registry", &registry_guard)] {
        guard.flush().expect("flush");
        let stats = guard.stats();
        assert!(stats.exported > 1000 && stats.failed == 0, "the {mode} spans were recorded: {stats:?}");
        println!("{mode} span pipeline during the benches: {stats:?}");
    }
    for (mode, provider, exporter) in
        [("tracing_opentelemetry", &layered, &layered_spans), ("otel_api", &direct, &direct_spans)]
    {
        provider.force_flush().expect("otel flush");
        let exported = exporter.spans.load(std::sync::atomic::Ordering::Relaxed);
        assert!(exported > 1000, "the {mode} spans were recorded: {exported}");
        println!("{mode} spans exported during the benches: {exported}");
    }
}

/// A request through an axum router with and without `ServerTracingLayer` (in process, no
/// network): the layer's cost on top of the spans themselves.
fn http_layer(c: &mut Cpu) {
    use axum::routing::get;
    use tower::Service;
    let (sdk, guard) = sdk_dispatch();
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let plain: axum::Router = axum::Router::new().route("/stocks/{symbol}", get(|| async { "ok" }));
    let traced = plain.clone().layer(spindle_sdk::http::axum::ServerTracingLayer::new());
    let request = || {
        http::Request::get("/stocks/AAPL")
            .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .body(axum::body::Body::empty())
            .expect("request")
    };
    let mut group = c.benchmark_group("http");
    tracing::dispatcher::with_default(&sdk, || {
        group.bench_function("server_request/with_layer", |b| {
            b.iter(|| runtime.block_on(traced.clone().call(request())).expect("response"))
        });
    });
    tracing::dispatcher::with_default(&Dispatch::none(), || {
        group.bench_function("server_request/without_layer", |b| {
            b.iter(|| runtime.block_on(plain.clone().call(request())).expect("response"))
        });
    });
    group.finish();
    drop(guard);
}

fn span_data(n: u64) -> SpanData {
    SpanData {
        span_context: SpanContext::new(
            TraceId::from(u128::from(n) + 1),
            SpanId::from(n + 1),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: SpanId::from(n + 1000),
        parent_span_is_remote: false,
        span_kind: SpanKind::Internal,
        name: Cow::Borrowed("calculate_bsm"),
        start_time: SystemTime::now(),
        end_time: SystemTime::now(),
        attributes: vec![
            KeyValue::new("symbol", "AAPL"),
            KeyValue::new("message.id", n as i64),
            KeyValue::new("strike", 150.5),
            KeyValue::new("model", "bsm"),
        ],
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: Default::default(),
    }
}

fn export(c: &mut Cpu) {
    let sink = support::OtlpSink::start();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let grpc = {
        let _entered = runtime.enter();
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(sink.grpc_endpoint.clone())
            .build()
            .expect("grpc exporter")
    };
    let http = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(reqwest::Client::new())
        .with_endpoint(format!("{}/v1/traces", sink.http_endpoint))
        .build()
        .expect("http exporter");
    // The SDK's own exporter (what `init` installs for grpc and http/protobuf).
    let sdk_grpc = {
        let _entered = runtime.enter();
        spindle_sdk::otlp::OtlpExporter::grpc(&sink.grpc_endpoint, Duration::from_secs(10), Compression::None)
            .expect("sdk grpc exporter")
    };
    let sdk_http = spindle_sdk::otlp::OtlpExporter::http_protobuf(
        &format!("{}/v1/traces", sink.http_endpoint),
        Duration::from_secs(10),
        Compression::None,
    )
    .expect("sdk http exporter");
    let mut group = c.benchmark_group("export");
    group.throughput(Throughput::Elements(512));
    group.bench_function("batch_512/sdk_grpc", |b| {
        b.iter_batched(
            || (0..512).map(span_data).collect::<Vec<_>>(),
            |batch| runtime.block_on(sdk_grpc.export(batch)).expect("export"),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("batch_512/sdk_http_protobuf", |b| {
        b.iter_batched(
            || (0..512).map(span_data).collect::<Vec<_>>(),
            |batch| runtime.block_on(sdk_http.export(batch)).expect("export"),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("batch_512/otlp_grpc", |b| {
        b.iter_batched(
            || (0..512).map(span_data).collect::<Vec<_>>(),
            |batch| runtime.block_on(grpc.export(batch)).expect("export"),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("batch_512/otlp_http_protobuf", |b| {
        b.iter_batched(
            || (0..512).map(span_data).collect::<Vec<_>>(),
            |batch| runtime.block_on(http.export(batch)).expect("export"),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn propagation(c: &mut Cpu) {
    let cx = Context::new().with_remote_span_context(SpanContext::new(
        TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736_u128),
        SpanId::from(0x00f0_67aa_0ba9_02b7_u64),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    ));
    let mut group = c.benchmark_group("propagation");
    group.bench_function("inject/http_headers", |b| {
        b.iter(|| {
            let mut headers = http::HeaderMap::new();
            spindle_sdk::http::inject_into_headers(&cx, &mut headers);
            headers
        })
    });
    let mut headers = http::HeaderMap::new();
    spindle_sdk::http::inject_into_headers(&cx, &mut headers);
    group.bench_function("extract/http_headers", |b| {
        b.iter(|| spindle_sdk::http::extract_from_headers(black_box(&headers)))
    });
    group.bench_function("inject/kafka_headers", |b| {
        b.iter(|| spindle_sdk::kafka::inject_into(&cx, OwnedHeaders::new()))
    });
    let kafka_headers = spindle_sdk::kafka::inject_into(&cx, OwnedHeaders::new());
    group.bench_function("extract/kafka_headers", |b| {
        b.iter(|| spindle_sdk::kafka::extract_from_headers(black_box(&kafka_headers)))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .with_measurement(ThreadCpuTime)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = spans, http_layer, export, propagation
}
criterion_main!(benches);
