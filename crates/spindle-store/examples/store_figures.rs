//! Measures the embedded store alone on the reference workload and prints one line per
//! figure: durable append throughput, bytes per span on disk, trace-by-id and search
//! latency, and restart time. `docs/PERFORMANCE.md` records its output.
//!
//! cargo run --release -p spindle-store --example store_figures -- <spans> <writers> [dir]
//! cargo run --release -p spindle-store --example store_figures -- cpu

use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../tests/support/generator.rs"]
mod generator;

use generator::Generator;
use spindle_model::TraceId;
use spindle_store::{EmbeddedStore, StoreOptions, TraceQuery, TraceStore};

const TRACES_PER_BATCH: usize = 100;

/// The allocator `spindle serve` uses, so that the figures are the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn percentile(mut samples: Vec<Duration>, p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)]
}

/// CPU time of the calling thread: on a shared machine wall time measures the neighbours.
fn thread_cpu() -> Duration {
    cpu_of("/proc/thread-self/stat")
}

/// CPU time of the whole process (searches scan on worker threads).
fn process_cpu() -> Duration {
    cpu_of("/proc/self/stat")
}

fn cpu_of(path: &str) -> Duration {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command name.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// Cost of the two CPU-heavy paths, per span, in the calling thread: encoding a head into a
/// block, and scanning blocks for a generic attribute.
fn cpu_figures(start_ns: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = EmbeddedStore::open(StoreOptions {
        background: false,
        sync: spindle_store::SyncPolicy::Interval(Duration::from_secs(10)),
        ..StoreOptions::new(dir.path())
    })?;
    let mut generator = Generator::new(99, start_ns);
    let n = 200_000;
    for _ in 0..n / 1000 {
        store.append(generator.batch(100))?;
    }
    let cpu = thread_cpu();
    let wall = Instant::now();
    store.flush()?;
    let (cpu, wall) = (thread_cpu() - cpu, wall.elapsed());
    println!(
        "block write: {n} spans, cpu {:.2} s = {:.0} spans per cpu-second (wall {:.2} s)",
        cpu.as_secs_f64(),
        n as f64 / cpu.as_secs_f64().max(0.001),
        wall.as_secs_f64()
    );
    let q = TraceQuery { attributes: vec![("symbol".into(), "nope".into())], ..Default::default() };
    let cpu = process_cpu();
    store.find_trace_ids(&q)?;
    let cpu = process_cpu() - cpu;
    println!(
        "generic attribute scan: {n} spans, cpu {:.3} s = {:.0} spans per cpu-second",
        cpu.as_secs_f64(),
        n as f64 / cpu.as_secs_f64().max(0.001)
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("cpu") {
        return cpu_figures(1_700_000_000_000_000_000);
    }
    let args: Vec<String> = std::env::args().collect();
    let spans: usize = args.get(1).map_or(Ok(2_000_000), |s| s.parse())?;
    let writers: usize = args.get(2).map_or(Ok(4), |s| s.parse())?;
    let tmp = tempfile::tempdir()?;
    let dir = args.get(3).map_or_else(|| tmp.path().to_path_buf(), Into::into);
    let start_ns = 1_700_000_000_000_000_000u64;

    // Batches are generated up front so that the figure is the store's, not the generator's.
    let batches_total = spans / (TRACES_PER_BATCH * 10);
    let per_writer = batches_total / writers;
    let mut work: Vec<Vec<Vec<spindle_model::Span>>> = Vec::new();
    for w in 0..writers {
        let mut generator = Generator::new(w as u64 + 1, start_ns + w as u64);
        work.push((0..per_writer).map(|_| generator.batch(TRACES_PER_BATCH)).collect());
    }
    let sample_ids: Vec<TraceId> = work.iter().flat_map(|w| w.iter().step_by(7).map(|b| b[0].trace_id)).collect();
    let total_spans: usize = work.iter().flatten().map(Vec::len).sum();

    let store = Arc::new(EmbeddedStore::open(StoreOptions::new(&dir))?);
    let t = Instant::now();
    std::thread::scope(|s| {
        for batches in work {
            let store = Arc::clone(&store);
            s.spawn(move || {
                for b in batches {
                    store.append(b).expect("append");
                }
            });
        }
    });
    let append_secs = t.elapsed().as_secs_f64();
    println!(
        "append: {total_spans} spans, {writers} writers, sync=always: {:.0} spans/s ({:.2} s)",
        total_spans as f64 / append_secs,
        append_secs
    );
    let t = Instant::now();
    store.flush()?;
    println!("final flush: {:.2} s", t.elapsed().as_secs_f64());
    // Let background compaction settle so that the size is the steady-state one.
    let t = Instant::now();
    while store.compact()? {}
    println!("compaction to steady state: {:.2} s, {:?}", t.elapsed().as_secs_f64(), store.stats());
    drop(store);
    let bytes = EmbeddedStore::data_dir_size(&dir);
    println!("disk: {bytes} bytes, {:.1} bytes/span", bytes as f64 / total_spans as f64);

    let t = Instant::now();
    let store = EmbeddedStore::open(StoreOptions::new(&dir))?;
    println!("restart: {:.0} ms", t.elapsed().as_secs_f64() * 1000.0);

    let mut lookups = Vec::new();
    for id in sample_ids.iter().take(2000) {
        let t = Instant::now();
        let trace = store.get_trace(*id)?;
        lookups.push(t.elapsed());
        assert_eq!(trace.len(), 10);
    }
    println!(
        "trace by id ({} lookups): p50 {:?} p99 {:?}",
        lookups.len(),
        percentile(lookups.clone(), 0.5),
        percentile(lookups, 0.99)
    );

    let queries = [
        (
            "service + symbol + minDuration 10ms",
            TraceQuery {
                service: Some("quote-api".into()),
                attributes: vec![("symbol".into(), "TK042".into())],
                duration_min_nanos: Some(10_000_000),
                limit: 20,
                ..Default::default()
            },
        ),
        (
            "service + http.route + error",
            TraceQuery {
                service: Some("frontend".into()),
                attributes: vec![("http.route".into(), "/v1/frontend".into()), ("error".into(), "true".into())],
                limit: 20,
                ..Default::default()
            },
        ),
        (
            "rare: request.id of one span (full scan)",
            TraceQuery {
                attributes: vec![("request.id".into(), "0000000000000000".into())],
                limit: 20,
                ..Default::default()
            },
        ),
    ];
    for (name, q) in queries {
        let mut samples = Vec::new();
        let mut found = 0;
        for _ in 0..20 {
            let t = Instant::now();
            found = store.find_trace_ids(&q)?.len();
            samples.push(t.elapsed());
        }
        println!(
            "search {name}: {found} traces, p50 {:?} p99 {:?}",
            percentile(samples.clone(), 0.5),
            percentile(samples, 0.99)
        );
    }
    Ok(())
}
