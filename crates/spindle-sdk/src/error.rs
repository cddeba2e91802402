//! Errors the SDK can report.
//!
//! Only [`crate::SpindleBuilder::try_init`] and friends surface them: [`crate::init`] logs them
//! and degrades to plain logging instead, so a tracing problem never stops a service.

use std::path::PathBuf;
use std::time::Duration;

/// Why tracing could not be set up as configured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InitError {
    /// A setting (from the builder or an `OTEL_*` variable) could not be understood.
    #[error("invalid setting {name}={value:?}: {reason}")]
    InvalidSetting {
        /// The builder method or environment variable that held the value.
        name: &'static str,
        /// The value as given.
        value: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The OTLP exporter could not be built (for example an unparsable endpoint).
    #[error("cannot build the otlp exporter for {endpoint}: {source}")]
    Exporter {
        /// The endpoint the exporter was meant to send to.
        endpoint: String,
        /// The underlying error of `opentelemetry-otlp`.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// A TLS file (CA certificate, client certificate or key) could not be read or used.
    #[error("cannot use the {what} {path:?} (from {source_setting}): {reason}")]
    TlsFile {
        /// Which file: `CA certificate file`, `client certificate file`, `client key file`.
        what: &'static str,
        /// The path as configured.
        path: PathBuf,
        /// The variable or builder method that named the file.
        source_setting: &'static str,
        /// What was wrong with it.
        reason: String,
    },
    /// TLS for an `https://` endpoint could not be set up (for example, nothing to trust).
    #[error("cannot set up tls for {endpoint}: {reason}")]
    Tls {
        /// The endpoint TLS was meant for.
        endpoint: String,
        /// Why not.
        reason: String,
    },
    /// The HTTP client of the OTLP/HTTP exporter could not be built.
    #[error("cannot build the otlp http client: {0}")]
    HttpClient(#[source] reqwest::Error),
    /// The background export worker could not be started.
    #[error("cannot start the span export worker: {0}")]
    Worker(#[source] std::io::Error),
    /// Another global `tracing` subscriber was installed before this one.
    #[error("a global tracing subscriber is already installed")]
    SubscriberAlreadySet,
}

/// Why a flush or shutdown did not complete cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShutdownError {
    /// The export worker did not answer within the allowed time; spans still queued may be lost.
    #[error("span export did not finish within {0:?}")]
    Timeout(Duration),
    /// The exporter reported an error while exporting the remaining spans.
    #[error("span export failed: {0}")]
    Export(String),
    /// The SDK was already shut down.
    #[error("tracing is already shut down")]
    AlreadyShutDown,
}
