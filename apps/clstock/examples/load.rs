//! A small closed-loop load generator for `clstock-api`: `--concurrency` workers request
//! `--path` back to back for `--seconds`, then it prints throughput and latency percentiles.
//! Useful to fill Spindle with traffic, and to measure what tracing costs the API.
//!
//! ```sh
//! cargo run --release -p clstock --example load -- --url http://127.0.0.1:9202 --path /predict/AAPL
//! ```

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;

#[derive(Debug, Parser)]
struct Args {
    /// Base URL of clstock-api.
    #[arg(long, default_value = "http://127.0.0.1:9202")]
    url: String,
    /// Path to request (GET); repeat for a mix, taken in turn.
    #[arg(long = "path", default_values_t = ["/predict/AAPL".to_owned()])]
    paths: Vec<String>,
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let started = Instant::now();
    let measure_from = started + Duration::from_secs_f64(args.warmup);
    let until = measure_from + Duration::from_secs_f64(args.seconds);
    let mut workers = Vec::new();
    for worker in 0..args.concurrency.max(1) {
        let (client, url, paths) = (client.clone(), args.url.clone(), args.paths.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            let mut n = worker;
            while Instant::now() < until {
                let path = &paths[n % paths.len()];
                n += 1;
                let sent = Instant::now();
                let ok = match client.get(format!("{url}{path}")).send().await {
                    Ok(response) => response.status().is_success() && response.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if sent >= measure_from {
                    latencies.push(sent.elapsed());
                    errors += usize::from(!ok);
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for worker in workers {
        let (l, e) = worker.await.context("a worker panicked")?;
        latencies.extend(l);
        errors += e;
    }
    latencies.sort();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len().max(1)) - 1;
        latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "requests {} errors {} rate {:.1}/s p50 {:.2} ms p90 {:.2} ms p99 {:.2} ms",
        latencies.len(),
        errors,
        latencies.len() as f64 / args.seconds,
        pct(0.50),
        pct(0.90),
        pct(0.99)
    );
    Ok(())
}
