//! Opening the data directory: taking its lock, opening committed blocks and removing what
//! a crash left behind, replaying the log segments no block covers into the head, and
//! starting the background threads. Runs once per open; it must not be needed for the
//! engine to stay correct while it runs.

use std::collections::HashSet;
use std::fs::{self, File};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread;
use std::time::Instant;

use super::catalog::open_catalog;
use super::flush::FLUSH_THREADS;
use super::{guarded, EmbeddedStore, Inner, Recovered, StoreOptions};
use crate::batch_codec::decode_batch;
use crate::block::{self, Block};
use crate::head::{Head, Unlisted};
use crate::wal::{self, Wal};
use crate::StoreError;

/// Where blocks that cannot be served are moved, inside the blocks directory. Nothing reads,
/// counts or deletes what is in it: retention, the disk limit, compaction and the next
/// open see only `blocks/*.meta.json`. An operator inspects it, repairs a block (moves its
/// files back) or removes it.
pub(super) const ASIDE_DIR: &str = "aside";

/// The data directory's format marker and the format this release writes.
const MARKER_FILE: &str = "spindle-data.json";
const DATA_FORMAT: u32 = 1;

#[derive(serde::Serialize, serde::Deserialize)]
struct Marker {
    format: u32,
}

/// Refuses a directory whose marker names a newer format or cannot be read; writes the
/// marker where there is none (a new directory, or one an older release wrote).
fn check_marker(dir: &Path) -> Result<(), StoreError> {
    let path = dir.join(MARKER_FILE);
    let refuse = |message: String| StoreError::DataFormat { path: path.display().to_string(), message };
    match fs::read(&path) {
        Ok(bytes) => {
            let marker: Marker = serde_json::from_slice(&bytes).map_err(|e| {
                refuse(format!(
                    "unreadable ({e}); it names the format of the data directory. If this release wrote the \
                     directory, replace the file's content with {{\"format\":{DATA_FORMAT}}}; otherwise start the \
                     release that wrote it"
                ))
            })?;
            if marker.format > DATA_FORMAT {
                return Err(refuse(format!(
                    "the data directory was written by a newer Spindle (data format {}; this release reads \
                     format {DATA_FORMAT} and older). Start a release that reads format {} on it, or start this \
                     one on another data directory",
                    marker.format, marker.format
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let tmp = dir.join(format!("{MARKER_FILE}.tmp"));
            let bytes =
                serde_json::to_vec(&Marker { format: DATA_FORMAT }).map_err(|e| StoreError::Encode(e.to_string()))?;
            fs::write(&tmp, bytes)
                .and_then(|_| File::open(&tmp)?.sync_all())
                .and_then(|_| fs::rename(&tmp, &path))
                .and_then(|_| File::open(dir)?.sync_all())
                .map_err(|e| StoreError::io(&path, e))
        }
        Err(e) => Err(StoreError::io(&path, e)),
    }
}

/// The block id a file of the blocks directory (or of its aside directory) belongs to:
/// its name starts with the id in 16 hex digits.
fn block_id_of(name: &str) -> Option<u64> {
    name.get(..16).filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit())).and_then(|h| u64::from_str_radix(h, 16).ok())
}

/// Moves the files of block `id` that exist into `blocks/aside/`, never over a file already
/// there; returns how many moved. A block that cannot be moved stays where it is, unserved.
pub(super) fn set_block_aside(dir: &Path, id: u64, reason: &dyn std::fmt::Display) -> usize {
    let aside = dir.join(ASIDE_DIR);
    if let Err(e) = fs::create_dir_all(&aside) {
        tracing::error!(path = %aside.display(), error = %e, "cannot create the directory for blocks set aside");
        return 0;
    }
    let mut moved = 0;
    for path in [block::meta_path(dir, id), block::parquet_path(dir, id)] {
        if !path.exists() {
            continue;
        }
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut target = aside.join(&name);
        let mut n = 1;
        while target.exists() {
            target = aside.join(format!("{name}.{n}"));
            n += 1;
        }
        match fs::rename(&path, &target) {
            Ok(()) => {
                moved += 1;
                tracing::error!(block = id, path = %path.display(), set_aside_as = %target.display(), %reason, "block file set aside");
            }
            Err(e) => {
                tracing::error!(block = id, path = %path.display(), error = %e, %reason, "cannot set a block file aside; it stays in place, unserved")
            }
        }
    }
    moved
}

/// What [`open_blocks`] found.
struct OpenedBlocks {
    blocks: Vec<Arc<Block>>,
    /// The highest block id on disk, set aside or not, so that new blocks never reuse one.
    highest_id: u64,
    /// Blocks set aside by this open.
    set_aside: u64,
}

/// Opens every committed block, removing what crashes left behind: temporary files, Parquet
/// files without meta, and inputs of a compaction whose output was committed. A block whose
/// meta file exists but cannot be read (damaged, or written by a newer Spindle), or whose
/// Parquet file cannot be opened, is set aside with its files (see [`ASIDE_DIR`]): nothing
/// stored is deleted because it could not be read.
fn open_blocks(dir: &Path) -> Result<OpenedBlocks, StoreError> {
    let mut metas = Vec::new();
    let mut parquet_ids = Vec::new();
    let mut unreadable: Vec<(u64, String)> = Vec::new();
    let mut highest_id = 0;
    for entry in fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))? {
        let entry = entry.map_err(|e| StoreError::io(dir, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            continue;
        }
        // Every file named after a block reserves its id, whatever state it is in.
        highest_id = highest_id.max(block_id_of(&name).unwrap_or(0));
        if name.ends_with(".tmp") {
            tracing::warn!(path = %path.display(), "removing unfinished block file");
            fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
        } else if let Some(id) = name.strip_suffix(".meta.json").and_then(|h| u64::from_str_radix(h, 16).ok()) {
            match block::read_meta(&path) {
                Ok(mut meta) if meta.id == id => {
                    if meta.ingested_unix_nano == 0 {
                        // Written before blocks recorded it: the meta file's time is when the
                        // block was committed, a bound from above of when its spans came. With
                        // no time at all (0) retention goes by the newest span alone.
                        meta.ingested_unix_nano = entry
                            .metadata()
                            .and_then(|m| m.modified())
                            .ok()
                            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                            .map_or(0, |d| d.as_nanos() as u64);
                    }
                    metas.push(meta)
                }
                Ok(meta) => unreadable.push((id, format!("meta names block {:016x}", meta.id))),
                Err(e) => unreadable.push((id, format!("meta unreadable: {e}"))),
            }
        } else if let Some(id) = name.strip_suffix(".parquet").and_then(|h| u64::from_str_radix(h, 16).ok()) {
            parquet_ids.push(id);
        }
    }
    if let Ok(entries) = fs::read_dir(dir.join(ASIDE_DIR)) {
        for entry in entries.flatten() {
            highest_id = highest_id.max(block_id_of(&entry.file_name().to_string_lossy()).unwrap_or(0));
        }
    }
    let mut set_aside = 0;
    for (id, reason) in &unreadable {
        set_block_aside(dir, *id, reason);
        set_aside += 1;
    }
    let committed: HashSet<u64> = metas.iter().map(|m| m.id).chain(unreadable.iter().map(|(id, _)| *id)).collect();
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
        match guarded(&block::parquet_path(dir, id), || Block::open(dir, meta)) {
            Ok(b) => blocks.push(Arc::new(b)),
            Err(e) => {
                // Keeping the store available matters more than one block; its files are
                // kept for inspection where no open, compaction or retention looks.
                set_block_aside(dir, id, &format!("data file unreadable: {e}"));
                set_aside += 1;
            }
        }
    }
    blocks.sort_by_key(|b| b.meta.id);
    Ok(OpenedBlocks { blocks, highest_id, set_aside })
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

        check_marker(&dir)?;

        let OpenedBlocks { blocks, highest_id, set_aside } = open_blocks(&blocks_dir)?;
        let covered = blocks.iter().map(|b| b.meta.wal_covered).max().unwrap_or(0);
        let next_block_id = highest_id + 1;
        let opened_catalog = open_catalog(&dir, &blocks, options.max_operations_per_service, options.max_services)?;
        let recovered = Recovered::default();
        recovered.blocks_set_aside.store(set_aside, Ordering::Relaxed);
        recovered.catalog_rebuilds.store(u64::from(opened_catalog.rebuilt), Ordering::Relaxed);

        let mut head = Head::new(options.max_operations_per_service, options.max_services);
        let mut unlisted = Unlisted::default();
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
            let replayed = wal::replay(&path, Some(seq) == newest_seq, |payload| match decode_batch(payload) {
                Ok(spans) => {
                    let u = head.insert(spans, payload.len());
                    unlisted.operations += u.operations;
                    unlisted.services += u.services;
                    true
                }
                Err(e) => {
                    undecodable += 1;
                    tracing::error!(path = %path.display(), error = %e, "undecodable write-ahead log record");
                    false
                }
            })?;
            records += replayed.records;
            recovered.wal_records_skipped.fetch_add(replayed.skipped, Ordering::Relaxed);
            recovered.wal_bytes_set_aside.fetch_add(replayed.bytes_aside, Ordering::Relaxed);
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
        recovered.wal_records_undecodable.store(undecodable, Ordering::Relaxed);
        tracing::info!(
            blocks = blocks.len(),
            blocks_set_aside = set_aside,
            wal_records_skipped = recovered.wal_records_skipped.load(Ordering::Relaxed),
            catalog_rebuilt = opened_catalog.rebuilt,
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
            catalog: Mutex::new(opened_catalog.catalog),
            catalog_log: Mutex::new(opened_catalog.log),
            recovered,
            operations_unlisted: AtomicU64::new(unlisted.operations),
            services_unlisted: AtomicU64::new(unlisted.services),
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
