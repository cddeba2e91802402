//! Attribute promotion (ADR 003): which attribute key each attribute column of a block
//! holds — the fixed dedicated keys, then the string keys most of the block's spans carry,
//! chosen when a block is cut and merged when blocks are compacted. It decides keys only;
//! it must not touch column buffers.

use std::collections::HashMap;

use spindle_model::{AttributeValue, Span};

use super::{DedicatedType, DEDICATED, PROMOTED};

/// A key is promoted when at least one span in this many carries it as a string.
const PROMOTE_SHARE: u64 = 20;

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
    pub(super) fn key(&self, i: usize) -> Option<&str> {
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

fn dedicated_index(key: &str) -> Option<usize> {
    // Most keys differ in length from every dedicated key, so a cheap length test first
    // keeps this off the profile (it runs for every attribute of every span written).
    if !(7..=26).contains(&key.len()) {
        return None;
    }
    DEDICATED.iter().position(|(k, _, _)| k.len() == key.len() && *k == key)
}

#[cfg(test)]
mod tests {
    use spindle_model::KeyValue;

    use super::*;

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
}
