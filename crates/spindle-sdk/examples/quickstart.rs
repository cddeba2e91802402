//! The smallest traced service: one call to init, `#[instrument]` as the `@traced`
//! decorator, errors recorded on spans, and work fanned out without losing the trace.
//!
//! ```sh
//! spindle serve &                                  # or any OTLP collector on :4317
//! cargo run -p spindle-sdk --example quickstart
//! # then open http://localhost:16686 and look for service "quickstart"
//! ```
//! With nothing listening on :4317 the example runs just the same: export failures are
//! counted and logged once per interval, never raised.

use std::time::Duration;

use tracing::{info, instrument};

#[derive(Debug)]
struct QuoteError(String);

impl std::fmt::Display for QuoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no quote for {}", self.0)
    }
}

impl std::error::Error for QuoteError {}

/// `@traced("get_stock_data")` in the Python seed; arguments become span attributes.
#[instrument]
async fn get_stock_data(symbol: String) -> Result<f64, QuoteError> {
    tokio::time::sleep(Duration::from_millis(5)).await;
    if symbol == "XXXX" {
        return Err(QuoteError(symbol));
    }
    Ok(100.0 + symbol.len() as f64)
}

/// `err` turns a returned error into an exception event and status ERROR on the span.
#[instrument(err)]
async fn calculate_score(symbol: String) -> Result<f64, QuoteError> {
    let price = get_stock_data(symbol).await?;
    Ok(price / 100.0)
}

#[instrument]
async fn get_recommendations(top_n: usize) -> Vec<(String, f64)> {
    let symbols = ["7203", "6758", "9984", "XXXX"].map(String::from);
    // Each score runs as its own task, and each stays a child of this span.
    let scores = spindle_sdk::join_all_in_current_span(symbols.clone().map(calculate_score)).await;
    let mut ranked: Vec<(String, f64)> =
        symbols.into_iter().zip(scores).filter_map(|(symbol, score)| Some((symbol, score.ok()?.ok()?))).collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked.truncate(top_n);
    info!(count = ranked.len(), trace_id = ?spindle_sdk::current_trace_id(), "ranked");
    ranked
}

#[tokio::main]
async fn main() {
    let guard = spindle_sdk::init("quickstart");
    let top = get_recommendations(2).await;
    println!("top recommendations: {top:?}");
    println!("export counters: {:?}", guard.stats());
    // Dropping the guard exports what is still queued (bounded by its shutdown timeout).
}
