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
//! - [`schema`] — the message type and the attribute column names and types;
//! - [`promotion`] — which key each attribute column holds in a block (ADR 003);
//! - [`leaf`] — leaf buffers with their levels, key/value lists and their cursors;
//! - [`columns`] — [`SpanColumns`], every leaf of a row group in schema order;
//! - [`arena`] and [`tables`] — the writer's string chunks, the resource and scope tables;
//! - [`encode`] — a span into a row; [`decode`] — rows back into spans, whole or masked;
//! - [`project`] — which leaves a projected read needs, and what it gives for a span.
//!
//! Architecture Invariant: `decode(encode(spans)) == spans` for every span, including
//! attribute order, duplicate keys, NaN doubles, nested values and end-before-start times.

mod arena;
mod columns;
mod decode;
mod encode;
mod leaf;
mod project;
mod promotion;
mod schema;
mod tables;
#[cfg(test)]
mod tests;

pub(crate) use columns::{LeafMut, LeafRef, SpanColumns};
pub(crate) use encode::KeyMemo;
use leaf::{Cursor, KvCursor};
pub(crate) use leaf::{KvLeaves, Leaf, RawValue};
pub(crate) use project::project;
pub(crate) use promotion::AttributeColumns;
pub(crate) use schema::{schema_text, DedicatedType, ATTRIBUTE_LIST_LEAVES, PROMOTED, PROMOTED_KEYS_KEY};
use schema::{ATTRIBUTE_COLUMNS, DEDICATED};
pub(crate) use tables::SharedTables;

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
