//! Model features from a daily close-price history: returns, momentum, volatility and RSI.
//!
//! Every feature at day `t` uses closes up to and including `t` only, so training never
//! sees the future. Pure functions; they fail (never panic) on short or invalid input.

use serde::Serialize;

/// Closes one feature vector needs: the 60-day momentum looks 60 days back.
pub const LOOKBACK: usize = 61;
/// Feature names in vector order, as saved in the model file.
pub const FEATURE_NAMES: [&str; FEATURE_COUNT] =
    ["return_1d", "return_5d", "momentum_20d", "momentum_60d", "volatility_20d", "rsi_14"];
pub const FEATURE_COUNT: usize = 6;

/// The features of one day.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Features {
    /// `close[t] / close[t-1] - 1`.
    pub return_1d: f64,
    /// `close[t] / close[t-5] - 1`.
    pub return_5d: f64,
    /// `close[t] / close[t-20] - 1`.
    pub momentum_20d: f64,
    /// `close[t] / close[t-60] - 1`.
    pub momentum_60d: f64,
    /// Sample standard deviation of the 20 daily returns ending at `t`.
    pub volatility_20d: f64,
    /// 14-day relative strength index, 0 to 100.
    pub rsi_14: f64,
}

impl Features {
    pub fn to_vector(&self) -> [f64; FEATURE_COUNT] {
        [self.return_1d, self.return_5d, self.momentum_20d, self.momentum_60d, self.volatility_20d, self.rsi_14]
    }
}

/// Why features could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FeatureError {
    #[error("need at least {need} closes, got {have}")]
    TooShort { have: usize, need: usize },
    #[error("close {index} is {value}, expected a positive finite price")]
    InvalidPrice { index: usize, value: f64 },
}

/// The features of the last day of `closes` (oldest first).
pub fn latest(closes: &[f64]) -> Result<Features, FeatureError> {
    if closes.len() < LOOKBACK {
        return Err(FeatureError::TooShort { have: closes.len(), need: LOOKBACK });
    }
    validate(closes)?;
    Ok(at(closes, closes.len() - 1))
}

/// The features of every day that has [`LOOKBACK`] closes behind it: element `i` belongs to
/// day `i + LOOKBACK - 1`.
pub fn series(closes: &[f64]) -> Result<Vec<Features>, FeatureError> {
    validate(closes)?;
    Ok((LOOKBACK.saturating_sub(1)..closes.len()).map(|t| at(closes, t)).collect())
}

fn validate(closes: &[f64]) -> Result<(), FeatureError> {
    match closes.iter().position(|c| !(c.is_finite() && *c > 0.0)) {
        Some(index) => Err(FeatureError::InvalidPrice { index, value: closes[index] }),
        None => Ok(()),
    }
}

/// Features at `t`; the caller guarantees `t >= LOOKBACK - 1` and valid prices.
fn at(closes: &[f64], t: usize) -> Features {
    let change = |days: usize| closes[t] / closes[t - days] - 1.0;
    Features {
        return_1d: change(1),
        return_5d: change(5),
        momentum_20d: change(20),
        momentum_60d: change(60),
        volatility_20d: volatility(&closes[t - 20..=t]),
        rsi_14: rsi(&closes[t - 14..=t]),
    }
}

/// Sample standard deviation of the simple returns between consecutive `closes`.
pub fn volatility(closes: &[f64]) -> f64 {
    let returns: Vec<f64> = closes.windows(2).map(|w| w[1] / w[0] - 1.0).collect();
    if returns.len() < 2 {
        return 0.0;
    }
    let n = returns.len() as f64;
    let mean = returns.iter().sum::<f64>() / n;
    (returns.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
}

/// RSI over the changes between consecutive `closes`, with simple averages of gains and
/// losses (Cutler's form: it depends on the window only, unlike Wilder's smoothing).
/// 100 when prices only rose, 0 when they only fell, 50 when they never moved.
pub fn rsi(closes: &[f64]) -> f64 {
    let (gains, losses) =
        closes.windows(2).map(|w| w[1] - w[0]).fold(
            (0.0, 0.0),
            |(g, l), d| {
                if d > 0.0 {
                    (g + d, l)
                } else {
                    (g, l - d)
                }
            },
        );
    if gains + losses == 0.0 {
        50.0
    } else {
        // 100 - 100 / (1 + RS) with RS = gains / losses, written to need no division by zero.
        100.0 * gains / (gains + losses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn a_steady_climb_by_hand() {
        // 100, 101, ..., 160: 61 closes.
        let closes: Vec<f64> = (100..=160).map(f64::from).collect();
        let f = latest(&closes).expect("enough closes");
        assert!(close(f.return_1d, 160.0 / 159.0 - 1.0));
        assert!(close(f.return_5d, 160.0 / 155.0 - 1.0));
        assert!(close(f.momentum_20d, 160.0 / 140.0 - 1.0));
        assert!(close(f.momentum_60d, 0.6));
        assert!(close(f.rsi_14, 100.0), "only gains: {}", f.rsi_14);
        assert_eq!(f.to_vector()[3], f.momentum_60d);
    }

    #[test]
    fn rsi_by_hand() {
        // Changes +2, -1 seven times: gains 14, losses 7, RS = 2, RSI = 100 - 100/3.
        let mut closes = vec![50.0];
        for i in 0..14 {
            let last = closes[closes.len() - 1];
            closes.push(if i % 2 == 0 { last + 2.0 } else { last - 1.0 });
        }
        assert!(close(rsi(&closes), 100.0 - 100.0 / 3.0));
        assert!(close(rsi(&[5.0, 4.0, 3.0]), 0.0));
        assert!(close(rsi(&[5.0, 5.0, 5.0]), 50.0));
    }

    #[test]
    fn volatility_by_hand() {
        // Returns alternate +10% and -10%: mean 0, sample variance 20 * 0.01 / 19.
        let mut closes = vec![100.0];
        for i in 0..20 {
            let last = closes[closes.len() - 1];
            closes.push(last * if i % 2 == 0 { 1.1 } else { 0.9 });
        }
        assert!(close(volatility(&closes), (0.2_f64 / 19.0).sqrt()));
        assert!(close(volatility(&[1.0, 2.0]), 0.0), "one return has no spread");
    }

    #[test]
    fn series_aligns_with_latest_and_sees_no_future() {
        let closes: Vec<f64> = (0..80).map(|i| 100.0 + (f64::from(i) * 0.7).sin() * 5.0).collect();
        let all = series(&closes).expect("valid");
        assert_eq!(all.len(), 80 - LOOKBACK + 1);
        assert_eq!(all[0], latest(&closes[..LOOKBACK]).expect("enough"));
        assert_eq!(all[all.len() - 1], latest(&closes).expect("enough"));
    }

    #[test]
    fn bad_input_is_an_error() {
        assert_eq!(latest(&[1.0; 10]), Err(FeatureError::TooShort { have: 10, need: LOOKBACK }));
        let mut closes = vec![10.0; LOOKBACK];
        closes[7] = 0.0;
        assert_eq!(latest(&closes), Err(FeatureError::InvalidPrice { index: 7, value: 0.0 }));
        closes[7] = f64::NAN;
        assert!(matches!(series(&closes), Err(FeatureError::InvalidPrice { index: 7, .. })));
    }
}
