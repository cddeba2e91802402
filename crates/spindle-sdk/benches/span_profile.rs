//! The traced request of the overhead benchmark without the network, for instruction counts.
//!
//! Runs the overhead benchmark's axum service (`ServerTracingLayer` + the four-span handler,
//! here with a near-empty workload) in-process: each request is handed straight to the
//! `Router`, on one current-thread runtime, with the SDK at 100% sampling exporting over OTLP
//! gRPC to an in-process receiver. What one request costs the service thread is then almost only the SDK.
//!
//! Run under callgrind (deterministic, unaffected by machine load), then read the inclusive
//! cost of `requests` on the main thread and divide by the number of requests:
//!
//! ```sh
//! cargo bench -p spindle-sdk --bench span_profile --no-run
//! SPAN_PROFILE_REQUESTS=2000 valgrind --tool=callgrind --separate-threads=yes \
//!     target/release/deps/span_profile-<hash>
//! callgrind_annotate --inclusive=yes callgrind.out.<pid>-01 | head -60
//! ```
//!
//! Plain `cargo bench` runs it briefly and prints the thread CPU time per request, traced and
//! untraced. `SPAN_PROFILE_MODE=off` runs only the untraced service (for a callgrind
//! baseline). `SPAN_PROFILE_EVICT_KB=4096` writes over 4 MiB before each request and reports
//! the median request: closer to the overhead benchmark, where every request starts with
//! caches that other processes have just used. `SPAN_PROFILE_ACTIVATION=1` turns the
//! OpenTelemetry context activation on.

#[path = "../tests/support/mod.rs"]
mod support;

use std::future::poll_fn;
use std::hint::black_box;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::Router;
use spindle_sdk::http::axum::ServerTracingLayer;
use spindle_sdk::tracing::Dispatch;
use spindle_sdk::SamplerConfig;
use support::workload::{handle_request, thread_cpu_time};
use tower::Service;

async fn price(State(strikes): State<usize>, Path(id): Path<u64>) -> String {
    handle_request(id, strikes).to_string()
}

/// Requests before the measured ones: call-site interest, the slab's pages, and three of the
/// export worker's cycles, so that the queue's buffers have grown to their steady size.
const WARMUP: u64 = 600;

/// Sends `count` requests through `app`; the function callgrind's figures are read from.
#[inline(never)]
async fn requests(app: &mut Router, first: u64, count: u64) {
    for id in first..first + count {
        let request = axum::http::Request::get(format!("/price/{id}")).body(Body::empty()).expect("request");
        poll_fn(|cx| Service::<axum::http::Request<Body>>::poll_ready(app, cx)).await.expect("ready");
        let response = app.call(request).await.expect("response");
        assert!(response.status().is_success());
        black_box(response);
    }
}

/// Thread CPU time per request of `count` requests through `app` under `dispatch` (the global
/// default when `None`): the mean of a hot loop, or with `evict` the median of requests each
/// preceded by writing over `evict` bytes (caches as cold as after another process ran).
fn run(app: Router, dispatch: Option<&Dispatch>, count: u64, evict: usize) -> Duration {
    let run = || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let mut app = app;
            requests(&mut app, 0, WARMUP).await;
            if evict == 0 {
                let started = thread_cpu_time();
                requests(&mut app, WARMUP, count).await;
                return (thread_cpu_time() - started) / count as u32;
            }
            let mut buffer = vec![0_u8; evict];
            let mut times = Vec::with_capacity(count as usize);
            for id in WARMUP..WARMUP + count {
                for (i, line) in buffer.chunks_mut(64).enumerate() {
                    line[0] = line[0].wrapping_add(i as u8);
                }
                black_box(&buffer);
                let started = thread_cpu_time();
                requests(&mut app, id, 1).await;
                times.push(thread_cpu_time() - started);
            }
            times.sort_unstable();
            times[times.len() / 2]
        })
    };
    match dispatch {
        Some(dispatch) => tracing::dispatcher::with_default(dispatch, run),
        None => run(),
    }
}

fn main() {
    let count: u64 = std::env::var("SPAN_PROFILE_REQUESTS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let mode = std::env::var("SPAN_PROFILE_MODE").unwrap_or_default();
    let evict = std::env::var("SPAN_PROFILE_EVICT_KB").ok().and_then(|v| v.parse().ok()).unwrap_or(0_usize) << 10;
    let app = Router::new().route("/price/{id}", get(price)).with_state(1_usize);
    if mode != "off" {
        // The SDK's own OTLP exporter, to an in-process receiver: the path a service takes.
        let sink = support::OtlpSink::start();
        let builder = spindle_sdk::builder("span-profile")
            .endpoint(sink.grpc_endpoint.clone())
            .sampler(SamplerConfig::AlwaysOn)
            .max_queue_size(1 << 16)
            .otel_context_activation(std::env::var("SPAN_PROFILE_ACTIVATION").is_ok_and(|v| v == "1"));
        let (sdk, guard) = support::stacks::spindle_dispatch(builder);
        // The process's default, as `init()` installs it.
        tracing::dispatcher::set_global_default(sdk).expect("the first global subscriber");
        let traced = run(app.clone().layer(ServerTracingLayer::new()), None, count, evict);
        guard.flush().expect("flush");
        let stats = guard.stats();
        assert_eq!(stats.exported, (count + WARMUP) * 5, "every span exported: {stats:?}");
        println!("traced:   {:>8.2} us per request (5 spans)", traced.as_secs_f64() * 1e6);
    }
    if mode != "on" {
        let untraced = run(app, Some(&Dispatch::none()), count, evict);
        println!("untraced: {:>8.2} us per request", untraced.as_secs_f64() * 1e6);
    }
}
