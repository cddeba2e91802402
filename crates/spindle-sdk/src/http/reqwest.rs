//! A reqwest middleware that traces outgoing requests and carries the context to the server.
//!
//! Each request gets a CLIENT span named `{METHOD}` (child of the current span) and that
//! span's context is written into the request as W3C headers, so the server's span becomes
//! its child. 4xx and 5xx responses and transport errors mark the span as failed.
//!
//! ```
//! use spindle_sdk::http::reqwest::{traced_client, ClientTracingMiddleware};
//! use spindle_sdk::reqwest_middleware::ClientBuilder;
//!
//! let client = traced_client(reqwest::Client::new());
//! // or, to combine with other middleware:
//! let client = ClientBuilder::new(reqwest::Client::new()).with(ClientTracingMiddleware).build();
//! # let _ = client;
//! ```

use crate::SpanExt;
use http::Extensions;
use reqwest::{Request, Response};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};
use tracing::field::Empty;
use tracing::Instrument;

use crate::propagation::record_error;

/// Records a CLIENT span per request and injects its context; see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientTracingMiddleware;

/// `client` with [`ClientTracingMiddleware`] as its only middleware.
pub fn traced_client(client: reqwest::Client) -> ClientWithMiddleware {
    ClientBuilder::new(client).with(ClientTracingMiddleware).build()
}

/// The CLIENT span for `request`, a child of the current span.
pub fn client_span(request: &Request) -> tracing::Span {
    let url = request.url();
    tracing::info_span!(
        target: "spindle_sdk::http",
        "http.client",
        otel.name = request.method().as_str(),
        otel.kind = "client",
        otel.status_code = Empty,
        http.request.method = request.method().as_str(),
        url.full = url.as_str(),
        server.address = url.host_str(),
        server.port = url.port_or_known_default().map(i64::from),
        http.response.status_code = Empty,
        error.type = Empty,
    )
}

#[async_trait::async_trait]
impl Middleware for ClientTracingMiddleware {
    async fn handle(
        &self,
        mut request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let span = client_span(&request);
        super::inject_into_headers(&span.context(), request.headers_mut());
        let result = next.run(request, extensions).instrument(span.clone()).await;
        match &result {
            Ok(response) => {
                let status = response.status();
                // As i64, the conventions' int type.
                span.record("http.response.status_code", i64::from(status.as_u16()));
                if status.is_client_error() || status.is_server_error() {
                    span.record("otel.status_code", "ERROR");
                    span.record("error.type", status.as_str());
                }
            }
            Err(error) => {
                let kind = match error {
                    reqwest_middleware::Error::Reqwest(e) if e.is_timeout() => "timeout",
                    reqwest_middleware::Error::Reqwest(e) if e.is_connect() => "connect",
                    reqwest_middleware::Error::Reqwest(_) => "request",
                    reqwest_middleware::Error::Middleware(_) => "middleware",
                };
                span.record("error.type", kind);
                record_error(&span, error);
            }
        }
        result
    }
}
