//! Projection: which leaves a read of some attributes (and optionally events) needs, and
//! [`project`], what such a read gives for a span held in memory, so that spans from the
//! head and from blocks compare equal. Attribute order under a projection is decided here.

use std::sync::Arc;

use spindle_model::{KeyValue, Span};

use super::{AttributeColumns, SpanColumns, ATTRIBUTE_COLUMNS, ATTRIBUTE_LIST_LEAVES};

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
pub(super) fn by_key(keys: &[String], attributes: impl Iterator<Item = KeyValue>) -> Vec<KeyValue> {
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
