//! Deterministic daily OHLCV histories: the market-data service's stand-in for a real quote
//! source (there is no internet here).
//!
//! Each ticker's history is a seeded random walk with structure a model can learn, as real
//! prices have some: the daily drift follows a slowly mean-reverting regime (so momentum
//! carries information about the next weeks) and volatility clusters. The same ticker,
//! seed and end date always give the same bars; a shorter period is the tail of a longer one.
//!
//! Pure computation; the service adds latency and failures around it.

use rand_xoshiro::rand_core::{RngCore, SeedableRng};

use crate::calendar::Date;
use crate::history::{Bar, MAX_TRADING_DAYS};
use crate::universe::{Listing, Market};

/// SplitMix64 (`rand_xoshiro`'s): a tiny, fast, well-mixed generator; plenty for synthetic
/// prices and fault injection. Seeded with the seed as its state, so a seed gives the same
/// prices on every version.
#[derive(Debug, Clone)]
pub struct SplitMix64(rand_xoshiro::SplitMix64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(rand_xoshiro::SplitMix64::seed_from_u64(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn next_normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // (0, 1], so ln is finite
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// FNV-1a of the upper-cased ticker: a stable per-ticker seed.
fn ticker_hash(ticker: &str) -> u64 {
    ticker
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b.to_ascii_uppercase())).wrapping_mul(0x0100_0000_01b3))
}

/// Long-run daily log drift (about 7% a year).
const DRIFT: f64 = 0.0003;
/// Persistence and shock size of the drift regime.
const REGIME_PERSISTENCE: f64 = 0.97;
const REGIME_SHOCK: f64 = 0.001;
/// Persistence and shock size of log-volatility.
const VOL_PERSISTENCE: f64 = 0.98;
const VOL_SHOCK: f64 = 0.05;

/// The last `days` bars (at most [`MAX_TRADING_DAYS`]) of `listing`'s history ending at
/// `as_of`, oldest first.
pub fn history(listing: &Listing, seed: u64, as_of: Date, days: usize) -> Vec<Bar> {
    let dates = as_of.trading_days_until(MAX_TRADING_DAYS);
    let mut rng = SplitMix64::new(seed ^ ticker_hash(&listing.ticker()));
    let (low, high, decimals) = match listing.market {
        Market::Us => (20.0_f64, 500.0_f64, 2),
        Market::Jp => (500.0, 9000.0, 1),
    };
    let mut close = (low.ln() + rng.next_f64() * (high.ln() - low.ln())).exp();
    let base_sigma = 0.010 + 0.010 * rng.next_f64();
    let base_volume = 2e5 * (1.0 + 50.0 * rng.next_f64());
    let (mut regime, mut log_vol) = (0.0_f64, 0.0_f64);
    let keep_from = MAX_TRADING_DAYS.saturating_sub(days);
    let mut bars = Vec::with_capacity(days.min(MAX_TRADING_DAYS));
    for (i, date) in dates.into_iter().enumerate() {
        regime = REGIME_PERSISTENCE * regime + REGIME_SHOCK * rng.next_normal();
        log_vol = VOL_PERSISTENCE * log_vol + VOL_SHOCK * rng.next_normal();
        let sigma = base_sigma * log_vol.exp();
        let ret = DRIFT + regime + sigma * rng.next_normal();
        let open = close * (0.3 * sigma * rng.next_normal()).exp();
        let next_close = close * ret.exp();
        let high = open.max(next_close) * (0.5 * sigma * rng.next_normal().abs()).exp();
        let low = open.min(next_close) * (-0.5 * sigma * rng.next_normal().abs()).exp();
        let volume = base_volume * (0.3 * rng.next_normal() + 8.0 * ret.abs()).exp();
        close = next_close;
        if i >= keep_from {
            bars.push(Bar {
                date: date.to_string(),
                open: round_to(open, decimals),
                high: round_to(high, decimals),
                low: round_to(low, decimals),
                close: round_to(close, decimals),
                volume: volume.round() as u64,
            });
        }
    }
    bars
}

fn round_to(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::universe::{by_symbol, UNIVERSE};

    fn as_of() -> Date {
        "2024-12-31".parse().expect("date")
    }

    #[test]
    fn histories_are_deterministic_and_periods_are_tails() {
        let apple = by_symbol("AAPL").expect("listed");
        let year = history(apple, 7, as_of(), 261);
        assert_eq!(year, history(apple, 7, as_of(), 261));
        let five = history(apple, 7, as_of(), 1305);
        assert_eq!(&five[five.len() - 261..], &year[..]);
        assert_eq!(year.last().map(|b| b.date.as_str()), Some("2024-12-31"));
        assert_ne!(year, history(apple, 8, as_of(), 261), "the seed matters");
        assert_eq!(history(apple, 7, as_of(), 100_000).len(), MAX_TRADING_DAYS);
    }

    #[test]
    fn bars_are_well_formed() {
        for listing in UNIVERSE {
            for bar in history(listing, 1, as_of(), 522) {
                assert!(bar.low > 0.0, "{listing:?} {bar:?}");
                assert!(bar.low <= bar.open.min(bar.close) && bar.high >= bar.open.max(bar.close), "{bar:?}");
                assert!(bar.volume > 0);
            }
        }
    }

    #[test]
    fn generator_is_uniform_and_normal_enough() {
        let mut rng = SplitMix64::new(42);
        let n = 20_000;
        let normals: Vec<f64> = (0..n).map(|_| rng.next_normal()).collect();
        let mean = normals.iter().sum::<f64>() / n as f64;
        let var = normals.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "mean {mean} var {var}");
        assert!((0..n).all(|_| (0.0..1.0).contains(&rng.next_f64())));
    }

    #[test]
    fn the_generator_gives_the_same_sequence_as_the_former_implementation() {
        // The SplitMix64 this crate implemented before it used `rand_xoshiro`'s: seeds must
        // keep giving the same synthetic prices.
        let former = |state: &mut u64| {
            *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = *state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        assert_eq!(SplitMix64::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
        for seed in [0, 3, 42, 99, 0x5EED_FA17, u64::MAX] {
            let (mut rng, mut state) = (SplitMix64::new(seed), seed);
            for i in 0..10_000 {
                assert_eq!(rng.next_u64(), former(&mut state), "seed {seed}, value {i}");
            }
        }
    }
}
