//! Decoding rows back into spans, on two paths: [`SpanColumns::decode`] rebuilds every row
//! whole from every leaf (compaction, whole traces), and [`SpanColumns::decode_selected`]
//! rebuilds the masked rows from only the leaves a projection read. Both restore the
//! original attribute order from `attribute_layout`; neither reads files.

use parquet::data_type::ByteArray;
use spindle_model::{AttributeValue, Event, KeyValue, Link, Span, SpanId, SpanKind, Status, StatusCode, TraceId};

use super::project::by_key;
use super::{
    fixed16, utf8, AttributeColumns, Cursor, DedicatedType, FormatError, KvCursor, Leaf, SharedTables, SpanColumns,
    ATTRIBUTE_COLUMNS,
};

impl SpanColumns {
    /// Rebuilds every row as a span.
    pub(crate) fn decode(&self, tables: &SharedTables) -> Result<Vec<Span>, FormatError> {
        let rows = self.rows();
        check_levels(rows, self.always_read_levels())?;
        check_levels(
            rows,
            [
                (self.service_name.levels(), "service_name"),
                (self.trace_state.levels(), "trace_state"),
                (self.flags.levels(), "flags"),
                (self.attribute_layout.levels(), "attribute_layout"),
                (self.dropped_attributes.levels(), "dropped_attributes_count"),
                (self.dropped_events.levels(), "dropped_events_count"),
                (self.dropped_links.levels(), "dropped_links_count"),
            ],
        )?;
        let dedicated = self.dedicated_str.iter().map(Leaf::levels).chain(self.dedicated_int.iter().map(Leaf::levels));
        check_levels(rows, dedicated.map(|levels| (levels, "dedicated attribute")))?;
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
            let attributes = original_order(dedicated, layout.next().1, generic)?;

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

            let resource = tables.resource(resource_ref)?;
            let scope = tables.scope(scope_ref)?;
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
        check_levels(rows, self.always_read_levels())?;
        if mask.len() != rows {
            return Err(FormatError::Malformed("row mask"));
        }
        let wanted = |key: &[u8]| keys.is_none_or(|keys| keys.iter().any(|k| k.as_bytes() == key));
        let mut status_message = self.status_message.cursor();
        let mut layout = self.attribute_layout.cursor();
        let mut dedicated_rows = DedicatedCursors::new(self);
        let mut attributes = self.attributes.cursor();
        let mut event_rows = EventCursors::new(self);

        let mut spans = Vec::with_capacity(mask.iter().filter(|m| **m).count());
        for (row, &keep) in mask.iter().enumerate() {
            // Every cursor advances by one row whether or not the row is kept.
            let message = status_message.next().1;
            let dedicated = dedicated_rows.next_row(|key| keep && wanted(key.as_bytes()))?;
            let positions = layout.next().1;
            let generic = attributes.read_list_where(|key| keep && wanted(key))?;
            let events = event_rows.next_row(keep)?;
            if !keep {
                continue;
            }
            let attributes = match keys {
                Some(keys) => by_key(keys, dedicated.into_iter().chain(generic)),
                None => original_order(dedicated, positions, generic)?,
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
                resource: tables.resource(resource_ref)?,
                scope: tables.scope(scope_ref)?,
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

impl SpanColumns {
    /// The leaves both decode paths read, as (levels, name).
    fn always_read_levels(&self) -> [(usize, &'static str); 10] {
        [
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
        ]
    }
}

/// Fails on the first leaf, given as (levels, name), that does not hold one level per row.
fn check_levels(rows: usize, leaves: impl IntoIterator<Item = (usize, &'static str)>) -> Result<(), FormatError> {
    match leaves.into_iter().find(|(levels, _)| *levels != rows) {
        Some((_, what)) => Err(FormatError::Malformed(what)),
        None => Ok(()),
    }
}

/// A row's attributes in their original order: the dedicated ones at the positions
/// `layout` holds (leading, in column order, when it is null), the generic ones filling
/// the gaps.
fn original_order(
    dedicated: Vec<KeyValue>,
    layout: Option<&ByteArray>,
    generic: Vec<KeyValue>,
) -> Result<Vec<KeyValue>, FormatError> {
    match layout {
        None => {
            let mut all = dedicated;
            all.extend(generic);
            Ok(all)
        }
        Some(raw) => {
            let positions: Vec<u32> =
                postcard::from_bytes(raw.data()).map_err(|_| FormatError::Malformed("attribute_layout"))?;
            place_at(dedicated, &positions, generic)
        }
    }
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
