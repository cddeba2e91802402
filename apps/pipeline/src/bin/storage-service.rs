//! `storage-service`: writes the records on `enriched-data` to PostgreSQL (see
//! `spindle_pipeline::storage`).

use std::process::ExitCode;

use clap::Parser;
use spindle_pipeline::storage::{self, StorageConfig, SERVICE};

#[derive(Parser)]
#[command(name = SERVICE, version, about = "Stores enriched option records in PostgreSQL, traced")]
struct Cli {
    #[command(flatten)]
    config: StorageConfig,
}

fn main() -> ExitCode {
    let config = Cli::parse().config;
    spindle_pipeline::service::main(SERVICE, config.metrics_addr, |stop, metrics, spans| async move {
        storage::run(&config, stop, metrics, spans).await
    })
}
