//! The per-minute span aggregates behind Jaeger's SPM API ([`SpanMetrics`]) and their
//! persistence: snapshotted to `DATA_DIR/spanmetrics/state.bin` every few seconds and at
//! shutdown by [`snapshot_loop`], read back at start, and trimmed to the retention window,
//! so they survive restarts and follow retention like the spans they summarize.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use spindle_query::spanmetrics::{BatchAggregate, SpanMetrics};

use super::Telemetry;

pub struct MinuteAggregates {
    minutes: RwLock<SpanMetrics>,
    /// Changed since the last snapshot.
    dirty: AtomicBool,
    path: PathBuf,
}

impl MinuteAggregates {
    /// The aggregates of `data_dir`'s snapshot; empty when there is none or it is unreadable.
    pub fn load(data_dir: &Path) -> Self {
        let path = data_dir.join("spanmetrics").join("state.bin");
        MinuteAggregates { minutes: RwLock::new(read_snapshot(&path)), dirty: AtomicBool::new(false), path }
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

    /// Drops minute aggregates older than `unix_nano`.
    pub fn drop_before(&self, unix_nano: u64) {
        let mut minutes = self.minutes.write().unwrap_or_else(|p| p.into_inner());
        let before = minutes.minutes();
        minutes.drop_before(unix_nano);
        if minutes.minutes() != before {
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// Writes the minute aggregates when they changed: to a temporary file, synced, then
    /// renamed over the previous snapshot, so a crash leaves one whole snapshot.
    pub fn snapshot(&self) -> std::io::Result<()> {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let bytes = {
            let minutes = self.minutes.read().unwrap_or_else(|p| p.into_inner());
            postcard::to_stdvec(&*minutes).map_err(std::io::Error::other)?
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

fn read_snapshot(path: &Path) -> SpanMetrics {
    match std::fs::read(path) {
        Ok(bytes) => postcard::from_bytes(&bytes).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), error = %e, "span metrics snapshot unreadable, starting empty");
            SpanMetrics::default()
        }),
        Err(_) => SpanMetrics::default(),
    }
}

/// Snapshots span metrics every `every` until `stop` flips, then once more.
pub async fn snapshot_loop(
    telemetry: Arc<Telemetry>,
    every: Duration,
    retention: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let t = Arc::clone(&telemetry);
        let keep_from = crate::api::params::now_unix_nano().saturating_sub(retention.as_nanos() as u64);
        let _ = tokio::task::spawn_blocking(move || {
            t.drop_before(keep_from);
            if let Err(e) = t.snapshot() {
                tracing::warn!(error = %e, "span metrics snapshot failed");
            }
        })
        .await;
    }
    let t = Arc::clone(&telemetry);
    let _ = tokio::task::spawn_blocking(move || t.snapshot()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(start_nanos: u64) -> BatchAggregate {
        BatchAggregate::from_spans(&spindle_workload::Workload::new(1).batch(20, start_nanos, 120_000_000_000))
    }

    #[test]
    fn a_snapshot_is_read_back_and_written_only_when_changed() {
        let dir = tempfile::tempdir().unwrap();
        let minutes = MinuteAggregates::load(dir.path());
        minutes.merge(batch(1_700_000_000_000_000_000));
        let written = minutes.with(SpanMetrics::clone);
        assert!(written.minutes() > 0);
        minutes.snapshot().unwrap();
        let path = dir.path().join("spanmetrics").join("state.bin");
        assert_eq!(MinuteAggregates::load(dir.path()).with(SpanMetrics::clone), written);

        // Unchanged aggregates are not written again.
        std::fs::remove_file(&path).unwrap();
        minutes.snapshot().unwrap();
        assert!(!path.exists());

        // Trimming is a change; what is left is what the next start reads.
        minutes.drop_before(u64::MAX);
        minutes.snapshot().unwrap();
        assert_eq!(MinuteAggregates::load(dir.path()).with(|m| m.minutes()), 0);
        assert!(path.exists());
    }

    #[test]
    fn an_unreadable_snapshot_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("spanmetrics")).unwrap();
        std::fs::write(dir.path().join("spanmetrics").join("state.bin"), [0xff; 7]).unwrap();
        assert_eq!(MinuteAggregates::load(dir.path()).with(|m| m.minutes()), 0);
    }
}
