//! From price histories to a validated model: labelled samples, a time-ordered train /
//! validation split, the fit, and held-out metrics against the naive baseline.
//!
//! Pure and synchronous; [`crate::jobs`] runs these stages as traced background work.

use crate::features::{self, FeatureError};
use crate::model::{self, FitOptions, Fitted, Metrics, ModelError, Vector};

/// Samples split in time: every validation sample lies after every training sample of the
/// same symbol, with a gap of the horizon so no training label peeks into validation days.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub train_x: Vec<Vector>,
    pub train_rose: Vec<bool>,
    pub valid_x: Vec<Vector>,
    pub valid_rose: Vec<bool>,
}

impl Dataset {
    /// Share of rises among the training labels.
    pub fn train_rise_rate(&self) -> f64 {
        let rises = self.train_rose.iter().filter(|r| **r).count();
        rises as f64 / self.train_rose.len().max(1) as f64
    }
}

/// Why a training stage failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainingError {
    #[error("history of {symbol} is unusable: {source}")]
    Features { symbol: String, source: FeatureError },
    #[error("only {train} training and {validation} validation samples, too few to train")]
    TooFewSamples { train: usize, validation: usize },
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Fewest samples on either side of the split that training accepts.
pub const MIN_SAMPLES: usize = 200;

/// Labels every day of every history with whether the close `horizon` days later is higher,
/// and splits each history at `validation_share` from its end.
pub fn build_dataset(
    histories: &[(String, Vec<f64>)],
    horizon: usize,
    validation_share: f64,
) -> Result<Dataset, TrainingError> {
    let mut data = Dataset::default();
    for (symbol, closes) in histories {
        let rows =
            features::series(closes).map_err(|source| TrainingError::Features { symbol: symbol.clone(), source })?;
        let first_day = features::LOOKBACK - 1;
        // Day where validation starts; training labels must resolve before it.
        let split = closes.len().saturating_sub(((closes.len() as f64) * validation_share).round() as usize);
        for (i, row) in rows.iter().enumerate() {
            let day = first_day + i;
            let Some(future) = closes.get(day + horizon) else { break };
            let rose = *future > closes[day];
            if day >= split {
                data.valid_x.push(row.to_vector());
                data.valid_rose.push(rose);
            } else if day + horizon < split {
                data.train_x.push(row.to_vector());
                data.train_rose.push(rose);
            }
        }
    }
    if data.train_x.len() < MIN_SAMPLES || data.valid_x.len() < MIN_SAMPLES {
        return Err(TrainingError::TooFewSamples { train: data.train_x.len(), validation: data.valid_x.len() });
    }
    Ok(data)
}

/// Fits on the training part of `data`.
pub fn fit(data: &Dataset, horizon: usize) -> Result<Fitted, TrainingError> {
    Ok(model::fit(&data.train_x, &data.train_rose, horizon, FitOptions::default())?)
}

/// Scores `fitted` on the validation part of `data`.
pub fn validate(fitted: &Fitted, data: &Dataset) -> Metrics {
    model::evaluate(&fitted.model, &data.valid_x, &data.valid_rose, data.train_rise_rate())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_leaves_a_gap_of_the_horizon() {
        // A steady climb: every label is a rise.
        let closes: Vec<f64> = (0..1000).map(|i| 100.0 + f64::from(i)).collect();
        let data = build_dataset(&[("UP".into(), closes)], 10, 0.25).expect("enough samples");
        // Days 60..=989 have a label; validation starts at day 750; training days end at 739.
        assert_eq!(data.valid_x.len(), 989 - 750 + 1);
        assert_eq!(data.train_x.len(), 739 - 60 + 1);
        assert_eq!(data.train_rise_rate(), 1.0);
    }

    #[test]
    fn too_little_history_is_an_error() {
        let closes: Vec<f64> = (0..100).map(f64::from).map(|i| i + 1.0).collect();
        let error = build_dataset(&[("X".into(), closes)], 10, 0.2).expect_err("too short");
        assert!(matches!(error, TrainingError::TooFewSamples { .. }), "{error}");
        let error = build_dataset(&[("BAD".into(), vec![1.0, -1.0])], 10, 0.2).expect_err("bad price");
        assert_eq!(error.to_string(), "history of BAD is unusable: close 1 is -1, expected a positive finite price");
    }
}
