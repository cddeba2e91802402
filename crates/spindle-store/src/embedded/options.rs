//! What the embedded store can be told: [`StoreOptions`] and its defaults. Plain data; it
//! must not hold behaviour, which lives with the part of the engine each option steers.

use std::path::PathBuf;
use std::time::Duration;

use crate::wal::SyncPolicy;

/// How the embedded store behaves. `StoreOptions::new(dir)` gives the defaults.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub data_dir: PathBuf,
    /// When the log is fsynced; `Always` (the default) before every acknowledgement.
    pub sync: SyncPolicy,
    /// Drop blocks whose newest span started, or that were received (whichever is earlier),
    /// longer ago than this. `None` keeps everything.
    pub retention: Option<Duration>,
    /// Drop the oldest blocks while blocks and log together take more than this many bytes.
    /// The head and the log are never dropped, so the directory can exceed the limit by them.
    pub max_disk_bytes: Option<u64>,
    /// Cut the head into a block when it is this old...
    pub head_max_age: Duration,
    /// ...or when this many bytes of encoded batches were appended to it.
    pub head_max_bytes: usize,
    /// Spans per Parquet row group (a row group is cut at the next trace boundary).
    pub row_group_spans: usize,
    /// Blocks with fewer spans than this are merged by compaction...
    pub compaction_max_block_spans: u64,
    /// ...once at least this many of them exist at one level (cut blocks are level 0, a
    /// merge of level-L blocks is level L + 1), so a span is rewritten once per level.
    pub compaction_min_inputs: usize,
    /// Fraction of one core compaction may use; it sleeps the rest so ingest keeps its rate.
    pub compaction_duty_cycle: f64,
    /// The fraction while ingest is heavy: a head was cut for its size (not its age) within
    /// the last `head_max_age`. Compaction then defers most of its work to quieter times, as
    /// blocks can wait and spans cannot.
    pub compaction_busy_duty_cycle: f64,
    /// Operations listed per service (`operations`); spans with further names are stored and
    /// found by searches as any other, their names only go unlisted. Names are
    /// client-controlled: without a bound one service with an id in its span names grows the
    /// catalog, its file and every operations answer with each request.
    pub max_operations_per_service: usize,
    /// Services listed (`services`); spans of further services are stored and found by
    /// searches (by service too) as any other, the services only go unlisted. Service names
    /// are client-controlled: without a bound a `service.name` per host or per request grows
    /// the catalog, its file and every services answer.
    pub max_services: usize,
    /// Whether the flusher and maintenance threads run. Tests turn them off to drive the
    /// engine step by step with [`EmbeddedStore::flush`], `compact` and `enforce_retention`.
    pub background: bool,
}

impl StoreOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        StoreOptions {
            data_dir: data_dir.into(),
            sync: SyncPolicy::Always,
            retention: None,
            max_disk_bytes: None,
            head_max_age: Duration::from_secs(5),
            head_max_bytes: 16 * 1024 * 1024,
            row_group_spans: 32_768,
            compaction_max_block_spans: 2_000_000,
            compaction_min_inputs: 4,
            compaction_duty_cycle: 0.5,
            compaction_busy_duty_cycle: 0.1,
            max_operations_per_service: 2_000,
            max_services: 1_000,
            background: true,
        }
    }
}
