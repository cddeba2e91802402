//! Tracing for Rust services in one call, with context that crosses Kafka, HTTP and async work.
//!
//! `spindle-sdk` turns [`tracing`] spans and events into OpenTelemetry spans with a layer of
//! its own, exports them over OTLP the way the Spindle backend (or any OpenTelemetry
//! collector) expects, interoperates with the [`opentelemetry`] API (its spans join the same
//! traces; [`SpanExt`] gives `tracing` spans the OpenTelemetry operations), and adds what the
//! standard crates leave out:
//!
//! - **one-call init** ([`init`], [`builder`]) with readable logs, OTLP gRPC or HTTP export,
//!   samplers, resource attributes and the `OTEL_*` environment variables;
//! - **cheap export**: `grpc` and `http/protobuf` spans are written to OTLP protobuf straight
//!   from the finished spans by the SDK's own exporter ([`otlp`]), optionally gzip-compressed;
//! - **graceful degradation**: a bounded export queue on its own thread, so a slow or dead
//!   backend costs the service nothing but counted, rate-limited-logged drops
//!   ([`TracingGuard::stats`]); a failed init or `OTEL_SDK_DISABLED=true` leaves plain logging;
//! - **a guard that flushes on drop without deadlocking**, even on a `current_thread` runtime,
//!   and a [`SpanFlusher`] that exports with a timeout, for a service that must know its spans
//!   are out before it acknowledges work (commits offsets, produces records), so that a crash
//!   loses none of them;
//! - **Kafka** propagation for rdkafka (feature `kafka`, module `kafka`);
//! - **HTTP** propagation: an axum/tower server layer (feature `axum`) and a reqwest
//!   middleware (feature `reqwest`), both in module `http`;
//! - **async** helpers that keep spawned tasks in their trace ([`task`]).
//!
//! ```no_run
//! #[tokio::main]
//! async fn main() {
//!     let _guard = spindle_sdk::init("ingestion-service");
//!     fetch_instrument_data(42).await;
//! } // the guard flushes the last spans here
//!
//! // `#[instrument]` is the Rust form of Python's `@traced`: a span per call, arguments as
//! // attributes, and with `err` a returned error becomes an exception event with status ERROR.
//! #[tracing::instrument(err)]
//! async fn fetch_instrument_data(symbol_id: u32) -> Result<(), std::io::Error> {
//!     tracing::info!("fetching");
//!     Ok(())
//! }
//! ```
//!
//! # Environment variables
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `OTEL_SDK_DISABLED` | `true`: no export, logging only | `false` |
//! | `OTEL_SERVICE_NAME` | overrides the name passed to [`init`] | |
//! | `OTEL_RESOURCE_ATTRIBUTES` | `key=value,...` added to the resource | |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | base URL of the collector | `http://localhost:4317` (gRPC), `:4318` (HTTP) |
//! | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` | full traces URL, used as is | |
//! | `OTEL_EXPORTER_OTLP_PROTOCOL` | `grpc`, `http/protobuf`, `http/json` | `grpc` |
//! | `OTEL_EXPORTER_OTLP_COMPRESSION` | `gzip` or `none` (`grpc` and `http/protobuf` only) | `none` |
//! | `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TRACES_HEADERS` | `key=value,...` (values percent-decoded) sent with every export request; the per-signal one wins per key | |
//! | `SPINDLE_TENANT` | tenant of the spans: sent as `X-Scope-OrgID` | |
//! | `OTEL_EXPORTER_OTLP_CERTIFICATE` (or `_TRACES_CERTIFICATE`) | PEM file of CAs trusted besides the system's, for `https://` endpoints | system roots |
//! | `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`, `OTEL_EXPORTER_OTLP_CLIENT_KEY` (or `_TRACES_…`) | PEM client certificate and key (mutual TLS) | |
//! | `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG` | `always_on`, `traceidratio`, `parentbased_traceidratio`, ... | `parentbased_always_on` |
//! | `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BSP_EXPORT_TIMEOUT` | queue and batch settings (delays in ms) | 2048, 512, 1000, 10000 |
//! | `RUST_LOG` | log filter | `info` |
//!
//! A value set on the builder wins over the variable; the service name given to [`init`] is the
//! exception, a default that `OTEL_SERVICE_NAME` overrides.
//!
//! # Secured backends
//!
//! An `https://` endpoint is reached over TLS (rustls with ring) for every protocol, trusting
//! the system's roots plus the CA file, presenting the client certificate when one is set;
//! [`SpindleBuilder::ca_certificate`], [`SpindleBuilder::client_certificate`],
//! [`SpindleBuilder::client_key`], [`SpindleBuilder::header`] and [`SpindleBuilder::tenant`]
//! set the same in code. A file that cannot be read or used fails init with an error naming
//! it (so [`init`] continues with logs only). The SDK makes ring the process's default rustls
//! crypto provider when none is installed yet.
//!
//! ```no_run
//! let _guard = spindle_sdk::builder("clstock-api")
//!     .endpoint("https://spindle.internal:4317")
//!     .ca_certificate("/etc/spindle/ca.pem")
//!     .header("authorization", "Bearer s3cr3t")
//!     .tenant("team-a")
//!     .init();
//! ```
//!
//! # Architecture invariants
//!
//! The SDK never crashes, blocks or slows the traced service when the backend is down: ending a
//! span is a non-blocking `try_send` into a bounded queue; export runs on the SDK's own thread
//! and runtime; every wait (flush, shutdown) has a timeout. No public function panics.

#![warn(missing_docs)]

mod bridge;
mod config;
mod error;
mod export;
mod guard;
mod init;
mod layer;
mod logs;
pub mod otlp;
pub mod propagation;
mod record;
mod span_ext;
mod subscriber;
pub mod task;
mod transport;

#[cfg(any(feature = "axum", feature = "reqwest"))]
pub mod http;
#[cfg(feature = "kafka")]
pub mod kafka;

pub use config::{
    BatchSettings, Compression, LogFormat, ParentBasedRoot, Protocol, SamplerConfig, DEFAULT_GRPC_ENDPOINT,
    DEFAULT_HTTP_ENDPOINT, TENANT_HEADER,
};
pub use error::{InitError, ShutdownError};
pub use export::{ExportStats, SpanFlusher};
pub use guard::TracingGuard;
pub use init::{BoxedLayer, SpindleBuilder};
pub use propagation::{current_context, current_trace_id, record_error};
pub use span_ext::SpanExt;
pub use task::{join_all_in_current_span, spawn_blocking_in_current_span, spawn_in_current_span};

// The exact versions the SDK is built with, so services never mix incompatible releases.
pub use opentelemetry;
pub use opentelemetry_otlp;
pub use opentelemetry_sdk;
pub use tracing;
pub use tracing_subscriber;

#[cfg(feature = "kafka")]
pub use rdkafka;
#[cfg(feature = "reqwest")]
pub use reqwest_middleware;

/// Sets up logging and tracing for `service_name` with every default (and the `OTEL_*`
/// variables) and returns the guard to keep until the service exits.
///
/// Never panics: if export cannot be set up the reason is logged and the service runs with
/// plain logging. Use [`builder`] to configure more, or [`SpindleBuilder::try_init`] to get
/// the error instead.
pub fn init(service_name: &str) -> TracingGuard {
    builder(service_name).init()
}

/// Starts configuring tracing for `service_name`; finish with [`SpindleBuilder::init`].
///
/// ```no_run
/// use std::time::Duration;
/// use spindle_sdk::Protocol;
///
/// let _guard = spindle_sdk::builder("clstock-api")
///     .endpoint("http://spindle:4318")
///     .protocol(Protocol::HttpProtobuf)
///     .sample_ratio(0.25)
///     .resource_attribute("deployment.environment.name", "prod")
///     .log_filter("info,h2=warn")
///     .max_queue_size(4096)
///     .scheduled_delay(Duration::from_millis(500))
///     .init();
/// ```
pub fn builder(service_name: &str) -> SpindleBuilder {
    SpindleBuilder::new(service_name)
}
