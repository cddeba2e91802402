//! Column scans of one block: trace search with predicate pushdown, and the light spans the
//! dependency graph needs.
//!
//! A search prunes in three steps, cheapest first: the block's meta (time range, services,
//! attribute keys), each row group's meta (time and duration ranges), then the rows, reading
//! first the small numeric columns and only when some row survives them the key/value lists.
//! Matching is the same as [`TraceQuery::matches_span`] on the decoded span; the property tests
//! hold the two against each other.

use std::borrow::Cow;
use std::collections::HashMap;

use parquet::data_type::ByteArray;
use spindle_model::{semconv, AttributeValue, KeyValue, Span, SpanId, SpanKind, StatusCode, TraceId};

use crate::block::{recycle_columns, Block, BlockError, RowRange};
use crate::block_format::{
    AttributeColumns, DedicatedType, FormatError, KvLeaves, Leaf, RawValue, SpanColumns, ATTRIBUTE_LIST_LEAVES,
};
use crate::dict_column::DictColumn;
use crate::query::TraceQuery;
use crate::{RowFields, SpanFields, SpanRow, StoreError};

/// Threads one scan uses: the machine this is sized for has two cores. Callers of
/// `TraceStore::scan_rows_split` give this many visitors.
pub const SCAN_THREADS: usize = 2;

const DERIVED_TAGS: [&str; 6] = [
    semconv::JAEGER_SPAN_KIND,
    semconv::JAEGER_ERROR,
    semconv::JAEGER_STATUS_CODE,
    semconv::JAEGER_STATUS_DESCRIPTION,
    semconv::JAEGER_SCOPE_NAME,
    semconv::JAEGER_SCOPE_VERSION,
];

/// The attribute column of `block` holding `key` (dedicated or promoted): its position
/// among the leaves of its type, its path, and its type.
fn attribute_column(block: &Block, key: &str) -> Option<(usize, &'static str, DedicatedType)> {
    block
        .attribute_columns
        .index(key)
        .map(|i| (AttributeColumns::position(i), AttributeColumns::column(i), AttributeColumns::ty(i)))
}

/// The value leaves a search for `text` must read: a string never parses as a number or a
/// boolean, so for the usual textual value the int, double and bool leaves stay on disk.
fn value_leaves(text: &str) -> [bool; 6] {
    [true, text.parse::<i64>().is_ok(), text.parse::<f64>().is_ok(), text.parse::<bool>().is_ok(), true, true]
}

const KV_LEAVES: [&str; 7] = ["key", "str", "int", "double", "bool", "bytes", "complex"];

fn kv_paths(prefix: &str, texts: &[&str]) -> Vec<String> {
    let mut wanted = [false; 6];
    for text in texts {
        for (w, v) in wanted.iter_mut().zip(value_leaves(text)) {
            *w |= v;
        }
    }
    std::iter::once(true)
        .chain(wanted)
        .zip(KV_LEAVES)
        .filter(|(w, _)| *w)
        .map(|(_, leaf)| format!("{prefix}.{leaf}"))
        .collect()
}

/// Rows of `kv` (a list per row, possibly nested) holding `key` with a value that `text`
/// names, OR-ed into `out`. Leaves that were not read are empty and simply never match.
fn kv_list_matches(kv: &KvLeaves, key: &str, text: &str, out: &mut [bool]) -> Result<(), StoreError> {
    let (want_int, want_double, want_bool) =
        (text.parse::<i64>().ok(), text.parse::<f64>().ok(), text.parse::<bool>().ok());
    let mut keys = kv.key.cursor();
    let mut strs = kv.str.cursor();
    let mut ints = (want_int.is_some()).then(|| kv.int.cursor());
    let mut doubles = (want_double.is_some()).then(|| kv.double.cursor());
    let mut bools = (want_bool.is_some()).then(|| kv.bool.cursor());
    let mut bytes = kv.bytes.cursor();
    let mut complex = kv.complex.cursor();
    let mut row = usize::MAX;
    while let Some(rep) = keys.peek_rep() {
        let (_, k) = keys.next();
        let s = strs.next().1;
        let n = ints.as_mut().and_then(|c| c.next().1);
        let f = doubles.as_mut().and_then(|c| c.next().1);
        let b = bools.as_mut().and_then(|c| c.next().1);
        let raw = bytes.next().1;
        let c = complex.next().1;
        if rep == 0 {
            row = row.wrapping_add(1);
        }
        let Some(k) = k else { continue };
        if k.data() != key.as_bytes() {
            continue;
        }
        let matched = s.is_some_and(|s| s.data() == text.as_bytes())
            || n.is_some_and(|n| Some(*n) == want_int)
            || f.is_some_and(|f| Some(*f) == want_double)
            || b.is_some_and(|b| Some(*b) == want_bool)
            || raw.is_some_and(|r| RawValue::Bytes(r.data()).matches_text(text))
            || c.is_some_and(|c| RawValue::Complex(c.data()).matches_text(text));
        if matched {
            if let Some(slot) = out.get_mut(row) {
                *slot = true;
            }
        }
    }
    Ok(())
}

/// Rows having an event named `text`.
fn event_name_matches(names: &Leaf<ByteArray>, text: &str, out: &mut [bool]) {
    let mut cursor = names.cursor();
    let mut row = usize::MAX;
    while let Some(rep) = cursor.peek_rep() {
        let (_, name) = cursor.next();
        if rep == 0 {
            row = row.wrapping_add(1);
        }
        if name.is_some_and(|n| n.data() == text.as_bytes()) {
            if let Some(slot) = out.get_mut(row) {
                *slot = true;
            }
        }
    }
}

fn derived_matches(kind: i32, status: i32, message: Option<&ByteArray>, key: &str, text: &str) -> bool {
    let kind = SpanKind::from_otlp(kind);
    let status = StatusCode::from_otlp(status);
    match key {
        semconv::JAEGER_SPAN_KIND => kind != SpanKind::Unspecified && kind.as_jaeger_str() == text,
        semconv::JAEGER_ERROR => status == StatusCode::Error && text == "true",
        semconv::JAEGER_STATUS_CODE => match status {
            StatusCode::Ok => text == "OK",
            StatusCode::Error => text == "ERROR",
            StatusCode::Unset => false,
        },
        semconv::JAEGER_STATUS_DESCRIPTION => message.is_some_and(|m| m.data() == text.as_bytes()),
        _ => false,
    }
}

fn any_kv(attributes: &[KeyValue], key: &str, text: &str) -> bool {
    attributes.iter().any(|kv| kv.key == key && kv.value.matches_text(text))
}

/// The rows of one block that match a query, found row group by row group.
pub(crate) struct Matcher<'a> {
    block: &'a Block,
    query: &'a TraceQuery,
    pairs: Vec<Pair<'a>>,
    service_ok: Vec<bool>,
    phase1: Vec<&'a str>,
    span_kv: Vec<String>,
    event_kv: Vec<String>,
    min_duration: u64,
    max_duration: u64,
    /// Whether callers read the start column the filter read (trace-start bounds).
    keep_start: bool,
}

impl<'a> Matcher<'a> {
    /// `None` when the block's meta rules out every row.
    pub(crate) fn new(block: &'a Block, query: &'a TraceQuery) -> Option<Self> {
        let meta = &block.meta;
        if meta.spans == 0
            || meta.max_start < query.start_time_min_unix_nano
            || meta.min_start > query.start_time_max_unix_nano
        {
            return None;
        }
        if let Some(service) = &query.service {
            if meta.services.binary_search(service).is_err() {
                return None;
            }
        }
        // Which sources each attribute pair can match in; a pair matching nowhere skips the block.
        let listed = |key: &str| {
            meta.attribute_keys.as_ref().is_none_or(|keys| keys.binary_search_by(|k| k.as_str().cmp(key)).is_ok())
        };
        let mut pairs = Vec::new();
        for (key, text) in &query.attributes {
            let in_lists = listed(key);
            let dedicated = attribute_column(block, key);
            let derived = DERIVED_TAGS.contains(&key.as_str());
            let event_name = key == semconv::JAEGER_EVENT;
            let resources: Vec<bool> =
                block.tables.resources.iter().map(|r| any_kv(&r.attributes, key, text)).collect();
            let scopes: Vec<bool> = block
                .tables
                .scopes
                .iter()
                .map(|s| match key.as_str() {
                    semconv::JAEGER_SCOPE_NAME => !s.name.is_empty() && s.name == *text,
                    semconv::JAEGER_SCOPE_VERSION => !s.version.is_empty() && s.version == *text,
                    _ => false,
                })
                .collect();
            let any_resource = resources.iter().any(|m| *m) || scopes.iter().any(|m| *m);
            if !in_lists && dedicated.is_none() && !derived && !event_name && !any_resource {
                return None;
            }
            pairs.push(Pair { key, text, in_lists, dedicated, derived, event_name, resources, scopes });
        }
        let service_ok: Vec<bool> = block
            .tables
            .resources
            .iter()
            .map(|r| query.service.as_ref().is_none_or(|s| r.service_name() == s))
            .collect();

        // The operation filter reads `name` as dictionary indices (`row_mask`), not here.
        let mut phase1: Vec<&str> = vec!["start_time_unix_nano", "duration_nanos", "resource_ref"];
        if query.span_kind.is_some() || pairs.iter().any(|p| p.derived) {
            phase1.extend(["kind", "status_code", "status_message"]);
        } else if query.status.is_some() {
            phase1.push("status_code");
        }
        if pairs.iter().any(|p| p.scopes.iter().any(|m| *m)) {
            phase1.push("scope_ref");
        }
        // Dedicated string columns are read as dictionary indices (`row_mask`), not here.
        for p in &pairs {
            if let Some((_, column, DedicatedType::Int)) = p.dedicated {
                phase1.push(column);
            }
        }
        let texts: Vec<&str> = pairs.iter().map(|p| p.text).collect();
        let span_kv = kv_paths("attributes.key_value", &texts);
        let event_kv = kv_paths("events.event.attributes.key_value", &texts);
        let min_duration = query.duration_min_nanos.unwrap_or(0);
        let max_duration = query.duration_max_nanos.unwrap_or(u64::MAX);
        Some(Matcher {
            block,
            query,
            pairs,
            service_ok,
            phase1,
            span_kv,
            event_kv,
            min_duration,
            max_duration,
            keep_start: false,
        })
    }

    /// This matcher, always reading the start column (its callers read starts).
    pub(crate) fn keeping_start(self) -> Self {
        Matcher { keep_start: true, ..self }
    }

    /// The columns the filter reads for row group `rg`: `phase1` without the start and
    /// duration columns when the row group's statistics already prove every row within the
    /// query's window and duration bounds, nor the resource column when no condition reads
    /// it. Such a row group is decided from fewer columns.
    fn phase1_for(&self, rg: usize) -> Vec<&'a str> {
        let Some(stats) = self.block.meta.row_groups.get(rg) else { return self.phase1.clone() };
        let q = self.query;
        let within_window =
            stats.min_start >= q.start_time_min_unix_nano && stats.max_start <= q.start_time_max_unix_nano;
        let within_durations = stats.min_duration >= self.min_duration && stats.max_duration <= self.max_duration;
        let resources_read = q.service.is_some() || self.pairs.iter().any(|p| p.resources.iter().any(|m| *m));
        self.phase1
            .iter()
            .copied()
            .filter(|name| match *name {
                "start_time_unix_nano" => self.keep_start || !within_window,
                "duration_nanos" => !within_durations,
                "resource_ref" => resources_read,
                _ => true,
            })
            .collect()
    }

    /// Leaves `names` of every row of row group `rg`, taking over from `filtered` (the
    /// columns [`Matcher::row_mask`] read for it) those the filter read already instead of
    /// reading them twice.
    fn read_all_rows(&self, rg: usize, mut filtered: SpanColumns, names: &[&str]) -> Result<SpanColumns, StoreError> {
        let read = self.phase1_for(rg);
        let missing: Vec<&str> = names.iter().filter(|n| !read.contains(n)).copied().collect();
        let mut cols = self.block.read_columns(rg, Some(&missing), self.block.all_rows(rg))?;
        cols.take_leaves(&mut filtered, &read);
        recycle_columns(filtered);
        Ok(cols)
    }

    /// Which rows of row group `rg_index` match, with the columns read to decide it;
    /// `None` when none does.
    pub(crate) fn row_mask(&self, rg_index: usize) -> Result<Option<(Vec<bool>, SpanColumns)>, StoreError> {
        let Matcher { block, query, pairs, service_ok, span_kv, event_kv, min_duration, max_duration, .. } = self;
        let (block, query, min_duration, max_duration) = (*block, *query, *min_duration, *max_duration);
        // Every scan of a block goes through here once per row group: where a query that
        // timed out or lost its client stops.
        query.check()?;
        let meta = &block.meta;
        let Some(rg) = meta.row_groups.get(rg_index) else { return Ok(None) };
        if rg.max_start < query.start_time_min_unix_nano
            || rg.min_start > query.start_time_max_unix_nano
            || rg.max_duration < min_duration
            || rg.min_duration > max_duration
        {
            return Ok(None);
        }
        let rows = block.all_rows(rg_index);
        let read = self.phase1_for(rg_index);
        let cols = block.read_columns(rg_index, Some(&read), rows)?;
        let n = rows.take;
        let (by_start, by_duration, by_resource) =
            (read.contains(&"start_time_unix_nano"), read.contains(&"duration_nanos"), read.contains(&"resource_ref"));
        let mut mask = vec![true; n];
        let refs = &cols.resource_ref.values;
        if by_start {
            for (slot, v) in mask.iter_mut().zip(cols.start.values.iter().chain(std::iter::repeat(&0))) {
                let start = *v as u64;
                *slot &= start >= query.start_time_min_unix_nano && start <= query.start_time_max_unix_nano;
            }
        }
        if by_duration {
            for (slot, v) in mask.iter_mut().zip(cols.duration.values.iter().chain(std::iter::repeat(&0))) {
                let duration = if *v < 0 { 0 } else { *v as u64 };
                *slot &= duration >= min_duration && duration <= max_duration;
            }
        }
        if by_resource {
            for (row, slot) in mask.iter_mut().enumerate() {
                let resource = refs.get(row).map_or(0, |r| *r as usize);
                *slot &= service_ok.get(resource).copied().unwrap_or(false);
            }
        }
        if let Some(op) = &query.operation {
            if mask.iter().any(|m| *m) {
                block.read_dict_column(rg_index, "name", &[(0, n)])?.retain_equal(op.as_bytes(), &mut mask);
            }
        }
        if let Some(kind) = query.span_kind {
            for (slot, k) in mask.iter_mut().zip(&cols.kind.values) {
                *slot &= *k == kind.to_otlp();
            }
        }
        if let Some(status) = query.status {
            for (slot, code) in mask.iter_mut().zip(&cols.status_code.values) {
                *slot &= *code == status.to_otlp();
            }
        }
        if !mask.iter().any(|m| *m) {
            return Ok(None);
        }
        // Attribute pairs: cheap sources first, lists only for rows still undecided.
        let mut messages = Vec::new();
        if pairs.iter().any(|p| p.derived) {
            let mut c = cols.status_message.cursor();
            messages = (0..n).map(|_| c.next().1).collect();
        }
        // List columns are the expensive read. When few rows are left, only their rows are
        // decoded (`Selection`), the rest skipped; hits are mapped back to row numbers.
        let mut span_lists: Option<(KvLeaves, Selection)> = None;
        let mut event_lists: Option<(KvLeaves, Leaf<ByteArray>, Selection)> = None;
        for pair in pairs {
            let mut hit = vec![false; n];
            for row in 0..n {
                if !mask[row] {
                    continue;
                }
                let resource = refs.get(row).map_or(0, |r| *r as usize);
                hit[row] = pair.resources.get(resource).copied().unwrap_or(false);
            }
            if pair.scopes.iter().any(|m| *m) {
                for (row, slot) in hit.iter_mut().enumerate() {
                    let scope = cols.scope_ref.values.get(row).map_or(0, |r| *r as usize);
                    *slot |= pair.scopes.get(scope).copied().unwrap_or(false);
                }
            }
            if pair.derived {
                for (row, slot) in hit.iter_mut().enumerate() {
                    let kind = cols.kind.values.get(row).copied().unwrap_or(0);
                    let status = cols.status_code.values.get(row).copied().unwrap_or(0);
                    let message = messages.get(row).copied().flatten();
                    *slot |= derived_matches(kind, status, message, pair.key, pair.text);
                }
            }
            if let Some((position, column, ty)) = pair.dedicated {
                match ty {
                    DedicatedType::Str => {
                        block.read_dict_column(rg_index, column, &[(0, n)])?.mark_equal(pair.text.as_bytes(), &mut hit);
                    }
                    DedicatedType::Int => {
                        if let Some(leaf) = cols.dedicated_int.get(position) {
                            let mut c = leaf.cursor();
                            for slot in hit.iter_mut() {
                                *slot |= c.next().1.is_some_and(|v| AttributeValue::Int(*v).matches_text(pair.text));
                            }
                        }
                    }
                }
            }
            let undecided = hit.iter().zip(&mask).any(|(h, m)| *m && !*h);
            if undecided && pair.in_lists {
                if span_lists.is_none() {
                    let names: Vec<&str> = span_kv.iter().map(String::as_str).collect();
                    let selection = Selection::of(&mask);
                    span_lists = Some((selection.read(block, rg_index, &names, rows)?.attributes, selection));
                }
                if let Some((lists, selection)) = &span_lists {
                    selection.matches(&mut hit, |compact| kv_list_matches(lists, pair.key, pair.text, compact))?;
                }
            }
            let undecided = hit.iter().zip(&mask).any(|(h, m)| *m && !*h);
            if undecided && (pair.in_lists || pair.event_name) {
                if event_lists.is_none() {
                    let mut names: Vec<&str> = event_kv.iter().map(String::as_str).collect();
                    names.push("events.event.name");
                    let selection = Selection::of(&mask);
                    let c = selection.read(block, rg_index, &names, rows)?;
                    event_lists = Some((c.event_attributes, c.event_name, selection));
                }
                if let Some((lists, event_names, selection)) = &event_lists {
                    if pair.in_lists {
                        selection.matches(&mut hit, |compact| kv_list_matches(lists, pair.key, pair.text, compact))?;
                    }
                    if pair.event_name {
                        selection.matches(&mut hit, |compact| {
                            event_name_matches(event_names, pair.text, compact);
                            Ok(())
                        })?;
                    }
                }
            }
            for (slot, h) in mask.iter_mut().zip(&hit) {
                *slot &= *h;
            }
            if !mask.iter().any(|m| *m) {
                break;
            }
        }
        Ok(mask.iter().any(|m| *m).then_some((mask, cols)))
    }
}

/// Ascending row numbers as `(first row, count)` runs of consecutive rows.
fn runs(rows: &[usize]) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for &r in rows {
        match runs.last_mut() {
            Some((first, count)) if *first + *count == r => *count += 1,
            _ => runs.push((r, 1)),
        }
    }
    runs
}

/// The rows of a row group a column is read for: all of them, or only those that survive
/// the cheaper filters (ascending row numbers) when they are few and clustered enough that
/// skipping pays: every run of rows costs a skip and a read call, so scattered rows in
/// thousands of short runs are cheaper to read whole.
enum Selection {
    All,
    Rows(Vec<usize>),
}

impl Selection {
    fn of(mask: &[bool]) -> Self {
        let rows: Vec<usize> = mask.iter().enumerate().filter(|(_, m)| **m).map(|(i, _)| i).collect();
        if rows.len() * 4 <= mask.len() && runs(&rows).len() * 32 <= mask.len() {
            Selection::Rows(rows)
        } else {
            Selection::All
        }
    }

    fn read(&self, block: &Block, rg: usize, names: &[&str], rows: RowRange) -> Result<SpanColumns, StoreError> {
        match self {
            Selection::All => block.read_columns(rg, Some(names), rows),
            Selection::Rows(selected) => block.read_column_runs(rg, names, &runs(selected)),
        }
    }

    /// Runs `find` over the rows read (one slot per row read) and ORs its hits into `hit`
    /// (one slot per row of the row group).
    fn matches(
        &self,
        hit: &mut [bool],
        find: impl FnOnce(&mut [bool]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        match self {
            Selection::All => find(hit),
            Selection::Rows(rows) => {
                let mut compact = vec![false; rows.len()];
                find(&mut compact)?;
                for (row, found) in rows.iter().zip(compact) {
                    if found {
                        if let Some(slot) = hit.get_mut(*row) {
                            *slot = true;
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

/// Adds to `into` every trace of `block` with a span matching `query`, with an upper bound
/// of the trace's start: its earliest start in the block (traces never straddle row
/// groups) or, where few rows matched, the earliest start of a matching span.
pub(crate) fn find_in_block(
    block: &Block,
    query: &TraceQuery,
    into: &mut HashMap<TraceId, u64>,
) -> Result<(), StoreError> {
    let Some(matcher) = Matcher::new(block, query).map(Matcher::keeping_start) else { return Ok(()) };
    let meta = &block.meta;
    // Row groups are independent: two workers scan alternate ones, each into its own map.
    let scan_row_group = |rg_index: usize, into: &mut HashMap<TraceId, u64>| -> Result<(), StoreError> {
        let Some((mask, cols)) = matcher.row_mask(rg_index)? else { return Ok(()) };
        let rows = block.all_rows(rg_index);
        let n = rows.take;
        let start_of = |row: usize| cols.start.values.get(row).map_or(0, |v| *v as u64);
        if let Selection::Rows(matched) = Selection::of(&mask) {
            // Few matches: read their trace ids only, each with its own start as the bound
            // of its trace's start (the search refines the bounds it keeps).
            let ids = block.read_column_runs(rg_index, &["trace_id"], &runs(&matched))?;
            for (id, row) in ids.trace_id.values.iter().zip(matched) {
                let bytes: [u8; 16] = id.data().try_into().unwrap_or([0; 16]);
                let at = into.entry(TraceId::from_bytes(bytes)).or_insert(u64::MAX);
                *at = (*at).min(start_of(row));
            }
            return Ok(());
        }
        let ids = block.read_columns(rg_index, Some(&["trace_id"]), rows)?;
        // Rows are sorted by trace id: walk runs of one trace, keeping its earliest start.
        let mut row = 0;
        while row < n {
            let id = &ids.trace_id.values[row];
            let mut end = row;
            let mut start_min = u64::MAX;
            let mut matched = false;
            while end < n && ids.trace_id.values[end].data() == id.data() {
                start_min = start_min.min(cols.start.values.get(end).map_or(0, |v| *v as u64));
                matched |= mask[end];
                end += 1;
            }
            if matched {
                let bytes: [u8; 16] = id.data().try_into().unwrap_or([0; 16]);
                let at = into.entry(TraceId::from_bytes(bytes)).or_insert(start_min);
                *at = (*at).min(start_min);
            }
            row = end;
        }
        Ok(())
    };
    let read = |rg: usize| -> Result<HashMap<TraceId, u64>, StoreError> {
        let mut found = HashMap::new();
        scan_row_group(rg, &mut found)?;
        Ok(found)
    };
    each_row_group(meta.row_groups.len(), &read, &mut |found| {
        for (id, start) in found {
            let at = into.entry(id).or_insert(start);
            *at = (*at).min(start);
        }
        Ok(())
    })
}

/// Visits every span of `block` matching `query`, carrying at least `fields`. Two workers
/// decode alternate row groups; the caller's thread visits.
pub(crate) fn scan_block(
    block: &Block,
    query: &TraceQuery,
    fields: &SpanFields,
    visit: &mut dyn FnMut(&Span),
) -> Result<(), StoreError> {
    let Some(matcher) = Matcher::new(block, query) else { return Ok(()) };
    let keys = fields.attributes.as_deref();
    let names = SpanColumns::selected_leaves(
        &block.attribute_columns,
        keys,
        fields.events,
        block.meta.attribute_keys.as_deref(),
    );
    let decode = |rg: usize| -> Result<Vec<Span>, StoreError> {
        let Some((mask, filtered)) = matcher.row_mask(rg)? else { return Ok(Vec::new()) };
        let cols = matcher.read_all_rows(rg, filtered, &names)?;
        let spans = cols.decode_selected(&block.tables, &mask, keys).map_err(|e| BlockError::from(e).at(&block.path));
        recycle_columns(cols);
        spans
    };
    each_row_group(block.meta.row_groups.len(), &decode, &mut |spans| {
        spans.iter().for_each(&mut *visit);
        Ok(())
    })
}

/// Runs `read` over row groups `0..groups`, two workers taking alternate ones, and hands
/// each result to `emit` on the caller's thread (in no particular order); the first error
/// stops both sides.
fn each_row_group<T: Send>(
    groups: usize,
    read: &(dyn Fn(usize) -> Result<T, StoreError> + Sync),
    emit: &mut dyn FnMut(T) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    if groups < 2 {
        return (0..groups).try_for_each(|rg| emit(read(rg)?));
    }
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<T, StoreError>>(SCAN_THREADS);
    let jobs: Vec<pool::Job> = (0..SCAN_THREADS)
        .map(|w| {
            let tx = tx.clone();
            Box::new(move || {
                for rg in (w..groups).step_by(SCAN_THREADS) {
                    let result = read(rg);
                    let failed = result.is_err();
                    // A closed channel means the caller stopped on an error: stop too.
                    if tx.send(result).is_err() || failed {
                        return;
                    }
                }
            }) as pool::Job
        })
        .collect();
    drop(tx);
    pool::scope(jobs, move || {
        for result in rx {
            emit(result?)?;
        }
        Ok(())
    })
}

/// Scan workers shared by every scan, started once: a scan used to start two threads per
/// block, and with a few searches at once over hundreds of blocks the thread starts and
/// exits (each mapping and unmapping its stacks) serialised the whole process on the
/// kernel's memory-map lock, stalling ingest and cheap reads for seconds (issue 16).
mod pool {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc::{channel, Receiver, Sender};
    use std::sync::{Arc, Condvar, Mutex, OnceLock};

    /// Work for a scan worker, borrowing from the scan that waits for it.
    pub(super) type Job<'env> = Box<dyn FnOnce() + Send + 'env>;
    type StaticJob = Box<dyn FnOnce() + Send + 'static>;

    /// Workers: enough for two scans of `SCAN_THREADS` each per core; more jobs wait in line.
    fn threads() -> usize {
        std::thread::available_parallelism().map_or(2, |n| n.get()) * super::SCAN_THREADS * 2
    }

    fn queue() -> &'static Mutex<Sender<StaticJob>> {
        static QUEUE: OnceLock<Mutex<Sender<StaticJob>>> = OnceLock::new();
        QUEUE.get_or_init(|| {
            let (tx, rx) = channel::<StaticJob>();
            let rx = Arc::new(Mutex::new(rx));
            for i in 0..threads() {
                let rx = Arc::clone(&rx);
                let started = std::thread::Builder::new().name(format!("spindle-scan-{i}")).spawn(move || work(&rx));
                if let Err(e) = started {
                    tracing::warn!(error = %e, "could not start a scan worker");
                }
            }
            Mutex::new(tx)
        })
    }

    fn work(rx: &Mutex<Receiver<StaticJob>>) {
        lower_priority();
        loop {
            let job = match rx.lock().unwrap_or_else(|p| p.into_inner()).recv() {
                Ok(job) => job,
                Err(_) => return,
            };
            job();
        }
    }

    /// Scans are queries' work: at nice 10, ingest's threads are scheduled first.
    fn lower_priority() {
        #[cfg(target_os = "linux")]
        // SAFETY: plain syscalls on the calling thread, no memory passed.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, 10);
        }
    }

    /// Jobs not yet finished; `wait` returns when none is left.
    struct Latch {
        left: Mutex<usize>,
        done: Condvar,
        panicked: AtomicBool,
    }

    impl Latch {
        fn finish(&self) {
            let mut left = self.left.lock().unwrap_or_else(|p| p.into_inner());
            *left -= 1;
            if *left == 0 {
                self.done.notify_all();
            }
        }

        fn wait(&self) {
            let mut left = self.left.lock().unwrap_or_else(|p| p.into_inner());
            while *left > 0 {
                left = self.done.wait(left).unwrap_or_else(|p| p.into_inner());
            }
        }
    }

    /// Waits for the jobs when dropped, so that even a caller unwinding out of `body` never
    /// frees what they borrow while they run.
    struct WaitOnDrop(Arc<Latch>);

    impl Drop for WaitOnDrop {
        fn drop(&mut self) {
            self.0.wait();
        }
    }

    /// Runs `jobs` on the workers and `body` on the caller's thread, and returns once every
    /// job has finished, like `std::thread::scope`; a job's panic is raised here.
    pub(super) fn scope<'env, R>(jobs: Vec<Job<'env>>, body: impl FnOnce() -> R) -> R {
        let latch =
            Arc::new(Latch { left: Mutex::new(jobs.len()), done: Condvar::new(), panicked: AtomicBool::new(false) });
        let wait = WaitOnDrop(Arc::clone(&latch));
        for job in jobs {
            let latch = Arc::clone(&latch);
            let job: Job<'env> = Box::new(move || {
                if catch_unwind(AssertUnwindSafe(job)).is_err() {
                    latch.panicked.store(true, Ordering::Relaxed);
                }
                latch.finish();
            });
            // SAFETY: the job borrows from `'env` only; `wait` (dropped on every path out of
            // this function, unwinding included) blocks until the job has run and finished,
            // so nothing it borrows is freed before. A job that cannot be queued runs here.
            let job: StaticJob = unsafe { std::mem::transmute::<Job<'env>, StaticJob>(job) };
            if let Err(refused) = queue().lock().unwrap_or_else(|p| p.into_inner()).send(job) {
                (refused.0)();
            }
        }
        let result = body();
        drop(wait);
        if latch.panicked.load(Ordering::Relaxed) {
            panic!("a scan worker panicked");
        }
        result
    }
}

/// Where a row scan finds its group text in a block.
enum GroupSource {
    Service,
    Name,
    /// An attribute: its dedicated or promoted column (position among the leaves of its
    /// type, path, type), and whether the generic lists may hold it; else the resource's value.
    Attribute {
        key: String,
        dedicated: Option<(usize, &'static str, DedicatedType)>,
        in_lists: bool,
        resources: Vec<Option<String>>,
    },
}

impl GroupSource {
    fn of(block: &Block, key: &str) -> Self {
        match key {
            "service.name" | "service" => return GroupSource::Service,
            "span.name" | "operation" => return GroupSource::Name,
            _ => {}
        }
        let dedicated = attribute_column(block, key);
        let in_lists = block
            .meta
            .attribute_keys
            .as_ref()
            .is_none_or(|keys| keys.binary_search_by(|k| k.as_str().cmp(key)).is_ok());
        let resources = block
            .tables
            .resources
            .iter()
            .map(|r| spindle_model::find_attribute(&r.attributes, key).map(AttributeValue::to_display_string))
            .collect();
        GroupSource::Attribute { key: key.to_string(), dedicated, in_lists, resources }
    }

    fn leaves(&self, names: &mut Vec<&'static str>) {
        if let GroupSource::Name = self {
            if !names.contains(&"name") {
                names.push("name");
            }
        }
        if let GroupSource::Attribute { dedicated, in_lists, .. } = self {
            // String columns are read as dictionary indices instead (`RowScan::read`).
            if let Some((_, column, DedicatedType::Int)) = dedicated {
                names.push(column);
            }
            if *in_lists {
                // Keys and string values only: the other value leaves are read for a row
                // group only when one of its matching spans holds the key with another type.
                names.extend(&ATTRIBUTE_LIST_LEAVES[..2]);
            }
        }
    }
}

/// What a row scan of one block reads: the block's matcher, where its group text is, and
/// the leaves to read.
struct RowScan<'b> {
    block: &'b Block,
    matcher: Matcher<'b>,
    group: Option<GroupSource>,
    names: Vec<&'static str>,
    /// `names` and every value leaf of the attribute lists.
    with_all_values: Vec<&'static str>,
}

impl<'b> RowScan<'b> {
    fn new(block: &'b Block, query: &'b TraceQuery, fields: &RowFields) -> Option<Self> {
        let matcher = Matcher::new(block, query)?;
        let group = fields.group_by.as_deref().map(|key| GroupSource::of(block, key));
        if fields.trace_only {
            let names = vec!["start_time_unix_nano", "trace_id"];
            let with_all_values = names.clone();
            return Some(RowScan { block, matcher, group: None, names, with_all_values });
        }
        let mut names = vec!["start_time_unix_nano", "duration_nanos", "status_code", "resource_ref"];
        if fields.operation {
            names.extend(["name", "kind"]);
        }
        if fields.ids {
            names.extend(["trace_id", "span_id"]);
        }
        if let Some(g) = &group {
            g.leaves(&mut names);
        }
        let with_all_values = names.iter().chain(&ATTRIBUTE_LIST_LEAVES[2..]).copied().collect();
        Some(RowScan { block, matcher, group, names, with_all_values })
    }

    /// The columns of row group `rg` for the rows that match, if any.
    fn read(&self, rg: usize) -> Result<Option<MatchedRows>, StoreError> {
        let block = self.block;
        let Some((mask, filtered)) = self.matcher.row_mask(rg)? else { return Ok(None) };
        let selection = Selection::of(&mask);
        let cols = match selection {
            Selection::All => self.matcher.read_all_rows(rg, filtered, &self.names)?,
            Selection::Rows(_) => {
                recycle_columns(filtered);
                selection.read(block, rg, &self.names, block.all_rows(rg))?
            }
        };
        let texts = match &self.group {
            Some(GroupSource::Attribute { dedicated: Some((_, column, DedicatedType::Str)), .. }) => {
                let all = [(0, block.all_rows(rg).take)];
                let runs = match &selection {
                    Selection::All => all.to_vec(),
                    Selection::Rows(rows) => runs(rows),
                };
                Some(block.read_dict_column(rg, column, &runs)?)
            }
            _ => None,
        };
        let mut found = MatchedRows { mask, selection, cols, texts, all_values: false };
        if let Some(GroupSource::Attribute { key, in_lists: true, .. }) = &self.group {
            if list_has_other_types(&found, key) {
                found.cols = found.selection.read(block, rg, &self.with_all_values, block.all_rows(rg))?;
                found.all_values = true;
            }
        }
        Ok(Some(found))
    }

    /// Visits the rows `read` found, then hands their buffers back to the pool.
    fn visit(
        &self,
        found: Option<MatchedRows>,
        fields: &RowFields,
        visit: &mut dyn FnMut(&SpanRow),
    ) -> Result<(), StoreError> {
        let Some(found) = found else { return Ok(()) };
        let visited = visit_rows(self.block, &found, self.group.as_ref(), fields, visit)
            .map_err(|e| BlockError::from(e).at(&self.block.path));
        recycle_columns(found.cols);
        visited
    }
}

/// Visits every span of `block` matching `query` as a [`SpanRow`], straight from the
/// column buffers: no span is built. Two workers read alternate row groups (only the
/// matching rows' values when few match); the caller's thread visits.
pub(crate) fn scan_block_rows(
    block: &Block,
    query: &TraceQuery,
    fields: &RowFields,
    visit: &mut dyn FnMut(&SpanRow),
) -> Result<(), StoreError> {
    let Some(scan) = RowScan::new(block, query, fields) else { return Ok(()) };
    each_row_group(block.meta.row_groups.len(), &|rg| scan.read(rg), &mut |found| scan.visit(found, fields, visit))
}

/// Visits every span of `blocks` matching `query` as a [`SpanRow`], one thread per visitor:
/// each thread takes the next row group of any block, reads it and visits its rows with its
/// own visitor, so the visiting (an aggregation, say) runs on every thread too. Each row is
/// visited once, by one of the visitors. The first error stops every thread.
pub(crate) fn scan_blocks_rows_split(
    blocks: &[std::sync::Arc<Block>],
    query: &TraceQuery,
    fields: &RowFields,
    visitors: &mut [&mut (dyn FnMut(&SpanRow) + Send)],
) -> Result<(), StoreError> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let scans: Vec<RowScan> = blocks.iter().filter_map(|b| RowScan::new(b, query, fields)).collect();
    let work: Vec<(usize, usize)> = scans
        .iter()
        .enumerate()
        .flat_map(|(i, scan)| (0..scan.block.meta.row_groups.len()).map(move |rg| (i, rg)))
        .collect();
    let (next, failed) = (AtomicUsize::new(0), AtomicBool::new(false));
    let run = |visit: &mut (dyn FnMut(&SpanRow) + Send)| -> Result<(), StoreError> {
        while !failed.load(Ordering::Relaxed) {
            let Some(&(i, rg)) = work.get(next.fetch_add(1, Ordering::Relaxed)) else { break };
            let scan = &scans[i];
            let result = scan.read(rg).and_then(|found| scan.visit(found, fields, visit));
            if result.is_err() {
                failed.store(true, Ordering::Relaxed);
                return result;
            }
        }
        Ok(())
    };
    let Some((mine, others)) = visitors.split_last_mut() else { return Ok(()) };
    if work.is_empty() {
        return Ok(());
    }
    let run = &run;
    let results: Vec<std::sync::Mutex<Result<(), StoreError>>> =
        others.iter().map(|_| std::sync::Mutex::new(Ok(()))).collect();
    let jobs: Vec<pool::Job> = others
        .iter_mut()
        .zip(&results)
        .map(|(visit, slot)| {
            Box::new(move || {
                let result = run(&mut **visit);
                *slot.lock().unwrap_or_else(|p| p.into_inner()) = result;
            }) as pool::Job
        })
        .collect();
    let mut result = pool::scope(jobs, || run(&mut **mine));
    for slot in results {
        let theirs = slot.into_inner().unwrap_or_else(|p| p.into_inner());
        if result.is_ok() {
            result = theirs;
        }
    }
    result
}

/// Whether a kept row's first `key` entry holds a value that is not a string, read from the
/// key and string leaves alone (a present key whose string is absent has another type).
fn list_has_other_types(found: &MatchedRows, key: &str) -> bool {
    let cols = &found.cols;
    let list_rep = cols.attributes.key.max_def;
    let mut keys = cols.attributes.key.cursor();
    let mut strs = cols.attributes.str.cursor();
    for row in 0..cols.start.values.len() {
        let keep = found.keeps(row);
        let mut decided = false;
        loop {
            let (_, k) = keys.next();
            let (_, text) = strs.next();
            let Some(k) = k else { break };
            if keep && !decided && k.data() == key.as_bytes() {
                if text.is_none() {
                    return true;
                }
                decided = true;
            }
            if keys.peek_rep() != Some(list_rep) {
                break;
            }
        }
    }
    false
}

/// The columns read of one row group for the rows a row scan matched.
struct MatchedRows {
    mask: Vec<bool>,
    selection: Selection,
    cols: SpanColumns,
    /// The group's dedicated or promoted string column, when it has one, row for row.
    texts: Option<DictColumn>,
    /// Whether every value leaf of the attribute lists was read, not just keys and strings.
    all_values: bool,
}

impl MatchedRows {
    /// Whether row `row` of `cols` matched: with `Selection::All` the mask says, with
    /// `Selection::Rows` only matching rows were read.
    fn keeps(&self, row: usize) -> bool {
        match self.selection {
            Selection::All => self.mask.get(row).copied().unwrap_or(false),
            Selection::Rows(_) => true,
        }
    }
}

/// The trace id of row `row`.
fn row_trace_id(cols: &SpanColumns, row: usize) -> Result<TraceId, FormatError> {
    let value = cols.trace_id.values.get(row).ok_or(FormatError::Malformed("trace_id"))?;
    let bytes: [u8; 16] = value.data().try_into().map_err(|_| FormatError::Malformed("trace_id"))?;
    Ok(TraceId::from_bytes(bytes))
}

/// The matched rows of one row group as [`SpanRow`]s.
fn visit_rows(
    block: &Block,
    found: &MatchedRows,
    group: Option<&GroupSource>,
    fields: &RowFields,
    visit: &mut dyn FnMut(&SpanRow),
) -> Result<(), FormatError> {
    let cols = &found.cols;
    let ids = fields.ids;
    let rows = cols.start.values.len();
    let tables = &block.tables;
    if fields.trace_only {
        for row in (0..rows).filter(|row| found.keeps(*row)) {
            let start = *cols.start.values.get(row).ok_or(FormatError::Malformed("start_time_unix_nano"))?;
            visit(&SpanRow::of_trace(row_trace_id(cols, row)?, start as u64));
        }
        return Ok(());
    }
    let mut dedicated_int = None;
    if let Some(GroupSource::Attribute { dedicated: Some((position, _, DedicatedType::Int)), .. }) = group {
        dedicated_int = cols.dedicated_int.get(*position).map(Leaf::cursor);
    }
    if found.texts.as_ref().is_some_and(|t| t.len() != rows) {
        return Err(FormatError::Malformed("string column rows"));
    }
    // With only keys and strings read, a matching key always has a string (see
    // `list_has_other_types`); with every value leaf read, values are whatever they are.
    let mut lists = cols.attributes.cursor();
    let mut keys = cols.attributes.key.cursor();
    let mut strs = cols.attributes.str.cursor();
    let list_rep = cols.attributes.key.max_def;
    for row in 0..rows {
        let keep = found.keeps(row);
        // Cursors advance one row whatever is kept.
        let from_str = found.texts.as_ref().and_then(|t| t.get(row));
        let from_int = dedicated_int.as_mut().and_then(|c| c.next().1);
        let mut from_list: Option<RawValue> = None;
        if let Some(GroupSource::Attribute { key, in_lists: true, .. }) = group {
            if found.all_values {
                loop {
                    let (_, entry) = lists.next()?;
                    let Some((k, value)) = entry else { break };
                    if from_list.is_none() && keep && k == key.as_bytes() {
                        from_list = Some(value);
                    }
                    if lists.peek_rep() != Some(list_rep) {
                        break;
                    }
                }
            } else {
                loop {
                    let (_, k) = keys.next();
                    let (_, text) = strs.next();
                    let Some(k) = k else { break };
                    if from_list.is_none() && keep && k.data() == key.as_bytes() {
                        from_list = Some(RawValue::Str(
                            text.ok_or(FormatError::Malformed("attribute without a value"))?.data(),
                        ));
                    }
                    if keys.peek_rep() != Some(list_rep) {
                        break;
                    }
                }
            }
        }
        if !keep {
            continue;
        }
        let resource_ref = *cols.resource_ref.values.get(row).ok_or(FormatError::Malformed("resource_ref"))?;
        let resource = usize::try_from(resource_ref)
            .ok()
            .and_then(|i| tables.resources.get(i))
            .ok_or(FormatError::BadReference { what: "resource", index: resource_ref, len: tables.resources.len() })?;
        // The name column is read when the operation is asked for or grouped by.
        let name = match cols.name.values.get(row) {
            Some(v) => std::str::from_utf8(v.data()).map_err(|_| FormatError::Utf8)?,
            None if fields.operation || matches!(group, Some(GroupSource::Name)) => {
                return Err(FormatError::Malformed("name"))
            }
            None => "",
        };
        let group_text: Option<Cow<str>> = match group {
            None => None,
            Some(GroupSource::Service) => Some(Cow::Borrowed(resource.service_name())),
            Some(GroupSource::Name) => Some(Cow::Borrowed(name)),
            Some(GroupSource::Attribute { resources, .. }) => {
                if let Some(v) = from_str {
                    Some(Cow::Borrowed(std::str::from_utf8(v).map_err(|_| FormatError::Utf8)?))
                } else if let Some(v) = from_int {
                    Some(Cow::Owned(v.to_string()))
                } else if let Some(v) = from_list {
                    Some(match v {
                        RawValue::Str(s) => Cow::Borrowed(std::str::from_utf8(s).map_err(|_| FormatError::Utf8)?),
                        other => Cow::Owned(other.to_value()?.to_display_string()),
                    })
                } else {
                    resources.get(resource_ref as usize).and_then(|r| r.as_deref()).map(Cow::Borrowed)
                }
            }
        };
        let start = *cols.start.values.get(row).ok_or(FormatError::Malformed("start_time_unix_nano"))? as u64;
        let duration = *cols.duration.values.get(row).ok_or(FormatError::Malformed("duration_nanos"))?;
        let trace_id = if ids { row_trace_id(cols, row)? } else { TraceId::default() };
        visit(&SpanRow {
            trace_id,
            span_id: SpanId(if ids {
                *cols.span_id.values.get(row).ok_or(FormatError::Malformed("span_id"))? as u64
            } else {
                0
            }),
            service: resource.service_name(),
            name: if fields.operation { name } else { "" },
            kind: if fields.operation {
                SpanKind::from_otlp(*cols.kind.values.get(row).ok_or(FormatError::Malformed("kind"))?)
            } else {
                SpanKind::Unspecified
            },
            start_unix_nano: start,
            // As `Span::duration_nanos` reads it: an end before the start is zero.
            duration_nanos: u64::try_from(duration).unwrap_or(0),
            error: StatusCode::from_otlp(
                *cols.status_code.values.get(row).ok_or(FormatError::Malformed("status_code"))?,
            ) == StatusCode::Error,
            group: group_text,
        });
    }
    Ok(())
}

struct Pair<'q> {
    key: &'q str,
    text: &'q str,
    in_lists: bool,
    dedicated: Option<(usize, &'static str, DedicatedType)>,
    derived: bool,
    event_name: bool,
    resources: Vec<bool>,
    scopes: Vec<bool>,
}

/// The trace ids of one row group, one per trace, ascending.
pub(crate) fn row_group_trace_ids(block: &Block, rg: usize) -> Result<Vec<TraceId>, StoreError> {
    let cols = block.read_columns(rg, Some(&["trace_id"]), block.all_rows(rg))?;
    let mut out: Vec<TraceId> = Vec::new();
    for v in &cols.trace_id.values {
        let bytes: [u8; 16] = v.data().try_into().unwrap_or([0; 16]);
        let id = TraceId::from_bytes(bytes);
        if out.last() != Some(&id) {
            out.push(id);
        }
    }
    Ok(out)
}
