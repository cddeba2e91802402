//! What tracing costs the seed pipeline: the same number of snapshots through
//! ingestion → processor → storage with span export off (`OTEL_SDK_DISABLED=true`) and on
//! (OTLP gRPC to a spindle server), alternating, each run on a fresh broker and database.
//! Reports throughput (snapshots per second, first publish to last row), the services' CPU
//! time per snapshot, the spindle server's CPU during the run, and the on/off ratios.
//! A third mode, "nofl", exports without waiting for the spans before acknowledging work
//! (`PIPELINE_SPAN_FLUSH_TIMEOUT_MS=0`): on/nofl is what the crash-safe flushes cost.
//!
//! ```sh
//! cargo build --release -p spindle-server
//! # flat out: the most the pipeline moves on this machine
//! SPINDLE_BIN=target/release/spindle cargo bench -p spindle-pipeline --bench overhead -- --messages 20000 --rounds 3
//! # a steady 1000 snapshots a second: what tracing costs a pipeline that keeps up
//! SPINDLE_BIN=target/release/spindle cargo bench -p spindle-pipeline --bench overhead -- --messages 10000 --rate 1000 --rounds 3
//! ```
//!
//! Needs `tansu`, PostgreSQL and a `spindle` binary, like the integration tests.

#[path = "../tests/support/mod.rs"]
mod support;

use support::{cpu_seconds_of, pid_with_arg, timed_run, RunStats, Spindle, Tracing};

fn arg(name: &str, default: f64) -> f64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} takes a number, not {v:?}")))
        .unwrap_or(default)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A run and the CPU seconds spindle spent meanwhile.
struct Measured {
    run: RunStats,
    spindle_cpu: f64,
}

fn measure(spindle_pid: u32, tracing: Tracing, messages: u64, rate: f64, label: &str) -> Measured {
    let before = cpu_seconds_of(spindle_pid);
    let run = timed_run(tracing, messages, rate);
    let spindle_cpu = cpu_seconds_of(spindle_pid) - before;
    println!(
        "{label:<7} {:>8.0} msg/s {:>7.2} s   services {:>5.0} µs CPU/msg (ingestion {:.2} s, processor {:.2} s, storage {:.2} s)   spindle {:.2} s CPU",
        run.throughput(),
        run.elapsed.as_secs_f64(),
        run.cpu_per_message_us(),
        run.cpu[0],
        run.cpu[1],
        run.cpu[2],
        spindle_cpu,
    );
    Measured { run, spindle_cpu }
}

fn main() {
    let messages = arg("--messages", 20_000.0) as u64;
    let rate = arg("--rate", 0.0);
    let rounds = (arg("--rounds", 3.0) as u32).max(1);
    let spindle = Spindle::start();
    let query_addr = spindle.query.trim_start_matches("http://");
    let spindle_pid = pid_with_arg(query_addr).expect("the spindle process is found by its query address");
    println!(
        "{messages} snapshots a run, rate {}, {rounds} rounds",
        if rate > 0.0 { format!("{rate}/s") } else { "flat out".into() }
    );
    let (mut off, mut on, mut unflushed) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        off.push(measure(spindle_pid, Tracing::Off, messages, rate, &format!("{round} off")));
        let no_flush = Tracing::ToWithoutFlush(spindle.otlp_grpc.clone());
        unflushed.push(measure(spindle_pid, no_flush, messages, rate, &format!("{round} nofl")));
        on.push(measure(spindle_pid, Tracing::To(spindle.otlp_grpc.clone()), messages, rate, &format!("{round} on")));
    }
    let throughput = |runs: &[Measured]| median(runs.iter().map(|m| m.run.throughput()).collect());
    let cpu = |runs: &[Measured]| median(runs.iter().map(|m| m.run.cpu_per_message_us()).collect());
    let backend =
        |runs: &[Measured]| median(runs.iter().map(|m| m.spindle_cpu * 1e6 / m.run.messages as f64).collect());
    println!(
        "median: off {:.0} msg/s, {:.0} µs CPU/msg | on {:.0} msg/s, {:.0} µs CPU/msg, spindle {:.0} µs CPU/msg",
        throughput(&off),
        cpu(&off),
        throughput(&on),
        cpu(&on),
        backend(&on),
    );
    println!(
        "ratio on/off: throughput {:.3}, services' CPU per message {:.2}",
        throughput(&on) / throughput(&off),
        cpu(&on) / cpu(&off)
    );
    println!(
        "flushes (on/nofl, nofl {:.0} msg/s, {:.0} µs CPU/msg): throughput {:.3}, services' CPU per message {:.2}",
        throughput(&unflushed),
        cpu(&unflushed),
        throughput(&on) / throughput(&unflushed),
        cpu(&on) / cpu(&unflushed)
    );
}
