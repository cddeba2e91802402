//! ClStock (seed 003) in Rust: a stock-prediction HTTP API and the market-data service it
//! calls, traced end to end with `spindle-sdk`.
//!
//! Two binaries:
//! - `market-data-service` ([`market_data`]): deterministic daily OHLCV histories for a
//!   universe of US and Tokyo stocks ([`universe`], [`synth`]), with simulated latency,
//!   outages and empty answers;
//! - `clstock-api` ([`api`]): recommendations, predictions, batch predictions and training
//!   jobs over that data ([`predictor`], [`jobs`]), fetched by [`provider`].
//!
//! The model is a hand-written logistic regression ([`model`]) on price features
//! ([`features`]), trained and validated by [`training`]. Those three and [`calendar`],
//! [`history`], [`synth`] and [`universe`] are pure; IO lives in the services.
//!
//! The seed's span names are kept: `get_recommendations`, `calculate_score`,
//! `get_stock_data`, `http_get`; training adds `train_model` with one span per stage.

pub mod api;
pub mod calendar;
pub mod features;
pub mod history;
pub mod jobs;
pub mod market_data;
pub mod metrics;
pub mod model;
pub mod predictor;
pub mod provider;
pub mod server;
pub mod synth;
pub mod training;
pub mod universe;
