//! `clstock-api`: the ClStock prediction API. `--help` lists the settings; tracing follows
//! the `OTEL_*` variables.

use anyhow::Context;
use clap::Parser;
use clstock::api::{self, ApiConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = ApiConfig::parse();
    let _guard = spindle_sdk::init("clstock-api");
    let app = api::router(&config).context("cannot start clstock-api")?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    tracing::info!(addr = %config.listen, market_data = %config.market_data_url, "clstock-api listening");
    clstock::server::serve(listener, app).await.context("serving failed")
}
