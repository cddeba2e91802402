//! The SDK's own `tracing` layer against the OpenTelemetry API and the OpenTelemetry
//! specification's semantics: parenthood across `tracing` and API spans, sampling (root,
//! remote parents, trace-id ratio), W3C trace context and baggage, `SpanExt`, events and
//! errors, `otel.*` and typed fields, and spawned async work.
//!
//! Only [`opentelemetry_api_and_tracing_spans_share_traces_through_the_global_provider`]
//! installs anything globally (`try_init`: subscriber, tracer provider, propagator), because
//! the OpenTelemetry API's tracer reaches the SDK's pipeline only through the global provider
//! and a process has one global subscriber. Every other test builds its own pipeline with
//! `into_layer` and a thread-local `with_default` dispatcher, so they run in parallel.

use std::time::Duration;

use spindle_sdk::opentelemetry::baggage::BaggageExt as _;
use spindle_sdk::opentelemetry::propagation::Extractor as _;
use spindle_sdk::opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId, TraceState, Tracer as _,
};
use spindle_sdk::opentelemetry::{global, Context, KeyValue, Value};
use spindle_sdk::opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use spindle_sdk::propagation::{extract_context, inject_context, set_remote_parent, HeaderPairs};
use spindle_sdk::tracing::instrument::WithSubscriber as _;
use spindle_sdk::tracing::Dispatch;
use spindle_sdk::tracing_subscriber::layer::SubscriberExt as _;
use spindle_sdk::tracing_subscriber::Registry;
use spindle_sdk::{ParentBasedRoot, SamplerConfig, SpanExt as _, TracingGuard};
use tracing::Instrument as _;

const REMOTE_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const REMOTE_SPAN: &str = "00f067aa0ba902b7";

/// One `into_layer` pipeline exporting into memory, with its thread-local dispatcher.
struct Pipeline {
    exporter: InMemorySpanExporter,
    guard: TracingGuard,
    dispatch: Dispatch,
}

fn pipeline(name: &str, sampler: SamplerConfig) -> Pipeline {
    pipeline_with(name, sampler, true)
}

/// Whether these tests run on the SDK's own subscriber (`into_dispatch`): they do when this
/// file is compiled as a module of `interop_subscriber.rs`, else on the registry with the
/// SDK's layer (`into_layer`).
fn own_subscriber() -> bool {
    module_path!().starts_with("interop_subscriber")
}

fn pipeline_with(name: &str, sampler: SamplerConfig, activation: bool) -> Pipeline {
    let exporter = InMemorySpanExporter::default();
    let builder = spindle_sdk::builder(name)
        .exporter(exporter.clone())
        .sampler(sampler)
        .otel_context_activation(activation)
        // Room for the ratio test's spans: a drop would read as a sampling decision.
        .max_queue_size(65_536)
        // The events these tests make are for the spans, not for the test's output.
        .log_filter("off");
    if own_subscriber() {
        let (dispatch, guard) = builder.into_dispatch().expect("pipeline builds");
        return Pipeline { exporter, guard, dispatch };
    }
    let (layer, guard) = builder.into_layer::<Registry>().expect("pipeline builds");
    Pipeline { exporter, guard, dispatch: Dispatch::new(Registry::default().with(layer)) }
}

impl Pipeline {
    fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        tracing::dispatcher::with_default(&self.dispatch, f)
    }

    /// Everything ended so far, after a flush; fails if the pipeline dropped any span.
    fn finished(&self) -> Vec<SpanData> {
        finished(&self.guard, &self.exporter)
    }
}

fn finished(guard: &TracingGuard, exporter: &InMemorySpanExporter) -> Vec<SpanData> {
    guard.flush_with_timeout(Duration::from_secs(10)).expect("flush");
    let stats = guard.stats();
    assert_eq!((stats.dropped, stats.failed), (0, 0), "no span may be lost: {stats:?}");
    exporter.get_finished_spans().expect("exporter readable")
}

fn names(spans: &[SpanData]) -> Vec<&str> {
    let mut names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
    names.sort_unstable();
    names
}

/// The one exported span named `name`.
fn find<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    let mut matching = spans.iter().filter(|s| s.name == name);
    let span = matching.next().unwrap_or_else(|| panic!("no span {name:?} among {:?}", names(spans)));
    assert!(matching.next().is_none(), "more than one span {name:?} among {:?}", names(spans));
    span
}

fn absent(spans: &[SpanData], name: &str) {
    assert!(spans.iter().all(|s| s.name != name), "{name:?} must not be exported: {:?}", names(spans));
}

fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| &kv.value)
}

fn event_attr<'a>(event: &'a spindle_sdk::opentelemetry::trace::Event, key: &str) -> Option<&'a Value> {
    event.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| &kv.value)
}

/// The span `child` was started with `parent` as its local parent.
fn assert_child_of(child: &SpanData, parent: &SpanData) {
    assert_eq!(
        child.span_context.trace_id(),
        parent.span_context.trace_id(),
        "{} is in {}'s trace",
        child.name,
        parent.name
    );
    assert_eq!(child.parent_span_id, parent.span_context.span_id(), "{}'s parent is {}", child.name, parent.name);
    assert!(!child.parent_span_is_remote, "{}'s parent {} is local", child.name, parent.name);
}

/// A context as extracted from another process: `traceparent` with the sampled flag or not.
fn remote_context(sampled: bool) -> Context {
    let sc = SpanContext::new(
        TraceId::from_hex(REMOTE_TRACE).expect("trace id"),
        SpanId::from_hex(REMOTE_SPAN).expect("span id"),
        if sampled { TraceFlags::SAMPLED } else { TraceFlags::default() },
        true,
        TraceState::NONE,
    );
    Context::new().with_remote_span_context(sc)
}

fn traceparent_of(span: &SpanData) -> String {
    format!("00-{}-{}-01", span.span_context.trace_id(), span.span_context.span_id())
}

/// Scenarios 1 and 2, and the sampling decision flowing both ways between `tracing` and the
/// OpenTelemetry API, through `try_init`'s global tracer provider and propagator. The only
/// test of this binary that touches globals.
#[test]
fn opentelemetry_api_and_tracing_spans_share_traces_through_the_global_provider() {
    let exporter = InMemorySpanExporter::default();
    let guard = spindle_sdk::builder("interop-global")
        .exporter(exporter.clone())
        .sampler(SamplerConfig::ParentBased(ParentBasedRoot::AlwaysOn))
        .try_init()
        .expect("the only global init of this binary");
    let tracer = global::tracer("lib");

    // 1. An API span with no explicit parent inside an entered `tracing` span.
    tracing::info_span!("outer").in_scope(|| tracer.in_span("inner", |_| {}));

    // 2. A `tracing` span inside an API span's active context.
    tracer.in_span("api-root", |_cx| tracing::info_span!("child").in_scope(|| {}));

    // Both ways, nested: tracing > API > tracing > API.
    tracing::info_span!("chain-1").in_scope(|| {
        tracer.in_span("chain-2", |_| tracing::info_span!("chain-3").in_scope(|| tracer.in_span("chain-4", |_| {})))
    });

    // The global propagator sees the entered `tracing` span as the current context.
    let global_headers = tracing::info_span!("propagated").in_scope(|| {
        let mut headers = HeaderPairs::default();
        global::get_text_map_propagator(|p| p.inject_context(&Context::current(), &mut headers));
        headers
    });

    // Parent-based sampling across the two: an unsampled `tracing` span's API children and
    // an unsampled API span's `tracing` children are not recorded either.
    let unsampled = tracing::info_span!("tracing-under-unsampled-remote");
    assert!(set_remote_parent(&unsampled, remote_context(false)));
    unsampled.in_scope(|| tracer.in_span("api-under-unsampled-tracing", |_| {}));
    drop(unsampled);
    {
        let _remote = remote_context(false).attach();
        tracer.in_span("api-under-unsampled-remote", |_| {
            tracing::info_span!("tracing-under-unsampled-api").in_scope(|| {})
        });
    }
    // And a sampled remote parent reaches a `tracing` span through an API span.
    {
        let _remote = remote_context(true).attach();
        tracer.in_span("api-under-sampled-remote", |_| tracing::info_span!("tracing-under-api-remote").in_scope(|| {}));
    }

    let spans = finished(&guard, &exporter);

    // 1.
    let outer = find(&spans, "outer");
    let inner = find(&spans, "inner");
    assert_child_of(inner, outer);
    assert_eq!(inner.instrumentation_scope.name(), "lib", "the API span keeps its tracer's scope");
    assert_eq!(outer.instrumentation_scope.name(), "spindle-sdk", "tracing spans have the SDK's scope");
    assert!(inner.span_context.is_sampled() && outer.span_context.is_sampled());

    // 2.
    let api_root = find(&spans, "api-root");
    let child = find(&spans, "child");
    assert_child_of(child, api_root);
    assert_eq!(api_root.parent_span_id, SpanId::INVALID, "api-root is a root");
    assert_eq!(api_root.instrumentation_scope.name(), "lib");
    assert_eq!(child.instrumentation_scope.name(), "spindle-sdk");

    let chain: Vec<&SpanData> = ["chain-1", "chain-2", "chain-3", "chain-4"].iter().map(|n| find(&spans, n)).collect();
    for pair in chain.windows(2) {
        assert_child_of(pair[1], pair[0]);
    }

    let propagated = find(&spans, "propagated");
    assert_eq!(global_headers.get("traceparent"), Some(traceparent_of(propagated).as_str()));

    for name in [
        "tracing-under-unsampled-remote",
        "api-under-unsampled-tracing",
        "api-under-unsampled-remote",
        "tracing-under-unsampled-api",
    ] {
        absent(&spans, name);
    }
    let api_remote = find(&spans, "api-under-sampled-remote");
    assert_eq!(api_remote.span_context.trace_id().to_string(), REMOTE_TRACE);
    assert_eq!(api_remote.parent_span_id.to_string(), REMOTE_SPAN);
    assert!(api_remote.parent_span_is_remote);
    assert_child_of(find(&spans, "tracing-under-api-remote"), api_remote);

    assert_eq!(spans.len(), 11, "nothing else was exported: {:?}", names(&spans));
}

/// Scenario 3: Parent-based sampling with an always-off root: roots are dropped, a span whose remote
/// parent is sampled is recorded in full (its ids, and the name, kind and attributes it was
/// created with), and its local children follow it.
#[test]
fn parent_based_always_off_records_only_spans_with_a_sampled_remote_parent() {
    let p = pipeline("sampling-off", SamplerConfig::ParentBased(ParentBasedRoot::AlwaysOff));
    let root_traceparent = p.run(|| {
        let root = tracing::info_span!("local-root");
        root.in_scope(|| tracing::info_span!("child-of-local-root").in_scope(|| {}));
        // An unsampled span still propagates its context, with the sampled flag off.
        let mut headers = HeaderPairs::default();
        inject_context(&root.context(), &mut headers);
        headers.get("traceparent").map(str::to_owned)
    });

    p.run(|| {
        let span =
            tracing::info_span!("consume", otel.name = "process prices", otel.kind = "consumer", symbol = "AAPL");
        assert!(set_remote_parent(&span, remote_context(true)), "the SDK records the span");
        span.in_scope(|| tracing::info_span!("handle").in_scope(|| {}));
        // Through `SpanExt::set_parent` as well.
        let other = tracing::info_span!("consume-via-span-ext");
        assert!(other.set_parent(remote_context(true)));
        drop(other);
    });

    let spans = p.finished();
    absent(&spans, "local-root");
    absent(&spans, "child-of-local-root");
    let traceparent = root_traceparent.expect("an unsampled span's context is still injected");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[3], "00", "sampled flag off: {traceparent}");
    assert_ne!(parts[1], "0".repeat(32), "valid trace id: {traceparent}");
    assert_ne!(parts[2], "0".repeat(16), "valid span id: {traceparent}");

    let via_ext = find(&spans, "consume-via-span-ext");
    assert_eq!(via_ext.span_context.trace_id().to_string(), REMOTE_TRACE);
    assert_eq!(via_ext.parent_span_id.to_string(), REMOTE_SPAN);
    assert!(via_ext.parent_span_is_remote);
    assert!(via_ext.span_context.is_sampled());

    let consume = spans
        .iter()
        .find(|s| s.parent_span_id.to_string() == REMOTE_SPAN && s.name != "consume-via-span-ext")
        .unwrap_or_else(|| panic!("the span with a sampled remote parent is exported: {:?}", names(&spans)));
    assert_eq!(consume.span_context.trace_id().to_string(), REMOTE_TRACE);
    assert!(consume.parent_span_is_remote, "parent_span_is_remote");
    assert!(consume.span_context.is_sampled());
    assert_child_of(find(&spans, "handle"), consume);
    // What the span was created with must not depend on the root sampler's first decision.
    // (A span re-parented by `set_remote_parent` is exported with the fields it was created
    // with, as the SDK's own Kafka consumer and axum server spans are made.)
    assert_eq!(
        (consume.name.as_ref(), consume.span_kind.clone(), attr(consume, "symbol")),
        ("process prices", SpanKind::Consumer, Some(&Value::from("AAPL"))),
        "otel.name, otel.kind and attributes given at creation of a span whose root decision was \
         'drop' and whose sampled remote parent was set afterwards"
    );
}

/// Scenario 3: A remote parent that is not sampled makes a span (and its children) unsampled, even
/// where a root would be sampled.
#[test]
fn parent_based_always_on_follows_an_unsampled_remote_parent() {
    let p = pipeline("sampling-on", SamplerConfig::ParentBased(ParentBasedRoot::AlwaysOn));
    p.run(|| {
        tracing::info_span!("sampled-root").in_scope(|| {});
        let span = tracing::info_span!("unsampled-remote-child");
        assert!(set_remote_parent(&span, remote_context(false)));
        span.in_scope(|| tracing::info_span!("grandchild-of-unsampled").in_scope(|| {}));
        let sampled = tracing::info_span!("sampled-remote-child");
        assert!(sampled.set_parent(remote_context(true)));
        drop(sampled);
    });
    let spans = p.finished();
    find(&spans, "sampled-root");
    absent(&spans, "unsampled-remote-child");
    absent(&spans, "grandchild-of-unsampled");
    let sampled = find(&spans, "sampled-remote-child");
    assert_eq!(sampled.span_context.trace_id().to_string(), REMOTE_TRACE);
    assert_eq!(sampled.parent_span_id.to_string(), REMOTE_SPAN);
    assert!(sampled.parent_span_is_remote);
    assert_eq!(spans.len(), 2, "{:?}", names(&spans));
}

/// Scenario 3: Trace-id ratio sampling: about the ratio of new traces, one decision per trace.
#[test]
fn ratio_sampling_keeps_about_half_of_the_traces_and_decides_once_per_trace() {
    const ROOTS: usize = 2000;
    for sampler in [SamplerConfig::Ratio(0.5), SamplerConfig::ParentBased(ParentBasedRoot::Ratio(0.5))] {
        let p = pipeline("sampling-ratio", sampler);
        p.run(|| {
            for i in 0..ROOTS {
                tracing::info_span!("ratio-root", i).in_scope(|| {
                    tracing::info_span!("ratio-child").in_scope(|| tracing::info_span!("ratio-leaf").in_scope(|| {}))
                });
            }
        });
        let spans = p.finished();
        let roots: Vec<&SpanData> = spans.iter().filter(|s| s.name == "ratio-root").collect();
        let fraction = roots.len() as f64 / ROOTS as f64;
        assert!((0.4..0.6).contains(&fraction), "{sampler:?}: {} of {ROOTS} roots sampled", roots.len());
        let root_ids: std::collections::HashSet<SpanId> = roots.iter().map(|s| s.span_context.span_id()).collect();
        let children: Vec<&SpanData> = spans.iter().filter(|s| s.name == "ratio-child").collect();
        let leaves: Vec<&SpanData> = spans.iter().filter(|s| s.name == "ratio-leaf").collect();
        // Every exported child's root is exported (never a child of an unsampled root) ...
        for child in &children {
            assert!(root_ids.contains(&child.parent_span_id), "{sampler:?}: a child of an unsampled root was exported");
        }
        // ... and every exported root's child is (always a child of a sampled root).
        let parents: std::collections::HashSet<SpanId> = children.iter().map(|s| s.parent_span_id).collect();
        assert_eq!(parents, root_ids, "{sampler:?}: each sampled root has its child exported");
        assert_eq!(children.len(), roots.len(), "{sampler:?}");
        let child_ids: std::collections::HashSet<SpanId> = children.iter().map(|s| s.span_context.span_id()).collect();
        assert_eq!(leaves.len(), roots.len(), "{sampler:?}");
        assert!(leaves.iter().all(|l| child_ids.contains(&l.parent_span_id)), "{sampler:?}");
        assert_eq!(spans.len(), 3 * roots.len(), "{sampler:?}");
    }
}

/// Scenario 4: W3C `traceparent` injected from a span's context matches the exported span.
#[test]
fn injected_traceparent_matches_the_exported_span() {
    let p = pipeline("w3c", SamplerConfig::AlwaysOn);
    let (headers, trace_id) = p.run(|| {
        let span = tracing::info_span!("send");
        span.in_scope(|| {
            let mut headers = HeaderPairs::default();
            inject_context(&span.context(), &mut headers);
            (headers, spindle_sdk::current_trace_id())
        })
    });
    let spans = p.finished();
    let send = find(&spans, "send");
    assert_eq!(headers.get("traceparent"), Some(traceparent_of(send).as_str()));
    assert_eq!(trace_id, Some(send.span_context.trace_id().to_string()), "current_trace_id");
    assert_eq!(headers.get("baggage"), None, "no baggage to send");
}

/// Scenario 4: Incoming `traceparent`, `tracestate` and `baggage` set as a span's parent: the span
/// continues the remote trace, and its descendants (children inside it, and spans given it
/// as explicit parent) carry the baggage and trace state on.
#[test]
fn extracted_baggage_and_trace_state_flow_to_descendants() {
    for activation in [true, false] {
        let p = pipeline_with("w3c-baggage", SamplerConfig::ParentBased(ParentBasedRoot::AlwaysOn), activation);
        let incoming = HeaderPairs(vec![
            ("traceparent".into(), format!("00-{REMOTE_TRACE}-{REMOTE_SPAN}-01")),
            ("tracestate".into(), "vendor=v1".into()),
            ("baggage".into(), "k=v".into()),
        ]);
        let (from_child, from_grandchild) = p.run(|| {
            let server = tracing::info_span!("server");
            let extracted = extract_context(&incoming);
            assert_eq!(extracted.baggage().get("k").map(|v| v.to_string()), Some("v".to_owned()));
            assert!(set_remote_parent(&server, extracted));
            let child = server.in_scope(|| tracing::info_span!("client"));
            let from_child = child.in_scope(|| {
                let mut headers = HeaderPairs::default();
                inject_context(&child.context(), &mut headers);
                headers
            });
            let grandchild = tracing::info_span!(parent: &child, "grandchild");
            let mut from_grandchild = HeaderPairs::default();
            inject_context(&grandchild.context(), &mut from_grandchild);
            (from_child, from_grandchild)
        });
        let spans = p.finished();
        let server = find(&spans, "server");
        let client = find(&spans, "client");
        let grandchild = find(&spans, "grandchild");
        assert_eq!(server.span_context.trace_id().to_string(), REMOTE_TRACE, "activation {activation}");
        assert_eq!(server.parent_span_id.to_string(), REMOTE_SPAN);
        assert!(server.parent_span_is_remote);
        assert_eq!(server.span_context.trace_state().header(), "vendor=v1", "trace state of the remote parent");
        assert_child_of(client, server);
        assert_child_of(grandchild, client);
        assert_eq!(from_child.get("traceparent"), Some(traceparent_of(client).as_str()), "activation {activation}");
        assert_eq!(from_child.get("baggage"), Some("k=v"), "baggage from a child, activation {activation}");
        assert_eq!(from_child.get("tracestate"), Some("vendor=v1"), "activation {activation}");
        assert_eq!(from_grandchild.get("traceparent"), Some(traceparent_of(grandchild).as_str()));
        assert_eq!(from_grandchild.get("baggage"), Some("k=v"), "baggage from a grandchild, activation {activation}");
    }
}

/// Scenario 5: `SpanExt`: attributes, events, status and links reach the exported span; `Ok` is final.
#[test]
fn span_ext_operations_show_up_on_the_exported_span() {
    let p = pipeline("span-ext", SamplerConfig::AlwaysOn);
    let linked = p.run(|| {
        let target = tracing::info_span!("link-target");
        let linked = target.context().span().span_context().clone();
        drop(target);

        let span = tracing::info_span!("ext");
        span.set_attribute("order.id", 42_i64);
        span.set_attribute("venue", "XNAS");
        span.add_event("cache miss", vec![KeyValue::new("key", "AAPL")]);
        span.set_status(Status::error("x"));
        span.add_link(linked.clone());
        span.add_link_with_attributes(
            remote_context(true).span().span_context().clone(),
            vec![KeyValue::new("why", "batch")],
        );
        drop(span);

        let ok = tracing::info_span!("ok-is-final");
        ok.set_status(Status::Ok);
        ok.set_status(Status::error("too late"));
        drop(ok);

        let unset = tracing::info_span!("unset-changes-nothing");
        unset.set_status(Status::error("kept"));
        unset.set_status(Status::Unset);
        drop(unset);
        linked
    });
    let spans = p.finished();
    let ext = find(&spans, "ext");
    assert_eq!(attr(ext, "order.id"), Some(&Value::I64(42)));
    assert_eq!(attr(ext, "venue"), Some(&Value::from("XNAS")));
    let event = ext.events.iter().find(|e| e.name == "cache miss").expect("the added event");
    assert_eq!(event_attr(event, "key"), Some(&Value::from("AAPL")));
    assert_eq!(ext.status, Status::error("x"));
    assert_eq!(ext.links.len(), 2, "two links");
    assert_eq!(ext.links[0].span_context, linked);
    assert_eq!(ext.links[0].span_context.span_id(), find(&spans, "link-target").span_context.span_id());
    assert_eq!(ext.links[1].span_context.trace_id().to_string(), REMOTE_TRACE);
    assert_eq!(ext.links[1].attributes, vec![KeyValue::new("why", "batch")]);
    assert_eq!(find(&spans, "ok-is-final").status, Status::Ok);
    assert_eq!(find(&spans, "unset-changes-nothing").status, Status::error("kept"));
}

#[tracing::instrument(err)]
fn fetch_quote(symbol: &str) -> Result<u32, String> {
    Err(format!("no quote for {symbol}"))
}

#[tracing::instrument(err)]
fn fetch_price(symbol: &str) -> Result<u32, String> {
    Ok(symbol.len() as u32)
}

/// Scenario 6: Errors and events: `#[instrument(err)]`, `error!` and `info!` inside spans.
#[test]
fn errors_and_log_events_become_span_status_and_events() {
    let p = pipeline("events", SamplerConfig::AlwaysOn);
    p.run(|| {
        assert!(fetch_quote("XYZ").is_err());
        assert_eq!(fetch_price("AAPL"), Ok(4));
        tracing::info_span!("logs-an-error").in_scope(|| tracing::error!("boom"));
        tracing::info_span!("logs-info").in_scope(|| tracing::info!(symbol = "AAPL", "hello"));
        tracing::info_span!("warns").in_scope(|| tracing::warn!("careful"));
    });
    let spans = p.finished();

    let failed = find(&spans, "fetch_quote");
    assert_eq!(failed.status, Status::error("no quote for XYZ"), "status error with the message");
    let exception = failed.events.iter().find(|e| e.name == "exception").expect("an exception event");
    assert_eq!(event_attr(exception, "exception.message"), Some(&Value::from("no quote for XYZ")));
    assert_eq!(find(&spans, "fetch_price").status, Status::Unset, "Ok results leave the status unset");
    assert!(find(&spans, "fetch_price").events.is_empty());

    assert!(matches!(find(&spans, "logs-an-error").status, Status::Error { .. }), "an error! event sets status error");

    let logs = find(&spans, "logs-info");
    assert_eq!(logs.status, Status::Unset, "an info! event changes no status");
    assert_eq!(logs.events.len(), 1);
    let hello = &logs.events[0];
    assert_eq!(hello.name, "hello");
    assert_eq!(event_attr(hello, "level"), Some(&Value::from("INFO")));
    assert_eq!(event_attr(hello, "symbol"), Some(&Value::from("AAPL")));
    assert_eq!(find(&spans, "warns").status, Status::Unset, "a warn! event changes no status");
    assert_eq!(event_attr(&find(&spans, "warns").events[0], "level"), Some(&Value::from("WARN")));
}

/// Scenario 7: `otel.*` fields and typed field values.
#[test]
fn otel_fields_and_typed_attributes() {
    let p = pipeline("fields", SamplerConfig::AlwaysOn);
    p.run(|| {
        let span = tracing::info_span!(
            "fields",
            otel.name = "GET /quote",
            otel.kind = "client",
            otel.status_code = "ERROR",
            count = -3_i64,
            ratio = 0.25_f64,
            flag = true,
            symbol = "AAPL",
            ids = ?vec![1, 2],
            small = 7_u64,
            big = u64::MAX,
            later = tracing::field::Empty,
        );
        span.record("later", 5_i64);
        drop(span);
        tracing::info_span!("server-ok", otel.kind = "server", otel.status_code = "OK").in_scope(|| {});
        tracing::info_span!("described", otel.kind = "Consumer", otel.status_description = "timed out", otel.tag = "x")
            .in_scope(|| {});
        tracing::info_span!("messaged", otel.kind = "PRODUCER", otel.status_message = "refused").in_scope(|| {});
    });
    let spans = p.finished();
    let span = find(&spans, "GET /quote");
    assert_eq!(span.span_kind, SpanKind::Client);
    assert!(matches!(span.status, Status::Error { .. }), "{:?}", span.status);
    assert_eq!(attr(span, "count"), Some(&Value::I64(-3)));
    assert_eq!(attr(span, "ratio"), Some(&Value::F64(0.25)));
    assert_eq!(attr(span, "flag"), Some(&Value::Bool(true)));
    assert_eq!(attr(span, "symbol"), Some(&Value::from("AAPL")));
    assert_eq!(attr(span, "ids"), Some(&Value::from("[1, 2]")));
    assert_eq!(attr(span, "small"), Some(&Value::I64(7)), "a u64 that fits is an int");
    assert_eq!(attr(span, "big"), Some(&Value::from(u64::MAX.to_string())), "one that does not is its text");
    assert_eq!(attr(span, "later"), Some(&Value::I64(5)), "recorded after creation");
    assert!(
        span.attributes.iter().all(|kv| !kv.key.as_str().starts_with("otel.")),
        "otel.* fields are not attributes: {:?}",
        span.attributes
    );
    let ok = find(&spans, "server-ok");
    assert_eq!(ok.span_kind, SpanKind::Server);
    assert_eq!(ok.status, Status::Ok);
    let described = find(&spans, "described");
    assert_eq!(described.span_kind, SpanKind::Consumer, "kinds in any case");
    assert_eq!(described.status, Status::error("timed out"));
    assert_eq!(attr(described, "otel.tag"), Some(&Value::from("x")), "other otel.* fields stay attributes");
    let messaged = find(&spans, "messaged");
    assert_eq!(messaged.span_kind, SpanKind::Producer);
    assert_eq!(messaged.status, Status::error("refused"));
}

/// Scenario 8: Spawned and fanned-out work stays in the caller's trace, with or without context
/// activation, under a scoped (non-global) subscriber on a multi-thread runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_tasks_stay_in_the_callers_trace() {
    for activation in [true, false] {
        let p = pipeline_with("tasks", SamplerConfig::AlwaysOn, activation);
        async {
            let caller = tracing::info_span!("caller");
            let (release, gate) = tokio::sync::oneshot::channel::<()>();
            // Started in the caller's span, run once that span has closed.
            let late = caller.in_scope(|| {
                spindle_sdk::spawn_in_current_span(async move {
                    gate.await.expect("released");
                    tracing::info_span!("spawned-after-caller-ended").in_scope(|| {});
                })
            });
            async {
                spindle_sdk::spawn_in_current_span(async {
                    tokio::task::yield_now().await;
                    tracing::info_span!("spawned").in_scope(|| {});
                })
                .await
                .expect("spawned task");
                spindle_sdk::spawn_blocking_in_current_span(|| tracing::info_span!("blocking").in_scope(|| {}))
                    .await
                    .expect("blocking task");
                let outputs = spindle_sdk::join_all_in_current_span((0..3_i64).map(|i| async move {
                    tokio::task::yield_now().await;
                    tracing::info_span!("batch-item", i).in_scope(|| i * 10)
                }))
                .await;
                let outputs: Vec<i64> = outputs.into_iter().map(|r| r.expect("batch task")).collect();
                assert_eq!(outputs, [0, 10, 20]);
            }
            .instrument(caller)
            .await;
            // The caller's span is closed now: the late task still joins its trace.
            release.send(()).expect("task waiting");
            late.await.expect("late task");
        }
        .with_subscriber(p.dispatch.clone())
        .await;

        let spans = p.finished();
        let caller = find(&spans, "caller");
        for name in ["spawned", "blocking", "spawned-after-caller-ended"] {
            assert_child_of(find(&spans, name), caller);
        }
        let items: Vec<&SpanData> = spans.iter().filter(|s| s.name == "batch-item").collect();
        assert_eq!(items.len(), 3, "activation {activation}: {:?}", names(&spans));
        for item in items {
            assert_child_of(item, caller);
        }
        assert_eq!(spans.len(), 7, "activation {activation}: {:?}", names(&spans));
    }
}
