//! Readers for the Apache Thrift binary and compact protocols, written from the protocol
//! specifications (`doc/specs/thrift-binary-protocol.md`, `thrift-compact-protocol.md`).
//!
//! This module owns the byte level only: message headers, field headers, scalars, strings
//! and container headers, plus skipping of values a caller does not know. It knows no IDL;
//! `jaeger_thrift` walks the Jaeger structs on top of it.
//!
//! Outside bytes drive every branch here, so the readers are defensive by construction:
//! - a declared length (string, binary, container) is checked against the bytes that
//!   remain before anything is sliced or allocated, and against [`Limits`];
//! - nesting (structs, containers) is counted and refused beyond [`Limits::max_depth`], so
//!   skipping unknown values recurses at most that deep;
//! - varints longer than their type allows are errors, not silent truncation;
//! - nothing panics: every error is a [`ThriftError`] naming what and at which byte.
//!
//! No thrift crate is used: the `thrift` crate's readers allocate from declared lengths
//! and its generated code needs the compiler at build time; what Jaeger needs is one
//! reader that we can fuzz and reason about in one place (docs/adr/006-jaeger-thrift-reader.md).

use std::fmt;

/// Bounds applied while reading; the defaults suit anything a tracing client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum depth of nested structs and containers.
    pub max_depth: usize,
    /// Maximum number of elements of one list, set or map.
    pub max_container_len: usize,
    /// Maximum length of one string or binary value.
    pub max_string_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_depth: 32, max_container_len: 1 << 20, max_string_len: 16 << 20 }
    }
}

/// Why thrift bytes could not be read; every variant names the byte offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThriftError {
    #[error("unexpected end of input at byte {offset} reading {what}")]
    Eof { offset: usize, what: &'static str },
    #[error("invalid {what} at byte {offset}: {detail}")]
    Invalid { offset: usize, what: &'static str, detail: String },
    #[error("{what} of length {len} at byte {offset} exceeds {limit}")]
    TooLarge { offset: usize, what: &'static str, len: u64, limit: u64 },
    #[error("nesting deeper than {limit} levels at byte {offset}")]
    TooDeep { offset: usize, limit: usize },
}

impl ThriftError {
    pub fn offset(&self) -> usize {
        match self {
            ThriftError::Eof { offset, .. }
            | ThriftError::Invalid { offset, .. }
            | ThriftError::TooLarge { offset, .. }
            | ThriftError::TooDeep { offset, .. } => *offset,
        }
    }
}

/// A thrift value type, independent of how a protocol numbers it on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TType {
    Bool,
    I8,
    I16,
    I32,
    I64,
    Double,
    Binary,
    Struct,
    Map,
    Set,
    List,
    Uuid,
}

impl fmt::Display for TType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            TType::Bool => "bool",
            TType::I8 => "i8",
            TType::I16 => "i16",
            TType::I32 => "i32",
            TType::I64 => "i64",
            TType::Double => "double",
            TType::Binary => "binary",
            TType::Struct => "struct",
            TType::Map => "map",
            TType::Set => "set",
            TType::List => "list",
            TType::Uuid => "uuid",
        };
        f.write_str(name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Call,
    Reply,
    Exception,
    Oneway,
}

impl MessageType {
    fn from_wire(value: u8) -> Option<Self> {
        Some(match value {
            1 => MessageType::Call,
            2 => MessageType::Reply,
            3 => MessageType::Exception,
            4 => MessageType::Oneway,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageHeader<'a> {
    pub name: &'a str,
    pub kind: MessageType,
    pub seq_id: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldHeader {
    pub id: i16,
    pub ttype: TType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListHeader {
    pub element: TType,
    pub len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapHeader {
    pub key: TType,
    pub value: TType,
    pub len: usize,
}

/// What both protocols offer a struct walker. Strings and binaries borrow from the input.
pub trait ProtocolReader<'a> {
    /// Byte offset of the next read, for error messages.
    fn offset(&self) -> usize;
    fn limits(&self) -> &Limits;
    fn read_message_begin(&mut self) -> Result<MessageHeader<'a>, ThriftError>;
    fn read_struct_begin(&mut self) -> Result<(), ThriftError>;
    fn read_struct_end(&mut self) -> Result<(), ThriftError>;
    /// The next field header, or `None` at the stop field.
    fn read_field_begin(&mut self) -> Result<Option<FieldHeader>, ThriftError>;
    fn read_bool(&mut self) -> Result<bool, ThriftError>;
    fn read_i8(&mut self) -> Result<i8, ThriftError>;
    fn read_i16(&mut self) -> Result<i16, ThriftError>;
    fn read_i32(&mut self) -> Result<i32, ThriftError>;
    fn read_i64(&mut self) -> Result<i64, ThriftError>;
    fn read_double(&mut self) -> Result<f64, ThriftError>;
    fn read_binary(&mut self) -> Result<&'a [u8], ThriftError>;
    fn read_uuid(&mut self) -> Result<[u8; 16], ThriftError>;
    /// Reads a list or set header and enters one nesting level; pair with
    /// [`ProtocolReader::read_container_end`].
    fn read_list_begin(&mut self) -> Result<ListHeader, ThriftError>;
    /// Reads a map header and enters one nesting level.
    fn read_map_begin(&mut self) -> Result<MapHeader, ThriftError>;
    fn read_container_end(&mut self);

    fn read_string(&mut self) -> Result<&'a str, ThriftError> {
        let offset = self.offset();
        let bytes = self.read_binary()?;
        std::str::from_utf8(bytes).map_err(|e| ThriftError::Invalid {
            offset,
            what: "string",
            detail: format!("not UTF-8: {e}"),
        })
    }

    /// Skips one value of type `ttype`. Recursion is bounded: every nested struct or
    /// container enters a level, and levels are capped by [`Limits::max_depth`].
    fn skip(&mut self, ttype: TType) -> Result<(), ThriftError> {
        match ttype {
            TType::Bool => self.read_bool().map(drop),
            TType::I8 => self.read_i8().map(drop),
            TType::I16 => self.read_i16().map(drop),
            TType::I32 => self.read_i32().map(drop),
            TType::I64 => self.read_i64().map(drop),
            TType::Double => self.read_double().map(drop),
            TType::Binary => self.read_binary().map(drop),
            TType::Uuid => self.read_uuid().map(drop),
            TType::Struct => {
                self.read_struct_begin()?;
                while let Some(field) = self.read_field_begin()? {
                    self.skip(field.ttype)?;
                }
                self.read_struct_end()
            }
            TType::List | TType::Set => {
                let header = self.read_list_begin()?;
                for _ in 0..header.len {
                    self.skip(header.element)?;
                }
                self.read_container_end();
                Ok(())
            }
            TType::Map => {
                let header = self.read_map_begin()?;
                for _ in 0..header.len {
                    self.skip(header.key)?;
                    self.skip(header.value)?;
                }
                self.read_container_end();
                Ok(())
            }
        }
    }
}

/// The byte cursor both readers share.
#[derive(Debug, Clone)]
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    depth: usize,
    limits: Limits,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8], limits: Limits) -> Self {
        Cursor { buf, pos: 0, depth: 0, limits }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ThriftError> {
        if n > self.remaining() {
            return Err(ThriftError::Eof { offset: self.pos, what });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn byte(&mut self, what: &'static str) -> Result<u8, ThriftError> {
        let b = *self.buf.get(self.pos).ok_or(ThriftError::Eof { offset: self.pos, what })?;
        self.pos += 1;
        Ok(b)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], ThriftError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn enter(&mut self) -> Result<(), ThriftError> {
        if self.depth >= self.limits.max_depth {
            return Err(ThriftError::TooDeep { offset: self.pos, limit: self.limits.max_depth });
        }
        self.depth += 1;
        Ok(())
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    /// Checks a declared byte length before it is sliced.
    fn checked_len(&self, len: i64, at: usize, what: &'static str) -> Result<usize, ThriftError> {
        if len < 0 {
            return Err(ThriftError::Invalid { offset: at, what, detail: format!("negative length {len}") });
        }
        let len = len as u64;
        if len > self.limits.max_string_len as u64 {
            return Err(ThriftError::TooLarge { offset: at, what, len, limit: self.limits.max_string_len as u64 });
        }
        if len > self.remaining() as u64 {
            return Err(ThriftError::TooLarge { offset: at, what, len, limit: self.remaining() as u64 });
        }
        Ok(len as usize)
    }

    /// Checks a declared element count. Every element takes at least one byte in both
    /// protocols, so a count beyond the remaining bytes is a lie told to make us allocate.
    fn checked_count(&self, len: i64, at: usize, what: &'static str) -> Result<usize, ThriftError> {
        if len < 0 {
            return Err(ThriftError::Invalid { offset: at, what, detail: format!("negative size {len}") });
        }
        let len = len as u64;
        let limit = self.limits.max_container_len.min(self.remaining()) as u64;
        if len > limit {
            return Err(ThriftError::TooLarge { offset: at, what, len, limit });
        }
        Ok(len as usize)
    }
}

// ---- binary protocol ----

/// Reader of the thrift binary protocol (big-endian, fixed-width).
#[derive(Debug, Clone)]
pub struct BinaryReader<'a> {
    cur: Cursor<'a>,
}

impl<'a> BinaryReader<'a> {
    pub fn new(buf: &'a [u8], limits: Limits) -> Self {
        BinaryReader { cur: Cursor::new(buf, limits) }
    }

    pub fn is_at_end(&self) -> bool {
        self.cur.remaining() == 0
    }

    fn ttype(&self, code: u8, at: usize) -> Result<TType, ThriftError> {
        Ok(match code {
            2 => TType::Bool,
            3 => TType::I8,
            4 => TType::Double,
            6 => TType::I16,
            8 => TType::I32,
            10 => TType::I64,
            11 => TType::Binary,
            12 => TType::Struct,
            13 => TType::Map,
            14 => TType::Set,
            15 => TType::List,
            16 => TType::Uuid,
            other => {
                return Err(ThriftError::Invalid {
                    offset: at,
                    what: "type id",
                    detail: format!("unknown type {other}"),
                })
            }
        })
    }
}

impl<'a> ProtocolReader<'a> for BinaryReader<'a> {
    fn offset(&self) -> usize {
        self.cur.pos
    }

    fn limits(&self) -> &Limits {
        &self.cur.limits
    }

    fn read_message_begin(&mut self) -> Result<MessageHeader<'a>, ThriftError> {
        let at = self.cur.pos;
        let first = self.read_i32()?;
        let (name, kind_byte) = if first < 0 {
            // Strict: version word 0x8001 in the top half, message type in the low byte.
            let version = (first as u32) & 0xffff_0000;
            if version != 0x8001_0000 {
                return Err(ThriftError::Invalid {
                    offset: at,
                    what: "message header",
                    detail: format!("bad version word {:#010x}", first as u32),
                });
            }
            let kind = (first & 0xff) as u8;
            (self.read_string()?, kind)
        } else {
            // Old (non-strict) form: the first word is the name's length.
            let len = self.cur.checked_len(i64::from(first), at, "message name")?;
            let bytes = self.cur.take(len, "message name")?;
            let name = std::str::from_utf8(bytes).map_err(|e| ThriftError::Invalid {
                offset: at,
                what: "message name",
                detail: format!("not UTF-8: {e}"),
            })?;
            (name, self.cur.byte("message type")?)
        };
        let kind = MessageType::from_wire(kind_byte).ok_or_else(|| ThriftError::Invalid {
            offset: at,
            what: "message type",
            detail: format!("unknown message type {kind_byte}"),
        })?;
        let seq_id = self.read_i32()?;
        Ok(MessageHeader { name, kind, seq_id })
    }

    fn read_struct_begin(&mut self) -> Result<(), ThriftError> {
        self.cur.enter()
    }

    fn read_struct_end(&mut self) -> Result<(), ThriftError> {
        self.cur.leave();
        Ok(())
    }

    fn read_field_begin(&mut self) -> Result<Option<FieldHeader>, ThriftError> {
        let at = self.cur.pos;
        let code = self.cur.byte("field type")?;
        if code == 0 {
            return Ok(None);
        }
        let ttype = self.ttype(code, at)?;
        let id = self.read_i16()?;
        Ok(Some(FieldHeader { id, ttype }))
    }

    fn read_bool(&mut self) -> Result<bool, ThriftError> {
        Ok(self.cur.byte("bool")? != 0)
    }

    fn read_i8(&mut self) -> Result<i8, ThriftError> {
        Ok(self.cur.byte("i8")? as i8)
    }

    fn read_i16(&mut self) -> Result<i16, ThriftError> {
        Ok(i16::from_be_bytes(self.cur.array("i16")?))
    }

    fn read_i32(&mut self) -> Result<i32, ThriftError> {
        Ok(i32::from_be_bytes(self.cur.array("i32")?))
    }

    fn read_i64(&mut self) -> Result<i64, ThriftError> {
        Ok(i64::from_be_bytes(self.cur.array("i64")?))
    }

    fn read_double(&mut self) -> Result<f64, ThriftError> {
        Ok(f64::from_bits(u64::from_be_bytes(self.cur.array("double")?)))
    }

    fn read_binary(&mut self) -> Result<&'a [u8], ThriftError> {
        let at = self.cur.pos;
        let len = self.read_i32()?;
        let len = self.cur.checked_len(i64::from(len), at, "binary")?;
        self.cur.take(len, "binary")
    }

    fn read_uuid(&mut self) -> Result<[u8; 16], ThriftError> {
        self.cur.array("uuid")
    }

    fn read_list_begin(&mut self) -> Result<ListHeader, ThriftError> {
        let at = self.cur.pos;
        let code = self.cur.byte("list element type")?;
        let element = self.ttype(code, at)?;
        let len = self.read_i32()?;
        let len = self.cur.checked_count(i64::from(len), at, "list")?;
        self.cur.enter()?;
        Ok(ListHeader { element, len })
    }

    fn read_map_begin(&mut self) -> Result<MapHeader, ThriftError> {
        let at = self.cur.pos;
        let key = self.cur.byte("map key type")?;
        let value = self.cur.byte("map value type")?;
        let len = self.read_i32()?;
        let len = self.cur.checked_count(i64::from(len), at, "map")?;
        // Empty maps may carry any type bytes; only check them when elements follow.
        let (key, value) =
            if len == 0 { (TType::Bool, TType::Bool) } else { (self.ttype(key, at)?, self.ttype(value, at + 1)?) };
        self.cur.enter()?;
        Ok(MapHeader { key, value, len })
    }

    fn read_container_end(&mut self) {
        self.cur.leave();
    }
}

// ---- compact protocol ----

const COMPACT_PROTOCOL_ID: u8 = 0x82;
const COMPACT_VERSION: u8 = 1;

/// Reader of the thrift compact protocol (zigzag varints, delta field ids, booleans
/// folded into field headers, little-endian doubles).
#[derive(Debug, Clone)]
pub struct CompactReader<'a> {
    cur: Cursor<'a>,
    /// Field id of the previous field of each open struct; the top is the current one.
    last_field_ids: Vec<i16>,
    last_field_id: i16,
    /// A bool field's value travels in its header; it is handed out by the next read_bool.
    pending_bool: Option<bool>,
}

impl<'a> CompactReader<'a> {
    pub fn new(buf: &'a [u8], limits: Limits) -> Self {
        CompactReader {
            cur: Cursor::new(buf, limits),
            last_field_ids: Vec::new(),
            last_field_id: 0,
            pending_bool: None,
        }
    }

    pub fn is_at_end(&self) -> bool {
        self.cur.remaining() == 0
    }

    fn varint(&mut self, max_bytes: usize, what: &'static str) -> Result<u64, ThriftError> {
        let at = self.cur.pos;
        let mut value: u64 = 0;
        for i in 0..max_bytes {
            let b = self.cur.byte(what)?;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ThriftError::Invalid { offset: at, what, detail: format!("varint longer than {max_bytes} bytes") })
    }

    fn zigzag32(&mut self, what: &'static str) -> Result<i32, ThriftError> {
        let at = self.cur.pos;
        let raw = self.varint(5, what)?;
        let raw = u32::try_from(raw).map_err(|_| ThriftError::Invalid {
            offset: at,
            what,
            detail: format!("varint {raw} does not fit in 32 bits"),
        })?;
        Ok(((raw >> 1) as i32) ^ -((raw & 1) as i32))
    }

    fn zigzag64(&mut self, what: &'static str) -> Result<i64, ThriftError> {
        let raw = self.varint(10, what)?;
        Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
    }

    /// An unsigned 32-bit varint used for sizes and lengths.
    fn size(&mut self, what: &'static str) -> Result<i64, ThriftError> {
        let at = self.cur.pos;
        let raw = self.varint(5, what)?;
        i32::try_from(raw).map(i64::from).map_err(|_| ThriftError::Invalid {
            offset: at,
            what,
            detail: format!("size {raw} does not fit in a signed 32-bit integer"),
        })
    }

    fn element_type(&self, code: u8, at: usize) -> Result<TType, ThriftError> {
        Ok(match code {
            // The specification says 2 for bool elements; some writers use 1 (BOOLEAN_TRUE).
            1 | 2 => TType::Bool,
            3 => TType::I8,
            4 => TType::I16,
            5 => TType::I32,
            6 => TType::I64,
            7 => TType::Double,
            8 => TType::Binary,
            9 => TType::List,
            10 => TType::Set,
            11 => TType::Map,
            12 => TType::Struct,
            13 => TType::Uuid,
            other => {
                return Err(ThriftError::Invalid {
                    offset: at,
                    what: "element type",
                    detail: format!("unknown compact type {other}"),
                })
            }
        })
    }
}

impl<'a> ProtocolReader<'a> for CompactReader<'a> {
    fn offset(&self) -> usize {
        self.cur.pos
    }

    fn limits(&self) -> &Limits {
        &self.cur.limits
    }

    fn read_message_begin(&mut self) -> Result<MessageHeader<'a>, ThriftError> {
        let at = self.cur.pos;
        let protocol = self.cur.byte("protocol id")?;
        if protocol != COMPACT_PROTOCOL_ID {
            return Err(ThriftError::Invalid {
                offset: at,
                what: "protocol id",
                detail: format!("expected {COMPACT_PROTOCOL_ID:#04x}, found {protocol:#04x}"),
            });
        }
        let type_and_version = self.cur.byte("message type and version")?;
        let version = type_and_version & 0x1f;
        if version != COMPACT_VERSION {
            return Err(ThriftError::Invalid {
                offset: at + 1,
                what: "compact protocol version",
                detail: format!("expected {COMPACT_VERSION}, found {version}"),
            });
        }
        let kind_byte = type_and_version >> 5;
        let kind = MessageType::from_wire(kind_byte).ok_or_else(|| ThriftError::Invalid {
            offset: at + 1,
            what: "message type",
            detail: format!("unknown message type {kind_byte}"),
        })?;
        let seq_at = self.cur.pos;
        let seq = self.varint(5, "sequence id")?;
        let seq_id = u32::try_from(seq).map(|s| s as i32).map_err(|_| ThriftError::Invalid {
            offset: seq_at,
            what: "sequence id",
            detail: format!("{seq} does not fit in 32 bits"),
        })?;
        let name = self.read_string()?;
        Ok(MessageHeader { name, kind, seq_id })
    }

    fn read_struct_begin(&mut self) -> Result<(), ThriftError> {
        self.cur.enter()?;
        self.last_field_ids.push(self.last_field_id);
        self.last_field_id = 0;
        Ok(())
    }

    fn read_struct_end(&mut self) -> Result<(), ThriftError> {
        self.cur.leave();
        self.last_field_id = self.last_field_ids.pop().unwrap_or(0);
        Ok(())
    }

    fn read_field_begin(&mut self) -> Result<Option<FieldHeader>, ThriftError> {
        let at = self.cur.pos;
        let header = self.cur.byte("field header")?;
        if header == 0 {
            return Ok(None);
        }
        let code = header & 0x0f;
        let delta = header >> 4;
        let id = if delta == 0 {
            let id = self.zigzag32("field id")?;
            i16::try_from(id).map_err(|_| ThriftError::Invalid {
                offset: at,
                what: "field id",
                detail: format!("{id} does not fit in 16 bits"),
            })?
        } else {
            self.last_field_id.checked_add(i16::from(delta)).ok_or_else(|| ThriftError::Invalid {
                offset: at,
                what: "field id",
                detail: "delta overflows 16 bits".to_string(),
            })?
        };
        self.last_field_id = id;
        let ttype = match code {
            1 => {
                self.pending_bool = Some(true);
                TType::Bool
            }
            2 => {
                self.pending_bool = Some(false);
                TType::Bool
            }
            other => self.element_type(other, at)?,
        };
        Ok(Some(FieldHeader { id, ttype }))
    }

    fn read_bool(&mut self) -> Result<bool, ThriftError> {
        if let Some(b) = self.pending_bool.take() {
            return Ok(b);
        }
        let at = self.cur.pos;
        match self.cur.byte("bool")? {
            1 => Ok(true),
            0 | 2 => Ok(false),
            other => Err(ThriftError::Invalid { offset: at, what: "bool", detail: format!("byte {other}") }),
        }
    }

    fn read_i8(&mut self) -> Result<i8, ThriftError> {
        Ok(self.cur.byte("i8")? as i8)
    }

    fn read_i16(&mut self) -> Result<i16, ThriftError> {
        let at = self.cur.pos;
        let v = self.zigzag32("i16")?;
        i16::try_from(v).map_err(|_| ThriftError::Invalid {
            offset: at,
            what: "i16",
            detail: format!("{v} out of range"),
        })
    }

    fn read_i32(&mut self) -> Result<i32, ThriftError> {
        self.zigzag32("i32")
    }

    fn read_i64(&mut self) -> Result<i64, ThriftError> {
        self.zigzag64("i64")
    }

    fn read_double(&mut self) -> Result<f64, ThriftError> {
        // Little-endian: an early implementation's choice that became the standard.
        Ok(f64::from_bits(u64::from_le_bytes(self.cur.array("double")?)))
    }

    fn read_binary(&mut self) -> Result<&'a [u8], ThriftError> {
        let at = self.cur.pos;
        let len = self.size("binary length")?;
        let len = self.cur.checked_len(len, at, "binary")?;
        self.cur.take(len, "binary")
    }

    fn read_uuid(&mut self) -> Result<[u8; 16], ThriftError> {
        self.cur.array("uuid")
    }

    fn read_list_begin(&mut self) -> Result<ListHeader, ThriftError> {
        let at = self.cur.pos;
        let header = self.cur.byte("list header")?;
        let element = self.element_type(header & 0x0f, at)?;
        let short = i64::from(header >> 4);
        let len = if short == 15 { self.size("list size")? } else { short };
        let len = self.cur.checked_count(len, at, "list")?;
        self.cur.enter()?;
        Ok(ListHeader { element, len })
    }

    fn read_map_begin(&mut self) -> Result<MapHeader, ThriftError> {
        let at = self.cur.pos;
        let len = self.size("map size")?;
        let len = self.cur.checked_count(len, at, "map")?;
        let (key, value) = if len == 0 {
            (TType::Bool, TType::Bool)
        } else {
            let types_at = self.cur.pos;
            let types = self.cur.byte("map types")?;
            (self.element_type(types >> 4, types_at)?, self.element_type(types & 0x0f, types_at)?)
        };
        self.cur.enter()?;
        Ok(MapHeader { key, value, len })
    }

    fn read_container_end(&mut self) {
        self.cur.leave();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_varint_example_from_the_specification() {
        // 50399 = 0xDF 0x89 0x03 as a plain varint; as a zigzag i32 that is -25200.
        let bytes = [0xdf, 0x89, 0x03];
        let mut r = CompactReader::new(&bytes, Limits::default());
        assert_eq!(r.read_i32().unwrap(), -25200);
        let mut r = CompactReader::new(&bytes, Limits::default());
        assert_eq!(r.varint(5, "x").unwrap(), 50399);
    }

    #[test]
    fn compact_field_headers_use_deltas_and_carry_booleans() {
        // struct { 1: true, 3: i32 = -1, 20: string "ab" } stop
        let bytes = [0x11, 0x25, 0x01, 0x08, 0x28, 0x02, b'a', b'b', 0x00];
        let mut r = CompactReader::new(&bytes, Limits::default());
        r.read_struct_begin().unwrap();
        assert_eq!(r.read_field_begin().unwrap(), Some(FieldHeader { id: 1, ttype: TType::Bool }));
        assert!(r.read_bool().unwrap());
        assert_eq!(r.read_field_begin().unwrap(), Some(FieldHeader { id: 3, ttype: TType::I32 }));
        assert_eq!(r.read_i32().unwrap(), -1);
        assert_eq!(r.read_field_begin().unwrap(), Some(FieldHeader { id: 20, ttype: TType::Binary }));
        assert_eq!(r.read_string().unwrap(), "ab");
        assert_eq!(r.read_field_begin().unwrap(), None);
        r.read_struct_end().unwrap();
        assert!(r.is_at_end());
    }

    #[test]
    fn binary_strict_and_old_message_headers() {
        let mut strict = vec![0x80, 0x01, 0x00, 0x04, 0, 0, 0, 9];
        strict.extend_from_slice(b"emitBatch");
        strict.extend_from_slice(&7i32.to_be_bytes());
        let h = BinaryReader::new(&strict, Limits::default()).read_message_begin().unwrap();
        assert_eq!(h, MessageHeader { name: "emitBatch", kind: MessageType::Oneway, seq_id: 7 });

        let mut old = vec![0, 0, 0, 9];
        old.extend_from_slice(b"emitBatch");
        old.push(4);
        old.extend_from_slice(&1i32.to_be_bytes());
        let h = BinaryReader::new(&old, Limits::default()).read_message_begin().unwrap();
        assert_eq!(h, MessageHeader { name: "emitBatch", kind: MessageType::Oneway, seq_id: 1 });
    }

    #[test]
    fn huge_declared_lengths_are_refused_before_allocation() {
        let bytes = [0x7f, 0xff, 0xff, 0xff, b'x'];
        let err = BinaryReader::new(&bytes, Limits::default()).read_binary().unwrap_err();
        assert!(matches!(err, ThriftError::TooLarge { what: "binary", len: 2_147_483_647, .. }), "{err}");
        let list = [0x0c, 0x7f, 0xff, 0xff, 0xff];
        let err = BinaryReader::new(&list, Limits::default()).read_list_begin().unwrap_err();
        assert!(matches!(err, ThriftError::TooLarge { what: "list", .. }), "{err}");
        let compact_list = [0xfc, 0xff, 0xff, 0xff, 0xff, 0x07];
        let err = CompactReader::new(&compact_list, Limits::default()).read_list_begin().unwrap_err();
        assert!(err.to_string().contains("list of length 2147483647"), "{err}");
        let negative = [0xff, 0xff, 0xff, 0xfe];
        let err = BinaryReader::new(&negative, Limits::default()).read_binary().unwrap_err();
        assert!(err.to_string().contains("negative length -2"), "{err}");
    }

    #[test]
    fn deep_nesting_is_refused_while_skipping() {
        // A struct whose field 1 is a struct whose field 1 is a struct ... (compact: 0x1c).
        let bytes = vec![0x1c; 10_000];
        let mut r = CompactReader::new(&bytes, Limits::default());
        let err = r.skip(TType::Struct).unwrap_err();
        assert!(matches!(err, ThriftError::TooDeep { limit: 32, .. }), "{err}");
        // Nested lists of lists in the binary protocol.
        let mut bytes = Vec::new();
        for _ in 0..1000 {
            bytes.extend_from_slice(&[0x0f, 0, 0, 0, 1]);
        }
        let err = BinaryReader::new(&bytes, Limits::default()).skip(TType::List).unwrap_err();
        assert!(matches!(err, ThriftError::TooDeep { .. }), "{err}");
    }

    #[test]
    fn overlong_varints_and_bad_headers_are_errors() {
        let bytes = [0xff; 11];
        let err = CompactReader::new(&bytes, Limits::default()).read_i64().unwrap_err();
        assert!(err.to_string().contains("varint longer than 10 bytes"), "{err}");
        let err = CompactReader::new(&[0x81, 0x81], Limits::default()).read_message_begin().unwrap_err();
        assert!(err.to_string().contains("protocol id"), "{err}");
        let err = BinaryReader::new(&[0x80, 0x02, 0, 1], Limits::default()).read_message_begin().unwrap_err();
        assert!(err.to_string().contains("bad version word"), "{err}");
        let err = BinaryReader::new(&[0x05, 0, 1], Limits::default()).read_field_begin().unwrap_err();
        assert!(err.to_string().contains("unknown type 5"), "{err}");
    }

    #[test]
    fn compact_doubles_are_little_endian() {
        let bytes = 0.25f64.to_bits().to_le_bytes();
        assert_eq!(CompactReader::new(&bytes, Limits::default()).read_double().unwrap(), 0.25);
        let bytes = 0.25f64.to_bits().to_be_bytes();
        assert_eq!(BinaryReader::new(&bytes, Limits::default()).read_double().unwrap(), 0.25);
    }
}
