//! [`SpanColumns`]: every leaf of a block row group in schema order, and the schema-ordered
//! lists of them that the block reader and writer walk. Shape only; filling the leaves is
//! [`super::encode`]'s and reading spans back [`super::decode`]'s.

use std::sync::Arc;

use parquet::data_type::{ByteArray, FixedLenByteArray};

use super::arena::PushBuffers;
use super::{AttributeColumns, DedicatedType, KvLeaves, Leaf, ATTRIBUTE_COLUMNS};

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
    pub(super) buffers: PushBuffers,
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
}
