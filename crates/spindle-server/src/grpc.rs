//! What the hand-written gRPC services (OTLP `Export`, Jaeger `PostSpans`) share: one unary
//! method served through tonic's server machinery the way tonic's generated servers serve
//! it — other paths answer UNIMPLEMENTED, requests may be gzip-compressed and are limited
//! in size —, a codec that leaves the request message undecoded so the method decodes it
//! on the blocking pool, and the mapping of ingest errors to gRPC statuses.

use std::convert::Infallible;
use std::marker::PhantomData;

use bytes::{Buf, Bytes};
use tonic::body::Body;
use tonic::codec::{BufferSettings, Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings};
use tonic::codegen::{http, BoxFuture, StdError};
use tonic::server::UnaryService;
use tonic::Status;

use crate::ingest::IngestError;

/// Serves `req` with `method` when it names `path`; `send_gzip`: whether responses may be
/// gzip-compressed for clients that accept it.
pub(crate) fn serve_unary<B, C, S>(
    req: http::Request<B>,
    path: &'static str,
    codec: C,
    method: S,
    max_message_bytes: usize,
    send_gzip: bool,
) -> BoxFuture<http::Response<Body>, Infallible>
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
    C: Codec + Send + 'static,
    S: UnaryService<C::Decode, Response = C::Encode> + Send + 'static,
    S::Future: Send + 'static,
{
    if req.uri().path() != path {
        return Box::pin(async move { Ok(Status::unimplemented(format!("only {path} is served here")).into_http()) });
    }
    Box::pin(async move {
        let mut gzip = EnabledCompressionEncodings::default();
        gzip.enable(CompressionEncoding::Gzip);
        let send = if send_gzip { gzip } else { EnabledCompressionEncodings::default() };
        let mut grpc = tonic::server::Grpc::new(codec)
            .apply_compression_config(gzip, send)
            .apply_max_message_size_config(Some(max_message_bytes), None);
        Ok(grpc.unary(method, req).await)
    })
}

/// Hands the method the request message's bytes as they are (framed, size-checked and
/// decompressed by tonic); encodes the `Response` message with prost.
pub(crate) struct RawRequestCodec<Response>(PhantomData<fn() -> Response>);

impl<Response> Default for RawRequestCodec<Response> {
    fn default() -> Self {
        RawRequestCodec(PhantomData)
    }
}

pub(crate) struct RawRequestDecoder;

impl Decoder for RawRequestDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        // Splits the message off tonic's buffer: no copy.
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl<Response: prost::Message + Send + 'static> Codec for RawRequestCodec<Response> {
    type Encode = Response;
    type Decode = Bytes;
    type Encoder = tonic_prost::ProstEncoder<Response>;
    type Decoder = RawRequestDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawRequestDecoder
    }
}

/// Decodes a request message on the blocking pool, where decoding a batch cannot hold up
/// the async workers that serve every connection. An undecodable message answers INTERNAL,
/// as tonic's prost codec answers it.
pub(crate) async fn decode_off_reactor<T, E>(message: Bytes, decode: fn(&[u8]) -> Result<T, E>) -> Result<T, Status>
where
    T: Send + 'static,
    E: std::fmt::Display + 'static,
{
    match tokio::task::spawn_blocking(move || decode(&message).map_err(|e| e.to_string())).await {
        Ok(Ok(decoded)) => Ok(decoded),
        Ok(Err(e)) => Err(Status::internal(e)),
        Err(e) => Err(Status::internal(format!("decoding failed: {e}"))),
    }
}

impl From<IngestError> for Status {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Overloaded => Status::resource_exhausted("ingest queue is full, retry later"),
            e @ IngestError::Store(_) => Status::unavailable(e.to_string()),
        }
    }
}
