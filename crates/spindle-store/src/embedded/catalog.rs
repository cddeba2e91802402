//! Persistence of the catalog of flushed spans (services and operations): `catalog.json`, a
//! whole snapshot, and `catalog.log`, the entries added since, one JSON line each. A flush
//! appends only what it added; the snapshot is rewritten (and the log emptied) at open and
//! whenever the log holds more entries than the snapshot, so the bytes written stay
//! proportional to the entries added, not to the catalog's size times the flushes.
//!
//! The catalog only indexes what the blocks hold: a snapshot or log that cannot be read is
//! set aside (renamed, never deleted) and the catalog rebuilt from the blocks' columns.
//! Merging heads' catalogs into it is the flusher's job.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use spindle_model::SpanKind;

use super::{guarded, lock};
use crate::block::Block;
use crate::head::Catalog;
use crate::query::TraceQuery;
use crate::scan::scan_block_rows;
use crate::{RowFields, StoreError};

const CATALOG_FILE: &str = "catalog.json";
const LOG_FILE: &str = "catalog.log";

/// One catalog entry as `catalog.log` holds it.
type Entry = (String, String, SpanKind);

/// The open `catalog.log` and what decides when the snapshot is rewritten.
pub(super) struct CatalogLog {
    dir: PathBuf,
    log: File,
    log_entries: usize,
    snapshot_entries: usize,
}

/// The catalog as opened, and whether it had to be rebuilt from the blocks.
pub(super) struct OpenedCatalog {
    pub(super) catalog: Catalog,
    pub(super) log: CatalogLog,
    pub(super) rebuilt: bool,
}

/// Loads the catalog (snapshot, then log), rebuilding it from `blocks` when a file cannot be
/// read or when there is none but blocks exist; then writes a fresh snapshot and an empty log.
pub(super) fn open_catalog(
    dir: &Path,
    blocks: &[Arc<Block>],
    max_operations_per_service: usize,
    max_services: usize,
) -> Result<OpenedCatalog, StoreError> {
    let mut catalog = Catalog::new(max_operations_per_service, max_services);
    let snapshot = dir.join(CATALOG_FILE);
    let log = dir.join(LOG_FILE);
    let loaded = load(&snapshot, &log, &mut catalog);
    let rebuilt = match loaded {
        Ok(true) => false,
        Ok(false) if blocks.is_empty() => false,
        Ok(false) => {
            tracing::warn!(path = %snapshot.display(), "no catalog file beside blocks; rebuilding it from the blocks");
            catalog = rebuild(blocks, max_operations_per_service, max_services)?;
            true
        }
        Err((bad, reason)) => {
            let aside = set_aside(&bad)?;
            // The log continues the snapshot: with either unreadable, neither is trusted.
            let other = if bad == snapshot { &log } else { &snapshot };
            let other_aside = if other.exists() { Some(set_aside(other)?) } else { None };
            tracing::error!(
                path = %bad.display(),
                set_aside_as = %aside.display(),
                other_set_aside_as = ?other_aside.map(|p| p.display().to_string()),
                reason,
                "catalog file unreadable; set aside, rebuilding the catalog from the blocks"
            );
            catalog = rebuild(blocks, max_operations_per_service, max_services)?;
            true
        }
    };
    let snapshot_entries = write_snapshot(dir, &catalog)?;
    let log_file =
        OpenOptions::new().create(true).write(true).truncate(true).open(&log).map_err(|e| StoreError::io(&log, e))?;
    let log = CatalogLog { dir: dir.to_path_buf(), log: log_file, log_entries: 0, snapshot_entries };
    Ok(OpenedCatalog { catalog, log, rebuilt })
}

/// Reads the snapshot and the log into `catalog`: Ok(true) when a snapshot exists, Ok(false)
/// when none does, Err with the unreadable file and why.
fn load(snapshot: &Path, log: &Path, catalog: &mut Catalog) -> Result<bool, (PathBuf, String)> {
    let bytes = match fs::read(snapshot) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err((snapshot.to_path_buf(), e.to_string())),
    };
    let Some(bytes) = bytes else { return Ok(false) };
    let entries: Vec<(String, Vec<(String, SpanKind)>)> =
        serde_json::from_slice(&bytes).map_err(|e| (snapshot.to_path_buf(), e.to_string()))?;
    // In the snapshot's order (by name): a lower `max_services` than the file was written
    // with keeps its first services listed.
    for (service, ops) in entries {
        catalog.insert_service(&service);
        for (name, kind) in ops {
            catalog.add(&service, &name, kind);
        }
    }
    let text = match fs::read(log) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err((log.to_path_buf(), e.to_string())),
    };
    let mut lines = text.split(|b| *b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let last = lines.peek().is_none();
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Entry>(line) {
            Ok((service, name, kind)) => {
                catalog.add(&service, &name, kind);
            }
            // An unterminated last line is an append a crash cut short: its block was not
            // published yet (entries are logged first), so its spans are replayed from the
            // write-ahead log and their names come back with them.
            Err(_) if last => break,
            Err(e) => return Err((log.to_path_buf(), e.to_string())),
        }
    }
    Ok(true)
}

/// The catalog of what `blocks` hold, from their service, name and kind columns.
fn rebuild(
    blocks: &[Arc<Block>],
    max_operations_per_service: usize,
    max_services: usize,
) -> Result<Catalog, StoreError> {
    let mut catalog = Catalog::new(max_operations_per_service, max_services);
    let query = TraceQuery { limit: usize::MAX, ..TraceQuery::default() };
    let fields = RowFields { operation: true, ..RowFields::default() };
    for block in blocks {
        let read = guarded(&block.path, || {
            scan_block_rows(block, &query, &fields, &mut |row| {
                catalog.add(row.service, row.name, row.kind);
            })
        });
        if let Err(e) = read {
            // One unreadable block must not keep the rest unlisted; its spans stay on disk.
            tracing::error!(block = block.meta.id, error = %e, "block unreadable while rebuilding the catalog");
        }
    }
    Ok(catalog)
}

/// Renames `path` to `path.unreadable-<n>` (the first free n) and returns the new name.
pub(super) fn set_aside(path: &Path) -> Result<PathBuf, StoreError> {
    let mut n = 0u32;
    loop {
        let aside = PathBuf::from(format!("{}.unreadable-{n}", path.display()));
        if !aside.exists() {
            fs::rename(path, &aside).map_err(|e| StoreError::io(path, e))?;
            return Ok(aside);
        }
        n += 1;
    }
}

/// Atomically replaces `catalog.json` with `catalog`; returns the entries written.
fn write_snapshot(dir: &Path, catalog: &Catalog) -> Result<usize, StoreError> {
    let (bytes, entries) = encode_snapshot(catalog)?;
    write_snapshot_bytes(dir, bytes)?;
    Ok(entries)
}

/// `catalog` as `catalog.json` holds it, and how many entries that is.
fn encode_snapshot(catalog: &Catalog) -> Result<(Vec<u8>, usize), StoreError> {
    let mut by_service: std::collections::BTreeMap<&str, Vec<(&str, SpanKind)>> = Default::default();
    for service in catalog.service_names() {
        by_service.entry(service).or_default();
    }
    let mut entries = 0;
    for (service, name, kind) in catalog.entries() {
        by_service.entry(service).or_default().push((name, kind));
        entries += 1;
    }
    let list: Vec<_> = by_service.into_iter().collect();
    let bytes = serde_json::to_vec(&list).map_err(|e| StoreError::Encode(e.to_string()))?;
    Ok((bytes, entries))
}

fn write_snapshot_bytes(dir: &Path, bytes: Vec<u8>) -> Result<(), StoreError> {
    let path = dir.join(CATALOG_FILE);
    let tmp = dir.join("catalog.json.tmp");
    fs::write(&tmp, bytes)
        .and_then(|_| File::open(&tmp)?.sync_all())
        .and_then(|_| fs::rename(&tmp, &path))
        .map_err(|e| StoreError::io(&path, e))
}

impl CatalogLog {
    /// Makes `added` (entries new to `catalog`, which already holds them) durable: appended
    /// to the log, or, once the log would outgrow the snapshot, by a new snapshot. `catalog`
    /// is locked only to encode a snapshot, never across a write or sync, so listing
    /// services and operations does not wait for the disk.
    pub(super) fn append(&mut self, added: &[Entry], catalog: &Mutex<Catalog>) -> Result<(), StoreError> {
        if added.is_empty() {
            return Ok(());
        }
        let path = self.dir.join(LOG_FILE);
        if self.log_entries + added.len() > self.snapshot_entries.max(1024) {
            let (bytes, entries) = encode_snapshot(&lock(catalog))?;
            write_snapshot_bytes(&self.dir, bytes)?;
            self.snapshot_entries = entries;
            self.log.set_len(0).map_err(|e| StoreError::io(&path, e))?;
            self.log_entries = 0;
            return Ok(());
        }
        let mut text = Vec::with_capacity(added.len() * 48);
        for entry in added {
            serde_json::to_writer(&mut text, entry).map_err(|e| StoreError::Encode(e.to_string()))?;
            text.push(b'\n');
        }
        // The file is opened without append mode (a truncation must move the end): write at
        // its end explicitly.
        use std::io::Seek;
        self.log.seek(std::io::SeekFrom::End(0)).map_err(|e| StoreError::io(&path, e))?;
        self.log.write_all(&text).and_then(|_| self.log.sync_data()).map_err(|e| StoreError::io(&path, e))?;
        self.log_entries += added.len();
        Ok(())
    }
}
