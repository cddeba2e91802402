//! What the user configures: command-line flags, `SPINDLE_*` environment variables and an
//! optional TOML file, merged in that order of precedence over the defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use spindle_store::SyncPolicy;

use crate::limits::Limits;

#[derive(Debug, Parser)]
#[command(name = "spindle", version, about = "Spindle: a distributed tracing backend in one binary")]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `spindle` alone means `spindle serve`.
    #[command(flatten)]
    pub serve: ServeArgs,
}

// Parsed once at start: the size of the larger variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: receivers, store, query API and admin endpoints (the default)
    Serve(ServeArgs),
    /// Send the reference workload to a running Spindle and report throughput
    Loadgen(crate::loadgen::LoadgenArgs),
}

/// Settings of `spindle serve`. Every flag has an environment variable and a key of the
/// same name in the config file (`--data-dir` ↔ `SPINDLE_DATA_DIR` ↔ `data_dir`).
#[derive(Debug, Default, Clone, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (snake_case keys); flags and environment win
    #[arg(long, env = "SPINDLE_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Directory of the embedded store [default: ./spindle-data]
    #[arg(long, env = "SPINDLE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// OTLP gRPC receiver address [default: 0.0.0.0:4317]
    #[arg(long, env = "SPINDLE_OTLP_GRPC_ADDR", value_name = "ADDR")]
    pub otlp_grpc_addr: Option<SocketAddr>,

    /// OTLP HTTP receiver address (POST /v1/traces) [default: 0.0.0.0:4318]
    #[arg(long, env = "SPINDLE_OTLP_HTTP_ADDR", value_name = "ADDR")]
    pub otlp_http_addr: Option<SocketAddr>,

    /// Jaeger agent UDP, thrift compact (`Agent.emitBatch`) [default: 0.0.0.0:6831]
    #[arg(long, env = "SPINDLE_JAEGER_COMPACT_ADDR", value_name = "ADDR")]
    pub jaeger_compact_addr: Option<SocketAddr>,

    /// Jaeger agent UDP, thrift binary [default: 0.0.0.0:6832]
    #[arg(long, env = "SPINDLE_JAEGER_BINARY_ADDR", value_name = "ADDR")]
    pub jaeger_binary_addr: Option<SocketAddr>,

    /// Jaeger collector HTTP: POST /api/traces (thrift), GET /api/sampling [default: 0.0.0.0:14268]
    #[arg(long, env = "SPINDLE_JAEGER_HTTP_ADDR", value_name = "ADDR")]
    pub jaeger_http_addr: Option<SocketAddr>,

    /// Jaeger collector gRPC: jaeger.api_v2.CollectorService/PostSpans [default: 0.0.0.0:14250]
    #[arg(long, env = "SPINDLE_JAEGER_GRPC_ADDR", value_name = "ADDR")]
    pub jaeger_grpc_addr: Option<SocketAddr>,

    /// Zipkin HTTP: POST /api/v2/spans (JSON, protobuf) and /api/v1/spans (JSON) [default: 0.0.0.0:9411]
    #[arg(long, env = "SPINDLE_ZIPKIN_ADDR", value_name = "ADDR")]
    pub zipkin_addr: Option<SocketAddr>,

    /// Jaeger remote sampling HTTP: GET /sampling?service= [default: 0.0.0.0:5778]
    #[arg(long, env = "SPINDLE_SAMPLING_ADDR", value_name = "ADDR")]
    pub sampling_addr: Option<SocketAddr>,

    /// Sampling strategies file in Jaeger's format, reloaded when it changes
    #[arg(long, env = "SPINDLE_SAMPLING_STRATEGIES", value_name = "FILE")]
    pub sampling_strategies: Option<PathBuf>,

    /// Probability served when no strategies file applies [default: 1.0]
    #[arg(long, env = "SPINDLE_SAMPLING_DEFAULT_PROBABILITY", value_name = "P")]
    pub sampling_default_probability: Option<f64>,

    /// Query API and web UI address [default: 0.0.0.0:16686]
    #[arg(long, env = "SPINDLE_QUERY_ADDR", value_name = "ADDR")]
    pub query_addr: Option<SocketAddr>,

    /// Admin address: /healthz, /readyz [default: 0.0.0.0:14269]
    #[arg(long, env = "SPINDLE_ADMIN_ADDR", value_name = "ADDR")]
    pub admin_addr: Option<SocketAddr>,

    /// Largest accepted request body, compressed or not, in bytes; larger gets 413
    /// [default: 16777216]
    #[arg(long, env = "SPINDLE_MAX_BODY_BYTES", value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,

    /// When the write-ahead log is fsynced: `always` (before acknowledging) or
    /// `interval:<ms>` [default: always]
    #[arg(long, env = "SPINDLE_SYNC", value_name = "POLICY")]
    pub sync: Option<String>,

    /// Drop stored spans older than this (whole blocks, oldest first), e.g. 72h; keep
    /// everything when unset
    #[arg(long, env = "SPINDLE_RETENTION", value_name = "DURATION")]
    pub retention: Option<String>,

    /// Drop the oldest blocks while the data directory is larger than this many bytes
    #[arg(long, env = "SPINDLE_MAX_DISK_BYTES", value_name = "BYTES")]
    pub max_disk_bytes: Option<u64>,

    /// Spans accepted but not yet stored, at most; beyond it receivers answer with
    /// backpressure (gRPC RESOURCE_EXHAUSTED, HTTP 429) [default: 500000]
    #[arg(long, env = "SPINDLE_QUEUE_SPANS", value_name = "SPANS")]
    pub queue_spans: Option<usize>,

    /// Log filter in tracing's EnvFilter syntax [default: info]
    #[arg(long, env = "SPINDLE_LOG", value_name = "FILTER")]
    pub log: Option<String>,

    /// Log format: `text` or `json` [default: text]
    #[arg(long, env = "SPINDLE_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,

    /// YAML file of alert rules (see docs/OPERATIONS.md); no alerting without it
    #[arg(long, env = "SPINDLE_ALERT_RULES", value_name = "FILE")]
    pub alert_rules: Option<PathBuf>,

    /// Alertmanager base URLs to send alerts to, comma-separated (POST /api/v2/alerts)
    #[arg(long, env = "SPINDLE_ALERTMANAGER_URL", value_name = "URLS")]
    pub alertmanager_url: Option<String>,

    /// Webhook URLs to POST alert notifications to, comma-separated
    #[arg(long, env = "SPINDLE_ALERT_WEBHOOK", value_name = "URLS")]
    pub alert_webhook: Option<String>,

    /// URL users reach Spindle's UI at, for links in alerts [default: http://localhost:16686]
    #[arg(long, env = "SPINDLE_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,

    /// Open TCP connections per receiver listener; more wait to be accepted [default: 1024]
    #[arg(long, env = "SPINDLE_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// Requests in progress at once per receiver listener; more get backpressure [default: 256]
    #[arg(long, env = "SPINDLE_MAX_CONCURRENT_REQUESTS", value_name = "N")]
    pub max_concurrent_requests: Option<usize>,

    /// Request bytes held at once by all receivers, before decoding; beyond it backpressure
    /// [default: 268435456]
    #[arg(long, env = "SPINDLE_MAX_INFLIGHT_BYTES", value_name = "BYTES")]
    pub max_inflight_bytes: Option<usize>,

    /// Spans in one request; a larger request is refused whole [default: 100000]
    #[arg(long, env = "SPINDLE_MAX_SPANS_PER_REQUEST", value_name = "SPANS")]
    pub max_spans_per_request: Option<usize>,

    /// Attributes kept per span; the rest are dropped and counted on the span [default: 1024]
    #[arg(long, env = "SPINDLE_MAX_ATTRIBUTES_PER_SPAN", value_name = "N")]
    pub max_attributes_per_span: Option<usize>,

    /// Longest string attribute value; longer ones are cut, and the span marked [default: 65536]
    #[arg(long, env = "SPINDLE_MAX_ATTRIBUTE_VALUE_BYTES", value_name = "BYTES")]
    pub max_attribute_value_bytes: Option<usize>,

    /// Time a request body may take to arrive; a slower upload is refused [default: 30s]
    #[arg(long, env = "SPINDLE_REQUEST_BODY_TIMEOUT", value_name = "DURATION")]
    pub request_body_timeout: Option<String>,

    /// Span-metric series (span name, kind, status) per service; beyond it the service's
    /// further ones count in its overflow series [default: 200]
    #[arg(long, env = "SPINDLE_MAX_SPAN_METRIC_SERIES_PER_SERVICE", value_name = "N")]
    pub max_span_metric_series_per_service: Option<usize>,

    /// Operations listed per service; beyond it new names are stored but not listed
    /// [default: 2000]
    #[arg(long, env = "SPINDLE_MAX_OPERATIONS_PER_SERVICE", value_name = "N")]
    pub max_operations_per_service: Option<usize>,

    /// Services with span metrics of their own and listed by /api/services; spans of further
    /// ones count in one overflow series set and are stored, unlisted [default: 1000]
    #[arg(long, env = "SPINDLE_MAX_SERVICES", value_name = "N")]
    pub max_services: Option<usize>,

    /// Groups in an analytics answer: the top N and an "other" row [default: 1000]
    #[arg(long, env = "SPINDLE_MAX_ANALYTICS_GROUPS", value_name = "N")]
    pub max_analytics_groups: Option<usize>,

    /// Spans starting further ahead than this are stored but derive no span metrics [default: 1h]
    #[arg(long, env = "SPINDLE_MAX_SPAN_FUTURE", value_name = "DURATION")]
    pub max_span_future: Option<String>,

    /// Spans starting longer ago than this are stored but derive no span metrics [default: 168h]
    #[arg(long, env = "SPINDLE_MAX_SPAN_AGE", value_name = "DURATION")]
    pub max_span_age: Option<String>,

    /// Largest search `limit`; a larger one is lowered, with a warning [default: 1500]
    #[arg(long, env = "SPINDLE_QUERY_MAX_LIMIT", value_name = "N")]
    pub query_max_limit: Option<usize>,

    /// Longest time range of a search or analytics query; a longer one is shortened to its
    /// most recent part, with a warning [default: 720h]
    #[arg(long, env = "SPINDLE_QUERY_MAX_LOOKBACK", value_name = "DURATION")]
    pub query_max_lookback: Option<String>,

    /// Deadline of one query [default: 30s]
    #[arg(long, env = "SPINDLE_QUERY_TIMEOUT", value_name = "DURATION")]
    pub query_timeout: Option<String>,

    /// Heavy queries (search, analytics, dependencies) at once; more wait in line
    /// [default: the number of CPUs, at least 2]
    #[arg(long, env = "SPINDLE_QUERY_MAX_CONCURRENT", value_name = "N")]
    pub query_max_concurrent: Option<usize>,

    /// Spans served of one trace; the answer says when more were left out [default: 100000]
    #[arg(long, env = "SPINDLE_QUERY_MAX_TRACE_SPANS", value_name = "SPANS")]
    pub query_max_trace_spans: Option<usize>,
}

/// The settings in effect, every default applied and every value checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub otlp_grpc_addr: SocketAddr,
    pub otlp_http_addr: SocketAddr,
    pub query_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub jaeger_compact_addr: SocketAddr,
    pub jaeger_binary_addr: SocketAddr,
    pub jaeger_http_addr: SocketAddr,
    pub jaeger_grpc_addr: SocketAddr,
    pub zipkin_addr: SocketAddr,
    pub sampling_addr: SocketAddr,
    pub sampling_strategies: Option<PathBuf>,
    pub sampling_default_probability: f64,
    pub max_body_bytes: usize,
    pub sync: SyncPolicy,
    pub queue_spans: usize,
    pub retention: Option<std::time::Duration>,
    pub max_disk_bytes: Option<u64>,
    pub log: String,
    pub log_json: bool,
    pub alert_rules: Option<PathBuf>,
    pub alertmanagers: Vec<String>,
    pub alert_webhooks: Vec<String>,
    pub public_url: String,
    pub limits: Limits,
}

fn url_list(text: Option<String>) -> Vec<String> {
    text.unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

fn addr(s: &str) -> SocketAddr {
    // Only called on the literal defaults below.
    s.parse().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

impl ServeArgs {
    fn or(self, file: ServeArgs) -> ServeArgs {
        ServeArgs {
            config: self.config,
            data_dir: self.data_dir.or(file.data_dir),
            otlp_grpc_addr: self.otlp_grpc_addr.or(file.otlp_grpc_addr),
            otlp_http_addr: self.otlp_http_addr.or(file.otlp_http_addr),
            query_addr: self.query_addr.or(file.query_addr),
            jaeger_compact_addr: self.jaeger_compact_addr.or(file.jaeger_compact_addr),
            jaeger_binary_addr: self.jaeger_binary_addr.or(file.jaeger_binary_addr),
            jaeger_http_addr: self.jaeger_http_addr.or(file.jaeger_http_addr),
            jaeger_grpc_addr: self.jaeger_grpc_addr.or(file.jaeger_grpc_addr),
            zipkin_addr: self.zipkin_addr.or(file.zipkin_addr),
            sampling_addr: self.sampling_addr.or(file.sampling_addr),
            sampling_strategies: self.sampling_strategies.or(file.sampling_strategies),
            sampling_default_probability: self.sampling_default_probability.or(file.sampling_default_probability),
            admin_addr: self.admin_addr.or(file.admin_addr),
            max_body_bytes: self.max_body_bytes.or(file.max_body_bytes),
            sync: self.sync.or(file.sync),
            queue_spans: self.queue_spans.or(file.queue_spans),
            retention: self.retention.or(file.retention),
            max_disk_bytes: self.max_disk_bytes.or(file.max_disk_bytes),
            log: self.log.or(file.log),
            log_format: self.log_format.or(file.log_format),
            alert_rules: self.alert_rules.or(file.alert_rules),
            alertmanager_url: self.alertmanager_url.or(file.alertmanager_url),
            alert_webhook: self.alert_webhook.or(file.alert_webhook),
            public_url: self.public_url.or(file.public_url),
            max_connections: self.max_connections.or(file.max_connections),
            max_concurrent_requests: self.max_concurrent_requests.or(file.max_concurrent_requests),
            max_inflight_bytes: self.max_inflight_bytes.or(file.max_inflight_bytes),
            max_spans_per_request: self.max_spans_per_request.or(file.max_spans_per_request),
            max_attributes_per_span: self.max_attributes_per_span.or(file.max_attributes_per_span),
            max_attribute_value_bytes: self.max_attribute_value_bytes.or(file.max_attribute_value_bytes),
            request_body_timeout: self.request_body_timeout.or(file.request_body_timeout),
            max_span_metric_series_per_service: self
                .max_span_metric_series_per_service
                .or(file.max_span_metric_series_per_service),
            max_operations_per_service: self.max_operations_per_service.or(file.max_operations_per_service),
            max_services: self.max_services.or(file.max_services),
            max_analytics_groups: self.max_analytics_groups.or(file.max_analytics_groups),
            max_span_future: self.max_span_future.or(file.max_span_future),
            max_span_age: self.max_span_age.or(file.max_span_age),
            query_max_limit: self.query_max_limit.or(file.query_max_limit),
            query_max_lookback: self.query_max_lookback.or(file.query_max_lookback),
            query_timeout: self.query_timeout.or(file.query_timeout),
            query_max_concurrent: self.query_max_concurrent.or(file.query_max_concurrent),
            query_max_trace_spans: self.query_max_trace_spans.or(file.query_max_trace_spans),
        }
    }

    /// Reads the config file if one is named, merges and validates.
    pub fn resolve(self) -> anyhow::Result<Settings> {
        let merged = match &self.config {
            Some(path) => {
                let file = read_config_file(path)?;
                self.or(file)
            }
            None => self,
        };
        let sync = match merged.sync.as_deref() {
            None => SyncPolicy::Always,
            Some(s) => s.parse::<SyncPolicy>().map_err(anyhow::Error::msg).context("setting sync")?,
        };
        let log_json = match merged.log_format.as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => anyhow::bail!("invalid log format {other:?}: expected text or json"),
        };
        let max_body_bytes = merged.max_body_bytes.unwrap_or(16 * 1024 * 1024);
        anyhow::ensure!(max_body_bytes > 0, "max_body_bytes must be positive");
        let sampling_default_probability = merged.sampling_default_probability.unwrap_or(1.0);
        anyhow::ensure!(
            (0.0..=1.0).contains(&sampling_default_probability),
            "sampling_default_probability must be between 0 and 1"
        );
        let queue_spans = merged.queue_spans.unwrap_or(500_000);
        let retention = match merged.retention.as_deref() {
            None => None,
            Some(text) => Some(std::time::Duration::from_nanos(
                crate::api::params::parse_go_duration(text)
                    .filter(|n| *n > 0)
                    .ok_or_else(|| anyhow::anyhow!("invalid retention {text:?}: expected a duration such as 72h"))?,
            )),
        };
        anyhow::ensure!(queue_spans > 0, "queue_spans must be positive");
        let limits = limits(&merged)?;
        Ok(Settings {
            data_dir: merged.data_dir.unwrap_or_else(|| PathBuf::from("./spindle-data")),
            otlp_grpc_addr: merged.otlp_grpc_addr.unwrap_or_else(|| addr("0.0.0.0:4317")),
            otlp_http_addr: merged.otlp_http_addr.unwrap_or_else(|| addr("0.0.0.0:4318")),
            query_addr: merged.query_addr.unwrap_or_else(|| addr("0.0.0.0:16686")),
            admin_addr: merged.admin_addr.unwrap_or_else(|| addr("0.0.0.0:14269")),
            jaeger_compact_addr: merged.jaeger_compact_addr.unwrap_or_else(|| addr("0.0.0.0:6831")),
            jaeger_binary_addr: merged.jaeger_binary_addr.unwrap_or_else(|| addr("0.0.0.0:6832")),
            jaeger_http_addr: merged.jaeger_http_addr.unwrap_or_else(|| addr("0.0.0.0:14268")),
            jaeger_grpc_addr: merged.jaeger_grpc_addr.unwrap_or_else(|| addr("0.0.0.0:14250")),
            zipkin_addr: merged.zipkin_addr.unwrap_or_else(|| addr("0.0.0.0:9411")),
            sampling_addr: merged.sampling_addr.unwrap_or_else(|| addr("0.0.0.0:5778")),
            sampling_strategies: merged.sampling_strategies,
            sampling_default_probability,
            max_body_bytes,
            sync,
            queue_spans,
            retention,
            max_disk_bytes: merged.max_disk_bytes,
            log: merged.log.unwrap_or_else(|| "info".to_string()),
            log_json,
            alert_rules: merged.alert_rules,
            alertmanagers: url_list(merged.alertmanager_url),
            alert_webhooks: url_list(merged.alert_webhook),
            public_url: merged.public_url.unwrap_or_else(|| "http://localhost:16686".to_string()),
            limits,
        })
    }
}

fn duration(name: &str, text: Option<&str>, default: Duration) -> anyhow::Result<Duration> {
    match text {
        None => Ok(default),
        Some(text) => crate::api::params::parse_go_duration(text)
            .filter(|n| *n > 0)
            .map(Duration::from_nanos)
            .ok_or_else(|| anyhow::anyhow!("invalid {name} {text:?}: expected a duration such as 30s or 72h")),
    }
}

fn count(name: &str, value: Option<usize>, default: usize) -> anyhow::Result<usize> {
    let value = value.unwrap_or(default);
    anyhow::ensure!(value > 0, "{name} must be positive");
    Ok(value)
}

fn limits(a: &ServeArgs) -> anyhow::Result<Limits> {
    let d = Limits::default();
    Ok(Limits {
        max_connections: count("max_connections", a.max_connections, d.max_connections)?,
        max_concurrent_requests: count(
            "max_concurrent_requests",
            a.max_concurrent_requests,
            d.max_concurrent_requests,
        )?,
        max_inflight_bytes: count("max_inflight_bytes", a.max_inflight_bytes, d.max_inflight_bytes)?,
        max_spans_per_request: count("max_spans_per_request", a.max_spans_per_request, d.max_spans_per_request)?,
        max_attributes_per_span: count(
            "max_attributes_per_span",
            a.max_attributes_per_span,
            d.max_attributes_per_span,
        )?,
        max_attribute_value_bytes: count(
            "max_attribute_value_bytes",
            a.max_attribute_value_bytes,
            d.max_attribute_value_bytes,
        )?,
        request_body_timeout: duration(
            "request_body_timeout",
            a.request_body_timeout.as_deref(),
            d.request_body_timeout,
        )?,
        max_span_metric_series_per_service: count(
            "max_span_metric_series_per_service",
            a.max_span_metric_series_per_service,
            d.max_span_metric_series_per_service,
        )?,
        max_operations_per_service: count(
            "max_operations_per_service",
            a.max_operations_per_service,
            d.max_operations_per_service,
        )?,
        max_services: count("max_services", a.max_services, d.max_services)?,
        max_analytics_groups: count("max_analytics_groups", a.max_analytics_groups, d.max_analytics_groups)?,
        max_span_future: duration("max_span_future", a.max_span_future.as_deref(), d.max_span_future)?,
        max_span_age: duration("max_span_age", a.max_span_age.as_deref(), d.max_span_age)?,
        query_max_limit: count("query_max_limit", a.query_max_limit, d.query_max_limit)?,
        query_max_lookback: duration("query_max_lookback", a.query_max_lookback.as_deref(), d.query_max_lookback)?,
        query_timeout: duration("query_timeout", a.query_timeout.as_deref(), d.query_timeout)?,
        query_max_concurrent: count("query_max_concurrent", a.query_max_concurrent, d.query_max_concurrent)?,
        query_max_trace_spans: count("query_max_trace_spans", a.query_max_trace_spans, d.query_max_trace_spans)?,
    })
}

fn read_config_file(path: &Path) -> anyhow::Result<ServeArgs> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_file_and_defaults_fill_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("spindle.toml");
        std::fs::write(
            &file,
            "data_dir = \"/var/lib/spindle\"\nquery_addr = \"127.0.0.1:9999\"\nsync = \"interval:50\"\n",
        )
        .unwrap();
        let cli = Cli::parse_from(["spindle", "--config", file.to_str().unwrap(), "--query-addr", "127.0.0.1:1234"]);
        let settings = cli.serve.resolve().unwrap();
        assert_eq!(settings.query_addr, addr("127.0.0.1:1234"));
        assert_eq!(settings.data_dir, PathBuf::from("/var/lib/spindle"));
        assert_eq!(settings.sync, SyncPolicy::Interval(std::time::Duration::from_millis(50)));
        assert_eq!(settings.otlp_grpc_addr, addr("0.0.0.0:4317"));
        assert_eq!(settings.max_body_bytes, 16 * 1024 * 1024);
    }

    #[test]
    fn unknown_file_keys_and_bad_values_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("spindle.toml");
        std::fs::write(&file, "data_dri = \"x\"\n").unwrap();
        let cli = Cli::parse_from(["spindle", "serve", "--config", file.to_str().unwrap()]);
        let Some(Command::Serve(args)) = cli.command else { panic!("serve subcommand expected") };
        let err = format!("{:#}", args.resolve().unwrap_err());
        assert!(err.contains("unknown field `data_dri`"), "{err}");
        let cli = Cli::parse_from(["spindle", "--sync", "sometimes"]);
        assert!(format!("{:#}", cli.serve.resolve().unwrap_err()).contains("invalid sync policy"));
    }

    #[test]
    fn limits_have_defaults_and_take_flags_file_keys_and_durations() {
        let settings = Cli::parse_from(["spindle"]).serve.resolve().unwrap();
        assert_eq!(settings.limits, Limits::default());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("spindle.toml");
        std::fs::write(&file, "query_timeout = \"5s\"\nmax_operations_per_service = 10\n").unwrap();
        let cli = Cli::parse_from([
            "spindle",
            "--config",
            file.to_str().unwrap(),
            "--query-max-limit",
            "20",
            "--max-span-future",
            "10m",
        ]);
        let limits = cli.serve.resolve().unwrap().limits;
        assert_eq!(limits.query_timeout, Duration::from_secs(5));
        assert_eq!(limits.max_operations_per_service, 10);
        assert_eq!(limits.query_max_limit, 20);
        assert_eq!(limits.max_span_future, Duration::from_secs(600));
        let err = Cli::parse_from(["spindle", "--query-timeout", "soon"]).serve.resolve().unwrap_err();
        assert!(format!("{err:#}").contains("invalid query_timeout"), "{err:#}");
        let err = Cli::parse_from(["spindle", "--max-connections", "0"]).serve.resolve().unwrap_err();
        assert!(format!("{err:#}").contains("max_connections must be positive"), "{err:#}");
    }
}
