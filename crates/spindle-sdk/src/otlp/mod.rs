//! The SDK's own OTLP span exporter: gRPC and HTTP/protobuf.
//!
//! [`OtlpExporter`] encodes a batch of `SpanData` directly into the bytes of an
//! `ExportTraceServiceRequest` (module `encode`) and sends them as they are: a unary gRPC call
//! (`/opentelemetry.proto.collector.trace.v1.TraceService/Export`) over HTTP/2 (module
//! `grpc`), or an OTLP/HTTP `POST` with `Content-Type: application/x-protobuf` over reqwest.
//! Optionally gzip-compressed. It replaces opentelemetry-otlp's exporter for these two
//! protocols because that one converts every span into owned protobuf structs first, which
//! cost 2–4 µs per span on the export thread (docs/adr/007-sdk-otlp-encoder.md); `http/json` still goes
//! through opentelemetry-otlp.
//!
//! An `https://` endpoint is reached over TLS (rustls): the system's trusted roots, plus a CA
//! file and a client certificate when configured; every request carries the configured
//! headers, as gRPC metadata or HTTP headers (module `transport`).
//!
//! After a failed export the next one waits — 250 ms, doubling up to 5 s while failures
//! last — before it tries again: a backend that is down then costs the export thread a timer,
//! not an encode and a connection attempt per batch, and the bounded queue in front of it
//! sheds the excess as counted drops (an atomic increment on the service's thread).
//!
//! The SDK installs it itself (see [`crate::SpindleBuilder`]); it is public for services
//! that build their own tracer provider and for the benchmarks. Within the SDK it runs on the
//! export worker's runtime only, which bounds every call with its own timeout; it never
//! retries a batch the backend failed or refused — that batch is counted by the worker and
//! dropped. (A gRPC request that found its kept connection closed by the backend meanwhile
//! never reached it; it goes once more on a new connection, module `grpc`.)

pub(crate) mod encode;
mod grpc;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;

use crate::config::Compression;
use crate::error::InitError;
use crate::export::{Batch, BoxFuture, DynSpanExporter};
use crate::record::SpanRecord;
use crate::transport::{ClientTls, Headers, TlsFiles};
use encode::{decode_partial_success, TraceRequestEncoder};
use grpc::{GrpcClient, MESSAGE_HEADER_BYTES};

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// How often, at most, a partial success answer is logged.
const PARTIAL_SUCCESS_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The wait before the next attempt after a first failure, and its ceiling.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// When the next export may try the backend, after failures.
#[derive(Debug, Default)]
struct Backoff {
    retry_at: Option<Instant>,
    next: Duration,
}

impl Backoff {
    fn failed(&mut self, now: Instant) {
        let wait = if self.next.is_zero() { FIRST_BACKOFF } else { self.next };
        self.retry_at = Some(now + wait);
        self.next = (wait * 2).min(MAX_BACKOFF);
    }

    fn succeeded(&mut self) {
        *self = Self::default();
    }
}

#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per exporter
enum Transport {
    Grpc(GrpcClient),
    /// The client sends the headers itself (its default headers).
    Http {
        client: reqwest::Client,
        url: String,
    },
}

/// An OTLP span exporter that writes protobuf straight from `SpanData`; see the module docs.
#[derive(Debug)]
pub struct OtlpExporter {
    encoder: Mutex<TraceRequestEncoder>,
    transport: Transport,
    compression: Compression,
    /// Bounds an export through [`SpanExporter::export`]; the SDK's worker bounds its own.
    timeout: Duration,
    last_partial_log: Mutex<Option<Instant>>,
    backoff: Mutex<Backoff>,
    /// The last gRPC request's buffer, back once sent, for the next request: a buffer of a
    /// batch's size allocated anew every time costs the export thread page faults.
    spare: Mutex<Vec<u8>>,
}

impl OtlpExporter {
    /// A gRPC exporter for `endpoint` (`http://host:4317`, or `https://` for TLS with the
    /// system's trusted roots); each export is abandoned after `timeout`. Connects lazily, so
    /// a backend that is down is an export error later, not a build error now. Must be called
    /// inside a tokio runtime, which then runs the connection.
    pub fn grpc(endpoint: &str, timeout: Duration, compression: Compression) -> Result<Self, InitError> {
        let tls = crate::transport::load_for(endpoint, &TlsFiles::default())?;
        Self::grpc_with(endpoint, timeout, compression, tls.as_ref(), &Headers::default())
    }

    /// [`OtlpExporter::grpc`] with TLS material (used when `endpoint` is `https://`) and
    /// headers sent as metadata of every request.
    pub(crate) fn grpc_with(
        endpoint: &str,
        timeout: Duration,
        compression: Compression,
        tls: Option<&ClientTls>,
        headers: &Headers,
    ) -> Result<Self, InitError> {
        // Responses are not accepted compressed: they are a few bytes at most, and a server
        // that may compress them then does, costing a gzip decoder's set-up per export.
        let client = GrpcClient::new(endpoint, EXPORT_PATH, timeout, tls, headers, compression == Compression::Gzip)?;
        Ok(Self::new(Transport::Grpc(client), compression, timeout))
    }

    /// An OTLP/HTTP protobuf exporter posting to `url`, the full URL (`http://host:4318/v1/traces`,
    /// or `https://` for TLS with the system's trusted roots); each export is abandoned after
    /// `timeout`.
    pub fn http_protobuf(url: &str, timeout: Duration, compression: Compression) -> Result<Self, InitError> {
        let tls = crate::transport::load_for(url, &TlsFiles::default())?;
        Self::http_protobuf_with(url, timeout, compression, tls.as_ref(), &Headers::default())
    }

    /// [`OtlpExporter::http_protobuf`] with TLS material (used when `url` is `https://`) and
    /// headers sent with every request.
    pub(crate) fn http_protobuf_with(
        url: &str,
        timeout: Duration,
        compression: Compression,
        tls: Option<&ClientTls>,
        headers: &Headers,
    ) -> Result<Self, InitError> {
        reqwest::Url::parse(url).map_err(|e| invalid_endpoint(url, e))?;
        let client = crate::transport::http_client(url, timeout, tls, headers)?;
        Ok(Self::new(Transport::Http { client, url: url.to_owned() }, compression, timeout))
    }

    fn new(transport: Transport, compression: Compression, timeout: Duration) -> Self {
        Self {
            timeout,
            encoder: Mutex::new(TraceRequestEncoder::new(&Resource::builder_empty().build())),
            transport,
            compression,
            last_partial_log: Mutex::new(None),
            backoff: Mutex::new(Backoff::default()),
            spare: Mutex::default(),
        }
    }

    fn encode(&self, batch: &Batch<'_>) -> Result<Vec<u8>, OTelSdkError> {
        let mut encoder =
            self.encoder.lock().map_err(|_| OTelSdkError::InternalFailure("otlp encoder poisoned".to_owned()))?;
        let buffer = self.spare.lock().map(|mut spare| std::mem::take(&mut *spare)).unwrap_or_default();
        // gRPC's message header goes before the message, in room left for it.
        let room = if matches!(self.transport, Transport::Grpc(_)) { MESSAGE_HEADER_BYTES } else { 0 };
        Ok(encoder.encode_batch_into(buffer, room, batch.encoded, batch.records))
    }

    async fn send(&self, request: Vec<u8>) -> OTelSdkResult {
        let response = match &self.transport {
            Transport::Grpc(client) => {
                let (request, compressed) = match self.compression {
                    Compression::None => (request, false),
                    Compression::Gzip => {
                        let mut framed = vec![0; MESSAGE_HEADER_BYTES];
                        gzip_into(&mut framed, &request[MESSAGE_HEADER_BYTES..])
                            .map_err(|e| OTelSdkError::InternalFailure(format!("gzip: {e}")))?;
                        (framed, true)
                    }
                };
                let (response, spare) = client.unary(request, compressed).await;
                if let Some(mut spare) = spare.filter(|s| s.capacity() <= MAX_SPARE_BYTES) {
                    spare.clear();
                    if let Ok(mut kept) = self.spare.lock() {
                        *kept = spare;
                    }
                }
                let response = response.map_err(|e| {
                    let what = if e.connection { "connection" } else { "export" };
                    OTelSdkError::InternalFailure(format!("otlp grpc {what}: {}", e.text))
                })?;
                response.to_vec()
            }
            Transport::Http { client, url } => {
                let mut post =
                    client.post(url.as_str()).header(reqwest::header::CONTENT_TYPE, "application/x-protobuf");
                let body = match self.compression {
                    Compression::None => request,
                    Compression::Gzip => {
                        post = post.header(reqwest::header::CONTENT_ENCODING, "gzip");
                        let mut body = Vec::with_capacity(request.len() / 4);
                        gzip_into(&mut body, &request)
                            .map_err(|e| OTelSdkError::InternalFailure(format!("gzip: {e}")))?;
                        body
                    }
                };
                let response = post.body(body).send().await.map_err(|e| {
                    OTelSdkError::InternalFailure(format!("otlp http export to {url}: {}", error_chain(&e)))
                })?;
                let status = response.status();
                let body = response.bytes().await.unwrap_or_default();
                if !status.is_success() {
                    return Err(OTelSdkError::InternalFailure(format!("otlp http export to {url}: status {status}")));
                }
                body.to_vec()
            }
        };
        if let Some((rejected, message)) = decode_partial_success(&response) {
            self.log_partial_success(rejected, &message);
        }
        Ok(())
    }

    /// The backend took the request but refused some spans. Not a failed export (the rest
    /// were stored, and resending would not help), so it is logged, at most once per interval.
    fn log_partial_success(&self, rejected: i64, message: &str) {
        let Ok(mut last) = self.last_partial_log.lock() else { return };
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < PARTIAL_SUCCESS_LOG_INTERVAL) {
            return;
        }
        *last = Some(now);
        tracing::warn!(rejected_spans = rejected, reason = message, "backend rejected some spans");
    }
}

fn invalid_endpoint(endpoint: &str, reason: impl std::fmt::Display) -> InitError {
    InitError::Exporter {
        endpoint: endpoint.to_owned(),
        source: opentelemetry_otlp::ExporterBuildError::InvalidConfiguration(format!(
            "endpoint {endpoint:?}: {reason}"
        )),
    }
}

/// An error with its causes: a TLS failure (an untrusted certificate, a refused client
/// certificate) is only named by the innermost one.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    with_causes(error.to_string(), error.source())
}

/// `text`, then each cause from `source` on that it does not already say.
fn with_causes(mut text: String, mut source: Option<&(dyn std::error::Error + 'static)>) -> String {
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Appends `bytes`, gzip-compressed, to `out`.
fn gzip_into(out: &mut Vec<u8>, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    out.reserve(bytes.len() / 4);
    let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
    encoder.write_all(bytes)?;
    encoder.finish().map(|_| ())
}

/// The largest request buffer kept for the next request.
const MAX_SPARE_BYTES: usize = 8 << 20;

impl OtlpExporter {
    /// Exports a batch of the SDK's records: the export worker's path.
    pub(crate) async fn export_records(&self, batch: Batch<'_>) -> OTelSdkResult {
        if batch.len() == 0 {
            return Ok(());
        }
        let retry_at = self.backoff.lock().ok().and_then(|b| b.retry_at);
        if let Some(at) = retry_at {
            // Bounded by the worker's export timeout, like any export.
            tokio::time::sleep_until(at.into()).await;
        }
        let request = self.encode(&batch)?;
        let result = self.send(request).await;
        if let Ok(mut backoff) = self.backoff.lock() {
            match &result {
                Ok(()) => backoff.succeeded(),
                Err(_) => backoff.failed(Instant::now()),
            }
        }
        result
    }

    fn set_encoder_resource(&mut self, resource: &Resource) {
        if let Ok(encoder) = self.encoder.get_mut() {
            encoder.set_resource(resource);
        }
    }
}

impl SpanExporter for OtlpExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let records: Vec<Box<SpanRecord>> =
            batch.into_iter().map(|span| Box::new(SpanRecord::from_span_data(span))).collect();
        match tokio::time::timeout(self.timeout, self.export_records(Batch::records(&records))).await {
            Ok(result) => result,
            Err(_) => Err(OTelSdkError::Timeout(self.timeout)),
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.set_encoder_resource(resource);
    }
}

impl DynSpanExporter for OtlpExporter {
    fn export_boxed<'a>(&'a self, batch: Batch<'a>) -> BoxFuture<'a, OTelSdkResult> {
        Box::pin(self.export_records(batch))
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.set_encoder_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_ceiling_and_resets_on_success() {
        let mut backoff = Backoff::default();
        let t0 = Instant::now();
        let mut waits = Vec::new();
        for _ in 0..8 {
            backoff.failed(t0);
            waits.push(backoff.retry_at.map(|at| at - t0));
        }
        assert_eq!(waits[0], Some(FIRST_BACKOFF));
        assert_eq!(waits[1], Some(FIRST_BACKOFF * 2));
        assert_eq!(waits[7], Some(MAX_BACKOFF));
        backoff.succeeded();
        assert_eq!(backoff.retry_at, None);
        backoff.failed(t0);
        assert_eq!(backoff.retry_at, Some(t0 + FIRST_BACKOFF));
    }
}
