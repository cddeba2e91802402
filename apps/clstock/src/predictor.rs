//! `StockPredictor`: scores symbols with the current model, ranks the universe, and predicts
//! batches concurrently — the seed's prediction and batch workflows.
//!
//! Spans: `calculate_score` (`symbol`, `score`) per symbol, under `get_recommendations`
//! (`top_n`) or `batch_predictions` (`batch.size`). Fan-out runs each symbol in its own task
//! through [`spindle_sdk::join_all_in_current_span`], so every task's spans keep their
//! parent. The model lives in a [`ModelSlot`] that training swaps atomically.

use std::sync::{Arc, PoisonError, RwLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Serialize;
use tokio::task::JoinError;
use tracing::field::Empty;

use crate::features::{self, FeatureError, Features};
use crate::history::Period;
use crate::model::Model;
use crate::provider::{DataError, StockDataProvider};
use crate::universe::{self, Market, UNIVERSE};

/// The model predictions use; training replaces it while requests keep the one they took.
#[derive(Debug)]
pub struct ModelSlot(RwLock<Arc<Model>>);

impl ModelSlot {
    pub fn new(model: Model) -> Self {
        Self(RwLock::new(Arc::new(model)))
    }

    pub fn current(&self) -> Arc<Model> {
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn replace(&self, model: Model) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(model);
    }
}

/// One symbol's prediction.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub symbol: String,
    pub ticker: String,
    pub name: Option<&'static str>,
    pub market: Option<Market>,
    /// Probability that the close is higher `horizon_days` trading days after `as_of`.
    pub score: f64,
    pub horizon_days: usize,
    pub model_version: String,
    /// Date of the last bar the prediction used.
    pub as_of: String,
    pub last_close: f64,
    pub features: Features,
}

/// Why a prediction failed.
#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("no data returned for {0}")]
    NoData(String),
    #[error("history of {symbol} is unusable: {source}")]
    Features { symbol: String, source: FeatureError },
    #[error("no symbol could be scored, {failed} failed")]
    NothingScored { failed: usize },
    #[error("prediction task failed: {0}")]
    Task(String),
}

impl From<JoinError> for PredictError {
    fn from(error: JoinError) -> Self {
        PredictError::Task(error.to_string())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// Predicts with the current model over data from the market-data service.
#[derive(Debug, Clone)]
pub struct StockPredictor {
    provider: StockDataProvider,
    model: Arc<ModelSlot>,
    predictions: Family<OutcomeLabels, Counter>,
}

/// History fetched per prediction: a year covers the longest feature lookback.
pub const PREDICTION_PERIOD: Period = Period::OneYear;

impl StockPredictor {
    pub fn new(
        provider: StockDataProvider,
        model: Arc<ModelSlot>,
        registry: &mut prometheus_client::registry::Registry,
    ) -> Self {
        let predictions = Family::<OutcomeLabels, Counter>::default();
        registry.register("clstock_predictions", "Symbols scored, by outcome: ok or error", predictions.clone());
        Self { provider, model, predictions }
    }

    pub fn provider(&self) -> &StockDataProvider {
        &self.provider
    }

    pub fn model(&self) -> &Arc<ModelSlot> {
        &self.model
    }

    /// Scores `symbol`: its last year of bars, their features, the model's probability of a
    /// rise.
    #[tracing::instrument(name = "calculate_score", skip_all, fields(symbol = %symbol, score = Empty, model.version = Empty), err(level = "warn"))]
    pub async fn calculate_score(&self, symbol: &str) -> Result<Prediction, PredictError> {
        let result = self.score(symbol).await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.predictions.get_or_create(&OutcomeLabels { outcome }).inc();
        result
    }

    async fn score(&self, symbol: &str) -> Result<Prediction, PredictError> {
        let bars = self.provider.get_stock_data(symbol, PREDICTION_PERIOD).await?;
        let Some(last) = bars.last() else {
            return Err(PredictError::NoData(symbol.to_owned()));
        };
        let closes: Vec<f64> = bars.iter().map(|b| b.close).collect();
        let features =
            features::latest(&closes).map_err(|source| PredictError::Features { symbol: symbol.to_owned(), source })?;
        let model = self.model.current();
        let score = model.predict(&features);
        let span = tracing::Span::current();
        span.record("score", score);
        span.record("model.version", model.version.as_str());
        let listing = universe::by_symbol(symbol);
        Ok(Prediction {
            symbol: symbol.to_owned(),
            ticker: self.provider.ticker(symbol),
            name: listing.map(|l| l.name),
            market: listing.map(|l| l.market),
            score,
            horizon_days: model.horizon_days,
            model_version: model.version.clone(),
            as_of: last.date.clone(),
            last_close: last.close,
            features,
        })
    }

    /// Scores every symbol of `symbols` concurrently, each in its own task under the current
    /// span; results in the order given.
    async fn score_all(&self, symbols: Vec<String>) -> Vec<(String, Result<Prediction, PredictError>)> {
        let tasks = symbols.iter().cloned().map(|symbol| {
            let predictor = self.clone();
            async move { predictor.calculate_score(&symbol).await }
        });
        let results = spindle_sdk::join_all_in_current_span(tasks).await;
        symbols.into_iter().zip(results.into_iter().map(|r| r.map_err(PredictError::from).and_then(|r| r))).collect()
    }

    /// Ranks the universe by score and returns the best `top_n`, with the symbols that could
    /// not be scored (their `calculate_score` spans hold the errors). Fails only when no
    /// symbol could be scored.
    #[tracing::instrument(
        name = "get_recommendations",
        skip_all,
        fields(top_n = top_n, universe.size = UNIVERSE.len(), recommendation_count = Empty, symbols.failed = Empty),
        err
    )]
    pub async fn get_recommendations(&self, top_n: usize) -> Result<Recommendations, PredictError> {
        let symbols = UNIVERSE.iter().map(|l| l.symbol.to_owned()).collect();
        let mut scored = Vec::new();
        let mut skipped = Vec::new();
        for (symbol, result) in self.score_all(symbols).await {
            match result {
                Ok(prediction) => scored.push(prediction),
                Err(e) => {
                    tracing::warn!(symbol = %symbol, reason = %e, "symbol skipped");
                    skipped.push(symbol);
                }
            }
        }
        let span = tracing::Span::current();
        span.record("symbols.failed", skipped.len());
        if scored.is_empty() {
            return Err(PredictError::NothingScored { failed: skipped.len() });
        }
        scored.sort_by(|a, b| b.score.total_cmp(&a.score));
        scored.truncate(top_n);
        span.record("recommendation_count", scored.len());
        Ok(Recommendations { top_n, recommendations: scored, skipped })
    }

    /// Predicts `symbols` concurrently under one `batch_predictions` span with a
    /// `calculate_score` child per symbol.
    #[tracing::instrument(
        name = "batch_predictions",
        skip_all,
        fields(batch.size = symbols.len(), batch.succeeded = Empty, batch.failed = Empty)
    )]
    pub async fn predict_batch(&self, symbols: Vec<String>) -> Vec<(String, Result<Prediction, PredictError>)> {
        let results = self.score_all(symbols).await;
        let failed = results.iter().filter(|(_, r)| r.is_err()).count();
        let span = tracing::Span::current();
        span.record("batch.succeeded", results.len() - failed);
        span.record("batch.failed", failed);
        results
    }
}

/// What `get_recommendations` returns.
#[derive(Debug, Clone, Serialize)]
pub struct Recommendations {
    pub top_n: usize,
    pub recommendations: Vec<Prediction>,
    /// Symbols that could not be scored this time.
    pub skipped: Vec<String>,
}
