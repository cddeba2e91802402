//! What the SDK costs a service: the same CPU-bound HTTP service run without the SDK and
//! with it (100% sampling, every span exported to a live spindle), in the same process and
//! the same run, requests alternating between the two so both see the same machine. The
//! traced service can instead use another stack, so that the SDK is compared with it under
//! the same conditions.
//!
//! Reports the ratio of CPU time (the service thread, plus the stack's export threads for the
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
//! noise on this machine), `OVERHEAD_ACTIVATION=1` (the SDK with OpenTelemetry context
//! activation), `OVERHEAD_SPANS` (spans per traced request, default 5: SERVER and
//! four internal ones; more adds empty child spans, the CPU work stays the same),
//! `OVERHEAD_STACK`, the traced service's tracing stack:
//! - `spindle` (default): `tracing` spans through the SDK's layer, queue and exporter;
//! - `tracing-opentelemetry`: the same `tracing` spans and `ServerTracingLayer` through
//!   `tracing-opentelemetry` into the OpenTelemetry SDK (`BatchSpanProcessor`, the
//!   `opentelemetry-otlp` gRPC exporter);
//! - `otel`: no `tracing`: the same spans made with the OpenTelemetry API, into the same
//!   OpenTelemetry SDK pipeline;
//! - `floor`: the same `tracing` spans and `ServerTracingLayer` into a subscriber that takes
//!   every span and keeps nothing: what `tracing`'s dispatch and the layer cost by
//!   themselves, the part of the SDK's figure no subscriber can take away.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Path, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::SdkTracer;
use spindle_sdk::http::axum::ServerTracingLayer;
use spindle_sdk::tracing::Dispatch;
use spindle_sdk::SamplerConfig;
use support::stacks::{OtlpStack, BATCH_PROCESSOR_THREAD, OTLP_RUNTIME_THREAD};
use support::workload::{calibrate, handle_request_otel, handle_request_with_steps};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

fn thread_cpu_ns(tid: i32) -> u64 {
    support::workload::thread_cpu(tid).as_nanos() as u64
}

/// CPU time of each thread whose name starts with one of `prefixes` (of which the kernel
/// keeps the first 15 bytes). Read again at the end of the run, so that threads a runtime
/// starts meanwhile are counted too.
fn threads_cpu(prefixes: &[&str]) -> HashMap<i32, u64> {
    support::workload::threads_cpu()
        .into_iter()
        .filter(|(_, name, _)| prefixes.iter().any(|p| name.starts_with(&p[..p.len().min(15)])))
        .map(|(tid, _, cpu)| (tid, cpu.as_nanos() as u64))
        .collect()
}

#[derive(Clone, Copy, PartialEq)]
enum Stack {
    Spindle,
    TracingOpentelemetry,
    Otel,
    Floor,
}

impl Stack {
    fn from_env() -> Self {
        match std::env::var("OVERHEAD_STACK").as_deref() {
            Err(_) | Ok("spindle") => Self::Spindle,
            Ok("tracing-opentelemetry") => Self::TracingOpentelemetry,
            Ok("otel") => Self::Otel,
            Ok("floor") => Self::Floor,
            Ok(other) => panic!("OVERHEAD_STACK={other}: expected spindle, tracing-opentelemetry, otel or floor"),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Spindle => "spindle (spindle-sdk: its layer, queue and OTLP/gRPC exporter)",
            Self::TracingOpentelemetry => {
                "tracing-opentelemetry (tracing-opentelemetry 0.34, opentelemetry_sdk BatchSpanProcessor, \
                 opentelemetry-otlp gRPC)"
            }
            Self::Otel => {
                "otel (OpenTelemetry API, no tracing; opentelemetry_sdk BatchSpanProcessor, opentelemetry-otlp gRPC)"
            }
            Self::Floor => "floor (the same tracing spans and ServerTracingLayer into a subscriber that keeps nothing)",
        }
    }

    /// Name prefixes of the threads that export the stack's spans: their CPU is the traced
    /// service's too.
    fn export_threads(self) -> &'static [&'static str] {
        match self {
            Self::Spindle => &["spindle-sdk-exp"],
            Self::TracingOpentelemetry | Self::Otel => &[BATCH_PROCESSOR_THREAD, OTLP_RUNTIME_THREAD],
            Self::Floor => &[],
        }
    }
}

/// The export pipeline of the traced service.
enum Pipeline {
    Spindle(spindle_sdk::TracingGuard),
    Otel(OtlpStack),
    Floor,
}

/// Takes every span and keeps nothing: what `tracing`'s own dispatch and the SERVER layer
/// cost a request, below which no subscriber goes.
struct FloorSubscriber(AtomicU64);

impl tracing::Subscriber for FloorSubscriber {
    fn register_callsite(&self, _: &'static tracing::Metadata<'static>) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::always()
    }
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(self.0.fetch_add(1, Ordering::Relaxed) + 1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[derive(Clone, Copy)]
struct Work {
    /// Set again after the warm-up (shared by both services, read at each request).
    strikes: &'static AtomicUsize,
    /// Extra child spans per request.
    steps: usize,
}

async fn price(State(work): State<Work>, Path(id): Path<u64>) -> String {
    handle_request_with_steps(id, work.strikes.load(Ordering::Relaxed), work.steps).to_string()
}

async fn price_otel(State((work, tracer)): State<(Work, SdkTracer)>, Path(id): Path<u64>) -> String {
    handle_request_otel(&tracer, id, work.strikes.load(Ordering::Relaxed), work.steps).to_string()
}

/// The SERVER span of `ServerTracingLayer`, with the same name and attributes, made with the
/// OpenTelemetry API; the request is handled in its context.
async fn otel_server_span(State(tracer): State<SdkTracer>, request: Request, next: Next) -> Response {
    let method = request.method().as_str();
    let route = request.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
    let mut name = String::from(method);
    let mut attributes = Vec::with_capacity(6);
    attributes.push(KeyValue::new("http.request.method", method.to_owned()));
    if let Some(route) = route {
        name.push(' ');
        name.push_str(route);
        attributes.push(KeyValue::new("http.route", route.to_owned()));
    }
    attributes.push(KeyValue::new("url.path", request.uri().path().to_owned()));
    if let Some(scheme) = request.uri().scheme_str() {
        attributes.push(KeyValue::new("url.scheme", scheme.to_owned()));
    }
    if let Some(agent) = request.headers().get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()) {
        attributes.push(KeyValue::new("user_agent.original", agent.to_owned()));
    }
    let span = tracer.span_builder(name).with_kind(SpanKind::Server).with_attributes(attributes).start(&tracer);
    let cx = Context::current_with_span(span);
    let response = next.run(request).with_context(cx.clone()).await;
    let span = cx.span();
    let status = response.status();
    span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status.as_u16())));
    if status.is_server_error() {
        span.set_attribute(KeyValue::new("error.type", status.as_str().to_owned()));
        span.set_status(Status::error(""));
    }
    span.end();
    response
}

/// Spans the backend has accepted so far.
fn backend_spans(spindle: Option<&support::Spindle>, sink: Option<&support::OtlpSink>) -> u64 {
    if let Some(sink) = sink {
        return sink.spans().len() as u64;
    }
    let spindle = spindle.expect("a backend");
    support::http_get(&format!("http://{}/metrics", spindle.admin))
        .and_then(|(_, metrics)| {
            metrics
                .lines()
                .find_map(|l| l.strip_prefix("spindle_spans_accepted_total{protocol=\"otlp_grpc\"} ")?.parse().ok())
        })
        .unwrap_or(0)
}

/// Keeps the calling thread on the first CPU the process may use (`first`), or off it, on
/// the others, when there are others (`!first`). Both services run on the first, so neither
/// is the one the scheduler happens to leave on a slower CPU for a whole run (a virtual CPU
/// whose host core is busier, a sibling thread busy with the backend). The client runs on
/// the others, as a service's clients run elsewhere, so that its code never runs between a
/// service's requests on their CPU; the export threads and the backend run anywhere.
fn pin_first_cpu(first: bool) {
    // SAFETY: cpu_set_t is plain data; the calls read and write the one set given.
    unsafe {
        let mut allowed: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut allowed) != 0 {
            return;
        }
        let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize).filter(|&cpu| libc::CPU_ISSET(cpu, &allowed)).collect();
        let chosen = match (first, cpus.split_first()) {
            (true, Some((first, _))) => std::slice::from_ref(first),
            (false, Some((_, others))) if !others.is_empty() => others,
            _ => return,
        };
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in chosen {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Serves `app` on a named thread with its own current-thread runtime under `dispatch` (the
/// global default when `None`); returns the port and the thread id.
fn serve(name: &str, app: Router, dispatch: Option<Dispatch>) -> (u16, i32) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    let tid = Arc::new(AtomicI32::new(0));
    let tid_out = Arc::clone(&tid);
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            pin_first_cpu(true);
            tid_out.store(gettid(), Ordering::SeqCst);
            let run = || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                    let _ = axum::serve(listener, app).await;
                });
            };
            match dispatch {
                Some(dispatch) => tracing::dispatcher::with_default(&dispatch, run),
                None => run(),
            }
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
    let stack = Stack::from_env();
    let spans: usize = env_or("OVERHEAD_SPANS", 5);
    assert!(spans >= 5, "OVERHEAD_SPANS={spans}: a request has at least its 5 spans");

    let (spindle, sink) =
        if use_sink { (None, Some(support::OtlpSink::start())) } else { (Some(support::Spindle::start()), None) };
    let endpoint = spindle
        .as_ref()
        .map(|s| s.otlp_grpc.clone())
        .or_else(|| sink.as_ref().map(|s| s.grpc_endpoint.clone()))
        .expect("a backend");
    let (pipeline, sdk) = match stack {
        Stack::Spindle => {
            let builder = spindle_sdk::builder("overhead-bench")
                .endpoint(endpoint.clone())
                .sampler(SamplerConfig::AlwaysOn)
                .otel_context_activation(std::env::var("OVERHEAD_ACTIVATION").is_ok_and(|v| v == "1"));
            let (dispatch, guard) = support::stacks::spindle_dispatch(builder);
            (Pipeline::Spindle(guard), dispatch)
        }
        Stack::TracingOpentelemetry | Stack::Otel => {
            // 2048, the OpenTelemetry SDK's default queue, is the SDK's too.
            let otel = OtlpStack::new("overhead-bench", &endpoint, 2048);
            let dispatch = if stack == Stack::Otel { Dispatch::none() } else { otel.tracing_dispatch() };
            (Pipeline::Otel(otel), dispatch)
        }
        Stack::Floor => (Pipeline::Floor, Dispatch::new(FloorSubscriber(AtomicU64::new(0)))),
    };

    // Calibrated on the CPU the services are kept on: the two virtual CPUs differ in speed,
    // and the handler is meant to take `handler` where it runs.
    let strikes = std::thread::spawn(move || {
        pin_first_cpu(true);
        calibrate(handler)
    })
    .join()
    .expect("calibration");
    let strikes: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(strikes)));
    let work = Work { strikes, steps: spans - 5 };
    let app = Router::new().route("/price/{id}", get(price)).with_state(work);
    let (off_port, off_tid) = serve("svc-off", app.clone(), Some(Dispatch::none()));
    let (on_port, on_tid) = match (&pipeline, control) {
        (_, true) => serve("svc-on", app, Some(Dispatch::none())),
        (Pipeline::Otel(otel), false) if stack == Stack::Otel => {
            let app = Router::new()
                .route("/price/{id}", get(price_otel))
                .with_state((work, otel.tracer.clone()))
                .layer(axum::middleware::from_fn_with_state(otel.tracer.clone(), otel_server_span));
            serve("svc-on", app, Some(Dispatch::none()))
        }
        (_, false) => {
            // The process's default, as `init()` installs it: a span then refers to its
            // subscriber without counting a reference, as in a traced service.
            tracing::dispatcher::set_global_default(sdk).expect("the first global subscriber");
            serve("svc-on", app.layer(ServerTracingLayer::new()), None)
        }
    };
    for prefix in stack.export_threads() {
        assert!(!threads_cpu(&[prefix]).is_empty(), "an export thread named {prefix}");
    }
    let pipeline = &pipeline;

    pin_first_cpu(false);
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
        // Calibrated again on the untraced service itself, warm: on a shared host the CPU's
        // speed drifts between start-up and the run, and the handler is meant to take
        // `handler` in the run.
        let mut untraced: Vec<f64> = Vec::with_capacity(21);
        for id in 0..21 {
            let before = cpu(&[off_tid]);
            call(off_port, id).await;
            untraced.push((cpu(&[off_tid]) - before) as f64);
        }
        let measured = support::workload::median(&mut untraced);
        let calibrated = work.strikes.load(Ordering::Relaxed);
        let strikes = ((calibrated as f64 * handler.as_nanos() as f64 / measured).round() as usize).max(1);
        work.strikes.store(strikes, Ordering::Relaxed);
        let (off_cpu0, on_cpu0, exp_cpu0) = (cpu(&[off_tid]), cpu(&[on_tid]), threads_cpu(stack.export_threads()));
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
        // Let the last batch leave before reading the exporter's CPU. The OpenTelemetry
        // SDK's batch processor exports every 5 s by default, so it is flushed.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        if let Pipeline::Otel(otel) = pipeline {
            otel.flush();
        }
        let off_cpu = cpu(&[off_tid]) - off_cpu0;
        let export_cpu = threads_cpu(stack.export_threads())
            .into_iter()
            .map(|(tid, ns)| ns - exp_cpu0.get(&tid).copied().unwrap_or(0))
            .sum::<u64>();
        let on_cpu = cpu(&[on_tid]) - on_cpu0 + export_cpu;
        // Paired: the median over adjacent pairs of the extra CPU of the traced request, which
        // a preemption or a cache flush by another process on this shared machine moves far
        // less than it moves the totals.
        let mut extra: Vec<f64> = on_req.iter().zip(&off_req).map(|(on, off)| on - off).collect();
        let paired = (support::workload::median(&mut extra), support::workload::median(&mut off_req));
        (off_cpu, on_cpu, export_cpu, off_lat, on_lat, wall, paired, (calibrated, measured))
    });
    let (off_cpu, on_cpu, export_cpu, mut off_lat, mut on_lat, wall, (extra_ns, typical_ns), (calibrated, measured)) =
        result;
    let stats = match pipeline {
        Pipeline::Spindle(guard) => {
            guard.flush().expect("flush");
            Some(guard.stats())
        }
        // Flushed before its export threads' CPU was read.
        Pipeline::Otel(_) | Pipeline::Floor => None,
    };
    off_lat.sort_by(f64::total_cmp);
    on_lat.sort_by(f64::total_cmp);
    let (off50, on50) = (percentile(&off_lat, 0.5), percentile(&on_lat, 0.5));
    let (off99, on99) = (percentile(&off_lat, 0.99), percentile(&on_lat, 0.99));
    let per_request = |ns: u64| ns as f64 / pairs as f64 / 1e3;

    println!("overhead benchmark: {pairs} requests per side, ~{handler:?} CPU-bound handler");
    println!("  stack: {}", stack.describe());
    println!("  backend: {} at {endpoint}", if use_sink { "in-process OTLP sink" } else { "spindle" });
    if control {
        println!("  CONTROL RUN: neither service is traced");
    } else {
        println!("  spans per traced request: {spans} (SERVER + {} internal), sampling 100%", spans - 1);
    }
    println!(
        "  handler: {calibrated} strikes took {:.0} us warm, run with {}",
        measured / 1e3,
        work.strikes.load(Ordering::Relaxed)
    );
    println!("  run took {wall:.1?}");
    println!("                      sdk off     sdk on   on/off");
    println!(
        "  cpu per request  {:>8.1} us {:>8.1} us   {:.4}",
        per_request(off_cpu),
        per_request(on_cpu),
        on_cpu as f64 / off_cpu as f64
    );
    println!(
        "    of which export threads      {:>8.1} us ({:.2} us per span)",
        per_request(export_cpu),
        per_request(export_cpu) / spans as f64
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
    let expected = if control || stack == Stack::Floor { 0 } else { (pairs as u64 + 50) * spans as u64 };
    // The backend's count may lag its acknowledgement of the last export a little.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut received = backend_spans(spindle.as_ref(), sink.as_ref());
    while received < expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        received = backend_spans(spindle.as_ref(), sink.as_ref());
    }
    match stats {
        Some(stats) => println!("  export: {stats:?}; backend accepted {received} spans"),
        None => println!("  export: backend accepted {received} spans"),
    }
    if let Some(stats) = stats {
        assert!(
            stats.exported >= expected,
            "every span of the traced service was exported: {} of {expected}",
            stats.exported
        );
    }
    assert!(received >= expected, "every span of the traced service reached the backend: {received} of {expected}");
}
