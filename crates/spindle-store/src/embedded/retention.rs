//! Retention: dropping whole blocks whose newest span is older than the retention period,
//! then the oldest blocks while blocks and log exceed the disk limit. The head and the log
//! are never dropped, nor anything set aside (`blocks/aside/`), which is not a block here.
//!
//! A block's age counts from its newest span's start or from when its spans were received,
//! whichever is earlier: span times are client clocks, and one span stamped decades ahead
//! must not keep its block (and every correct span in it) forever.

use std::sync::Arc;

use super::{lock, write_guard, Inner};
use crate::block::Block;
use crate::StoreError;

/// The time a block's age counts from (see the module doc).
pub(super) fn retention_time(block: &Block) -> u64 {
    match block.meta.ingested_unix_nano {
        0 => block.meta.max_start,
        ingested => block.meta.max_start.min(ingested),
    }
}

impl Inner {
    pub(super) fn enforce_retention(&self, now: u64) -> Result<usize, StoreError> {
        let _serial = lock(&self.maintenance_lock);
        let mut doomed: Vec<Arc<Block>> = Vec::new();
        {
            let mut blocks = write_guard(&self.blocks);
            if let Some(retention) = self.options.retention {
                let cutoff = now.saturating_sub(retention.as_nanos() as u64);
                blocks.retain(|b| {
                    let keep = retention_time(b) >= cutoff;
                    if !keep {
                        doomed.push(Arc::clone(b));
                    }
                    keep
                });
            }
            if let Some(limit) = self.options.max_disk_bytes {
                let wal_bytes = crate::wal::segments_size(&self.wal_dir);
                let mut total: u64 = wal_bytes + blocks.iter().map(|b| b.meta.bytes).sum::<u64>();
                while total > limit && !blocks.is_empty() {
                    let oldest =
                        (0..blocks.len()).min_by_key(|&i| (retention_time(&blocks[i]), blocks[i].meta.id)).unwrap_or(0);
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
}
