//! What the user configures: command-line flags, `SPINDLE_*` environment variables and an
//! optional TOML file, merged in that order of precedence over the defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use spindle_store::SyncPolicy;

use crate::kafka::{KafkaSettings, Target};
use crate::limits::Limits;
use crate::security::{Group, OidcSettings, SecuritySettings};
use crate::tenancy::{TenancySettings, TenantLimits};

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
    /// Read a password from standard input and print its bcrypt hash for the credentials
    /// file (`[[user]] password`)
    HashPassword,
    /// Print every HTTP route of every listener as JSON (for tests/auth.rs)
    #[command(hide = true)]
    Routes,
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

    /// Series one TraceQL metrics query answers; further ones are left out and the answer
    /// says it is partial [default: 10000]
    #[arg(long, env = "SPINDLE_QUERY_MAX_SERIES", value_name = "SERIES")]
    pub query_max_series: Option<usize>,

    /// PEM certificate chain: with `tls_key`, every TCP listener serves TLS (except the
    /// groups in `tls_plaintext`); reloaded when the file changes
    #[arg(long, env = "SPINDLE_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `tls_cert`; reloaded when the file changes
    #[arg(long, env = "SPINDLE_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificates: receivers then require a client certificate signed by one (mTLS)
    #[arg(long, env = "SPINDLE_TLS_CLIENT_CA", value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,

    /// Listener groups kept in plain text when TLS is on, comma-separated: ingest, query, admin
    #[arg(long, env = "SPINDLE_TLS_PLAINTEXT", value_name = "GROUPS")]
    pub tls_plaintext: Option<String>,

    /// Credentials file: bearer tokens, basic-auth users (hashed passwords), their roles and
    /// tenants; reloaded when it changes. Setting it turns authentication on
    #[arg(long, env = "SPINDLE_AUTH_FILE", value_name = "FILE")]
    pub auth_file: Option<PathBuf>,

    /// Listener groups that require authentication, comma-separated (ingest, query, admin)
    /// or `none` [default: all three when `auth_file` or `oidc_issuer` is set, else none]
    #[arg(long, env = "SPINDLE_AUTH", value_name = "GROUPS")]
    pub auth: Option<String>,

    /// OpenID Connect issuer URL: API requests may carry its JWTs, people log in to the UI
    /// through it. Setting it turns authentication on
    #[arg(long, env = "SPINDLE_OIDC_ISSUER", value_name = "URL")]
    pub oidc_issuer: Option<String>,

    /// OAuth client id of the UI login (authorization code flow with PKCE)
    #[arg(long, env = "SPINDLE_OIDC_CLIENT_ID", value_name = "ID")]
    pub oidc_client_id: Option<String>,

    /// File holding the OAuth client secret of the UI login, if the client has one
    #[arg(long, env = "SPINDLE_OIDC_CLIENT_SECRET_FILE", value_name = "FILE")]
    pub oidc_client_secret_file: Option<PathBuf>,

    /// Audiences accepted in API tokens, comma-separated [default: the client id]
    #[arg(long, env = "SPINDLE_OIDC_AUDIENCE", value_name = "AUDIENCES")]
    pub oidc_audience: Option<String>,

    /// Token claim listing the caller's groups, matched against the credentials file's
    /// `[[group]]` roles [default: groups]
    #[arg(long, env = "SPINDLE_OIDC_GROUPS_CLAIM", value_name = "CLAIM")]
    pub oidc_groups_claim: Option<String>,

    /// File holding the key that signs UI session cookies (32 bytes or more); a random key
    /// per process when unset, so sessions end with a restart
    #[arg(long, env = "SPINDLE_SESSION_KEY_FILE", value_name = "FILE")]
    pub session_key_file: Option<PathBuf>,

    /// Tenant of requests that name none and whose credential binds none [default: single-tenant]
    #[arg(long, env = "SPINDLE_DEFAULT_TENANT", value_name = "TENANT")]
    pub default_tenant: Option<String>,

    /// Refuse requests that name no tenant (`X-Scope-OrgID`) and whose credential binds none
    /// [default: false]
    #[arg(long, env = "SPINDLE_TENANT_HEADER_REQUIRED", value_name = "BOOL")]
    pub tenant_header_required: Option<bool>,

    /// Tenants with data of their own; spans for further tenants are refused [default: 100]
    #[arg(long, env = "SPINDLE_MAX_TENANTS", value_name = "N")]
    pub max_tenants: Option<usize>,

    /// Spans per second one tenant may send (a token bucket, burst of one second's worth);
    /// 0 means unlimited [default: 0]
    #[arg(long, env = "SPINDLE_TENANT_INGEST_RATE", value_name = "SPANS")]
    pub tenant_ingest_rate: Option<u64>,

    /// Role of this instance: `all` (everything in one process), `collector` (receivers,
    /// writing to Kafka), `ingester` (Kafka to the store, with the query API and admin) or
    /// `query` (the query API over ClickHouse; needs `storage = clickhouse`) [default: all]
    #[arg(long, env = "SPINDLE_TARGET", value_name = "ROLE")]
    pub target: Option<String>,

    /// Kafka bootstrap servers, comma-separated host:port; required by `collector` and
    /// `ingester`
    #[arg(long, env = "SPINDLE_KAFKA_BROKERS", value_name = "BROKERS")]
    pub kafka_brokers: Option<String>,

    /// Kafka topic collectors write span batches to and ingesters read [default: spindle-spans]
    #[arg(long, env = "SPINDLE_KAFKA_TOPIC", value_name = "TOPIC")]
    pub kafka_topic: Option<String>,

    /// Kafka consumer group of the ingesters [default: spindle-ingester]
    #[arg(long, env = "SPINDLE_KAFKA_GROUP", value_name = "GROUP")]
    pub kafka_group: Option<String>,

    /// Partitions of `kafka_topic` this ingester reads, e.g. `0-3,6`; give each ingester of a
    /// topic a disjoint set, together covering every partition [default: every partition]
    #[arg(long, env = "SPINDLE_KAFKA_PARTITIONS", value_name = "LIST")]
    pub kafka_partitions: Option<String>,

    /// Compression of the batches a collector produces: none, gzip, snappy or lz4 [default: lz4]
    #[arg(long, env = "SPINDLE_KAFKA_COMPRESSION", value_name = "CODEC")]
    pub kafka_compression: Option<String>,

    /// How long a collector's producer waits for more messages to fill a batch [default: 5ms]
    #[arg(long, env = "SPINDLE_KAFKA_LINGER", value_name = "DURATION")]
    pub kafka_linger: Option<String>,

    /// Largest batch of messages a collector's producer sends to one partition, in bytes
    /// before compression (a larger single message goes alone) [default: 1000000]
    #[arg(long, env = "SPINDLE_KAFKA_BATCH_BYTES", value_name = "BYTES")]
    pub kafka_batch_bytes: Option<usize>,

    /// Spans an ingester gathers from consecutive messages before it appends them, one append
    /// per tenant [default: 10000]
    #[arg(long, env = "SPINDLE_INGESTER_BATCH_SPANS", value_name = "N")]
    pub ingester_batch_spans: Option<usize>,

    /// Longest an ingester gathers messages after the first of a batch before it appends them
    /// [default: 200ms]
    #[arg(long, env = "SPINDLE_INGESTER_BATCH_WAIT", value_name = "DURATION")]
    pub ingester_batch_wait: Option<String>,

    /// Where spans are stored: `embedded` (the data directory) or `clickhouse` (a ClickHouse
    /// server shared by ingesters and query instances) [default: embedded]
    #[arg(long, env = "SPINDLE_STORAGE", value_name = "KIND")]
    pub storage: Option<String>,

    /// ClickHouse's HTTP interface, with `storage = clickhouse` [default: http://127.0.0.1:8123]
    #[arg(long, env = "SPINDLE_CLICKHOUSE_URL", value_name = "URL")]
    pub clickhouse_url: Option<String>,

    /// ClickHouse database of the default tenant; another tenant's is this name, `_`, then
    /// the tenant's name escaped [default: spindle]
    #[arg(long, env = "SPINDLE_CLICKHOUSE_DATABASE", value_name = "NAME")]
    pub clickhouse_database: Option<String>,

    /// Spread spans over the shards of this cluster (its name in the servers'
    /// `remote_servers`), through `Distributed` tables; needs clickhouse_shards
    #[arg(long, env = "SPINDLE_CLICKHOUSE_CLUSTER", value_name = "NAME")]
    pub clickhouse_cluster: Option<String>,

    /// The HTTP interface of every node of clickhouse_cluster, comma-separated: tables are
    /// created and days dropped on each
    #[arg(long, env = "SPINDLE_CLICKHOUSE_SHARDS", value_name = "URLS")]
    pub clickhouse_shards: Option<String>,

    /// ClickHouse user Spindle connects as (HTTP basic auth) [default: ClickHouse's `default`]
    #[arg(long, env = "SPINDLE_CLICKHOUSE_USER", value_name = "USER")]
    pub clickhouse_user: Option<String>,

    /// File holding the ClickHouse user's password (one line), with clickhouse_user
    #[arg(long, env = "SPINDLE_CLICKHOUSE_PASSWORD_FILE", value_name = "FILE")]
    pub clickhouse_password_file: Option<PathBuf>,

    /// PEM file of CA certificates trusted for `https://` ClickHouse URLs, besides the
    /// system's roots
    #[arg(long, env = "SPINDLE_CLICKHOUSE_CA_FILE", value_name = "FILE")]
    pub clickhouse_ca_file: Option<PathBuf>,

    /// Attribute keys given dedicated ClickHouse columns, comma-separated: searches and
    /// group-bys by them read one narrow column instead of the attribute arrays [default: none]
    #[arg(long, env = "SPINDLE_CLICKHOUSE_HOT_ATTRIBUTES", value_name = "KEYS")]
    pub clickhouse_hot_attributes: Option<String>,

    /// Receivers writing to ClickHouse join concurrent requests into one insert of up to
    /// this many spans [default: 10000]
    #[arg(long, env = "SPINDLE_CLICKHOUSE_BATCH_SPANS", value_name = "N")]
    pub clickhouse_batch_spans: Option<usize>,

    /// How long the first request of a joined insert waits for others [default: 100ms]
    #[arg(long, env = "SPINDLE_CLICKHOUSE_BATCH_WAIT", value_name = "DURATION")]
    pub clickhouse_batch_wait: Option<String>,

    /// Per-tenant overrides, in the config file only: `[tenants.NAME]` tables
    #[arg(skip)]
    pub tenants: Option<std::collections::BTreeMap<String, TenantOverrides>>,
}

/// What one tenant may have differently from the global settings (`[tenants.NAME]` in the
/// config file). Unset fields take the global value.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantOverrides {
    pub ingest_rate: Option<u64>,
    pub retention: Option<String>,
    pub max_disk_bytes: Option<u64>,
    pub max_services: Option<usize>,
    pub max_span_metric_series_per_service: Option<usize>,
    pub max_operations_per_service: Option<usize>,
    pub max_analytics_groups: Option<usize>,
    pub query_max_limit: Option<usize>,
    pub query_max_lookback: Option<String>,
    pub query_timeout: Option<String>,
    pub query_max_trace_spans: Option<usize>,
    pub query_max_series: Option<usize>,
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
    pub log: String,
    pub log_json: bool,
    pub alert_rules: Option<PathBuf>,
    pub alertmanagers: Vec<String>,
    pub alert_webhooks: Vec<String>,
    pub public_url: String,
    pub limits: Limits,
    pub security: SecuritySettings,
    pub tenancy: TenancySettings,
    /// Which parts this instance runs (docs/OPERATIONS.md, "Roles").
    pub target: Target,
    /// The Kafka ingest buffer; set for `collector` and `ingester`.
    pub kafka: Option<KafkaSettings>,
    /// Where spans are stored.
    pub storage: Storage,
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
            query_max_series: self.query_max_series.or(file.query_max_series),
            tls_cert: self.tls_cert.or(file.tls_cert),
            tls_key: self.tls_key.or(file.tls_key),
            tls_client_ca: self.tls_client_ca.or(file.tls_client_ca),
            tls_plaintext: self.tls_plaintext.or(file.tls_plaintext),
            auth_file: self.auth_file.or(file.auth_file),
            auth: self.auth.or(file.auth),
            oidc_issuer: self.oidc_issuer.or(file.oidc_issuer),
            oidc_client_id: self.oidc_client_id.or(file.oidc_client_id),
            oidc_client_secret_file: self.oidc_client_secret_file.or(file.oidc_client_secret_file),
            oidc_audience: self.oidc_audience.or(file.oidc_audience),
            oidc_groups_claim: self.oidc_groups_claim.or(file.oidc_groups_claim),
            session_key_file: self.session_key_file.or(file.session_key_file),
            default_tenant: self.default_tenant.or(file.default_tenant),
            tenant_header_required: self.tenant_header_required.or(file.tenant_header_required),
            max_tenants: self.max_tenants.or(file.max_tenants),
            tenant_ingest_rate: self.tenant_ingest_rate.or(file.tenant_ingest_rate),
            target: self.target.or(file.target),
            kafka_brokers: self.kafka_brokers.or(file.kafka_brokers),
            kafka_topic: self.kafka_topic.or(file.kafka_topic),
            kafka_group: self.kafka_group.or(file.kafka_group),
            kafka_partitions: self.kafka_partitions.or(file.kafka_partitions),
            kafka_compression: self.kafka_compression.or(file.kafka_compression),
            kafka_linger: self.kafka_linger.or(file.kafka_linger),
            kafka_batch_bytes: self.kafka_batch_bytes.or(file.kafka_batch_bytes),
            ingester_batch_spans: self.ingester_batch_spans.or(file.ingester_batch_spans),
            ingester_batch_wait: self.ingester_batch_wait.or(file.ingester_batch_wait),
            storage: self.storage.or(file.storage),
            clickhouse_url: self.clickhouse_url.or(file.clickhouse_url),
            clickhouse_database: self.clickhouse_database.or(file.clickhouse_database),
            clickhouse_cluster: self.clickhouse_cluster.or(file.clickhouse_cluster),
            clickhouse_shards: self.clickhouse_shards.or(file.clickhouse_shards),
            clickhouse_user: self.clickhouse_user.or(file.clickhouse_user),
            clickhouse_password_file: self.clickhouse_password_file.or(file.clickhouse_password_file),
            clickhouse_ca_file: self.clickhouse_ca_file.or(file.clickhouse_ca_file),
            clickhouse_hot_attributes: self.clickhouse_hot_attributes.or(file.clickhouse_hot_attributes),
            clickhouse_batch_spans: self.clickhouse_batch_spans.or(file.clickhouse_batch_spans),
            clickhouse_batch_wait: self.clickhouse_batch_wait.or(file.clickhouse_batch_wait),
            tenants: self.tenants.or(file.tenants),
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
        let public_url = merged.public_url.clone().unwrap_or_else(|| "http://localhost:16686".to_string());
        let security = security(&merged, &public_url)?;
        let tenancy = tenancy(&merged, &limits, retention, merged.max_disk_bytes)?;
        let storage = storage(&merged)?;
        let (target, kafka) = crate::kafka::settings(matches!(storage, Storage::ClickHouse(_)), &merged)?;
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
            log: merged.log.unwrap_or_else(|| "info".to_string()),
            log_json,
            alert_rules: merged.alert_rules,
            alertmanagers: url_list(merged.alertmanager_url),
            alert_webhooks: url_list(merged.alert_webhook),
            public_url,
            limits,
            security,
            tenancy,
            target,
            kafka,
            storage,
        })
    }
}

/// Where spans are stored (`storage`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// The data directory, one process's own.
    Embedded,
    /// A ClickHouse server: database `database` for the default tenant, `database_<tenant>`
    /// for the others (docs/adr/019, "Query instances").
    ClickHouse(Box<ClickHouseSettings>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClickHouseSettings {
    pub url: String,
    pub database: String,
    /// Shards of a `Distributed` cluster; `None` for one server.
    pub cluster: Option<spindle_clickhouse::Cluster>,
    /// User and password (read from `clickhouse_password_file`).
    pub credentials: Option<(String, String)>,
    /// The contents of `clickhouse_ca_file`.
    pub ca_pem: Option<Vec<u8>>,
    /// `clickhouse_hot_attributes`.
    pub hot_attributes: Vec<String>,
    /// Group commit of the receivers' appends (`clickhouse_batch_*`).
    pub batch_spans: usize,
    pub batch_wait: Duration,
}

fn storage(a: &ServeArgs) -> anyhow::Result<Storage> {
    match a.storage.as_deref().map(str::trim) {
        None | Some("embedded") => Ok(Storage::Embedded),
        Some("clickhouse") => {
            let url = a.clickhouse_url.as_deref().unwrap_or("http://127.0.0.1:8123").trim().to_string();
            anyhow::ensure!(
                url.starts_with("http://") || url.starts_with("https://"),
                "invalid clickhouse_url {url:?}: expected ClickHouse's HTTP interface, http://host:8123"
            );
            let database = a.clickhouse_database.as_deref().unwrap_or("spindle").trim().to_string();
            anyhow::ensure!(
                !database.is_empty()
                    && database.len() <= 100
                    && database.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                "invalid clickhouse_database {database:?}: letters, digits and underscores"
            );
            let cluster = match (a.clickhouse_cluster.as_deref().map(str::trim), a.clickhouse_shards.as_deref()) {
                (None, None) => None,
                (Some(name), Some(shards)) => {
                    anyhow::ensure!(
                        !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                        "invalid clickhouse_cluster {name:?}: letters, digits and underscores"
                    );
                    let shard_urls = url_list(Some(shards.to_string()));
                    anyhow::ensure!(
                        !shard_urls.is_empty()
                            && shard_urls.iter().all(|u| u.starts_with("http://") || u.starts_with("https://")),
                        "invalid clickhouse_shards {shards:?}: the HTTP interface of every node, comma-separated"
                    );
                    Some(spindle_clickhouse::Cluster { name: name.to_string(), shard_urls })
                }
                _ => anyhow::bail!("clickhouse_cluster and clickhouse_shards go together"),
            };
            let credentials = match (a.clickhouse_user.as_deref().map(str::trim), &a.clickhouse_password_file) {
                (None, None) => None,
                (Some(user), password_file) if !user.is_empty() => {
                    let password = match password_file {
                        None => String::new(),
                        Some(path) => std::fs::read_to_string(path)
                            .with_context(|| format!("reading clickhouse_password_file {}", path.display()))?
                            .trim_end_matches(['\r', '\n'])
                            .to_string(),
                    };
                    Some((user.to_string(), password))
                }
                _ => anyhow::bail!("clickhouse_password_file needs clickhouse_user"),
            };
            let ca_pem = match &a.clickhouse_ca_file {
                None => None,
                Some(path) => Some(
                    std::fs::read(path).with_context(|| format!("reading clickhouse_ca_file {}", path.display()))?,
                ),
            };
            let hot_attributes = url_list(a.clickhouse_hot_attributes.clone());
            if let Some(key) = hot_attributes.iter().find(|k| k.len() > spindle_clickhouse::MAX_HOT_KEY_BYTES) {
                anyhow::bail!(
                    "invalid clickhouse_hot_attributes {key:?}: keys of up to {} bytes",
                    spindle_clickhouse::MAX_HOT_KEY_BYTES
                );
            }
            Ok(Storage::ClickHouse(Box::new(ClickHouseSettings {
                url,
                database,
                cluster,
                credentials,
                ca_pem,
                hot_attributes,
                batch_spans: count("clickhouse_batch_spans", a.clickhouse_batch_spans, 10_000)?,
                batch_wait: duration(
                    "clickhouse_batch_wait",
                    a.clickhouse_batch_wait.as_deref(),
                    Duration::from_millis(100),
                )?,
            })))
        }
        Some(other) => anyhow::bail!("invalid storage {other:?}: expected embedded or clickhouse"),
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
        query_max_series: count("query_max_series", a.query_max_series, d.query_max_series)?,
    })
}

fn security(a: &ServeArgs, public_url: &str) -> anyhow::Result<SecuritySettings> {
    anyhow::ensure!(a.tls_cert.is_some() == a.tls_key.is_some(), "tls_cert and tls_key are set together");
    anyhow::ensure!(a.tls_client_ca.is_none() || a.tls_cert.is_some(), "tls_client_ca needs tls_cert and tls_key");
    let tls_plaintext = Group::parse_list("tls_plaintext", a.tls_plaintext.as_deref().unwrap_or(""))?;
    let oidc = match &a.oidc_issuer {
        None => None,
        Some(issuer) => {
            let issuer = issuer.trim_end_matches('/').to_string();
            anyhow::ensure!(
                issuer.starts_with("https://") || issuer.starts_with("http://"),
                "invalid oidc_issuer {issuer:?}: expected an http(s) URL"
            );
            let mut audiences = url_list(a.oidc_audience.clone());
            if audiences.is_empty() {
                audiences.extend(a.oidc_client_id.clone());
            }
            anyhow::ensure!(!audiences.is_empty(), "oidc_issuer needs oidc_client_id or oidc_audience");
            Some(OidcSettings {
                issuer,
                client_id: a.oidc_client_id.clone(),
                client_secret_file: a.oidc_client_secret_file.clone(),
                audiences,
                groups_claim: a.oidc_groups_claim.clone().unwrap_or_else(|| "groups".to_string()),
            })
        }
    };
    let has_credentials = a.auth_file.is_some() || oidc.is_some();
    let auth = match &a.auth {
        Some(text) => Group::parse_list("auth", text)?,
        None if has_credentials => Group::ALL.into_iter().collect(),
        None => Default::default(),
    };
    anyhow::ensure!(
        auth.is_empty() || has_credentials,
        "auth needs auth_file or oidc_issuer: no credential could pass"
    );
    Ok(SecuritySettings {
        tls_cert: a.tls_cert.clone(),
        tls_key: a.tls_key.clone(),
        tls_client_ca: a.tls_client_ca.clone(),
        tls_plaintext,
        auth_file: a.auth_file.clone(),
        auth,
        oidc,
        session_key_file: a.session_key_file.clone(),
        public_url: public_url.trim_end_matches('/').to_string(),
    })
}

fn tenancy(
    a: &ServeArgs,
    limits: &Limits,
    retention: Option<Duration>,
    max_disk_bytes: Option<u64>,
) -> anyhow::Result<TenancySettings> {
    let default_tenant = a.default_tenant.clone().unwrap_or_else(|| "single-tenant".to_string());
    crate::tenancy::check_name(&default_tenant).context("default_tenant")?;
    let global = TenantLimits {
        ingest_rate: a.tenant_ingest_rate.unwrap_or(0),
        retention,
        max_disk_bytes,
        limits: limits.clone(),
    };
    let mut overrides = std::collections::BTreeMap::new();
    for (name, o) in a.tenants.clone().unwrap_or_default() {
        crate::tenancy::check_name(&name).with_context(|| format!("[tenants.{name}]"))?;
        let at = |field: &str| format!("tenants.{name}.{field}");
        let g = &global.limits;
        let tenant = TenantLimits {
            ingest_rate: o.ingest_rate.unwrap_or(global.ingest_rate),
            retention: match o.retention.as_deref() {
                None => global.retention,
                Some(text) => Some(duration(&at("retention"), Some(text), Duration::ZERO)?),
            },
            max_disk_bytes: o.max_disk_bytes.or(global.max_disk_bytes),
            limits: Limits {
                max_services: count(&at("max_services"), o.max_services, g.max_services)?,
                max_span_metric_series_per_service: count(
                    &at("max_span_metric_series_per_service"),
                    o.max_span_metric_series_per_service,
                    g.max_span_metric_series_per_service,
                )?,
                max_operations_per_service: count(
                    &at("max_operations_per_service"),
                    o.max_operations_per_service,
                    g.max_operations_per_service,
                )?,
                max_analytics_groups: count(
                    &at("max_analytics_groups"),
                    o.max_analytics_groups,
                    g.max_analytics_groups,
                )?,
                query_max_limit: count(&at("query_max_limit"), o.query_max_limit, g.query_max_limit)?,
                query_max_lookback: duration(
                    &at("query_max_lookback"),
                    o.query_max_lookback.as_deref(),
                    g.query_max_lookback,
                )?,
                query_timeout: duration(&at("query_timeout"), o.query_timeout.as_deref(), g.query_timeout)?,
                query_max_trace_spans: count(
                    &at("query_max_trace_spans"),
                    o.query_max_trace_spans,
                    g.query_max_trace_spans,
                )?,
                query_max_series: count(&at("query_max_series"), o.query_max_series, g.query_max_series)?,
                ..g.clone()
            },
        };
        overrides.insert(name, tenant);
    }
    Ok(TenancySettings {
        default_tenant,
        header_required: a.tenant_header_required.unwrap_or(false),
        max_tenants: count("max_tenants", a.max_tenants, 100)?,
        global,
        overrides,
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
    fn storage_is_embedded_by_default_and_clickhouse_takes_its_url_and_database() {
        let settings = Cli::parse_from(["spindle"]).serve.resolve().unwrap();
        assert_eq!(settings.storage, Storage::Embedded);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("spindle.toml");
        std::fs::write(&file, "storage = \"clickhouse\"\nclickhouse_database = \"traces\"\ntarget = \"query\"\n")
            .unwrap();
        let settings = Cli::parse_from(["spindle", "--config", file.to_str().unwrap()]).serve.resolve().unwrap();
        let url = "http://127.0.0.1:8123".to_string();
        let expected = ClickHouseSettings {
            url,
            database: "traces".into(),
            cluster: None,
            credentials: None,
            ca_pem: None,
            hot_attributes: Vec::new(),
            batch_spans: 10_000,
            batch_wait: Duration::from_millis(100),
        };
        assert_eq!(settings.storage, Storage::ClickHouse(Box::new(expected.clone())));
        assert_eq!(settings.target, Target::Query);
        let cli = Cli::parse_from([
            "spindle",
            "--config",
            file.to_str().unwrap(),
            "--clickhouse-cluster",
            "traces",
            "--clickhouse-shards",
            "http://a:8123, http://b:8123",
            "--clickhouse-batch-wait",
            "20ms",
            "--clickhouse-hot-attributes",
            "symbol, http.route",
        ]);
        let cluster = spindle_clickhouse::Cluster {
            name: "traces".into(),
            shard_urls: vec!["http://a:8123".into(), "http://b:8123".into()],
        };
        let wanted = ClickHouseSettings {
            cluster: Some(cluster),
            batch_wait: Duration::from_millis(20),
            hot_attributes: vec!["symbol".into(), "http.route".into()],
            ..expected
        };
        assert_eq!(cli.serve.resolve().unwrap().storage, Storage::ClickHouse(Box::new(wanted)));
        let long = "k".repeat(spindle_clickhouse::MAX_HOT_KEY_BYTES + 1);
        let too_long =
            Cli::parse_from(["spindle", "--config", file.to_str().unwrap(), "--clickhouse-hot-attributes", &long]);
        assert!(too_long.serve.resolve().is_err());
        // The front instance of a scale-out: a collector that also answers queries.
        let front = ["spindle", "--config", file.to_str().unwrap(), "--target", "collector, query"];
        let settings = Cli::parse_from(front.iter().chain(&["--kafka-brokers", "k:9092"])).serve.resolve().unwrap();
        assert_eq!(settings.target, Target::CollectorQuery);
        assert!(settings.target.receives() && settings.target.stores());
        let err = format!("{:#}", Cli::parse_from(front).serve.resolve().unwrap_err());
        assert!(err.contains("needs kafka_brokers"), "{err}");
        let embedded = Cli::parse_from(["spindle", "--target", "collector,query", "--kafka-brokers", "k:9092"]);
        let err = format!("{:#}", embedded.serve.resolve().unwrap_err());
        assert!(err.contains("needs storage = clickhouse"), "{err}");
        for (storage, flag, value, wanted) in [
            ("postgres", "--clickhouse-database", "x", "invalid storage"),
            ("clickhouse", "--clickhouse-database", "a-b", "invalid clickhouse_database"),
            ("clickhouse", "--clickhouse-url", "clickhouse:8123", "invalid clickhouse_url"),
            ("clickhouse", "--clickhouse-cluster", "a", "go together"),
            ("clickhouse", "--clickhouse-shards", "http://a:1", "go together"),
            ("clickhouse", "--clickhouse-batch-spans", "0", "clickhouse_batch_spans must be positive"),
            ("clickhouse", "--clickhouse-password-file", "/nonexistent", "needs clickhouse_user"),
        ] {
            let cli = Cli::parse_from(["spindle", "--storage", storage, flag, value]);
            let err = format!("{:#}", cli.serve.resolve().unwrap_err());
            assert!(err.contains(wanted), "{err}");
        }
    }

    #[test]
    fn kafka_settings_take_flags_environment_and_file_keys() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("spindle.toml");
        std::fs::write(
            &file,
            "target = \"ingester\"\nkafka_brokers = \"k:9092\"\nkafka_partitions = \"0-1,3\"\n\
             kafka_compression = \"snappy\"\nkafka_linger = \"20ms\"\nkafka_batch_bytes = 2000000\n\
             ingester_batch_spans = 5000\ningester_batch_wait = \"1s\"\n",
        )
        .unwrap();
        let cli = Cli::parse_from(["spindle", "--config", file.to_str().unwrap(), "--ingester-batch-spans", "700"]);
        let kafka = cli.serve.resolve().unwrap().kafka.unwrap();
        assert_eq!(kafka.partitions, Some(vec![0, 1, 3]));
        assert_eq!(
            (kafka.compression, kafka.linger, kafka.batch_bytes),
            ("snappy", Duration::from_millis(20), 2_000_000)
        );
        assert_eq!((kafka.batch_spans, kafka.batch_wait), (700, Duration::from_secs(1)));
        // The environment is clap's: checked here without touching the process's own.
        let cmd = <Cli as clap::CommandFactory>::command();
        let envs: Vec<String> =
            cmd.get_arguments().filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned())).collect();
        for env in [
            "SPINDLE_KAFKA_PARTITIONS",
            "SPINDLE_KAFKA_COMPRESSION",
            "SPINDLE_KAFKA_LINGER",
            "SPINDLE_KAFKA_BATCH_BYTES",
            "SPINDLE_INGESTER_BATCH_SPANS",
            "SPINDLE_INGESTER_BATCH_WAIT",
        ] {
            assert!(envs.iter().any(|e| e == env), "{env} is not read");
        }
        let err = Cli::parse_from([
            "spindle",
            "--target",
            "ingester",
            "--kafka-brokers",
            "k:9092",
            "--kafka-partitions",
            "x",
        ])
        .serve
        .resolve()
        .unwrap_err();
        assert!(format!("{err:#}").contains("invalid kafka_partitions"), "{err:#}");
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

    #[test]
    fn tenant_overrides_take_the_global_values_they_do_not_set() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("spindle.toml");
        std::fs::write(
            &file,
            "retention = \"72h\"\nquery_timeout = \"20s\"\ntenant_ingest_rate = 1000\n\n\
             [tenants.team-a]\nretention = \"24h\"\nquery_timeout = \"5s\"\nmax_services = 7\n",
        )
        .unwrap();
        let settings = Cli::parse_from(["spindle", "--config", file.to_str().unwrap()]).serve.resolve().unwrap();
        let t = &settings.tenancy;
        assert_eq!(t.default_tenant, "single-tenant");
        let a = t.limits("team-a");
        assert_eq!(a.retention, Some(Duration::from_secs(24 * 3600)));
        assert_eq!(a.limits.query_timeout, Duration::from_secs(5));
        assert_eq!(a.limits.max_services, 7);
        assert_eq!(a.ingest_rate, 1000);
        let other = t.limits("team-b");
        assert_eq!(other.retention, Some(Duration::from_secs(72 * 3600)));
        assert_eq!(other.limits.query_timeout, Duration::from_secs(20));
        std::fs::write(&file, "[tenants.\"../x\"]\nretention = \"1h\"\n").unwrap();
        let err = Cli::parse_from(["spindle", "--config", file.to_str().unwrap()]).serve.resolve().unwrap_err();
        assert!(format!("{err:#}").contains("invalid tenant"), "{err:#}");
        std::fs::write(&file, "[tenants.a]\nretentoin = \"1h\"\n").unwrap();
        let err = Cli::parse_from(["spindle", "--config", file.to_str().unwrap()]).serve.resolve().unwrap_err();
        assert!(format!("{err:#}").contains("unknown field"), "{err:#}");
    }

    #[test]
    fn credentials_turn_authentication_on_for_every_group() {
        let settings = Cli::parse_from(["spindle"]).serve.resolve().unwrap();
        assert!(settings.security.auth.is_empty());
        let settings = Cli::parse_from(["spindle", "--auth-file", "auth.toml"]).serve.resolve().unwrap();
        assert!(Group::ALL.iter().all(|g| settings.security.requires_auth(*g)));
        let settings =
            Cli::parse_from(["spindle", "--auth-file", "auth.toml", "--auth", "query"]).serve.resolve().unwrap();
        assert!(settings.security.requires_auth(Group::Query) && !settings.security.requires_auth(Group::Ingest));
        let err = Cli::parse_from(["spindle", "--auth", "query"]).serve.resolve().unwrap_err();
        assert!(format!("{err:#}").contains("no credential could pass"), "{err:#}");
        let err = Cli::parse_from(["spindle", "--tls-cert", "c.pem"]).serve.resolve().unwrap_err();
        assert!(format!("{err:#}").contains("tls_cert and tls_key"), "{err:#}");
    }
}
