//! The embedded store: a log-structured columnar engine in one data directory.
//!
//! Appends go to the write-ahead log (group-committed, synced per
//! [`SyncPolicy`](crate::SyncPolicy)) and then into the in-memory head. A flusher thread cuts
//! the head every `head_max_age` or `head_max_bytes` into an immutable Parquet block and then
//! deletes the log segments the block covers; a maintenance thread drops blocks past
//! retention or the disk limit and merges small blocks into large ones. Queries read the
//! head, heads being flushed, and the blocks together.
//!
//! Layout of the data directory:
//! - `LOCK` — held with an exclusive file lock while a process uses the directory;
//! - `spindle-data.json` — the directory's format; a newer one than this release's refuses;
//! - `wal/<seq>.wal` — log segments not yet wholly in blocks, replayed into the head on open;
//!   `wal/<seq>.wal.<offset>.unread` — bytes replay could not read, kept aside;
//! - `blocks/<id>.parquet` + `blocks/<id>.meta.json` — blocks; the meta file commits one;
//! - `blocks/aside/` — files of blocks that could not be read, never served nor deleted;
//! - `catalog.json` + `catalog.log` — services and operations of everything flushed
//!   (snapshot and the entries added since); `catalog.*.unreadable-<n>` — unreadable ones.
//!
//! Architecture Invariant: a span acknowledged by `append` is in the log or in a block whose
//! meta file exists, at every instant; it is never in both once the engine is at rest, and
//! opening the store after a crash at any point restores exactly the acknowledged spans.
//!
//! This file owns the engine's shared state ([`Inner`] and its locks), the public handle,
//! and the [`TraceStore`] impl: appends and every query over head, frozen heads and blocks.
//! Each other concern has its own file and touches the engine only through [`Inner`]:
//! - [`options`] — [`StoreOptions`];
//! - [`recovery`] — opening the directory: blocks, crash leftovers, log replay, threads;
//! - [`flush`] — cutting the head, writing frozen heads into blocks, committing them;
//! - [`catalog`] — `catalog.json`;
//! - [`compaction`] — the maintenance thread and merging blocks;
//! - [`retention`] — dropping blocks by age and disk limit.

mod catalog;
mod compaction;
mod flush;
mod options;
mod recovery;
mod retention;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use spindle_model::{dependency_edges, links_from_edges, DependencyLink, Span, SpanKind, TraceId};

use crate::batch_codec::encode_batch;
use crate::block::{self, Block};
use crate::block_format::{project, SpanColumns};
use crate::head::{Catalog, Head, Unlisted};
use crate::query::{Operation, TraceQuery};
use crate::scan::{find_in_block, row_group_trace_ids, scan_block, scan_block_rows, scan_blocks_rows_split};
use crate::wal::Wal;
use crate::{starts_within, RowFields, SpanFields, SpanRow, StoreError, TraceStore, GRAPH_KEYS};

pub use options::StoreOptions;

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
    /// Taken before `catalog` when both are.
    catalog_log: Mutex<catalog::CatalogLog>,
    recovered: Recovered,
    /// Spans (at append) and flushed names (at a commit) whose operation did not fit their
    /// service's list; see [`StoreStats::operations_unlisted`].
    operations_unlisted: AtomicU64,
    /// Spans (at append) and flushed services (at a commit) whose service did not fit the
    /// services list; see [`StoreStats::services_unlisted`].
    services_unlisted: AtomicU64,
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

/// What the store could not read and kept aside, since it opened.
#[derive(Default)]
struct Recovered {
    blocks_set_aside: AtomicU64,
    wal_records_skipped: AtomicU64,
    wal_bytes_set_aside: AtomicU64,
    wal_records_undecodable: AtomicU64,
    catalog_rebuilds: AtomicU64,
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

/// Runs a read of block `path`, turning a panic into an error. The Parquet decoder was seen
/// to panic on damaged files (an arithmetic overflow in debug builds); a damaged block must
/// cost its reads, not a thread: the flusher, the maintenance thread or the open.
fn guarded<T>(path: &Path, read: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)).unwrap_or_else(|panic| {
        let reason = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(StoreError::Block { path: path.display().to_string(), reason: format!("reading panicked: {reason}") })
    })
}

fn now_unix_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

impl EmbeddedStore {
    /// The spans of a trace, whole or carrying only `fields`.
    fn trace_with(&self, trace_id: TraceId, fields: Option<&SpanFields>) -> Result<Vec<Span>, StoreError> {
        let (live, frozen, blocks) = self.inner.read_all(|head| head.get(trace_id).map(|t| t.spans.clone()));
        let mut out: Vec<Span> = Vec::new();
        let add = |spans: Vec<Span>, out: &mut Vec<Span>| {
            for s in spans {
                // A retry can land in two places (head and a block); report it once. A
                // projected copy is not equal to a whole one: compare what both carry.
                let same = |o: &Span| match fields {
                    None => *o == s,
                    Some(_) => o.start_time_unix_nano == s.start_time_unix_nano && o.name == s.name,
                };
                if !out.iter().any(|o| o.span_id == s.span_id && same(o)) {
                    out.push(s);
                }
            }
        };
        for b in &blocks {
            let spans = match fields {
                None => guarded(&b.path, || b.get_trace(trace_id))?,
                Some(fields) => guarded(&b.path, || b.get_trace_fields(trace_id, fields))?,
            };
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
        let recovered = &self.inner.recovered;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StoreStats {
            blocks: blocks.len(),
            block_spans: blocks.iter().map(|b| b.meta.spans).sum(),
            block_bytes: blocks.iter().map(|b| b.meta.bytes).sum(),
            head_spans: (head.span_count() + frozen.iter().map(|(h, _)| h.span_count()).sum::<usize>()) as u64,
            wal_bytes: crate::wal::segments_size(&self.inner.wal_dir),
            blocks_set_aside: load(&recovered.blocks_set_aside),
            wal_records_skipped: load(&recovered.wal_records_skipped),
            wal_bytes_set_aside: load(&recovered.wal_bytes_set_aside),
            wal_records_undecodable: load(&recovered.wal_records_undecodable),
            catalog_rebuilds: load(&recovered.catalog_rebuilds),
            operations_unlisted: load(&self.inner.operations_unlisted),
            services_unlisted: load(&self.inner.services_unlisted),
        }
    }

    pub fn data_dir_size(dir: &Path) -> u64 {
        dir_size(dir)
    }
}

/// What the store holds, for `/metrics` and benchmarks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    pub blocks: usize,
    pub block_spans: u64,
    pub block_bytes: u64,
    /// Spans in memory, not yet in blocks.
    pub head_spans: u64,
    pub wal_bytes: u64,
    /// Counters since the store opened. Blocks whose meta or data file could not be read,
    /// moved to `blocks/aside/` (at open, or when compaction could not read one).
    pub blocks_set_aside: u64,
    /// Write-ahead log records that failed their checksum at replay; their bytes are aside.
    pub wal_records_skipped: u64,
    /// Bytes of the write-ahead log replay could not read or decode, copied to `.unread` files.
    pub wal_bytes_set_aside: u64,
    /// Records that passed their checksum but could not be decoded; their bytes are aside.
    pub wal_records_undecodable: u64,
    /// Times the catalog was rebuilt from the blocks (its files unreadable or missing).
    pub catalog_rebuilds: u64,
    /// Operation names left out of a service's list because it held
    /// `max_operations_per_service`: counted once per span appended while the list in
    /// memory was full, and once per name when a flush found the stored list full.
    pub operations_unlisted: u64,
    /// Services left out of the services list because it held `max_services`: counted once
    /// per span appended while the list in memory was full, and once per service when a
    /// flush found the stored list full. Their spans are stored and searchable.
    pub services_unlisted: u64,
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
    /// Adds what an append or a flush could not list to [`StoreStats`].
    fn count_unlisted(&self, unlisted: Unlisted) {
        if unlisted.operations > 0 {
            self.operations_unlisted.fetch_add(unlisted.operations, Ordering::Relaxed);
        }
        if unlisted.services > 0 {
            self.services_unlisted.fetch_add(unlisted.services, Ordering::Relaxed);
        }
    }

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

    fn new_block_id(&self) -> u64 {
        self.next_block_id.fetch_add(1, Ordering::SeqCst)
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
            if let Some(s) = guarded(&b.path, || b.trace_start(trace_id))? {
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
            let unlisted = head.insert(spans, bytes);
            inner.count_unlisted(unlisted);
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
        self.trace_with(trace_id, None)
    }

    fn get_traces_fields(&self, trace_ids: &[TraceId], fields: &SpanFields) -> Result<Vec<Vec<Span>>, StoreError> {
        trace_ids
            .iter()
            .map(|id| {
                crate::QueryControl::check_current()?;
                self.trace_with(*id, Some(fields))
            })
            .collect()
    }

    fn scan_fields(
        &self,
        query: &TraceQuery,
        fields: &SpanFields,
        visit: &mut dyn FnMut(&Span),
    ) -> Result<(), StoreError> {
        for block in &self.inner.scan_heads(query, visit) {
            guarded(&block.path, || scan_block(block, query, fields, &mut *visit))?;
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
            guarded(&b.path, || find_in_block(b, query, &mut candidates))?;
        }
        let top = self.top(&candidates, &mut exact, query.limit, &frozen, &all_blocks)?;
        Ok(top.into_iter().map(|(_, id)| id).collect())
    }

    fn services(&self) -> Result<Vec<String>, StoreError> {
        // Names only: copying the operations too made this cheap read cost as much as the
        // catalog is large.
        let mut services: BTreeSet<String> = lock(&self.inner.catalog).service_names().map(str::to_string).collect();
        // Services only in memory join the stored list while it has room (as a flush adds
        // them), so the answer holds at most `max_services`.
        let mut pending: BTreeSet<String> = BTreeSet::new();
        let mut add_pending = |catalog: &Catalog| {
            pending.extend(catalog.service_names().filter(|s| !services.contains(*s)).map(str::to_string));
        };
        add_pending(read_guard(&self.inner.head).catalog());
        for (h, _) in read_guard(&self.inner.frozen).iter() {
            add_pending(h.catalog());
        }
        let room = self.inner.options.max_services.saturating_sub(services.len());
        services.extend(pending.into_iter().take(room));
        Ok(services.into_iter().collect())
    }

    fn operations(&self, service: &str, kind: Option<SpanKind>) -> Result<Vec<Operation>, StoreError> {
        // The stored list first; names only in memory join it while it has room, so the
        // answer holds at most `max_operations_per_service` (each catalog stops there).
        let mut ops = HashSet::new();
        lock(&self.inner.catalog).operations(service, kind, &mut ops);
        read_guard(&self.inner.head).catalog().operations(service, kind, &mut ops);
        for (h, _) in read_guard(&self.inner.frozen).iter() {
            h.catalog().operations(service, kind, &mut ops);
        }
        let mut ops: Vec<Operation> = ops.into_iter().collect();
        ops.sort_unstable();
        Ok(ops)
    }

    fn operations_capped(&self, service: &str) -> Result<bool, StoreError> {
        let max = self.inner.options.max_operations_per_service;
        if lock(&self.inner.catalog).count(service) >= max {
            return Ok(true);
        }
        // Names only in memory can fill the list too; it is at most `max` long.
        Ok(self.operations(service, None)?.len() >= max)
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
            guarded(&block.path, || scan_block_rows(block, query, fields, &mut *visit))?;
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
                // Dependencies take no query: their deadline is the thread's (`QueryControl::run`).
                crate::QueryControl::check_current()?;
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
            if starts_within(&trace, start, end) {
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
                crate::QueryControl::check_current()?;
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
            if starts_within(&trace, start, end) {
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
