//! The prediction model: logistic regression on standardised [`features`](crate::features),
//! giving the probability that a stock closes higher `horizon_days` trading days later.
//!
//! Fitting is Newton's method (iteratively reweighted least squares) with an L2 penalty,
//! solving the small normal equations by Gaussian elimination; no ML library. The model is a
//! JSON file so a restart, or another instance, predicts with the same weights.
//!
//! Pure computation except [`Model::load`] and [`Model::save`], which do blocking file IO.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::features::{Features, FEATURE_COUNT, FEATURE_NAMES};

/// A feature vector, in [`FEATURE_NAMES`] order.
pub type Vector = [f64; FEATURE_COUNT];

/// How a model did on data it was not fitted on, next to the constant-rate baseline.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub samples: usize,
    /// Share of samples whose direction the model got right (threshold 0.5).
    pub accuracy: f64,
    /// Mean negative log-likelihood; lower is better.
    pub log_loss: f64,
    /// Accuracy of always predicting the training set's majority direction.
    pub baseline_accuracy: f64,
    /// Log loss of always predicting the training set's rate of rises.
    pub baseline_log_loss: f64,
}

impl Metrics {
    /// Whether the model is better than the baseline at what it outputs, a probability.
    pub fn beats_baseline(&self) -> bool {
        self.log_loss < self.baseline_log_loss
    }
}

/// A fitted (or the built-in) model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// `builtin`, or the id of the training job that produced it.
    pub version: String,
    /// Seconds since the Unix epoch; 0 for the built-in model.
    pub trained_at: u64,
    /// Trading days ahead the model predicts.
    pub horizon_days: usize,
    pub features: Vec<String>,
    /// Per-feature mean and standard deviation of the training data.
    pub means: Vec<f64>,
    pub scales: Vec<f64>,
    pub weights: Vec<f64>,
    pub bias: f64,
    pub validation: Option<Metrics>,
}

/// A model file that cannot be used, or a fit that failed.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read or write model file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("model file {path} is not valid model json: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("model {version} is invalid: {reason}")]
    Invalid { version: String, reason: String },
    #[error("cannot fit a model: {0}")]
    Fit(String),
}

/// The horizon the built-in model and training default to.
pub const DEFAULT_HORIZON_DAYS: usize = 10;

impl Model {
    /// A hand-set model used until one is trained: it favours medium-term momentum, as the
    /// markets ClStock watches tend to show. Its scales are typical spreads of each feature.
    pub fn builtin() -> Model {
        Model {
            version: "builtin".to_owned(),
            trained_at: 0,
            horizon_days: DEFAULT_HORIZON_DAYS,
            features: FEATURE_NAMES.iter().map(|s| (*s).to_owned()).collect(),
            means: vec![0.0, 0.0, 0.005, 0.015, 0.018, 50.0],
            scales: vec![0.018, 0.04, 0.08, 0.14, 0.006, 12.0],
            weights: vec![0.0, 0.05, 0.25, 0.15, -0.05, 0.0],
            bias: 0.05,
            validation: None,
        }
    }

    /// The probability of a rise over the horizon.
    pub fn predict(&self, features: &Features) -> f64 {
        self.predict_vector(&features.to_vector())
    }

    pub fn predict_vector(&self, x: &Vector) -> f64 {
        let z = self.bias
            + x.iter()
                .zip(&self.means)
                .zip(&self.scales)
                .zip(&self.weights)
                .map(|(((x, m), s), w)| w * (x - m) / s)
                .sum::<f64>();
        sigmoid(z)
    }

    /// Checks that the model fits this build's features and holds only finite numbers.
    pub fn validate(&self) -> Result<(), ModelError> {
        let invalid = |reason: String| ModelError::Invalid { version: self.version.clone(), reason };
        if self.features != FEATURE_NAMES {
            return Err(invalid(format!("features {:?}, expected {FEATURE_NAMES:?}", self.features)));
        }
        for (name, values) in [("means", &self.means), ("scales", &self.scales), ("weights", &self.weights)] {
            if values.len() != FEATURE_COUNT {
                return Err(invalid(format!("{name} has {} values, expected {FEATURE_COUNT}", values.len())));
            }
            if values.iter().any(|v| !v.is_finite()) {
                return Err(invalid(format!("{name} holds a non-finite value")));
            }
        }
        if self.scales.iter().any(|s| *s <= 0.0) {
            return Err(invalid("scales must be positive".to_owned()));
        }
        if !self.bias.is_finite() || self.horizon_days == 0 {
            return Err(invalid("bias must be finite and horizon_days positive".to_owned()));
        }
        Ok(())
    }

    /// Reads and validates a model file.
    pub fn load(path: &Path) -> Result<Model, ModelError> {
        let text = std::fs::read(path).map_err(|source| ModelError::Io { path: path.to_owned(), source })?;
        let model: Model =
            serde_json::from_slice(&text).map_err(|source| ModelError::Json { path: path.to_owned(), source })?;
        model.validate()?;
        Ok(model)
    }

    /// Writes the model atomically (a temporary file renamed over `path`), so a reader never
    /// sees half a model.
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        let io = |source| ModelError::Io { path: path.to_owned(), source };
        let json =
            serde_json::to_vec_pretty(self).map_err(|source| ModelError::Json { path: path.to_owned(), source })?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, json).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// Settings of [`fit`].
#[derive(Debug, Clone, Copy)]
pub struct FitOptions {
    /// L2 penalty on the weights (not the bias), in units of the standardised features.
    pub ridge: f64,
    pub max_iterations: usize,
    /// Stop when no parameter moves more than this.
    pub tolerance: f64,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self { ridge: 1.0, max_iterations: 50, tolerance: 1e-8 }
    }
}

/// What [`fit`] returns: the weights (with version and metrics still to be filled in) and how
/// the optimisation went.
#[derive(Debug, Clone)]
pub struct Fitted {
    pub model: Model,
    pub iterations: usize,
    pub converged: bool,
    pub train_log_loss: f64,
}

/// Fits a logistic regression of `rose` on `x` by Newton's method with an L2 penalty.
pub fn fit(x: &[Vector], rose: &[bool], horizon_days: usize, options: FitOptions) -> Result<Fitted, ModelError> {
    if x.len() != rose.len() {
        return Err(ModelError::Fit(format!("{} feature rows but {} labels", x.len(), rose.len())));
    }
    if x.len() < 2 * (FEATURE_COUNT + 1) {
        return Err(ModelError::Fit(format!("{} samples are too few", x.len())));
    }
    if x.iter().flatten().any(|v| !v.is_finite()) {
        return Err(ModelError::Fit("a feature value is not finite".to_owned()));
    }
    let (means, scales) = standardisation(x);
    // Design rows: [1, standardised features...].
    let rows: Vec<[f64; FEATURE_COUNT + 1]> = x
        .iter()
        .map(|v| {
            let mut row = [1.0; FEATURE_COUNT + 1];
            for j in 0..FEATURE_COUNT {
                row[j + 1] = (v[j] - means[j]) / scales[j];
            }
            row
        })
        .collect();
    const P: usize = FEATURE_COUNT + 1;
    let mut beta = [0.0; P];
    let (mut iterations, mut converged) = (0, false);
    while iterations < options.max_iterations && !converged {
        iterations += 1;
        let mut hessian = [[0.0; P]; P];
        let mut gradient = [0.0; P];
        for (row, &y) in rows.iter().zip(rose) {
            let p = sigmoid(dot(row, &beta));
            let residual = p - f64::from(u8::from(y));
            let weight = (p * (1.0 - p)).max(1e-12);
            for i in 0..P {
                gradient[i] += residual * row[i];
                for j in 0..P {
                    hessian[i][j] += weight * row[i] * row[j];
                }
            }
        }
        for i in 1..P {
            gradient[i] += options.ridge * beta[i];
            hessian[i][i] += options.ridge;
        }
        let step =
            solve(hessian, gradient).ok_or_else(|| ModelError::Fit("the normal equations are singular".to_owned()))?;
        for i in 0..P {
            beta[i] -= step[i];
        }
        converged = step.iter().all(|s| s.abs() < options.tolerance);
    }
    if beta.iter().any(|b| !b.is_finite()) {
        return Err(ModelError::Fit("the optimisation diverged".to_owned()));
    }
    let model = Model {
        version: String::new(),
        trained_at: 0,
        horizon_days,
        features: FEATURE_NAMES.iter().map(|s| (*s).to_owned()).collect(),
        means: means.to_vec(),
        scales: scales.to_vec(),
        weights: beta[1..].to_vec(),
        bias: beta[0],
        validation: None,
    };
    let train_log_loss = log_loss(x.iter().map(|v| model.predict_vector(v)), rose);
    Ok(Fitted { model, iterations, converged, train_log_loss })
}

/// Per-feature mean and standard deviation (1 for a constant feature, so it drops out).
fn standardisation(x: &[Vector]) -> (Vector, Vector) {
    let n = x.len() as f64;
    let mut means = [0.0; FEATURE_COUNT];
    let mut scales = [0.0; FEATURE_COUNT];
    for j in 0..FEATURE_COUNT {
        means[j] = x.iter().map(|v| v[j]).sum::<f64>() / n;
        let var = x.iter().map(|v| (v[j] - means[j]).powi(2)).sum::<f64>() / n;
        scales[j] = if var > 0.0 { var.sqrt() } else { 1.0 };
    }
    (means, scales)
}

fn dot<const N: usize>(a: &[f64; N], b: &[f64; N]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Solves `a · x = b` by Gaussian elimination with partial pivoting; `None` if singular.
fn solve<const N: usize>(mut a: [[f64; N]; N], mut b: [f64; N]) -> Option<[f64; N]> {
    for col in 0..N {
        let pivot = (col..N).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let (pivot_row, pivot_b) = (a[col], b[col]);
        for row in col + 1..N {
            let factor = a[row][col] / pivot_row[col];
            for (value, above) in a[row][col..].iter_mut().zip(&pivot_row[col..]) {
                *value -= factor * above;
            }
            b[row] -= factor * pivot_b;
        }
    }
    let mut x = [0.0; N];
    for row in (0..N).rev() {
        let tail: f64 = (row + 1..N).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - tail) / a[row][row];
    }
    Some(x)
}

/// Mean negative log-likelihood of probabilities `p` for outcomes `rose`.
pub fn log_loss(p: impl IntoIterator<Item = f64>, rose: &[bool]) -> f64 {
    let total: f64 = p
        .into_iter()
        .zip(rose)
        .map(|(p, &y)| {
            let p = p.clamp(1e-12, 1.0 - 1e-12);
            if y {
                -p.ln()
            } else {
                -(1.0 - p).ln()
            }
        })
        .sum();
    total / rose.len().max(1) as f64
}

/// Scores `model` on held-out `x`/`rose` against the baseline that always predicts
/// `train_rise_rate`, the share of rises in the training data.
pub fn evaluate(model: &Model, x: &[Vector], rose: &[bool], train_rise_rate: f64) -> Metrics {
    let p: Vec<f64> = x.iter().map(|v| model.predict_vector(v)).collect();
    let n = rose.len().max(1) as f64;
    let hits = p.iter().zip(rose).filter(|(p, &y)| (**p >= 0.5) == y).count();
    let majority_rises = train_rise_rate >= 0.5;
    let baseline_hits = rose.iter().filter(|&&y| y == majority_rises).count();
    Metrics {
        samples: rose.len(),
        accuracy: hits as f64 / n,
        log_loss: log_loss(p, rose),
        baseline_accuracy: baseline_hits as f64 / n,
        baseline_log_loss: log_loss(std::iter::repeat_n(train_rise_rate, rose.len()), rose),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::SplitMix64;

    #[test]
    fn solve_by_hand() {
        // 2x + y = 5, x + 3y = 10  =>  x = 1, y = 3
        let x = solve([[2.0, 1.0], [1.0, 3.0]], [5.0, 10.0]).expect("regular");
        assert!((x[0] - 1.0).abs() < 1e-12 && (x[1] - 3.0).abs() < 1e-12, "{x:?}");
        assert!(solve([[1.0, 2.0], [2.0, 4.0]], [1.0, 2.0]).is_none());
    }

    #[test]
    fn fit_recovers_a_known_logistic_model() {
        // y ~ Bernoulli(sigmoid(0.3 + 2 * x0 - 1 * x1)) with standard-normal features.
        let mut rng = SplitMix64::new(3);
        let mut x = Vec::new();
        let mut rose = Vec::new();
        for _ in 0..20_000 {
            let mut v = [0.0; FEATURE_COUNT];
            for value in &mut v {
                *value = rng.next_normal();
            }
            rose.push(rng.next_f64() < sigmoid(0.3 + 2.0 * v[0] - v[1]));
            x.push(v);
        }
        let options = FitOptions { ridge: 1e-6, ..FitOptions::default() };
        let fitted = fit(&x, &rose, 5, options).expect("fits");
        assert!(fitted.converged, "{fitted:?}");
        let m = &fitted.model;
        // Back to raw feature units: w_raw = w / scale.
        let raw: Vec<f64> = m.weights.iter().zip(&m.scales).map(|(w, s)| w / s).collect();
        assert!((raw[0] - 2.0).abs() < 0.1 && (raw[1] + 1.0).abs() < 0.1, "{raw:?}");
        assert!(raw[2..].iter().all(|w| w.abs() < 0.1), "{raw:?}");
        m.validate().expect("a fitted model is valid");
    }

    #[test]
    fn fit_rejects_bad_input() {
        let x = vec![[0.0; FEATURE_COUNT]; 3];
        assert!(matches!(fit(&x, &[true, false, true], 5, FitOptions::default()), Err(ModelError::Fit(_))));
        assert!(matches!(fit(&x, &[true], 5, FitOptions::default()), Err(ModelError::Fit(_))));
    }

    #[test]
    fn baseline_metrics_by_hand() {
        let model = Model::builtin();
        let x = vec![[0.0; FEATURE_COUNT]; 4];
        let m = evaluate(&model, &x, &[true, true, true, false], 0.75);
        assert_eq!(m.baseline_accuracy, 0.75);
        let expected = -(3.0 * 0.75_f64.ln() + 0.25_f64.ln()) / 4.0;
        assert!((m.baseline_log_loss - expected).abs() < 1e-12);
    }

    #[test]
    fn saved_models_load_and_broken_ones_do_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested/model.json");
        let model = Model { version: "train-7".into(), ..Model::builtin() };
        model.save(&path).expect("saves");
        assert_eq!(Model::load(&path).expect("loads"), model);

        let wrong = Model { weights: vec![1.0], ..Model::builtin() };
        wrong.save(&path).expect("saves");
        let error = Model::load(&path).expect_err("three weights short");
        assert!(error.to_string().contains("weights has 1 values"), "{error}");
        std::fs::write(&path, "{").expect("write");
        assert!(matches!(Model::load(&path), Err(ModelError::Json { .. })));
        assert!(matches!(Model::load(&dir.path().join("missing.json")), Err(ModelError::Io { .. })));
    }
}
