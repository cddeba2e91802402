//! The flush path: cutting the live head (for age, size or an explicit flush), writing
//! frozen heads into blocks on the flusher threads, committing blocks in cut order with the
//! catalog and deleting the log segments they cover, and the memory backpressure appends
//! wait on. It only adds blocks; removing them is compaction's and retention's.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use spindle_model::Span;

use super::{lock, now_unix_nanos, read_guard, write_guard, Inner};
use crate::block::{self, Block, BlockMeta, BlockWriter};
use crate::block_format::AttributeColumns;
use crate::head::Head;
use crate::wal;
use crate::StoreError;

/// Threads writing frozen heads into blocks. Building a block is the ingest pipeline's
/// slowest stage and one thread of it also waits for its file syncs; two keep both cores
/// busy at full ingest (`docs/PERFORMANCE.md`, "Embedded store").
pub(super) const FLUSH_THREADS: usize = 2;

impl Inner {
    pub(super) fn flush_loop(&self) {
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

    pub(super) fn flush(&self) -> Result<(), StoreError> {
        self.flush_inner(true)
    }

    /// Backpressure: while the head and the heads waiting for their block hold more than
    /// four cuts' worth, the append that pushed them there waits for a block to commit.
    /// Memory stays bounded when blocks are written slower than spans arrive; the server's
    /// bounded queue turns the wait into 429 / RESOURCE_EXHAUSTED.
    pub(super) fn wait_for_memory(&self) {
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
    pub(super) fn flush_inner(&self, cut: bool) -> Result<(), StoreError> {
        if cut {
            self.cut_head()?;
        }
        let Some(target) = read_guard(&self.frozen).last().map(|(_, next_seq)| *next_seq) else { return Ok(()) };
        loop {
            // Heads no flusher is writing (or one gave up on after a failed write) are
            // written here; the others are waited for.
            while self.write_one()? {}
            let writing = lock(&self.writing);
            if read_guard(&self.frozen).first().is_none_or(|(_, next_seq)| *next_seq > target) {
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
            let old = std::mem::replace(
                &mut *head,
                Head::new(self.options.max_operations_per_service, self.options.max_services),
            );
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
        // The catalog learns the head's names before the block exists: a crash in between
        // leaves names listed whose spans the log replays, never spans whose names are lost.
        if let Err(e) = self.catalog_head(head) {
            let _ = Block::remove_files(&self.blocks_dir, meta.id);
            return Err(e);
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
        wal::remove_segments_before(&self.wal_dir, next_seq)?;
        self.drained.notify_all();
        Ok(())
    }

    /// Merges `head`'s catalog into the store's and makes the new entries durable (appended
    /// to `catalog.log`). Only the entries a head adds are written: rewriting the whole
    /// catalog per flush cost in proportion to its size (`docs/STORAGE.md`).
    fn catalog_head(&self, head: &Head) -> Result<(), StoreError> {
        // The log's lock is held throughout, so entries reach the log in the order they
        // joined the catalog and a snapshot never misses one a concurrent commit logged.
        let mut log = lock(&self.catalog_log);
        let mut added = Vec::new();
        let unlisted = lock(&self.catalog).merge(head.catalog(), |service, name, kind| {
            added.push((service.to_string(), name.to_string(), kind));
        });
        self.count_unlisted(unlisted);
        log.append(&added, &self.catalog)
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
            Ok(()) => {
                let mut meta =
                    writer.finish_unpublished(wal_covered, Vec::new(), 0).map_err(|e| e.at(&self.blocks_dir))?;
                meta.ingested_unix_nano = now_unix_nanos();
                Ok(meta)
            }
            Err(e) => {
                writer.abandon();
                Err(e.at(&self.blocks_dir))
            }
        }
    }
}
