//! The one gRPC call the exporter makes — a unary `TraceService/Export` — spoken over the
//! `h2` crate's HTTP/2 client directly (docs/adr/025-sdk-grpc-over-h2.md).
//!
//! A request is the message's bytes as the encoder left them, behind the five bytes of gRPC
//! framing it left room for: handed to `h2` as one `Bytes`, written to the socket from where
//! they lie, and returned for the next request once the answer is in. The answer is a
//! HEADERS frame, the response message and the trailers carrying `grpc-status`; anything else
//! (a non-200 status, a missing status, a compressed or oversized message) fails the export
//! with a message that says what came back.
//!
//! One connection is kept and used again; when it fails or the server closes it, the next
//! export connects anew. The worker sleeps outside its runtime, so a close that arrived
//! meanwhile may only show when a request goes out on that connection: a request on a kept
//! connection that fails with an I/O error, a GOAWAY or a refused stream is sent once more,
//! on a new connection, as HTTP clients do with a request the server never took. Its task runs on the export worker's runtime, so it only runs while
//! the worker exports (module `export`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use h2::client::SendRequest;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, TE, USER_AGENT};
use http::{HeaderMap, Request, Uri};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

use crate::error::InitError;
use crate::transport::{percent_decode, ClientTls, Headers};

/// The bytes of gRPC framing before a message: the compressed flag and the length.
pub(crate) const MESSAGE_HEADER_BYTES: usize = 5;

/// The largest response message read; an OTLP export response is a few bytes.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// The receive windows offered to the server; only responses flow this way.
const WINDOW_BYTES: u32 = 1 << 20;

/// A failed call: the text says what failed; `connection` when no request was sent.
#[derive(Debug)]
pub(crate) struct CallError {
    pub(crate) connection: bool,
    pub(crate) text: String,
}

impl CallError {
    fn connection(text: impl Into<String>) -> Self {
        Self { connection: true, text: text.into() }
    }

    fn call(text: impl Into<String>) -> Self {
        Self { connection: false, text: text.into() }
    }
}

/// How an attempt failed: on a kept connection that turned out to be closed before the
/// request reached it (worth one more attempt on a new one), or for good.
enum Failure {
    Stale(CallError),
    Final(CallError),
}

impl Failure {
    fn into_error(self) -> CallError {
        match self {
            Self::Stale(e) | Self::Final(e) => e,
        }
    }
}

/// A gRPC client for one method of one endpoint; see the module docs.
pub(crate) struct GrpcClient {
    /// Scheme, authority and the method's path: what every request's pseudo-headers say.
    uri: Uri,
    host: String,
    port: u16,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    /// `content-type`, `te`, `user-agent`, `grpc-encoding` and the configured metadata.
    headers: HeaderMap,
    connect_timeout: Duration,
    connection: Mutex<Option<Connection>>,
}

/// A kept connection: its request handle and whether its task has ended (the server closed
/// it, or it failed).
#[derive(Clone)]
struct Connection {
    sender: SendRequest<Bytes>,
    ended: Arc<AtomicBool>,
}

impl std::fmt::Debug for GrpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcClient")
            .field("uri", &self.uri)
            .field("tls", &self.tls.is_some())
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl GrpcClient {
    /// A client calling `path` at `endpoint` (`http://host:port` or `https://…`, any path in
    /// it ignored, as gRPC clients do); `Err` with the reason for an unusable endpoint.
    pub(crate) fn new(
        endpoint: &str,
        path: &'static str,
        connect_timeout: Duration,
        tls: Option<&ClientTls>,
        metadata: &Headers,
        gzip: bool,
    ) -> Result<Self, InitError> {
        let invalid = |reason: &str| super::invalid_endpoint(endpoint, reason);
        let parsed: Uri = endpoint.trim().parse().map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
        let https = match parsed.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("http") => false,
            Some(s) if s.eq_ignore_ascii_case("https") => true,
            _ => return Err(invalid("expected an http:// or https:// URL")),
        };
        let authority = parsed.authority().ok_or_else(|| invalid("no host"))?.clone();
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let uri = Uri::builder()
            .scheme(if https { "https" } else { "http" })
            .authority(authority)
            .path_and_query(path)
            .build()
            .map_err(|e| invalid(&e.to_string()))?;
        let tls = match (https, tls) {
            (false, _) => None,
            (true, Some(tls)) => {
                let config = tls.rustls_config(&[b"h2"]).map_err(|e| match e {
                    InitError::Tls { reason, .. } => InitError::Tls { endpoint: endpoint.to_owned(), reason },
                    e => e,
                })?;
                let name = ServerName::try_from(host.clone()).map_err(|e| invalid(&e.to_string()))?;
                Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
            }
            (true, None) => return Err(invalid("an https:// endpoint needs its TLS settings")),
        };
        let mut headers = HeaderMap::with_capacity(8);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(TE, HeaderValue::from_static("trailers"));
        headers.insert(USER_AGENT, HeaderValue::from_static(concat!("spindle-sdk/", env!("CARGO_PKG_VERSION"))));
        if gzip {
            headers.insert(HeaderName::from_static("grpc-encoding"), HeaderValue::from_static("gzip"));
        }
        for (name, value) in metadata.iter() {
            let bad =
                |reason: String| InitError::InvalidSetting { name: "header", value: format!("{name}=…"), reason };
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| bad(e.to_string()))?;
            let mut value = HeaderValue::from_str(value).map_err(|e| bad(e.to_string()))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        Ok(Self { uri, host, port, tls, headers, connect_timeout, connection: Mutex::new(None) })
    }

    /// Sends `request` — a message behind [`MESSAGE_HEADER_BYTES`] of room, which this fills —
    /// and returns the response message. The request comes back (second value) once sent, for
    /// the next one's buffer, when no one else holds it.
    pub(crate) async fn unary(
        &self,
        request: Vec<u8>,
        compressed: bool,
    ) -> (Result<Bytes, CallError>, Option<Vec<u8>>) {
        let mut request = request;
        let Some(length) = request.len().checked_sub(MESSAGE_HEADER_BYTES).and_then(|n| u32::try_from(n).ok()) else {
            return (Err(CallError::call("request too large for one gRPC message")), None);
        };
        request[0] = u8::from(compressed);
        request[1..MESSAGE_HEADER_BYTES].copy_from_slice(&length.to_be_bytes());
        let body = Bytes::from(request);
        let result = self.call(body.clone()).await;
        // h2 has let go of every frame once the answer is complete; not after a failure.
        let spare = body.try_into_mut().ok().map(Vec::from);
        (result, spare)
    }

    async fn call(&self, body: Bytes) -> Result<Bytes, CallError> {
        match self.attempt(body.clone()).await {
            // A kept connection the server had closed while the worker slept (an idle
            // timeout, a restart): the request never reached it. Once more, on a new one.
            Err(Failure::Stale(_)) => {
                self.forget();
                self.attempt(body).await.map_err(Failure::into_error)
            }
            result => result.map_err(Failure::into_error),
        }
    }

    async fn attempt(&self, body: Bytes) -> Result<Bytes, Failure> {
        let (mut sender, kept) = self.ready().await.map_err(Failure::Final)?;
        let failed = |error: h2::Error| {
            let stale =
                kept && (error.is_io() || error.is_go_away() || error.reason() == Some(h2::Reason::REFUSED_STREAM));
            let error = self.failed(error);
            if stale {
                Failure::Stale(error)
            } else {
                Failure::Final(error)
            }
        };
        let mut request =
            Request::post(self.uri.clone()).body(()).map_err(|e| Failure::Final(CallError::call(e.to_string())))?;
        *request.headers_mut() = self.headers.clone();
        let (response, mut stream) = sender.send_request(request, false).map_err(failed)?;
        stream.send_data(body, true).map_err(failed)?;
        let response = response.await.map_err(failed)?;
        let (parts, mut body) = response.into_parts();
        if parts.status != http::StatusCode::OK {
            return Err(Failure::Final(CallError::call(format!(
                "HTTP status {} from the gRPC endpoint",
                parts.status
            ))));
        }
        // A trailers-only answer carries its status in the headers.
        if let Some(status) = parts.headers.get("grpc-status") {
            check_status(status, &parts.headers).map_err(Failure::Final)?;
            return Ok(Bytes::new());
        }
        let final_error = |error: h2::Error| Failure::Final(self.failed(error));
        let mut message = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(final_error)?;
            let _ = body.flow_control().release_capacity(chunk.len());
            if message.len() + chunk.len() > MAX_RESPONSE_BYTES + MESSAGE_HEADER_BYTES {
                return Err(Failure::Final(CallError::call("the response is larger than an export response can be")));
            }
            message.extend_from_slice(&chunk);
        }
        let trailers = body.trailers().await.map_err(final_error)?.unwrap_or_default();
        match trailers.get("grpc-status") {
            Some(status) => check_status(status, &trailers).map_err(Failure::Final)?,
            None => return Err(Failure::Final(CallError::call("the response ended without a grpc-status"))),
        }
        response_message(message.freeze()).map_err(Failure::Final)
    }

    /// The kept connection, ready for a request (`true`), or a new one.
    async fn ready(&self) -> Result<(SendRequest<Bytes>, bool), CallError> {
        let kept = self.connection.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(kept) = kept.filter(|c| !c.ended.load(Ordering::Acquire)) {
            if let Ok(sender) = kept.sender.ready().await {
                return Ok((sender, true));
            }
        }
        let connection = self.connect().await?;
        let sender = connection.sender.clone();
        *self.connection.lock().unwrap_or_else(PoisonError::into_inner) = Some(connection);
        let sender = sender.ready().await.map_err(|e| CallError::connection(e.to_string()))?;
        Ok((sender, false))
    }

    fn forget(&self) {
        *self.connection.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    async fn connect(&self) -> Result<Connection, CallError> {
        let connecting = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| CallError::connection(format!("connect to {}:{}: {e}", self.host, self.port)))?;
            let _ = tcp.set_nodelay(true);
            match &self.tls {
                None => handshake(tcp).await,
                Some((connector, name)) => {
                    let tls = connector
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(|e| CallError::connection(super::error_chain(&e)))?;
                    handshake(tls).await
                }
            }
        };
        tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| CallError::connection(format!("connect timed out after {:?}", self.connect_timeout)))?
    }

    /// The error of a request that failed on its connection, which is then not used again.
    fn failed(&self, error: h2::Error) -> CallError {
        if !error.is_remote() || error.is_go_away() || error.is_io() {
            self.forget();
        }
        CallError::call(super::error_chain(&error))
    }
}

async fn handshake<T>(io: T) -> Result<Connection, CallError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = h2::client::Builder::new()
        .initial_window_size(WINDOW_BYTES)
        .initial_connection_window_size(WINDOW_BYTES)
        .enable_push(false)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| CallError::connection(format!("HTTP/2 handshake: {}", super::error_chain(&e))))?;
    let ended = Arc::new(AtomicBool::new(false));
    let done = Arc::clone(&ended);
    tokio::spawn(async move {
        // Ends when the server closes the connection or it fails; the next export connects anew.
        let _ = connection.await;
        done.store(true, Ordering::Release);
    });
    Ok(Connection { sender, ended })
}

/// `Ok` for `grpc-status: 0`; else the status's code and message.
fn check_status(status: &HeaderValue, headers: &HeaderMap) -> Result<(), CallError> {
    let code = status.to_str().ok().and_then(|s| s.trim().parse::<u32>().ok());
    if code == Some(0) {
        return Ok(());
    }
    // Percent-encoded UTF-8; what does not decode is shown as it came.
    let raw = headers.get("grpc-message").map(|m| String::from_utf8_lossy(m.as_bytes())).unwrap_or_default();
    let message = percent_decode(&raw).unwrap_or_else(|| raw.into_owned());
    let name = code.map_or("an unreadable status", code_name);
    Err(CallError::call(format!("{name}: {message}")))
}

/// The response's message: one uncompressed gRPC message, or none.
fn response_message(mut body: Bytes) -> Result<Bytes, CallError> {
    if body.is_empty() {
        return Ok(body);
    }
    if body.len() < MESSAGE_HEADER_BYTES {
        return Err(CallError::call("the response message is cut short"));
    }
    let compressed = body.get_u8();
    let length = body.get_u32() as usize;
    if compressed != 0 {
        return Err(CallError::call("the response message is compressed, which was not asked for"));
    }
    if length != body.len() {
        return Err(CallError::call(format!("the response message says {length} bytes and {} came", body.len())));
    }
    Ok(body)
}

/// The gRPC status code's name (`UNAVAILABLE`, ...).
fn code_name(code: u32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES.get(code as usize).copied().unwrap_or("an unknown status")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_name_their_code_and_decode_their_message() {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-message", HeaderValue::from_static("tenant%20%22a%22 over quota"));
        let error = check_status(&HeaderValue::from_static("8"), &headers).expect_err("8 is an error");
        assert_eq!(error.text, "RESOURCE_EXHAUSTED: tenant \"a\" over quota");
        headers.insert("grpc-message", HeaderValue::from_static("100%"));
        let error = check_status(&HeaderValue::from_static("14"), &headers).expect_err("14 is an error");
        assert_eq!(error.text, "UNAVAILABLE: 100%", "an escape that does not decode is shown as it came");
        assert!(check_status(&HeaderValue::from_static("0"), &HeaderMap::new()).is_ok());
        let error = check_status(&HeaderValue::from_static("x"), &HeaderMap::new()).expect_err("unreadable");
        assert!(error.text.starts_with("an unreadable status"), "{}", error.text);
        assert_eq!(code_name(99), "an unknown status");
    }

    #[test]
    fn response_messages_are_checked_not_trusted() {
        assert_eq!(response_message(Bytes::new()).expect("no message"), Bytes::new());
        assert_eq!(response_message(Bytes::from_static(b"\0\0\0\0\x02ab")).expect("one message"), "ab");
        for bad in [&b"\0\0\0"[..], b"\x01\0\0\0\x02ab", b"\0\0\0\0\x05ab", b"\0\0\0\0\x01ab"] {
            assert!(response_message(Bytes::copy_from_slice(bad)).is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        /// What a backend answers is outside input: any bytes give a message or an error.
        #[test]
        fn any_answer_is_read_or_refused_without_panicking(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            status in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..8),
            message in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            if let Ok(message) = response_message(Bytes::from(body.clone())) {
                proptest::prop_assert!(message.is_empty() || message.len() + MESSAGE_HEADER_BYTES == body.len());
            }
            let mut headers = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_bytes(&message) {
                headers.insert("grpc-message", value);
            }
            if let Ok(status) = HeaderValue::from_bytes(&status) {
                let _ = check_status(&status, &headers);
            }
        }
    }

    #[test]
    fn metadata_goes_out_as_sensitive_headers() {
        let mut headers = Headers::default();
        headers.set("Authorization", "Bearer two".to_owned());
        let client = GrpcClient::new("http://spindle:4317", "/a.B/C", Duration::from_secs(1), None, &headers, false)
            .expect("client");
        let value = client.headers.get("authorization").expect("sent");
        assert_eq!(value.to_str().ok(), Some("Bearer two"));
        assert!(value.is_sensitive());
        assert_eq!(client.headers.get("te").map(|v| v.as_bytes()), Some(&b"trailers"[..]));
        assert!(!format!("{client:?}").contains("Bearer"));
    }

    #[test]
    fn endpoints_are_parsed_once_and_checked() {
        let headers = Headers::default();
        let client =
            GrpcClient::new("http://[::1]:4317/ignored", "/a.B/C", Duration::from_secs(1), None, &headers, true)
                .expect("an IPv6 endpoint");
        assert_eq!((client.host.as_str(), client.port), ("::1", 4317));
        assert_eq!(client.uri.to_string(), "http://[::1]:4317/a.B/C");
        assert_eq!(client.headers.get("grpc-encoding").map(|v| v.as_bytes()), Some(&b"gzip"[..]));
        let client = GrpcClient::new("http://collector", "/a.B/C", Duration::from_secs(1), None, &headers, false)
            .expect("no port");
        assert_eq!(client.port, 80);
        for bad in ["collector:4317", "ftp://collector:21", "http://", "https://collector:4317"] {
            assert!(GrpcClient::new(bad, "/a.B/C", Duration::from_secs(1), None, &headers, false).is_err(), "{bad}");
        }
    }
}
