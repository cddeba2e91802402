//! A tower layer that traces every request an axum server handles.
//!
//! Each request gets a SERVER span named `{METHOD} {route}` (the matched axum route template,
//! like `GET /stocks/{symbol}`, never the raw path, so names stay few), whose parent is the
//! context the caller sent in W3C headers. Add it with `Router::layer` so the matched route is
//! known:
//!
//! ```
//! use axum::{routing::get, Router};
//! use spindle_sdk::http::axum::ServerTracingLayer;
//!
//! let app: Router = Router::new()
//!     .route("/recommendations", get(|| async { "[]" }))
//!     .layer(ServerTracingLayer::new());
//! ```

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context as TaskContext, Poll};

use axum::extract::MatchedPath;
use http::{Request, Response};
use tower::{Layer, Service};
use tracing::field::{Empty, Field};

use crate::propagation::{record_error, set_remote_parent};

/// Wraps a service so that every request runs in a SERVER span; see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerTracingLayer {
    _private: (),
}

impl ServerTracingLayer {
    /// A layer with the semantic-convention defaults.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for ServerTracingLayer {
    type Service = ServerTracingService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerTracingService { inner }
    }
}

/// The service [`ServerTracingLayer`] produces.
#[derive(Debug, Clone)]
pub struct ServerTracingService<S> {
    inner: S,
}

pin_project_lite::pin_project! {
    /// The response future of [`ServerTracingService`]: the inner future, polled inside the
    /// request's span, which gets the response status when it is ready.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        span: tracing::Span,
    }
}

impl<S, B, ResBody> Service<Request<B>> for ServerTracingService<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Error: Display,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let span = server_span(&request);
        let inner = span.in_scope(|| self.inner.call(request));
        ResponseFuture { inner, span }
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    E: Display,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = {
            let _entered = this.span.enter();
            std::task::ready!(this.inner.poll(cx))
        };
        let span = &*this.span;
        match &result {
            Ok(response) => {
                let status = response.status();
                // As i64, the conventions' int type.
                if let Some(field) = status_code_field(span) {
                    span.record(field, i64::from(status.as_u16()));
                }
                if status.is_server_error() {
                    span.record("otel.status_code", "ERROR");
                    span.record("error.type", status.as_str());
                }
            }
            Err(error) => {
                span.record("error.type", "service_error");
                record_error(span, error);
            }
        }
        Poll::Ready(result)
    }
}

/// The `http.response.status_code` field of the SERVER span's call site, found once rather
/// than by name on every response; `None` when no subscriber records the span.
fn status_code_field(span: &tracing::Span) -> Option<&'static Field> {
    static FIELD: OnceLock<Option<Field>> = OnceLock::new();
    let meta = span.metadata()?;
    FIELD.get_or_init(|| meta.fields().field("http.response.status_code")).as_ref()
}

/// The SERVER span for `request`, parented on the W3C context in its headers.
pub fn server_span<B>(request: &Request<B>) -> tracing::Span {
    let method = request.method().as_str();
    let route = request.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
    let user_agent = request.headers().get(http::header::USER_AGENT).and_then(|v| v.to_str().ok());
    // Without a matched route (404s, plain tower services) the name is the method alone. The
    // name is composed in a reused buffer: the OpenTelemetry layer copies it anyway.
    let mut name = SPAN_NAME.take();
    name.clear();
    name.push_str(method);
    if let Some(route) = route {
        name.push(' ');
        name.push_str(route);
    }
    let span = new_server_span(&name, method, route, request.uri(), user_agent);
    SPAN_NAME.set(name);
    // Most requests carry no trace context; extracting from them would only build an empty
    // context. The W3C propagator reads nothing but these two headers.
    let headers = request.headers();
    if headers.contains_key(&TRACEPARENT) || headers.contains_key(&BAGGAGE) {
        set_remote_parent(&span, super::extract_from_headers(headers));
    }
    span
}

// Parsed once: a header looked up by `&str` is parsed on every lookup.
static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
static BAGGAGE: http::HeaderName = http::HeaderName::from_static("baggage");

thread_local! {
    static SPAN_NAME: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

fn new_server_span(
    name: &str,
    method: &str,
    route: Option<&str>,
    uri: &http::Uri,
    user_agent: Option<&str>,
) -> tracing::Span {
    tracing::info_span!(
        target: "spindle_sdk::http",
        "http.server",
        otel.name = name,
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = method,
        http.route = route,
        url.path = uri.path(),
        url.scheme = uri.scheme_str(),
        user_agent.original = user_agent,
        http.response.status_code = Empty,
        error.type = Empty,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use opentelemetry::Value;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::Registry;

    fn attr(span: &SpanData, key: &str) -> Option<Value> {
        span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.clone())
    }

    /// Names come from the reused buffer, so a short name after a long one must not keep the
    /// long one's tail; the status code is an int attribute, not the string `tracing` makes
    /// of a u16.
    #[test]
    fn server_spans_are_named_after_the_route_and_carry_an_integer_status() {
        let exporter = InMemorySpanExporter::default();
        let (layer, guard) = crate::builder("svc")
            .exporter(exporter.clone())
            .sampler(crate::SamplerConfig::AlwaysOn)
            .into_layer::<Registry>()
            .expect("pipeline builds");
        let dispatch = tracing::Dispatch::new(Registry::default().with(layer));
        let mut app = Router::new()
            .route("/stocks/{symbol}", get(|| async { "quote" }))
            .route("/q", get(|| async { (http::StatusCode::SERVICE_UNAVAILABLE, "busy") }))
            .layer(ServerTracingLayer::new());
        tracing::dispatcher::with_default(&dispatch, || {
            let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            runtime.block_on(async {
                for path in ["/stocks/AAPL", "/q"] {
                    let request = Request::get(path).body(Body::empty()).expect("request");
                    Service::call(&mut app, request).await.expect("response");
                }
            });
        });
        guard.flush().expect("flush");
        let spans = exporter.get_finished_spans().expect("readable");
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
        assert_eq!(names, ["GET /stocks/{symbol}", "GET /q"]);
        assert_eq!(attr(&spans[0], "http.response.status_code"), Some(Value::I64(200)));
        assert_eq!(attr(&spans[0], "http.route"), Some(Value::from("/stocks/{symbol}")));
        assert_eq!(attr(&spans[1], "http.response.status_code"), Some(Value::I64(503)));
        assert_eq!(spans[1].status, opentelemetry::trace::Status::error(""));
    }
}
