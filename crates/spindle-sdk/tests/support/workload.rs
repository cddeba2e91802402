//! A CPU-bound request handler shaped like the seed's processor service, and process
//! measurements (CPU time, resident memory). Shared by the backend-down test and the overhead
//! benchmark so both measure the same thing.

use std::hint::black_box;
use std::time::Duration;

/// Standard normal CDF via the Abramowitz–Stegun erf approximation (7 digits).
fn norm_cdf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.3275911 * x.abs() / std::f64::consts::SQRT_2);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    let erf = 1.0 - poly * (-(x * x) / 2.0).exp();
    if x >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

/// Black–Scholes price of a European call.
fn bsm_call(spot: f64, strike: f64, years: f64, rate: f64, vol: f64) -> f64 {
    let d1 = ((spot / strike).ln() + (rate + vol * vol / 2.0) * years) / (vol * years.sqrt());
    let d2 = d1 - vol * years.sqrt();
    spot * norm_cdf(d1) - strike * (-rate * years).exp() * norm_cdf(d2)
}

/// Prices `strikes` calls around `spot`: the CPU-bound part of a request.
pub fn price_chain(spot: f64, strikes: usize) -> f64 {
    (0..strikes).map(|i| bsm_call(black_box(spot), spot * (0.5 + i as f64 / strikes as f64), 0.5, 0.01, 0.2)).sum()
}

/// One request of the seed's processor service: four spans with attributes around
/// `strikes` option prices. Without a subscriber the spans cost (almost) nothing.
pub fn handle_request(id: u64, strikes: usize) -> f64 {
    handle_request_with_steps(id, strikes, 0)
}

/// [`handle_request`] with `steps` more (empty) child spans of `process_message`: more spans
/// per request for the same CPU work.
pub fn handle_request_with_steps(id: u64, strikes: usize, steps: usize) -> f64 {
    let symbol = SYMBOLS[(id % 4) as usize];
    let span = tracing::info_span!("process_message", symbol, message.id = id, partition = 0_i64);
    let _entered = span.enter();
    let spot = tracing::info_span!("clean_data", symbol, records = 4_i64).in_scope(|| 100.0 + (id % 7) as f64);
    let value = tracing::info_span!("calculate_bsm", symbol, strikes = strikes as i64, model = "bsm", vol = 0.2)
        .in_scope(|| price_chain(spot, strikes));
    for i in 0..steps {
        tracing::info_span!("step", i = i as i64).in_scope(|| black_box(i));
    }
    tracing::info_span!("send_enriched", topic = "enriched-data", symbol, bytes = 96_i64).in_scope(|| black_box(value))
}

const SYMBOLS: [&str; 4] = ["7203", "6758", "9984", "AAPL"];

/// [`handle_request_with_steps`] through the OpenTelemetry API alone, no `tracing`: the same
/// spans with the same attributes (integers as `i64`, as the `tracing` layers record them),
/// children of the context current when it is called. Parents are passed as contexts, never
/// attached: the cheapest correct use of the API.
pub fn handle_request_otel<T>(tracer: &T, id: u64, strikes: usize, steps: usize) -> f64
where
    T: opentelemetry::trace::Tracer,
    T::Span: Send + Sync + 'static,
{
    use opentelemetry::trace::{Span as _, TraceContextExt as _};
    use opentelemetry::{Context, KeyValue};

    let symbol = SYMBOLS[(id % 4) as usize];
    let child = |cx: &Context, name: &'static str, attributes: Vec<KeyValue>| {
        tracer.span_builder(name).with_attributes(attributes).start_with_context(tracer, cx)
    };
    let process = child(
        &Context::current(),
        "process_message",
        vec![
            KeyValue::new("symbol", symbol),
            KeyValue::new("message.id", id as i64),
            KeyValue::new("partition", 0_i64),
        ],
    );
    let cx = Context::current_with_span(process);
    let mut span = child(&cx, "clean_data", vec![KeyValue::new("symbol", symbol), KeyValue::new("records", 4_i64)]);
    let spot = 100.0 + (id % 7) as f64;
    span.end();
    let mut span = child(
        &cx,
        "calculate_bsm",
        vec![
            KeyValue::new("symbol", symbol),
            KeyValue::new("strikes", strikes as i64),
            KeyValue::new("model", "bsm"),
            KeyValue::new("vol", 0.2),
        ],
    );
    let value = price_chain(spot, strikes);
    span.end();
    for i in 0..steps {
        let mut span = child(&cx, "step", vec![KeyValue::new("i", i as i64)]);
        black_box(i);
        span.end();
    }
    let mut span = child(
        &cx,
        "send_enriched",
        vec![KeyValue::new("topic", "enriched-data"), KeyValue::new("symbol", symbol), KeyValue::new("bytes", 96_i64)],
    );
    let value = black_box(value);
    span.end();
    cx.span().end();
    value
}

/// CPU time of the whole process (every thread, the SDK's export thread included).
pub fn process_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID) works on linux");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time of the calling thread only.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) works on linux");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time of thread `tid` of this process, from the scheduler's account
/// (`/proc/self/task/<tid>/schedstat`); zero for a thread that has ended.
pub fn thread_cpu(tid: i32) -> Duration {
    let ns = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

/// Each thread of the process: its id, name (the kernel keeps 15 bytes) and CPU time.
pub fn threads_cpu() -> Vec<(i32, String, Duration)> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return Vec::new() };
    dir.filter_map(|task| {
        let task = task.ok()?;
        let tid = task.file_name().to_str()?.parse().ok()?;
        let name = std::fs::read_to_string(task.path().join("comm")).ok()?.trim_end().to_owned();
        Some((tid, name, thread_cpu(tid)))
    })
    .collect()
}

/// Resident set size of the process in bytes.
pub fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm readable");
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).expect("statm has a resident field");
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * page.max(4096) as u64
}

/// The number of strikes that makes one request cost about `target` of CPU on the calling
/// thread's CPU: the median of three measurements of at least 20 ms each, in the thread's own
/// CPU time (the process's other threads are not counted).
pub fn calibrate(target: Duration) -> usize {
    let mut strikes = 1_000;
    let mut spent = Duration::ZERO;
    while spent < Duration::from_millis(20) {
        strikes *= 2;
        let start = thread_cpu_time();
        black_box(price_chain(100.0, strikes));
        spent = thread_cpu_time() - start;
    }
    let mut rates: Vec<f64> = (0..3)
        .map(|_| {
            let start = thread_cpu_time();
            black_box(price_chain(100.0, strikes));
            strikes as f64 / (thread_cpu_time() - start).as_secs_f64()
        })
        .collect();
    (median(&mut rates) * target.as_secs_f64()).max(1.0) as usize
}

/// The median of `values` (which must not be empty).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
