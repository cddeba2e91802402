//! Immutable blocks on disk: writing one, opening one, and reading spans back out of it.
//!
//! A block is two files in `blocks/`: `<id>.parquet`, the spans sorted by trace id (see
//! [`crate::block_format`] for the columns), and `<id>.meta.json`, written after the Parquet
//! file is synced and renamed into place. The meta file is the commit point: a Parquet file
//! without one is the remains of a crash and is removed on open. Every trace of a block sits
//! in one row group, so a lookup reads exactly one row group; the meta file keeps per row
//! group the trace-id and time ranges that the lookup and the search prune with, and the
//! Parquet file carries a bloom filter on `trace_id` per row group.
//!
//! It must not decide when blocks are written, merged or dropped: that is the engine's job.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::bloom_filter::Sbbf;
use parquet::data_type::{
    BoolType, ByteArrayType, DataType, DoubleType, FixedLenByteArray, FixedLenByteArrayType, Int32Type, Int64Type,
};
use parquet::file::metadata::KeyValue as ParquetKeyValue;
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::file::reader::{ChunkReader, FileReader, Length, RowGroupReader};
use parquet::file::serialized_reader::{ReadOptionsBuilder, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};
use spindle_model::{Resource, Scope, Span, TraceId};

use crate::block_format::{
    AttributeColumns, FormatError, KeyMemo, Leaf, LeafMut, LeafRef, SharedTables, SpanColumns, PROMOTED,
    PROMOTED_KEYS_KEY,
};
use crate::dict_column::DictColumn;
use crate::StoreError;

/// Version of the block layout; a block of another version is refused, not misread.
/// Version 2 added the promoted attribute columns; version 1 blocks read as having none.
pub(crate) const BLOCK_FORMAT: u32 = 2;
const OLDEST_READABLE_FORMAT: u32 = 1;
const RESOURCES_KEY: &str = "spindle.resources";
const SCOPES_KEY: &str = "spindle.scopes";
/// Beyond this many distinct attribute keys a block stops listing them (and no longer
/// prunes by key): a guard against instrumentation that puts ids in keys.
const MAX_LISTED_KEYS: usize = 2_000;

#[derive(Debug, thiserror::Error)]
pub(crate) enum BlockError {
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("block meta: {0}")]
    Meta(String),
}

impl BlockError {
    pub(crate) fn at(self, path: &Path) -> StoreError {
        StoreError::Block { path: path.display().to_string(), reason: self.to_string() }
    }
}

/// Per-row-group ranges, kept in the meta file so that pruning needs no Parquet footer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct RowGroupMeta {
    pub(crate) rows: u64,
    /// Trace ids as 32 hex characters: JSON numbers do not hold 128 bits everywhere.
    pub(crate) min_trace: String,
    pub(crate) max_trace: String,
    pub(crate) min_start: u64,
    pub(crate) max_start: u64,
    pub(crate) min_duration: u64,
    pub(crate) max_duration: u64,
    /// Leaves (by position in schema order) that hold nothing in this row group: every
    /// row null or an empty list. Readers make them up instead of reading them (each
    /// column read costs a codec and a dictionary), which for a trace lookup is a third of
    /// the columns on usual data (unused attribute columns, links).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) empty_leaves: Vec<u16>,
}

impl RowGroupMeta {
    pub(crate) fn trace_range(&self) -> (u128, u128) {
        let parse = |s: &str| u128::from_str_radix(s, 16).unwrap_or(0);
        (parse(&self.min_trace), parse(&self.max_trace))
    }
}

/// The meta file of a block: what the engine knows about it without opening the Parquet file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct BlockMeta {
    pub(crate) format: u32,
    pub(crate) id: u64,
    pub(crate) spans: u64,
    pub(crate) traces: u64,
    /// Size of the Parquet file.
    pub(crate) bytes: u64,
    pub(crate) min_start: u64,
    pub(crate) max_start: u64,
    pub(crate) services: Vec<String>,
    /// Distinct keys of span and event attributes outside dedicated columns; `None` when
    /// there were too many to list.
    pub(crate) attribute_keys: Option<Vec<String>>,
    /// The keys of the promoted attribute columns, in column order (see
    /// [`crate::block_format::PROMOTED`]).
    #[serde(default)]
    pub(crate) promoted_attributes: Vec<String>,
    /// Write-ahead-log segments numbered up to this one are wholly inside blocks.
    pub(crate) wal_covered: u64,
    /// Blocks this one was compacted from; they are deleted if a crash left them behind.
    pub(crate) replaces: Vec<u64>,
    /// 0 for a block cut from the head, one more than its inputs' for a compacted block.
    pub(crate) level: u32,
    /// When its spans were received (the cut; for a merge, its newest input's): retention
    /// counts from this or `max_start`, whichever is earlier, so that a span from a client
    /// clock far in the future cannot keep its block forever. 0 in blocks written before
    /// it existed; opening the store fills it in from the meta file's time.
    #[serde(default)]
    pub(crate) ingested_unix_nano: u64,
    pub(crate) row_groups: Vec<RowGroupMeta>,
}

pub(crate) fn parquet_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.parquet"))
}

pub(crate) fn meta_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.meta.json"))
}

thread_local! {
    /// The column buffers of the last block this thread wrote, kept for its next one. They
    /// grow to a row group's size; growing them afresh for every block cost page faults and
    /// copies, and the flush and compaction threads each write blocks one after another.
    static SPARE_COLUMNS: RefCell<Option<SpanColumns>> = const { RefCell::new(None) };
}

fn take_spare_columns() -> SpanColumns {
    SPARE_COLUMNS.with(|spare| spare.borrow_mut().take()).unwrap_or_else(SpanColumns::new)
}

fn keep_spare_columns(mut columns: SpanColumns) {
    columns.clear();
    SPARE_COLUMNS.with(|spare| *spare.borrow_mut() = Some(columns));
}

/// Column buffers of finished scans, reused by the next reads: a scan reads every row
/// group into fresh vectors, and growing them afresh (page faults, zeroing) was a tenth
/// of a grouped scan. A few sets are kept, each about a row group of the leaves a scan reads.
static READ_BUFFERS: std::sync::Mutex<Vec<SpanColumns>> = std::sync::Mutex::new(Vec::new());
const KEPT_READ_BUFFERS: usize = 4;

fn take_read_buffers() -> SpanColumns {
    READ_BUFFERS.lock().ok().and_then(|mut kept| kept.pop()).unwrap_or_else(SpanColumns::new)
}

/// Hands the buffers of columns that are no longer needed to later reads.
pub(crate) fn recycle_columns(mut columns: SpanColumns) {
    columns.clear();
    if let Ok(mut kept) = READ_BUFFERS.lock() {
        if kept.len() < KEPT_READ_BUFFERS {
            kept.push(columns);
        }
    }
}

/// Writes one block from spans handed over in trace-id order.
pub(crate) struct BlockWriter {
    dir: PathBuf,
    id: u64,
    tmp_path: PathBuf,
    writer: SerializedFileWriter<BufWriter<File>>,
    columns: SpanColumns,
    tables: SharedTables,
    row_group_spans: usize,
    current_trace: Option<TraceId>,
    rg: Option<RowGroupMeta>,
    meta: BlockMeta,
    services: BTreeSet<String>,
    keys: HashSet<String>,
    key_memo: KeyMemo,
}

/// Columns that carry Parquet min/max statistics, for external readers' pruning. The engine
/// prunes with its own meta file, and computing string min/max for every list value was a
/// tenth of the writer's time, so the other columns go without.
const STATISTICS_COLUMNS: [&str; 6] =
    ["trace_id", "service_name", "name", "start_time_unix_nano", "duration_nanos", "status_code"];

const UNCOMPRESSED_COLUMNS: [&str; 11] = [
    "kind",
    "status_code",
    "flags",
    "resource_ref",
    "scope_ref",
    "dropped_attributes_count",
    "dropped_events_count",
    "dropped_links_count",
    "events.event.dropped_attributes_count",
    "links.link.flags",
    "links.link.dropped_attributes_count",
];

/// zstd level of blocks cut from the head: they are written at the ingest rate and, on a
/// busy store, rewritten by compaction within minutes.
pub(crate) const CUT_ZSTD_LEVEL: i32 = 1;
/// zstd level of blocks written by compaction, the ones that stay.
pub(crate) const MERGED_ZSTD_LEVEL: i32 = 3;

fn writer_properties(row_group_spans: usize, zstd_level: i32) -> WriterProperties {
    let zstd = ZstdLevel::try_new(zstd_level).map(Compression::ZSTD).unwrap_or(Compression::SNAPPY);
    let mut builder = WriterProperties::builder().set_statistics_enabled(EnabledStatistics::None);
    for column in STATISTICS_COLUMNS {
        builder = builder.set_column_statistics_enabled(ColumnPath::from(column), EnabledStatistics::Chunk);
    }
    // Small-integer columns are dictionary and run-length encoded to a few bits per row,
    // which zstd barely shrinks; left uncompressed, scans skip the decompression and a
    // lookup the codec (the `parquet` crate sets up a zstd context per column it reads).
    for column in UNCOMPRESSED_COLUMNS {
        builder = builder.set_column_compression(ColumnPath::from(column), Compression::UNCOMPRESSED);
    }
    // Start times (random within the block's range, rows being in trace-id order) and
    // durations are every scan's columns: bit-packed deltas take about what zstd over plain
    // values took, and decode several times faster than zstd decompresses.
    for column in ["start_time_unix_nano", "duration_nanos"] {
        builder = builder
            .set_column_encoding(ColumnPath::from(column), Encoding::DELTA_BINARY_PACKED)
            .set_column_compression(ColumnPath::from(column), Compression::UNCOMPRESSED);
    }
    // Per-page trace-id ranges (the column index): a lookup reads the one page of ids that
    // holds its trace instead of the row group's whole id column.
    builder = builder.set_column_statistics_enabled(ColumnPath::from("trace_id"), EnabledStatistics::Page);
    builder
        // V1 data pages: V2 leaves repetition and definition levels uncompressed, and the
        // seven leaves of every key/value list repeat them; V1 compresses them with the
        // values (52.2 → 42.7 bytes/span on the reference workload).
        .set_writer_version(WriterVersion::PARQUET_1_0)
        .set_compression(zstd)
        // Rows are sorted by trace id and traces never straddle row groups (see push), so
        // the writer's own row-group limit must not cut first.
        .set_max_row_group_row_count(None)
        // Small pages inside large row groups: a lookup skips whole pages (through the
        // offset index) and decompresses only the one holding its trace, while the
        // per-column-chunk costs (the writer creates zstd contexts per chunk) are paid
        // once per large row group.
        .set_data_page_row_count_limit(2048)
        .set_column_bloom_filter_enabled(ColumnPath::from("trace_id"), true)
        .set_column_bloom_filter_fpp(ColumnPath::from("trace_id"), 0.01)
        .set_column_bloom_filter_max_ndv(ColumnPath::from("trace_id"), row_group_spans as u64)
        // Random 16-byte ids do not shrink under dictionaries; the span ids neither, nor
        // nanosecond times and durations (nearly every value distinct). A dictionary page
        // is read whole before any row of its column chunk, so a trace lookup paid for
        // decompressing a row group's worth of them.
        .set_column_dictionary_enabled(ColumnPath::from("trace_id"), false)
        .set_column_dictionary_enabled(ColumnPath::from("span_id"), false)
        .set_column_dictionary_enabled(ColumnPath::from("parent_span_id"), false)
        .set_column_dictionary_enabled(ColumnPath::from("start_time_unix_nano"), false)
        .set_column_dictionary_enabled(ColumnPath::from("duration_nanos"), false)
        .set_column_dictionary_enabled(ColumnPath::from("events.event.time_unix_nano"), false)
        // High-cardinality strings (request ids) fall back to plain pages after 64 KiB of
        // dictionary instead of 1 MiB, for the same reason.
        .set_dictionary_page_size_limit(64 * 1024)
        .set_created_by(format!("spindle {}", env!("CARGO_PKG_VERSION")))
        .build()
}

impl BlockWriter {
    /// `promoted`: which attribute keys get the block's promoted columns; `zstd_level`:
    /// [`CUT_ZSTD_LEVEL`] or [`MERGED_ZSTD_LEVEL`].
    pub(crate) fn create(
        dir: &Path,
        id: u64,
        row_group_spans: usize,
        promoted: AttributeColumns,
        zstd_level: i32,
    ) -> Result<Self, BlockError> {
        let tmp_path = dir.join(format!("{id:016x}.parquet.tmp"));
        let file = File::create(&tmp_path)?;
        let schema = parquet::schema::parser::parse_message_type(&crate::block_format::schema_text())?;
        let writer = SerializedFileWriter::new(
            BufWriter::with_capacity(1 << 20, file),
            Arc::new(schema),
            Arc::new(writer_properties(row_group_spans, zstd_level)),
        )?;
        let mut columns = take_spare_columns();
        columns.attribute_columns = Arc::new(promoted);
        Ok(BlockWriter {
            dir: dir.to_path_buf(),
            id,
            tmp_path,
            writer,
            columns,
            tables: SharedTables::default(),
            row_group_spans: row_group_spans.max(1),
            current_trace: None,
            rg: None,
            meta: BlockMeta {
                format: BLOCK_FORMAT,
                id,
                spans: 0,
                traces: 0,
                bytes: 0,
                min_start: u64::MAX,
                max_start: 0,
                services: Vec::new(),
                attribute_keys: None,
                promoted_attributes: Vec::new(),
                wal_covered: 0,
                replaces: Vec::new(),
                level: 0,
                ingested_unix_nano: 0,
                row_groups: Vec::new(),
            },
            services: BTreeSet::new(),
            keys: HashSet::new(),
            key_memo: KeyMemo::default(),
        })
    }

    /// Adds a span; spans must arrive sorted by trace id.
    pub(crate) fn push(&mut self, span: &Span) -> Result<(), BlockError> {
        let new_trace = self.current_trace != Some(span.trace_id);
        if new_trace {
            debug_assert!(self.current_trace.is_none_or(|t| t < span.trace_id), "spans must be sorted by trace id");
            // Cut row groups only between traces, so a trace is always in one row group.
            if self.columns.rows() >= self.row_group_spans {
                self.flush_row_group()?;
            }
            self.current_trace = Some(span.trace_id);
            self.meta.traces += 1;
        }
        let start = span.start_time_unix_nano;
        let duration = span.duration_nanos();
        let trace_hex = |id: TraceId| format!("{:032x}", id.0);
        let rg = self.rg.get_or_insert_with(|| RowGroupMeta {
            rows: 0,
            min_trace: trace_hex(span.trace_id),
            max_trace: String::new(),
            min_start: u64::MAX,
            max_start: 0,
            min_duration: u64::MAX,
            max_duration: 0,
            empty_leaves: Vec::new(),
        });
        rg.rows += 1;
        rg.min_start = rg.min_start.min(start);
        rg.max_start = rg.max_start.max(start);
        rg.min_duration = rg.min_duration.min(duration);
        rg.max_duration = rg.max_duration.max(duration);
        self.meta.spans += 1;
        self.meta.min_start = self.meta.min_start.min(start);
        self.meta.max_start = self.meta.max_start.max(start);
        if !self.services.contains(span.service_name()) {
            self.services.insert(span.service_name().to_string());
        }
        let keys = (self.keys.len() <= MAX_LISTED_KEYS).then_some(&mut self.keys);
        self.columns.push(span, &mut self.tables, &mut self.key_memo, keys);
        Ok(())
    }

    fn flush_row_group(&mut self) -> Result<(), BlockError> {
        let Some(mut rg_meta) = self.rg.take() else { return Ok(()) };
        // Spans arrive sorted, so the last trace seen is the row group's largest.
        rg_meta.max_trace = format!("{:032x}", self.current_trace.map_or(0, |t| t.0));
        let mut rg = self.writer.next_row_group()?;
        for (i, (name, leaf)) in self.columns.leaves().into_iter().enumerate() {
            let empty = match &leaf {
                LeafRef::I32(l) => l.holds_nothing(),
                LeafRef::I64(l) => l.holds_nothing(),
                LeafRef::F64(l) => l.holds_nothing(),
                LeafRef::Bool(l) => l.holds_nothing(),
                LeafRef::Bytes(l) => l.holds_nothing(),
                LeafRef::Fixed(l) => l.holds_nothing(),
            };
            if empty {
                rg_meta.empty_leaves.push(i as u16);
            }
            let mut col = rg.next_column()?.ok_or_else(|| BlockError::Meta(format!("schema has no column {name}")))?;
            fn levels<T>(leaf: &Leaf<T>) -> (Option<&[i16]>, Option<&[i16]>) {
                let def = (leaf.max_def > 0).then_some(leaf.def.as_slice());
                let rep = (!leaf.rep.is_empty()).then_some(leaf.rep.as_slice());
                (def, rep)
            }
            match leaf {
                LeafRef::I32(l) => {
                    let (d, r) = levels(l);
                    col.typed::<Int32Type>().write_batch(&l.values, d, r)?;
                }
                LeafRef::I64(l) => {
                    let (d, r) = levels(l);
                    col.typed::<Int64Type>().write_batch(&l.values, d, r)?;
                }
                LeafRef::F64(l) => {
                    let (d, r) = levels(l);
                    col.typed::<DoubleType>().write_batch(&l.values, d, r)?;
                }
                LeafRef::Bool(l) => {
                    let (d, r) = levels(l);
                    col.typed::<BoolType>().write_batch(&l.values, d, r)?;
                }
                LeafRef::Bytes(l) => {
                    let (d, r) = levels(l);
                    col.typed::<ByteArrayType>().write_batch(&l.values, d, r)?;
                }
                LeafRef::Fixed(l) => {
                    let (d, r) = levels(l);
                    col.typed::<FixedLenByteArrayType>().write_batch(&l.values, d, r)?;
                }
            }
            col.close()?;
        }
        rg.close()?;
        self.columns.clear();
        self.meta.row_groups.push(rg_meta);
        Ok(())
    }

    pub(crate) fn spans(&self) -> u64 {
        self.meta.spans
    }

    /// Writes the footer, syncs, renames into place and finally writes the meta file.
    #[cfg(test)]
    pub(crate) fn finish(self, wal_covered: u64, replaces: Vec<u64>, level: u32) -> Result<BlockMeta, BlockError> {
        let dir = self.dir.clone();
        let meta = self.finish_unpublished(wal_covered, replaces, level)?;
        publish(&dir, &meta)?;
        Ok(meta)
    }

    /// Writes the footer, syncs and renames the data into place, but not the meta file: the
    /// block exists once [`publish`] wrote that (until then, a crash leaves a block without
    /// meta, which opening the store removes).
    pub(crate) fn finish_unpublished(
        mut self,
        wal_covered: u64,
        replaces: Vec<u64>,
        level: u32,
    ) -> Result<BlockMeta, BlockError> {
        self.flush_row_group()?;
        let encode = |bytes: Result<Vec<u8>, postcard::Error>| {
            bytes
                .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
                .map_err(|e| BlockError::Meta(e.to_string()))
        };
        let resources: Vec<&Resource> = self.tables.resources.iter().map(|r| &**r).collect();
        let scopes: Vec<&Scope> = self.tables.scopes.iter().map(|s| &**s).collect();
        self.writer.append_key_value_metadata(ParquetKeyValue::new(
            RESOURCES_KEY.into(),
            encode(postcard::to_stdvec(&resources))?,
        ));
        self.writer
            .append_key_value_metadata(ParquetKeyValue::new(SCOPES_KEY.into(), encode(postcard::to_stdvec(&scopes))?));
        let promoted = self.columns.attribute_columns.promoted().to_vec();
        let promoted_json = serde_json::to_string(&promoted).map_err(|e| BlockError::Meta(e.to_string()))?;
        self.writer.append_key_value_metadata(ParquetKeyValue::new(PROMOTED_KEYS_KEY.into(), promoted_json));
        keep_spare_columns(std::mem::replace(&mut self.columns, SpanColumns::new()));
        let mut out = self.writer.into_inner()?;
        out.flush()?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        let final_path = parquet_path(&self.dir, self.id);
        fs::rename(&self.tmp_path, &final_path)?;
        let mut meta = self.meta;
        meta.bytes = fs::metadata(&final_path)?.len();
        meta.services = self.services.into_iter().collect();
        meta.promoted_attributes = promoted;
        meta.attribute_keys = (self.keys.len() <= MAX_LISTED_KEYS).then(|| {
            let mut keys: Vec<String> = self.keys.into_iter().collect();
            keys.sort_unstable();
            keys
        });
        meta.wal_covered = wal_covered;
        meta.replaces = replaces;
        meta.level = level;
        if meta.spans == 0 {
            meta.min_start = 0;
        }
        Ok(meta)
    }

    /// Removes the partial file of a block that will not be finished.
    pub(crate) fn abandon(self) {
        let path = self.tmp_path.clone();
        drop(self);
        let _ = fs::remove_file(path);
    }
}

/// Makes a block written by [`BlockWriter::finish_unpublished`] exist: writes its meta file.
pub(crate) fn publish(dir: &Path, meta: &BlockMeta) -> Result<(), BlockError> {
    write_meta(dir, meta)
}

/// Writes a meta file atomically: temporary file, sync, rename, sync of the directory.
fn write_meta(dir: &Path, meta: &BlockMeta) -> Result<(), BlockError> {
    let path = meta_path(dir, meta.id);
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec(meta).map_err(|e| BlockError::Meta(e.to_string()))?;
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

pub(crate) fn read_meta(path: &Path) -> Result<BlockMeta, BlockError> {
    let bytes = fs::read(path)?;
    let meta: BlockMeta = serde_json::from_slice(&bytes).map_err(|e| BlockError::Meta(e.to_string()))?;
    if !(OLDEST_READABLE_FORMAT..=BLOCK_FORMAT).contains(&meta.format) {
        return Err(BlockError::Meta(format!("unsupported block format {}", meta.format)));
    }
    Ok(meta)
}

/// A block file read with positional reads (`pread`). The `parquet` crate's reader for a
/// plain `File` clones the descriptor and seeks, and clones share one file offset, so two
/// queries reading one block at once would read each other's pages.
struct BlockFile {
    file: Arc<File>,
    len: u64,
}

struct PositionalReader {
    file: Arc<File>,
    offset: u64,
}

impl std::io::Read for PositionalReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
}

impl Length for BlockFile {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ChunkReader for BlockFile {
    type T = std::io::BufReader<PositionalReader>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(std::io::BufReader::new(PositionalReader { file: Arc::clone(&self.file), offset: start }))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        let mut buf = vec![0; length];
        self.file.read_exact_at(&mut buf, start)?;
        Ok(buf.into())
    }
}

/// An open block: its meta, its Parquet reader with the footer parsed once, the shared
/// resource and scope tables, and the trace-id bloom filter of every row group.
pub(crate) struct Block {
    pub(crate) meta: BlockMeta,
    pub(crate) path: PathBuf,
    reader: SerializedFileReader<BlockFile>,
    pub(crate) tables: SharedTables,
    blooms: Vec<Option<Sbbf>>,
    column_index: HashMap<String, usize>,
    pub(crate) attribute_columns: Arc<AttributeColumns>,
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Block").field("id", &self.meta.id).field("spans", &self.meta.spans).finish()
    }
}

/// Which rows of a row group to read.
#[derive(Clone, Copy)]
pub(crate) struct RowRange {
    pub(crate) skip: usize,
    pub(crate) take: usize,
}

/// Reads the rows of `runs` (ascending, disjoint `(first row, count)` pairs) of one leaf,
/// one after the other, skipping the rows between them without materialising values.
fn read_leaf<T: DataType>(
    rg: &dyn RowGroupReader,
    index: usize,
    runs: &[(usize, usize)],
    leaf: &mut Leaf<T::T>,
) -> Result<(), BlockError> {
    let descr = rg.metadata().column(index).column_descr_ptr();
    leaf.max_def = descr.max_def_level();
    let column = rg.get_column_reader(index)?;
    let mut reader = T::get_column_reader(column).ok_or(FormatError::Malformed("column type"))?;
    // At least one level per row: reserving it up front spares the reader's batches a
    // series of reallocations and copies (a tenth of a search's time).
    let rows: usize = runs.iter().map(|(_, count)| count).sum();
    leaf.values.reserve(rows);
    if descr.max_def_level() > 0 {
        leaf.def.reserve(rows);
    }
    if descr.max_rep_level() > 0 {
        leaf.rep.reserve(rows);
    }
    let mut at = 0;
    for &(first, count) in runs {
        if first < at {
            return Err(FormatError::Malformed("row selection out of order").into());
        }
        if first > at && reader.skip_records(first - at)? != first - at {
            return Err(FormatError::Malformed("row count").into());
        }
        let def = (descr.max_def_level() > 0).then_some(&mut leaf.def);
        let rep = (descr.max_rep_level() > 0).then_some(&mut leaf.rep);
        let (records, _, _) = reader.read_records(count, def, rep, &mut leaf.values)?;
        if records != count {
            return Err(FormatError::Malformed("row count").into());
        }
        at = first + count;
    }
    Ok(())
}

impl Block {
    pub(crate) fn open(dir: &Path, meta: BlockMeta) -> Result<Self, StoreError> {
        let path = parquet_path(dir, meta.id);
        Self::open_inner(&path, meta).map_err(|e| e.at(&path))
    }

    fn open_inner(path: &Path, meta: BlockMeta) -> Result<Self, BlockError> {
        let file = Arc::new(File::open(path)?);
        let len = file.metadata()?.len();
        // The page index lets a lookup skip whole pages of list columns too: V1 pages do
        // not carry a row count, the offset index does.
        let options = ReadOptionsBuilder::new().with_page_index().build();
        let block_file = BlockFile { file: Arc::clone(&file), len };
        let reader = SerializedFileReader::new_with_options(block_file, options)?;
        let metadata = reader.metadata();
        let decode_table = |key: &str| -> Result<Vec<u8>, BlockError> {
            let text = metadata
                .file_metadata()
                .key_value_metadata()
                .and_then(|kvs| kvs.iter().find(|kv| kv.key == key))
                .and_then(|kv| kv.value.as_deref())
                .ok_or_else(|| BlockError::Meta(format!("footer has no {key}")))?;
            base64::engine::general_purpose::STANDARD.decode(text).map_err(|e| BlockError::Meta(e.to_string()))
        };
        let resources: Vec<Resource> =
            postcard::from_bytes(&decode_table(RESOURCES_KEY)?).map_err(|e| BlockError::Meta(e.to_string()))?;
        let scopes: Vec<Scope> =
            postcard::from_bytes(&decode_table(SCOPES_KEY)?).map_err(|e| BlockError::Meta(e.to_string()))?;
        let tables = SharedTables::new(
            resources.into_iter().map(Arc::new).collect(),
            scopes.into_iter().map(Arc::new).collect(),
        );
        let column_index: HashMap<String, usize> = metadata
            .file_metadata()
            .schema_descr()
            .columns()
            .iter()
            .enumerate()
            .map(|(i, c)| (c.path().string(), i))
            .collect();
        let trace_col = *column_index.get("trace_id").ok_or(FormatError::Malformed("trace_id"))?;
        let mut blooms = Vec::with_capacity(metadata.num_row_groups());
        for rg in metadata.row_groups() {
            blooms
                .push(Sbbf::read_from_column_chunk(rg.column(trace_col), &BlockFile { file: Arc::clone(&file), len })?);
        }
        if metadata.num_row_groups() != meta.row_groups.len() {
            return Err(BlockError::Meta("row groups of meta and parquet footer differ".into()));
        }
        let attribute_columns = Arc::new(AttributeColumns::new(meta.promoted_attributes.iter().cloned()));
        if attribute_columns.promoted() != meta.promoted_attributes.as_slice() {
            return Err(BlockError::Meta("promoted attribute keys are not distinct non-dedicated keys".into()));
        }
        Ok(Block { meta, path: path.to_path_buf(), reader, tables, blooms, column_index, attribute_columns })
    }

    /// Reads the named leaves (all when `names` is `None`) of some rows of a row group.
    pub(crate) fn read_columns(
        &self,
        rg: usize,
        names: Option<&[&str]>,
        rows: RowRange,
    ) -> Result<SpanColumns, StoreError> {
        self.read_columns_inner(rg, names, &[(rows.skip, rows.take)]).map_err(|e| e.at(&self.path))
    }

    /// Like [`Block::read_columns`] for scattered rows: the result holds the rows of `runs`
    /// (ascending, disjoint `(first row, count)` pairs) one after the other.
    pub(crate) fn read_column_runs(
        &self,
        rg: usize,
        names: &[&str],
        runs: &[(usize, usize)],
    ) -> Result<SpanColumns, StoreError> {
        self.read_columns_inner(rg, Some(names), runs).map_err(|e| e.at(&self.path))
    }

    fn read_columns_inner(
        &self,
        rg_index: usize,
        names: Option<&[&str]>,
        rows: &[(usize, usize)],
    ) -> Result<SpanColumns, BlockError> {
        let rg = self.reader.get_row_group(rg_index)?;
        let empty = self.meta.row_groups.get(rg_index).map_or(&[][..], |m| m.empty_leaves.as_slice());
        let row_count: usize = rows.iter().map(|(_, count)| count).sum();
        let mut columns = take_read_buffers();
        columns.attribute_columns = Arc::clone(&self.attribute_columns);
        for (i, (name, leaf)) in columns.leaves_mut().into_iter().enumerate() {
            if names.is_some_and(|n| !n.contains(&name.as_str())) {
                continue;
            }
            let index = self.column_index.get(&name).copied();
            // Blocks of format 1 have no promoted columns: they read as all null.
            let missing_promoted = index.is_none() && PROMOTED.contains(&name.as_str());
            if missing_promoted || empty.contains(&(i as u16)) {
                let repeated = index.is_some_and(|c| rg.metadata().column(c).column_descr().max_rep_level() > 0);
                match leaf {
                    LeafMut::I32(l) => l.fill_nothing(row_count, repeated),
                    LeafMut::I64(l) => l.fill_nothing(row_count, repeated),
                    LeafMut::F64(l) => l.fill_nothing(row_count, repeated),
                    LeafMut::Bool(l) => l.fill_nothing(row_count, repeated),
                    LeafMut::Bytes(l) => l.fill_nothing(row_count, repeated),
                    LeafMut::Fixed(l) => l.fill_nothing(row_count, repeated),
                }
                continue;
            }
            let index = index.ok_or(FormatError::Malformed("missing column"))?;
            let rg = &*rg;
            match leaf {
                LeafMut::I32(l) => read_leaf::<Int32Type>(rg, index, rows, l)?,
                LeafMut::I64(l) => read_leaf::<Int64Type>(rg, index, rows, l)?,
                LeafMut::F64(l) => read_leaf::<DoubleType>(rg, index, rows, l)?,
                LeafMut::Bool(l) => read_leaf::<BoolType>(rg, index, rows, l)?,
                LeafMut::Bytes(l) => read_leaf::<ByteArrayType>(rg, index, rows, l)?,
                LeafMut::Fixed(l) => read_leaf::<FixedLenByteArrayType>(rg, index, rows, l)?,
            }
        }
        Ok(columns)
    }

    /// Reads the flat string leaf `name` of the rows of `runs` (ascending, disjoint
    /// `(first row, count)` pairs) of a row group as dictionary indices: see
    /// [`DictColumn`]. A row group without the column (or recorded as holding none of it)
    /// reads as nulls.
    pub(crate) fn read_dict_column(
        &self,
        rg_index: usize,
        name: &str,
        runs: &[(usize, usize)],
    ) -> Result<DictColumn, StoreError> {
        let read = || -> Result<DictColumn, BlockError> {
            let rows = self.meta.row_groups.get(rg_index).map_or(0, |m| m.rows as usize);
            let leaf = SpanColumns::leaf_position(name).ok_or(FormatError::Malformed("unknown column"))?;
            let empty = self.meta.row_groups.get(rg_index).is_some_and(|m| m.empty_leaves.contains(&(leaf as u16)));
            let Some(&index) = self.column_index.get(name).filter(|_| !empty) else {
                let mut nulls = DictColumn::nulls(rows);
                nulls.select(runs)?;
                return Ok(nulls);
            };
            let rg = self.reader.get_row_group(rg_index)?;
            let descr = rg.metadata().column(index).column_descr_ptr();
            if descr.max_rep_level() > 0 || descr.physical_type() != parquet::basic::Type::BYTE_ARRAY {
                return Err(FormatError::Malformed("not a flat string column").into());
            }
            let mut pages = rg.get_column_page_reader(index)?;
            let mut column = DictColumn::read(&mut *pages, descr.max_def_level(), rows)?;
            column.select(runs)?;
            Ok(column)
        };
        read().map_err(|e| e.at(&self.path))
    }

    pub(crate) fn all_rows(&self, rg: usize) -> RowRange {
        RowRange { skip: 0, take: self.meta.row_groups.get(rg).map_or(0, |r| r.rows as usize) }
    }

    /// The row group that may hold `trace_id`, after range and bloom-filter checks.
    fn row_group_of(&self, trace_id: TraceId) -> Option<usize> {
        let rg = self.meta.row_groups.partition_point(|r| r.trace_range().1 < trace_id.0);
        let meta = self.meta.row_groups.get(rg)?;
        if meta.trace_range().0 > trace_id.0 {
            return None;
        }
        let key = FixedLenByteArray::from(trace_id.to_bytes().to_vec());
        match self.blooms.get(rg) {
            Some(Some(bloom)) if !bloom.check(&key) => None,
            _ => Some(rg),
        }
    }

    /// The rows of `trace_id` in its row group: contiguous, since rows are sorted.
    fn trace_rows(&self, trace_id: TraceId) -> Result<Option<(usize, RowRange)>, StoreError> {
        let Some(rg) = self.row_group_of(trace_id) else { return Ok(None) };
        let want = trace_id.to_bytes();
        let pages = self.trace_pages(rg, &want).unwrap_or_else(|| self.all_rows(rg));
        if pages.take == 0 {
            return Ok(None);
        }
        let ids = self.read_columns(rg, Some(&["trace_id"]), pages)?;
        let values = &ids.trace_id.values;
        let first = values.partition_point(|v| v.data() < &want[..]);
        let end = values.partition_point(|v| v.data() <= &want[..]);
        Ok((end > first).then_some((rg, RowRange { skip: pages.skip + first, take: end - first })))
    }

    /// The rows of the pages of row group `rg` whose trace-id range holds `want`, from the
    /// column index; `None` when the block has no page statistics for trace ids.
    fn trace_pages(&self, rg: usize, want: &[u8; 16]) -> Option<RowRange> {
        let column = *self.column_index.get("trace_id")?;
        let page_index = self.reader.metadata().page_index_for_row_group(rg);
        let ColumnIndexMetaData::FIXED_LEN_BYTE_ARRAY(ranges) = page_index.column_index(column)? else { return None };
        let locations = page_index.offset_index(column)?.page_locations();
        let mut hit: Option<(usize, usize)> = None;
        for page in 0..locations.len() {
            let (min, max) = (ranges.min_value(page)?, ranges.max_value(page)?);
            if max < &want[..] {
                continue;
            }
            if min > &want[..] {
                break;
            }
            hit = Some((hit.map_or(page, |h| h.0), page));
        }
        let Some((first, last)) = hit else { return Some(RowRange { skip: 0, take: 0 }) };
        let start = usize::try_from(locations[first].first_row_index).ok()?;
        let end = match locations.get(last + 1) {
            Some(next) => usize::try_from(next.first_row_index).ok()?,
            None => self.all_rows(rg).take,
        };
        (end >= start).then_some(RowRange { skip: start, take: end - start })
    }

    pub(crate) fn get_trace(&self, trace_id: TraceId) -> Result<Vec<Span>, StoreError> {
        let Some((rg, rows)) = self.trace_rows(trace_id)? else { return Ok(Vec::new()) };
        let columns = self.read_columns(rg, None, rows)?;
        columns.decode(&self.tables).map_err(|e| BlockError::from(e).at(&self.path))
    }

    /// The spans of `trace_id` carrying only `fields` (`TraceStore::get_traces_fields`).
    pub(crate) fn get_trace_fields(
        &self,
        trace_id: TraceId,
        fields: &crate::SpanFields,
    ) -> Result<Vec<Span>, StoreError> {
        let Some((rg, rows)) = self.trace_rows(trace_id)? else { return Ok(Vec::new()) };
        let keys = fields.attributes.as_deref();
        let names = SpanColumns::selected_leaves(
            &self.attribute_columns,
            keys,
            fields.events,
            self.meta.attribute_keys.as_deref(),
        );
        let columns = self.read_columns(rg, Some(&names), rows)?;
        let mask = vec![true; columns.rows()];
        let spans =
            columns.decode_selected(&self.tables, &mask, keys).map_err(|e| BlockError::from(e).at(&self.path))?;
        // Only this trace's rows: the row range may start or end in a neighbour's.
        Ok(spans.into_iter().filter(|s| s.trace_id == trace_id).collect())
    }

    /// Earliest span start of `trace_id` in this block, if the block holds it.
    pub(crate) fn trace_start(&self, trace_id: TraceId) -> Result<Option<u64>, StoreError> {
        let Some((rg, rows)) = self.trace_rows(trace_id)? else { return Ok(None) };
        let columns = self.read_columns(rg, Some(&["start_time_unix_nano"]), rows)?;
        Ok(columns.start.values.iter().map(|v| *v as u64).min())
    }

    /// Every span of a row group, decoded.
    #[cfg(test)]
    pub(crate) fn row_group_spans(&self, rg: usize) -> Result<Vec<Span>, StoreError> {
        self.row_group_slice(rg, self.all_rows(rg))
    }

    /// The spans of some consecutive rows of a row group, decoded.
    pub(crate) fn row_group_slice(&self, rg: usize, rows: RowRange) -> Result<Vec<Span>, StoreError> {
        let columns = self.read_columns(rg, None, rows)?;
        columns.decode(&self.tables).map_err(|e| BlockError::from(e).at(&self.path))
    }

    pub(crate) fn remove_files(dir: &Path, id: u64) -> Result<(), StoreError> {
        // Meta first: without it the Parquet file is garbage that the next open removes.
        for path in [meta_path(dir, id), parquet_path(dir, id)] {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(&path, e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::Generator;

    pub(crate) fn write_block(dir: &Path, id: u64, mut spans: Vec<Span>, rg: usize) -> BlockMeta {
        spans.sort_by_key(|s| (s.trace_id, s.start_time_unix_nano, s.span_id));
        let mut w = BlockWriter::create(dir, id, rg, AttributeColumns::choose(&spans), MERGED_ZSTD_LEVEL).unwrap();
        for s in &spans {
            w.push(s).unwrap();
        }
        w.finish(0, Vec::new(), 0).unwrap()
    }

    #[test]
    fn block_round_trips_and_finds_traces() {
        let dir = tempfile::tempdir().unwrap();
        let spans = Generator::new(5, 1_000_000).batch(300);
        let meta = write_block(dir.path(), 1, spans.clone(), 250);
        assert_eq!(meta.spans, 3000);
        assert_eq!(meta.traces, 300);
        assert!(meta.row_groups.len() >= 10, "{} row groups", meta.row_groups.len());
        assert_eq!(meta.services.len(), 5);
        let keys = meta.attribute_keys.clone().unwrap();
        assert!(keys.contains(&"exception.type".to_string()), "{keys:?}");
        // Every span has a `symbol`: it gets a promoted column and leaves the lists.
        assert!(meta.promoted_attributes.contains(&"symbol".to_string()), "{:?}", meta.promoted_attributes);
        assert!(!keys.contains(&"symbol".to_string()), "{keys:?}");
        assert!(!dir.path().join("0000000000000001.parquet.tmp").exists());

        let block = Block::open(dir.path(), read_meta(&meta_path(dir.path(), 1)).unwrap()).unwrap();
        for trace in spans.chunks(10).step_by(37) {
            let mut got = block.get_trace(trace[0].trace_id).unwrap();
            let mut want = trace.to_vec();
            got.sort_by_key(|s| s.span_id);
            want.sort_by_key(|s| s.span_id);
            assert_eq!(got, want);
            let start = trace.iter().map(|s| s.start_time_unix_nano).min();
            assert_eq!(block.trace_start(trace[0].trace_id).unwrap(), start);
        }
        assert!(block.get_trace(TraceId(12345)).unwrap().is_empty());
        let all: usize = (0..block.meta.row_groups.len()).map(|rg| block.row_group_spans(rg).unwrap().len()).sum();
        assert_eq!(all, 3000);
    }

    #[test]
    fn lookups_read_only_the_pages_holding_the_trace() {
        let dir = tempfile::tempdir().unwrap();
        let spans = Generator::new(12, 1_000_000).batch(1_000);
        let meta = write_block(dir.path(), 1, spans.clone(), 100_000);
        assert_eq!(meta.row_groups.len(), 1);
        // No span has links, so their leaves are made up on reading instead of read.
        let links =
            SpanColumns::new().leaves().iter().position(|(name, _)| name == "links.link.trace_id").unwrap() as u16;
        assert!(meta.row_groups[0].empty_leaves.contains(&links), "{:?}", meta.row_groups[0].empty_leaves);
        let block = Block::open(dir.path(), meta).unwrap();
        let rows = block.all_rows(0).take;
        for trace in spans.chunks(10) {
            let want = trace[0].trace_id.to_bytes();
            let pages = block.trace_pages(0, &want).expect("page statistics");
            assert!(pages.take > 0 && pages.take < rows, "{} of {rows} rows", pages.take);
            let mut got = block.get_trace(trace[0].trace_id).unwrap();
            let mut expected = trace.to_vec();
            got.sort_by_key(|s| s.span_id);
            expected.sort_by_key(|s| s.span_id);
            assert_eq!(got, expected);
        }
        // Ids outside every page's range, and one inside a page's range that is absent.
        assert_eq!(block.trace_pages(0, &[0; 16]).unwrap().take, 0);
        assert_eq!(block.trace_pages(0, &[0xff; 16]).unwrap().take, 0);
        let mut ids: Vec<u128> = spans.iter().map(|s| s.trace_id.0).collect();
        ids.sort_unstable();
        ids.dedup();
        let between = ids.windows(2).find(|w| w[1] - w[0] > 1).map(|w| w[0] + 1).unwrap();
        assert!(block.get_trace(TraceId(between)).unwrap().is_empty());
    }

    /// String columns read as dictionary indices hold what the column reader reads, row for
    /// row: dictionary pages, pages that fell back to plain encoding once the dictionary
    /// passed its limit, nulls, row groups without the column, and selected runs of rows.
    #[test]
    fn string_columns_read_as_dictionary_indices_equal_the_column_reader() {
        use spindle_model::{AttributeValue, KeyValue};
        let dir = tempfile::tempdir().unwrap();
        let mut spans = Generator::new(13, 1_000_000).batch(600);
        for (i, s) in spans.iter_mut().enumerate() {
            s.attributes.retain(|kv| !["note", "tier", "http.route"].contains(&kv.key.as_str()));
            // ~100 KiB of distinct notes per row group: past the 64 KiB dictionary limit,
            // so later pages are plain; every seventh span has none.
            if i % 7 != 0 {
                s.attributes.push(KeyValue::new(
                    "note",
                    AttributeValue::String(format!("{i:05}-{}", "n".repeat(i % 200)).into()),
                ));
            }
            s.attributes
                .push(KeyValue::new("tier", AttributeValue::String(["gold", "silver", "bronze"][i % 3].into())));
            if i % 2 == 0 {
                s.attributes.push(KeyValue::new("http.route", AttributeValue::String(format!("/r/{}", i % 5).into())));
            }
        }
        let meta = write_block(dir.path(), 1, spans, 1024);
        assert!(meta.row_groups.len() > 2, "several row groups");
        let block = Block::open(dir.path(), meta.clone()).unwrap();
        let mut columns: Vec<&str> = vec!["http_route"];
        for key in ["note", "tier"] {
            let at = meta.promoted_attributes.iter().position(|k| k == key).expect("promoted");
            columns.push(PROMOTED[at]);
        }
        // The data pages' encodings: the notes fell back to plain, the tiers did not.
        let data_encodings = |column: &str| -> Vec<Encoding> {
            let rg = block.reader.get_row_group(0).unwrap();
            let pages = rg.get_column_page_reader(block.column_index[column]).unwrap();
            pages
                .map(|p| p.unwrap())
                .filter_map(|p| match p {
                    parquet::column::page::Page::DataPage { encoding, .. }
                    | parquet::column::page::Page::DataPageV2 { encoding, .. } => Some(encoding),
                    parquet::column::page::Page::DictionaryPage { .. } => None,
                })
                .collect()
        };
        let promoted = |key: &str| PROMOTED[meta.promoted_attributes.iter().position(|k| k == key).unwrap()];
        let notes = data_encodings(promoted("note"));
        assert!(notes.contains(&Encoding::PLAIN) && notes.contains(&Encoding::RLE_DICTIONARY), "{notes:?}");
        assert!(!data_encodings(promoted("tier")).contains(&Encoding::PLAIN));
        // A promoted column no key fills, recorded as empty, reads as nulls too.
        columns.push(PROMOTED[PROMOTED.len() - 1]);
        for column in columns {
            for rg in 0..meta.row_groups.len() {
                let rows = block.all_rows(rg).take;
                let cols = block.read_columns(rg, Some(&[column]), block.all_rows(rg)).unwrap();
                let (_, LeafRef::Bytes(leaf)) = cols.leaves().into_iter().find(|(n, _)| n == column).unwrap() else {
                    panic!("string leaf")
                };
                let mut values = leaf.values.iter();
                let want: Vec<Option<Vec<u8>>> = (0..rows)
                    .map(|row| {
                        (leaf.def.get(row).copied().unwrap_or(1) == 1).then(|| values.next().unwrap().data().to_vec())
                    })
                    .collect();
                let got = block.read_dict_column(rg, column, &[(0, rows)]).unwrap();
                let got: Vec<Option<Vec<u8>>> = (0..rows).map(|row| got.get(row).map(<[u8]>::to_vec)).collect();
                assert_eq!(got, want, "{column} row group {rg}");
                let runs = [(1, 3), (10, 40), (rows - 5, 5)];
                let picked = block.read_dict_column(rg, column, &runs).unwrap();
                let expected: Vec<&Option<Vec<u8>>> =
                    runs.iter().flat_map(|&(first, n)| &want[first..first + n]).collect();
                let picked: Vec<Option<Vec<u8>>> =
                    (0..expected.len()).map(|row| picked.get(row).map(<[u8]>::to_vec)).collect();
                assert_eq!(picked.iter().collect::<Vec<_>>(), expected, "{column} row group {rg}, runs");
            }
        }
        assert!(block.read_dict_column(0, "trace_id", &[(0, 1)]).is_err(), "not a string column");
        assert!(block.read_dict_column(0, "http_route", &[(0, usize::MAX / 2)]).is_err(), "rows past the row group");
    }

    #[test]
    fn promoted_columns_are_plain_parquet_columns_named_in_the_footer() {
        // What an external reader (DuckDB, pandas) does: open the file, find the column of a
        // key through the footer's list, read it by name.
        let dir = tempfile::tempdir().unwrap();
        let spans = Generator::new(11, 1_000_000).batch(50);
        let meta = write_block(dir.path(), 1, spans.clone(), 1000);
        let reader = SerializedFileReader::new(File::open(parquet_path(dir.path(), 1)).unwrap()).unwrap();
        let footer = reader.metadata().file_metadata().key_value_metadata().unwrap();
        let listed = footer.iter().find(|kv| kv.key == PROMOTED_KEYS_KEY).and_then(|kv| kv.value.clone()).unwrap();
        let keys: Vec<String> = serde_json::from_str(&listed).unwrap();
        assert_eq!(keys, meta.promoted_attributes);
        let column = PROMOTED[keys.iter().position(|k| k == "symbol").unwrap()];
        let mut got = Vec::new();
        for row in reader.get_row_iter(None).unwrap() {
            let row = row.unwrap();
            let (_, value) = row.get_column_iter().find(|(name, _)| name.as_str() == column).unwrap();
            got.push(value.to_string().trim_matches('"').to_string());
        }
        let mut want: Vec<String> = spans
            .iter()
            .map(|s| spindle_model::find_attribute(&s.attributes, "symbol").unwrap().to_display_string())
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn blocks_written_one_after_another_reuse_buffers_without_mixing_rows() {
        // The second block starts from the first one's recycled column buffers (and the first
        // one ends mid row group), so leftovers would show up as extra or wrong rows.
        let dir = tempfile::tempdir().unwrap();
        let first = Generator::new(8, 1_000_000).batch(130);
        let second = Generator::new(9, 9_000_000).batch(70);
        write_block(dir.path(), 1, first.clone(), 1000);
        let meta = write_block(dir.path(), 2, second.clone(), 1000);
        assert_eq!(meta.spans, 700);
        let block = Block::open(dir.path(), meta).unwrap();
        let mut got: Vec<Span> =
            (0..block.meta.row_groups.len()).flat_map(|rg| block.row_group_spans(rg).unwrap()).collect();
        let mut want = second;
        got.sort_by_key(|s| (s.trace_id, s.span_id));
        want.sort_by_key(|s| (s.trace_id, s.span_id));
        assert_eq!(got, want);
        assert!(block.get_trace(first[0].trace_id).unwrap().is_empty());
    }

    #[test]
    fn concurrent_reads_of_one_block_do_not_interfere() {
        let dir = tempfile::tempdir().unwrap();
        let spans = Generator::new(6, 1_000_000).batch(400);
        let meta = write_block(dir.path(), 1, spans.clone(), 100);
        let block = Block::open(dir.path(), meta).unwrap();
        std::thread::scope(|s| {
            for t in 0..4 {
                let (block, spans) = (&block, &spans);
                s.spawn(move || {
                    for trace in spans.chunks(10).skip(t).step_by(4) {
                        assert_eq!(block.get_trace(trace[0].trace_id).unwrap().len(), 10);
                    }
                });
            }
        });
    }
}
