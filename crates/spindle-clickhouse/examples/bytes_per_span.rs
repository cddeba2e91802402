//! Bytes per span on disk for the reference workload: appends `--spans` spans of
//! `spindle_workload::Workload::new(1)` in batches of `--batch`, merges each partition into
//! one part (`OPTIMIZE TABLE … FINAL`, until it is), then prints compressed bytes per span of `spans` (with its
//! `span` blob apart) and of `trace_id_ts`, from `system.parts` and `system.columns`.
//!
//! ```text
//! cargo run --release -p spindle-clickhouse --example bytes_per_span -- --url http://127.0.0.1:8123
//! ```
//!
//! The server's `<compression>` configuration decides the codec (LZ4 by default). The
//! database (`--database`, default `bytes_per_span`) must hold no spans yet: the figures
//! are of this run's spans alone.

use spindle_clickhouse::{ClickHouseOptions, ClickHouseStore};
use spindle_store::TraceStore;
use spindle_workload::{Workload, SPANS_PER_TRACE};

const T0: u64 = 1_765_000_000_000_000_000;

struct Args {
    url: String,
    database: String,
    spans: usize,
    batch: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { url: String::new(), database: "bytes_per_span".into(), spans: 200_000, batch: 10_000 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || value.parse::<usize>().map_err(|_| format!("{flag} wants a number, not {value:?}"));
        match flag.as_str() {
            "--url" => args.url = value.clone(),
            "--database" => args.database = value.clone(),
            "--spans" => args.spans = number()?,
            "--batch" => args.batch = number()?.max(SPANS_PER_TRACE),
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    if args.url.is_empty() {
        return Err("--url http://HOST:PORT (ClickHouse's HTTP interface) is required".into());
    }
    Ok(args)
}

fn sql(client: &reqwest::blocking::Client, url: &str, query: &str) -> Result<String, String> {
    let response = client.post(url).body(query.to_string()).send().map_err(|e| format!("{query}: {e}"))?;
    let status = response.status();
    let body = response.text().map_err(|e| format!("{query}: {e}"))?;
    if !status.is_success() {
        return Err(format!("{query}: {status} {}", body.trim()));
    }
    Ok(body)
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let store = ClickHouseStore::open(ClickHouseOptions::new(&args.url, &args.database)).map_err(|e| e.to_string())?;
    if store.stored_span_rows().map_err(|e| e.to_string())? > 0 {
        return Err(format!("database {} already holds spans; name a new one with --database", args.database));
    }
    let mut workload = Workload::new(1);
    let traces_per_batch = args.batch / SPANS_PER_TRACE;
    let batches = args.spans.div_ceil(args.batch);
    for i in 0..batches {
        // Ten seconds of traces per batch, one batch after another.
        let start = T0 + i as u64 * 10_000_000_000;
        store.append(workload.batch(traces_per_batch, start, 10_000_000_000)).map_err(|e| e.to_string())?;
    }
    let client = reqwest::blocking::Client::new();
    let url = args.url.trim_end_matches('/');
    let db = &args.database;
    for table in ["spans", "trace_id_ts"] {
        // OPTIMIZE does nothing, silently, while a background merge holds the parts: ask
        // again until every partition is one part.
        for attempt in 0.. {
            sql(&client, url, &format!("OPTIMIZE TABLE {db}.{table} FINAL"))?;
            let most = sql(
                &client,
                url,
                &format!(
                    "SELECT max(c) FROM (SELECT count() AS c FROM system.parts WHERE database = '{db}' \
                     AND table = '{table}' AND active GROUP BY partition)"
                ),
            )?;
            if most.trim() == "1" {
                break;
            }
            if attempt == 600 {
                return Err(format!("{table} still has {} parts per partition after merging", most.trim()));
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }
    let parts = sql(
        &client,
        url,
        &format!(
            "SELECT table, sum(rows), sum(data_compressed_bytes), sum(data_uncompressed_bytes) FROM system.parts \
             WHERE database = '{db}' AND active AND table IN ('spans', 'trace_id_ts') GROUP BY table ORDER BY table"
        ),
    )?;
    let spans = store.stored_span_rows().map_err(|e| e.to_string())?.max(1) as f64;
    println!("{} spans of the reference workload, in batches of {}", spans, traces_per_batch * SPANS_PER_TRACE);
    println!("{:<24} {:>12} {:>14} {:>16}", "table", "rows", "B/span (disk)", "B/span (raw)");
    for line in parts.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let (compressed, raw) = (f[2].parse::<f64>().unwrap_or(0.0), f[3].parse::<f64>().unwrap_or(0.0));
        println!("{:<24} {:>12} {:>14.1} {:>16.1}", f[0], f[1], compressed / spans, raw / spans);
    }
    let columns = sql(
        &client,
        url,
        &format!(
            "SELECT name, data_compressed_bytes, data_uncompressed_bytes FROM system.columns \
             WHERE database = '{db}' AND table = 'spans' ORDER BY data_compressed_bytes DESC"
        ),
    )?;
    println!("spans by column:");
    for line in columns.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let (compressed, raw) = (f[1].parse::<f64>().unwrap_or(0.0), f[2].parse::<f64>().unwrap_or(0.0));
        println!("  {:<22} {:>12} {:>14.1} {:>16.1}", f[0], "", compressed / spans, raw / spans);
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("bytes_per_span: {e}");
        std::process::exit(1);
    }
}
