//! Encoding: [`SpanColumns::push`] appends a span as a row — hot fields as plain columns,
//! the first attribute of each dedicated or promoted key in its column, the rest in the
//! generic key/value lists, events and links as nested lists, resource and scope interned
//! in the shared tables. Writer-side only.

use parquet::data_type::{ByteArray, FixedLenByteArray};
use spindle_model::{AttributeValue, KeyValue, Span};

use super::arena::PushBuffers;
use super::{AttributeColumns, DedicatedType, KvLeaves, Leaf, LeafMut, SharedTables, SpanColumns, ATTRIBUTE_COLUMNS};

impl KvLeaves {
    /// One level meaning "no entry here": an empty list (`def == key_def - 1`) or an absent
    /// parent (lower).
    pub(super) fn push_empty(&mut self, def: i16, rep: i16) {
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

impl SpanColumns {
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
        self.resource_ref.push_required(tables.intern_resource(&span.resource));
        self.scope_ref.push_required(tables.intern_scope(&span.scope));

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
}
