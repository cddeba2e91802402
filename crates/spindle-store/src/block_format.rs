//! The Parquet schema of a block and the mapping of spans to and from its columns.
//!
//! One row is one span. Hot fields are plain columns (ids, service, operation, kind, times,
//! status) and the hottest attributes have dedicated columns ([`DEDICATED`]); every other
//! attribute sits in a typed key/value list, as do events and links with their own
//! attributes. Resources and scopes repeat across thousands of spans, so a block stores each
//! distinct one once in its footer and rows refer to it by index (`resource_ref`,
//! `scope_ref`); `service_name` is also kept as a column so that external readers can group
//! by it without decoding the footer. See `docs/adr/001-block-format.md`.
//!
//! This module is pure: column buffers in memory, no files. [`crate::block`] does the IO.
//!
//! Architecture Invariant: `decode(encode(spans)) == spans` for every span, including
//! attribute order, duplicate keys, NaN doubles, nested values and end-before-start times.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::BytesMut;
use parquet::data_type::{ByteArray, FixedLenByteArray};
use spindle_model::{
    AttributeValue, Event, KeyValue, Link, Resource, Scope, Span, SpanId, SpanKind, Status, StatusCode, TraceId,
};

/// Attributes promoted to their own column, with the one value type the column holds.
/// A span attribute lands here only when it is the first with its key and has that type;
/// anything else stays in the generic list, so nothing is lost.
pub(crate) const DEDICATED: [(&str, &str, DedicatedType); 10] = [
    ("http.request.method", "http_request_method", DedicatedType::Str),
    ("http.route", "http_route", DedicatedType::Str),
    ("http.response.status_code", "http_response_status_code", DedicatedType::Int),
    ("url.full", "url_full", DedicatedType::Str),
    ("db.system", "db_system", DedicatedType::Str),
    ("db.system.name", "db_system_name", DedicatedType::Str),
    ("messaging.system", "messaging_system", DedicatedType::Str),
    ("messaging.destination.name", "messaging_destination_name", DedicatedType::Str),
    ("peer.service", "peer_service", DedicatedType::Str),
    ("error.type", "error_type", DedicatedType::Str),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DedicatedType {
    Str,
    Int,
}

/// The leaves of the span attribute list: key, then the string value, then the other
/// value types.
pub(crate) const ATTRIBUTE_LIST_LEAVES: [&str; 7] = [
    "attributes.key_value.key",
    "attributes.key_value.str",
    "attributes.key_value.int",
    "attributes.key_value.double",
    "attributes.key_value.bool",
    "attributes.key_value.bytes",
    "attributes.key_value.complex",
];

/// Columns of each block for the string attributes most of its spans carry, beyond
/// [`DEDICATED`]: which key each holds is chosen per block when it is written
/// ([`AttributeColumns`]), kept in the block's meta and in its Parquet footer under
/// [`PROMOTED_KEYS_KEY`]. A key promoted in a block never appears in its generic lists
/// with a string value as its first entry, exactly as for the dedicated columns.
pub(crate) const PROMOTED: [&str; 8] = [
    "promoted_str_1",
    "promoted_str_2",
    "promoted_str_3",
    "promoted_str_4",
    "promoted_str_5",
    "promoted_str_6",
    "promoted_str_7",
    "promoted_str_8",
];

/// Footer key of a block's promoted attribute keys: a JSON array, `PROMOTED[i]` holding
/// the i-th key.
pub(crate) const PROMOTED_KEYS_KEY: &str = "spindle.promoted_attributes";

/// A key is promoted when at least one span in this many carries it as a string.
pub(crate) const PROMOTE_SHARE: u64 = 20;

/// Every attribute column of a block: the dedicated ones, then the promoted ones.
pub(crate) const ATTRIBUTE_COLUMNS: usize = DEDICATED.len() + PROMOTED.len();

/// Which attribute key each attribute column of one block holds: the fixed [`DEDICATED`]
/// keys, then the block's own promoted keys (fewer than [`PROMOTED`] leave columns unused,
/// all null). Column `i` is numbered over both lists; string columns are stored dedicated
/// first, then promoted (see [`AttributeColumns::position`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct AttributeColumns {
    promoted: Vec<String>,
}

impl AttributeColumns {
    /// Keeps the first [`PROMOTED`]`.len()` distinct keys that are not dedicated already.
    pub(crate) fn new(keys: impl IntoIterator<Item = String>) -> Self {
        let mut promoted: Vec<String> = Vec::new();
        for key in keys {
            if promoted.len() == PROMOTED.len() {
                break;
            }
            if dedicated_index(&key).is_none() && !promoted.contains(&key) {
                promoted.push(key);
            }
        }
        AttributeColumns { promoted }
    }

    /// Promotes the string attributes most of `spans` carry: keys outside [`DEDICATED`]
    /// with a string value on at least one span in [`PROMOTE_SHARE`], most frequent first.
    pub(crate) fn choose<'a>(spans: impl IntoIterator<Item = &'a Span>) -> Self {
        let mut counts: HashMap<&str, u64> = HashMap::new();
        let mut total = 0u64;
        for span in spans {
            total += 1;
            for kv in &span.attributes {
                if matches!(kv.value, AttributeValue::String(_)) {
                    *counts.entry(kv.key.as_str()).or_default() += 1;
                }
            }
        }
        Self::most_common(counts.into_iter(), total)
    }

    /// The promoted keys of a block merged from blocks with `inputs` (promoted keys, spans):
    /// each input's keys weigh as many spans as the input holds.
    pub(crate) fn merge<'a>(inputs: impl IntoIterator<Item = (&'a [String], u64)>) -> Self {
        let mut weights: HashMap<&str, u64> = HashMap::new();
        let mut total = 0u64;
        for (keys, spans) in inputs {
            total += spans;
            for key in keys {
                *weights.entry(key.as_str()).or_default() += spans;
            }
        }
        Self::most_common(weights.into_iter(), total)
    }

    fn most_common<'a>(counts: impl Iterator<Item = (&'a str, u64)>, total: u64) -> Self {
        let mut common: Vec<(&str, u64)> =
            counts.filter(|(k, n)| *n > 0 && *n * PROMOTE_SHARE >= total && dedicated_index(k).is_none()).collect();
        common.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        Self::new(common.into_iter().map(|(k, _)| k.to_string()))
    }

    pub(crate) fn promoted(&self) -> &[String] {
        &self.promoted
    }

    /// The column holding `key`, if any.
    pub(crate) fn index(&self, key: &str) -> Option<usize> {
        dedicated_index(key).or_else(|| self.promoted.iter().position(|k| k == key).map(|p| DEDICATED.len() + p))
    }

    /// The key column `i` holds; `None` for an unused promoted column.
    pub(crate) fn key(&self, i: usize) -> Option<&str> {
        match DEDICATED.get(i) {
            Some(d) => Some(d.0),
            None => self.promoted.get(i - DEDICATED.len()).map(String::as_str),
        }
    }

    /// The Parquet column name of column `i`.
    pub(crate) fn column(i: usize) -> &'static str {
        match DEDICATED.get(i) {
            Some(d) => d.1,
            None => PROMOTED[i - DEDICATED.len()],
        }
    }

    pub(crate) fn ty(i: usize) -> DedicatedType {
        DEDICATED.get(i).map_or(DedicatedType::Str, |d| d.2)
    }

    /// Position of column `i` among the leaves of its type (`dedicated_str` or
    /// `dedicated_int` of [`SpanColumns`]).
    pub(crate) fn position(i: usize) -> usize {
        let ty = Self::ty(i);
        (0..i).filter(|j| Self::ty(*j) == ty).count()
    }
}

pub(crate) fn dedicated_index(key: &str) -> Option<usize> {
    // Most keys differ in length from every dedicated key, so a cheap length test first
    // keeps this off the profile (it runs for every attribute of every span written).
    if !(7..=26).contains(&key.len()) {
        return None;
    }
    DEDICATED.iter().position(|(k, _, _)| k.len() == key.len() && *k == key)
}

fn kv_list_schema(name: &str) -> String {
    format!(
        "required group {name} (LIST) {{ repeated group key_value {{ required binary key (UTF8); \
         optional binary str (UTF8); optional int64 int; optional double double; optional boolean bool; \
         optional binary bytes; optional binary complex; }} }}"
    )
}

/// The message type of every block, in Parquet's schema language.
pub(crate) fn schema_text() -> String {
    let mut s = String::from(
        "message spindle_span {
        required fixed_len_byte_array(16) trace_id;
        required int64 span_id;
        required int64 parent_span_id;
        required binary service_name (UTF8);
        required binary name (UTF8);
        required int32 kind;
        required int64 start_time_unix_nano (TIMESTAMP(NANOS,true));
        required int64 duration_nanos;
        required int32 status_code;
        optional binary status_message (UTF8);
        optional binary trace_state (UTF8);
        required int32 flags;
        required int32 resource_ref;
        required int32 scope_ref;
        ",
    );
    for i in 0..ATTRIBUTE_COLUMNS {
        let column = AttributeColumns::column(i);
        match AttributeColumns::ty(i) {
            DedicatedType::Str => s.push_str(&format!("optional binary {column} (UTF8);\n")),
            DedicatedType::Int => s.push_str(&format!("optional int64 {column};\n")),
        }
    }
    s.push_str("optional binary attribute_layout;\n");
    s.push_str(&kv_list_schema("attributes"));
    s.push_str(&format!(
        "required group events (LIST) {{ repeated group event {{ required int64 time_unix_nano; \
         required binary name (UTF8); {} required int32 dropped_attributes_count; }} }}",
        kv_list_schema("attributes")
    ));
    s.push_str(&format!(
        "required group links (LIST) {{ repeated group link {{ required fixed_len_byte_array(16) trace_id; \
         required int64 span_id; optional binary trace_state (UTF8); required int32 flags; {} \
         required int32 dropped_attributes_count; }} }}",
        kv_list_schema("attributes")
    ));
    s.push_str(
        "required int32 dropped_attributes_count;
        required int32 dropped_events_count;
        required int32 dropped_links_count;
        }",
    );
    s
}

/// Values and levels of one leaf column, as Parquet's low-level API reads and writes them.
/// `def` and `rep` are empty for a column whose maximum level is zero.
#[derive(Debug)]
pub(crate) struct Leaf<T> {
    pub(crate) values: Vec<T>,
    pub(crate) def: Vec<i16>,
    pub(crate) rep: Vec<i16>,
    pub(crate) max_def: i16,
}

impl<T> Leaf<T> {
    pub(crate) fn new(max_def: i16) -> Self {
        Leaf { values: Vec::new(), def: Vec::new(), rep: Vec::new(), max_def }
    }

    /// Appends one level; `value` is stored only when the level is fully defined.
    fn push(&mut self, def: i16, rep: i16, value: Option<T>, repeated: bool) {
        if self.max_def > 0 {
            self.def.push(def);
        }
        if repeated {
            self.rep.push(rep);
        }
        if let Some(v) = value {
            debug_assert_eq!(def, self.max_def);
            self.values.push(v);
        }
    }

    fn push_required(&mut self, value: T) {
        self.values.push(value);
    }

    fn push_optional(&mut self, value: Option<T>) {
        let def = if value.is_some() { 1 } else { 0 };
        self.push(def, 0, value, false);
    }

    pub(crate) fn cursor(&self) -> Cursor<'_, T> {
        Cursor { leaf: self, level: 0, value: 0 }
    }

    /// Whether the leaf holds no value and every level is zero: an optional column that
    /// is null in every row, or a list leaf whose list is empty in every row.
    pub(crate) fn holds_nothing(&self) -> bool {
        self.max_def > 0
            && self.values.is_empty()
            && self.def.iter().all(|d| *d == 0)
            && self.rep.iter().all(|r| *r == 0)
    }

    /// Makes the leaf what reading `rows` rows of a [`Leaf::holds_nothing`] column gives:
    /// a zero definition level (and repetition level, for a list leaf) per row.
    pub(crate) fn fill_nothing(&mut self, rows: usize, repeated: bool) {
        self.def.resize(self.def.len() + rows, 0);
        if repeated {
            self.rep.resize(self.rep.len() + rows, 0);
        }
    }

    pub(crate) fn levels(&self) -> usize {
        if self.max_def > 0 {
            self.def.len()
        } else {
            self.values.len()
        }
    }
}

/// Walks one leaf level by level.
pub(crate) struct Cursor<'a, T> {
    leaf: &'a Leaf<T>,
    level: usize,
    value: usize,
}

impl<'a, T> Cursor<'a, T> {
    /// The next level: its definition level and the value when fully defined.
    pub(crate) fn next(&mut self) -> (i16, Option<&'a T>) {
        let def = if self.leaf.max_def > 0 { self.leaf.def.get(self.level).copied().unwrap_or(0) } else { 0 };
        self.level += 1;
        if def == self.leaf.max_def {
            let v = self.leaf.values.get(self.value);
            self.value += 1;
            (def, v)
        } else {
            (def, None)
        }
    }

    /// Repetition level of the next entry, `None` at the end.
    pub(crate) fn peek_rep(&self) -> Option<i16> {
        self.leaf.rep.get(self.level).copied()
    }
}

/// The seven leaves of a typed key/value list.
#[derive(Debug)]
pub(crate) struct KvLeaves {
    pub(crate) key: Leaf<ByteArray>,
    pub(crate) str: Leaf<ByteArray>,
    pub(crate) int: Leaf<i64>,
    pub(crate) double: Leaf<f64>,
    pub(crate) bool: Leaf<bool>,
    pub(crate) bytes: Leaf<ByteArray>,
    pub(crate) complex: Leaf<ByteArray>,
}

impl KvLeaves {
    /// `key_def` is the definition level of a present key/value entry.
    pub(crate) fn new(key_def: i16) -> Self {
        KvLeaves {
            key: Leaf::new(key_def),
            str: Leaf::new(key_def + 1),
            int: Leaf::new(key_def + 1),
            double: Leaf::new(key_def + 1),
            bool: Leaf::new(key_def + 1),
            bytes: Leaf::new(key_def + 1),
            complex: Leaf::new(key_def + 1),
        }
    }

    /// One level meaning "no entry here": an empty list (`def == key_def - 1`) or an absent
    /// parent (lower).
    fn push_empty(&mut self, def: i16, rep: i16) {
        self.key.push(def, rep, None, true);
        self.str.push(def, rep, None, true);
        self.int.push(def, rep, None, true);
        self.double.push(def, rep, None, true);
        self.bool.push(def, rep, None, true);
        self.bytes.push(def, rep, None, true);
        self.complex.push(def, rep, None, true);
    }

    /// Writes a list whose first entry has repetition level `first_rep` and whose later
    /// entries have `list_rep`.
    fn push_list<'a>(
        &mut self,
        kvs: impl IntoIterator<Item = &'a KeyValue>,
        first_rep: i16,
        list_rep: i16,
        buffers: &mut PushBuffers,
    ) {
        let d = self.key.max_def;
        let mut any = false;
        for (i, kv) in kvs.into_iter().enumerate() {
            any = true;
            let rep = if i == 0 { first_rep } else { list_rep };
            self.key.push(d, rep, Some(buffers.bytes(kv.key.as_bytes())), true);
            let (mut s, mut n, mut f, mut b, mut raw, mut c) = (None, None, None, None, None, None);
            match &kv.value {
                AttributeValue::String(v) => s = Some(buffers.bytes(v.as_bytes())),
                AttributeValue::Int(v) => n = Some(*v),
                AttributeValue::Double(v) => f = Some(*v),
                AttributeValue::Bool(v) => b = Some(*v),
                AttributeValue::Bytes(v) => raw = Some(buffers.bytes(v)),
                complex => c = Some(ByteArray::from(postcard::to_stdvec(complex).unwrap_or_default())),
            }
            let level = |x: bool| if x { d + 1 } else { d };
            self.str.push(level(s.is_some()), rep, s, true);
            self.int.push(level(n.is_some()), rep, n, true);
            self.double.push(level(f.is_some()), rep, f, true);
            self.bool.push(level(b.is_some()), rep, b, true);
            self.bytes.push(level(raw.is_some()), rep, raw, true);
            self.complex.push(level(c.is_some()), rep, c, true);
        }
        if !any {
            self.push_empty(d - 1, first_rep);
        }
    }

    pub(crate) fn cursor(&self) -> KvCursor<'_> {
        KvCursor {
            key: self.key.cursor(),
            str: self.str.cursor(),
            int: self.int.cursor(),
            double: self.double.cursor(),
            bool: self.bool.cursor(),
            bytes: self.bytes.cursor(),
            complex: self.complex.cursor(),
        }
    }
}

/// Walks the seven leaves of a key/value list in lockstep.
pub(crate) struct KvCursor<'a> {
    key: Cursor<'a, ByteArray>,
    str: Cursor<'a, ByteArray>,
    int: Cursor<'a, i64>,
    double: Cursor<'a, f64>,
    bool: Cursor<'a, bool>,
    bytes: Cursor<'a, ByteArray>,
    complex: Cursor<'a, ByteArray>,
}

/// One entry of a key/value list, borrowed from the column buffers.
pub(crate) enum RawValue<'a> {
    Str(&'a [u8]),
    Int(i64),
    Double(f64),
    Bool(bool),
    Bytes(&'a [u8]),
    Complex(&'a [u8]),
}

impl RawValue<'_> {
    pub(crate) fn to_value(&self) -> Result<AttributeValue, FormatError> {
        Ok(match self {
            RawValue::Str(s) => AttributeValue::String(utf8(s)?),
            RawValue::Int(v) => AttributeValue::Int(*v),
            RawValue::Double(v) => AttributeValue::Double(*v),
            RawValue::Bool(v) => AttributeValue::Bool(*v),
            RawValue::Bytes(b) => AttributeValue::Bytes(b.to_vec()),
            RawValue::Complex(b) => {
                postcard::from_bytes(b).map_err(|_| FormatError::Malformed("complex attribute value"))?
            }
        })
    }

    /// Whether `text` names this value, exactly as [`AttributeValue::matches_text`] decides.
    pub(crate) fn matches_text(&self, text: &str) -> bool {
        match self {
            RawValue::Str(s) => *s == text.as_bytes(),
            _ => self.to_value().is_ok_and(|v| v.matches_text(text)),
        }
    }
}

/// A present key/value entry: key bytes and value.
pub(crate) type KvEntry<'a> = Option<(&'a [u8], RawValue<'a>)>;

impl<'a> KvCursor<'a> {
    /// The next entry: its repetition level, and key and value when an entry is present.
    pub(crate) fn next(&mut self) -> Result<(i16, KvEntry<'a>), FormatError> {
        let rep = self.key.peek_rep().unwrap_or(0);
        let (_, key) = self.key.next();
        let (_, s) = self.str.next();
        let (_, n) = self.int.next();
        let (_, f) = self.double.next();
        let (_, b) = self.bool.next();
        let (_, raw) = self.bytes.next();
        let (_, c) = self.complex.next();
        let Some(key) = key else { return Ok((rep, None)) };
        let value = if let Some(s) = s {
            RawValue::Str(s.data())
        } else if let Some(n) = n {
            RawValue::Int(*n)
        } else if let Some(f) = f {
            RawValue::Double(*f)
        } else if let Some(b) = b {
            RawValue::Bool(*b)
        } else if let Some(raw) = raw {
            RawValue::Bytes(raw.data())
        } else if let Some(c) = c {
            RawValue::Complex(c.data())
        } else {
            return Err(FormatError::Malformed("attribute without a value"));
        };
        Ok((rep, Some((key.data(), value))))
    }

    pub(crate) fn peek_rep(&self) -> Option<i16> {
        self.key.peek_rep()
    }

    /// Reads one list whose later entries have repetition level `list_rep`.
    fn read_list(&mut self) -> Result<Vec<KeyValue>, FormatError> {
        let mut out = Vec::new();
        // Keys are required inside a repeated group, so every list level adds one definition
        // and one repetition level: a key's max_def is also its list's repetition level.
        let list_rep = self.key.leaf.max_def;
        loop {
            let (_, entry) = self.next()?;
            let Some((key, value)) = entry else { break };
            out.push(KeyValue { key: utf8(key)?, value: value.to_value()? });
            if self.peek_rep() != Some(list_rep) {
                break;
            }
        }
        Ok(out)
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum FormatError {
    #[error("block column {0} is malformed")]
    Malformed(&'static str),
    #[error("block holds a string that is not utf-8")]
    Utf8,
    #[error("block refers to {what} {index} but has {len}")]
    BadReference { what: &'static str, index: i32, len: usize },
}

/// Stored text as `String` or the model's inline `Text`.
fn utf8<T: for<'s> From<&'s str>>(bytes: &[u8]) -> Result<T, FormatError> {
    std::str::from_utf8(bytes).map(T::from).map_err(|_| FormatError::Utf8)
}

fn fixed16(bytes: &[u8]) -> Result<u128, FormatError> {
    let arr: [u8; 16] = bytes.try_into().map_err(|_| FormatError::Malformed("trace_id"))?;
    Ok(u128::from_be_bytes(arr))
}

/// All leaves of a block row group, in schema order.
#[derive(Debug)]
pub(crate) struct SpanColumns {
    pub(crate) trace_id: Leaf<FixedLenByteArray>,
    pub(crate) span_id: Leaf<i64>,
    pub(crate) parent_span_id: Leaf<i64>,
    pub(crate) service_name: Leaf<ByteArray>,
    pub(crate) name: Leaf<ByteArray>,
    pub(crate) kind: Leaf<i32>,
    pub(crate) start: Leaf<i64>,
    pub(crate) duration: Leaf<i64>,
    pub(crate) status_code: Leaf<i32>,
    pub(crate) status_message: Leaf<ByteArray>,
    pub(crate) trace_state: Leaf<ByteArray>,
    pub(crate) flags: Leaf<i32>,
    pub(crate) resource_ref: Leaf<i32>,
    pub(crate) scope_ref: Leaf<i32>,
    pub(crate) dedicated_str: Vec<Leaf<ByteArray>>,
    pub(crate) dedicated_int: Vec<Leaf<i64>>,
    /// Which key each of `dedicated_str` and `dedicated_int` holds in this block.
    pub(crate) attribute_columns: Arc<AttributeColumns>,
    pub(crate) attribute_layout: Leaf<ByteArray>,
    pub(crate) attributes: KvLeaves,
    pub(crate) event_time: Leaf<i64>,
    pub(crate) event_name: Leaf<ByteArray>,
    pub(crate) event_attributes: KvLeaves,
    pub(crate) event_dropped: Leaf<i32>,
    pub(crate) link_trace_id: Leaf<FixedLenByteArray>,
    pub(crate) link_span_id: Leaf<i64>,
    pub(crate) link_trace_state: Leaf<ByteArray>,
    pub(crate) link_flags: Leaf<i32>,
    pub(crate) link_attributes: KvLeaves,
    pub(crate) link_dropped: Leaf<i32>,
    pub(crate) dropped_attributes: Leaf<i32>,
    pub(crate) dropped_events: Leaf<i32>,
    pub(crate) dropped_links: Leaf<i32>,
    /// Writer-side scratch of [`SpanColumns::push`]; readers leave it empty.
    buffers: PushBuffers,
}

/// What lets [`SpanColumns::push`] avoid an allocation per value: strings are copied into
/// shared chunks and every `ByteArray` is a reference-counted slice of one (allocating and
/// freeing one buffer per string was a third of the block writer's time), the current
/// trace id is encoded once per trace, and the last attribute layout is reused.
#[derive(Debug, Default)]
pub(crate) struct PushBuffers {
    chunk: BytesMut,
    trace: Option<(TraceId, FixedLenByteArray)>,
    layout: Option<(Vec<u32>, ByteArray)>,
}

impl PushBuffers {
    const CHUNK_BYTES: usize = 64 * 1024;

    fn bytes(&mut self, value: &[u8]) -> ByteArray {
        if self.chunk.capacity() - self.chunk.len() < value.len() {
            self.chunk = BytesMut::with_capacity(Self::CHUNK_BYTES.max(value.len()));
        }
        self.chunk.extend_from_slice(value);
        ByteArray::from(self.chunk.split().freeze())
    }

    fn trace_id(&mut self, id: TraceId) -> FixedLenByteArray {
        match &self.trace {
            Some((last, bytes)) if *last == id => bytes.clone(),
            _ => {
                let bytes = FixedLenByteArray::from(self.bytes(&id.to_bytes()));
                self.trace = Some((id, bytes.clone()));
                bytes
            }
        }
    }

    fn layout(&mut self, positions: &[u32]) -> ByteArray {
        match &self.layout {
            Some((last, bytes)) if last.as_slice() == positions => bytes.clone(),
            _ => {
                let bytes = ByteArray::from(postcard::to_stdvec(positions).unwrap_or_default());
                self.layout = Some((positions.to_vec(), bytes.clone()));
                bytes
            }
        }
    }

    fn non_empty(&mut self, s: &str) -> Option<ByteArray> {
        (!s.is_empty()).then(|| self.bytes(s.as_bytes()))
    }
}

/// A borrowed leaf of any physical type, for writing in schema order.
pub(crate) enum LeafRef<'a> {
    I32(&'a Leaf<i32>),
    I64(&'a Leaf<i64>),
    F64(&'a Leaf<f64>),
    Bool(&'a Leaf<bool>),
    Bytes(&'a Leaf<ByteArray>),
    Fixed(&'a Leaf<FixedLenByteArray>),
}

/// A mutable leaf of any physical type, for reading into.
pub(crate) enum LeafMut<'a> {
    I32(&'a mut Leaf<i32>),
    I64(&'a mut Leaf<i64>),
    F64(&'a mut Leaf<f64>),
    Bool(&'a mut Leaf<bool>),
    Bytes(&'a mut Leaf<ByteArray>),
    Fixed(&'a mut Leaf<FixedLenByteArray>),
}

/// Generates the schema-ordered leaf lists once for shared and once for mutable borrows.
macro_rules! leaves_in_order {
    ($self:ident, $kind:ident, $($r:tt)*) => {{
        let mut out = Vec::with_capacity(64);
        out.push(("trace_id".to_string(), $kind::Fixed(& $($r)* $self.trace_id)));
        out.push(("span_id".to_string(), $kind::I64(& $($r)* $self.span_id)));
        out.push(("parent_span_id".to_string(), $kind::I64(& $($r)* $self.parent_span_id)));
        out.push(("service_name".to_string(), $kind::Bytes(& $($r)* $self.service_name)));
        out.push(("name".to_string(), $kind::Bytes(& $($r)* $self.name)));
        out.push(("kind".to_string(), $kind::I32(& $($r)* $self.kind)));
        out.push(("start_time_unix_nano".to_string(), $kind::I64(& $($r)* $self.start)));
        out.push(("duration_nanos".to_string(), $kind::I64(& $($r)* $self.duration)));
        out.push(("status_code".to_string(), $kind::I32(& $($r)* $self.status_code)));
        out.push(("status_message".to_string(), $kind::Bytes(& $($r)* $self.status_message)));
        out.push(("trace_state".to_string(), $kind::Bytes(& $($r)* $self.trace_state)));
        out.push(("flags".to_string(), $kind::I32(& $($r)* $self.flags)));
        out.push(("resource_ref".to_string(), $kind::I32(& $($r)* $self.resource_ref)));
        out.push(("scope_ref".to_string(), $kind::I32(& $($r)* $self.scope_ref)));
        let mut strs = (& $($r)* $self.dedicated_str).iter_mut_or_ref();
        let mut ints = (& $($r)* $self.dedicated_int).iter_mut_or_ref();
        for i in 0..ATTRIBUTE_COLUMNS {
            let column = AttributeColumns::column(i);
            match AttributeColumns::ty(i) {
                DedicatedType::Str => {
                    if let Some(leaf) = strs.next() { out.push((column.to_string(), $kind::Bytes(leaf))); }
                }
                DedicatedType::Int => {
                    if let Some(leaf) = ints.next() { out.push((column.to_string(), $kind::I64(leaf))); }
                }
            }
        }
        out.push(("attribute_layout".to_string(), $kind::Bytes(& $($r)* $self.attribute_layout)));
        kv_leaves!(out, $kind, "attributes.key_value", $self.attributes, $($r)*);
        out.push(("events.event.time_unix_nano".to_string(), $kind::I64(& $($r)* $self.event_time)));
        out.push(("events.event.name".to_string(), $kind::Bytes(& $($r)* $self.event_name)));
        kv_leaves!(out, $kind, "events.event.attributes.key_value", $self.event_attributes, $($r)*);
        out.push(("events.event.dropped_attributes_count".to_string(), $kind::I32(& $($r)* $self.event_dropped)));
        out.push(("links.link.trace_id".to_string(), $kind::Fixed(& $($r)* $self.link_trace_id)));
        out.push(("links.link.span_id".to_string(), $kind::I64(& $($r)* $self.link_span_id)));
        out.push(("links.link.trace_state".to_string(), $kind::Bytes(& $($r)* $self.link_trace_state)));
        out.push(("links.link.flags".to_string(), $kind::I32(& $($r)* $self.link_flags)));
        kv_leaves!(out, $kind, "links.link.attributes.key_value", $self.link_attributes, $($r)*);
        out.push(("links.link.dropped_attributes_count".to_string(), $kind::I32(& $($r)* $self.link_dropped)));
        out.push(("dropped_attributes_count".to_string(), $kind::I32(& $($r)* $self.dropped_attributes)));
        out.push(("dropped_events_count".to_string(), $kind::I32(& $($r)* $self.dropped_events)));
        out.push(("dropped_links_count".to_string(), $kind::I32(& $($r)* $self.dropped_links)));
        out
    }};
}

macro_rules! kv_leaves {
    ($out:ident, $kind:ident, $prefix:expr, $kv:expr, $($r:tt)*) => {
        $out.push((format!("{}.key", $prefix), $kind::Bytes(& $($r)* $kv.key)));
        $out.push((format!("{}.str", $prefix), $kind::Bytes(& $($r)* $kv.str)));
        $out.push((format!("{}.int", $prefix), $kind::I64(& $($r)* $kv.int)));
        $out.push((format!("{}.double", $prefix), $kind::F64(& $($r)* $kv.double)));
        $out.push((format!("{}.bool", $prefix), $kind::Bool(& $($r)* $kv.bool)));
        $out.push((format!("{}.bytes", $prefix), $kind::Bytes(& $($r)* $kv.bytes)));
        $out.push((format!("{}.complex", $prefix), $kind::Bytes(& $($r)* $kv.complex)));
    };
}

/// Lets one macro body iterate a `Vec` by shared or by mutable reference.
trait IterMutOrRef<'a, T: 'a> {
    type Iter: Iterator;
    fn iter_mut_or_ref(self) -> Self::Iter;
}

impl<'a, T: 'a> IterMutOrRef<'a, T> for &'a Vec<T> {
    type Iter = std::slice::Iter<'a, T>;
    fn iter_mut_or_ref(self) -> Self::Iter {
        self.iter()
    }
}

impl<'a, T: 'a> IterMutOrRef<'a, T> for &'a mut Vec<T> {
    type Iter = std::slice::IterMut<'a, T>;
    fn iter_mut_or_ref(self) -> Self::Iter {
        self.iter_mut()
    }
}

/// Shared-resource tables of a block: rows hold indexes into them.
#[derive(Debug, Default)]
pub(crate) struct SharedTables {
    pub(crate) resources: Vec<Arc<Resource>>,
    pub(crate) scopes: Vec<Arc<Scope>>,
    resource_ptrs: PointerIndex<Resource>,
    scope_ptrs: PointerIndex<Scope>,
}

/// What a block writer learned about attribute keys, by position in a span's attribute
/// list: the key last seen there, the attribute column it goes to and whether it is in the
/// block's key list. Spans of one service repeat their keys in one order, so nearly every
/// attribute costs one comparison with the key seen at its position instead of a search of
/// the dedicated and promoted keys and a hash-set lookup (together a sixth of the block
/// writer's time on the reference workload).
///
/// Valid for one [`AttributeColumns`] and one key list: a writer keeps its own.
#[derive(Default)]
pub(crate) struct KeyMemo {
    positions: Vec<MemoEntry>,
}

#[derive(Default)]
struct MemoEntry {
    key: String,
    column: Option<usize>,
    listed: bool,
}

impl KeyMemo {
    /// Positions remembered; attributes further down a long list are looked up each time.
    const POSITIONS: usize = 64;

    /// The attribute column of `key`, standing at `position` of a span's attributes.
    fn column(&mut self, position: usize, key: &str, columns: &AttributeColumns) -> Option<usize> {
        if position >= Self::POSITIONS {
            return columns.index(key);
        }
        if position >= self.positions.len() {
            self.positions.resize_with(position + 1, MemoEntry::default);
        }
        let entry = &mut self.positions[position];
        if entry.key != key {
            entry.key.clear();
            entry.key.push_str(key);
            entry.column = columns.index(key);
            entry.listed = false;
        }
        entry.column
    }

    /// Whether the key at `position` (as last passed to `column`) is known to be listed.
    fn listed(&self, position: usize) -> bool {
        self.positions.get(position).is_some_and(|e| e.listed)
    }

    fn set_listed(&mut self, position: usize) {
        if let Some(e) = self.positions.get_mut(position) {
            e.listed = true;
        }
    }
}

/// Hashes an address: the allocator aligns them, so the low bits say nothing and SipHash
/// (the standard map's) was a visible cost of every span written.
#[derive(Default, Clone, Copy)]
pub(crate) struct AddressHasher(u64);

impl std::hash::Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn write_usize(&mut self, n: usize) {
        let h = (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = h ^ (h >> 29);
    }
}

/// Table index by `Arc` address. Spans of one batch share their resource's `Arc`, so most
/// lookups end here instead of comparing resources by value (once the block writer's top
/// cost). The `Arc` is kept so that its address cannot be reused by another value.
type PointerIndex<T> = HashMap<usize, (Arc<T>, i32), std::hash::BuildHasherDefault<AddressHasher>>;

impl SharedTables {
    pub(crate) fn new(resources: Vec<Arc<Resource>>, scopes: Vec<Arc<Scope>>) -> Self {
        SharedTables { resources, scopes, ..Default::default() }
    }

    fn intern<T: PartialEq>(table: &mut Vec<Arc<T>>, ptrs: &mut PointerIndex<T>, item: &Arc<T>) -> i32 {
        let address = Arc::as_ptr(item) as usize;
        if let Some((_, index)) = ptrs.get(&address) {
            return *index;
        }
        let index = match table.iter().position(|t| **t == **item) {
            Some(i) => i as i32,
            None => {
                table.push(Arc::clone(item));
                (table.len() - 1) as i32
            }
        };
        ptrs.insert(address, (Arc::clone(item), index));
        index
    }
}

fn dedicated_str_count() -> usize {
    (0..ATTRIBUTE_COLUMNS).filter(|i| AttributeColumns::ty(*i) == DedicatedType::Str).count()
}

impl SpanColumns {
    pub(crate) fn new() -> Self {
        SpanColumns {
            trace_id: Leaf::new(0),
            span_id: Leaf::new(0),
            parent_span_id: Leaf::new(0),
            service_name: Leaf::new(0),
            name: Leaf::new(0),
            kind: Leaf::new(0),
            start: Leaf::new(0),
            duration: Leaf::new(0),
            status_code: Leaf::new(0),
            status_message: Leaf::new(1),
            trace_state: Leaf::new(1),
            flags: Leaf::new(0),
            resource_ref: Leaf::new(0),
            scope_ref: Leaf::new(0),
            dedicated_str: (0..dedicated_str_count()).map(|_| Leaf::new(1)).collect(),
            dedicated_int: (0..ATTRIBUTE_COLUMNS - dedicated_str_count()).map(|_| Leaf::new(1)).collect(),
            attribute_columns: Arc::default(),
            attribute_layout: Leaf::new(1),
            attributes: KvLeaves::new(1),
            event_time: Leaf::new(1),
            event_name: Leaf::new(1),
            event_attributes: KvLeaves::new(2),
            event_dropped: Leaf::new(1),
            link_trace_id: Leaf::new(1),
            link_span_id: Leaf::new(1),
            link_trace_state: Leaf::new(2),
            link_flags: Leaf::new(1),
            link_attributes: KvLeaves::new(2),
            link_dropped: Leaf::new(1),
            dropped_attributes: Leaf::new(0),
            dropped_events: Leaf::new(0),
            dropped_links: Leaf::new(0),
            buffers: PushBuffers::default(),
        }
    }

    /// Empties every leaf but keeps its capacity, so the next row group of a writer grows
    /// no buffers (fresh vectors per row group cost page faults and copies).
    pub(crate) fn clear(&mut self) {
        fn clear<T>(leaf: &mut Leaf<T>) {
            leaf.values.clear();
            leaf.def.clear();
            leaf.rep.clear();
        }
        for (_, leaf) in self.leaves_mut() {
            match leaf {
                LeafMut::I32(l) => clear(l),
                LeafMut::I64(l) => clear(l),
                LeafMut::F64(l) => clear(l),
                LeafMut::Bool(l) => clear(l),
                LeafMut::Bytes(l) => clear(l),
                LeafMut::Fixed(l) => clear(l),
            }
        }
        self.buffers.trace = None;
    }

    /// The position of leaf `name` in schema order (as [`SpanColumns::leaves`] lists them).
    pub(crate) fn leaf_position(name: &str) -> Option<usize> {
        static NAMES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        NAMES
            .get_or_init(|| SpanColumns::new().leaves().into_iter().map(|(n, _)| n).collect())
            .iter()
            .position(|n| n == name)
    }

    pub(crate) fn leaves(&self) -> Vec<(String, LeafRef<'_>)> {
        leaves_in_order!(self, LeafRef,)
    }

    pub(crate) fn leaves_mut(&mut self) -> Vec<(String, LeafMut<'_>)> {
        leaves_in_order!(self, LeafMut, mut)
    }

    /// Moves the leaves named in `names` from `other` into `self`, where they replace what
    /// `self` held (both describe the same rows).
    pub(crate) fn take_leaves(&mut self, other: &mut SpanColumns, names: &[&str]) {
        for ((name, mine), (_, theirs)) in self.leaves_mut().into_iter().zip(other.leaves_mut()) {
            if !names.contains(&name.as_str()) {
                continue;
            }
            match (mine, theirs) {
                (LeafMut::I32(a), LeafMut::I32(b)) => std::mem::swap(a, b),
                (LeafMut::I64(a), LeafMut::I64(b)) => std::mem::swap(a, b),
                (LeafMut::F64(a), LeafMut::F64(b)) => std::mem::swap(a, b),
                (LeafMut::Bool(a), LeafMut::Bool(b)) => std::mem::swap(a, b),
                (LeafMut::Bytes(a), LeafMut::Bytes(b)) => std::mem::swap(a, b),
                (LeafMut::Fixed(a), LeafMut::Fixed(b)) => std::mem::swap(a, b),
                _ => {}
            }
        }
    }

    pub(crate) fn rows(&self) -> usize {
        self.trace_id.values.len()
    }

    /// Appends one span as a row.
    /// Appends one span as a row; `keys` collects the keys of its list attributes (span
    /// attributes outside dedicated columns, and event attributes).
    pub(crate) fn push(
        &mut self,
        span: &Span,
        tables: &mut SharedTables,
        memo: &mut KeyMemo,
        keys: Option<&mut std::collections::HashSet<String>>,
    ) {
        let b = &mut self.buffers;
        self.trace_id.push_required(b.trace_id(span.trace_id));
        self.span_id.push_required(span.span_id.0 as i64);
        self.parent_span_id.push_required(span.parent_span_id.0 as i64);
        self.service_name.push_required(b.bytes(span.service_name().as_bytes()));
        self.name.push_required(b.bytes(span.name.as_bytes()));
        self.kind.push_required(span.kind.to_otlp());
        self.start.push_required(span.start_time_unix_nano as i64);
        // Stored as a wrapping difference so that an end before the start survives.
        self.duration.push_required(span.end_time_unix_nano.wrapping_sub(span.start_time_unix_nano) as i64);
        self.status_code.push_required(span.status.code.to_otlp());
        self.status_message.push_optional(b.non_empty(&span.status.message));
        self.trace_state.push_optional(b.non_empty(&span.trace_state));
        self.flags.push_required(span.flags as i32);
        self.resource_ref.push_required(SharedTables::intern(
            &mut tables.resources,
            &mut tables.resource_ptrs,
            &span.resource,
        ));
        self.scope_ref.push_required(SharedTables::intern(&mut tables.scopes, &mut tables.scope_ptrs, &span.scope));

        // Dedicated and promoted attributes: the first attribute with the key, when it has
        // the right type. One pass over the attributes finds the first position of every key.
        let mut first: [Option<usize>; ATTRIBUTE_COLUMNS] = [None; ATTRIBUTE_COLUMNS];
        for (p, kv) in span.attributes.iter().enumerate() {
            if let Some(i) = memo.column(p, &kv.key, &self.attribute_columns) {
                first[i].get_or_insert(p);
            }
        }
        let mut positions = [0u32; ATTRIBUTE_COLUMNS];
        let mut dedicated_count = 0;
        // Which attributes went to attribute columns; on the stack for the usual few.
        let mut taken_small = [false; 32];
        let mut taken_large;
        let taken: &mut [bool] = if span.attributes.len() <= taken_small.len() {
            &mut taken_small[..span.attributes.len()]
        } else {
            taken_large = vec![false; span.attributes.len()];
            &mut taken_large
        };
        let (mut si, mut ii) = (0, 0);
        for (j, first) in first.iter().enumerate() {
            let ty = AttributeColumns::ty(j);
            let typed = first.and_then(|p| match (&span.attributes[p].value, ty) {
                (AttributeValue::String(s), DedicatedType::Str) => Some((p, Some(s.as_str()), None)),
                (AttributeValue::Int(v), DedicatedType::Int) => Some((p, None, Some(*v))),
                _ => None,
            });
            if let Some((p, _, _)) = typed {
                taken[p] = true;
                positions[dedicated_count] = p as u32;
                dedicated_count += 1;
            }
            match ty {
                DedicatedType::Str => {
                    let value = typed.and_then(|t| t.1).map(|v| self.buffers.bytes(v.as_bytes()));
                    self.dedicated_str[si].push_optional(value);
                    si += 1;
                }
                DedicatedType::Int => {
                    self.dedicated_int[ii].push_optional(typed.and_then(|t| t.2));
                    ii += 1;
                }
            }
        }
        if let Some(keys) = keys {
            for (p, kv) in span.attributes.iter().enumerate().filter(|(p, _)| !taken[*p]) {
                if !memo.listed(p) && !keys.contains(kv.key.as_str()) {
                    keys.insert(kv.key.to_string());
                }
                memo.set_listed(p);
            }
            for kv in span.events.iter().flat_map(|e| e.attributes.iter()) {
                if !keys.contains(kv.key.as_str()) {
                    keys.insert(kv.key.to_string());
                }
            }
        }
        // Where the dedicated attributes stood in the original list, unless they simply led it
        // in column order (then nothing is stored, and the usual case costs one bit).
        let positions = &positions[..dedicated_count];
        let canonical = positions.iter().enumerate().all(|(i, p)| *p as usize == i);
        let layout = if canonical { None } else { Some(self.buffers.layout(positions)) };
        self.attribute_layout.push_optional(layout);
        let generic = span.attributes.iter().zip(taken.iter()).filter(|(_, t)| !**t).map(|(kv, _)| kv);
        self.attributes.push_list(generic, 0, 1, &mut self.buffers);

        if span.events.is_empty() {
            self.event_time.push(0, 0, None, true);
            self.event_name.push(0, 0, None, true);
            self.event_attributes.push_empty(0, 0);
            self.event_dropped.push(0, 0, None, true);
        }
        for (i, event) in span.events.iter().enumerate() {
            let rep = if i == 0 { 0 } else { 1 };
            self.event_time.push(1, rep, Some(event.time_unix_nano as i64), true);
            self.event_name.push(1, rep, Some(self.buffers.bytes(event.name.as_bytes())), true);
            self.event_attributes.push_list(&event.attributes, rep, 2, &mut self.buffers);
            self.event_dropped.push(1, rep, Some(event.dropped_attributes_count as i32), true);
        }
        if span.links.is_empty() {
            self.link_trace_id.push(0, 0, None, true);
            self.link_span_id.push(0, 0, None, true);
            self.link_trace_state.push(0, 0, None, true);
            self.link_flags.push(0, 0, None, true);
            self.link_attributes.push_empty(0, 0);
            self.link_dropped.push(0, 0, None, true);
        }
        for (i, link) in span.links.iter().enumerate() {
            let rep = if i == 0 { 0 } else { 1 };
            let trace_id = FixedLenByteArray::from(self.buffers.bytes(&link.trace_id.to_bytes()));
            self.link_trace_id.push(1, rep, Some(trace_id), true);
            self.link_span_id.push(1, rep, Some(link.span_id.0 as i64), true);
            let state = self.buffers.non_empty(&link.trace_state);
            self.link_trace_state.push(if state.is_some() { 2 } else { 1 }, rep, state, true);
            self.link_flags.push(1, rep, Some(link.flags as i32), true);
            self.link_attributes.push_list(&link.attributes, rep, 2, &mut self.buffers);
            self.link_dropped.push(1, rep, Some(link.dropped_attributes_count as i32), true);
        }
        self.dropped_attributes.push_required(span.dropped_attributes_count as i32);
        self.dropped_events.push_required(span.dropped_events_count as i32);
        self.dropped_links.push_required(span.dropped_links_count as i32);
    }

    /// Rebuilds every row as a span.
    pub(crate) fn decode(&self, tables: &SharedTables) -> Result<Vec<Span>, FormatError> {
        let rows = self.rows();
        let check = |leaf_levels: usize, what: &'static str| {
            if leaf_levels == rows {
                Ok(())
            } else {
                Err(FormatError::Malformed(what))
            }
        };
        for (leaf, what) in [
            (self.span_id.levels(), "span_id"),
            (self.parent_span_id.levels(), "parent_span_id"),
            (self.service_name.levels(), "service_name"),
            (self.name.levels(), "name"),
            (self.kind.levels(), "kind"),
            (self.start.levels(), "start_time_unix_nano"),
            (self.duration.levels(), "duration_nanos"),
            (self.status_code.levels(), "status_code"),
            (self.status_message.levels(), "status_message"),
            (self.trace_state.levels(), "trace_state"),
            (self.flags.levels(), "flags"),
            (self.resource_ref.levels(), "resource_ref"),
            (self.scope_ref.levels(), "scope_ref"),
            (self.attribute_layout.levels(), "attribute_layout"),
            (self.dropped_attributes.levels(), "dropped_attributes_count"),
            (self.dropped_events.levels(), "dropped_events_count"),
            (self.dropped_links.levels(), "dropped_links_count"),
        ] {
            check(leaf, what)?;
        }
        for leaf in &self.dedicated_str {
            check(leaf.levels(), "dedicated attribute")?;
        }
        for leaf in &self.dedicated_int {
            check(leaf.levels(), "dedicated attribute")?;
        }
        let mut status_message = self.status_message.cursor();
        let mut trace_state = self.trace_state.cursor();
        let mut layout = self.attribute_layout.cursor();
        let mut dedicated_rows = DedicatedCursors::new(self);
        let mut attributes = self.attributes.cursor();
        let mut event_rows = EventCursors::new(self);
        let mut link_trace_id = self.link_trace_id.cursor();
        let mut link_span_id = self.link_span_id.cursor();
        let mut link_trace_state = self.link_trace_state.cursor();
        let mut link_flags = self.link_flags.cursor();
        let mut link_attributes = self.link_attributes.cursor();
        let mut link_dropped = self.link_dropped.cursor();

        let mut spans = Vec::with_capacity(rows);
        for row in 0..rows {
            let text = |leaf: &Leaf<ByteArray>, what| {
                leaf.values.get(row).ok_or(FormatError::Malformed(what)).and_then(|b| utf8(b.data()))
            };
            let int = |leaf: &Leaf<i64>, what| leaf.values.get(row).copied().ok_or(FormatError::Malformed(what));
            let int32 = |leaf: &Leaf<i32>, what| leaf.values.get(row).copied().ok_or(FormatError::Malformed(what));
            let trace = self.trace_id.values.get(row).ok_or(FormatError::Malformed("trace_id"))?;
            let start = int(&self.start, "start_time_unix_nano")? as u64;
            let resource_ref = int32(&self.resource_ref, "resource_ref")?;
            let scope_ref = int32(&self.scope_ref, "scope_ref")?;

            // Attributes: dedicated ones back at their positions, generic ones filling the gaps.
            let dedicated = dedicated_rows.next_row(|_| true)?;
            let generic = attributes.read_list()?;
            let attributes = match layout.next().1 {
                None => {
                    let mut all = dedicated;
                    all.extend(generic);
                    all
                }
                Some(raw) => {
                    let positions: Vec<u32> =
                        postcard::from_bytes(raw.data()).map_err(|_| FormatError::Malformed("attribute_layout"))?;
                    place_at(dedicated, &positions, generic)?
                }
            };

            let events = event_rows.next_row(true)?;
            let mut links = Vec::new();
            loop {
                let (def, trace_id) = link_trace_id.next();
                let span_id = link_span_id.next().1;
                let state = link_trace_state.next().1;
                let flags = link_flags.next().1;
                let attrs = link_attributes.read_list()?;
                let dropped = link_dropped.next().1;
                if def == 0 {
                    break;
                }
                links.push(Link {
                    trace_id: TraceId(fixed16(trace_id.ok_or(FormatError::Malformed("links.trace_id"))?.data())?),
                    span_id: SpanId(span_id.copied().ok_or(FormatError::Malformed("links.span_id"))? as u64),
                    trace_state: state.map(|s| utf8(s.data())).transpose()?.unwrap_or_default(),
                    attributes: attrs,
                    dropped_attributes_count: dropped.copied().unwrap_or(0) as u32,
                    flags: flags.copied().unwrap_or(0) as u32,
                });
                if link_trace_id.peek_rep() != Some(1) {
                    break;
                }
            }

            let lookup = |table_len: usize, index: i32, what| {
                usize::try_from(index).ok().filter(|i| *i < table_len).ok_or(FormatError::BadReference {
                    what,
                    index,
                    len: table_len,
                })
            };
            let resource = Arc::clone(&tables.resources[lookup(tables.resources.len(), resource_ref, "resource")?]);
            let scope = Arc::clone(&tables.scopes[lookup(tables.scopes.len(), scope_ref, "scope")?]);
            spans.push(Span {
                trace_id: TraceId(fixed16(trace.data())?),
                span_id: SpanId(int(&self.span_id, "span_id")? as u64),
                parent_span_id: SpanId(int(&self.parent_span_id, "parent_span_id")? as u64),
                trace_state: trace_state.next().1.map(|s| utf8(s.data())).transpose()?.unwrap_or_default(),
                flags: int32(&self.flags, "flags")? as u32,
                name: text(&self.name, "name")?,
                kind: SpanKind::from_otlp(int32(&self.kind, "kind")?),
                start_time_unix_nano: start,
                end_time_unix_nano: start.wrapping_add(int(&self.duration, "duration_nanos")? as u64),
                attributes,
                dropped_attributes_count: int32(&self.dropped_attributes, "dropped_attributes_count")? as u32,
                events,
                dropped_events_count: int32(&self.dropped_events, "dropped_events_count")? as u32,
                links,
                dropped_links_count: int32(&self.dropped_links, "dropped_links_count")? as u32,
                status: Status {
                    code: StatusCode::from_otlp(int32(&self.status_code, "status_code")?),
                    message: status_message.next().1.map(|s| utf8(s.data())).transpose()?.unwrap_or_default(),
                },
                resource,
                scope,
            });
        }
        Ok(spans)
    }
}

impl SpanColumns {
    /// The leaves [`SpanColumns::decode_selected`] needs for `keys` (`None`: every
    /// attribute) and, with `events`, the events. `listed` are the keys the block's
    /// generic lists hold (`None`: unknown): a dedicated key is there too when a value
    /// had another type than its column's.
    pub(crate) fn selected_leaves(
        columns: &AttributeColumns,
        keys: Option<&[String]>,
        events: bool,
        listed: Option<&[String]>,
    ) -> Vec<&'static str> {
        let mut names = vec![
            "trace_id",
            "span_id",
            "parent_span_id",
            "name",
            "kind",
            "start_time_unix_nano",
            "duration_nanos",
            "status_code",
            "status_message",
            "resource_ref",
            "scope_ref",
        ];
        match keys {
            None => {
                names.extend((0..ATTRIBUTE_COLUMNS).map(AttributeColumns::column));
                names.push("attribute_layout");
                names.extend(ATTRIBUTE_LIST_LEAVES);
            }
            Some(keys) => {
                names.extend(keys.iter().filter_map(|k| columns.index(k)).map(AttributeColumns::column));
                let in_lists = |k: &String| listed.is_none_or(|l| l.binary_search(k).is_ok());
                if keys.iter().any(in_lists) {
                    names.extend(ATTRIBUTE_LIST_LEAVES);
                }
            }
        }
        if events {
            names.extend([
                "events.event.time_unix_nano",
                "events.event.name",
                "events.event.attributes.key_value.key",
                "events.event.attributes.key_value.str",
                "events.event.attributes.key_value.int",
                "events.event.attributes.key_value.double",
                "events.event.attributes.key_value.bool",
                "events.event.attributes.key_value.bytes",
                "events.event.attributes.key_value.complex",
                "events.event.dropped_attributes_count",
            ]);
        }
        names
    }

    /// Rebuilds the rows where `mask` is set, from the leaves of
    /// [`SpanColumns::selected_leaves`]: identity, name, kind, times, status, resource and
    /// scope always; of the attributes those with a key in `keys` (all when `None`, then
    /// in their original order); events only when their leaves were read. Leaves that were
    /// not read are empty, which reads as "no entries".
    pub(crate) fn decode_selected(
        &self,
        tables: &SharedTables,
        mask: &[bool],
        keys: Option<&[String]>,
    ) -> Result<Vec<Span>, FormatError> {
        let rows = self.rows();
        for (levels, what) in [
            (self.span_id.levels(), "span_id"),
            (self.parent_span_id.levels(), "parent_span_id"),
            (self.name.levels(), "name"),
            (self.kind.levels(), "kind"),
            (self.start.levels(), "start_time_unix_nano"),
            (self.duration.levels(), "duration_nanos"),
            (self.status_code.levels(), "status_code"),
            (self.status_message.levels(), "status_message"),
            (self.resource_ref.levels(), "resource_ref"),
            (self.scope_ref.levels(), "scope_ref"),
        ] {
            if levels != rows {
                return Err(FormatError::Malformed(what));
            }
        }
        if mask.len() != rows {
            return Err(FormatError::Malformed("row mask"));
        }
        let wanted = |key: &[u8]| keys.is_none_or(|keys| keys.iter().any(|k| k.as_bytes() == key));
        let mut status_message = self.status_message.cursor();
        let mut layout = self.attribute_layout.cursor();
        let mut dedicated_rows = DedicatedCursors::new(self);
        let mut attributes = self.attributes.cursor();
        let mut event_rows = EventCursors::new(self);
        let lookup = |table_len: usize, index: i32, what| {
            usize::try_from(index).ok().filter(|i| *i < table_len).ok_or(FormatError::BadReference {
                what,
                index,
                len: table_len,
            })
        };

        let mut spans = Vec::with_capacity(mask.iter().filter(|m| **m).count());
        for (row, &keep) in mask.iter().enumerate() {
            // Every cursor advances by one row whether or not the row is kept.
            let message = status_message.next().1;
            let dedicated = dedicated_rows.next_row(|key| keep && wanted(key.as_bytes()))?;
            let positions = layout.next().1;
            let list_rep = attributes.key.leaf.max_def;
            let mut generic = Vec::new();
            loop {
                let (_, entry) = attributes.next()?;
                let Some((key, value)) = entry else { break };
                if keep && wanted(key) {
                    generic.push(KeyValue { key: utf8(key)?, value: value.to_value()? });
                }
                if attributes.peek_rep() != Some(list_rep) {
                    break;
                }
            }
            let events = event_rows.next_row(keep)?;
            if !keep {
                continue;
            }
            let attributes = match (keys, positions) {
                (Some(keys), _) => by_key(keys, dedicated.into_iter().chain(generic)),
                (None, Some(raw)) => {
                    let positions: Vec<u32> =
                        postcard::from_bytes(raw.data()).map_err(|_| FormatError::Malformed("attribute_layout"))?;
                    place_at(dedicated, &positions, generic)?
                }
                (None, None) => {
                    let mut all = dedicated;
                    all.extend(generic);
                    all
                }
            };
            let start = self.start.values[row] as u64;
            let resource_ref = self.resource_ref.values[row];
            let scope_ref = self.scope_ref.values[row];
            spans.push(Span {
                trace_id: TraceId(fixed16(self.trace_id.values[row].data())?),
                span_id: SpanId(self.span_id.values[row] as u64),
                parent_span_id: SpanId(self.parent_span_id.values[row] as u64),
                name: utf8(self.name.values[row].data())?,
                kind: SpanKind::from_otlp(self.kind.values[row]),
                start_time_unix_nano: start,
                end_time_unix_nano: start.wrapping_add(self.duration.values[row] as u64),
                attributes,
                events,
                status: Status {
                    code: StatusCode::from_otlp(self.status_code.values[row]),
                    message: message.map(|s| utf8(s.data())).transpose()?.unwrap_or_default(),
                },
                resource: Arc::clone(&tables.resources[lookup(tables.resources.len(), resource_ref, "resource")?]),
                scope: Arc::clone(&tables.scopes[lookup(tables.scopes.len(), scope_ref, "scope")?]),
                ..Default::default()
            });
        }
        Ok(spans)
    }
}

/// The dedicated attribute columns of a row group, walked one row at a time.
struct DedicatedCursors<'a> {
    keys: &'a AttributeColumns,
    strs: Vec<Cursor<'a, ByteArray>>,
    ints: Vec<Cursor<'a, i64>>,
}

impl<'a> DedicatedCursors<'a> {
    fn new(columns: &'a SpanColumns) -> Self {
        DedicatedCursors {
            keys: &columns.attribute_columns,
            strs: columns.dedicated_str.iter().map(Leaf::cursor).collect(),
            ints: columns.dedicated_int.iter().map(Leaf::cursor).collect(),
        }
    }

    /// The next row's dedicated attributes whose key `keep` accepts, in column order.
    /// Every cursor advances one row either way.
    fn next_row(&mut self, keep: impl Fn(&str) -> bool) -> Result<Vec<KeyValue>, FormatError> {
        let (mut strs, mut ints) = (self.strs.iter_mut(), self.ints.iter_mut());
        let mut out = Vec::new();
        for i in 0..ATTRIBUTE_COLUMNS {
            let (str_value, int_value) = match AttributeColumns::ty(i) {
                DedicatedType::Str => (strs.next().and_then(|c| c.next().1), None),
                DedicatedType::Int => (None, ints.next().and_then(|c| c.next().1)),
            };
            if str_value.is_none() && int_value.is_none() {
                continue;
            }
            // An unused promoted column is all null; a value there names no key.
            let key = self.keys.key(i).ok_or(FormatError::Malformed("promoted attribute column"))?;
            if !keep(key) {
                continue;
            }
            let value = match (str_value, int_value) {
                (Some(b), _) => AttributeValue::String(utf8(b.data())?),
                (None, Some(v)) => AttributeValue::Int(*v),
                (None, None) => continue,
            };
            out.push(KeyValue { key: key.into(), value });
        }
        Ok(out)
    }
}

/// The event leaves of a row group, walked one row at a time.
struct EventCursors<'a> {
    time: Cursor<'a, i64>,
    name: Cursor<'a, ByteArray>,
    attributes: KvCursor<'a>,
    dropped: Cursor<'a, i32>,
}

impl<'a> EventCursors<'a> {
    fn new(columns: &'a SpanColumns) -> Self {
        EventCursors {
            time: columns.event_time.cursor(),
            name: columns.event_name.cursor(),
            attributes: columns.event_attributes.cursor(),
            dropped: columns.event_dropped.cursor(),
        }
    }

    /// The next row's events, built only when `keep`; the cursors advance one row either way.
    fn next_row(&mut self, keep: bool) -> Result<Vec<Event>, FormatError> {
        let mut events = Vec::new();
        loop {
            let (def, time) = self.time.next();
            let name = self.name.next().1;
            let attrs = self.attributes.read_list()?;
            let dropped = self.dropped.next().1;
            if def == 0 {
                break;
            }
            if keep {
                events.push(Event {
                    time_unix_nano: time.copied().ok_or(FormatError::Malformed("events.time_unix_nano"))? as u64,
                    name: utf8(name.ok_or(FormatError::Malformed("events.name"))?.data())?,
                    attributes: attrs,
                    dropped_attributes_count: dropped.copied().unwrap_or(0) as u32,
                });
            }
            if self.time.peek_rep() != Some(1) {
                break;
            }
        }
        Ok(events)
    }
}

/// What [`SpanColumns::decode_selected`] would return for `span` had it been written to a
/// block: the same fields, the same attributes in the same order. Lets spans held in
/// memory be compared with spans read back from blocks.
pub(crate) fn project(span: &Span, keys: Option<&[String]>, events: bool) -> Span {
    let attributes = match keys {
        None => span.attributes.clone(),
        Some(keys) => by_key(keys, span.attributes.iter().cloned()),
    };
    Span {
        trace_id: span.trace_id,
        span_id: span.span_id,
        parent_span_id: span.parent_span_id,
        name: span.name.clone(),
        kind: span.kind,
        start_time_unix_nano: span.start_time_unix_nano,
        end_time_unix_nano: span.end_time_unix_nano,
        attributes,
        events: if events { span.events.clone() } else { Vec::new() },
        status: span.status.clone(),
        resource: Arc::clone(&span.resource),
        scope: Arc::clone(&span.scope),
        ..Default::default()
    }
}

/// The attributes with a key in `keys`, key by key in the order of `keys` (a key named twice
/// counts once), each key's attributes in the order they come. Blocks store the first
/// attribute of a key in a column and the rest in a list, which columns differ from block
/// to block, so this is the order a projected read gives whatever block it comes from: a
/// key's column value, when there is one, is its first attribute.
fn by_key(keys: &[String], attributes: impl Iterator<Item = KeyValue>) -> Vec<KeyValue> {
    let mut attributes: Vec<Option<KeyValue>> = attributes.map(Some).collect();
    let mut out = Vec::with_capacity(attributes.len());
    for (i, key) in keys.iter().enumerate() {
        if keys[..i].contains(key) {
            continue;
        }
        for slot in attributes.iter_mut() {
            if slot.as_ref().is_some_and(|kv| kv.key == *key) {
                out.extend(slot.take());
            }
        }
    }
    out
}

/// Puts `placed[i]` at index `positions[i]` and fills the other indexes with `rest` in order.
fn place_at(placed: Vec<KeyValue>, positions: &[u32], rest: Vec<KeyValue>) -> Result<Vec<KeyValue>, FormatError> {
    let total = placed.len() + rest.len();
    if positions.len() != placed.len() {
        return Err(FormatError::Malformed("attribute_layout"));
    }
    let mut slots: Vec<Option<KeyValue>> = (0..total).map(|_| None).collect();
    for (kv, &p) in placed.into_iter().zip(positions) {
        let slot = slots.get_mut(p as usize).ok_or(FormatError::Malformed("attribute_layout"))?;
        *slot = Some(kv);
    }
    let mut rest = rest.into_iter();
    slots.into_iter().map(|s| s.or_else(|| rest.next()).ok_or(FormatError::Malformed("attribute_layout"))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn odd_span() -> Span {
        let mut span = crate::generator::Generator::new(3, 1_000).batch(1).remove(4);
        span.end_time_unix_nano = span.start_time_unix_nano - 5;
        span.trace_state = "k=v".into();
        span.attributes.insert(0, KeyValue::new("nan", AttributeValue::Double(f64::NAN)));
        span.attributes.push(KeyValue::string("http.route", "second occurrence"));
        span.attributes.push(KeyValue::new("http.request.method", AttributeValue::Int(3)));
        span.attributes.push(KeyValue::new(
            "nested",
            AttributeValue::Map(vec![KeyValue::new(
                "a",
                AttributeValue::Array(vec![AttributeValue::Bytes(vec![1, 2])]),
            )]),
        ));
        span.events.push(Event { time_unix_nano: 9, name: "no attrs".into(), ..Default::default() });
        span.links.push(Link {
            trace_id: TraceId(77),
            span_id: SpanId(78),
            trace_state: "a=b".into(),
            attributes: vec![KeyValue::new("w", AttributeValue::Bool(false))],
            dropped_attributes_count: 2,
            flags: 1,
        });
        span.links.push(Link { trace_id: TraceId(79), ..Default::default() });
        span.dropped_links_count = 4;
        span
    }

    #[test]
    fn spans_round_trip_through_columns() {
        let mut spans = crate::generator::Generator::new(1, 1_000).batch(20);
        spans.push(odd_span());
        spans.push(Span::default());
        let mut columns = SpanColumns::new();
        let mut tables = SharedTables::default();
        for s in &spans {
            columns.push(s, &mut tables, &mut KeyMemo::default(), None);
        }
        let back = columns.decode(&tables).unwrap();
        assert_eq!(back.len(), spans.len());
        for (a, b) in back.iter().zip(&spans) {
            // NaN != NaN, so compare the encodings for the one span that has it.
            assert_eq!(postcard::to_stdvec(a).unwrap(), postcard::to_stdvec(b).unwrap());
        }
        assert_eq!(tables.resources.len(), 6);
    }

    #[test]
    fn promoted_columns_round_trip_and_projections_do_not_depend_on_them() {
        let mut spans = crate::generator::Generator::new(2, 1_000).batch(20);
        // The first `symbol` an int: no column value, both stay in the list, in order.
        spans[0].attributes.insert(0, KeyValue::new("symbol", AttributeValue::Int(9)));
        // A second `symbol` after the string one: the first goes to the column, this to the list.
        spans[1].attributes.push(KeyValue::string("symbol", "again"));
        spans[2].attributes.retain(|kv| kv.key != "symbol");
        spans.push(odd_span());
        let promoted = AttributeColumns::choose(&spans);
        assert!(promoted.promoted().contains(&"symbol".to_string()), "{promoted:?}");
        let symbol_column = promoted.index("symbol").unwrap();
        let mut columns = SpanColumns::new();
        columns.attribute_columns = Arc::new(promoted);
        let mut tables = SharedTables::default();
        for s in &spans {
            columns.push(s, &mut tables, &mut KeyMemo::default(), None);
        }
        let back = columns.decode(&tables).unwrap();
        for (a, b) in back.iter().zip(&spans) {
            assert_eq!(postcard::to_stdvec(a).unwrap(), postcard::to_stdvec(b).unwrap());
        }
        let leaf = &columns.dedicated_str[AttributeColumns::position(symbol_column)];
        assert_eq!(leaf.values.len(), spans.len() - 2, "every span but the int one and the one without");
        assert_eq!(leaf.def[..3], [0, 1, 0]);

        // A projected read gives what `project` gives for the span in memory, whichever
        // keys the block promoted.
        let keys: Vec<String> = ["symbol", "http.route", "nan", "symbol"].map(String::from).to_vec();
        let mask = vec![true; spans.len()];
        let selected = columns.decode_selected(&tables, &mask, Some(&keys)).unwrap();
        let plain = {
            let mut plain = SpanColumns::new();
            let mut tables = SharedTables::default();
            spans.iter().for_each(|s| plain.push(s, &mut tables, &mut KeyMemo::default(), None));
            plain.decode_selected(&tables, &mask, Some(&keys)).unwrap()
        };
        for ((a, b), span) in selected.iter().zip(&plain).zip(&spans) {
            let want = project(span, Some(&keys), true);
            assert_eq!(postcard::to_stdvec(a).unwrap(), postcard::to_stdvec(&want).unwrap());
            assert_eq!(postcard::to_stdvec(b).unwrap(), postcard::to_stdvec(&want).unwrap());
        }
        assert_eq!(selected[1].attributes.iter().filter(|kv| kv.key == "symbol").count(), 2);
    }

    #[test]
    fn promotion_takes_common_string_keys_most_frequent_first() {
        let span = |keys: &[&str]| Span {
            attributes: keys.iter().map(|k| KeyValue::string(*k, "v")).collect(),
            ..Default::default()
        };
        let mut spans: Vec<Span> = (0..100).map(|_| span(&["a", "b", "http.route"])).collect();
        spans.extend((0..10).map(|_| span(&["c"])));
        spans.extend((0..3).map(|_| span(&["rare"])));
        spans.push(Span { attributes: vec![KeyValue::new("n", AttributeValue::Int(1)); 50], ..Default::default() });
        let chosen = AttributeColumns::choose(&spans);
        // `http.route` has a dedicated column; ints are not promoted; `rare` is under 1 in 20.
        assert_eq!(chosen.promoted(), ["a", "b", "c"]);
        let many: Vec<Span> = (0..20).map(|i| span(&[&format!("k{i:02}")])).collect();
        assert_eq!(AttributeColumns::choose(&many).promoted().len(), PROMOTED.len());
        let merged = AttributeColumns::merge([
            (&["x".to_string(), "y".to_string()][..], 10),
            (&["y".to_string()][..], 100),
            (&[][..], 1000),
        ]);
        assert_eq!(merged.promoted(), ["y"], "x holds 10 of 1110 spans");
    }

    #[test]
    fn leaf_names_follow_the_schema() {
        let schema = parquet::schema::parser::parse_message_type(&schema_text()).unwrap();
        let descr = parquet::schema::types::SchemaDescriptor::new(Arc::new(schema));
        let columns = SpanColumns::new();
        let leaves = columns.leaves();
        assert_eq!(descr.num_columns(), leaves.len());
        for (i, (name, _)) in leaves.iter().enumerate() {
            assert_eq!(&descr.column(i).path().string(), name);
        }
    }
}
