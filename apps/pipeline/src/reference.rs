//! The reference-data cache of `ingestion-service`: `enrich_context` reads a symbol's
//! reference data (exchange, currency, contract multiplier) from Redis, and on a miss from
//! the source, storing it in Redis for `ttl`.
//!
//! Reference data is what the seed's flow makes worth caching: every snapshot needs it, it
//! changes rarely, and the source of record is a slower service than the quotes (the
//! simulator charges [`crate::market::SimulatorSettings::reference_latency`] per lookup).
//!
//! Each lookup is a CLIENT span `GET` (and, after a miss, `SET`) with `db.system=redis`, so
//! Spindle draws a `redis` node after `ingestion-service`, and counts as a hit, a miss or an
//! error in `pipeline_cache_requests_total{cache="reference"}`.
//!
//! Redis never stops the pipeline. Every command is bounded by `timeout` (connecting
//! included); a failed command marks its span as an error, counts an error, takes the value
//! from the source (the miss path) and drops the connection. For `retry` after a failure the
//! lookups do not touch Redis (their `GET` spans are errors saying so, at no cost), then the
//! next lookup connects again: a Redis that is down or hanging costs a snapshot at most one
//! `timeout` per `retry`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr};
use tracing::field::Empty;
use tracing::{Instrument, Span};

use crate::error::Error;
use crate::market::MarketDataSource;
use crate::metrics::{CacheResult, Metrics};
use crate::processor::mark_failed;
use crate::record::InstrumentReference;

/// The `cache` label of this cache's metrics.
pub const CACHE: &str = "reference";

/// Settings of the cache (part of `ingestion-service`'s flags).
#[derive(Debug, Clone, clap::Args)]
pub struct ReferenceCacheConfig {
    /// Redis holding the reference-data cache (`redis://host:port/db`); empty: no cache,
    /// every lookup goes to the source.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// Prefix of the cache's keys (`<prefix><symbol>`).
    #[arg(long, env = "PIPELINE_REFERENCE_KEY_PREFIX", default_value = "pipeline:reference:")]
    pub reference_key_prefix: String,
    /// How long a cached entry lives, seconds.
    #[arg(long, env = "PIPELINE_REFERENCE_TTL_S", default_value_t = 300)]
    pub reference_ttl_s: u64,
    /// Longest wait for one Redis command, connecting included, milliseconds.
    #[arg(long, env = "PIPELINE_REDIS_TIMEOUT_MS", default_value_t = 200)]
    pub redis_timeout_ms: u64,
    /// After a Redis failure, how long lookups skip Redis before connecting again,
    /// milliseconds.
    #[arg(long, env = "PIPELINE_REDIS_RETRY_MS", default_value_t = 1000)]
    pub redis_retry_ms: u64,
}

/// The cache, with its connection (one, multiplexed: ingestion looks up one symbol at a
/// time). Not redis' `ConnectionManager`: it reconnects by itself, and commands wait for its
/// reconnection attempts; here a failure must fall back to the source at once and the next
/// attempt wait `retry`.
pub struct ReferenceCache {
    redis: Option<Redis>,
    metrics: Arc<Metrics>,
}

struct Redis {
    client: redis::Client,
    connection: Option<MultiplexedConnection>,
    /// Set after a failure: Redis is not tried before this instant.
    skip_until: Option<Instant>,
    key_prefix: String,
    ttl_s: u64,
    timeout: Duration,
    retry: Duration,
    /// `server.address`, `server.port` and `db.namespace` (the database index) of the spans.
    address: String,
    port: u16,
    database: i64,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
enum CacheError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("redis failed {0:?} ago; not tried again before {1:?} have passed")]
    Skipped(Duration, Duration),
}

impl CacheError {
    fn kind(&self) -> &'static str {
        match self {
            // The client's own timeouts (set to the same bound) are timeouts too.
            Self::Redis(e) if e.is_timeout() => "timeout",
            Self::Redis(e) if e.is_connection_refusal() || e.is_io_error() => "redis_unavailable",
            Self::Redis(_) => "redis_error",
            Self::Timeout(_) => "timeout",
            Self::Skipped(..) => "redis_unavailable",
        }
    }
}

impl ReferenceCache {
    /// The cache `config` describes; connects lazily (an unreachable Redis is a failed
    /// lookup, not an error here). An invalid URL is an error.
    pub fn new(config: &ReferenceCacheConfig, metrics: Arc<Metrics>) -> Result<Self, Error> {
        if config.redis_url.trim().is_empty() {
            return Ok(Self { redis: None, metrics });
        }
        let invalid = |reason: String| Error::Config { name: "redis-url", reason };
        let client = redis::Client::open(config.redis_url.as_str())
            .map_err(|e| invalid(format!("{}: {e}", config.redis_url)))?;
        let info = client.get_connection_info();
        let (address, port) = match &info.addr {
            ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => (host.clone(), *port),
            ConnectionAddr::Unix(path) => (path.display().to_string(), 0),
        };
        let database = info.redis.db;
        if config.redis_timeout_ms == 0 {
            return Err(Error::Config { name: "redis-timeout-ms", reason: "must be at least 1".into() });
        }
        metrics.register_cache(CACHE);
        Ok(Self {
            redis: Some(Redis {
                client,
                connection: None,
                skip_until: None,
                key_prefix: config.reference_key_prefix.clone(),
                ttl_s: config.reference_ttl_s.max(1),
                timeout: Duration::from_millis(config.redis_timeout_ms),
                retry: Duration::from_millis(config.redis_retry_ms),
                address,
                port,
                database,
            }),
            metrics,
        })
    }

    /// The reference data of `symbol`: from Redis, or from `source` on a miss or a Redis
    /// failure (then written back on a miss), and which of them it was (`None`: no cache
    /// configured). No data when the source fails too (logged).
    pub async fn lookup<S: MarketDataSource>(
        &mut self,
        source: &S,
        symbol: &str,
    ) -> (Option<InstrumentReference>, Option<CacheResult>) {
        let Some(redis) = self.redis.as_mut() else {
            return (from_source(source, symbol).await, None);
        };
        let key = format!("{}{symbol}", redis.key_prefix);
        let get = redis.span("GET");
        let cached = redis.get(&key).instrument(get.clone()).await;
        let outcome = match cached {
            Ok(Some(json)) => match serde_json::from_str::<InstrumentReference>(&json) {
                Ok(reference) => {
                    get.record("db.response.returned_rows", 1);
                    self.metrics.cache_request(CACHE, CacheResult::Hit);
                    return (Some(reference), Some(CacheResult::Hit));
                }
                Err(error) => {
                    // Not ours or from an older release: replaced below, as a miss.
                    tracing::debug!(parent: &get, %error, %key, "cached reference data unreadable");
                    CacheResult::Miss
                }
            },
            Ok(None) => CacheResult::Miss,
            Err(error) => {
                mark_failed(&get, error.kind(), &error);
                if !matches!(error, CacheError::Skipped(..)) {
                    tracing::warn!(%error, retry_in_ms = redis.retry.as_millis() as u64, "reference cache unavailable, reading the source");
                }
                CacheResult::Error
            }
        };
        get.record("db.response.returned_rows", 0);
        drop(get);
        self.metrics.cache_request(CACHE, outcome);
        let reference = from_source(source, symbol).await;
        if let (CacheResult::Miss, Some(value)) = (outcome, &reference) {
            let set = redis.span("SET");
            let json = serde_json::to_string(value).unwrap_or_default();
            if let Err(error) = redis.set(&key, &json).instrument(set.clone()).await {
                mark_failed(&set, error.kind(), &error);
                tracing::warn!(%error, "reference data not cached");
            }
        }
        (reference, Some(outcome))
    }
}

async fn from_source<S: MarketDataSource>(source: &S, symbol: &str) -> Option<InstrumentReference> {
    match source.reference(symbol).await {
        Ok(reference) => Some(reference),
        Err(error) => {
            tracing::warn!(%error, %symbol, "no reference data");
            None
        }
    }
}

impl Redis {
    /// A CLIENT span for command `operation`, with the database attributes of the
    /// OpenTelemetry semantic conventions (old `db.system` and new `db.system.name`).
    fn span(&self, operation: &'static str) -> Span {
        tracing::info_span!(
            "redis",
            otel.name = operation,
            otel.kind = "client",
            otel.status_code = Empty,
            db.system = "redis",
            db.system.name = "redis",
            db.operation.name = operation,
            db.namespace = self.database,
            db.response.returned_rows = Empty,
            server.address = %self.address,
            server.port = self.port,
            error.type = Empty,
        )
    }

    async fn get(&mut self, key: &str) -> Result<Option<String>, CacheError> {
        let mut connection = self.connection().await?;
        let mut command = redis::cmd("GET");
        command.arg(key);
        let result = self.bounded(command.query_async(&mut connection)).await;
        self.settle(result)
    }

    async fn set(&mut self, key: &str, value: &str) -> Result<(), CacheError> {
        let mut connection = self.connection().await?;
        let mut command = redis::cmd("SET");
        command.arg(key).arg(value).arg("EX").arg(self.ttl_s);
        let result = self.bounded(command.query_async::<()>(&mut connection)).await;
        self.settle(result)
    }

    /// The open connection, or a new one; fails at once while failures are being waited
    /// out.
    async fn connection(&mut self) -> Result<MultiplexedConnection, CacheError> {
        if let Some(connection) = &self.connection {
            return Ok(connection.clone());
        }
        if let Some(until) = self.skip_until {
            let now = Instant::now();
            if now < until {
                return Err(CacheError::Skipped(self.retry.saturating_sub(until - now), until - now));
            }
        }
        let config =
            AsyncConnectionConfig::new().set_connection_timeout(self.timeout).set_response_timeout(self.timeout);
        let connected = self.bounded(self.client.get_multiplexed_async_connection_with_config(&config)).await;
        let connection = self.settle(connected)?;
        self.connection = Some(connection.clone());
        Ok(connection)
    }

    /// `command` within the timeout, whatever the client's own timeouts do.
    async fn bounded<T>(
        &self,
        command: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, CacheError> {
        match tokio::time::timeout(self.timeout, command).await {
            Ok(result) => result.map_err(CacheError::Redis),
            Err(_) => Err(CacheError::Timeout(self.timeout)),
        }
    }

    /// On a failure, drops the connection and skips Redis for `retry`.
    fn settle<T>(&mut self, result: Result<T, CacheError>) -> Result<T, CacheError> {
        if result.is_err() {
            self.connection = None;
            self.skip_until = Some(Instant::now() + self.retry);
        } else {
            self.skip_until = None;
        }
        result
    }
}
