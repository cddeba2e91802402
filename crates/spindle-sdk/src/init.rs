//! Turning settings into a running pipeline: subscriber, tracer provider, export worker.
//!
//! Owns the builder and the order of installation. Whatever fails here degrades to plain
//! logging in [`SpindleBuilder::init`]; only the `try_*` methods return the error.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::{KeyValue, Value};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter};
use opentelemetry_sdk::Resource;
use tracing::{Dispatch, Subscriber};
use tracing_subscriber::filter::{filter_fn, EnvFilter, FilterExt, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{Layer, Registry};

use crate::config::{BuilderSettings, Compression, LogFormat, Protocol, SamplerConfig, Settings};
use crate::error::InitError;
use crate::export::{
    on_export_worker, DynSpanExporter, MakeExporter, QueuedSpanProcessor, SdkExporter, SpanQueue, StatsCounters,
};
use crate::guard::TracingGuard;
use crate::layer::{LayerSettings, SpanLayer};
use crate::logs::Logs;
use crate::otlp::OtlpExporter;
use crate::subscriber::SpanSubscriber;
use crate::transport::ClientTls;

/// A `tracing` layer as returned by [`SpindleBuilder::into_layer`].
pub type BoxedLayer<S> = Box<dyn Layer<S> + Send + Sync + 'static>;

/// Configures tracing for one service; start with [`crate::builder`].
///
/// Every setting has a default and a matching `OTEL_*` variable (see the crate documentation);
/// a value set here wins over the variable.
#[derive(Debug)]
pub struct SpindleBuilder {
    settings: BuilderSettings,
    exporter: Option<Box<dyn DynSpanExporter>>,
}

impl SpindleBuilder {
    pub(crate) fn new(service_name: &str) -> Self {
        Self {
            settings: BuilderSettings { service_name: service_name.to_owned(), ..Default::default() },
            exporter: None,
        }
    }

    /// Where spans are sent: `http://host:4317` for gRPC, `http://host:4318` for HTTP
    /// (`/v1/traces` is appended when the URL has no path). Default `OTEL_EXPORTER_OTLP_ENDPOINT`,
    /// else localhost on the protocol's port.
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.settings.endpoint = Some(url.into());
        self
    }

    /// The OTLP transport. Default `OTEL_EXPORTER_OTLP_PROTOCOL`, else gRPC.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.settings.protocol = Some(protocol);
        self
    }

    /// Compresses export requests (`grpc` and `http/protobuf`). Default
    /// `OTEL_EXPORTER_OTLP_COMPRESSION`, else none.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.settings.compression = Some(compression);
        self
    }

    /// Which traces to record. Default `OTEL_TRACES_SAMPLER`, else parent-based always-on.
    pub fn sampler(mut self, sampler: SamplerConfig) -> Self {
        self.settings.sampler = Some(sampler);
        self
    }

    /// Shorthand for a parent-based sampler recording `ratio` (0 to 1) of new traces: callers'
    /// decisions are followed, so a trace is never cut in the middle.
    pub fn sample_ratio(self, ratio: f64) -> Self {
        self.sampler(SamplerConfig::ParentBased(crate::config::ParentBasedRoot::Ratio(ratio)))
    }

    /// Adds a resource attribute (`deployment.environment.name`, `service.version`, ...) to every
    /// span; `OTEL_RESOURCE_ATTRIBUTES` is read as well.
    pub fn resource_attribute(mut self, key: &'static str, value: impl Into<Value>) -> Self {
        self.settings.resource_attributes.push(KeyValue::new(key, value));
        self
    }

    /// Which events are logged to standard output, in `RUST_LOG` syntax (`info,h2=warn`).
    /// Default `RUST_LOG`, else `info`.
    pub fn log_filter(mut self, filter: impl Into<String>) -> Self {
        self.settings.log_filter = Some(filter.into());
        self
    }

    /// Which `tracing` spans become OpenTelemetry spans, in `RUST_LOG` syntax. Default `info`,
    /// which includes every `#[instrument]` at its default level.
    pub fn span_filter(mut self, filter: impl Into<String>) -> Self {
        self.settings.span_filter = Some(filter.into());
        self
    }

    /// Adds to every span its source location (`code.file.path`, `code.line.number`, ...),
    /// `tracing` target (`target`, the module path unless set), thread (`thread.id`,
    /// `thread.name`) and busy / idle time. Off by default: it costs about 0.5 µs and six
    /// attributes per span (see docs/PERFORMANCE.md).
    pub fn span_details(mut self, enabled: bool) -> Self {
        self.settings.span_details = enabled;
        self
    }

    /// Whether every entered `tracing` span also becomes the current OpenTelemetry context
    /// (`opentelemetry::Context::current()`). Off by default: the OpenTelemetry API sees the
    /// current `tracing` span anyway where it asks for a parent — the global tracer that
    /// `init()` installs makes a span started without one (`global::tracer(..).start(..)`)
    /// a child of the current `tracing` span, the global propagator injects it, and a span
    /// carrying baggage is made current regardless (docs/adr/024-otel-api-bridged-not-activated.md).
    /// Turn it on for code that reads `Context::current().span()` itself; it costs a
    /// context attach and detach on every enter and exit of every span (about 2,800
    /// instructions on a request of five spans, see docs/PERFORMANCE.md).
    pub fn otel_context_activation(mut self, enabled: bool) -> Self {
        self.settings.otel_context_activation = Some(enabled);
        self
    }

    /// Text (default) or JSON log lines.
    pub fn log_format(mut self, format: LogFormat) -> Self {
        self.settings.log_format = format;
        self
    }

    /// Spans queued for export at most; more are dropped and counted. Default
    /// `OTEL_BSP_MAX_QUEUE_SIZE`, else 2048.
    pub fn max_queue_size(mut self, spans: usize) -> Self {
        self.settings.max_queue_size = Some(spans);
        self
    }

    /// Spans per export request at most. Default `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, else 512.
    pub fn max_export_batch_size(mut self, spans: usize) -> Self {
        self.settings.max_export_batch_size = Some(spans);
        self
    }

    /// How long a partial batch waits. Default `OTEL_BSP_SCHEDULE_DELAY` (ms), else 1 s.
    pub fn scheduled_delay(mut self, delay: Duration) -> Self {
        self.settings.scheduled_delay = Some(delay);
        self
    }

    /// How long one export may take. Default `OTEL_BSP_EXPORT_TIMEOUT` (ms), else 10 s.
    pub fn export_timeout(mut self, timeout: Duration) -> Self {
        self.settings.export_timeout = Some(timeout);
        self
    }

    /// How long dropping the guard may wait for the last spans. Default 5 s.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.settings.shutdown_timeout = Some(timeout);
        self
    }

    /// How often, at most, dropped spans and failed exports are reported in the log.
    /// Default 10 s.
    pub fn drop_log_interval(mut self, interval: Duration) -> Self {
        self.settings.drop_log_interval = Some(interval);
        self
    }

    /// Turns span export off (`true`) or on (`false`) regardless of `OTEL_SDK_DISABLED`;
    /// logging works either way.
    pub fn disabled(mut self, disabled: bool) -> Self {
        self.settings.disabled = Some(disabled);
        self
    }

    /// Trusts the PEM certificates in `path` (a private CA's, say) besides the system's roots
    /// for an `https://` endpoint. Default `OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE`, else
    /// `OTEL_EXPORTER_OTLP_CERTIFICATE`, else the system's roots alone.
    pub fn ca_certificate(mut self, path: impl Into<PathBuf>) -> Self {
        self.settings.ca_certificate = Some(path.into());
        self
    }

    /// Presents the PEM certificate chain in `path` to an `https://` endpoint that asks for
    /// a client certificate (mutual TLS); needs [`SpindleBuilder::client_key`]. Default
    /// `OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE`, else `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`.
    pub fn client_certificate(mut self, path: impl Into<PathBuf>) -> Self {
        self.settings.client_certificate = Some(path.into());
        self
    }

    /// The PEM private key (PKCS#8, PKCS#1 or SEC1) of the client certificate. Default
    /// `OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY`, else `OTEL_EXPORTER_OTLP_CLIENT_KEY`.
    pub fn client_key(mut self, path: impl Into<PathBuf>) -> Self {
        self.settings.client_key = Some(path.into());
        self
    }

    /// Sends header `name: value` with every export request (gRPC metadata or HTTP header),
    /// for example `authorization` with `Bearer <token>`. Adds to `OTEL_EXPORTER_OTLP_HEADERS`
    /// and `OTEL_EXPORTER_OTLP_TRACES_HEADERS` and wins over them for the same name. The value
    /// is sent as given (printable ASCII; not percent-decoded).
    pub fn header(mut self, name: impl AsRef<str>, value: impl Into<String>) -> Self {
        self.settings.headers.set(name.as_ref(), value.into());
        self
    }

    /// Writes the spans for tenant `name`: sends `X-Scope-OrgID: <name>` with every export
    /// request. Default `SPINDLE_TENANT`, else no tenant header (the backend's default tenant).
    pub fn tenant(mut self, name: impl Into<String>) -> Self {
        self.settings.tenant = Some(name.into());
        self
    }

    /// Sends spans to `exporter` instead of OTLP (for example an in-memory exporter in tests).
    /// The exporter still runs on the SDK's own export thread behind the bounded queue.
    pub fn exporter<E: SpanExporter + 'static>(mut self, exporter: E) -> Self {
        self.exporter = Some(Box::new(SdkExporter(exporter)));
        self
    }

    /// Installs logging and tracing globally and returns the guard that flushes on drop.
    ///
    /// Never fails and never panics: when export cannot be set up (bad settings, another
    /// subscriber already installed), the reason is logged and the service continues with
    /// plain logging; [`TracingGuard::is_exporting`] then returns `false`.
    pub fn init(self) -> TracingGuard {
        let log_format = self.settings.log_format;
        let log_filter = self.settings.log_filter.clone();
        match self.try_init() {
            Ok(guard) => guard,
            Err(error) => {
                // Install plain logging if nobody did; if somebody did, their subscriber logs.
                let filter = log_filter
                    .and_then(|f| EnvFilter::try_new(f).ok())
                    .unwrap_or_else(|| EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")));
                let subscriber = Registry::default().with(fmt_layer(log_format).with_filter(filter));
                let _ = tracing::subscriber::set_global_default(subscriber);
                tracing::warn!(%error, "tracing export unavailable, continuing with logs only");
                TracingGuard::disabled()
            }
        }
    }

    /// Like [`SpindleBuilder::init`], but returns the error instead of degrading to logs.
    /// `OTEL_SDK_DISABLED=true` is not an error: it installs logging only.
    pub fn try_init(self) -> Result<TracingGuard, InitError> {
        crate::transport::crypto_provider();
        let settings = Settings::resolve(&self.settings, |k| std::env::var(k).ok())?;
        let log_filter = env_filter("log_filter", &settings.log_filter)?;
        let log_layer = || fmt_layer(settings.log_format).with_filter(log_filter);
        if settings.disabled {
            tracing::subscriber::set_global_default(Registry::default().with(log_layer()))
                .map_err(|_| InitError::SubscriberAlreadySet)?;
            tracing::info!(service = %settings.service_name, "span export disabled, logging only");
            return Ok(TracingGuard::disabled());
        }
        let guard = match own_filters(&settings) {
            // Target and level directives only (nearly always): the SDK's own subscriber,
            // which logs too.
            Ok((targets, logs)) => {
                let Pipeline { queue, layer_settings, guard, .. } = build_parts(settings.clone(), self.exporter)?;
                install(SpanSubscriber::new(queue, layer_settings, targets, Some(logs)), guard)?
            }
            // Span or field directives need the registry and `EnvFilter`.
            Err(_) => {
                let (otel_layer, guard) = build_pipeline(settings.clone(), self.exporter)?;
                install(Registry::default().with(log_layer()).with(otel_layer), guard)?
            }
        };
        if let Some(provider) = guard.provider() {
            opentelemetry::global::set_tracer_provider(crate::bridge::BridgedTracerProvider(provider.clone()));
        }
        opentelemetry::global::set_text_map_propagator(crate::bridge::BridgedPropagator(
            crate::propagation::new_w3c_propagator(),
        ));
        tracing::info!(
            service = %settings.service_name,
            endpoint = %settings.endpoint,
            protocol = ?settings.protocol,
            tenant = settings.tenant.as_deref().unwrap_or("-"),
            headers = ?settings.headers.names(),
            "tracing initialised"
        );
        warn_unused_tls(&settings);
        Ok(guard)
    }

    /// Builds the OpenTelemetry layer without installing anything globally, for services that
    /// compose their own subscriber (or tests that run several "services" in one process).
    /// The layer applies the span filter; logging is left to the caller.
    pub fn into_layer<S>(self) -> Result<(BoxedLayer<S>, TracingGuard), InitError>
    where
        S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        crate::transport::crypto_provider();
        let mut settings = Settings::resolve(&self.settings, |k| std::env::var(k).ok())?;
        if settings.disabled {
            settings.sampler = SamplerConfig::AlwaysOff;
        }
        warn_unused_tls(&settings);
        build_pipeline(settings, self.exporter)
    }
}

impl SpindleBuilder {
    /// The subscriber [`SpindleBuilder::init`] installs — span export and log lines — not
    /// installed: for a thread or a test that runs under a dispatcher of its own
    /// (`tracing::dispatcher::with_default`). It does without `tracing-subscriber`'s
    /// registry, so a span costs less than through [`SpindleBuilder::into_layer`]; the span
    /// and log filters must then be target and level directives only (`info,h2=off`), else
    /// this fails with [`InitError::InvalidSetting`].
    pub fn into_dispatch(self) -> Result<(Dispatch, TracingGuard), InitError> {
        crate::transport::crypto_provider();
        let mut settings = Settings::resolve(&self.settings, |k| std::env::var(k).ok())?;
        if settings.disabled {
            settings.sampler = SamplerConfig::AlwaysOff;
        }
        warn_unused_tls(&settings);
        let (targets, logs) = own_filters(&settings)?;
        let Pipeline { queue, layer_settings, guard, .. } = build_parts(settings, self.exporter)?;
        Ok((Dispatch::new(SpanSubscriber::new(queue, layer_settings, targets, Some(logs))), guard))
    }
}

/// Installs `subscriber` as the process's, or shuts the pipeline behind `guard` down when
/// another was installed first.
fn install(
    subscriber: impl Subscriber + Send + Sync + 'static,
    guard: TracingGuard,
) -> Result<TracingGuard, InitError> {
    if tracing::subscriber::set_global_default(subscriber).is_err() {
        let _ = guard.shutdown();
        return Err(InitError::SubscriberAlreadySet);
    }
    Ok(guard)
}

/// The span filter and the log lines of the SDK's own subscriber: both filters must be target
/// and level directives.
fn own_filters(settings: &Settings) -> Result<(Targets, Logs), InitError> {
    let targets = |name: &'static str, directives: &str| match SpanFilter::parse(directives)? {
        SpanFilter::Targets(targets) => Ok(targets),
        SpanFilter::Env(_) => Err(InitError::InvalidSetting {
            name,
            value: directives.to_owned(),
            reason: "the SDK's own subscriber takes target and level directives only".to_owned(),
        }),
    };
    let spans = targets("span_filter", &settings.span_filter)?;
    let logs = Logs::new(targets("log_filter", &settings.log_filter)?, settings.log_format);
    Ok((spans, logs))
}

/// TLS files given for a plain `http://` endpoint are not used: say so, since whoever set
/// them expects the connection to be encrypted.
fn warn_unused_tls(settings: &Settings) {
    if !settings.disabled && !settings.tls.is_empty() && !crate::transport::is_https(&settings.endpoint) {
        tracing::warn!(
            endpoint = %settings.endpoint,
            "tls files are set but the endpoint is not https://, so spans are sent unencrypted and the files unused"
        );
    }
}

fn env_filter(name: &'static str, directives: &str) -> Result<EnvFilter, InitError> {
    EnvFilter::try_new(directives).map_err(|e| InitError::InvalidSetting {
        name,
        value: directives.to_owned(),
        reason: e.to_string(),
    })
}

/// Which `tracing` spans become OpenTelemetry spans.
///
/// Directives naming only targets and levels (`info`, `info,h2=off`) — nearly always the
/// case — become a `Targets` filter, decided once per call site; `EnvFilter`, needed for
/// span and field directives (`[span{field=1}]`), also takes a lock on every enter, exit and
/// close of every span.
enum SpanFilter {
    Targets(Targets),
    Env(Box<EnvFilter>),
}

impl SpanFilter {
    fn parse(directives: &str) -> Result<Self, InitError> {
        if !directives.contains(['[', '{']) {
            if let Ok(targets) = directives.parse::<Targets>() {
                return Ok(Self::Targets(targets));
            }
        }
        env_filter("span_filter", directives).map(|env| Self::Env(Box::new(env)))
    }
}

fn fmt_layer<S>(format: LogFormat) -> BoxedLayer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    // Colours only for a person at a terminal, never into log files or collectors.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    match format {
        LogFormat::Text => Box::new(tracing_subscriber::fmt::layer().with_ansi(ansi)),
        LogFormat::Json => Box::new(tracing_subscriber::fmt::layer().json()),
    }
}

/// What a pipeline is made of, before a layer or a subscriber takes its queue.
struct Pipeline {
    queue: Arc<SpanQueue>,
    layer_settings: LayerSettings,
    span_filter: SpanFilter,
    guard: TracingGuard,
}

fn build_parts(settings: Settings, exporter: Option<Box<dyn DynSpanExporter>>) -> Result<Pipeline, InitError> {
    let span_filter = SpanFilter::parse(&settings.span_filter)?;
    // The SDK's own OTLP exporter takes spans the layer has encoded already.
    let encode_in_layer = exporter.is_none() && settings.protocol != Protocol::HttpJson;
    let make_exporter: MakeExporter = match exporter {
        Some(e) => Box::new(move || Ok(e)),
        None => {
            // Files are read here, on the caller's thread, so a bad one fails init at once.
            let tls = crate::transport::load_for(&settings.endpoint, &settings.tls)?;
            otlp_exporter(&settings, tls)
        }
    };
    let resource = Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attributes(settings.resource_attributes.clone())
        .build();
    let stats = Arc::new(StatsCounters::default());
    let processor = QueuedSpanProcessor::start(
        make_exporter,
        resource.clone(),
        settings.batch,
        settings.drop_log_interval,
        Arc::clone(&stats),
        encode_in_layer,
    )?;
    let flusher = processor.flusher();
    let queue = processor.queue();
    let layer_settings = LayerSettings {
        sampler: settings.sampler,
        details: settings.span_details,
        activation: settings.otel_context_activation,
        keep_fields: false,
    };
    // The OpenTelemetry API's spans (`global::tracer`) share the queue and the sampler.
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(settings.sampler.to_sampler())
        .with_resource(resource)
        .build();
    let guard = TracingGuard::exporting(provider, stats, settings.shutdown_timeout, flusher);
    Ok(Pipeline { queue, layer_settings, span_filter, guard })
}

fn build_pipeline<S>(
    settings: Settings,
    exporter: Option<Box<dyn DynSpanExporter>>,
) -> Result<(BoxedLayer<S>, TracingGuard), InitError>
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let Pipeline { queue, layer_settings, span_filter, guard } = build_parts(settings, exporter)?;
    let layer = SpanLayer::new(queue, layer_settings);
    // The export worker's own transport spans (h2, hyper, tonic) never become spans.
    let not_on_worker = filter_fn(|_| !on_export_worker());
    let layer: BoxedLayer<S> = match span_filter {
        SpanFilter::Targets(targets) => Box::new(layer.with_filter(targets.and(not_on_worker))),
        SpanFilter::Env(env) => Box::new(layer.with_filter((*env).and(not_on_worker))),
    };
    Ok((layer, guard))
}

fn otlp_exporter(settings: &Settings, tls: Option<ClientTls>) -> MakeExporter {
    let protocol = settings.protocol;
    let compression = settings.compression;
    let endpoint = settings.endpoint.clone();
    let timeout = settings.batch.export_timeout;
    let headers = settings.headers.clone();
    Box::new(move || {
        let tls = tls.as_ref();
        let exporter: Box<dyn DynSpanExporter> = match protocol {
            // The SDK's own encoder: no intermediate protobuf structs (module `otlp`).
            Protocol::Grpc => Box::new(OtlpExporter::grpc_with(&endpoint, timeout, compression, tls, &headers)?),
            Protocol::HttpProtobuf => {
                Box::new(OtlpExporter::http_protobuf_with(&endpoint, timeout, compression, tls, &headers)?)
            }
            // An async client, run on the export worker's runtime (never the blocking client,
            // which would start a runtime inside ours).
            Protocol::HttpJson => Box::new(SdkExporter(
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpJson)
                    .with_http_client(HeaderClient {
                        client: crate::transport::http_client(&endpoint, timeout, tls, &headers)?,
                        headers: headers.to_header_map()?,
                    })
                    .with_endpoint(endpoint.clone())
                    .with_timeout(timeout)
                    .build()
                    .map_err(|source| InitError::Exporter { endpoint: endpoint.clone(), source })?,
            )),
        };
        Ok(exporter)
    })
}

/// The `http/json` exporter's client: sets the SDK's headers on each request last, so they
/// win over those opentelemetry-otlp reads from the environment itself (whose merge rules
/// differ: it takes the per-signal variable instead of the generic one, not per header).
#[derive(Debug)]
struct HeaderClient {
    client: reqwest::Client,
    headers: reqwest::header::HeaderMap,
}

impl opentelemetry_http::HttpClient for HeaderClient {
    // What `#[async_trait]` expands `async fn send_bytes` to.
    fn send_bytes<'life0, 'async_trait>(
        &'life0 self,
        mut request: opentelemetry_http::Request<opentelemetry_http::Bytes>,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<
                        opentelemetry_http::Response<opentelemetry_http::Bytes>,
                        opentelemetry_http::HttpError,
                    >,
                > + Send
                + 'async_trait,
        >,
    >
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        for (name, value) in &self.headers {
            request.headers_mut().insert(name.clone(), value.clone());
        }
        self.client.send_bytes(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{Span as _, SpanId, Tracer as _, TracerProvider as _};
    use opentelemetry_sdk::trace::InMemorySpanExporter;
    use tracing::Dispatch;

    /// The OpenTelemetry API and `tracing` spans mixed, with context activation off (the
    /// default) and on, through the SDK's subscriber and through its layer on the registry:
    /// the global tracer and propagator see the current `tracing` span either way, an
    /// OpenTelemetry span made current inside a `tracing` span is the parent of the `tracing`
    /// spans started inside it, a context attached before a `tracing` span is that span's
    /// parent only, and baggage is in `Context::current()` inside the span that carries it.
    #[test]
    fn otel_api_and_tracing_spans_nest_with_and_without_context_activation() {
        use opentelemetry::baggage::BaggageExt as _;
        use opentelemetry::propagation::TextMapPropagator as _;
        use opentelemetry::trace::TraceContextExt as _;
        use opentelemetry::{Context, KeyValue};
        use std::collections::HashMap;

        for activation in [false, true] {
            for own_subscriber in [true, false] {
                let case = format!("activation {activation}, own subscriber {own_subscriber}");
                let exporter = InMemorySpanExporter::default();
                let builder = crate::builder("activation")
                    .exporter(exporter.clone())
                    .sampler(SamplerConfig::AlwaysOn)
                    .log_filter("off")
                    .otel_context_activation(activation);
                let (dispatch, guard) = if own_subscriber {
                    builder.into_dispatch().expect("pipeline builds")
                } else {
                    let (layer, guard) = builder.into_layer::<Registry>().expect("pipeline builds");
                    (Dispatch::new(Registry::default().with(layer)), guard)
                };
                let provider = guard.provider().expect("exporting").clone();
                let tracer = crate::bridge::BridgedTracerProvider(provider.clone()).tracer("bridged");
                let raw = provider.tracer("raw");
                let propagator = crate::bridge::BridgedPropagator(crate::propagation::new_w3c_propagator());
                let remote = crate::propagation::extract_context(&HashMap::from([(
                    "traceparent".to_owned(),
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned(),
                )]));
                let with_baggage = Context::new().with_baggage([KeyValue::new("tenant", "acme")]);
                let mut injected = HashMap::new();
                let mut outside = HashMap::new();
                let mut baggage_inside = None;
                tracing::dispatcher::with_default(&dispatch, || {
                    tracing::info_span!("request").in_scope(|| {
                        tracer.start_with_context("explicit", &crate::current_context()).end();
                        tracer.start("implicit").end();
                        raw.start("raw").end();
                        propagator.inject(&mut injected);
                        let otel = tracer.start("otel");
                        let _attached = Context::current_with_span(otel).attach();
                        tracing::info_span!("inside_otel").in_scope(|| tracer.start("api_leaf").end());
                    });
                    {
                        let _remote = remote.clone().attach();
                        tracing::info_span!("under_remote").in_scope(|| tracing::info_span!("leaf").in_scope(|| {}));
                    }
                    let span = tracing::info_span!("carrying_baggage");
                    crate::propagation::set_remote_parent(&span, with_baggage.clone());
                    span.in_scope(|| {
                        baggage_inside = Context::current().baggage().get("tenant").map(|v| v.to_string());
                    });
                    propagator.inject(&mut outside);
                });
                guard.flush().expect("flush");
                let spans = exporter.get_finished_spans().expect("readable");
                let find = |name: &str| spans.iter().find(|s| s.name == name).cloned().expect(name);
                let request = find("request").span_context;
                for child in ["explicit", "implicit", "otel"] {
                    let span = find(child);
                    assert_eq!(span.parent_span_id, request.span_id(), "{child}, {case}");
                    assert_eq!(span.span_context.trace_id(), request.trace_id(), "{child}, {case}");
                }
                // The SDK's tracer provider itself (not the global one) has only
                // `Context::current()` to go by.
                let raw_parent = find("raw").parent_span_id;
                if activation {
                    assert_eq!(raw_parent, request.span_id(), "{case}");
                } else {
                    assert_eq!(raw_parent, SpanId::INVALID, "{case}");
                }
                let otel = find("otel").span_context;
                let inside_otel = find("inside_otel").span_context;
                assert_eq!(find("inside_otel").parent_span_id, otel.span_id(), "{case}");
                assert_eq!(find("api_leaf").parent_span_id, inside_otel.span_id(), "{case}");
                let traceparent = injected.get("traceparent").expect("injected");
                assert!(traceparent.contains(&request.span_id().to_string()), "{traceparent}, {case}");
                assert!(outside.is_empty(), "nothing current outside spans: {outside:?}, {case}");
                let under_remote = find("under_remote");
                assert_eq!(under_remote.parent_span_id.to_string(), "b7ad6b7169203331", "{case}");
                assert_eq!(under_remote.span_context.trace_id().to_string(), "0af7651916cd43dd8448eb211c80319c");
                assert_eq!(find("leaf").parent_span_id, under_remote.span_context.span_id(), "{case}");
                assert_eq!(baggage_inside.as_deref(), Some("acme"), "{case}");
            }
        }
    }

    /// The guard's flusher exports what ended before it was called, from another thread.
    #[test]
    fn the_guards_flusher_exports_the_spans_ended_so_far() {
        let exporter = InMemorySpanExporter::default();
        let (layer, guard) = crate::builder("flusher")
            .exporter(exporter.clone())
            .sampler(SamplerConfig::AlwaysOn)
            .scheduled_delay(Duration::from_secs(3600))
            .into_layer::<Registry>()
            .expect("pipeline builds");
        let dispatch = Dispatch::new(Registry::default().with(layer));
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::info_span!("batch").in_scope(|| tracing::info_span!("message").in_scope(|| {}));
        });
        let flusher = guard.flusher();
        assert!(flusher.is_exporting());
        std::thread::spawn(move || flusher.flush(Duration::from_secs(5)))
            .join()
            .expect("flushing thread")
            .expect("flush succeeds");
        let names: Vec<_> = exporter.get_finished_spans().expect("readable").into_iter().map(|s| s.name).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        guard.flush_with_timeout(Duration::from_secs(5)).expect("nothing left, still fine");
        assert!(!TracingGuard::disabled().flusher().is_exporting());
    }

    #[test]
    fn plain_span_filters_avoid_env_filter() {
        for plain in ["info", "info,h2=off", "spindle_sdk=debug,warn", "off"] {
            assert!(matches!(SpanFilter::parse(plain), Ok(SpanFilter::Targets(_))), "{plain}");
        }
        for dynamic in ["[handle_request]=debug", "info,[{symbol=AAPL}]=trace"] {
            assert!(matches!(SpanFilter::parse(dynamic), Ok(SpanFilter::Env(_))), "{dynamic}");
        }
        let error = SpanFilter::parse("app=loud").err().expect("an unknown level is refused");
        assert!(error.to_string().contains("app=loud"), "{error}");
    }
}
