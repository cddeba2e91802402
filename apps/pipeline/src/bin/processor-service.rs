//! `processor-service`: values the options on `market-data` with Black–Scholes–Merton and
//! publishes them to `enriched-data` (see `spindle_pipeline::processor`).

use std::process::ExitCode;

use clap::Parser;
use spindle_pipeline::processor::{self, ProcessorConfig, SERVICE};

#[derive(Parser)]
#[command(name = SERVICE, version, about = "Values option snapshots from Kafka, traced")]
struct Cli {
    #[command(flatten)]
    config: ProcessorConfig,
}

fn main() -> ExitCode {
    let config = Cli::parse().config;
    spindle_pipeline::service::main(SERVICE, config.metrics_addr, |stop, metrics, spans| async move {
        processor::run(&config, stop, metrics, spans).await
    })
}
