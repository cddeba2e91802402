//! Opening the data directory: taking its lock, opening committed blocks and removing what
//! a crash left behind, replaying the log segments no block covers into the head, and
//! starting the background threads. Runs once per open; it must not be needed for the
//! engine to stay correct while it runs.

use std::collections::HashSet;
use std::fs::{self, File};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread;
use std::time::Instant;

use super::catalog::load_catalog;
use super::flush::FLUSH_THREADS;
use super::{EmbeddedStore, Inner, StoreOptions};
use crate::batch_codec::decode_batch;
use crate::block::{self, Block};
use crate::head::Head;
use crate::wal::{self, Wal};
use crate::StoreError;

/// Opens every committed block, removing what crashes left behind: temporary files, Parquet
/// files without meta, and inputs of a compaction whose output was committed. A block whose
/// meta file exists but cannot be read (damaged, or written by a newer Spindle) is left on
/// disk untouched and not served: nothing stored is deleted because it could not be read.
/// Also returns the highest block id on disk, readable or not, so new blocks never reuse one.
fn open_blocks(dir: &Path) -> Result<(Vec<Arc<Block>>, u64), StoreError> {
    let mut metas = Vec::new();
    let mut parquet_ids = Vec::new();
    let mut unreadable = HashSet::new();
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
                Ok(meta) => {
                    tracing::error!(path = %path.display(), id = meta.id, "block meta names another block, leaving the block on disk unserved");
                    unreadable.insert(id);
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "block meta unreadable, leaving the block on disk unserved");
                    unreadable.insert(id);
                }
            }
        } else if let Some(id) = name.strip_suffix(".parquet").and_then(|h| u64::from_str_radix(h, 16).ok()) {
            parquet_ids.push(id);
        }
    }
    let highest_id =
        metas.iter().map(|m| m.id).chain(unreadable.iter().copied()).chain(parquet_ids.iter().copied()).max();
    let committed: HashSet<u64> = metas.iter().map(|m| m.id).chain(unreadable.iter().copied()).collect();
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
    Ok((blocks, highest_id.unwrap_or(0)))
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

        let (blocks, highest_block_id) = open_blocks(&blocks_dir)?;
        let covered = blocks.iter().map(|b| b.meta.wal_covered).max().unwrap_or(0);
        let next_block_id = highest_block_id + 1;
        let catalog = load_catalog(&dir)?;

        let mut head = Head::default();
        let mut undecodable = 0u64;
        let mut records = 0;
        let mut last_seq = covered;
        let segments = wal::segments(&wal_dir)?;
        let newest_seq = segments.last().map(|(seq, _)| *seq);
        for (seq, path) in segments {
            last_seq = last_seq.max(seq);
            if seq <= covered {
                // Its spans are in a block; the crash came before the segment was deleted.
                fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
                continue;
            }
            records += wal::replay(&path, Some(seq) == newest_seq, |payload| match decode_batch(payload) {
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
}
