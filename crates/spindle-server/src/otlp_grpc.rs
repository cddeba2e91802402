//! OTLP over gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export` on :4317.
//!
//! The service is tonic's gRPC machinery (framing, compression, size limits, status codes)
//! with a codec of our own: the method takes the message bytes and decodes them on the
//! blocking pool straight into model spans by [`spindle_codec::otlp_wire`] instead of into
//! the generated prost types first (most of a receiver's time at full ingest); responses
//! are the generated `ExportTraceServiceResponse`. What the generated `TraceServiceServer`
//! would do otherwise is unchanged: unknown methods answer UNIMPLEMENTED, undecodable
//! messages INTERNAL (as tonic's prost codec answers them).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTracePartialSuccess, ExportTraceServiceResponse};
use tonic::codegen::{http, BoxFuture, Service, StdError};
use tonic::server::{NamedService, UnaryService};
use tonic::{Request, Response, Status};

use crate::grpc::RawRequestCodec;
use crate::ingest::Ingest;

pub const PROTOCOL: &str = "otlp_grpc";

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The trace service, ready to be added to a tonic router.
#[derive(Clone)]
pub struct OtlpGrpc {
    ingest: Arc<Ingest>,
    max_message_bytes: usize,
}

pub fn service(ingest: Arc<Ingest>, max_message_bytes: usize) -> OtlpGrpc {
    OtlpGrpc { ingest, max_message_bytes }
}

impl NamedService for OtlpGrpc {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

/// One Export call.
struct Export(Arc<Ingest>);

impl UnaryService<Bytes> for Export {
    type Response = ExportTraceServiceResponse;
    type Future = BoxFuture<Response<ExportTraceServiceResponse>, Status>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let ingest = Arc::clone(&self.0);
        Box::pin(async move {
            let decoded =
                crate::grpc::decode_off_reactor(request.into_inner(), spindle_codec::otlp_wire::decode_request).await?;
            let partial_success = (decoded.rejected > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: i64::try_from(decoded.rejected).unwrap_or(i64::MAX),
                error_message: decoded.rejection_reason.clone(),
            });
            ingest.accept(PROTOCOL, decoded).await?;
            Ok(Response::new(ExportTraceServiceResponse { partial_success }))
        })
    }
}

impl<B> Service<http::Request<B>> for OtlpGrpc
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        crate::grpc::serve_unary(
            req,
            EXPORT_PATH,
            RawRequestCodec::<ExportTraceServiceResponse>::default(),
            Export(Arc::clone(&self.ingest)),
            self.max_message_bytes,
            true,
        )
    }
}
