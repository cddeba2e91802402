//! Admission of receiver requests before their bytes are buffered or decoded.
//!
//! Three bounds, checked in this order, keep what clients send from growing memory:
//! - connections per listener ([`LimitedListener`]): beyond `max_connections` the listener
//!   stops accepting, so further connections wait in the kernel's backlog. Waiting rather
//!   than accepting and closing: gRPC and HTTP clients see a slow connect, which their
//!   connect timeout and retry already handle, instead of a reset they may log as an error
//!   and retry at once (an accept-and-close loop would also spend the server's CPU on it).
//! - requests in progress per listener: beyond `max_concurrent_requests` a request is
//!   answered backpressure at once (HTTP 429 with `Retry-After`, gRPC `RESOURCE_EXHAUSTED`
//!   with `RetryInfo`), never queued.
//! - request bytes held by all receivers ([`ByteBudget`], `max_inflight_bytes`): an HTTP
//!   request's `Content-Length`, or a gRPC message's length prefix, is reserved before its
//!   body is read; a body without a length is reserved as it streams. Over budget is
//!   backpressure too. The reservation is held until the request's spans are stored or
//!   refused, so the decoding and the decoded spans of admitted requests are bounded by it
//!   as well (decoded spans take a small multiple of their wire bytes).
//!
//! A body must arrive within `request_body_timeout`, so a client trickling uploads holds
//! its slots and bytes for that long at most; a connection that reads and writes nothing for
//! twice that ([`LimitedIo`]) is closed, so idle connections cannot hold the connection cap.
//! An HTTP/1.1 body refused with backpressure is read and thrown away before the answer
//! (within the same deadline and `max_body_bytes`), so that a client still writing it reads
//! the 429 instead of a broken pipe ([`Admission::discard_body`]).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use http_body::Frame;
use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tonic::{Code, Status};

use crate::limits::{Limit, Limits};
use crate::telemetry::Telemetry;

/// What a client is told to wait before retrying (`Retry-After`, gRPC `RetryInfo`).
pub const RETRY_AFTER_SECS: u64 = 1;

/// The request bytes all receivers may hold at once.
pub struct ByteBudget {
    permits: Arc<Semaphore>,
    capacity: usize,
}

impl ByteBudget {
    pub fn new(capacity: usize) -> Arc<Self> {
        let capacity = capacity.clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(ByteBudget { permits: Arc::new(Semaphore::new(capacity)), capacity })
    }

    /// Reserves `n` bytes, or nothing when they are not free. A request larger than the whole
    /// budget gets in alone when nothing else is held, so a budget set below the body limit
    /// makes such requests wait their turn instead of refusing them for ever.
    pub fn try_reserve(&self, n: usize) -> Option<OwnedSemaphorePermit> {
        let n = n.min(self.capacity).min(u32::MAX as usize) as u32;
        Arc::clone(&self.permits).try_acquire_many_owned(n).ok()
    }

    /// Bytes reserved now.
    pub fn held(&self) -> usize {
        self.capacity - self.permits.available_permits()
    }
}

/// The admission state of one receiver listener.
#[derive(Clone)]
pub struct Admission(Arc<Inner>);

struct Inner {
    listener: &'static str,
    max_connections: usize,
    connections: Arc<Semaphore>,
    max_requests: usize,
    requests: Arc<Semaphore>,
    budget: Arc<ByteBudget>,
    max_body_bytes: usize,
    body_timeout: Duration,
    telemetry: Arc<Telemetry>,
}

impl Admission {
    pub fn new(
        listener: &'static str,
        limits: &Limits,
        budget: Arc<ByteBudget>,
        max_body_bytes: usize,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        let max_connections = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
        let max_requests = limits.max_concurrent_requests.clamp(1, Semaphore::MAX_PERMITS);
        Admission(Arc::new(Inner {
            listener,
            max_connections,
            connections: Arc::new(Semaphore::new(max_connections)),
            max_requests,
            requests: Arc::new(Semaphore::new(max_requests)),
            budget,
            max_body_bytes,
            body_timeout: limits.request_body_timeout,
            telemetry,
        }))
    }

    fn hit(&self, limit: Limit, what: std::fmt::Arguments<'_>) {
        self.0.telemetry.limits.hit(limit, 1, &format_args!("{} listener: {what}", self.0.listener));
    }

    /// A slot for one request in progress, or `None` (counted) when all are taken.
    fn try_request(&self) -> Option<OwnedSemaphorePermit> {
        let slot = Arc::clone(&self.0.requests).try_acquire_owned().ok();
        if slot.is_none() {
            self.hit(Limit::ConcurrentRequests, format_args!("{} requests in progress", self.0.max_requests));
        }
        slot
    }

    /// Reserves `n` request bytes, or `None` (counted) when the budget has no room.
    fn reserve(&self, n: usize) -> Option<OwnedSemaphorePermit> {
        let reserved = self.0.budget.try_reserve(n);
        if reserved.is_none() {
            self.hit(
                Limit::InflightBytes,
                format_args!("{n} request bytes refused, {} of {} held", self.0.budget.held(), self.0.budget.capacity),
            );
        }
        reserved
    }

    /// `listener`, accepting at most `max_connections` connections at once.
    pub fn listen(&self, listener: TcpListener) -> LimitedListener {
        LimitedListener { listener, admission: self.clone() }
    }
}

// ---- connections ----

/// A listener that stops accepting while `max_connections` of its connections are open.
pub struct LimitedListener {
    listener: TcpListener,
    admission: Admission,
}

/// An accepted connection; its slot frees when the connection is dropped. It is closed
/// (reads fail) once it has read and written nothing for `idle`, or has been reading for
/// `idle` without writing anything: without this, clients that open connections and send
/// nothing (or keep idle ones), or trickle a request head byte by byte, would hold the
/// connection cap and lock everybody else out (hyper's own header timeout needs a timer
/// `axum::serve` does not set). A well-behaved connection always writes within that time
/// of starting to read: the answer to its request, 408 at the body timeout (half of
/// `idle`), and over HTTP/2 the window updates and ping acknowledgements as well. Activity
/// only stamps a time; the timer is moved when it fires, not on every read.
pub struct LimitedIo<T> {
    io: T,
    _slot: OwnedSemaphorePermit,
    idle: Duration,
    last_active: tokio::time::Instant,
    /// The first read since the last write.
    reading_since: Option<tokio::time::Instant>,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl<T> LimitedIo<T> {
    fn new(io: T, slot: OwnedSemaphorePermit, idle: Duration) -> Self {
        let now = tokio::time::Instant::now();
        let deadline = Box::pin(tokio::time::sleep_until(now + idle));
        LimitedIo { io, _slot: slot, idle, last_active: now, reading_since: None, deadline }
    }

    /// Whether the connection has been idle, or reading without writing, for `idle`;
    /// re-arms the timer otherwise.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.deadline.as_mut().poll(cx).is_pending() {
                return false;
            }
            let until = self.reading_since.unwrap_or(self.last_active) + self.idle;
            if until <= tokio::time::Instant::now() {
                return true;
            }
            self.deadline.as_mut().reset(until);
        }
    }
}

impl LimitedListener {
    async fn accept_limited(&mut self) -> (LimitedIo<TcpStream>, SocketAddr) {
        let slots = &self.admission.0.connections;
        let slot = match Arc::clone(slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                self.admission.hit(
                    Limit::Connections,
                    format_args!(
                        "{} connections open, further ones wait to be accepted",
                        self.admission.0.max_connections
                    ),
                );
                match Arc::clone(slots).acquire_owned().await {
                    Ok(slot) => slot,
                    // The semaphore is never closed.
                    Err(_) => std::future::pending().await,
                }
            }
        };
        loop {
            match self.listener.accept().await {
                Ok((io, addr)) => {
                    let idle = self.admission.0.body_timeout.saturating_mul(2);
                    return (LimitedIo::new(io, slot, idle), addr);
                }
                // A connection reset before it was accepted concerns that client only.
                Err(e) if is_connection_error(&e) => {}
                Err(e) => {
                    // Out of file descriptors and the like: accepting again at once would spin.
                    tracing::warn!(listener = self.admission.0.listener, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

impl axum::serve::Listener for LimitedListener {
    type Io = LimitedIo<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        self.accept_limited().await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// The connections of `listener` (a [`LimitedListener`], or one wrapping it) as the stream
/// tonic's server takes.
pub fn incoming<L: axum::serve::Listener>(
    mut listener: L,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<L::Io>> {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        loop {
            let (io, _) = tokio::select! {
                accepted = listener.accept() => accepted,
                // The server stopped taking connections.
                _ = tx.closed() => return,
            };
            if tx.send(Ok(io)).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

impl tonic::transport::server::Connected for LimitedIo<TcpStream> {
    type ConnectInfo = <TcpStream as tonic::transport::server::Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for LimitedIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                let now = tokio::time::Instant::now();
                self.last_active = now;
                self.reading_since.get_or_insert(now);
                Poll::Ready(Ok(()))
            }
            Poll::Pending if self.idle_expired(cx) => {
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "idle connection closed")))
            }
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for LimitedIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.last_active = tokio::time::Instant::now();
            self.reading_since = None;
        }
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.last_active = tokio::time::Instant::now();
            self.reading_since = None;
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

// ---- HTTP ----

/// How a receiver words a refusal: OTLP/HTTP answers a `google.rpc.Status` in the request's
/// encoding, the Jaeger and Zipkin receivers plain text.
pub type Render = fn(&HeaderMap, StatusCode, String) -> Response;

pub fn plain_text(_: &HeaderMap, status: StatusCode, message: String) -> Response {
    (status, format!("{message}\n")).into_response()
}

fn retry_later(mut response: Response) -> Response {
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    response
}

enum BodyRead {
    TooLarge(usize),
    /// With the body bytes read so far.
    OverBudget(usize),
    Failed(String),
}

/// Middleware of a receiver's ingest routes: admits the request against the listener's
/// request slots and the byte budget, then reads its body (within the size limit and the
/// body timeout) before the handler runs, holding both until the handler has answered.
pub async fn admit_http(
    admission: Admission,
    render: Render,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (parts, mut body) = request.into_parts();
    // The body must be in (or refused) by then, its refusal's discarding included.
    let deadline = tokio::time::Instant::now() + admission.0.body_timeout;
    let limit = admission.0.max_body_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let Some(_slot) = admission.try_request() else {
        let response = retry_later(render(
            &parts.headers,
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests in progress, retry later".into(),
        ));
        admission.discard_body(&parts, declared, &mut body, 0, deadline).await;
        return response;
    };
    if let Some(length) = declared.filter(|l| *l > limit as u64) {
        // At once, neither read nor kept: a client that sent `Expect: 100-continue` learns
        // before uploading; one already writing may see the connection close instead.
        return render(
            &parts.headers,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body of {length} bytes exceeds the limit of {limit} bytes (--max-body-bytes)"),
        );
    }
    // Zero bytes always fit; a body without a declared length grows it as it streams.
    let Some(mut reserved) = admission.reserve(declared.unwrap_or(0) as usize) else {
        let response = retry_later(render(
            &parts.headers,
            StatusCode::TOO_MANY_REQUESTS,
            "ingest is holding as many request bytes as it may, retry later".into(),
        ));
        admission.discard_body(&parts, declared, &mut body, 0, deadline).await;
        return response;
    };
    let read = tokio::time::timeout_at(deadline, read_body(&mut body, declared, &admission, &mut reserved)).await;
    let bytes = match read {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(BodyRead::TooLarge(limit))) => {
            return render(
                &parts.headers,
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body exceeds the limit of {limit} bytes (--max-body-bytes)"),
            )
        }
        Ok(Err(BodyRead::OverBudget(read))) => {
            // What was read is let go before the rest is discarded.
            drop(reserved);
            let response = retry_later(render(
                &parts.headers,
                StatusCode::TOO_MANY_REQUESTS,
                "ingest is holding as many request bytes as it may, retry later".into(),
            ));
            admission.discard_body(&parts, declared, &mut body, read, deadline).await;
            return response;
        }
        Ok(Err(BodyRead::Failed(e))) => {
            return render(&parts.headers, StatusCode::BAD_REQUEST, format!("failed to read the request body: {e}"))
        }
        Err(_) => {
            let timeout = admission.0.body_timeout;
            admission.hit(Limit::RequestBodyTimeout, format_args!("request body not received within {timeout:?}"));
            return render(
                &parts.headers,
                StatusCode::REQUEST_TIMEOUT,
                format!("request body not received within {timeout:?} (--request-body-timeout)"),
            );
        }
    };
    let response = next.run(axum::extract::Request::from_parts(parts, Body::from(bytes))).await;
    // Only now are the request's spans stored or refused.
    drop(reserved);
    response
}

impl Admission {
    /// Reads and throws away the rest of a body refused with backpressure before the answer
    /// goes out. An HTTP/1.1 client writes its whole body before it reads the answer: answered
    /// early, the connection closes with the body unread, and a client still writing a body
    /// larger than the socket buffers gets a broken pipe (or a reset), not the 429 and its
    /// `Retry-After`, which OTLP exporters then take for a transport error. Nothing is kept:
    /// each chunk is dropped as it comes, so a refused request holds no request slot and no
    /// budget bytes, only its connection (within `max_connections`), for at most
    /// `max_body_bytes` and until the body deadline; past either, the answer goes out
    /// anyway and the connection closes as before. Not done where the client is not writing
    /// regardless of the answer: HTTP/2 (the stream is reset after the answer, the
    /// connection's other streams go on) and `Expect: 100-continue` (the client waits for
    /// our answer before it sends the body).
    async fn discard_body(
        &self,
        parts: &axum::http::request::Parts,
        declared: Option<u64>,
        body: &mut Body,
        mut read: usize,
        deadline: tokio::time::Instant,
    ) {
        use http_body::Body as _;
        let limit = self.0.max_body_bytes;
        let expects_continue =
            parts.headers.get(header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if parts.version >= axum::http::Version::HTTP_2
            || expects_continue
            || declared.is_some_and(|l| l > limit as u64)
        {
            return;
        }
        let discard = async {
            while let Some(Ok(frame)) = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await {
                if let Ok(data) = frame.into_data() {
                    read = read.saturating_add(data.len());
                    if read > limit {
                        return;
                    }
                }
            }
        };
        let _ = tokio::time::timeout_at(deadline, discard).await;
    }
}

async fn read_body(
    body: &mut Body,
    declared: Option<u64>,
    admission: &Admission,
    reserved: &mut OwnedSemaphorePermit,
) -> Result<Bytes, BodyRead> {
    use http_body::Body as _;
    let limit = admission.0.max_body_bytes;
    // A body that arrives in one chunk is kept as is; only one in several chunks is copied.
    let mut first: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    let mut total = 0usize;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await {
        let frame = frame.map_err(|e| BodyRead::Failed(e.to_string()))?;
        let Ok(data) = frame.into_data() else { continue };
        total = total.saturating_add(data.len());
        if total > limit {
            return Err(BodyRead::TooLarge(limit));
        }
        if declared.is_none() {
            match admission.reserve(data.len()) {
                Some(more) => reserved.merge(more),
                None => return Err(BodyRead::OverBudget(total)),
            }
        }
        if first.is_none() && joined.is_empty() {
            first = Some(data);
            continue;
        }
        if let Some(first) = first.take() {
            joined.reserve(declared.map_or(0, |d| d as usize).max(first.len() + data.len()));
            joined.extend_from_slice(&first);
        }
        joined.extend_from_slice(&data);
    }
    Ok(first.unwrap_or_else(|| joined.freeze()))
}

// ---- gRPC ----

/// `google.rpc.Status`, carried in `grpc-status-details-bin`.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<ProtoAny>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProtoAny {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

/// `RESOURCE_EXHAUSTED` with a `RetryInfo`: OTLP exporters retry `RESOURCE_EXHAUSTED` only
/// when the server says recovery is possible this way (OTLP specification, "Failures").
pub fn resource_exhausted(message: impl Into<String>) -> Status {
    let message = message.into();
    let retry = RetryInfo { retry_delay: Some(ProtoDuration { seconds: RETRY_AFTER_SECS as i64, nanos: 0 }) };
    let details = RpcStatus {
        code: Code::ResourceExhausted as i32,
        message: message.clone(),
        details: vec![ProtoAny {
            type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
            value: retry.encode_to_vec(),
        }],
    };
    Status::with_details(Code::ResourceExhausted, message, Bytes::from(details.encode_to_vec()))
}

/// Held while a gRPC request is in progress: its request slot and the bytes reserved for
/// its message, released when the call has answered.
pub struct GrpcAdmitted {
    _slot: OwnedSemaphorePermit,
    _bytes: Arc<Mutex<Option<OwnedSemaphorePermit>>>,
}

impl Admission {
    /// Admits a gRPC request: a request slot now (else `RESOURCE_EXHAUSTED`), and its message's
    /// bytes as soon as its length prefix arrives, before tonic buffers the message.
    pub fn admit_grpc<B>(
        &self,
        request: axum::http::Request<B>,
        max_message_bytes: usize,
    ) -> Result<(axum::http::Request<MeteredBody<B>>, GrpcAdmitted), Status> {
        let slot =
            self.try_request().ok_or_else(|| resource_exhausted("too many requests in progress, retry later"))?;
        let bytes = Arc::new(Mutex::new(None));
        let timeout = self.0.body_timeout;
        let request = request.map(|inner| MeteredBody {
            inner: Box::pin(inner),
            admission: self.clone(),
            prefix: [0; 5],
            prefix_len: 0,
            max_message_bytes,
            reserved: Arc::clone(&bytes),
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
        });
        Ok((request, GrpcAdmitted { _slot: slot, _bytes: bytes }))
    }
}

/// A gRPC request body that reserves its message's bytes from the length prefix and fails
/// the call when the body does not arrive within the body timeout.
pub struct MeteredBody<B> {
    inner: Pin<Box<B>>,
    admission: Admission,
    prefix: [u8; 5],
    prefix_len: usize,
    max_message_bytes: usize,
    reserved: Arc<Mutex<Option<OwnedSemaphorePermit>>>,
    /// Until the body has ended.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> MeteredBody<B> {
    /// Reads the 5-byte gRPC message prefix (flag, big-endian length) off the first data;
    /// once complete, reserves the message's bytes.
    fn see(&mut self, data: &Bytes) -> Result<(), Status> {
        if self.prefix_len == 5 {
            return Ok(());
        }
        let n = (5 - self.prefix_len).min(data.len());
        self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&data[..n]);
        self.prefix_len += n;
        if self.prefix_len < 5 {
            return Ok(());
        }
        let length = u32::from_be_bytes([self.prefix[1], self.prefix[2], self.prefix[3], self.prefix[4]]) as usize;
        if length > self.max_message_bytes {
            // tonic refuses it (OUT_OF_RANGE) before buffering it.
            return Ok(());
        }
        let reserved = self
            .admission
            .reserve(5 + length)
            .ok_or_else(|| resource_exhausted("ingest is holding as many request bytes as it may, retry later"))?;
        *self.reserved.lock().unwrap_or_else(|e| e.into_inner()) = Some(reserved);
        Ok(())
    }
}

impl<B> http_body::Body for MeteredBody<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<tonic::codegen::StdError>,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if let Some(deadline) = this.deadline.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                this.deadline = None;
                let timeout = this.admission.0.body_timeout;
                this.admission
                    .hit(Limit::RequestBodyTimeout, format_args!("request body not received within {timeout:?}"));
                return Poll::Ready(Some(Err(Status::deadline_exceeded(format!(
                    "request body not received within {timeout:?} (--request-body-timeout)"
                )))));
            }
        }
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        match frame {
            None => {
                this.deadline = None;
                Poll::Ready(None)
            }
            Some(Err(e)) => Poll::Ready(Some(Err(Status::from_error(e.into())))),
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    if let Err(status) = this.see(data) {
                        return Poll::Ready(Some(Err(status)));
                    }
                }
                if this.inner.is_end_stream() {
                    this.deadline = None;
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_reserves_until_full_and_frees_on_drop() {
        let budget = ByteBudget::new(100);
        let a = budget.try_reserve(60).unwrap();
        assert!(budget.try_reserve(50).is_none());
        let b = budget.try_reserve(40).unwrap();
        assert_eq!(budget.held(), 100);
        drop(a);
        assert_eq!(budget.held(), 40);
        drop(b);
        // Larger than the whole budget: gets in alone.
        let big = budget.try_reserve(1000).unwrap();
        assert!(budget.try_reserve(1).is_none());
        drop(big);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn resource_exhausted_carries_retry_info() {
        let status = resource_exhausted("full");
        assert_eq!(status.code(), Code::ResourceExhausted);
        let details = RpcStatus::decode(status.details()).unwrap();
        assert_eq!(details.details[0].type_url, "type.googleapis.com/google.rpc.RetryInfo");
        let retry = RetryInfo::decode(details.details[0].value.as_slice()).unwrap();
        assert_eq!(retry.retry_delay.unwrap().seconds, RETRY_AFTER_SECS as i64);
    }
}
