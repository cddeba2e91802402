//! OTLP over gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export` on :4317.
//!
//! The service is tonic's gRPC machinery (framing, compression, size limits, status codes)
//! with a codec of our own: requests are decoded from the message bytes straight into model
//! spans by [`spindle_codec::otlp_wire`] instead of into the generated prost types first
//! (most of a receiver thread's time at full ingest), responses are the generated
//! `ExportTraceServiceResponse`. What the generated `TraceServiceServer` would do otherwise is
//! unchanged: unknown methods answer UNIMPLEMENTED, undecodable messages INTERNAL (as tonic's
//! prost codec answers them).
//!
//! Decoding runs in the codec, on the runtime's worker threads, unlike the HTTP and UDP
//! receivers: the blocking pool cost more CPU and memory per span than it saved
//! (docs/adr/014-ingest-pipeline-threads.md); `--max-body-bytes` bounds how long one request
//! can hold a worker. The message's bytes are admitted against the ingest byte budget from
//! its length prefix, before tonic buffers it (`grpc::serve_unary`).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Buf;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTracePartialSuccess, ExportTraceServiceResponse};
use spindle_codec::Decoded;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::codegen::{http, BoxFuture, Service, StdError};
use tonic::server::{NamedService, UnaryService};
use tonic::{Request, Response, Status};

use crate::ingest::Ingest;
use crate::receivers::admission::Admission;

pub const PROTOCOL: &str = "otlp_grpc";

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The trace service, ready to be added to a tonic router.
#[derive(Clone)]
pub struct OtlpGrpc {
    ingest: Arc<Ingest>,
    max_message_bytes: usize,
    admission: Admission,
}

pub fn service(ingest: Arc<Ingest>, max_message_bytes: usize, admission: Admission) -> OtlpGrpc {
    OtlpGrpc { ingest, max_message_bytes, admission }
}

impl NamedService for OtlpGrpc {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

/// Decodes `ExportTraceServiceRequest` messages into spans; encodes responses with prost.
#[derive(Clone, Copy, Default)]
struct ExportCodec;

struct ExportDecoder;

impl Decoder for ExportDecoder {
    type Item = Decoded;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Decoded>, Status> {
        let len = src.remaining();
        // tonic hands over one message in one contiguous buffer; copy only if it did not.
        let decoded = if src.chunk().len() >= len {
            let decoded = spindle_codec::otlp_wire::decode_request(&src.chunk()[..len]);
            src.advance(len);
            decoded
        } else {
            spindle_codec::otlp_wire::decode_request(&src.copy_to_bytes(len))
        };
        decoded.map(Some).map_err(|e| Status::internal(e.to_string()))
    }
}

impl Codec for ExportCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Decoded;
    type Encoder = tonic_prost::ProstEncoder<ExportTraceServiceResponse>;
    type Decoder = ExportDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ExportDecoder
    }
}

/// One Export call.
struct Export(Arc<Ingest>);

impl UnaryService<Decoded> for Export {
    type Response = ExportTraceServiceResponse;
    type Future = BoxFuture<Response<ExportTraceServiceResponse>, Status>;

    fn call(&mut self, request: Request<Decoded>) -> Self::Future {
        let ingest = Arc::clone(&self.0);
        Box::pin(async move {
            let caller = crate::grpc::caller(&request);
            let decoded = request.into_inner();
            let partial_success = (decoded.rejected > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: i64::try_from(decoded.rejected).unwrap_or(i64::MAX),
                error_message: decoded.rejection_reason.clone(),
            });
            ingest.accept(&caller, PROTOCOL, decoded).await?;
            Ok(Response::new(ExportTraceServiceResponse { partial_success }))
        })
    }
}

impl<B> Service<http::Request<B>> for OtlpGrpc
where
    B: tonic::codegen::Body<Data = bytes::Bytes> + Send + 'static,
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
            &self.admission,
            req,
            EXPORT_PATH,
            ExportCodec,
            Export(Arc::clone(&self.ingest)),
            self.max_message_bytes,
            true,
        )
    }
}
