//! The per-minute span aggregates behind Jaeger's SPM API ([`SpanMetrics`]) and their
//! persistence: snapshotted to `DATA_DIR/spanmetrics/state.bin` every few seconds and at
//! shutdown by [`snapshot_loop`], read back at start, and trimmed to the retention window
//! (and to the accepted window ahead of now), so they survive restarts and follow
//! retention like the spans they summarize.
//!
//! The file is [`MAGIC`], a little-endian u32 format version, then the postcard encoding of
//! [`SpanMetrics`]. Version 1 (before the overflow series) had no header and is still read.
//! A file that cannot be read (garbled, truncated, from a newer release) is renamed aside
//! to `state.bin.unreadable-<unix seconds>` and logged with both paths, and the server
//! starts with empty aggregates: nothing is deleted because it could not be read, and the
//! spans themselves are in the store.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use serde::Deserialize;
use spindle_model::{SpanKind, StatusCode};
use spindle_query::spanmetrics::{Aggregate, BatchAggregate, SeriesKey, SpanMetrics};

/// The first bytes of a snapshot since format 2.
pub const MAGIC: &[u8; 8] = b"SPNDLSPM";
/// The format this build writes; it reads this one and version 1.
pub const FORMAT_VERSION: u32 = 2;

pub struct MinuteAggregates {
    minutes: RwLock<SpanMetrics>,
    /// Changed since the last snapshot.
    dirty: AtomicBool,
    /// False when an unreadable snapshot could not be set aside: writing one would replace it.
    writable: bool,
    path: PathBuf,
}

impl MinuteAggregates {
    /// The aggregates of `data_dir`'s snapshot; empty when there is none, or when it is
    /// unreadable, which is then set aside.
    pub fn load(data_dir: &Path) -> Self {
        let path = data_dir.join("spanmetrics").join("state.bin");
        let (minutes, writable) = match std::fs::read(&path) {
            Ok(bytes) => match decode(&bytes) {
                Ok(minutes) => (minutes, true),
                Err(why) => (SpanMetrics::default(), set_aside(&path, &why)),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (SpanMetrics::default(), true),
            Err(e) => (SpanMetrics::default(), set_aside(&path, &e.to_string())),
        };
        MinuteAggregates { minutes: RwLock::new(minutes), dirty: AtomicBool::new(false), writable, path }
    }

    /// Aggregates never loaded nor written (a tenant without data).
    pub fn empty() -> Self {
        MinuteAggregates {
            minutes: RwLock::new(SpanMetrics::default()),
            dirty: AtomicBool::new(false),
            writable: false,
            path: PathBuf::new(),
        }
    }

    pub fn merge(&self, batch: BatchAggregate) {
        if !batch.is_empty() {
            self.minutes.write().unwrap_or_else(|p| p.into_inner()).merge(batch);
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    pub fn with<T>(&self, f: impl FnOnce(&SpanMetrics) -> T) -> T {
        f(&self.minutes.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Drops minutes that start before `keep_from` or after `keep_until`.
    pub fn trim(&self, keep_from: u64, keep_until: u64) {
        let mut minutes = self.minutes.write().unwrap_or_else(|p| p.into_inner());
        let before = minutes.minutes();
        minutes.drop_before(keep_from);
        minutes.drop_after(keep_until);
        if minutes.minutes() != before {
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// Writes the minute aggregates when they changed: to a temporary file, synced, then
    /// renamed over the previous snapshot, so a crash leaves one whole snapshot.
    pub fn snapshot(&self) -> std::io::Result<()> {
        if !self.writable || !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let bytes = {
            let minutes = self.minutes.read().unwrap_or_else(|p| p.into_inner());
            encode(&minutes)?
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        Ok(())
    }
}

fn encode(minutes: &SpanMetrics) -> std::io::Result<Vec<u8>> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    postcard::to_io(minutes, &mut out).map_err(std::io::Error::other)?;
    Ok(out)
}

/// Decodes a snapshot of any format this build reads, or says why it cannot.
fn decode(bytes: &[u8]) -> Result<SpanMetrics, String> {
    /// Decodes all of `bytes`: trailing bytes mean damage, not a shorter value.
    fn whole<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
        match postcard::take_from_bytes::<T>(bytes) {
            Ok((value, [])) => Ok(value),
            Ok((_, rest)) => Err(format!("{} bytes after the end of the data", rest.len())),
            Err(e) => Err(e.to_string()),
        }
    }
    let Some(rest) = bytes.strip_prefix(MAGIC) else {
        return whole::<V1SpanMetrics>(bytes).map(V1SpanMetrics::upgrade).map_err(|e| format!("not a snapshot: {e}"));
    };
    let Some((version, payload)) = rest.split_first_chunk::<4>() else {
        return Err("truncated header".into());
    };
    match u32::from_le_bytes(*version) {
        FORMAT_VERSION => whole(payload),
        v if v > FORMAT_VERSION => Err(format!(
            "format {v} was written by a newer release of Spindle (this one reads formats 1 to {FORMAT_VERSION})"
        )),
        v => Err(format!("unknown format {v}")),
    }
}

/// Renames an unreadable snapshot aside; returns whether a new snapshot may be written at
/// its path (not when the old one is still there).
fn set_aside(path: &Path, why: &str) -> bool {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut aside = path.with_file_name(format!("state.bin.unreadable-{secs}"));
    let mut n = 1;
    while aside.exists() {
        aside = path.with_file_name(format!("state.bin.unreadable-{secs}-{n}"));
        n += 1;
    }
    match std::fs::rename(path, &aside) {
        Ok(()) => {
            tracing::error!(
                path = %path.display(),
                set_aside_as = %aside.display(),
                error = why,
                "span metrics snapshot unreadable: kept aside, starting with empty span metrics \
                 (the spans are in the store; the file can be removed once inspected)"
            );
            true
        }
        Err(e) => {
            tracing::error!(
                path = %path.display(),
                error = why,
                rename_error = %e,
                "span metrics snapshot unreadable and could not be renamed aside: starting with empty span \
                 metrics and not snapshotting them, so the file is not overwritten; move it away and restart"
            );
            false
        }
    }
}

/// Format 1: the same aggregates, series without the overflow flag and with owned names.
#[derive(Deserialize)]
struct V1SeriesKey {
    service: String,
    operation: String,
    kind: SpanKind,
    status: StatusCode,
}

#[derive(Deserialize)]
struct V1SpanMetrics {
    buckets: BTreeMap<u64, HashMap<V1SeriesKey, Aggregate>>,
}

impl std::hash::Hash for V1SeriesKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (&self.service, &self.operation, self.kind, self.status).hash(state);
    }
}

impl PartialEq for V1SeriesKey {
    fn eq(&self, o: &Self) -> bool {
        (&self.service, &self.operation, self.kind, self.status) == (&o.service, &o.operation, o.kind, o.status)
    }
}

impl Eq for V1SeriesKey {}

impl V1SpanMetrics {
    fn upgrade(self) -> SpanMetrics {
        let mut out = SpanMetrics::default();
        let mut names: HashMap<String, Arc<str>> = HashMap::new();
        let mut name = |s: String| Arc::clone(names.entry(s.clone()).or_insert_with(|| Arc::from(s)));
        for (minute, series) in self.buckets {
            for (k, agg) in series {
                let key = SeriesKey {
                    service: name(k.service),
                    operation: name(k.operation),
                    kind: k.kind,
                    status: k.status,
                    overflow: false,
                };
                out.insert(minute, key, &agg);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(start_nanos: u64) -> BatchAggregate {
        BatchAggregate::from_spans(&spindle_workload::Workload::new(1).batch(20, start_nanos, 120_000_000_000))
    }

    fn state(dir: &Path) -> PathBuf {
        dir.join("spanmetrics").join("state.bin")
    }

    /// The files of the snapshot's directory other than `state.bin`.
    fn set_aside_files(dir: &Path) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(dir.join("spanmetrics"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().is_some_and(|n| n != "state.bin"))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn a_snapshot_is_read_back_and_written_only_when_changed() {
        let dir = tempfile::tempdir().unwrap();
        let minutes = MinuteAggregates::load(dir.path());
        minutes.merge(batch(1_700_000_000_000_000_000));
        let written = minutes.with(SpanMetrics::clone);
        assert!(written.minutes() > 0);
        minutes.snapshot().unwrap();
        let path = state(dir.path());
        assert!(std::fs::read(&path).unwrap().starts_with(MAGIC));
        assert_eq!(MinuteAggregates::load(dir.path()).with(SpanMetrics::clone), written);

        // Unchanged aggregates are not written again.
        std::fs::remove_file(&path).unwrap();
        minutes.snapshot().unwrap();
        assert!(!path.exists());

        // Trimming is a change; what is left is what the next start reads.
        minutes.trim(u64::MAX, u64::MAX);
        minutes.snapshot().unwrap();
        assert_eq!(MinuteAggregates::load(dir.path()).with(|m| m.minutes()), 0);
        assert!(path.exists());
    }

    #[test]
    fn trimming_drops_minutes_ahead_of_the_window_as_well_as_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let minutes = MinuteAggregates::load(dir.path());
        let now = 1_700_000_000_000_000_000;
        minutes.merge(batch(now - 3_600_000_000_000));
        minutes.merge(batch(now));
        minutes.merge(batch(3_360_000_000_000_000_000)); // a client clock in 2076
        let held = minutes.with(|m| m.minutes());
        minutes.trim(now - 60_000_000_000, now + 3_600_000_000_000);
        let (first, last) = minutes.with(|m| m.span_of_minutes()).unwrap();
        assert!(first >= now - 120_000_000_000 && last <= now + 3_600_000_000_000, "{first} {last}");
        assert!(minutes.with(|m| m.minutes()) < held);
    }

    #[test]
    fn an_unreadable_snapshot_is_set_aside_whole_and_the_next_one_written_beside_it() {
        let good = {
            let m = MinuteAggregates::load(tempfile::tempdir().unwrap().path());
            m.merge(batch(1_700_000_000_000_000_000));
            encode(&m.with(SpanMetrics::clone)).unwrap()
        };
        let mut newer = good.clone();
        newer[MAGIC.len()..MAGIC.len() + 4].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        let half = good[..good.len() / 2].to_vec();
        let cases: [(&str, Vec<u8>); 5] = [
            ("garbled", vec![0xff; 7]),
            ("truncated", good[..good.len() - 3].to_vec()),
            ("cut in half", half),
            ("newer format", newer),
            ("empty", Vec::new()),
        ];
        for (case, bytes) in cases {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(dir.path().join("spanmetrics")).unwrap();
            std::fs::write(state(dir.path()), &bytes).unwrap();
            let minutes = MinuteAggregates::load(dir.path());
            assert_eq!(minutes.with(|m| m.minutes()), 0, "{case}: starts empty");
            let aside = set_aside_files(dir.path());
            assert_eq!(aside.len(), 1, "{case}: {aside:?}");
            let name = aside[0].file_name().unwrap().to_string_lossy().to_string();
            assert!(name.starts_with("state.bin.unreadable-"), "{case}: {name}");
            assert_eq!(std::fs::read(&aside[0]).unwrap(), bytes, "{case}: kept byte for byte");
            assert!(!state(dir.path()).exists());

            // New aggregates are snapshotted at the usual path; the set-aside file stays.
            minutes.merge(batch(1_700_000_000_000_000_000));
            minutes.snapshot().unwrap();
            assert!(MinuteAggregates::load(dir.path()).with(|m| m.minutes()) > 0, "{case}");
            assert_eq!(set_aside_files(dir.path()), aside, "{case}");
        }
    }

    #[test]
    fn a_snapshot_of_format_1_is_read() {
        #[derive(serde::Serialize, PartialEq, Eq, Hash)]
        struct V1Key<'a> {
            service: &'a str,
            operation: &'a str,
            kind: SpanKind,
            status: StatusCode,
        }
        let agg = Aggregate { calls: 3, ..Default::default() };
        let mut buckets: BTreeMap<u64, HashMap<V1Key, Aggregate>> = BTreeMap::new();
        buckets.entry(28_333_333).or_default().insert(
            V1Key { service: "frontend", operation: "GET /quote", kind: SpanKind::Server, status: StatusCode::Unset },
            agg.clone(),
        );
        #[derive(serde::Serialize)]
        struct V1<'a> {
            buckets: BTreeMap<u64, HashMap<V1Key<'a>, Aggregate>>,
        }
        let bytes = postcard::to_stdvec(&V1 { buckets }).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("spanmetrics")).unwrap();
        std::fs::write(state(dir.path()), bytes).unwrap();
        let minutes = MinuteAggregates::load(dir.path());
        assert!(set_aside_files(dir.path()).is_empty());
        let keys: Vec<SeriesKey> = minutes.with(|m| m.series_keys().into_iter().cloned().collect());
        assert_eq!(keys.len(), 1);
        assert_eq!((&*keys[0].service, &*keys[0].operation, keys[0].overflow), ("frontend", "GET /quote", false));
    }
}
