//! The OpenTelemetry API's view of the current `tracing` span, without making every entered
//! span the current OpenTelemetry context (docs/adr/024-otel-api-bridged-not-activated.md).
//!
//! The global tracer provider and text map propagator that `init()` installs wrap the
//! OpenTelemetry SDK's. Given the current OpenTelemetry context, they take the current
//! `tracing` span's context instead when that span is nearer to what starts now: the context
//! holds no span (the thread's `Context::current()` inside a `tracing` span), or its span was
//! already current when the `tracing` span was created. A span started with
//! `global::tracer(..).start(..)` inside a `tracing` span is then its child, and
//! `global::get_text_map_propagator(|p| p.inject(..))` writes the `tracing` span's
//! `traceparent`, as when each entered span is attached; an OpenTelemetry span made current
//! inside the `tracing` span, or an explicit parent other than the current context, is used
//! as it is.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanBuilder, SpanId, TraceContextExt as _, Tracer, TracerProvider};
use opentelemetry::{Context, InstrumentationScope};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, Span};

use crate::layer::otel_current_span;
use crate::span_ext::span_context_if_nearer;

/// `cx` with the current `tracing` span as its span, when `cx` is the current OpenTelemetry
/// context (or holds no span) and the `tracing` span is nearer to what starts now than the
/// context's span: it was entered inside it, or the context has none. `None`: use `cx`.
fn with_tracing_span(cx: &Context) -> Option<Context> {
    let otel = if cx.has_active_span() { cx.span().span_context().span_id() } else { SpanId::INVALID };
    // An explicit parent other than the current context is the caller's choice.
    if otel != SpanId::INVALID && otel != otel_current_span() {
        return None;
    }
    let span = tracing::Span::current();
    if span.is_disabled() {
        return None;
    }
    let sc = span_context_if_nearer(&span, otel)?;
    sc.is_valid().then(|| cx.with_remote_span_context(sc))
}

/// The SDK's tracer provider for the OpenTelemetry API; see the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct BridgedTracerProvider(pub(crate) SdkTracerProvider);

impl TracerProvider for BridgedTracerProvider {
    type Tracer = BridgedTracer;

    fn tracer_with_scope(&self, scope: InstrumentationScope) -> BridgedTracer {
        BridgedTracer(self.0.tracer_with_scope(scope))
    }
}

/// A tracer whose spans started without a parent span take the current `tracing` span's.
#[derive(Debug, Clone)]
pub(crate) struct BridgedTracer(SdkTracer);

impl Tracer for BridgedTracer {
    type Span = Span;

    fn build_with_context(&self, builder: SpanBuilder, parent_cx: &Context) -> Span {
        match with_tracing_span(parent_cx) {
            Some(cx) => self.0.build_with_context(builder, &cx),
            None => self.0.build_with_context(builder, parent_cx),
        }
    }
}

/// A propagator that injects the current `tracing` span when the context has no span.
#[derive(Debug)]
pub(crate) struct BridgedPropagator<P>(pub(crate) P);

impl<P: TextMapPropagator> TextMapPropagator for BridgedPropagator<P> {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        match with_tracing_span(cx) {
            Some(cx) => self.0.inject_context(&cx, injector),
            None => self.0.inject_context(cx, injector),
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        self.0.extract_with_context(cx, extractor)
    }

    fn fields(&self) -> opentelemetry::propagation::text_map_propagator::FieldIter<'_> {
        self.0.fields()
    }
}
