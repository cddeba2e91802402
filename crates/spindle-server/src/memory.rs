//! The process's memory: mimalloc as the global allocator, its purge delay, transparent
//! huge pages off, and the collection of memory other threads freed when a runtime thread
//! parks. `main` calls [`tune_allocator`] first thing and installs
//! [`collect_freed_memory`] as the runtime's park hook; nothing else here runs on its own.

/// The process's allocator. Ingest allocates a few dozen small objects per span (protobuf
/// decoding, the model's strings) on the reactor threads and frees them on the store's
/// flush thread seconds later; glibc's malloc spent a fifth of the server's CPU on that
/// (arena locks, consolidation of cold chunks), mimalloc a fraction of it
/// (`docs/PERFORMANCE.md`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay`: in `mimalloc.h` (v2 and v3) the option just before
/// `mi_option_use_numa_nodes`; `libmimalloc-sys` names only some options.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = libmimalloc_sys::mi_option_use_numa_nodes - 1;

/// How long mimalloc keeps freed memory before handing it back to the system: 300 ms
/// instead of its default of 1 s. A cut head frees tens of megabytes of spans allocated on
/// other threads at once; a shorter delay lowers the peak RSS, a much shorter one makes
/// searches right after a load pay in page faults (`docs/PERFORMANCE.md`).
/// `MIMALLOC_PURGE_DELAY` in the environment still wins.
pub const PURGE_DELAY_MS: std::os::raw::c_long = 300;

/// Set to `keep` to leave transparent huge pages on for the process (see [`tune_allocator`]).
pub const THP_ENV: &str = "SPINDLE_TRANSPARENT_HUGEPAGES";

/// Sets [`PURGE_DELAY_MS`] unless the environment names a purge delay itself, and turns
/// transparent huge pages off for the process unless [`THP_ENV`] is `keep`.
///
/// Huge pages: where the kernel backs anonymous memory with them (`enabled` = `always`, a
/// common default), every region mimalloc touches again after a purge comes back as a whole
/// 2 MiB page, zeroed by the kernel and resident in full however little of it is used. At
/// full ingest that zeroing was a fifth of the receiver threads' time and the resident
/// pages 100–170 MB of the RSS, for no gain in CPU per span (`docs/PERFORMANCE.md`).
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
            .args(["--exact", "memory::tests::purge_delay_index_names_the_option_the_environment_sets", "--nocapture"])
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
        const NAME: &str = "memory::tests::tuning_turns_transparent_huge_pages_off_unless_told_to_keep_them";
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
