//! The path from a receiver to the store: count, bound, append off the reactor, derive
//! span metrics.
//!
//! Receivers decode requests into [`Decoded`] batches and hand them to [`Ingest::accept`].
//! A semaphore bounds the spans accepted but not yet stored; when it is exhausted the
//! batch is refused at once with [`IngestError::Overloaded`], which each receiver turns
//! into its protocol's backpressure answer, so memory never grows without bound.
//!
//! Architecture Invariant: `accept` returns `Ok` only after the store made the batch
//! durable, so a receiver acknowledges nothing that a crash could lose.

use std::sync::Arc;

use spindle_codec::Decoded;
use spindle_store::TraceStore;
use tokio::sync::Semaphore;

use crate::telemetry::{DropLabels, DropReason, ProtocolLabels, Telemetry};

/// The process's allocator. Ingest allocates a few dozen small objects per span (protobuf
/// decoding, the model's strings) on the reactor threads and frees them on the store's
/// flush thread seconds later; glibc's malloc spent a fifth of the server's CPU on that
/// (arena locks, consolidation of cold chunks), mimalloc a fraction of it
/// (`docs/PERFORMANCE.md`, "Embedded store").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay`: in `mimalloc.h` (v2 and v3) the option just before
/// `mi_option_use_numa_nodes`; `libmimalloc-sys` names only some options.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = libmimalloc_sys::mi_option_use_numa_nodes - 1;

/// How long mimalloc keeps freed memory before handing it back to the system: 300 ms
/// instead of its default of 1 s. A cut head frees tens of megabytes of spans allocated on
/// other threads at once. With huge pages on, 100 ms had kept the peak RSS of a 10M-span
/// flat-out load at 442–449 MB (500–536 with the default, 373 at 0, where searches paid
/// ~1.5× in page faults); with huge pages off (below) memory is handed back page by page,
/// and 300 ms keeps searches right after a load as fast as with huge pages (p99 325–406 ms
/// against 445 ms at 100 ms) with the RSS at 428–468 MB (`docs/PERFORMANCE.md`, "Fifth
/// session"). `MIMALLOC_PURGE_DELAY` in the environment still wins.
pub const PURGE_DELAY_MS: std::os::raw::c_long = 300;

/// Set to `keep` to leave transparent huge pages on for the process (see [`tune_allocator`]).
pub const THP_ENV: &str = "SPINDLE_TRANSPARENT_HUGEPAGES";

/// Sets [`PURGE_DELAY_MS`] unless the environment names a purge delay itself, and turns
/// transparent huge pages off for the process unless [`THP_ENV`] is `keep`.
///
/// Huge pages: where the kernel backs anonymous memory with them (`enabled` = `always`, a
/// common default), every region mimalloc touches again after a purge comes back as a whole
/// 2 MiB page, zeroed by the kernel and resident in full however little of it is used. At
/// full ingest that zeroing was a fifth of the receiver threads' time, and the resident
/// pages 100–170 MB of the RSS: with 10M spans loaded flat out, the RSS after the queries
/// was 479–563 MB with them (over 512 MB in two runs of six) and 379–434 MB without, at
/// the same CPU per span within the noise (`docs/PERFORMANCE.md`, "Fifth session").
pub fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's documented options to a documented value; mimalloc
        // reads options atomically, so doing it while other threads allocate is fine.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
    if std::env::var(THP_ENV).as_deref() != Ok("keep") {
        disable_transparent_huge_pages();
    }
}

/// `prctl(PR_SET_THP_DISABLE)`: no transparent huge pages for this process's future page
/// faults (Linux 3.15+). Elsewhere, or if the kernel refuses, nothing changes.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and touches no memory of ours.
    unsafe {
        libc::prctl(
            libc::PR_SET_THP_DISABLE,
            1 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        );
    }
}

/// How often a runtime thread going idle hands mimalloc the memory other threads freed.
const COLLECT_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// Called when a runtime thread parks: at most every [`COLLECT_EVERY`], lets mimalloc take
/// back what other threads freed into this thread's pages. The receivers allocate spans on
/// these threads and the store frees them on its own threads seconds later; mimalloc hands
/// such memory back to this thread's free lists only when this thread collects, so without
/// it the receivers kept touching fresh pages. Measured: server CPU per span −3 % at full
/// ingest (alternating runs, `docs/PERFORMANCE.md`); the peak RSS did not change.
pub fn collect_freed_memory() {
    thread_local! {
        static LAST: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
    }
    LAST.with(|last| {
        if last.get().is_none_or(|t| t.elapsed() >= COLLECT_EVERY) {
            last.set(Some(std::time::Instant::now()));
            // SAFETY: mimalloc's documented entry point; collects this thread's heap.
            unsafe { libmimalloc_sys::mi_collect(false) };
        }
    });
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("ingest queue is full, retry later")]
    Overloaded,
    #[error("store failed: {0}")]
    Store(String),
}

pub struct Ingest {
    store: Arc<dyn TraceStore>,
    queue: Arc<Semaphore>,
    queue_capacity: usize,
    telemetry: Arc<Telemetry>,
}

impl Ingest {
    pub fn new(store: Arc<dyn TraceStore>, queue_spans: usize, telemetry: Arc<Telemetry>) -> Self {
        let queue_capacity = queue_spans.min(Semaphore::MAX_PERMITS);
        Ingest { store, queue: Arc::new(Semaphore::new(queue_capacity)), queue_capacity, telemetry }
    }

    fn protocol(protocol: &str) -> ProtocolLabels {
        ProtocolLabels { protocol: protocol.to_string() }
    }

    /// Counts a request that could not be decoded.
    pub fn count_failed_request(&self, protocol: &str) {
        self.telemetry.server.requests_failed.get_or_create(&Self::protocol(protocol)).inc();
    }

    fn dropped(&self, protocol: &str, reason: DropReason, n: u64) {
        if n > 0 {
            self.telemetry
                .server
                .spans_dropped
                .get_or_create(&DropLabels { protocol: protocol.to_string(), reason })
                .inc_by(n);
        }
    }

    /// Stores the valid spans of a batch; returns once they are durable.
    pub async fn accept(&self, protocol: &'static str, decoded: Decoded) -> Result<(), IngestError> {
        let n = decoded.spans.len() as u64;
        self.telemetry.server.spans_received.get_or_create(&Self::protocol(protocol)).inc_by(n + decoded.rejected);
        self.dropped(protocol, DropReason::invalid, decoded.rejected);
        if decoded.spans.is_empty() {
            return Ok(());
        }
        // A batch larger than the whole queue still gets in when the queue is empty.
        let permits = u32::try_from(decoded.spans.len().min(self.queue_capacity)).unwrap_or(u32::MAX);
        let Ok(permit) = Arc::clone(&self.queue).try_acquire_many_owned(permits) else {
            self.dropped(protocol, DropReason::queue_full, n);
            return Err(IngestError::Overloaded);
        };
        self.telemetry.server.queue_spans.set((self.queue_capacity - self.queue.available_permits()) as i64);
        let store = Arc::clone(&self.store);
        let telemetry = Arc::clone(&self.telemetry);
        let spans = decoded.spans;
        let result = tokio::task::spawn_blocking(move || {
            let prepared = Telemetry::prepare(&spans);
            let result = store.append(spans);
            drop(permit);
            if result.is_ok() {
                telemetry.record(prepared);
            }
            result
        })
        .await;
        self.telemetry.server.queue_spans.set((self.queue_capacity - self.queue.available_permits()) as i64);
        match result {
            Ok(Ok(())) => {
                self.telemetry.server.spans_accepted.get_or_create(&Self::protocol(protocol)).inc_by(n);
                Ok(())
            }
            Ok(Err(e)) => {
                self.count_failed_request(protocol);
                tracing::error!(error = %e, protocol, "store append failed");
                Err(IngestError::Store(e.to_string()))
            }
            Err(e) => {
                self.count_failed_request(protocol);
                Err(IngestError::Store(format!("append task failed: {e}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run in a child process whose environment sets `MIMALLOC_PURGE_DELAY` (mimalloc reads
    /// it when the process starts): the option index we set is the one that variable names.
    #[test]
    fn purge_delay_index_names_the_option_the_environment_sets() {
        if let Ok(expected) = std::env::var("SPINDLE_TEST_EXPECT_PURGE_DELAY") {
            // SAFETY: reads one of mimalloc's options.
            let got = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
            assert_eq!(got.to_string(), expected);
            return;
        }
        let child = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", "ingest::tests::purge_delay_index_names_the_option_the_environment_sets", "--nocapture"])
            .env("MIMALLOC_PURGE_DELAY", "37")
            .env("SPINDLE_TEST_EXPECT_PURGE_DELAY", "37")
            .output()
            .expect("run the test binary");
        let out = String::from_utf8_lossy(&child.stdout);
        assert!(child.status.success() && out.contains("1 passed"), "{out}{}", String::from_utf8_lossy(&child.stderr));
        // And here, where the environment does not set it, tuning sets ours.
        tune_allocator();
        // SAFETY: reads one of mimalloc's options.
        assert_eq!(unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }, PURGE_DELAY_MS);
    }

    /// Tuning turns transparent huge pages off for the process; `keep` leaves them alone.
    /// Checked in child processes, each clearing the (inherited) flag first.
    #[cfg(target_os = "linux")]
    #[test]
    fn tuning_turns_transparent_huge_pages_off_unless_told_to_keep_them() {
        const NAME: &str = "ingest::tests::tuning_turns_transparent_huge_pages_off_unless_told_to_keep_them";
        if let Ok(expected) = std::env::var("SPINDLE_TEST_EXPECT_THP_DISABLED") {
            // The flag is inherited: clear what the parent may have set (its own tuning).
            // SAFETY: PR_SET_THP_DISABLE takes integers only.
            unsafe {
                libc::prctl(
                    libc::PR_SET_THP_DISABLE,
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                )
            };
            tune_allocator();
            // SAFETY: PR_GET_THP_DISABLE reads a flag of this process.
            let after = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
            assert_eq!(after.to_string(), expected);
            return;
        }
        for (keep, expected) in [(None, "1"), (Some("keep"), "0"), (Some("other"), "1")] {
            let mut command = std::process::Command::new(std::env::current_exe().expect("test binary"));
            command.args(["--exact", NAME, "--nocapture"]).env("SPINDLE_TEST_EXPECT_THP_DISABLED", expected);
            match keep {
                Some(value) => command.env(THP_ENV, value),
                None => command.env_remove(THP_ENV),
            };
            let child = command.output().expect("run the test binary");
            let out = String::from_utf8_lossy(&child.stdout);
            assert!(
                child.status.success() && out.contains("1 passed"),
                "{keep:?}: {out}{}",
                String::from_utf8_lossy(&child.stderr)
            );
        }
    }
}
