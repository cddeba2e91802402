//! `market-data-service`: serves deterministic stock histories for `clstock-api`.
//! `--help` lists the settings; tracing follows the `OTEL_*` variables.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use clstock::market_data::{MarketData, MarketDataConfig};
use clstock::metrics::HttpMetrics;
use prometheus_client::registry::Registry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = MarketDataConfig::parse();
    let _guard = spindle_sdk::init("market-data-service");
    let mut registry = Registry::default();
    let http_metrics = HttpMetrics::register(&mut registry);
    let service = MarketData::new(config.clone(), &mut registry).context("invalid configuration")?;
    let app = service.router(http_metrics, Arc::new(registry));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    tracing::info!(
        addr = %config.listen,
        as_of = %config.as_of,
        error_rate = config.error_rate,
        empty_rate = config.empty_rate,
        latency_ms = config.latency_ms,
        "market-data-service listening"
    );
    clstock::server::serve(listener, app).await.context("serving failed")
}
