//! Jaeger collector gRPC (:14250): `jaeger.api_v2.CollectorService/PostSpans`.
//!
//! There is no generated server for Jaeger's protos here (no protoc), so this is the
//! small hand-written tonic service the generator would produce: one unary method over
//! the prost types of `spindle_codec::jaeger_proto`.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use spindle_codec::jaeger_proto::{PostSpansRequest, PostSpansResponse};
use tonic::body::Body;
use tonic::codegen::{http, BoxFuture, Service, StdError};
use tonic::server::{NamedService, UnaryService};
use tonic::{Request, Response, Status};

use crate::ingest::Ingest;
use crate::receivers::admission::Admission;

pub const PROTOCOL: &str = "jaeger_proto_grpc";
const POST_SPANS: &str = "/jaeger.api_v2.CollectorService/PostSpans";

#[derive(Clone)]
pub struct CollectorService {
    ingest: Arc<Ingest>,
    max_message_bytes: usize,
    admission: Admission,
}

impl CollectorService {
    pub fn new(ingest: Arc<Ingest>, max_message_bytes: usize, admission: Admission) -> Self {
        CollectorService { ingest, max_message_bytes, admission }
    }
}

impl NamedService for CollectorService {
    const NAME: &'static str = "jaeger.api_v2.CollectorService";
}

struct PostSpans(Arc<Ingest>);

impl UnaryService<PostSpansRequest> for PostSpans {
    type Response = PostSpansResponse;
    type Future = BoxFuture<Response<PostSpansResponse>, Status>;

    fn call(&mut self, request: Request<PostSpansRequest>) -> Self::Future {
        let ingest = Arc::clone(&self.0);
        Box::pin(async move {
            let caller = crate::grpc::caller(&request);
            let batch = request.into_inner().batch.unwrap_or_default();
            let decoded = spindle_codec::jaeger_proto::batch_to_spans(batch);
            ingest.accept(&caller, PROTOCOL, decoded).await?;
            Ok(Response::new(PostSpansResponse {}))
        })
    }
}

impl<B> Service<http::Request<B>> for CollectorService
where
    B: tonic::codegen::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = PostSpans(Arc::clone(&self.ingest));
        crate::grpc::serve_unary(
            &self.admission,
            req,
            POST_SPANS,
            tonic_prost::ProstCodec::default(),
            method,
            self.max_message_bytes,
            false,
        )
    }
}
