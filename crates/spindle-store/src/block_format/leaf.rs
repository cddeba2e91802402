//! Column buffers as Parquet's low-level API reads and writes them: one leaf's values with
//! its definition and repetition levels ([`Leaf`]), the seven leaves of a typed key/value
//! list ([`KvLeaves`]), and cursors that walk them level by level, giving list entries raw
//! ([`RawValue`]) so scans can test them without building attributes. No span mapping here.

use parquet::data_type::ByteArray;
use spindle_model::{AttributeValue, KeyValue};

use super::{utf8, FormatError};

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
    pub(super) fn push(&mut self, def: i16, rep: i16, value: Option<T>, repeated: bool) {
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

    pub(super) fn push_required(&mut self, value: T) {
        self.values.push(value);
    }

    pub(super) fn push_optional(&mut self, value: Option<T>) {
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

    /// Reads one list whole.
    pub(super) fn read_list(&mut self) -> Result<Vec<KeyValue>, FormatError> {
        self.read_list_where(|_| true)
    }

    /// Reads one list, building only the entries whose key `keep` accepts (the cursors
    /// pass the others all the same).
    pub(super) fn read_list_where(&mut self, keep: impl Fn(&[u8]) -> bool) -> Result<Vec<KeyValue>, FormatError> {
        let mut out = Vec::new();
        // Keys are required inside a repeated group, so every list level adds one definition
        // and one repetition level: a key's max_def is also its list's repetition level.
        let list_rep = self.key.leaf.max_def;
        loop {
            let (_, entry) = self.next()?;
            let Some((key, value)) = entry else { break };
            if keep(key) {
                out.push(KeyValue { key: utf8(key)?, value: value.to_value()? });
            }
            if self.peek_rep() != Some(list_rep) {
                break;
            }
        }
        Ok(out)
    }
}
