//! Where option snapshots come from: the [`MarketDataSource`] trait and its deterministic
//! implementation, [`SimulatedMarket`].
//!
//! The machine has no internet and tests need reproducible data, so the default source is a
//! simulator: each symbol's underlying follows a geometric Brownian motion driven by its own
//! seeded random stream, options are drawn from a strike/expiry grid around the money, and
//! the market price is the BSM price at a volatility smile plus a little noise. The same seed,
//! start time and sequence of calls give the same snapshots, bit for bit. A real feed plugs
//! in by implementing the trait.

use std::collections::HashMap;
use std::future::Future;

use std::time::Duration;

use crate::bsm::{Contract, OptionType};
use crate::record::{InstrumentReference, OptionSnapshot, YEAR_MS};

/// Why a source could not deliver a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("symbol {0:?} is not known to the source")]
    UnknownSymbol(String),
    #[error("market-data source unavailable: {0}")]
    Unavailable(String),
}

/// A provider of option snapshots (a vendor API, an exchange feed, the simulator).
pub trait MarketDataSource: Send {
    /// A short name recorded with every message (`simulator`).
    fn name(&self) -> &str;

    /// The current snapshot of one option on `symbol`.
    fn fetch(&mut self, symbol: &str) -> impl Future<Output = Result<OptionSnapshot, SourceError>> + Send;

    /// The reference data of `symbol`, from the source of record: slow next to a quote,
    /// which is why ingestion reads it through a cache ([`crate::reference`]).
    fn reference(&self, symbol: &str) -> impl Future<Output = Result<InstrumentReference, SourceError>> + Send;
}

/// Settings of the simulator.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulatorSettings {
    /// Seed of every random stream.
    pub seed: u64,
    /// Simulated clock at the first snapshot, unix milliseconds.
    pub start_ms: i64,
    /// Simulated time between two snapshots, milliseconds (> 0: observation times are unique).
    pub step_ms: i64,
    /// Risk-free rate quoted with every snapshot.
    pub risk_free_rate: f64,
    /// How long a reference-data lookup takes: the round trip to a reference-data service
    /// that the cache saves.
    pub reference_latency: Duration,
}

impl Default for SimulatorSettings {
    fn default() -> Self {
        Self {
            seed: 42,
            start_ms: 1_735_689_600_000,
            step_ms: 10,
            risk_free_rate: 0.045,
            reference_latency: Duration::from_millis(20),
        }
    }
}

/// The deterministic market: see the module documentation.
#[derive(Debug)]
pub struct SimulatedMarket {
    settings: SimulatorSettings,
    clock_ms: i64,
    underlyings: HashMap<String, Underlying>,
}

#[derive(Debug)]
struct Underlying {
    price: f64,
    volatility: f64,
    drift: f64,
    dividend_yield: f64,
    last_ms: i64,
    rng: SplitMix64,
}

/// Days to expiry offered, and strikes as fractions of the underlying.
const EXPIRY_DAYS: [i64; 6] = [7, 30, 60, 90, 180, 365];
const MONEYNESS: [f64; 9] = [0.8, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15, 1.2];
const DAY_MS: i64 = 86_400_000;

impl SimulatedMarket {
    pub fn new(settings: SimulatorSettings) -> Self {
        Self { clock_ms: settings.start_ms, settings, underlyings: HashMap::new() }
    }

    /// The next snapshot for `symbol`, synchronously (what [`MarketDataSource::fetch`] awaits).
    pub fn next_snapshot(&mut self, symbol: &str) -> Result<OptionSnapshot, SourceError> {
        let symbol_ok = !symbol.is_empty()
            && symbol.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        if !symbol_ok {
            return Err(SourceError::UnknownSymbol(symbol.to_owned()));
        }
        let now = self.clock_ms;
        self.clock_ms += self.settings.step_ms.max(1);
        let seed = self.settings.seed;
        let underlying =
            self.underlyings.entry(symbol.to_owned()).or_insert_with(|| Underlying::new(seed, symbol, now));
        underlying.advance_to(now);

        let rng = &mut underlying.rng;
        let option_type = if rng.next_f64() < 0.5 { OptionType::Call } else { OptionType::Put };
        let days = EXPIRY_DAYS[rng.below(EXPIRY_DAYS.len())];
        let moneyness = MONEYNESS[rng.below(MONEYNESS.len())];
        let tick = if underlying.price < 25.0 {
            0.5
        } else if underlying.price < 200.0 {
            1.0
        } else {
            5.0
        };
        let strike = ((underlying.price * moneyness / tick).round() * tick).max(tick);
        // Expiry at 20:00 UTC (the US close) on the chosen day.
        let expiry_ms = (now / DAY_MS + days) * DAY_MS + 20 * 3_600_000;

        // A smile: out-of-the-money strikes trade at higher volatility, plus quote noise.
        let log_moneyness = (strike / underlying.price).ln();
        let smile_vol = underlying.volatility * (1.0 + 1.5 * log_moneyness * log_moneyness - 0.2 * log_moneyness);
        let quoted_vol = (smile_vol * (1.0 + 0.02 * rng.normal())).max(0.01);
        let contract = Contract {
            option_type,
            spot: underlying.price,
            strike,
            rate: self.settings.risk_free_rate,
            dividend_yield: underlying.dividend_yield,
            time_years: (expiry_ms - now) as f64 / YEAR_MS,
        };
        // Deep out-of-the-money prices can underflow to nothing; quote at least a tick above
        // the lower bound, as real books do.
        let (lower, _) = contract.price_bounds();
        let market_price = contract.price(quoted_vol).max(lower + 0.0001);
        Ok(OptionSnapshot {
            symbol: symbol.to_owned(),
            option_type,
            underlying_price: underlying.price,
            strike,
            expiry_ms,
            observed_at_ms: now,
            risk_free_rate: self.settings.risk_free_rate,
            dividend_yield: underlying.dividend_yield,
            market_price,
            historical_volatility: underlying.volatility,
        })
    }
}

impl MarketDataSource for SimulatedMarket {
    fn name(&self) -> &str {
        "simulator"
    }

    fn fetch(&mut self, symbol: &str) -> impl Future<Output = Result<OptionSnapshot, SourceError>> + Send {
        std::future::ready(self.next_snapshot(symbol))
    }

    fn reference(&self, symbol: &str) -> impl Future<Output = Result<InstrumentReference, SourceError>> + Send {
        let latency = self.settings.reference_latency;
        let reference = simulated_reference(symbol);
        async move {
            tokio::time::sleep(latency).await;
            reference
        }
    }
}

/// The simulator's reference data: Tokyo for `.T` symbols, Nasdaq otherwise.
pub fn simulated_reference(symbol: &str) -> Result<InstrumentReference, SourceError> {
    if symbol.is_empty() || symbol.contains(char::is_whitespace) {
        return Err(SourceError::UnknownSymbol(symbol.to_owned()));
    }
    let (exchange, currency) = if symbol.ends_with(".T") { ("XTKS", "JPY") } else { ("XNAS", "USD") };
    Ok(InstrumentReference { exchange: exchange.into(), currency: currency.into(), contract_multiplier: 100 })
}

impl Underlying {
    /// A symbol's starting state, derived from the seed and the symbol alone.
    fn new(seed: u64, symbol: &str, now: i64) -> Self {
        let mut rng = SplitMix64(seed ^ fnv1a(symbol.as_bytes()));
        Self {
            price: 20.0 + 480.0 * rng.next_f64(),
            volatility: 0.15 + 0.45 * rng.next_f64(),
            drift: 0.02 + 0.08 * rng.next_f64(),
            dividend_yield: 0.03 * rng.next_f64(),
            last_ms: now,
            rng,
        }
    }

    /// One exact GBM step over the time since the last snapshot of this symbol.
    fn advance_to(&mut self, now: i64) {
        let dt = (now - self.last_ms).max(0) as f64 / YEAR_MS;
        self.last_ms = now;
        if dt > 0.0 {
            let z = self.rng.normal();
            let v = self.volatility;
            self.price *= ((self.drift - 0.5 * v * v) * dt + v * dt.sqrt() * z).exp();
        }
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast and identical on every platform and
/// version, which is what reproducible test data needs.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..n.
    fn below(&mut self, n: usize) -> usize {
        ((self.next_f64() * n as f64) as usize).min(n.saturating_sub(1))
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // (0, 1]: ln is finite
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_snapshots() {
        let run = || {
            let mut m = SimulatedMarket::new(SimulatorSettings::default());
            (0..50).map(|i| m.next_snapshot(["AAPL", "MSFT", "7203.T"][i % 3]).expect("snapshot")).collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
        let mut other = SimulatedMarket::new(SimulatorSettings { seed: 7, ..SimulatorSettings::default() });
        assert_ne!(run()[0], other.next_snapshot("AAPL").expect("snapshot"));
    }

    #[test]
    fn a_symbol_stream_does_not_depend_on_the_other_symbols() {
        let mut alone = SimulatedMarket::new(SimulatorSettings::default());
        let mut mixed = SimulatedMarket::new(SimulatorSettings::default());
        let a = alone.next_snapshot("AAPL").expect("snapshot");
        mixed.next_snapshot("MSFT").expect("snapshot");
        let b = mixed.next_snapshot("AAPL").expect("snapshot");
        assert_eq!((a.strike, a.option_type), (b.strike, b.option_type));
    }

    #[test]
    fn snapshots_are_valid_and_observation_times_unique() {
        let mut m = SimulatedMarket::new(SimulatorSettings::default());
        let mut seen = std::collections::HashSet::new();
        for i in 0..5_000 {
            let s = m.next_snapshot(["AAPL", "MSFT", "GOOG", "BRK.B"][i % 4]).expect("snapshot");
            assert_eq!(s.validate(), Ok(()), "{s:?}");
            assert!(seen.insert((s.contract_id(), s.observed_at_ms)), "natural key repeats: {s:?}");
        }
    }

    #[test]
    fn bad_symbols_are_refused() {
        let mut m = SimulatedMarket::new(SimulatorSettings::default());
        assert!(matches!(m.next_snapshot("aapl"), Err(SourceError::UnknownSymbol(_))));
    }
}
