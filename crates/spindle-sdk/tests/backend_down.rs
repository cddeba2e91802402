//! The backend is down: a service whose SDK exports to a closed port keeps its throughput
//! within 2% of the same service without the SDK, its memory stays bounded, and the drops are
//! counted and reported at most once per interval.
//!
//! This binary holds a single test so the process CPU time it measures is its own.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use spindle_sdk::tracing::{Dispatch, Event, Level, Subscriber};
use spindle_sdk::tracing_subscriber::layer::{Context, SubscriberExt};
use spindle_sdk::tracing_subscriber::{Layer, Registry};
use support::workload::{calibrate, handle_request, median, process_cpu_time, resident_bytes, threads_cpu};

/// Counts the SDK's warnings about dropped spans and failed exports.
struct WarningCounter {
    drops: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
}

impl<S: Subscriber> Layer<S> for WarningCounter {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() != Level::WARN || !meta.target().starts_with("spindle_sdk") {
            return;
        }
        let mut fields = String::new();
        event.record(&mut |f: &tracing::field::Field, v: &dyn std::fmt::Debug| {
            fields.push_str(&format!("{}={v:?} ", f.name()));
        });
        if fields.contains("dropped") {
            self.drops.fetch_add(1, Ordering::Relaxed);
        } else if fields.contains("export failed") {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[derive(Debug, Default)]
struct Round {
    cpu: Duration,
    wall: Duration,
}

impl std::ops::AddAssign for Round {
    fn add_assign(&mut self, other: Round) {
        self.cpu += other.cpu;
        self.wall += other.wall;
    }
}

fn run_round(requests: u64, strikes: usize) -> Round {
    let (cpu, wall) = (process_cpu_time(), Instant::now());
    for id in 0..requests {
        std::hint::black_box(handle_request(id, strikes));
    }
    Round { cpu: process_cpu_time() - cpu, wall: wall.elapsed() }
}

/// Runs `pairs` requests with the SDK off and on in alternation, request by request, so
/// drift and neighbours affect both alike, and returns throughput with the SDK over without.
///
/// Throughput is requests per second of CPU (the process's, export thread included): the
/// median extra CPU of a request over the same request without the SDK run just before it.
/// Medians of adjacent pairs cancel what neighbours on a shared machine do to CPU time;
/// wall-clock throughput is reported, not asserted.
fn measure_throughput_ratio(pairs: usize, strikes: usize, sdk_off: &Dispatch) -> f64 {
    let threads_before = threads_cpu();
    let (mut off, mut on) = (Round::default(), Round::default());
    let (mut off_cpu, mut extra_cpu) = (Vec::new(), Vec::new());
    for _ in 0..pairs {
        let a = tracing::dispatcher::with_default(sdk_off, || run_round(1, strikes));
        let b = run_round(1, strikes);
        off_cpu.push(a.cpu.as_secs_f64());
        extra_cpu.push(b.cpu.as_secs_f64() - a.cpu.as_secs_f64());
        off += a;
        on += b;
    }
    let (typical, extra) = (median(&mut off_cpu), median(&mut extra_cpu));
    let cpu_throughput_ratio = typical / (typical + extra);
    let total_cpu_ratio = off.cpu.as_secs_f64() / on.cpu.as_secs_f64();
    let wall_throughput_ratio = off.wall.as_secs_f64() / on.wall.as_secs_f64();
    let per_span = extra / 4.0 * 1e6;
    println!(
        "backend down: throughput with sdk / without = {cpu_throughput_ratio:.4} (median cpu), \
         {total_cpu_ratio:.4} (total cpu), {wall_throughput_ratio:.4} (wall); \
         ~{per_span:.1} us of cpu per span"
    );
    // Where the CPU went, by thread: a ratio under the bar then says which thread spent it.
    let threads: Vec<String> = threads_cpu()
        .into_iter()
        .map(|(tid, name, cpu)| {
            let before = threads_before.iter().find(|(t, ..)| *t == tid).map_or(Duration::ZERO, |(.., c)| *c);
            format!("{name} {:.1} ms", (cpu.saturating_sub(before)).as_secs_f64() * 1e3)
        })
        .collect();
    println!("  cpu by thread during the measurement: {}", threads.join(", "));
    cpu_throughput_ratio
}

#[test]
fn a_dead_backend_costs_under_two_percent_and_bounded_memory() {
    let test_started = Instant::now();
    let closed_port = support::free_port();
    let (layer, guard) = spindle_sdk::builder("backend-down")
        .endpoint(format!("http://127.0.0.1:{closed_port}"))
        .sampler(spindle_sdk::SamplerConfig::AlwaysOn)
        .max_queue_size(2048)
        .export_timeout(Duration::from_millis(500))
        .drop_log_interval(Duration::from_secs(1))
        .into_layer::<Registry>()
        .expect("init with nothing listening succeeds");
    let (drops, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let counter = WarningCounter { drops: Arc::clone(&drops), failures: Arc::clone(&failures) };
    // Global, so the SDK's own warnings (logged from its export thread) are seen too.
    tracing::subscriber::set_global_default(Registry::default().with(layer).with(counter))
        .expect("first subscriber of this process");
    let sdk_off = Dispatch::none();

    // Throughput: a ~50 ms CPU-bound request (four spans, eleven attributes), with the SDK
    // off and on in alternation, request by request, so drift and neighbours affect both
    // alike. Tests run unoptimised, where a span costs ~10x more than in release (see
    // docs/PERFORMANCE.md), hence the long request.
    let strikes = calibrate(Duration::from_millis(50));
    let pairs = 60;
    // With the SDK first: tracing caches per call site whether anyone listens, and a call
    // site first hit with no subscriber would stay off for the SDK too.
    run_round(2, strikes);
    tracing::dispatcher::with_default(&sdk_off, || run_round(2, strikes));
    // A burst of work from neighbours on a shared machine can push one measurement under the
    // bar (the SDK costs ~1% here, unoptimised), so a failed measurement is taken again, up
    // to three times; an SDK that really cost 2% fails all three.
    let mut attempts = Vec::new();
    for _ in 0..3 {
        let ratio = measure_throughput_ratio(pairs, strikes, &sdk_off);
        attempts.push(ratio);
        if ratio >= 0.98 {
            break;
        }
    }
    let stats = guard.stats();
    let best = attempts.iter().copied().fold(0.0_f64, f64::max);
    assert!(best >= 0.98, "a dead backend must cost under 2% throughput: ratios {attempts:.4?}, {stats:?}");
    assert_eq!(stats.exported, 0, "nothing can be exported to a closed port");
    let _ = guard.flush(); // fails (nothing listens), but settles the last batch's count
                           // On a loaded machine the export thread may still be getting to the last spans.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut settled = guard.stats();
    while settled.failed + settled.dropped < 4 * pairs as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        settled = guard.stats();
    }
    assert!(settled.failed + settled.dropped >= 4 * pairs as u64, "the traced requests made spans: {settled:?}");

    // Memory: a burst of spans far beyond the queue, as fast as they can be made.
    let before = resident_bytes();
    let burst = Instant::now();
    let mut made = 0_u64;
    while burst.elapsed() < Duration::from_secs(3) {
        for _ in 0..1000 {
            tracing::info_span!("burst", n = made as i64).in_scope(|| {});
            made += 1;
        }
    }
    let growth = resident_bytes().saturating_sub(before);
    let stats = guard.stats();
    println!("burst: {made} spans in 3 s, rss growth {} KiB; {stats:?}", growth / 1024);
    assert!(growth < 32 << 20, "memory bounded: grew {growth} bytes for {made} spans");
    assert!(stats.dropped > 0, "the bounded queue dropped spans: {stats:?}");
    assert!(
        // At most a queue's worth waits, and a queue's worth is in the failing export.
        stats.dropped + stats.failed + 2 * 2048 >= made,
        "every span is queued, exported, failed or dropped: made {made}, {stats:?}"
    );

    // Reporting: drops and failures are logged, at most once per interval (1 s) each.
    std::thread::sleep(Duration::from_millis(1500));
    let (drop_logs, failure_logs) = (drops.load(Ordering::Relaxed), failures.load(Ordering::Relaxed));
    // At most one warning of each kind per started second of the test, plus the first.
    let elapsed_intervals = test_started.elapsed().as_secs() + 2;
    println!("warnings: {drop_logs} about drops, {failure_logs} about failed exports");
    assert!(drop_logs >= 1, "drops are reported");
    assert!(failure_logs >= 1, "failed exports are reported");
    assert!(drop_logs <= elapsed_intervals && failure_logs <= elapsed_intervals);
    let started = Instant::now();
    drop(guard);
    let shutdown = started.elapsed();
    println!("guard shutdown with the backend down: {shutdown:?}");
    assert!(shutdown < Duration::from_secs(7), "shutdown is bounded");
}
