//! `clstock-api`: the HTTP face of ClStock.
//!
//! | route | does |
//! |---|---|
//! | `GET /recommendations?top_n=5` | ranks the universe, best `top_n` (1 to 10) first |
//! | `GET /predict/{symbol}` | one symbol's score |
//! | `GET /data/{symbol}?period=1y` | the daily bars the predictions use |
//! | `POST /batch/predictions` | `{"symbols": [...]}`, scored concurrently |
//! | `POST /train` | starts a training job (`{"period": "5y", "horizon_days": 10}`, both optional) |
//! | `GET /train/{id}` | a training job's state |
//! | `GET /model` | the model in use |
//!
//! Every failure is an [`ApiError`]: a JSON body `{"error", "trace_id"}` with the matching
//! status, and the request's SERVER span marked as failed (status ERROR and an `exception`
//! event), client errors included, so a rejected request is as visible in Spindle as a
//! broken one.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header::LOCATION;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use crate::history::{Bar, Period};
use crate::jobs::{JobRecord, StartError, TrainRequest, Trainer};
use crate::metrics::HttpMetrics;
use crate::model::{Model, ModelError};
use crate::predictor::{ModelSlot, PredictError, Prediction, Recommendations, StockPredictor};
use crate::provider::{is_valid_symbol, DataError, StockDataProvider};
use crate::server::{error_response, with_observability};

/// How `clstock-api` runs; every flag has a `CLSTOCK_*` variable. Tracing is configured
/// with the standard `OTEL_*` variables.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "clstock-api", version, about = "Stock recommendations and predictions over HTTP, traced end to end")]
pub struct ApiConfig {
    /// Address to serve on.
    #[arg(long, env = "CLSTOCK_LISTEN", default_value = "0.0.0.0:9202")]
    pub listen: std::net::SocketAddr,
    /// Base URL of market-data-service.
    #[arg(long, env = "CLSTOCK_MARKET_DATA_URL", default_value = "http://127.0.0.1:9201")]
    pub market_data_url: String,
    /// Where trained models are saved, and loaded from at start.
    #[arg(long, env = "CLSTOCK_MODEL_PATH", default_value = "clstock-model.json")]
    pub model_path: PathBuf,
    /// Timeout of one market-data request, in milliseconds.
    #[arg(long, env = "CLSTOCK_REQUEST_TIMEOUT_MS", default_value_t = 5000)]
    pub request_timeout_ms: u64,
    /// Market-data requests in flight at most.
    #[arg(long, env = "CLSTOCK_MAX_IN_FLIGHT", default_value_t = 8)]
    pub max_in_flight: usize,
}

/// Why the API cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot build the market data client: {0}")]
    Client(#[from] reqwest::Error),
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// A failed request, as the client sees it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    BadGateway(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidArgument(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // Runs inside the request's SERVER span (the handler's future is instrumented with it).
        spindle_sdk::record_error(&tracing::Span::current(), &self);
        error_response(self.status(), self.to_string())
    }
}

impl From<PredictError> for ApiError {
    fn from(error: PredictError) -> Self {
        match error {
            PredictError::Data(DataError::InvalidSymbol(_)) => ApiError::InvalidArgument(error.to_string()),
            PredictError::Data(DataError::UnknownTicker(_)) => ApiError::NotFound(error.to_string()),
            PredictError::Task(_) => ApiError::Internal(error.to_string()),
            _ => ApiError::BadGateway(error.to_string()),
        }
    }
}

impl From<DataError> for ApiError {
    fn from(error: DataError) -> Self {
        PredictError::Data(error).into()
    }
}

impl From<StartError> for ApiError {
    fn from(error: StartError) -> Self {
        match error {
            StartError::AlreadyRunning(_) => ApiError::Conflict(error.to_string()),
            StartError::InvalidHorizon(_) => ApiError::InvalidArgument(error.to_string()),
        }
    }
}

#[derive(Debug)]
struct Api {
    predictor: StockPredictor,
    trainer: Arc<Trainer>,
}

/// The model at `path`, or the built-in one when there is no file yet.
pub fn load_model(path: &std::path::Path) -> Result<Model, ModelError> {
    match Model::load(path) {
        Ok(model) => {
            tracing::info!(path = %path.display(), version = %model.version, "model loaded");
            Ok(model)
        }
        Err(ModelError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!(path = %path.display(), "no trained model yet, using the built-in one");
            Ok(Model::builtin())
        }
        Err(error) => Err(error),
    }
}

/// The API's router, with its metrics, ready to serve.
pub fn router(config: &ApiConfig) -> Result<Router, SetupError> {
    let mut registry = Registry::default();
    let http_metrics = HttpMetrics::register(&mut registry);
    let provider = StockDataProvider::new(
        &config.market_data_url,
        Duration::from_millis(config.request_timeout_ms),
        config.max_in_flight,
    )?;
    let model = Arc::new(ModelSlot::new(load_model(&config.model_path)?));
    let predictor = StockPredictor::new(provider.clone(), Arc::clone(&model), &mut registry);
    let trainer = Trainer::new(provider, model, config.model_path.clone(), &mut registry);
    let api = Arc::new(Api { predictor, trainer });
    let routes = Router::new()
        .route("/recommendations", get(recommendations))
        .route("/predict/{symbol}", get(predict))
        .route("/data/{symbol}", get(stock_data))
        .route("/batch/predictions", post(batch_predictions))
        .route("/train", post(start_training))
        .route("/train/{id}", get(training_status))
        .route("/model", get(model_info))
        .with_state(api);
    Ok(with_observability(routes, http_metrics, Arc::new(registry)))
}

/// Recommendations when `top_n` is not given, as in the seed.
pub const DEFAULT_TOP_N: usize = 5;
/// Symbols one batch may hold at most.
pub const MAX_BATCH: usize = 50;

#[derive(Debug, Deserialize)]
struct RecommendationsQuery {
    top_n: Option<String>,
}

/// `top_n` from the query: absent means [`DEFAULT_TOP_N`], anything but 1 to 10 is refused.
pub fn parse_top_n(raw: Option<&str>) -> Result<usize, ApiError> {
    let Some(raw) = raw else { return Ok(DEFAULT_TOP_N) };
    raw.trim()
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=10).contains(n))
        .ok_or_else(|| ApiError::InvalidArgument(format!("top_n must be an integer from 1 to 10, got {raw:?}")))
}

async fn recommendations(
    State(api): State<Arc<Api>>,
    query: Result<Query<RecommendationsQuery>, QueryRejection>,
) -> Result<Json<Recommendations>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::InvalidArgument(format!("invalid query: {}", e.body_text())))?;
    let top_n = parse_top_n(query.top_n.as_deref())?;
    Ok(Json(api.predictor.get_recommendations(top_n).await?))
}

/// A symbol from the path, upper-cased, or the reason it is refused.
fn symbol_from_path(raw: &str) -> Result<String, ApiError> {
    if is_valid_symbol(raw) {
        Ok(raw.to_ascii_uppercase())
    } else {
        Err(DataError::InvalidSymbol(raw.to_owned()).into())
    }
}

async fn predict(State(api): State<Arc<Api>>, Path(symbol): Path<String>) -> Result<Json<Prediction>, ApiError> {
    let symbol = symbol_from_path(&symbol)?;
    Ok(Json(api.predictor.calculate_score(&symbol).await?))
}

#[derive(Debug, Deserialize)]
struct DataQuery {
    period: Option<String>,
}

#[derive(Debug, Serialize)]
struct StockData {
    symbol: String,
    ticker: String,
    period: Period,
    data_points: usize,
    bars: Vec<Bar>,
}

async fn stock_data(
    State(api): State<Arc<Api>>,
    Path(symbol): Path<String>,
    query: Result<Query<DataQuery>, QueryRejection>,
) -> Result<Json<StockData>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::InvalidArgument(format!("invalid query: {}", e.body_text())))?;
    let symbol = symbol_from_path(&symbol)?;
    let period = match query.period.as_deref() {
        None => Period::OneYear,
        Some(raw) => raw.parse().map_err(|e: crate::history::PeriodError| ApiError::InvalidArgument(e.to_string()))?,
    };
    let provider = api.predictor.provider();
    let bars = provider.get_stock_data(&symbol, period).await?;
    Ok(Json(StockData { ticker: provider.ticker(&symbol), symbol, period, data_points: bars.len(), bars }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    symbols: Vec<String>,
}

#[derive(Debug, Serialize)]
struct BatchFailure {
    symbol: String,
    error: String,
}

#[derive(Debug, Serialize)]
struct BatchResponse {
    succeeded: usize,
    failed: usize,
    predictions: Vec<Prediction>,
    errors: Vec<BatchFailure>,
}

async fn batch_predictions(
    State(api): State<Arc<Api>>,
    body: Result<Json<BatchRequest>, JsonRejection>,
) -> Result<Json<BatchResponse>, ApiError> {
    let Json(request) =
        body.map_err(|e| ApiError::InvalidArgument(format!("invalid batch request: {}", e.body_text())))?;
    if request.symbols.is_empty() || request.symbols.len() > MAX_BATCH {
        return Err(ApiError::InvalidArgument(format!(
            "symbols must hold 1 to {MAX_BATCH} symbols, got {}",
            request.symbols.len()
        )));
    }
    let symbols = request.symbols.iter().map(|s| symbol_from_path(s)).collect::<Result<Vec<_>, _>>()?;
    let mut response = BatchResponse { succeeded: 0, failed: 0, predictions: Vec::new(), errors: Vec::new() };
    for (symbol, result) in api.predictor.predict_batch(symbols).await {
        match result {
            Ok(prediction) => response.predictions.push(prediction),
            Err(error) => response.errors.push(BatchFailure { symbol, error: error.to_string() }),
        }
    }
    response.succeeded = response.predictions.len();
    response.failed = response.errors.len();
    if response.succeeded == 0 {
        let first = response.errors.first().map_or_else(String::new, |f| format!(", first: {}", f.error));
        return Err(ApiError::BadGateway(format!("all {} predictions failed{first}", response.failed)));
    }
    Ok(Json(response))
}

async fn start_training(State(api): State<Arc<Api>>, body: Bytes) -> Result<Response, ApiError> {
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        TrainRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::InvalidArgument(format!("invalid training request: {e}")))?
    };
    let record = api.trainer.start(request)?;
    let location = format!("/train/{}", record.id);
    Ok((StatusCode::ACCEPTED, [(LOCATION, location)], Json(record)).into_response())
}

async fn training_status(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Result<Json<JobRecord>, ApiError> {
    api.trainer.get(&id).map(Json).ok_or_else(|| ApiError::NotFound(format!("no training job {id:?}")))
}

async fn model_info(State(api): State<Arc<Api>>) -> Json<Model> {
    Json(Model::clone(&api.predictor.model().current()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_n_is_one_to_ten() {
        assert_eq!(parse_top_n(None).ok(), Some(DEFAULT_TOP_N));
        assert_eq!(parse_top_n(Some("1")).ok(), Some(1));
        assert_eq!(parse_top_n(Some("10")).ok(), Some(10));
        for bad in ["0", "11", "-1", "abc", "", "2.5"] {
            let error = parse_top_n(Some(bad)).expect_err(bad);
            assert_eq!(error.status(), StatusCode::UNPROCESSABLE_ENTITY);
            assert_eq!(error.to_string(), format!("top_n must be an integer from 1 to 10, got {bad:?}"));
        }
    }

    #[test]
    fn errors_map_to_statuses() {
        let cases: [(ApiError, StatusCode); 4] = [
            (DataError::InvalidSymbol("a b".into()).into(), StatusCode::UNPROCESSABLE_ENTITY),
            (DataError::UnknownTicker("ZZZ".into()).into(), StatusCode::NOT_FOUND),
            (PredictError::NoData("AAPL".into()).into(), StatusCode::BAD_GATEWAY),
            (StartError::AlreadyRunning("train-1".into()).into(), StatusCode::CONFLICT),
        ];
        for (error, status) in cases {
            assert_eq!(error.status(), status, "{error}");
        }
    }
}
