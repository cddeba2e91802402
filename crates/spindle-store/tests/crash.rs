//! Crash tests at store level: a child process (this test binary, re-run with an environment
//! variable) appends reference traces and prints an acknowledgement per batch; the parent
//! kills it with SIGKILL at a random moment — during ingest, a block cut or a compaction,
//! since the child's thresholds make both happen every few milliseconds — reopens the
//! store and checks that every acknowledged span is there exactly once and that every
//! block opens. Every fifth round also tears the log tail by hand.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

#[path = "support/generator.rs"]
mod generator;

use generator::Generator;
use spindle_store::{EmbeddedStore, StoreOptions, TraceStore};

const CHILD_DIR: &str = "SPINDLE_CRASH_CHILD_DIR";
const CHILD_ROUND: &str = "SPINDLE_CRASH_CHILD_ROUND";
const TRACES_PER_BATCH: usize = 20;
const ROUNDS: u64 = 20;

fn child_options(dir: &Path) -> StoreOptions {
    StoreOptions {
        head_max_bytes: 96 * 1024,
        head_max_age: Duration::from_millis(50),
        row_group_spans: 256,
        compaction_min_inputs: 3,
        compaction_max_block_spans: 20_000,
        compaction_duty_cycle: 1.0,
        compaction_busy_duty_cycle: 1.0,
        ..StoreOptions::new(dir)
    }
}

fn workload(round: u64) -> Generator {
    Generator::new(round, 1_700_000_000_000_000_000 + round * 1_000_000_000_000)
}

/// The child: appends batches until killed, acknowledging each on stdout.
#[test]
fn crash_child() {
    let (Ok(dir), Ok(round)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_ROUND)) else { return };
    let round: u64 = round.parse().expect("round number");
    let store = EmbeddedStore::open(child_options(Path::new(&dir))).expect("child opens store");
    let mut generator = workload(round);
    let mut out = std::io::stdout().lock();
    for batch in 0.. {
        store.append(generator.batch(TRACES_PER_BATCH)).expect("append");
        writeln!(out, "ack {batch}").expect("stdout");
        out.flush().expect("stdout");
    }
}

fn tear_wal_tail(dir: &Path) {
    let wal = dir.join("wal");
    let newest = std::fs::read_dir(&wal).unwrap().flatten().map(|e| e.path()).max();
    if let Some(path) = newest {
        let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        // A header promising 4 KiB followed by a few bytes: a write cut short by a crash.
        f.write_all(&4096u32.to_le_bytes()).unwrap();
        f.write_all(&[1, 2, 3, 4, 5, 6, 7]).unwrap();
    }
}

#[test]
fn kill_9_loses_nothing_acknowledged_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    // Acknowledged batches per round, and the batch that may have been in flight.
    let mut acked: Vec<(u64, usize)> = Vec::new();
    let mut seed = 0x5eed_u64;
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_ROUND, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let run_for = Duration::from_millis(100 + seed % 700);
        // A reader thread counts acks and reports the first, so the kill comes at a random
        // moment after the child got going (replaying a long log in a debug build can take
        // seconds), whatever the child is busy with then.
        let stdout = child.stdout.take().unwrap();
        let (first_ack, started) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut count = 0;
            // (libtest prints "test crash_child ... " without a newline, so the first ack
            // shares its line: acks are matched anywhere in a line.)
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("ack ") {
                    count += 1;
                    if count == 1 {
                        let _ = first_ack.send(());
                    }
                }
            }
            count
        });
        let _ = started.recv_timeout(Duration::from_secs(120));
        std::thread::sleep(run_for);
        child.kill().unwrap(); // SIGKILL
                               // Acks printed before the kill but not yet read still count as acknowledged.
        let count = reader.join().unwrap();
        let _ = child.wait();
        acked.push((round, count));
        if round % 5 == 4 {
            tear_wal_tail(dir.path());
        }

        let store = EmbeddedStore::open(StoreOptions { background: false, ..child_options(dir.path()) }).unwrap();
        let mut expected_spans = 0u64;
        for &(r, batches) in &acked {
            // Earlier rounds were looked up when they ran; here they are counted, and the
            // span total below catches any loss or duplication among them. The last round
            // looks every trace up again.
            if r != round && round != ROUNDS - 1 {
                expected_spans += (batches * TRACES_PER_BATCH * 10) as u64;
                continue;
            }
            let mut generator = workload(r);
            for _ in 0..batches {
                for trace in generator.batch(TRACES_PER_BATCH).chunks(10) {
                    let got = store.get_trace(trace[0].trace_id).unwrap();
                    assert_eq!(got.len(), 10, "round {round}: acknowledged trace {:?} of round {r}", trace[0].trace_id);
                    expected_spans += 10;
                }
            }
            // The batch in flight at the kill may or may not have made it, but only whole.
            let in_flight = generator.batch(TRACES_PER_BATCH);
            let present: usize = in_flight.chunks(10).map(|t| store.get_trace(t[0].trace_id).unwrap().len()).sum();
            assert!(present == 0 || present == in_flight.len(), "round {round}: partial batch ({present} spans)");
            expected_spans += present as u64;
        }
        let stats = store.stats();
        if stats.block_spans + stats.head_spans != expected_spans {
            for &(r, batches) in &acked {
                let mut generator = workload(r);
                let presence: Vec<usize> = (0..batches + 3)
                    .map(|_| {
                        generator
                            .batch(TRACES_PER_BATCH)
                            .chunks(10)
                            .map(|t| store.get_trace(t[0].trace_id).unwrap().len())
                            .sum()
                    })
                    .collect();
                eprintln!("round {r} acked {batches}: {:?}", &presence[batches.saturating_sub(2)..]);
            }
            for sub in ["blocks", "wal"] {
                for e in std::fs::read_dir(dir.path().join(sub)).unwrap().flatten() {
                    eprintln!("{} {}", e.path().display(), e.metadata().unwrap().len());
                    if e.path().to_string_lossy().ends_with(".json") {
                        eprintln!(
                            "{}",
                            std::fs::read_to_string(e.path()).unwrap().chars().take(400).collect::<String>()
                        );
                    }
                }
            }
        }
        assert_eq!(
            stats.block_spans + stats.head_spans,
            expected_spans,
            "round {round}: duplicated or stray spans ({stats:?})"
        );
        let corrupt = std::fs::read_dir(dir.path().join("blocks"))
            .unwrap()
            .flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "corrupt" || x == "tmp"));
        assert!(!corrupt, "round {round}: a corrupt or unfinished block was left");
        // The next child must see the in-flight batch as written or not, never half: count it.
        let last = acked.last_mut().unwrap();
        let mut generator = workload(last.0);
        for _ in 0..last.1 {
            generator.batch(TRACES_PER_BATCH);
        }
        let in_flight = generator.batch(TRACES_PER_BATCH);
        if !store.get_trace(in_flight[0].trace_id).unwrap().is_empty() {
            last.1 += 1;
        }
    }
    let total: usize = acked.iter().map(|(_, n)| n).sum();
    assert!(total > ROUNDS as usize, "the child acknowledged only {total} batches");
}
