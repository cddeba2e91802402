//! What the SDK costs a service: the same CPU-bound HTTP service run without the SDK and
//! with it (100% sampling, every span exported to a live spindle), in the same process and
//! the same run, requests alternating between the two so both see the same machine.
//!
//! Reports the ratio of CPU time (the service thread, plus the SDK's export thread for the
//! traced service) and of p50 / p99 latency seen by the client. The CPU ratio is given twice:
//! from the totals, and paired — the median over adjacent request pairs of the traced
//! request's extra CPU, plus the export thread's mean per request, over the median untraced
//! request — which noise from other processes moves far less.
//!
//! ```sh
//! cargo build --release -p spindle-server --bin spindle
//! SPINDLE_BIN=target/release/spindle cargo bench -p spindle-sdk --bench overhead
//! ```
//! Knobs: `OVERHEAD_HANDLER_US` (CPU per request, default 2000), `OVERHEAD_PAIRS` (default
//! 2000), `OVERHEAD_BACKEND=sink` (an in-process OTLP receiver instead of spindle),
//! `OVERHEAD_CONTROL=1` (both services untraced: the ratios then show the measurement's own
//! noise on this machine).

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::routing::get;
use axum::Router;
use spindle_sdk::http::axum::ServerTracingLayer;
use spindle_sdk::tracing::Dispatch;
use spindle_sdk::tracing_subscriber::layer::SubscriberExt;
use spindle_sdk::tracing_subscriber::Registry;
use spindle_sdk::SamplerConfig;
use support::workload::{calibrate, handle_request};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// CPU time of thread `tid` of this process, in nanoseconds (from the scheduler's account).
fn thread_cpu_ns(tid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// Thread ids of this process whose name starts with `prefix`.
fn threads_named(prefix: &str) -> Vec<i32> {
    std::fs::read_dir("/proc/self/task")
        .map(|dir| {
            dir.filter_map(|e| {
                let e = e.ok()?;
                let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
                comm.starts_with(prefix).then(|| e.file_name().to_str()?.parse().ok())?
            })
            .collect()
        })
        .unwrap_or_default()
}

async fn price(State(strikes): State<usize>, Path(id): Path<u64>) -> String {
    handle_request(id, strikes).to_string()
}

/// Serves `app` on a named thread with its own current-thread runtime under `dispatch`;
/// returns the port and the thread id.
fn serve(name: &str, app: Router, dispatch: Dispatch) -> (u16, i32) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    let tid = Arc::new(AtomicI32::new(0));
    let tid_out = Arc::clone(&tid);
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            tid_out.store(gettid(), Ordering::SeqCst);
            tracing::dispatcher::with_default(&dispatch, || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                    let _ = axum::serve(listener, app).await;
                });
            });
        })
        .expect("server thread");
    while tid.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    (port, tid.load(Ordering::SeqCst))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    // `cargo bench` passes `--bench`; this harness takes its knobs from the environment.
    let handler = Duration::from_micros(env_or("OVERHEAD_HANDLER_US", 2000));
    let pairs: usize = env_or("OVERHEAD_PAIRS", 2000);
    let use_sink = std::env::var("OVERHEAD_BACKEND").is_ok_and(|v| v == "sink");
    let control = std::env::var("OVERHEAD_CONTROL").is_ok_and(|v| v == "1");

    let (spindle, sink) =
        if use_sink { (None, Some(support::OtlpSink::start())) } else { (Some(support::Spindle::start()), None) };
    let endpoint = spindle
        .as_ref()
        .map(|s| s.otlp_grpc.clone())
        .or_else(|| sink.as_ref().map(|s| s.grpc_endpoint.clone()))
        .expect("a backend");
    let (layer, guard) = spindle_sdk::builder("overhead-bench")
        .endpoint(endpoint.clone())
        .sampler(SamplerConfig::AlwaysOn)
        .into_layer::<Registry>()
        .expect("pipeline");
    let sdk = Dispatch::new(Registry::default().with(layer));

    let strikes = calibrate(handler);
    let app = Router::new().route("/price/{id}", get(price)).with_state(strikes);
    let (off_port, off_tid) = serve("svc-off", app.clone(), Dispatch::none());
    let (on_port, on_tid) = if control {
        serve("svc-on", app, Dispatch::none())
    } else {
        serve("svc-on", app.layer(ServerTracingLayer::new()), sdk)
    };
    let exporter_tids = threads_named("spindle-sdk-exp");
    assert_eq!(exporter_tids.len(), 1, "one export thread: {exporter_tids:?}");

    let client = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let result = client.block_on(async move {
        let http = reqwest::Client::new();
        let call = |port: u16, id: u64| {
            let http = http.clone();
            async move {
                let started = Instant::now();
                let body = http
                    .get(format!("http://127.0.0.1:{port}/price/{id}"))
                    .send()
                    .await
                    .expect("request")
                    .text()
                    .await
                    .expect("body");
                assert!(!body.is_empty());
                started.elapsed().as_secs_f64() * 1e3
            }
        };
        // The traced service first: tracing caches per call site whether anyone listens,
        // and the two services share the handler's call sites.
        for id in 0..50 {
            call(on_port, id).await;
            call(off_port, id).await;
        }
        let cpu = |tids: &[i32]| tids.iter().map(|t| thread_cpu_ns(*t)).sum::<u64>();
        let (off_cpu0, on_cpu0, exp_cpu0) = (cpu(&[off_tid]), cpu(&[on_tid]), cpu(&exporter_tids));
        let (mut off_lat, mut on_lat) = (Vec::with_capacity(pairs), Vec::with_capacity(pairs));
        // Each service's CPU is read just before its own next request, when it has been idle
        // since the other service's request: the difference is one request, all of it.
        let (mut off_mark, mut on_mark) = (off_cpu0, on_cpu0);
        let (mut off_req, mut on_req) = (Vec::with_capacity(pairs), Vec::with_capacity(pairs));
        let wall = Instant::now();
        for id in 0..pairs as u64 {
            // Alternate which goes first so neither always follows the other.
            let off_first = id % 2 == 0;
            for side in [off_first, !off_first] {
                let (port, tid, mark, per_request, latencies) = if side {
                    (off_port, off_tid, &mut off_mark, &mut off_req, &mut off_lat)
                } else {
                    (on_port, on_tid, &mut on_mark, &mut on_req, &mut on_lat)
                };
                let now = cpu(&[tid]);
                if id > 0 {
                    per_request.push((now - *mark) as f64);
                }
                *mark = now;
                latencies.push(call(port, id).await);
            }
        }
        let wall = wall.elapsed();
        // Let the last batch leave before reading the exporter's CPU.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let off_cpu = cpu(&[off_tid]) - off_cpu0;
        let export_cpu = cpu(&exporter_tids) - exp_cpu0;
        let on_cpu = cpu(&[on_tid]) - on_cpu0 + export_cpu;
        // Paired: the median over adjacent pairs of the extra CPU of the traced request, which
        // a preemption or a cache flush by another process on this shared machine moves far
        // less than it moves the totals.
        let mut extra: Vec<f64> = on_req.iter().zip(&off_req).map(|(on, off)| on - off).collect();
        let paired = (support::workload::median(&mut extra), support::workload::median(&mut off_req));
        (off_cpu, on_cpu, export_cpu, off_lat, on_lat, wall, paired)
    });
    let (off_cpu, on_cpu, export_cpu, mut off_lat, mut on_lat, wall, (extra_ns, typical_ns)) = result;
    guard.flush().expect("flush");
    let stats = guard.stats();
    off_lat.sort_by(f64::total_cmp);
    on_lat.sort_by(f64::total_cmp);
    let (off50, on50) = (percentile(&off_lat, 0.5), percentile(&on_lat, 0.5));
    let (off99, on99) = (percentile(&off_lat, 0.99), percentile(&on_lat, 0.99));
    let per_request = |ns: u64| ns as f64 / pairs as f64 / 1e3;

    println!("overhead benchmark: {pairs} requests per side, ~{handler:?} CPU-bound handler");
    println!("  backend: {} at {endpoint}", if use_sink { "in-process OTLP sink" } else { "spindle" });
    if control {
        println!("  CONTROL RUN: neither service is traced");
    } else {
        println!("  spans per traced request: 5 (SERVER + 4 internal), sampling 100%");
    }
    println!("  run took {wall:.1?}");
    println!("                      sdk off     sdk on   on/off");
    println!(
        "  cpu per request  {:>8.1} us {:>8.1} us   {:.4}",
        per_request(off_cpu),
        per_request(on_cpu),
        on_cpu as f64 / off_cpu as f64
    );
    println!(
        "    of which export thread       {:>8.1} us ({:.2} us per span)",
        per_request(export_cpu),
        per_request(export_cpu) / 5.0
    );
    let export_per_request = export_cpu as f64 / pairs as f64;
    println!(
        "  paired: median extra cpu {:>6.1} us + export {:>5.1} us over median {:>8.1} us   {:.4}",
        extra_ns / 1e3,
        export_per_request / 1e3,
        typical_ns / 1e3,
        1.0 + (extra_ns + export_per_request) / typical_ns
    );
    println!("  latency p50      {off50:>8.3} ms {on50:>8.3} ms   {:.4}", on50 / off50);
    println!("  latency p99      {off99:>8.3} ms {on99:>8.3} ms   {:.4}", on99 / off99);
    println!("  export: {stats:?}");
    let expected = if control { 0 } else { (pairs as u64 + 50) * 5 };
    assert!(
        stats.exported >= expected,
        "every span of the traced service reached the backend: {} of {expected}",
        stats.exported
    );
}
