//! OTLP over gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export` on :4317.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use crate::ingest::{Ingest, IngestError};

pub const PROTOCOL: &str = "otlp_grpc";

pub struct OtlpGrpc {
    ingest: Arc<Ingest>,
}

pub fn service(ingest: Arc<Ingest>, max_message_bytes: usize) -> TraceServiceServer<OtlpGrpc> {
    TraceServiceServer::new(OtlpGrpc { ingest })
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max_message_bytes)
}

#[tonic::async_trait]
impl TraceService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let decoded = spindle_codec::otlp::request_to_spans(request.into_inner());
        let partial_success = (decoded.rejected > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: i64::try_from(decoded.rejected).unwrap_or(i64::MAX),
            error_message: decoded.rejection_reason.clone(),
        });
        match self.ingest.accept(PROTOCOL, decoded).await {
            Ok(()) => Ok(Response::new(ExportTraceServiceResponse { partial_success })),
            Err(IngestError::Overloaded) => Err(Status::resource_exhausted("ingest queue is full, retry later")),
            Err(e @ IngestError::Store(_)) => Err(Status::unavailable(e.to_string())),
        }
    }
}
