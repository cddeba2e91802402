//! `market-data-service`: the quote source ClStock calls, standing in for Yahoo Finance.
//!
//! `GET /v1/history/{ticker}?period=1y` answers the ticker's daily bars from
//! [`synth`](crate::synth) (Tokyo stocks under `{code}.T`), after a log-normally distributed
//! delay, and fails or answers empty at configurable rates so the traces ClStock produces
//! include upstream errors and "No data returned" events. Histories are generated once at
//! start; each request only slices one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use tracing::field::Empty;

use crate::calendar::Date;
use crate::history::{Bar, HistoryResponse, Period, PeriodError, MAX_TRADING_DAYS};
use crate::metrics::HttpMetrics;
use crate::server::{error_response, with_observability};
use crate::synth::{self, SplitMix64};
use crate::universe::{self, Listing, UNIVERSE};

/// How `market-data-service` runs; every flag has a `MARKET_DATA_*` variable.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "market-data-service",
    version,
    about = "Deterministic daily stock histories over HTTP, with simulated latency and failures"
)]
pub struct MarketDataConfig {
    /// Address to serve on.
    #[arg(long, env = "MARKET_DATA_LISTEN", default_value = "0.0.0.0:9201")]
    pub listen: SocketAddr,
    /// Seed of the price histories; the same seed gives the same prices.
    #[arg(long, env = "MARKET_DATA_SEED", default_value_t = 3)]
    pub seed: u64,
    /// Last trading day of every history (YYYY-MM-DD).
    #[arg(long, env = "MARKET_DATA_AS_OF", default_value = "2024-12-31")]
    pub as_of: Date,
    /// Median response delay in milliseconds (log-normal, capped at ten times the median).
    #[arg(long, env = "MARKET_DATA_LATENCY_MS", default_value_t = 40)]
    pub latency_ms: u64,
    /// Share of requests answered 503 (0 to 1).
    #[arg(long, env = "MARKET_DATA_ERROR_RATE", default_value_t = 0.02)]
    pub error_rate: f64,
    /// Share of requests answered with no bars (0 to 1).
    #[arg(long, env = "MARKET_DATA_EMPTY_RATE", default_value_t = 0.02)]
    pub empty_rate: f64,
}

impl MarketDataConfig {
    /// Defaults for everything but the address, no latency and no failures (for tests).
    pub fn quiet(listen: SocketAddr) -> Self {
        Self { listen, seed: 3, as_of: DEFAULT_AS_OF, latency_ms: 0, error_rate: 0.0, empty_rate: 0.0 }
    }
}

/// 2024-12-31, the default `--as-of`.
pub const DEFAULT_AS_OF: Date = Date::from_days_since_epoch(20_088);

/// A configuration the service cannot run with.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("{name} must be between 0 and 1, got {value}")]
    Rate { name: &'static str, value: f64 },
    #[error("error_rate + empty_rate must not exceed 1, got {0}")]
    RatesOverOne(f64),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// The service's state: every history, generated at start, and the fault-injection stream.
#[derive(Debug)]
pub struct MarketData {
    config: MarketDataConfig,
    histories: HashMap<String, (&'static Listing, Vec<Bar>)>,
    draws: AtomicU64,
    responses: Family<OutcomeLabels, Counter>,
}

#[derive(Debug, Deserialize)]
struct HistoryQuery {
    period: Option<String>,
}

/// Why a history request failed.
#[derive(Debug, thiserror::Error)]
pub enum MarketDataError {
    #[error("unknown ticker {0:?} (tokyo stocks are quoted as CODE.T)")]
    UnknownTicker(String),
    #[error(transparent)]
    Period(#[from] PeriodError),
    #[error("simulated upstream outage for {0}")]
    SimulatedOutage(String),
}

impl IntoResponse for MarketDataError {
    fn into_response(self) -> Response {
        let status = match self {
            MarketDataError::UnknownTicker(_) => StatusCode::NOT_FOUND,
            MarketDataError::Period(_) => StatusCode::BAD_REQUEST,
            MarketDataError::SimulatedOutage(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        error_response(status, self.to_string())
    }
}

/// What one request draws from the fault stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    Empty,
    Outage,
}

impl MarketData {
    /// Validates `config`, generates every history and registers the service's metrics.
    pub fn new(config: MarketDataConfig, registry: &mut Registry) -> Result<Arc<Self>, ConfigError> {
        for (name, value) in [("error_rate", config.error_rate), ("empty_rate", config.empty_rate)] {
            if !(0.0..=1.0).contains(&value) {
                return Err(ConfigError::Rate { name, value });
            }
        }
        let total = config.error_rate + config.empty_rate;
        if total > 1.0 {
            return Err(ConfigError::RatesOverOne(total));
        }
        let histories = UNIVERSE
            .iter()
            .map(|l| (l.ticker(), (l, synth::history(l, config.seed, config.as_of, MAX_TRADING_DAYS))))
            .collect();
        let responses = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "market_data_responses",
            "History requests by outcome: ok, empty, outage, unknown_ticker, bad_request",
            responses.clone(),
        );
        Ok(Arc::new(Self { config, histories, draws: AtomicU64::new(0), responses }))
    }

    /// The traced routes plus `/metrics` and `/healthz`.
    pub fn router(self: &Arc<Self>, http_metrics: Arc<HttpMetrics>, registry: Arc<Registry>) -> Router {
        let routes = Router::new().route("/v1/history/{ticker}", get(history)).with_state(Arc::clone(self));
        with_observability(routes, http_metrics, registry)
    }

    fn count(&self, outcome: &'static str) {
        self.responses.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// The `n`-th value of a seeded stream: deterministic per process, no lock.
    fn draw(&self) -> f64 {
        let n = self.draws.fetch_add(1, Ordering::Relaxed);
        SplitMix64::new((self.config.seed ^ 0x5EED_FA17).wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15))).next_f64()
    }

    fn fault(&self) -> Fault {
        let u = self.draw();
        if u < self.config.error_rate {
            Fault::Outage
        } else if u < self.config.error_rate + self.config.empty_rate {
            Fault::Empty
        } else {
            Fault::None
        }
    }

    fn latency(&self) -> Duration {
        if self.config.latency_ms == 0 {
            return Duration::ZERO;
        }
        let normal = SplitMix64::new(self.draw().to_bits()).next_normal();
        let median = self.config.latency_ms as f64;
        Duration::from_secs_f64((median * (0.5 * normal).exp()).min(10.0 * median) / 1000.0)
    }

    /// The bars of `period` for `listing`, or a simulated failure.
    #[tracing::instrument(
        name = "load_history",
        skip_all,
        fields(ticker = %ticker, period = %period, bars = Empty, fault = Empty),
        err(level = "warn")
    )]
    async fn load_history(&self, ticker: &str, period: Period) -> Result<HistoryResponse, MarketDataError> {
        let (listing, bars) =
            self.histories.get(ticker).ok_or_else(|| MarketDataError::UnknownTicker(ticker.to_owned()))?;
        tokio::time::sleep(self.latency()).await;
        let span = tracing::Span::current();
        let fault = self.fault();
        span.record("fault", format!("{fault:?}").to_lowercase());
        let bars = match fault {
            Fault::Outage => {
                self.count("outage");
                return Err(MarketDataError::SimulatedOutage(ticker.to_owned()));
            }
            Fault::Empty => {
                self.count("empty");
                Vec::new()
            }
            Fault::None => {
                self.count("ok");
                bars[bars.len().saturating_sub(period.trading_days())..].to_vec()
            }
        };
        span.record("bars", bars.len());
        Ok(HistoryResponse { ticker: listing.ticker(), currency: listing.market.currency().to_owned(), period, bars })
    }
}

async fn history(
    State(service): State<Arc<MarketData>>,
    Path(ticker): Path<String>,
    Query(query): Query<HistoryQuery>,
) -> Result<Json<HistoryResponse>, MarketDataError> {
    let period = match query.period.as_deref().map(str::parse).transpose() {
        Ok(period) => period.unwrap_or(Period::OneYear),
        Err(error) => {
            service.count("bad_request");
            return Err(error.into());
        }
    };
    let Some(listing) = universe::by_ticker(&ticker) else {
        service.count("unknown_ticker");
        return Err(MarketDataError::UnknownTicker(ticker));
    };
    Ok(Json(service.load_history(&listing.ticker(), period).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(error_rate: f64, empty_rate: f64) -> Result<Arc<MarketData>, ConfigError> {
        let mut config = MarketDataConfig::quiet(([127, 0, 0, 1], 0).into());
        config.error_rate = error_rate;
        config.empty_rate = empty_rate;
        MarketData::new(config, &mut Registry::default())
    }

    #[test]
    fn default_as_of_matches_the_flag_default() {
        assert_eq!(DEFAULT_AS_OF.to_string(), "2024-12-31");
    }

    #[test]
    fn rates_are_validated() {
        assert_eq!(service(1.5, 0.0).err(), Some(ConfigError::Rate { name: "error_rate", value: 1.5 }));
        assert_eq!(service(0.0, -0.1).err(), Some(ConfigError::Rate { name: "empty_rate", value: -0.1 }));
        assert_eq!(service(0.6, 0.6).err(), Some(ConfigError::RatesOverOne(1.2)));
    }

    #[test]
    fn faults_follow_the_configured_rates() {
        let svc = service(0.2, 0.3).expect("valid");
        let draws: Vec<Fault> = (0..10_000).map(|_| svc.fault()).collect();
        let share = |f: Fault| draws.iter().filter(|d| **d == f).count() as f64 / 10_000.0;
        assert!((share(Fault::Outage) - 0.2).abs() < 0.02, "{}", share(Fault::Outage));
        assert!((share(Fault::Empty) - 0.3).abs() < 0.02, "{}", share(Fault::Empty));
        let never = service(0.0, 0.0).expect("valid");
        assert!((0..1000).all(|_| never.fault() == Fault::None));
        let always = service(1.0, 0.0).expect("valid");
        assert!((0..1000).all(|_| always.fault() == Fault::Outage));
    }

    #[test]
    fn latency_centres_on_the_median_and_is_capped() {
        let mut config = MarketDataConfig::quiet(([127, 0, 0, 1], 0).into());
        config.latency_ms = 40;
        let svc = MarketData::new(config, &mut Registry::default()).expect("valid");
        let mut delays: Vec<Duration> = (0..2001).map(|_| svc.latency()).collect();
        delays.sort();
        let median = delays[1000].as_secs_f64() * 1000.0;
        assert!((median - 40.0).abs() < 4.0, "median {median} ms");
        assert!(delays[2000] <= Duration::from_millis(400));
    }
}
