//! The maintenance thread and compaction: merging small blocks of one level into one block
//! of the next, streamed by trace id and paced to a share of one core that shrinks while
//! ingest is heavy. A merge commits its output before removing its inputs; it never touches
//! the head or the log.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use spindle_model::Span;

use super::recovery::set_block_aside;
use super::{guarded, lock, now_unix_nanos, read_guard, write_guard, Inner};
use crate::block::{self, Block, BlockMeta, BlockWriter};
use crate::block_format::AttributeColumns;
use crate::StoreError;

/// Rows a compaction decodes from one input at a time (a handful in unit tests, so their
/// merges cross slice boundaries inside traces).
const MERGE_SLICE_ROWS: usize = if cfg!(test) { 7 } else { 4_096 };

impl Inner {
    pub(super) fn maintenance_loop(&self) {
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

    /// Merges small blocks, oldest first. With `all`, merges every block regardless of the
    /// minimum input count.
    pub(super) fn compact_once(&self, all: bool) -> Result<bool, StoreError> {
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
        let meta = match self.merge_blocks(&inputs) {
            Ok(meta) => meta,
            Err(MergeError { error, unreadable_input: Some(id) }) => {
                // A block compaction cannot read must not stop every later merge of its
                // level, nor be removed as a merged input: it leaves the served blocks and
                // its files go aside, where nothing deletes them.
                write_guard(&self.blocks).retain(|b| b.meta.id != id);
                set_block_aside(&self.blocks_dir, id, &format!("unreadable while compacting: {error}"));
                self.recovered.blocks_set_aside.fetch_add(1, Ordering::Relaxed);
                return Err(error);
            }
            Err(MergeError { error, unreadable_input: None }) => return Err(error),
        };
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
    fn merge_blocks(&self, inputs: &[Arc<Block>]) -> Result<BlockMeta, MergeError> {
        struct Cursor<'a> {
            block: &'a Block,
            rg: usize,
            /// The next row of row group `rg` to decode.
            row: usize,
            spans: std::vec::IntoIter<Span>,
            peeked: Option<Span>,
            /// Reading this input failed.
            failed: bool,
        }
        impl Cursor<'_> {
            fn advance(&mut self) -> Result<(), StoreError> {
                let result = self.advance_inner();
                self.failed = result.is_err();
                result
            }

            fn advance_inner(&mut self) -> Result<(), StoreError> {
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
                    let (block, rg, skip) = (self.block, self.rg, self.row);
                    self.spans =
                        guarded(&block.path, || block.row_group_slice(rg, block::RowRange { skip, take }))?.into_iter();
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
            let mut c = Cursor { block: b, rg: 0, row: 0, spans: Vec::new().into_iter(), peeked: None, failed: false };
            c.advance().map_err(|error| MergeError { error, unreadable_input: Some(b.meta.id) })?;
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
        if let Err(error) = result {
            writer.abandon();
            let unreadable_input = cursors.iter().find(|c| c.failed).map(|c| c.block.meta.id);
            return Err(MergeError { error, unreadable_input });
        }
        let wal_covered = inputs.iter().map(|b| b.meta.wal_covered).max().unwrap_or(0);
        let level = inputs.iter().map(|b| b.meta.level).max().unwrap_or(0) + 1;
        let replaces = inputs.iter().map(|b| b.meta.id).collect();
        let mut meta = writer.finish_unpublished(wal_covered, replaces, level).map_err(|e| e.at(&self.blocks_dir))?;
        // Its spans came when its newest input's did; the merge must not restart their
        // retention.
        meta.ingested_unix_nano = inputs.iter().map(|b| b.meta.ingested_unix_nano).max().unwrap_or(0);
        if let Err(e) = block::publish(&self.blocks_dir, &meta) {
            let _ = Block::remove_files(&self.blocks_dir, meta.id);
            return Err(e.at(&self.blocks_dir).into());
        }
        Ok(meta)
    }
}

/// Why a merge failed, and which input could not be read when that was why.
struct MergeError {
    error: StoreError,
    unreadable_input: Option<u64>,
}

impl From<StoreError> for MergeError {
    fn from(error: StoreError) -> Self {
        MergeError { error, unreadable_input: None }
    }
}
