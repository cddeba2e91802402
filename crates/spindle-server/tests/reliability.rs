//! The reliability suite: the whole `spindle` binary under overload, `kill -9` under load
//! and a full disk, each reconciled against what its clients were told
//! (docs/RELIABILITY.md). These run in `cargo test`; `scripts/reliability` runs the long
//! variants (release build, 60 s of overload) through the environment variables read here.

#[path = "reliability/harness.rs"]
mod harness;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use harness::{env_or, figure, missing_or_damaged, Batches, Client, Outcome, Rng, Server, Tmpfs, SERVICE};

/// The tests run one at a time: each measures the server on a 2-core machine, and the
/// overload test's capacity would be another test's load.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Trace ids unique to one test run: a per-run tag above a counter, so a rerun on a reused
/// directory could never match an older run's traces.
struct Ids {
    tag: u128,
    next: AtomicU64,
}

impl Ids {
    fn new() -> Ids {
        let clock = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
        Ids { tag: u128::from(clock | 1) << 64, next: AtomicU64::new(1) }
    }

    fn batch(&self, traces: usize) -> Vec<u128> {
        let first = self.next.fetch_add(traces as u64, Ordering::Relaxed);
        (0..traces as u64).map(|k| self.tag | u128::from(first + k)).collect()
    }
}

fn sorted(ids: &[u128]) -> Vec<u128> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids
}

/// What a set of clients were told, request by request.
#[derive(Default)]
struct Ledger {
    /// Trace ids of acknowledged batches.
    acked: Vec<u128>,
    /// Trace ids of refused batches, and the answers seen.
    refused: Vec<u128>,
    refused_answers: std::collections::BTreeMap<String, u64>,
    /// HTTP refusals without `Retry-After`.
    refused_without_retry_after: u64,
    failed: Vec<String>,
    acked_batches: u64,
    refused_batches: u64,
}

impl Ledger {
    fn record(&mut self, protocol: &str, ids: &[u128], outcome: Outcome) {
        match outcome {
            Outcome::Acked => {
                self.acked.extend_from_slice(ids);
                self.acked_batches += 1;
            }
            Outcome::Refused { answer, retry_after } => {
                self.refused.extend_from_slice(ids);
                self.refused_batches += 1;
                if protocol == "http" && !retry_after {
                    self.refused_without_retry_after += 1;
                }
                *self.refused_answers.entry(answer).or_default() += 1;
            }
            Outcome::Failed(e) => self.failed.push(e),
        }
    }
}

/// Samples the server's RSS every 100 ms until stopped: the peak and one sample a second, in
/// kB, with the ingest queue's and the store head's spans (`/metrics`) at the same seconds,
/// to tell which holds the memory.
struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<RssSamples>>,
}

#[derive(Default)]
struct RssSamples {
    peak_kb: u64,
    per_second_kb: Vec<u64>,
    queue_spans: Vec<u64>,
    head_spans: Vec<u64>,
}

impl RssSampler {
    fn start(pid: u32, admin: std::net::SocketAddr) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let client = harness::blocking_client(Duration::from_secs(1));
            let mut samples = RssSamples::default();
            for n in 0u64.. {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                if let Some((rss, _)) = harness::rss_kb(pid) {
                    samples.peak_kb = samples.peak_kb.max(rss);
                    if n.is_multiple_of(10) {
                        samples.per_second_kb.push(rss);
                        let text = client
                            .get(format!("http://{admin}/metrics"))
                            .send()
                            .and_then(|r| r.text())
                            .unwrap_or_default();
                        let metrics = harness::Metrics(text);
                        samples.queue_spans.push(metrics.sum("spindle_ingest_queue_spans", &[]));
                        samples.head_spans.push(metrics.sum("spindle_store_head_spans", &[]));
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            samples
        });
        RssSampler { stop, thread: Some(thread) }
    }

    fn stop(mut self) -> RssSamples {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// Overload at twice the measured capacity: the server stays up with bounded RSS, answers
/// backpressure, and every span sent is either stored or refused, reconciled exactly
/// between the clients' ledger, `/metrics`, the store's figures and reads by trace id.
#[test]
fn overload_at_twice_capacity_is_refused_with_backpressure_and_reconciles_exactly() {
    let _serial = serial();
    let capacity_secs: u64 = env_or("SPINDLE_RELIABILITY_CAPACITY_SECS", 5);
    let overload_secs: u64 = env_or("SPINDLE_RELIABILITY_OVERLOAD_SECS", 15);
    // Generous: the default budgets (ingest queue, in-flight bytes, four heads of 16 MiB)
    // bound the server well below it; unbounded buffering of 2x input crosses it.
    // Measured today with 1000-span requests: 0.9-1.2 GB in the debug CI variant, a 1.2 GB
    // plateau in release (docs/RELIABILITY.md).
    let rss_bound_mb: u64 = env_or("SPINDLE_RELIABILITY_RSS_BOUND_MB", 2048);
    let dir = tempfile::tempdir().unwrap();
    // Server flags to compare settings under the same overload, e.g. "--queue-spans 100000".
    let server_args: String = env_or("SPINDLE_RELIABILITY_SERVER_ARGS", String::new());
    let server = Server::start(dir.path(), &server_args.split_whitespace().collect::<Vec<_>>());
    let rt = runtime();
    // Requests of 1000 spans (100 kB), `spindle loadgen`'s default: large enough that a
    // refused HTTP body is still being written when the 429 is due.
    let batches = Arc::new(Batches::new(env_or("SPINDLE_RELIABILITY_OVERLOAD_BATCH_TRACES", 100), 10));
    let per_batch = batches.spans_per_batch();
    let ids = Arc::new(Ids::new());
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let timeout = Duration::from_secs(120);
    let (http, grpc) = (Client::http(&server, timeout), Client::grpc(&server, timeout, &rt));
    let (rss_idle_kb, _) = server.rss_kb();
    let sampler = RssSampler::start(server.pid(), server.admin);

    // Capacity: 16 connections flat out (as `spindle loadgen` sends), a quarter over gRPC.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(capacity_secs);
    let workers: Vec<_> = (0..16)
        .map(|w| {
            let mut client = if w % 4 == 3 { grpc.clone() } else { http.clone() };
            let (batches, ids, ledger) = (Arc::clone(&batches), Arc::clone(&ids), Arc::clone(&ledger));
            rt.spawn(async move {
                while Instant::now() < deadline {
                    let batch = ids.batch(batches.traces);
                    let outcome = client.export(&batches, &batch).await;
                    ledger.lock().unwrap().record(client.protocol(), &batch, outcome);
                }
            })
        })
        .collect();
    for w in workers {
        rt.block_on(w).unwrap();
    }
    let capacity_elapsed = started.elapsed().as_secs_f64();
    let capacity_acked = ledger.lock().unwrap().acked_batches * per_batch;
    let capacity = capacity_acked as f64 / capacity_elapsed;
    assert!(capacity_acked > 0, "nothing was acknowledged flat out\n{}", server.log_tail());

    // Overload: requests offered on a fixed schedule at twice that rate whatever the answers
    // (an open loop, as many independent clients are), a quarter of them over gRPC. The
    // clients keep at most 1000 requests in flight (more than the server's per-listener
    // concurrency limits); what the schedule could not send counts as not offered.
    // Below the server's 1024 connections per listener: HTTP/1.1 clients open one connection per
    // request in flight, and connections past that cap wait to be accepted, which would stall
    // the clients rather than be answered.
    const MAX_IN_FLIGHT: usize = 1000;
    let rate = 2.0 * capacity;
    let requests_per_sec = rate / per_batch as f64;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let mut not_offered = 0u64;
    let started = Instant::now();
    let mut issued = 0u64;
    let mut overload_elapsed = 0.0;
    rt.block_on(async {
        while started.elapsed() < Duration::from_secs(overload_secs) {
            let due = (started.elapsed().as_secs_f64() * requests_per_sec) as u64;
            while issued < due {
                issued += 1;
                let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
                    not_offered += 1;
                    continue;
                };
                let mut client = if issued.is_multiple_of(4) { grpc.clone() } else { http.clone() };
                let (batches, ids, ledger) = (Arc::clone(&batches), Arc::clone(&ids), Arc::clone(&ledger));
                tokio::spawn(async move {
                    let batch = ids.batch(batches.traces);
                    let outcome = client.export(&batches, &batch).await;
                    ledger.lock().unwrap().record(client.protocol(), &batch, outcome);
                    drop(permit);
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        overload_elapsed = started.elapsed().as_secs_f64();
        // Every answer is in before the books are closed.
        drop(in_flight.acquire_many(MAX_IN_FLIGHT as u32).await.unwrap());
    });
    let drain_elapsed = started.elapsed().as_secs_f64() - overload_elapsed;
    let samples = sampler.stop();
    let peak_sampled_kb = samples.peak_kb;
    let (rss_end_kb, rss_hwm_kb) = server.rss_kb();

    let ledger = ledger.lock().unwrap();
    let offered = issued - not_offered;
    assert!(
        ledger.failed.is_empty(),
        "{} requests got no answer or a wrong one, e.g. {:?}\n{}",
        ledger.failed.len(),
        &ledger.failed[..ledger.failed.len().min(5)],
        server.log_tail()
    );
    assert!(ledger.refused_batches > 0, "twice the capacity was never answered with backpressure: {} batches acknowledged, {} not offered (client in-flight cap)", ledger.acked_batches, not_offered);
    assert_eq!(ledger.refused_without_retry_after, 0, "HTTP backpressure answers without Retry-After");
    let peak_kb = peak_sampled_kb.max(rss_hwm_kb);

    // The server's books against the clients'.
    let metrics = server.metrics();
    let acked_spans = ledger.acked_batches * per_batch;
    let refused_spans = ledger.refused_batches * per_batch;
    let accepted = metrics.sum("spindle_spans_accepted_total", &[]);
    let received = metrics.sum("spindle_spans_received_total", &[]);
    let invalid = metrics.sum("spindle_spans_dropped_total", &["reason=\"invalid\""]);
    let dropped = metrics.sum("spindle_spans_dropped_total", &[]) - invalid;
    // Requests refused before they were decoded (admission limits) carry no span count on
    // the server; each of ours held `per_batch` spans.
    let admission_refusals = metrics.sum("spindle_limit_hits_total", &["limit=\"concurrent_requests\""])
        + metrics.sum("spindle_limit_hits_total", &["limit=\"inflight_bytes\""]);
    let books = format!(
        "client: {} batches acked ({acked_spans} spans), {} refused ({refused_spans} spans) {:?}; server: \
         received {received}, accepted {accepted}, dropped {:?}, limit hits {:?}",
        ledger.acked_batches,
        ledger.refused_batches,
        ledger.refused_answers,
        metrics.by_labels("spindle_spans_dropped_total"),
        metrics.by_labels("spindle_limit_hits_total"),
    );
    assert_eq!(invalid, 0, "{books}");
    assert_eq!(accepted, acked_spans, "spans accepted by the server vs acknowledged to clients: {books}");
    assert_eq!(received, accepted + dropped, "received = accepted + dropped: {books}");
    assert_eq!(dropped + admission_refusals * per_batch, refused_spans, "spans refused: {books}");
    // What the store holds: exactly the acknowledged spans.
    let stored =
        |m: &harness::Metrics| m.sum("spindle_store_head_spans", &[]) + m.sum("spindle_store_block_spans", &[]);
    assert_eq!(stored(&metrics), acked_spans, "spans in the store vs acknowledged: {books}");

    // Read back: acknowledged traces whole, refused ones absent (a sample of each when there
    // are many, spread over the run).
    let sample = |ids: &[u128], n: usize| ids.iter().step_by((ids.len() / n).max(1)).copied().collect::<Vec<_>>();
    let acked_sample = sample(&ledger.acked, 3000);
    let bad = rt.block_on(missing_or_damaged(server.query, &acked_sample, batches.spans));
    assert!(
        bad.is_empty(),
        "{} of {} acknowledged traces read back not whole: {:?}",
        bad.len(),
        acked_sample.len(),
        &bad[..bad.len().min(5)]
    );
    let refused_sample = sample(&ledger.refused, 300);
    let found = rt.block_on(missing_or_damaged(server.query, &refused_sample, batches.spans));
    assert_eq!(
        found.len(),
        refused_sample.len(),
        "refused traces were stored: {} of {}",
        refused_sample.len() - found.len(),
        refused_sample.len()
    );
    let (status, _) = server.get("/api/services");
    assert_eq!(status, 200);

    let t = "overload";
    figure(
        t,
        format_args!(
            "capacity {:.0} spans/s ({capacity_acked} spans acked in {capacity_elapsed:.1} s, 16 connections flat out)",
            capacity
        ),
    );
    figure(
        t,
        format_args!(
            "offered {:.0} spans/s for {overload_elapsed:.1} s at a target of {rate:.0} (2x): {offered} requests of \
             {per_batch} spans, {not_offered} not offered (client cap); acknowledged {:.0} spans/s meanwhile; the last \
             answers took {drain_elapsed:.1} s more",
            offered as f64 * per_batch as f64 / overload_elapsed,
            (acked_spans - capacity_acked) as f64 / (overload_elapsed + drain_elapsed),
        ),
    );
    figure(t, format_args!("whole run: acked {acked_spans} spans, refused {refused_spans} spans ({:?}), failed 0; server accepted {accepted}, dropped {dropped}, admission refusals {admission_refusals} requests", ledger.refused_answers));
    figure(
        t,
        format_args!(
            "RSS idle {} MB, peak {} MB (VmHWM {} MB, sampled {} MB), end {} MB",
            rss_idle_kb / 1024,
            peak_kb / 1024,
            rss_hwm_kb / 1024,
            peak_sampled_kb / 1024,
            rss_end_kb / 1024
        ),
    );
    let mb: Vec<u64> = samples.per_second_kb.iter().map(|kb| kb / 1024).collect();
    figure(t, format_args!("RSS each second, MB: {mb:?}"));
    let thousands = |v: &[u64]| v.iter().map(|n| n / 1000).collect::<Vec<_>>();
    figure(t, format_args!("ingest queue each second, thousand spans: {:?}", thousands(&samples.queue_spans)));
    figure(t, format_args!("store head each second, thousand spans: {:?}", thousands(&samples.head_spans)));
    if !server_args.is_empty() {
        figure(t, format_args!("server flags: {server_args}"));
    }
    // Last, so that a run over the bound still prints its figures.
    assert!(peak_kb < rss_bound_mb * 1024, "RSS peaked at {} MB, over the bound of {rss_bound_mb} MB", peak_kb / 1024);
}

/// `kill -9` every 1–4 s under load, 20 rounds: every acknowledged span is there after
/// each restart, once.
#[test]
fn kill_9_under_load_loses_no_acknowledged_span() {
    let _serial = serial();
    let rounds: usize = env_or("SPINDLE_RELIABILITY_KILL_ROUNDS", 20);
    let (mut rng, seed) = Rng::from_env_or_clock("SPINDLE_RELIABILITY_SEED");
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    let rt = runtime();
    // Each acknowledged trace is read back by id at the end, which bounds how many the CI
    // variant sends: one trace of 20 spans per batch, each client pausing between batches.
    let pause = Duration::from_millis(env_or("SPINDLE_RELIABILITY_KILL_PAUSE_MS", 25));
    let batches = Arc::new(Batches::new(1, 20));
    let ids = Arc::new(Ids::new());
    let acked = Arc::new(Mutex::new(Vec::<u128>::new()));
    let sent = Arc::new(Mutex::new(Vec::<u128>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let timeout = Duration::from_secs(30);
    // Four clients, two per protocol, each sending its next batch `pause` after the last one
    // was answered; a failed batch is not retried (its ids may or may not be stored).
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let mut client =
                if w % 2 == 0 { Client::http(&server, timeout) } else { Client::grpc(&server, timeout, &rt) };
            let (batches, ids, acked, sent, stop) =
                (Arc::clone(&batches), Arc::clone(&ids), Arc::clone(&acked), Arc::clone(&sent), Arc::clone(&stop));
            rt.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let batch = ids.batch(batches.traces);
                    sent.lock().unwrap().extend_from_slice(&batch);
                    match client.export(&batches, &batch).await {
                        Outcome::Acked => acked.lock().unwrap().extend_from_slice(&batch),
                        // The server is down: retry as a client's exporter would, not in a tight loop.
                        _ => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                    tokio::time::sleep(pause).await;
                }
            })
        })
        .collect();
    let mut ready_times = Vec::new();
    let mut acked_at_kill = vec![0usize];
    for round in 1..=rounds {
        std::thread::sleep(rng.between(Duration::from_secs(1), Duration::from_secs(4)));
        server.kill9();
        let acked_now = acked.lock().unwrap().len();
        assert!(
            acked_now > *acked_at_kill.last().unwrap(),
            "round {round}: nothing was acknowledged since the last restart (seed {seed})\n{}",
            server.log_tail()
        );
        acked_at_kill.push(acked_now);
        if round == rounds {
            // The books close with the last kill: what was acknowledged is final.
            stop.store(true, Ordering::Relaxed);
        }
        ready_times.push(server.spawn());
    }
    for w in workers {
        rt.block_on(w).unwrap();
    }
    let acked = sorted(&acked.lock().unwrap());
    let sent = sorted(&sent.lock().unwrap());
    let bad = rt.block_on(missing_or_damaged(server.query, &acked, batches.spans));
    assert!(
        bad.is_empty(),
        "{} of {} acknowledged traces lost or damaged after {rounds} kills (seed {seed}), e.g. {:?}\n{}",
        bad.len(),
        acked.len(),
        &bad[..bad.len().min(5)],
        server.log_tail()
    );
    // Batches sent but not acknowledged (in flight at a kill) are stored whole or not at
    // all; with them the store must hold exactly the spans readable, none twice.
    let unacked: Vec<u128> = sent.iter().filter(|id| acked.binary_search(id).is_err()).copied().collect();
    let unacked_bad = rt.block_on(missing_or_damaged(server.query, &unacked, batches.spans));
    assert!(
        unacked_bad.iter().all(|(_, found)| found.is_none()),
        "unacknowledged traces stored in part: {unacked_bad:?}"
    );
    let readable = (acked.len() + unacked.len() - unacked_bad.len()) * batches.spans;
    let metrics = server.metrics();
    let stored = metrics.sum("spindle_store_head_spans", &[]) + metrics.sum("spindle_store_block_spans", &[]);
    assert_eq!(stored as usize, readable, "spans in the store vs spans readable (more: some stored twice)");

    ready_times.sort();
    let t = "kill -9";
    figure(t, format_args!("{rounds} rounds (seed {seed}): {} spans acknowledged in {} batches, lost 0, duplicated 0; {} unacknowledged batches stored whole, {} not stored", acked.len() * batches.spans, acked.len() / batches.traces, (unacked.len() - unacked_bad.len()) / batches.traces, unacked_bad.len() / batches.traces));
    figure(
        t,
        format_args!(
            "restart to ready: median {:?}, max {:?}",
            ready_times[ready_times.len() / 2],
            ready_times.last().unwrap()
        ),
    );
}

/// Fills the filesystem with a file; returns its size.
fn fill(path: &std::path::Path) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let mut written = 0u64;
    for chunk in [1 << 20, 4096, 512] {
        let buf = vec![0xa5u8; chunk];
        while file.write_all(&buf).is_ok() {
            written += chunk as u64;
        }
    }
    written
}

/// A full disk: writes are refused with backpressure (never a crash or a hang), reads keep
/// working, ingest resumes by itself once space returns, and nothing acknowledged before,
/// during or after is lost, also across a `kill -9` and restart.
#[test]
fn disk_full_refuses_writes_keeps_reads_and_resumes_by_itself() {
    let _serial = serial();
    let fs = Tmpfs::mount("64m");
    let data = fs.path.join("data");
    std::fs::create_dir(&data).unwrap();
    let mut server = Server::start(&data, &[]);
    let rt = runtime();
    let batches = Batches::new(10, 10);
    // While the disk is full clients send the size `spindle loadgen` sends, 1000 spans: more
    // refused bytes than the log's write buffer holds (1 MiB).
    let large = Batches::new(100, 10);
    let ids = Ids::new();
    // A hung write fails the test through this timeout.
    let timeout = Duration::from_secs(30);
    let mut clients = [Client::http(&server, timeout), Client::grpc(&server, timeout, &rt)];
    let mut ledger = Ledger::default();
    let mut send = |batches: &Batches, ledger: &mut Ledger, i: usize| {
        let client = &mut clients[i % 2];
        let batch = ids.batch(batches.traces);
        let outcome = rt.block_on(client.export(batches, &batch));
        ledger.record(client.protocol(), &batch, outcome.clone());
        outcome
    };
    for i in 0..20 {
        assert_eq!(send(&batches, &mut ledger, i), Outcome::Acked, "before the disk is full\n{}", server.log_tail());
    }
    let before = ledger.acked.clone();

    let filler = fs.path.join("filler");
    let filled = fill(&filler);
    assert!(fs.available() < 64 * 1024, "the filesystem is not full: {} bytes free", fs.available());
    // Writes: refused with backpressure, each answered within the clients' timeout.
    let mut while_full = Vec::new();
    for i in 0..30 {
        let outcome = send(&large, &mut ledger, i);
        assert!(
            !matches!(outcome, Outcome::Failed(_)),
            "a write on a full disk got {outcome:?}\n{}",
            server.log_tail()
        );
        while_full.push(outcome);
    }
    assert!(ledger.refused_batches >= 25, "writes on a full disk: {while_full:?}");
    assert_eq!(ledger.refused_without_retry_after, 0, "HTTP refusals without Retry-After: {while_full:?}");
    // Reads: the services list and every trace stored before.
    let (status, services) = server.get("/api/services");
    assert!(status == 200 && services.contains(SERVICE), "GET /api/services on a full disk: {status} {services}");
    let bad = rt.block_on(missing_or_damaged(server.query, &before, batches.spans));
    assert!(bad.is_empty(), "traces stored before the disk filled, unreadable while it is full: {bad:?}");
    assert!(server.is_running(), "the server exited on a full disk\n{}", server.log_tail());

    // Space returns: ingest resumes without a restart.
    std::fs::remove_file(&filler).unwrap();
    let freed = Instant::now();
    let mut i = 0;
    while send(&batches, &mut ledger, i) != Outcome::Acked {
        assert!(
            freed.elapsed() < Duration::from_secs(60),
            "ingest did not resume within 60 s of space returning\n{}",
            server.log_tail()
        );
        i += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let resumed_after = freed.elapsed();
    for i in 0..20 {
        assert_eq!(send(&batches, &mut ledger, i), Outcome::Acked, "after space returned\n{}", server.log_tail());
    }
    let bad = rt.block_on(missing_or_damaged(server.query, &ledger.acked, batches.spans));
    assert!(bad.is_empty(), "acknowledged traces unreadable after space returned: {bad:?}\n{}", server.log_tail());
    // A refused write is not stored later behind the client's back (its retry would be a
    // second copy).
    let refused_found = |server: &Server| {
        let absent = rt.block_on(missing_or_damaged(server.query, &ledger.refused, batches.spans));
        ledger.refused.len() - absent.iter().filter(|(_, found)| found.is_none()).count()
    };
    assert_eq!(
        refused_found(&server),
        0,
        "of {} refused traces, some were stored after space returned",
        ledger.refused.len()
    );

    // A crash now: everything acknowledged is recovered from what the full disk left.
    server.kill9();
    let ready = server.spawn();
    let bad = rt.block_on(missing_or_damaged(server.query, &ledger.acked, batches.spans));
    assert!(
        bad.is_empty(),
        "{} of {} acknowledged traces lost after kill -9 and restart: {:?}\n{}",
        bad.len(),
        ledger.acked.len(),
        &bad[..bad.len().min(5)],
        server.logs()
    );
    assert_eq!(
        refused_found(&server),
        0,
        "of {} refused traces, some were stored after the restart",
        ledger.refused.len()
    );
    let set_aside: Vec<String> =
        walk(&data).into_iter().filter(|p| p.ends_with(".unread") || p.ends_with(".corrupt")).collect();
    assert!(
        set_aside.is_empty(),
        "files set aside as unreadable after the disk was full: {set_aside:?}\n{}",
        server.logs()
    );
    drop(server);

    let t = "disk full";
    figure(
        t,
        format_args!(
            "64 MiB tmpfs, filler {} MiB: {} writes refused ({:?}), {} acknowledged",
            filled >> 20,
            ledger.refused_batches,
            ledger.refused_answers,
            ledger.acked_batches
        ),
    );
    figure(t, format_args!("ingest resumed {resumed_after:?} after the filler was deleted (no restart); restart to ready after kill -9: {ready:?}"));
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path.display().to_string());
        }
    }
    out
}
