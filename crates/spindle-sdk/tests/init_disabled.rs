//! Tracing that cannot or must not export leaves plain logging and never panics:
//! `OTEL_SDK_DISABLED=true`, an unusable endpoint, an invalid `OTEL_*` value.
//! One test per binary, because a process has one global subscriber.

mod support;

use std::time::Duration;

use spindle_sdk::InitError;
use support::OtlpSink;

#[test]
fn disabled_or_failed_init_degrades_to_logging_without_panicking() {
    let sink = OtlpSink::start();
    // The only test of this binary: nothing else reads the environment concurrently.
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", &sink.grpc_endpoint);

    // An endpoint the exporter cannot use is reported by try_init, before anything is
    // installed.
    let error = spindle_sdk::builder("svc").endpoint("::not a url::").try_init().expect_err("the endpoint is unusable");
    assert!(matches!(error, InitError::Exporter { .. }), "{error}");
    assert!(error.to_string().contains("::not a url::"), "{error}");

    std::env::set_var("OTEL_SDK_DISABLED", "true");
    let guard = spindle_sdk::init("svc");
    assert!(!guard.is_exporting());
    tracing::info_span!("not_exported").in_scope(|| tracing::info!("logging still works"));
    guard.flush().expect("flushing nothing succeeds");
    assert_eq!(guard.stats(), spindle_sdk::ExportStats::default());

    // Invalid settings: try_init names them, init carries on with logging.
    std::env::set_var("OTEL_SDK_DISABLED", "false");
    std::env::set_var("OTEL_TRACES_SAMPLER", "sometimes");
    let error = spindle_sdk::builder("svc").try_init().expect_err("invalid sampler");
    assert!(error.to_string().contains("OTEL_TRACES_SAMPLER"), "{error}");
    let fallback = spindle_sdk::init("svc");
    assert!(!fallback.is_exporting());
    tracing::info_span!("still_not_exported").in_scope(|| {});
    drop((guard, fallback));

    std::thread::sleep(Duration::from_millis(300));
    assert!(sink.spans().is_empty(), "nothing is exported: {:?}", sink.spans());
}
