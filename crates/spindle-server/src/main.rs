//! The `spindle` binary.

mod admin;
mod alerting;
mod api;
mod clickhouse;
mod config;
mod dependencies;
mod group_commit;
mod grpc;
mod ingest;
mod kafka;
mod limits;
mod loadgen;
mod memory;
mod otlp_grpc;
mod otlp_http;
mod receivers;
mod security;
mod server;
mod telemetry;
mod tenancy;
mod ui;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::config::{Cli, Command};

fn init_logging(filter: &str, json: bool) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("invalid log filter {filter:?} ({e}), using info");
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> anyhow::Result<()> {
    memory::tune_allocator();
    security::tls::install_crypto_provider();
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        Some(Command::Loadgen(args)) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            return runtime.block_on(loadgen::run(args));
        }
        Some(Command::HashPassword) => return security::auth::hash_password_command(),
        Some(Command::Routes) => {
            let json = security::routes::json();
            return std::io::Write::write_all(&mut std::io::stdout(), format!("{json}\n").as_bytes())
                .map_err(Into::into);
        }
        None => cli.serve,
    };
    let settings = args.resolve()?;
    init_logging(&settings.log, settings.log_json);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(memory::collect_freed_memory)
        .build()?;
    runtime.block_on(server::run(settings))
}
