//! `ingestion-service`: publishes option snapshots from the deterministic market simulator
//! to Kafka (see `spindle_pipeline::ingestion`).

use std::process::ExitCode;

use clap::Parser;
use spindle_pipeline::ingestion::{self, IngestionConfig, SERVICE};
use spindle_pipeline::market::{SimulatedMarket, SimulatorSettings};

#[derive(Parser)]
#[command(name = SERVICE, version, about = "Publishes option snapshots to Kafka, traced")]
struct Cli {
    #[command(flatten)]
    config: IngestionConfig,
}

fn main() -> ExitCode {
    let config = Cli::parse().config;
    spindle_pipeline::service::main(SERVICE, config.metrics_addr, |stop, metrics, spans| async move {
        let settings = SimulatorSettings {
            seed: config.seed,
            start_ms: config.start_ms.unwrap_or_else(ingestion::unix_ms),
            reference_latency: std::time::Duration::from_millis(config.reference_latency_ms),
            ..SimulatorSettings::default()
        };
        ingestion::run(&config, SimulatedMarket::new(settings), stop, metrics, spans).await.map(|_| ())
    })
}
