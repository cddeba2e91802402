//! Persistence of the catalog of flushed spans (services and operations) in `catalog.json`.
//! It only reads and atomically replaces that file; merging heads' catalogs into it is the
//! flusher's job.

use std::fs::{self, File};
use std::path::Path;

use spindle_model::SpanKind;

use crate::head::Catalog;
use crate::StoreError;

const CATALOG_FILE: &str = "catalog.json";

pub(super) fn load_catalog(dir: &Path) -> Result<Catalog, StoreError> {
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

pub(super) fn save_catalog(dir: &Path, catalog: &Catalog) -> Result<(), StoreError> {
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
