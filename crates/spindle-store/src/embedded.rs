//! The embedded store: a log-structured columnar engine in one data directory.
//!
//! Appends go to the write-ahead log (group-committed, synced per [`SyncPolicy`]) and then
//! into the in-memory head. A flusher thread cuts the head every `head_max_age` or
//! `head_max_bytes` into an immutable Parquet block and then deletes the log segments the
//! block covers; a maintenance thread drops blocks past retention or the disk limit and
//! merges small blocks into large ones. Queries read the head, heads being flushed, and the
//! blocks together.
//!
//! Layout of the data directory:
//! - `LOCK` — held with an exclusive file lock while a process uses the directory;
//! - `wal/<seq>.wal` — log segments not yet wholly in blocks, replayed into the head on open;
//! - `blocks/<id>.parquet` + `blocks/<id>.meta.json` — blocks; the meta file commits one;
//! - `catalog.json` — services and operations of everything flushed.
//!
//! Architecture Invariant: a span acknowledged by `append` is in the log or in a block whose
//! meta file exists, at every instant; it is never in both once the engine is at rest, and
//! opening the store after a crash at any point restores exactly the acknowledged spans.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use spindle_model::{dependency_edges, links_from_edges, DependencyLink, Span, SpanKind, TraceId};

use crate::batch_codec::{decode_batch, encode_batch};
use crate::block::{self, Block, BlockMeta, BlockWriter};
use crate::block_format::{project, AttributeColumns, SpanColumns};
use crate::head::{Catalog, Head};
use crate::query::{Operation, TraceQuery};
use crate::scan::{find_in_block, row_group_trace_ids, scan_block, scan_block_rows, scan_blocks_rows_split};
use crate::wal::{self, SyncPolicy, Wal};
use crate::{RowFields, SpanFields, SpanRow, StoreError, TraceStore, GRAPH_KEYS};

/// How the embedded store behaves. `StoreOptions::new(dir)` gives the defaults.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub data_dir: PathBuf,
    /// When the log is fsynced; `Always` (the default) before every acknowledgement.
    pub sync: SyncPolicy,
    /// Drop blocks whose newest span started longer ago than this. `None` keeps everything.
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
            background: true,
        }
    }
}

/// Threads writing frozen heads into blocks. Building a block is the ingest pipeline's
/// slowest stage and one thread of it also waits for its file syncs; two keep both cores
/// busy at full ingest (`docs/PERFORMANCE.md`, "Embedded store").
const FLUSH_THREADS: usize = 2;

/// Rows a compaction decodes from one input at a time (a handful in unit tests, so their
/// merges cross slice boundaries inside traces).
const MERGE_SLICE_ROWS: usize = if cfg!(test) { 7 } else { 4_096 };

pub struct EmbeddedStore {
    inner: Arc<Inner>,
    threads: Vec<thread::JoinHandle<()>>,
}

struct Inner {
    options: StoreOptions,
    wal_dir: PathBuf,
    blocks_dir: PathBuf,
    wal: Wal,
    /// Appends hold it shared across log write and head insert; a cut holds it exclusively,
    /// so that a rotated segment never misses a span that went into the old head.
    gate: RwLock<()>,
    head: RwLock<Head>,
    /// Heads cut but not yet in a durable block, oldest first, with the first log segment
    /// that is not theirs.
    frozen: RwLock<Vec<(Arc<Head>, u64)>>,
    blocks: RwLock<Vec<Arc<Block>>>,
    catalog: Mutex<Catalog>,
    next_block_id: AtomicU64,
    /// Serialises cuts.
    cut_lock: Mutex<()>,
    /// Frozen heads a flusher is writing into a block. Flushers write different heads at
    /// once but commit (publish) their blocks in cut order, each waiting on `committed`
    /// until its head is the oldest frozen one: the log segments a block covers are deleted
    /// at its commit, and on restart the newest committed block says which segments are
    /// covered, so a newer block committed first could make an older head's spans unreplayed.
    writing: Mutex<Vec<Arc<Head>>>,
    /// Signalled after every block commit, with `writing` as its mutex.
    committed: Condvar,
    /// Serialises compaction and retention, which both remove blocks.
    maintenance_lock: Mutex<()>,
    stop: Mutex<bool>,
    wake: Condvar,
    /// Wakes the flusher when an append filled the head.
    cut: Condvar,
    /// Signalled after every block commit; appends wait on it while memory is over budget.
    drained: Condvar,
    /// When the store opened; `size_cut_at_ms` counts from it.
    opened: Instant,
    /// Milliseconds after `opened` of the last cut made because the head was full (0: none).
    size_cut_at_ms: AtomicU64,
    _lock: File,
}

fn read_guard<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    // A panic while holding a lock cannot leave these structures half-updated in a way that
    // matters more than refusing all reads would, so poisoning is ignored.
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write_guard<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_unix_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

const CATALOG_FILE: &str = "catalog.json";

fn load_catalog(dir: &Path) -> Result<Catalog, StoreError> {
    let path = dir.join(CATALOG_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Catalog::default()),
        Err(e) => return Err(StoreError::io(&path, e)),
    };
    let entries: Vec<(String, Vec<(String, SpanKind)>)> = serde_json::from_slice(&bytes)
        .map_err(|e| StoreError::Block { path: path.display().to_string(), reason: e.to_string() })?;
    let mut catalog = Catalog::default();
    for (service, ops) in entries {
        for (name, kind) in ops {
            catalog.add(&service, &name, kind);
        }
    }
    Ok(catalog)
}

fn save_catalog(dir: &Path, catalog: &Catalog) -> Result<(), StoreError> {
    let entries: Vec<(&String, Vec<(&String, SpanKind)>)> =
        catalog.services.iter().map(|(s, ops)| (s, ops.iter().map(|o| (&o.name, o.kind)).collect())).collect();
    let path = dir.join(CATALOG_FILE);
    let tmp = dir.join("catalog.json.tmp");
    let bytes = serde_json::to_vec(&entries).map_err(|e| StoreError::Encode(e.to_string()))?;
    fs::write(&tmp, bytes)
        .and_then(|_| File::open(&tmp)?.sync_all())
        .and_then(|_| fs::rename(&tmp, &path))
        .map_err(|e| StoreError::io(&path, e))
}

/// Opens every committed block, removing what crashes left behind: temporary files, Parquet
/// files without meta, and inputs of a compaction whose output was committed.
fn open_blocks(dir: &Path) -> Result<Vec<Arc<Block>>, StoreError> {
    let mut metas = Vec::new();
    let mut parquet_ids = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))? {
        let entry = entry.map_err(|e| StoreError::io(dir, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".tmp") {
            tracing::warn!(path = %path.display(), "removing unfinished block file");
            fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
        } else if let Some(id) = name.strip_suffix(".meta.json").and_then(|h| u64::from_str_radix(h, 16).ok()) {
            match block::read_meta(&path) {
                Ok(meta) if meta.id == id => metas.push(meta),
                Ok(_) | Err(_) => tracing::error!(path = %path.display(), "ignoring unreadable block meta"),
            }
        } else if let Some(id) = name.strip_suffix(".parquet").and_then(|h| u64::from_str_radix(h, 16).ok()) {
            parquet_ids.push(id);
        }
    }
    let committed: HashSet<u64> = metas.iter().map(|m| m.id).collect();
    for id in parquet_ids.iter().filter(|id| !committed.contains(id)) {
        tracing::warn!(block = id, "removing block without meta, left by a crash");
        Block::remove_files(dir, *id)?;
    }
    let replaced: HashSet<u64> = metas.iter().flat_map(|m| m.replaces.iter().copied()).collect();
    let mut blocks = Vec::new();
    for meta in metas {
        if replaced.contains(&meta.id) {
            tracing::warn!(block = meta.id, "removing block already merged by compaction");
            Block::remove_files(dir, meta.id)?;
            continue;
        }
        let id = meta.id;
        match Block::open(dir, meta) {
            Ok(b) => blocks.push(Arc::new(b)),
            Err(e) => {
                // Keeping the store available matters more than one block; keep the files
                // for inspection under another name so that they are not opened again.
                tracing::error!(block = id, error = %e, "block is corrupt, setting it aside");
                for path in [block::meta_path(dir, id), block::parquet_path(dir, id)] {
                    let _ = fs::rename(&path, path.with_extension("corrupt"));
                }
            }
        }
    }
    blocks.sort_by_key(|b| b.meta.id);
    Ok(blocks)
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `options.data_dir`: opens its blocks, replays
    /// the log segments not yet in blocks, and starts the background threads.
    pub fn open(options: StoreOptions) -> Result<Self, StoreError> {
        let started = Instant::now();
        let dir = options.data_dir.clone();
        let wal_dir = dir.join("wal");
        let blocks_dir = dir.join("blocks");
        for d in [&wal_dir, &blocks_dir] {
            fs::create_dir_all(d).map_err(|e| StoreError::io(d, e))?;
        }
        let lock_path = dir.join("LOCK");
        let lock_file = File::create(&lock_path).map_err(|e| StoreError::io(&lock_path, e))?;
        lock_file.try_lock().map_err(|_| StoreError::Locked { path: dir.display().to_string() })?;

        let blocks = open_blocks(&blocks_dir)?;
        let covered = blocks.iter().map(|b| b.meta.wal_covered).max().unwrap_or(0);
        let next_block_id = blocks.iter().map(|b| b.meta.id).max().unwrap_or(0) + 1;
        let catalog = load_catalog(&dir)?;

        let mut head = Head::default();
        let mut undecodable = 0u64;
        let mut records = 0;
        let mut last_seq = covered;
        for (seq, path) in wal::segments(&wal_dir)? {
            last_seq = last_seq.max(seq);
            if seq <= covered {
                // Its spans are in a block; the crash came before the segment was deleted.
                fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
                continue;
            }
            records += wal::replay(&path, |payload| match decode_batch(payload) {
                Ok(spans) => head.insert(spans, payload.len()),
                Err(e) => {
                    undecodable += 1;
                    tracing::error!(error = %e, "undecodable write-ahead log record");
                }
            })?;
        }
        if undecodable > 0 {
            tracing::error!(
                records = undecodable,
                "write-ahead log records passed their checksum but could not be decoded"
            );
        }
        // The replayed head keeps its own catalog; it joins the persisted one when flushed.
        // Keep appending to the newest live segment (replay truncated any torn tail).
        let wal = Wal::open(&wal_dir, if last_seq > covered { last_seq } else { covered + 1 }, options.sync)?;
        tracing::info!(
            blocks = blocks.len(),
            records,
            head_spans = head.span_count(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            dir = %dir.display(),
            "store opened"
        );
        let inner = Arc::new(Inner {
            options,
            wal_dir,
            blocks_dir,
            wal,
            gate: RwLock::new(()),
            head: RwLock::new(head),
            frozen: RwLock::new(Vec::new()),
            blocks: RwLock::new(blocks),
            catalog: Mutex::new(catalog),
            next_block_id: AtomicU64::new(next_block_id),
            cut_lock: Mutex::new(()),
            writing: Mutex::new(Vec::new()),
            committed: Condvar::new(),
            maintenance_lock: Mutex::new(()),
            stop: Mutex::new(false),
            wake: Condvar::new(),
            cut: Condvar::new(),
            drained: Condvar::new(),
            opened: Instant::now(),
            size_cut_at_ms: AtomicU64::new(0),
            _lock: lock_file,
        });
        let mut threads = Vec::new();
        if inner.options.background {
            let spawn = |name: &str, run: fn(&Inner)| {
                let inner = Arc::clone(&inner);
                thread::Builder::new()
                    .name(name.into())
                    .spawn(move || run(&inner))
                    .map_err(|e| StoreError::io(Path::new(&format!("{name} thread")), e))
            };
            for _ in 0..FLUSH_THREADS {
                threads.push(spawn("spindle-flush", Inner::flush_loop)?);
            }
            threads.push(spawn("spindle-compact", Inner::maintenance_loop)?);
        }
        Ok(EmbeddedStore { inner, threads })
    }

    /// Cuts the head into a block now and waits until the block is durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }

    /// Runs one compaction step if one is due; returns whether blocks were merged.
    pub fn compact(&self) -> Result<bool, StoreError> {
        self.inner.compact_once(false)
    }

    /// Merges every block into as few as the size limit allows (tests and offline tools).
    pub fn compact_all(&self) -> Result<bool, StoreError> {
        self.inner.compact_once(true)
    }

    /// Drops blocks past retention (relative to `now_unix_nano`) and over the disk limit.
    pub fn enforce_retention(&self, now_unix_nano: u64) -> Result<usize, StoreError> {
        self.inner.enforce_retention(now_unix_nano)
    }

    /// Numbers for operators and benchmarks.
    pub fn stats(&self) -> StoreStats {
        let blocks = read_guard(&self.inner.blocks);
        let head = read_guard(&self.inner.head);
        let frozen = read_guard(&self.inner.frozen);
        StoreStats {
            blocks: blocks.len(),
            block_spans: blocks.iter().map(|b| b.meta.spans).sum(),
            block_bytes: blocks.iter().map(|b| b.meta.bytes).sum(),
            head_spans: (head.span_count() + frozen.iter().map(|(h, _)| h.span_count()).sum::<usize>()) as u64,
            wal_bytes: dir_size(&self.inner.wal_dir),
        }
    }

    pub fn data_dir_size(dir: &Path) -> u64 {
        dir_size(dir)
    }
}

/// What the store holds, for `/metrics` and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    pub blocks: usize,
    pub block_spans: u64,
    pub block_bytes: u64,
    /// Spans in memory, not yet in blocks.
    pub head_spans: u64,
    pub wal_bytes: u64,
}

fn dir_size(p: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(p) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        *lock(&self.inner.stop) = true;
        self.inner.wake.notify_all();
        self.inner.cut.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Inner {
    /// Sleeps up to `d`, returning early (true) when the store is closing.
    fn sleep(&self, d: Duration) -> bool {
        self.sleep_on(&self.wake, d)
    }

    fn sleep_on(&self, condvar: &Condvar, d: Duration) -> bool {
        let guard = lock(&self.stop);
        if *guard {
            return true;
        }
        let (guard, _) = condvar.wait_timeout(guard, d).unwrap_or_else(|p| p.into_inner());
        *guard
    }

    fn flush_loop(&self) {
        let tick = (self.options.head_max_age / 10).clamp(Duration::from_millis(10), Duration::from_millis(200));
        loop {
            if self.sleep_on(&self.cut, tick) {
                break;
            }
            // Work until nothing is due: a full head is cut at once, not at the next tick.
            loop {
                let (due, full) = {
                    let head = read_guard(&self.head);
                    let full = head.bytes() >= self.options.head_max_bytes;
                    (!head.is_empty() && (full || head.age() >= self.options.head_max_age), full)
                };
                if full {
                    let now = self.opened.elapsed().as_millis() as u64;
                    self.size_cut_at_ms.store(now.max(1), Ordering::Relaxed);
                }
                if due {
                    if let Err(e) = self.cut_head() {
                        tracing::error!(error = %e, "cutting the head failed; will retry");
                        break;
                    }
                    // The other flusher may take the next head while this one writes.
                    self.cut.notify_all();
                }
                match self.write_one() {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(StoreError::Closed) => return,
                    Err(e) => {
                        tracing::error!(error = %e, "writing a head into a block failed; will retry");
                        break;
                    }
                }
            }
        }
    }

    fn maintenance_loop(&self) {
        loop {
            if self.sleep(Duration::from_secs(1)) {
                break;
            }
            if let Err(e) = self.enforce_retention(now_unix_nanos()) {
                tracing::error!(error = %e, "retention pass failed");
            }
            match self.compact_once(false) {
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "compaction failed"),
            }
        }
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.flush_inner(true)
    }

    /// Whether ingest is heavy: a head filled up within the last `head_max_age`.
    fn ingest_busy(&self) -> bool {
        let at = self.size_cut_at_ms.load(Ordering::Relaxed);
        at != 0 && self.opened.elapsed().as_millis() as u64 <= at + self.options.head_max_age.as_millis() as u64
    }

    /// The fraction of a core compaction may use now.
    fn compaction_duty(&self) -> f64 {
        let duty = self.options.compaction_duty_cycle;
        let duty = if self.ingest_busy() { duty.min(self.options.compaction_busy_duty_cycle) } else { duty };
        duty.clamp(0.02, 1.0)
    }

    /// Backpressure: while the head and the heads waiting for their block hold more than
    /// four cuts' worth, the append that pushed them there waits for a block to commit.
    /// Memory stays bounded when blocks are written slower than spans arrive; the server's
    /// bounded queue turns the wait into 429 / RESOURCE_EXHAUSTED.
    fn wait_for_memory(&self) {
        if !self.options.background {
            return;
        }
        let budget = self.options.head_max_bytes.saturating_mul(4);
        let pending =
            || read_guard(&self.head).bytes() + read_guard(&self.frozen).iter().map(|(h, _)| h.bytes()).sum::<usize>();
        let mut guard = lock(&self.stop);
        while !*guard && pending() > budget {
            guard = self.drained.wait_timeout(guard, Duration::from_millis(50)).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Cuts the head (when `cut`) and returns once every head frozen so far is in a
    /// committed block, writing those no flusher is writing.
    fn flush_inner(&self, cut: bool) -> Result<(), StoreError> {
        if cut {
            self.cut_head()?;
        }
        let Some(target) = read_guard(&self.frozen).last().map(|(_, next_seq)| *next_seq) else { return Ok(()) };
        loop {
            // Heads no flusher is writing (or one gave up on after a failed write) are
            // written here; the others are waited for.
            while self.write_one()? {}
            let writing = lock(&self.writing);
            if !read_guard(&self.frozen).first().is_some_and(|(_, next_seq)| *next_seq <= target) {
                return Ok(());
            }
            if *lock(&self.stop) {
                return Err(StoreError::Closed);
            }
            drop(self.committed.wait_timeout(writing, Duration::from_millis(50)).unwrap_or_else(|p| p.into_inner()));
        }
    }

    /// Freezes the live head (when it holds spans): appends go to a new head and a new log
    /// segment from here on.
    fn cut_head(&self) -> Result<(), StoreError> {
        let _serial = lock(&self.cut_lock);
        let _gate = write_guard(&self.gate);
        let mut head = write_guard(&self.head);
        if !head.is_empty() {
            let next_seq = self.wal.rotate()?;
            let old = std::mem::take(&mut *head);
            write_guard(&self.frozen).push((Arc::new(old), next_seq));
        }
        Ok(())
    }

    /// Writes the oldest frozen head no flusher is writing into a block and commits it; false
    /// when there was no such head.
    fn write_one(&self) -> Result<bool, StoreError> {
        // Lock order: `writing`, then `frozen` (as the commit wait takes them).
        let claimed = {
            let mut writing = lock(&self.writing);
            let frozen = read_guard(&self.frozen);
            let next = frozen.iter().find(|(h, _)| !writing.iter().any(|w| Arc::ptr_eq(w, h))).cloned();
            if let Some((h, _)) = &next {
                writing.push(Arc::clone(h));
            }
            next
        };
        let Some((head, next_seq)) = claimed else { return Ok(false) };
        let result = self.write_and_commit(&head, next_seq);
        lock(&self.writing).retain(|w| !Arc::ptr_eq(w, &head));
        self.committed.notify_all();
        if result.is_ok() {
            // Freeing a head's spans (allocated on the receivers' threads) was a seventh of
            // a flusher's time, which bounds the ingest rate; another thread does it.
            let reaper = thread::Builder::new().name("spindle-free".into());
            let _ = reaper.spawn(move || drop(head));
        }
        result.map(|()| true)
    }

    fn write_and_commit(&self, head: &Arc<Head>, next_seq: u64) -> Result<(), StoreError> {
        let meta = self.write_head_block(head, next_seq - 1)?;
        // Commit in cut order: wait until every older frozen head is committed.
        {
            let mut writing = lock(&self.writing);
            while !read_guard(&self.frozen).first().is_some_and(|(h, _)| Arc::ptr_eq(h, head)) {
                if *lock(&self.stop) {
                    // Unpublished, the block is removed on the next open and the log replayed.
                    let _ = Block::remove_files(&self.blocks_dir, meta.id);
                    return Err(StoreError::Closed);
                }
                writing = self
                    .committed
                    .wait_timeout(writing, Duration::from_millis(50))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
        if let Err(e) = block::publish(&self.blocks_dir, &meta) {
            let _ = Block::remove_files(&self.blocks_dir, meta.id);
            return Err(e.at(&self.blocks_dir));
        }
        let block = Arc::new(Block::open(&self.blocks_dir, meta)?);
        {
            let mut blocks = write_guard(&self.blocks);
            blocks.push(block);
            write_guard(&self.frozen).retain(|(h, _)| !Arc::ptr_eq(h, head));
        }
        let catalog_changed = {
            let mut catalog = lock(&self.catalog);
            let changed = catalog.merge(head.catalog());
            changed.then(|| catalog.clone())
        };
        if let Some(catalog) = catalog_changed {
            save_catalog(&self.options.data_dir, &catalog)?;
        }
        wal::remove_segments_before(&self.wal_dir, next_seq)?;
        self.drained.notify_all();
        Ok(())
    }

    fn new_block_id(&self) -> u64 {
        self.next_block_id.fetch_add(1, Ordering::SeqCst)
    }

    fn write_head_block(&self, head: &Head, wal_covered: u64) -> Result<BlockMeta, StoreError> {
        let id = self.new_block_id();
        let traces = head.sorted_traces();
        // A thousand traces or so are plenty to tell which attributes most spans carry.
        let sample = traces.iter().step_by((traces.len() / 1024).clamp(1, 16)).flat_map(|(_, t)| t.spans.iter());
        let promoted = AttributeColumns::choose(sample);
        let mut writer =
            BlockWriter::create(&self.blocks_dir, id, self.options.row_group_spans, promoted, block::CUT_ZSTD_LEVEL)
                .map_err(|e| e.at(&self.blocks_dir))?;
        let mut result = Ok(());
        'traces: for (_, trace) in traces {
            let mut spans: Vec<&Span> = trace.spans.iter().collect();
            spans.sort_by_key(|s| (s.start_time_unix_nano, s.span_id));
            for span in spans {
                if let Err(e) = writer.push(span) {
                    result = Err(e);
                    break 'traces;
                }
            }
        }
        match result {
            Ok(()) => writer.finish_unpublished(wal_covered, Vec::new(), 0).map_err(|e| e.at(&self.blocks_dir)),
            Err(e) => {
                writer.abandon();
                Err(e.at(&self.blocks_dir))
            }
        }
    }

    fn enforce_retention(&self, now: u64) -> Result<usize, StoreError> {
        let _serial = lock(&self.maintenance_lock);
        let mut doomed: Vec<Arc<Block>> = Vec::new();
        {
            let mut blocks = write_guard(&self.blocks);
            if let Some(retention) = self.options.retention {
                let cutoff = now.saturating_sub(retention.as_nanos() as u64);
                blocks.retain(|b| {
                    let keep = b.meta.max_start >= cutoff;
                    if !keep {
                        doomed.push(Arc::clone(b));
                    }
                    keep
                });
            }
            if let Some(limit) = self.options.max_disk_bytes {
                let wal_bytes = dir_size(&self.wal_dir);
                let mut total: u64 = wal_bytes + blocks.iter().map(|b| b.meta.bytes).sum::<u64>();
                while total > limit && !blocks.is_empty() {
                    let oldest =
                        (0..blocks.len()).min_by_key(|&i| (blocks[i].meta.max_start, blocks[i].meta.id)).unwrap_or(0);
                    let b = blocks.remove(oldest);
                    total = total.saturating_sub(b.meta.bytes);
                    doomed.push(b);
                }
            }
        }
        for b in &doomed {
            tracing::info!(
                block = b.meta.id,
                spans = b.meta.spans,
                max_start = b.meta.max_start,
                "dropping block by retention"
            );
            Block::remove_files(&self.blocks_dir, b.meta.id)?;
        }
        Ok(doomed.len())
    }

    /// Merges small blocks, oldest first. With `all`, merges every block regardless of the
    /// minimum input count.
    fn compact_once(&self, all: bool) -> Result<bool, StoreError> {
        let _serial = lock(&self.maintenance_lock);
        let limit = self.options.compaction_max_block_spans;
        let needed = if all { 2 } else { self.options.compaction_min_inputs.max(2) };
        let inputs: Vec<Arc<Block>> = {
            let blocks = read_guard(&self.blocks);
            // Oldest first, up to the size limit (`all`: everything).
            let take = |mut group: Vec<Arc<Block>>| {
                group.sort_by_key(|b| (b.meta.min_start, b.meta.id));
                let mut chosen = Vec::new();
                let mut total = 0;
                for b in group {
                    if !chosen.is_empty() && total + b.meta.spans > limit.max(1) && !all {
                        break;
                    }
                    total += b.meta.spans;
                    chosen.push(b);
                }
                chosen
            };
            if all {
                take(blocks.to_vec())
            } else {
                // Tiered: only blocks of one level merge (cut blocks are level 0, a merge of
                // level-L blocks is level L + 1), so a span is rewritten once per level, a
                // logarithmic number of times. Merging the oldest small blocks whatever their
                // level made one growing block absorb every few new cuts and rewrote its
                // spans over and over: compaction took a fifth of the server's CPU at full
                // ingest (docs/PERFORMANCE.md).
                let mut levels: BTreeMap<u32, Vec<Arc<Block>>> = BTreeMap::new();
                for b in blocks.iter().filter(|b| b.meta.spans < limit) {
                    levels.entry(b.meta.level).or_default().push(Arc::clone(b));
                }
                levels.into_values().map(take).find(|chosen| chosen.len() >= needed).unwrap_or_default()
            }
        };
        if inputs.len() < needed {
            return Ok(false);
        }
        let started = Instant::now();
        let meta = self.merge_blocks(&inputs)?;
        let merged = Arc::new(Block::open(&self.blocks_dir, meta)?);
        let ids: HashSet<u64> = inputs.iter().map(|b| b.meta.id).collect();
        {
            let mut blocks = write_guard(&self.blocks);
            blocks.retain(|b| !ids.contains(&b.meta.id));
            blocks.push(Arc::clone(&merged));
            blocks.sort_by_key(|b| b.meta.id);
        }
        for id in &ids {
            Block::remove_files(&self.blocks_dir, *id)?;
        }
        tracing::info!(
            inputs = inputs.len(),
            spans = merged.meta.spans,
            bytes = merged.meta.bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "compacted blocks"
        );
        Ok(true)
    }

    /// Streams the inputs through a k-way merge by trace id into one new block, holding one
    /// decoded row group per input at a time; identical spans (client retries that landed in
    /// different blocks) are written once.
    fn merge_blocks(&self, inputs: &[Arc<Block>]) -> Result<BlockMeta, StoreError> {
        struct Cursor<'a> {
            block: &'a Block,
            rg: usize,
            /// The next row of row group `rg` to decode.
            row: usize,
            spans: std::vec::IntoIter<Span>,
            peeked: Option<Span>,
        }
        impl Cursor<'_> {
            fn advance(&mut self) -> Result<(), StoreError> {
                loop {
                    if let Some(s) = self.spans.next() {
                        self.peeked = Some(s);
                        return Ok(());
                    }
                    let Some(rows) = self.block.meta.row_groups.get(self.rg).map(|r| r.rows as usize) else {
                        self.peeked = None;
                        return Ok(());
                    };
                    // A slice of a row group at a time: decoded spans take far more memory
                    // than their columns, and a merge holds one slice per input.
                    let take = MERGE_SLICE_ROWS.min(rows - self.row.min(rows));
                    self.spans =
                        self.block.row_group_slice(self.rg, block::RowRange { skip: self.row, take })?.into_iter();
                    self.row += take;
                    if self.row >= rows {
                        self.rg += 1;
                        self.row = 0;
                    }
                }
            }
        }
        let mut cursors = Vec::with_capacity(inputs.len());
        for b in inputs {
            let mut c = Cursor { block: b, rg: 0, row: 0, spans: Vec::new().into_iter(), peeked: None };
            c.advance()?;
            cursors.push(c);
        }
        let id = self.new_block_id();
        let promoted =
            AttributeColumns::merge(inputs.iter().map(|b| (b.meta.promoted_attributes.as_slice(), b.meta.spans)));
        let mut writer =
            BlockWriter::create(&self.blocks_dir, id, self.options.row_group_spans, promoted, block::MERGED_ZSTD_LEVEL)
                .map_err(|e| e.at(&self.blocks_dir))?;
        let mut busy_since = Instant::now();
        let mut next_pause = self.options.row_group_spans as u64;
        let mut trace: Vec<Span> = Vec::new();
        let mut write_trace = |trace: &mut Vec<Span>, writer: &mut BlockWriter| -> Result<(), StoreError> {
            trace.sort_by_key(|s| (s.start_time_unix_nano, s.span_id));
            let mut kept: Vec<&Span> = Vec::with_capacity(trace.len());
            for s in trace.iter() {
                if !kept.iter().any(|k| k.span_id == s.span_id && *k == s) {
                    kept.push(s);
                }
            }
            for s in kept {
                writer.push(s).map_err(|e| e.at(&self.blocks_dir))?;
            }
            trace.clear();
            if writer.spans() >= next_pause {
                next_pause = writer.spans() + self.options.row_group_spans as u64;
                // Sleep in proportion to the work done since the last pause, so compaction
                // stays near its share of one core however large the merge (a smaller share
                // while ingest is heavy; none at a duty of 1).
                let duty = self.compaction_duty();
                if self.sleep(busy_since.elapsed().mul_f64((1.0 - duty) / duty)) {
                    return Err(StoreError::Closed);
                }
                busy_since = Instant::now();
            }
            Ok(())
        };
        let result = (|| {
            loop {
                let next =
                    cursors.iter().enumerate().filter_map(|(i, c)| c.peeked.as_ref().map(|s| (s.trace_id, i))).min();
                let Some((trace_id, i)) = next else { break };
                if trace.first().is_some_and(|s| s.trace_id != trace_id) {
                    write_trace(&mut trace, &mut writer)?;
                }
                if let Some(span) = cursors[i].peeked.take() {
                    trace.push(span);
                }
                cursors[i].advance()?;
            }
            write_trace(&mut trace, &mut writer)
        })();
        if let Err(e) = result {
            writer.abandon();
            return Err(e);
        }
        let wal_covered = inputs.iter().map(|b| b.meta.wal_covered).max().unwrap_or(0);
        let level = inputs.iter().map(|b| b.meta.level).max().unwrap_or(0) + 1;
        let replaces = inputs.iter().map(|b| b.meta.id).collect();
        writer.finish(wal_covered, replaces, level).map_err(|e| e.at(&self.blocks_dir))
    }

    /// Frozen heads and blocks, for one query.
    fn snapshot(&self) -> (Vec<Arc<Head>>, Vec<Arc<Block>>) {
        let frozen = read_guard(&self.frozen).iter().map(|(h, _)| Arc::clone(h)).collect();
        let blocks = read_guard(&self.blocks).clone();
        (frozen, blocks)
    }

    /// Reads the live head with `read`, then snapshots frozen heads and blocks, with no cut
    /// in between: a span is then seen at least once, never missed. (Frozen heads are
    /// taken before blocks, so one being written out meanwhile can only be seen twice.)
    fn read_all<R>(&self, read: impl FnOnce(&Head) -> R) -> (R, Vec<Arc<Head>>, Vec<Arc<Block>>) {
        let _no_cut = read_guard(&self.gate);
        let from_head = read(&read_guard(&self.head));
        let (frozen, blocks) = self.snapshot();
        (from_head, frozen, blocks)
    }

    /// Visits the spans in memory that match `query` (the live head, then frozen heads, as
    /// [`Inner::read_all`] orders them) and returns the blocks the scan continues with.
    fn scan_heads(&self, query: &TraceQuery, visit: &mut dyn FnMut(&Span)) -> Vec<Arc<Block>> {
        let visit_head = |head: &Head, visit: &mut dyn FnMut(&Span)| {
            for (_, trace) in head.traces() {
                trace.spans.iter().filter(|s| query.matches_span(s)).for_each(&mut *visit);
            }
        };
        let ((), frozen, blocks) = self.read_all(|head| visit_head(head, visit));
        for head in &frozen {
            visit_head(head, visit);
        }
        blocks
    }

    /// The earliest start of `trace_id` over every place that holds some of it.
    fn trace_start(
        &self,
        trace_id: TraceId,
        frozen: &[Arc<Head>],
        blocks: &[Arc<Block>],
    ) -> Result<Option<u64>, StoreError> {
        let mut best = read_guard(&self.head).get(trace_id).map(|t| t.start_min);
        for h in frozen {
            if let Some(t) = h.get(trace_id) {
                best = Some(best.map_or(t.start_min, |b| b.min(t.start_min)));
            }
        }
        for b in blocks {
            if let Some(s) = b.trace_start(trace_id)? {
                best = Some(best.map_or(s, |x| x.min(s)));
            }
        }
        Ok(best)
    }
}

impl TraceStore for EmbeddedStore {
    fn append(&self, spans: Vec<Span>) -> Result<(), StoreError> {
        if spans.is_empty() {
            return Ok(());
        }
        let payload = encode_batch(&spans).map_err(|e| StoreError::Encode(e.to_string()))?;
        let bytes = payload.len();
        let inner = &self.inner;
        let full = {
            let _gate = read_guard(&inner.gate);
            inner.wal.append(payload)?;
            let mut head = write_guard(&inner.head);
            head.insert(spans, bytes);
            head.bytes() >= inner.options.head_max_bytes
        };
        if full {
            // Cut now rather than at the flusher's next tick: under heavy ingest the flusher
            // is the pipeline's slowest stage, and its ticks were idle time.
            inner.cut.notify_one();
        }
        inner.wait_for_memory();
        Ok(())
    }

    fn get_trace(&self, trace_id: TraceId) -> Result<Vec<Span>, StoreError> {
        let (live, frozen, blocks) = self.inner.read_all(|head| head.get(trace_id).map(|t| t.spans.clone()));
        let mut out: Vec<Span> = Vec::new();
        let add = |spans: Vec<Span>, out: &mut Vec<Span>| {
            for s in spans {
                // A retry can land in two places (head and a block); report it once.
                if !out.iter().any(|o| o.span_id == s.span_id && *o == s) {
                    out.push(s);
                }
            }
        };
        for b in &blocks {
            let spans = b.get_trace(trace_id)?;
            add(spans, &mut out);
        }
        for h in &frozen {
            if let Some(t) = h.get(trace_id) {
                add(t.spans.clone(), &mut out);
            }
        }
        if let Some(spans) = live {
            add(spans, &mut out);
        }
        Ok(out)
    }

    fn scan_fields(
        &self,
        query: &TraceQuery,
        fields: &SpanFields,
        visit: &mut dyn FnMut(&Span),
    ) -> Result<(), StoreError> {
        for block in &self.inner.scan_heads(query, visit) {
            scan_block(block, query, fields, visit)?;
        }
        Ok(())
    }

    fn find_trace_ids(&self, query: &TraceQuery) -> Result<Vec<TraceId>, StoreError> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        // Candidates with an upper bound of their start: the earliest start where they matched.
        let mut candidates: HashMap<TraceId, u64> = HashMap::new();
        let ((), frozen, mut blocks) = self.inner.read_all(|head| head.find(query, &mut candidates));
        for h in &frozen {
            h.find(query, &mut candidates);
        }
        // Newest blocks first; stop once `limit` traces are certainly newer than anything an
        // older block could add.
        blocks.sort_by_key(|b| std::cmp::Reverse(b.meta.max_start));
        let mut exact: HashMap<TraceId, u64> = HashMap::new();
        let all_blocks = blocks.clone();
        for (i, b) in blocks.iter().enumerate() {
            if candidates.len() >= query.limit {
                let top = self.top(&candidates, &mut exact, query.limit, &frozen, &all_blocks)?;
                if top.len() >= query.limit && top.last().is_some_and(|(start, _)| *start > b.meta.max_start) {
                    tracing::trace!(skipped_blocks = blocks.len() - i, "search stopped early");
                    return Ok(top.into_iter().map(|(_, id)| id).collect());
                }
            }
            find_in_block(b, query, &mut candidates)?;
        }
        let top = self.top(&candidates, &mut exact, query.limit, &frozen, &all_blocks)?;
        Ok(top.into_iter().map(|(_, id)| id).collect())
    }

    fn services(&self) -> Result<Vec<String>, StoreError> {
        let mut catalog = lock(&self.inner.catalog).clone();
        catalog.merge(read_guard(&self.inner.head).catalog());
        for (h, _) in read_guard(&self.inner.frozen).iter() {
            catalog.merge(h.catalog());
        }
        Ok(catalog.services.keys().cloned().collect())
    }

    fn operations(&self, service: &str, kind: Option<SpanKind>) -> Result<Vec<Operation>, StoreError> {
        let mut ops = BTreeSet::new();
        lock(&self.inner.catalog).operations(service, kind, &mut ops);
        read_guard(&self.inner.head).catalog().operations(service, kind, &mut ops);
        for (h, _) in read_guard(&self.inner.frozen).iter() {
            h.catalog().operations(service, kind, &mut ops);
        }
        Ok(ops.into_iter().collect())
    }

    fn dependencies(&self, start: u64, end: u64) -> Result<Vec<DependencyLink>, StoreError> {
        let mut edges = BTreeMap::new();
        self.scan_traces(start, end, &SpanFields::with_attributes(GRAPH_KEYS), &mut |trace| {
            dependency_edges(trace, &mut edges)
        })?;
        Ok(links_from_edges(edges))
    }

    fn scan_rows(
        &self,
        query: &TraceQuery,
        fields: &RowFields,
        visit: &mut dyn FnMut(&SpanRow),
    ) -> Result<(), StoreError> {
        for block in &self.inner.scan_heads(query, &mut |span| visit(&SpanRow::of(span, fields))) {
            scan_block_rows(block, query, fields, visit)?;
        }
        Ok(())
    }

    fn scan_rows_split(
        &self,
        query: &TraceQuery,
        fields: &RowFields,
        visitors: &mut [&mut (dyn FnMut(&SpanRow) + Send)],
    ) -> Result<(), StoreError> {
        let Some(first) = visitors.first_mut() else { return Ok(()) };
        let blocks = self.inner.scan_heads(query, &mut |span| first(&SpanRow::of(span, fields)));
        scan_blocks_rows_split(&blocks, query, fields, visitors)
    }

    fn scan_traces(
        &self,
        start: u64,
        end: u64,
        fields: &SpanFields,
        visit: &mut dyn FnMut(&[Span]),
    ) -> Result<(), StoreError> {
        // Spans in memory are cut to `fields` as a block would return them, so that a span
        // held both in memory and in a block (a retry) compares equal and counts once.
        let keys = fields.attributes.as_deref();
        let projected = |spans: &[Span]| spans.iter().map(|s| project(s, keys, fields.events)).collect::<Vec<_>>();
        let (live, frozen, blocks) =
            self.inner.read_all(|head| head.traces().map(|(_, t)| projected(&t.spans)).collect::<Vec<_>>());
        let in_memory =
            live.into_iter().chain(frozen.iter().flat_map(|h| h.traces().map(|(_, t)| projected(&t.spans))));
        // Pass 1, trace ids only: traces present in more than one place must be assembled
        // before their start is known; traces with a span in a row group that ended before
        // the window started before it.
        let mut seen: HashSet<TraceId> = HashSet::new();
        let mut split: HashSet<TraceId> = HashSet::new();
        let mut early: HashSet<TraceId> = HashSet::new();
        let mut note = |id: TraceId| {
            if !seen.insert(id) {
                split.insert(id);
            }
        };
        let in_memory: Vec<Vec<Span>> = in_memory.filter(|t| !t.is_empty()).collect();
        in_memory.iter().for_each(|t| note(t[0].trace_id));
        for b in &blocks {
            for (rg, meta) in b.meta.row_groups.iter().enumerate() {
                let ids = row_group_trace_ids(b, rg)?;
                ids.iter().for_each(|id| note(*id));
                if meta.max_start < start {
                    early.extend(ids);
                }
            }
        }
        drop(seen);
        let mut assembled: HashMap<TraceId, Vec<Span>> = HashMap::new();
        let mut take = |trace: Vec<Span>, visit: &mut dyn FnMut(&[Span])| {
            let Some(first) = trace.first() else { return };
            if early.contains(&first.trace_id) {
                return;
            }
            if split.contains(&first.trace_id) {
                let all = assembled.entry(first.trace_id).or_default();
                for s in trace {
                    if !all.contains(&s) {
                        all.push(s);
                    }
                }
                return;
            }
            let trace_start = trace.iter().map(|s| s.start_time_unix_nano).min().unwrap_or(0);
            if trace_start >= start && trace_start <= end {
                visit(&trace);
            }
        };
        for trace in in_memory {
            take(trace, visit);
        }
        // Pass 2: row groups that overlap the window, and those holding part of a split
        // trace; a span's row group is decoded with `fields` only.
        for b in &blocks {
            let names = SpanColumns::selected_leaves(
                &b.attribute_columns,
                keys,
                fields.events,
                b.meta.attribute_keys.as_deref(),
            );
            for (rg, meta) in b.meta.row_groups.iter().enumerate() {
                let (lo, hi) = meta.trace_range();
                let overlaps = meta.max_start >= start && meta.min_start <= end;
                if !overlaps && (meta.max_start < start || !split.iter().any(|id| (lo..=hi).contains(&id.0))) {
                    continue;
                }
                let cols = b.read_columns(rg, Some(&names), b.all_rows(rg))?;
                let spans = cols
                    .decode_selected(&b.tables, &vec![true; cols.rows()], keys)
                    .map_err(|e| block::BlockError::from(e).at(&b.path))?;
                let mut run: Vec<Span> = Vec::new();
                for s in spans {
                    if run.first().is_some_and(|f| f.trace_id != s.trace_id) {
                        take(std::mem::take(&mut run), visit);
                    }
                    run.push(s);
                }
                take(run, visit);
            }
        }
        for trace in assembled.into_values() {
            let trace_start = trace.iter().map(|s| s.start_time_unix_nano).min().unwrap_or(0);
            if trace_start >= start && trace_start <= end {
                visit(&trace);
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.inner.wal.sync()
    }
}

impl EmbeddedStore {
    /// The `limit` best candidates by exact trace start (newest first, then larger id).
    /// A candidate's exact start is at most its bound, so candidates are refined in bound
    /// order and refining stops once no unrefined bound can beat the current `limit`-th.
    fn top(
        &self,
        candidates: &HashMap<TraceId, u64>,
        exact: &mut HashMap<TraceId, u64>,
        limit: usize,
        frozen: &[Arc<Head>],
        blocks: &[Arc<Block>],
    ) -> Result<Vec<(u64, TraceId)>, StoreError> {
        let mut by_bound: Vec<(u64, TraceId)> = candidates.iter().map(|(id, b)| (*b, *id)).collect();
        by_bound.sort_unstable_by(|a, b| b.cmp(a));
        let mut best: Vec<(u64, TraceId)> = Vec::with_capacity(limit.min(candidates.len()).saturating_add(1));
        for (bound, id) in by_bound {
            if best.len() >= limit && best.last().is_some_and(|worst| (bound, id) < *worst) {
                break;
            }
            let start = match exact.get(&id) {
                Some(s) => *s,
                None => {
                    let s = self.inner.trace_start(id, frozen, blocks)?.unwrap_or(bound).min(bound);
                    exact.insert(id, s);
                    s
                }
            };
            let pos = best.partition_point(|x| *x > (start, id));
            best.insert(pos, (start, id));
            best.truncate(limit);
        }
        Ok(best)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use spindle_model::{KeyValue, Resource, SpanId};

    use super::*;

    fn span(trace: u128, id: u64, parent: u64, service: &str, name: &str, start: u64) -> Span {
        Span {
            trace_id: TraceId(trace),
            span_id: SpanId(id),
            parent_span_id: SpanId(parent),
            name: name.into(),
            kind: SpanKind::Server,
            start_time_unix_nano: start,
            end_time_unix_nano: start + 1_000_000,
            attributes: vec![KeyValue::string("symbol", format!("S{id}"))],
            resource: Arc::new(Resource {
                attributes: vec![KeyValue::string("service.name", service)],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn options(dir: &Path) -> StoreOptions {
        StoreOptions { background: false, ..StoreOptions::new(dir) }
    }

    #[test]
    fn compaction_merges_blocks_of_one_level_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let levels = |store: &EmbeddedStore| {
            let mut l: Vec<u32> = read_guard(&store.inner.blocks).iter().map(|b| b.meta.level).collect();
            l.sort_unstable();
            l
        };
        let mut next = 0u64;
        let mut cut = |store: &EmbeddedStore| {
            next += 1;
            store.append(vec![span(u128::from(next), next, 0, "svc", "op", next * 1_000)]).unwrap();
            store.flush().unwrap();
        };
        for _ in 0..4 {
            cut(&store);
        }
        assert!(store.compact().unwrap());
        assert_eq!(levels(&store), vec![1]);
        for _ in 0..3 {
            cut(&store);
        }
        // Four small blocks, but only three of level 0: the level-1 block is not rewritten.
        assert!(!store.compact().unwrap());
        assert_eq!(levels(&store), vec![0, 0, 0, 1]);
        cut(&store);
        assert!(store.compact().unwrap());
        assert_eq!(levels(&store), vec![1, 1]);
        assert!(store.compact_all().unwrap());
        assert_eq!(levels(&store), vec![2]);
        assert_eq!(store.stats().block_spans, 8);
        for id in 1..=8u128 {
            assert_eq!(store.get_trace(TraceId(id)).unwrap().len(), 1);
        }
    }

    fn open(dir: &Path) -> EmbeddedStore {
        EmbeddedStore::open(options(dir)).unwrap()
    }

    /// Two flushers write heads at once; a block must never be published while an older
    /// head is still unpublished (on restart the newest published block says which log
    /// segments are covered). Sampled while both flushers are busy; then every span is there
    /// once after reopening.
    #[test]
    fn two_flushers_publish_blocks_in_cut_order() {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            background: true,
            sync: SyncPolicy::Interval(Duration::from_millis(50)),
            head_max_bytes: 24 * 1024,
            head_max_age: Duration::from_millis(20),
            row_group_spans: 64,
            compaction_min_inputs: usize::MAX,
            ..StoreOptions::new(dir.path())
        };
        let store = Arc::new(EmbeddedStore::open(options).unwrap());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers: Vec<_> = (0..3u64)
            .map(|w| {
                let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
                thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let spans = (0..40)
                            .map(|i| span(u128::from(w << 40 | n << 8 | i), i as u64 + 1, 0, "api", "op", 1_000 + n))
                            .collect();
                        store.append(spans).unwrap();
                        n += 1;
                    }
                    n * 40
                })
            })
            .collect();
        let inner = &store.inner;
        let (mut samples, mut both_busy) = (0u64, 0u64);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && (both_busy < 20 || samples < 2_000) {
            let writing = lock(&inner.writing).len();
            let blocks = read_guard(&inner.blocks);
            let frozen = read_guard(&inner.frozen);
            let published = blocks.iter().map(|b| b.meta.wal_covered).max().unwrap_or(0);
            for (_, next_seq) in frozen.iter() {
                assert!(
                    next_seq - 1 > published,
                    "a head covering segments up to {} is unpublished while a block covering {published} is published",
                    next_seq - 1
                );
            }
            samples += 1;
            both_busy += u64::from(writing >= 2);
            drop((frozen, blocks));
            thread::sleep(Duration::from_micros(200));
        }
        stop.store(true, Ordering::Relaxed);
        let appended: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
        assert!(
            both_busy >= 20,
            "the flushers were seen writing two heads at once only {both_busy} times in {samples} samples"
        );
        drop(store);
        let store = open(dir.path());
        store.flush().unwrap();
        let stored: u64 = read_guard(&store.inner.blocks).iter().map(|b| b.meta.spans).sum();
        assert_eq!(stored, appended, "every acknowledged span once");
    }

    #[test]
    fn reads_racing_head_cuts_never_miss_a_span() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            EmbeddedStore::open(StoreOptions {
                sync: SyncPolicy::Interval(Duration::from_secs(1)),
                ..options(dir.path())
            })
            .unwrap(),
        );
        let published = Arc::new(AtomicU64::new(0));
        let writer = {
            let (store, published) = (Arc::clone(&store), Arc::clone(&published));
            thread::spawn(move || {
                for t in 1..=150u64 {
                    let base = t * 10;
                    let trace: Vec<Span> =
                        (0..3).map(|k| span(u128::from(t), base + k, 0, "api", "get", 1_000 + t)).collect();
                    store.append(trace).unwrap();
                    published.store(t, Ordering::SeqCst);
                    // Every trace moves head → frozen → block while the reader reads it.
                    store.flush().unwrap();
                }
            })
        };
        let mut reads = 0;
        while !writer.is_finished() {
            let t = published.load(Ordering::SeqCst);
            if t == 0 {
                continue;
            }
            let spans = store.get_trace(TraceId(u128::from(t))).unwrap();
            assert_eq!(spans.len(), 3, "trace {t} read whole by get_trace");
            let query = TraceQuery {
                start_time_min_unix_nano: 1_000 + t,
                start_time_max_unix_nano: 1_000 + t,
                ..TraceQuery::default()
            };
            let mut seen = HashSet::new();
            store
                .scan_fields(&query, &SpanFields::bare(), &mut |s| {
                    seen.insert(s.span_id);
                })
                .unwrap();
            assert_eq!(seen.len(), 3, "trace {t} seen whole by scan_fields");
            assert_eq!(store.find_trace_ids(&query).unwrap(), vec![TraceId(u128::from(t))]);
            reads += 1;
        }
        writer.join().unwrap();
        assert!(reads > 10, "the reader raced the writer ({reads} reads)");
    }

    fn check_basic_queries(store: &EmbeddedStore) {
        assert_eq!(store.get_trace(TraceId(1)).unwrap().len(), 2);
        assert_eq!(store.services().unwrap(), vec!["a".to_string(), "b".to_string()]);
        let ids = store.find_trace_ids(&TraceQuery { service: Some("a".into()), ..Default::default() }).unwrap();
        assert_eq!(ids, vec![TraceId(2), TraceId(1)], "newest first");
        let ids = store
            .find_trace_ids(&TraceQuery { attributes: vec![("symbol".into(), "S2".into())], ..Default::default() })
            .unwrap();
        assert_eq!(ids, vec![TraceId(1)]);
        let deps = store.dependencies(0, u64::MAX).unwrap();
        assert_eq!(deps.len(), 1);
        assert_eq!((deps[0].parent.as_str(), deps[0].child.as_str(), deps[0].call_count), ("a", "b", 1));
    }

    #[test]
    fn appended_spans_survive_reopen_and_flush() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path());
            store.append(vec![span(1, 1, 0, "a", "root", 10), span(1, 2, 1, "b", "child", 20)]).unwrap();
            store.append(vec![span(2, 3, 0, "a", "other", 30)]).unwrap();
            check_basic_queries(&store);
        }
        {
            let store = open(dir.path());
            check_basic_queries(&store);
            store.flush().unwrap();
            assert_eq!(store.stats().blocks, 1);
            assert_eq!(store.stats().head_spans, 0);
            check_basic_queries(&store);
        }
        let store = open(dir.path());
        assert_eq!(store.stats().head_spans, 0, "flushed segments are not replayed");
        check_basic_queries(&store);
        assert_eq!(wal::segments(&dir.path().join("wal")).unwrap().len(), 1);
    }

    #[test]
    fn retried_spans_are_not_duplicated() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.append(vec![span(1, 1, 0, "a", "root", 10)]).unwrap();
        store.append(vec![span(1, 1, 0, "a", "root", 10)]).unwrap();
        assert_eq!(store.get_trace(TraceId(1)).unwrap().len(), 1);
        store.flush().unwrap();
        store.append(vec![span(1, 1, 0, "a", "root", 10)]).unwrap();
        store.flush().unwrap();
        assert_eq!(store.get_trace(TraceId(1)).unwrap().len(), 1);
        assert!(store.compact_all().unwrap());
        assert_eq!(store.stats().block_spans, 1);
    }

    #[test]
    fn a_second_process_cannot_open_the_same_directory() {
        let dir = tempfile::tempdir().unwrap();
        let _first = open(dir.path());
        let second = EmbeddedStore::open(options(dir.path()));
        assert!(matches!(second, Err(StoreError::Locked { .. })));
    }

    #[test]
    fn half_written_blocks_are_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path());
            store.append(vec![span(1, 1, 0, "a", "root", 10)]).unwrap();
            store.flush().unwrap();
        }
        let blocks = dir.path().join("blocks");
        fs::write(blocks.join("00000000000000ff.parquet"), b"PAR1 torn").unwrap();
        fs::write(blocks.join("0000000000000100.parquet.tmp"), b"PAR1").unwrap();
        let store = open(dir.path());
        assert!(!blocks.join("00000000000000ff.parquet").exists());
        assert!(!blocks.join("0000000000000100.parquet.tmp").exists());
        assert_eq!(store.get_trace(TraceId(1)).unwrap().len(), 1);
    }
}
