//! `spindle_sdk::init` as a service calls it: global subscriber, global tracer provider,
//! `OTEL_*` variables. One test per binary, because a process has one global subscriber.

mod support;

use std::time::Duration;

use opentelemetry::trace::{Tracer, TracerProvider as _};
use support::OtlpSink;

#[tracing::instrument]
async fn fetch_instrument_data(symbol_id: u32) {
    tracing::info!(symbol_id, "fetching");
    tracing::info_span!("enrich_context").in_scope(|| {});
}

#[test]
fn init_exports_globally_honours_otel_variables_and_a_second_init_degrades() {
    let sink = OtlpSink::start();
    // The only test of this binary: nothing else reads the environment concurrently.
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", &sink.http_endpoint);
    std::env::set_var("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf");
    std::env::set_var("OTEL_SERVICE_NAME", "ingestion-service-canary");
    std::env::set_var("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=ci");
    std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "3600000");

    let guard = spindle_sdk::init("ingestion-service");
    assert!(guard.is_exporting());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(fetch_instrument_data(42));
    // Code using the OpenTelemetry API directly reaches the same pipeline.
    opentelemetry::global::tracer_provider().tracer("direct").in_span("via_opentelemetry_api", |_| {});

    // A second init cannot install its subscriber: it degrades, it does not panic.
    let second = spindle_sdk::init("another-service");
    assert!(!second.is_exporting());
    let error = spindle_sdk::builder("another-service").try_init().expect_err("already installed");
    assert!(matches!(error, spindle_sdk::InitError::SubscriberAlreadySet), "{error}");

    // The batch delay is an hour: only the guard's flush on drop can deliver the spans.
    drop(guard);
    let wait = Duration::from_secs(10);
    let span = sink.wait_for_span("ingestion-service-canary", "fetch_instrument_data", wait);
    assert_eq!(span.attr("symbol_id"), Some("42"));
    assert_eq!(span.resource.get("deployment.environment.name").map(String::as_str), Some("ci"));
    let child = sink.wait_for_span("ingestion-service-canary", "enrich_context", wait);
    assert_eq!(child.parent_span_id, span.span_id);
    sink.wait_for_span("ingestion-service-canary", "via_opentelemetry_api", wait);
}
