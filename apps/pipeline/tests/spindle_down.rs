//! Spindle down: with its OTLP endpoint a closed port, the pipeline moves as many
//! snapshots per second as with spindle up, and every one of them is stored.
//!
//! Both modes run twice, alternating, on fresh brokers and databases; the best run of each
//! mode is compared, which keeps one-off stalls of a loaded machine out of the ratio. This
//! binary holds a single test so nothing else competes for the CPU meanwhile.
//!
//! Needs `tansu`, PostgreSQL and the `spindle` binary (see `end_to_end.rs`).

mod support;

use support::{free_port, timed_run, RunStats, Spindle, Tracing};

const MESSAGES: u64 = 1_500;
/// Throughput with spindle down over throughput with it up, at least.
const MIN_RATIO: f64 = 0.75;

fn best(runs: &[RunStats]) -> RunStats {
    *runs.iter().min_by(|a, b| a.elapsed.cmp(&b.elapsed)).expect("at least one run")
}

#[test]
fn with_spindle_down_the_pipeline_keeps_its_throughput() {
    let spindle = Spindle::start();
    let up = Tracing::To(spindle.otlp_grpc.clone());
    let down = Tracing::To(format!("http://127.0.0.1:{}", free_port()));
    let (mut ups, mut downs) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        downs.push(timed_run(down.clone(), MESSAGES, 0.0));
        ups.push(timed_run(up.clone(), MESSAGES, 0.0));
    }
    let (up, down) = (best(&ups), best(&downs));
    let ratio = down.throughput() / up.throughput();
    eprintln!(
        "spindle up: {:.0} msg/s, {:.0} µs CPU/msg; spindle down: {:.0} msg/s, {:.0} µs CPU/msg; ratio {ratio:.2}",
        up.throughput(),
        up.cpu_per_message_us(),
        down.throughput(),
        down.cpu_per_message_us()
    );
    assert!(
        ratio >= MIN_RATIO,
        "with spindle down the pipeline ran at {ratio:.2}× its throughput with spindle up (runs up {ups:?}, down {downs:?})"
    );
}
