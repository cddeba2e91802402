//! PostgreSQL for `storage-service`: a connection pool, the schema (created on start), and
//! one batched, idempotent insert.
//!
//! A batch is a single `INSERT … SELECT FROM UNNEST($1, $2, …)` — one prepared statement
//! and one round trip whatever the batch size — with `ON CONFLICT DO NOTHING` on the natural
//! key `(contract, observed_at)`, so replaying a message (at-least-once delivery) never
//! duplicates a row. Errors are classified: [`DbError::Transient`] (connection lost,
//! server shutting down, too many clients, serialisation failure) is worth retrying,
//! [`DbError::Permanent`] (a row the table refuses) is not.

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use std::time::Duration;
use tokio_postgres::config::Host;
use tokio_postgres::types::ToSql;
use tokio_postgres::NoTls;

use crate::error::Error;
use crate::record::EnrichedRecord;

/// The table every enriched record lands in, one row each.
pub const TABLE: &str = "option_analytics";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS option_analytics (
    contract              text             NOT NULL,
    observed_at           timestamptz      NOT NULL,
    symbol                text             NOT NULL,
    option_type           text             NOT NULL CHECK (option_type IN ('call', 'put')),
    strike                double precision NOT NULL,
    expiry                timestamptz      NOT NULL,
    underlying_price      double precision NOT NULL,
    market_price          double precision NOT NULL,
    risk_free_rate        double precision NOT NULL,
    dividend_yield        double precision NOT NULL,
    historical_volatility double precision NOT NULL,
    time_to_expiry_years  double precision NOT NULL,
    fair_value            double precision NOT NULL,
    implied_volatility    double precision NOT NULL,
    iv_method             text             NOT NULL,
    delta                 double precision NOT NULL,
    gamma                 double precision NOT NULL,
    vega                  double precision NOT NULL,
    theta                 double precision NOT NULL,
    rho                   double precision NOT NULL,
    source                text             NOT NULL,
    sequence              bigint           NOT NULL,
    ingested_at           timestamptz      NOT NULL,
    processed_at          timestamptz      NOT NULL,
    trace_id              text,
    stored_at             timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (contract, observed_at)
);
CREATE INDEX IF NOT EXISTS option_analytics_symbol_observed_at ON option_analytics (symbol, observed_at);
";

const INSERT: &str = "
INSERT INTO option_analytics (
    contract, observed_at, symbol, option_type, strike, expiry, underlying_price, market_price,
    risk_free_rate, dividend_yield, historical_volatility, time_to_expiry_years, fair_value,
    implied_volatility, iv_method, delta, gamma, vega, theta, rho, source, sequence,
    ingested_at, processed_at, trace_id)
SELECT u.contract, timestamptz 'epoch' + u.observed_ms * interval '1 millisecond', u.symbol,
    u.option_type, u.strike, timestamptz 'epoch' + u.expiry_ms * interval '1 millisecond',
    u.underlying_price, u.market_price, u.risk_free_rate, u.dividend_yield,
    u.historical_volatility, u.time_to_expiry_years, u.fair_value, u.implied_volatility,
    u.iv_method, u.delta, u.gamma, u.vega, u.theta, u.rho, u.source, u.sequence,
    timestamptz 'epoch' + u.ingested_ms * interval '1 millisecond',
    timestamptz 'epoch' + u.processed_ms * interval '1 millisecond', u.trace_id
FROM UNNEST(
    $1::text[], $2::bigint[], $3::text[], $4::text[], $5::float8[], $6::bigint[], $7::float8[],
    $8::float8[], $9::float8[], $10::float8[], $11::float8[], $12::float8[], $13::float8[],
    $14::float8[], $15::text[], $16::float8[], $17::float8[], $18::float8[], $19::float8[],
    $20::float8[], $21::text[], $22::bigint[], $23::bigint[], $24::bigint[], $25::text[]
) AS u(contract, observed_ms, symbol, option_type, strike, expiry_ms, underlying_price,
    market_price, risk_free_rate, dividend_yield, historical_volatility, time_to_expiry_years,
    fair_value, implied_volatility, iv_method, delta, gamma, vega, theta, rho, source, sequence,
    ingested_ms, processed_ms, trace_id)
ON CONFLICT (contract, observed_at) DO NOTHING
";

/// A row to store: the record and the trace it travelled in.
#[derive(Debug, Clone)]
pub struct Row {
    pub record: EnrichedRecord,
    pub trace_id: Option<String>,
}

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Worth retrying: the database is unreachable, restarting or overloaded.
    #[error("postgresql unavailable: {0}")]
    Transient(String),
    /// Retrying cannot help: the statement or a row is refused.
    #[error("postgresql refused the write: {0}")]
    Permanent(String),
}

impl DbError {
    fn from_postgres(error: &tokio_postgres::Error) -> Self {
        let message = describe(error);
        match error.code() {
            // No SQLSTATE: IO error or closed connection.
            None => Self::Transient(message),
            // 08 connection exception, 40 transaction rollback (serialisation, deadlock),
            // 53 insufficient resources, 57 operator intervention (shutdown), 58 system error.
            Some(code) if matches!(&code.code()[..2], "08" | "40" | "53" | "57" | "58") => Self::Transient(message),
            Some(_) => Self::Permanent(message),
        }
    }

    fn from_pool(error: PoolError) -> Self {
        match error {
            PoolError::Backend(e) => Self::from_postgres(&e),
            other => Self::Transient(other.to_string()),
        }
    }
}

/// The error with its server-side detail (tokio-postgres' `Display` stops at "db error").
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => match std::error::Error::source(error) {
            Some(cause) => format!("{error}: {cause}"),
            None => error.to_string(),
        },
    }
}

/// The pool and what spans say about the database.
pub struct Database {
    pool: Pool,
    /// `db.namespace`: the database name.
    pub namespace: String,
    /// `server.address` and `server.port`.
    pub server_address: String,
    pub server_port: u16,
}

impl Database {
    /// A pool of at most `max_connections` to `url` (`postgres://user@host:port/db`).
    /// Connects lazily: an unreachable server is reported by the first query, not here.
    pub fn new(url: &str, max_connections: usize) -> Result<Self, Error> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| Error::DatabaseUrl(format!("{url}: {e}")))?;
        config.connect_timeout(Duration::from_secs(5));
        if config.get_application_name().is_none() {
            config.application_name("storage-service");
        }
        let namespace =
            config.get_dbname().map_or_else(|| config.get_user().unwrap_or("postgres").to_owned(), str::to_owned);
        let server_address = match config.get_hosts().first() {
            Some(Host::Tcp(host)) => host.clone(),
            #[cfg(unix)]
            Some(Host::Unix(path)) => path.display().to_string(),
            None => "localhost".to_owned(),
        };
        let server_port = config.get_ports().first().copied().unwrap_or(5432);
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(max_connections.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| Error::DatabaseUrl(e.to_string()))?;
        Ok(Self { pool, namespace, server_address, server_port })
    }

    /// The pool, for its metrics (a handle: pools are shared).
    pub fn pool(&self) -> Pool {
        self.pool.clone()
    }

    /// Creates the table and index if missing. Concurrent instances serialise on an
    /// advisory lock, so two first starts do not race on the catalog.
    pub async fn ensure_schema(&self) -> Result<(), DbError> {
        let mut client = self.pool.get().await.map_err(DbError::from_pool)?;
        let tx = client.transaction().await.map_err(|e| DbError::from_postgres(&e))?;
        tx.execute("SELECT pg_advisory_xact_lock(7400331)", &[]).await.map_err(|e| DbError::from_postgres(&e))?;
        tx.batch_execute(SCHEMA).await.map_err(|e| DbError::from_postgres(&e))?;
        tx.commit().await.map_err(|e| DbError::from_postgres(&e))
    }

    /// Inserts `rows` in one statement; returns how many were new (replays are skipped).
    pub async fn insert(&self, rows: &[Row]) -> Result<u64, DbError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let client = self.pool.get().await.map_err(DbError::from_pool)?;
        let statement = client.prepare_cached(INSERT).await.map_err(|e| DbError::from_postgres(&e))?;
        let columns = Columns::from(rows);
        client.execute(&statement, &columns.params()).await.map_err(|e| DbError::from_postgres(&e))
    }
}

/// The rows of a batch as one array per column, in the order of the `UNNEST` parameters.
#[derive(Default)]
struct Columns {
    contract: Vec<String>,
    observed_ms: Vec<i64>,
    symbol: Vec<String>,
    option_type: Vec<String>,
    strike: Vec<f64>,
    expiry_ms: Vec<i64>,
    underlying_price: Vec<f64>,
    market_price: Vec<f64>,
    risk_free_rate: Vec<f64>,
    dividend_yield: Vec<f64>,
    historical_volatility: Vec<f64>,
    time_to_expiry_years: Vec<f64>,
    fair_value: Vec<f64>,
    implied_volatility: Vec<f64>,
    iv_method: Vec<String>,
    delta: Vec<f64>,
    gamma: Vec<f64>,
    vega: Vec<f64>,
    theta: Vec<f64>,
    rho: Vec<f64>,
    source: Vec<String>,
    sequence: Vec<i64>,
    ingested_ms: Vec<i64>,
    processed_ms: Vec<i64>,
    trace_id: Vec<Option<String>>,
}

impl Columns {
    fn from(rows: &[Row]) -> Self {
        let mut c = Columns::default();
        for row in rows {
            let r = &row.record;
            let (i, s, a) = (&r.instrument, &r.instrument.snapshot, &r.analytics);
            c.contract.push(i.contract.clone());
            c.observed_ms.push(s.observed_at_ms);
            c.symbol.push(s.symbol.clone());
            c.option_type.push(s.option_type.as_str().to_owned());
            c.strike.push(s.strike);
            c.expiry_ms.push(s.expiry_ms);
            c.underlying_price.push(s.underlying_price);
            c.market_price.push(s.market_price);
            c.risk_free_rate.push(s.risk_free_rate);
            c.dividend_yield.push(s.dividend_yield);
            c.historical_volatility.push(s.historical_volatility);
            c.time_to_expiry_years.push(a.time_to_expiry_years);
            c.fair_value.push(a.fair_value);
            c.implied_volatility.push(a.implied_volatility);
            c.iv_method.push(a.iv_method.as_str().to_owned());
            c.delta.push(a.delta);
            c.gamma.push(a.gamma);
            c.vega.push(a.vega);
            c.theta.push(a.theta);
            c.rho.push(a.rho);
            c.source.push(i.source.clone());
            c.sequence.push(i64::try_from(i.sequence).unwrap_or(i64::MAX));
            c.ingested_ms.push(i.ingested_at_ms);
            c.processed_ms.push(r.processed_at_ms);
            c.trace_id.push(row.trace_id.clone());
        }
        c
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 25] {
        [
            &self.contract,
            &self.observed_ms,
            &self.symbol,
            &self.option_type,
            &self.strike,
            &self.expiry_ms,
            &self.underlying_price,
            &self.market_price,
            &self.risk_free_rate,
            &self.dividend_yield,
            &self.historical_volatility,
            &self.time_to_expiry_years,
            &self.fair_value,
            &self.implied_volatility,
            &self.iv_method,
            &self.delta,
            &self.gamma,
            &self.vega,
            &self.theta,
            &self.rho,
            &self.source,
            &self.sequence,
            &self.ingested_ms,
            &self.processed_ms,
            &self.trace_id,
        ]
    }
}
