//! What the hand-written gRPC services (OTLP `Export`, Jaeger `PostSpans`) share: one unary
//! method served through tonic's server machinery the way tonic's generated servers serve
//! it — other paths answer UNIMPLEMENTED, requests may be gzip-compressed and are limited
//! in size — and the mapping of ingest errors to gRPC statuses.

use std::convert::Infallible;

use tonic::body::Body;
use tonic::codec::{Codec, CompressionEncoding, EnabledCompressionEncodings};
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

impl From<IngestError> for Status {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Overloaded => Status::resource_exhausted("ingest queue is full, retry later"),
            e @ IngestError::Store(_) => Status::unavailable(e.to_string()),
        }
    }
}
