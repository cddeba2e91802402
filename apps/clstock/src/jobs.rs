//! Training jobs: `POST /train` starts one in a background task that stays in the request's
//! trace, `GET /train/{id}` reports it.
//!
//! A job is one `train_model` span (child of the `POST /train` server span, which ends with
//! the response while the job goes on) with
//! a child span per stage, in order: `load_data` (a `get_stock_data` per symbol, so the
//! market-data service appears in the trace), `build_features`, `fit_model`,
//! `validate_model` (held-out metrics as attributes) and `save_model`. CPU-bound stages run
//! on the blocking pool. A model that does not beat the naive baseline on held-out data is
//! rejected; an accepted one is saved as JSON and replaces the model predictions use.
//! One job runs at a time.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tracing::field::Empty;
use tracing::instrument::WithSubscriber;
use tracing::Instrument;

use crate::history::Period;
use crate::model::{Fitted, Metrics, Model, ModelError};
use crate::predictor::ModelSlot;
use crate::provider::StockDataProvider;
use crate::training::{self, Dataset, TrainingError};
use crate::universe::UNIVERSE;

/// What a client may set when starting a job.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainRequest {
    /// History per symbol to learn from.
    #[serde(default = "default_period")]
    pub period: Period,
    /// Trading days ahead the model predicts (1 to 60).
    #[serde(default = "default_horizon")]
    pub horizon_days: usize,
}

fn default_period() -> Period {
    Period::FiveYears
}

fn default_horizon() -> usize {
    crate::model::DEFAULT_HORIZON_DAYS
}

impl Default for TrainRequest {
    fn default() -> Self {
        Self { period: default_period(), horizon_days: default_horizon() }
    }
}

/// Share of each history held out for validation.
pub const VALIDATION_SHARE: f64 = 0.2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Running,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    LoadData,
    BuildFeatures,
    FitModel,
    ValidateModel,
    SaveModel,
}

/// A job as `GET /train/{id}` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobRecord {
    pub id: String,
    pub status: JobStatus,
    /// The stage running now, or the last one reached.
    pub stage: Option<Stage>,
    pub period: Period,
    pub horizon_days: usize,
    /// Seconds since the Unix epoch.
    pub started_at: u64,
    pub finished_at: Option<u64>,
    /// The trace that shows the job, for Spindle.
    pub trace_id: Option<String>,
    pub symbols_loaded: Option<usize>,
    pub validation: Option<Metrics>,
    pub model_version: Option<String>,
    pub error: Option<String>,
}

/// Why a job could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("training job {0} is still running")]
    AlreadyRunning(String),
    #[error("horizon_days must be between 1 and 60, got {0}")]
    InvalidHorizon(usize),
}

/// Why a job failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("only {loaded} of {requested} symbols loaded, need {needed}")]
    TooFewSymbols { loaded: usize, requested: usize, needed: usize },
    #[error(transparent)]
    Training(#[from] TrainingError),
    #[error("model rejected: held-out log loss {log_loss:.4} does not beat the baseline's {baseline:.4}")]
    Rejected { log_loss: f64, baseline: f64 },
    #[error("cannot save the model: {0}")]
    Save(#[from] ModelError),
    #[error("training task failed: {0}")]
    Task(String),
}

impl From<tokio::task::JoinError> for TrainError {
    fn from(error: tokio::task::JoinError) -> Self {
        TrainError::Task(error.to_string())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

/// Jobs kept for `GET /train/{id}`; older ones are forgotten.
const KEPT_JOBS: usize = 100;

/// Starts and tracks training jobs.
#[derive(Debug)]
pub struct Trainer {
    provider: StockDataProvider,
    model: Arc<ModelSlot>,
    model_path: PathBuf,
    next_id: AtomicU64,
    jobs: Mutex<BTreeMap<u64, JobRecord>>,
    finished: Family<StatusLabels, Counter>,
    accuracy: Gauge<f64, AtomicU64>,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Trainer {
    pub fn new(
        provider: StockDataProvider,
        model: Arc<ModelSlot>,
        model_path: PathBuf,
        registry: &mut Registry,
    ) -> Arc<Self> {
        let finished = Family::<StatusLabels, Counter>::default();
        let accuracy = Gauge::<f64, AtomicU64>::default();
        registry.register("clstock_training_jobs", "Training jobs finished, by status", finished.clone());
        registry.register(
            "clstock_model_validation_accuracy",
            "Held-out accuracy of the model in use (0 for the built-in model)",
            accuracy.clone(),
        );
        if let Some(metrics) = model.current().validation {
            accuracy.set(metrics.accuracy);
        }
        Arc::new(Self {
            provider,
            model,
            model_path,
            next_id: AtomicU64::new(1),
            jobs: Mutex::new(BTreeMap::new()),
            finished,
            accuracy,
        })
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, JobRecord>> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, number: u64, change: impl FnOnce(&mut JobRecord)) {
        if let Some(record) = self.jobs().get_mut(&number) {
            change(record);
        }
    }

    /// The job `id` (`train-N`), if it is still remembered.
    pub fn get(&self, id: &str) -> Option<JobRecord> {
        let number = id.strip_prefix("train-")?.parse().ok()?;
        self.jobs().get(&number).cloned()
    }

    /// Starts a job in a background task under the current span and returns its record.
    pub fn start(self: &Arc<Self>, request: TrainRequest) -> Result<JobRecord, StartError> {
        if !(1..=60).contains(&request.horizon_days) {
            return Err(StartError::InvalidHorizon(request.horizon_days));
        }
        let (number, record) = {
            let mut jobs = self.jobs();
            if let Some(running) = jobs.values().find(|j| j.status == JobStatus::Running) {
                return Err(StartError::AlreadyRunning(running.id.clone()));
            }
            let number = self.next_id.fetch_add(1, Ordering::Relaxed);
            let record = JobRecord {
                id: format!("train-{number}"),
                status: JobStatus::Running,
                stage: None,
                period: request.period,
                horizon_days: request.horizon_days,
                started_at: now(),
                finished_at: None,
                trace_id: spindle_sdk::current_trace_id(),
                symbols_loaded: None,
                validation: None,
                model_version: None,
                error: None,
            };
            jobs.insert(number, record.clone());
            while jobs.len() > KEPT_JOBS {
                jobs.pop_first();
            }
            (number, record)
        };
        // The job's span has the request's span as its OpenTelemetry parent but not as its
        // `tracing` parent: a `tracing` child keeps its parent open until it closes, which
        // would stretch the request's span to the end of the job.
        let span = tracing::info_span!(
            parent: None,
            "train_model",
            job.id = %record.id,
            period = %request.period,
            horizon_days = request.horizon_days,
            model.version = Empty,
        );
        spindle_sdk::propagation::set_remote_parent(&span, spindle_sdk::current_context());
        let trainer = Arc::clone(self);
        let id = record.id.clone();
        let job = async move {
            let result = trainer.train(number, id, request).await;
            if let Err(error) = &result {
                spindle_sdk::record_error(&tracing::Span::current(), error);
                tracing::error!(reason = %error, "training failed");
            }
            let status = if result.is_ok() { "succeeded" } else { "failed" };
            trainer.finished.get_or_create(&StatusLabels { status }).inc();
            trainer.update(number, |r| {
                r.finished_at = Some(now());
                match result {
                    Ok(model) => {
                        r.status = JobStatus::Succeeded;
                        r.model_version = Some(model.version.clone());
                    }
                    Err(e) => {
                        r.status = JobStatus::Failed;
                        r.error = Some(e.to_string());
                    }
                }
            });
        };
        tokio::spawn(job.instrument(span).with_current_subscriber());
        Ok(record)
    }

    /// The job itself, run inside its `train_model` span.
    async fn train(&self, number: u64, id: String, request: TrainRequest) -> Result<Model, TrainError> {
        self.update(number, |r| r.stage = Some(Stage::LoadData));
        let histories = self.load_data(request.period).await?;
        self.update(number, |r| {
            r.stage = Some(Stage::BuildFeatures);
            r.symbols_loaded = Some(histories.len());
        });
        let data = Arc::new(build_features(histories, request.horizon_days).await?);
        self.update(number, |r| r.stage = Some(Stage::FitModel));
        let fitted = fit_model(Arc::clone(&data), request.horizon_days).await?;
        self.update(number, |r| r.stage = Some(Stage::ValidateModel));
        let metrics = validate_model(&fitted, &data)?;
        self.update(number, |r| {
            r.stage = Some(Stage::SaveModel);
            r.validation = Some(metrics);
        });
        let model = Model { version: id, trained_at: now(), validation: Some(metrics), ..fitted.model };
        self.save_model(model.clone()).await?;
        tracing::Span::current().record("model.version", model.version.as_str());
        self.accuracy.set(metrics.accuracy);
        self.model.replace(model.clone());
        tracing::info!(version = %model.version, accuracy = metrics.accuracy, "model trained and in use");
        Ok(model)
    }

    /// Fetches every symbol's history concurrently; symbols that fail or come back empty are
    /// skipped, and at least half of the universe must load.
    #[tracing::instrument(
        name = "load_data",
        skip_all,
        fields(period = %period, symbols.requested = UNIVERSE.len(), symbols.loaded = Empty, symbols.failed = Empty),
        err(level = "warn")
    )]
    async fn load_data(&self, period: Period) -> Result<Vec<(String, Vec<f64>)>, TrainError> {
        let fetches = UNIVERSE.iter().map(|listing| {
            let provider = self.provider.clone();
            async move { provider.get_stock_data(listing.symbol, period).await }
        });
        let results = spindle_sdk::join_all_in_current_span(fetches).await;
        let mut histories = Vec::new();
        for (listing, result) in UNIVERSE.iter().zip(results) {
            match result {
                Ok(Ok(bars)) if !bars.is_empty() => {
                    histories.push((listing.symbol.to_owned(), bars.iter().map(|b| b.close).collect()));
                }
                Ok(Ok(_)) => tracing::warn!(symbol = listing.symbol, reason = "no data", "symbol skipped"),
                Ok(Err(e)) => tracing::warn!(symbol = listing.symbol, reason = %e, "symbol skipped"),
                Err(e) => tracing::warn!(symbol = listing.symbol, reason = %e, "symbol skipped"),
            }
        }
        let span = tracing::Span::current();
        span.record("symbols.loaded", histories.len());
        span.record("symbols.failed", UNIVERSE.len() - histories.len());
        let needed = UNIVERSE.len().div_ceil(2);
        if histories.len() < needed {
            return Err(TrainError::TooFewSymbols { loaded: histories.len(), requested: UNIVERSE.len(), needed });
        }
        Ok(histories)
    }

    #[tracing::instrument(name = "save_model", skip_all, fields(model.path = %self.model_path.display(), model.version = %model.version), err(level = "warn"))]
    async fn save_model(&self, model: Model) -> Result<(), TrainError> {
        let path = self.model_path.clone();
        spindle_sdk::spawn_blocking_in_current_span(move || model.save(&path)).await??;
        Ok(())
    }
}

#[tracing::instrument(
    name = "build_features",
    skip_all,
    fields(symbols = histories.len(), features = crate::features::FEATURE_COUNT, samples.train = Empty, samples.validation = Empty, train.rise_rate = Empty),
    err(level = "warn")
)]
async fn build_features(histories: Vec<(String, Vec<f64>)>, horizon: usize) -> Result<Dataset, TrainError> {
    let data = spindle_sdk::spawn_blocking_in_current_span(move || {
        training::build_dataset(&histories, horizon, VALIDATION_SHARE)
    })
    .await??;
    let span = tracing::Span::current();
    span.record("samples.train", data.train_x.len());
    span.record("samples.validation", data.valid_x.len());
    span.record("train.rise_rate", data.train_rise_rate());
    Ok(data)
}

#[tracing::instrument(
    name = "fit_model",
    skip_all,
    fields(algorithm = "logistic_regression_newton_l2", iterations = Empty, converged = Empty, train.log_loss = Empty),
    err(level = "warn")
)]
async fn fit_model(data: Arc<Dataset>, horizon: usize) -> Result<Fitted, TrainError> {
    let fitted = spindle_sdk::spawn_blocking_in_current_span(move || training::fit(&data, horizon)).await??;
    let span = tracing::Span::current();
    span.record("iterations", fitted.iterations);
    span.record("converged", fitted.converged);
    span.record("train.log_loss", fitted.train_log_loss);
    Ok(fitted)
}

/// Scores the fit on held-out data; quick enough (a few thousand dot products) to stay on
/// the async task.
#[tracing::instrument(
    name = "validate_model",
    skip_all,
    fields(
        validation.samples = Empty,
        validation.accuracy = Empty,
        validation.log_loss = Empty,
        baseline.accuracy = Empty,
        baseline.log_loss = Empty,
        beats_baseline = Empty,
    ),
    err(level = "warn")
)]
fn validate_model(fitted: &Fitted, data: &Dataset) -> Result<Metrics, TrainError> {
    let metrics = training::validate(fitted, data);
    let span = tracing::Span::current();
    span.record("validation.samples", metrics.samples);
    span.record("validation.accuracy", metrics.accuracy);
    span.record("validation.log_loss", metrics.log_loss);
    span.record("baseline.accuracy", metrics.baseline_accuracy);
    span.record("baseline.log_loss", metrics.baseline_log_loss);
    span.record("beats_baseline", metrics.beats_baseline());
    if !metrics.beats_baseline() {
        return Err(TrainError::Rejected { log_loss: metrics.log_loss, baseline: metrics.baseline_log_loss });
    }
    Ok(metrics)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::Model;

    #[tokio::test]
    async fn one_job_at_a_time_and_requests_are_checked() {
        // A market-data address that accepts connections and never answers: the first job
        // stays in load_data for the whole test.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", silent.local_addr().expect("addr"));
        let provider = StockDataProvider::new(&url, Duration::from_secs(60), 4).expect("client");
        let dir = tempfile::tempdir().expect("tempdir");
        let slot = Arc::new(ModelSlot::new(Model::builtin()));
        let trainer = Trainer::new(provider, slot, dir.path().join("m.json"), &mut Registry::default());

        let bad = trainer.start(TrainRequest { horizon_days: 61, ..TrainRequest::default() });
        assert_eq!(bad.expect_err("horizon too long").to_string(), "horizon_days must be between 1 and 60, got 61");
        let first = trainer.start(TrainRequest::default()).expect("starts");
        assert_eq!((first.id.as_str(), first.status), ("train-1", JobStatus::Running));
        let second = trainer.start(TrainRequest::default()).expect_err("one at a time");
        assert_eq!(second.to_string(), "training job train-1 is still running");
        assert_eq!(trainer.get("train-1").map(|j| j.status), Some(JobStatus::Running));
        for unknown in ["train-2", "train-x", "1"] {
            assert!(trainer.get(unknown).is_none(), "{unknown}");
        }
        drop(silent);
    }

    #[test]
    fn training_requests_default_and_refuse_unknown_fields() {
        let request: TrainRequest = serde_json::from_str("{}").expect("defaults");
        assert_eq!((request.period, request.horizon_days), (Period::FiveYears, 10));
        let request: TrainRequest = serde_json::from_str(r#"{"period": "2y", "horizon_days": 5}"#).expect("valid");
        assert_eq!((request.period, request.horizon_days), (Period::TwoYears, 5));
        assert!(serde_json::from_str::<TrainRequest>(r#"{"epochs": 3}"#).is_err());
    }
}
