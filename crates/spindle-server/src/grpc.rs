//! What the hand-written gRPC services (OTLP `Export`, Jaeger `PostSpans`) share: one unary
//! method served through tonic's server machinery the way tonic's generated servers serve
//! it — other paths answer UNIMPLEMENTED, requests may be gzip-compressed and are limited
//! in size — their admission (`receivers::admission`: a request slot and the message's
//! bytes before tonic buffers it), and the mapping of ingest errors to gRPC statuses.

use std::convert::Infallible;

use tonic::body::Body;
use tonic::codec::{Codec, CompressionEncoding, EnabledCompressionEncodings};
use tonic::codegen::{http, BoxFuture, StdError};
use tonic::server::UnaryService;
use tonic::Status;

use crate::ingest::IngestError;
use crate::receivers::admission::{self, Admission};
use crate::security::Principal;
use crate::tenancy::Caller;

/// Serves `req` with `method` when it names `path`; `send_gzip`: whether responses may be
/// gzip-compressed for clients that accept it.
pub(crate) fn serve_unary<B, C, S>(
    admission: &Admission,
    req: http::Request<B>,
    path: &'static str,
    codec: C,
    method: S,
    max_message_bytes: usize,
    send_gzip: bool,
) -> BoxFuture<http::Response<Body>, Infallible>
where
    B: tonic::codegen::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
    C: Codec + Send + 'static,
    S: UnaryService<C::Decode, Response = C::Encode> + Send + 'static,
    S::Future: Send + 'static,
{
    if req.uri().path() != path {
        return Box::pin(async move { Ok(Status::unimplemented(format!("only {path} is served here")).into_http()) });
    }
    let (req, admitted) = match admission.admit_grpc(req, max_message_bytes) {
        Ok(admitted) => admitted,
        Err(status) => return Box::pin(async move { Ok(status.into_http()) }),
    };
    Box::pin(async move {
        let mut gzip = EnabledCompressionEncodings::default();
        gzip.enable(CompressionEncoding::Gzip);
        let send = if send_gzip { gzip } else { EnabledCompressionEncodings::default() };
        let mut grpc = tonic::server::Grpc::new(codec)
            .apply_compression_config(gzip, send)
            .apply_max_message_size_config(Some(max_message_bytes), None);
        let response = grpc.unary(method, req).await;
        // Only now are the request's spans stored or refused.
        drop(admitted);
        Ok(response)
    })
}

impl From<IngestError> for Status {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Overloaded => admission::resource_exhausted("ingest queue is full, retry later"),
            // Not retryable (OTLP specification, "Failures"): the same request would be refused again.
            e @ IngestError::TooManySpans { .. } => Status::invalid_argument(e.to_string()),
            e @ IngestError::Store(_) => Status::unavailable(e.to_string()),
            IngestError::Tenant(e) => e.grpc_status(),
        }
    }
}

/// The caller of a gRPC request: the principal its listener's layer left in the request's
/// extensions, the tenant its `x-scope-orgid` metadata names.
pub(crate) fn caller<T>(request: &tonic::Request<T>) -> Caller {
    Caller {
        principal: request.extensions().get::<Principal>().cloned().unwrap_or_else(Principal::anonymous),
        org_id: request
            .metadata()
            .get(crate::tenancy::TENANT_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_string()),
    }
}
