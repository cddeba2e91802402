//! The scans analytics, service graphs and span metrics read through, answered by
//! ClickHouse rather than by the trait's defaults (which find trace ids, then read every
//! trace whole). Duplicates of a retried append are dropped in SQL (`LIMIT 1 BY trace_id,
//! span_id`); duplicates share a trace id, so on a cluster they share a shard.

use std::collections::{BTreeSet, HashMap, HashSet};

use spindle_model::{AttributeValue, Span, SpanId, SpanKind, StatusCode, TraceId};
use spindle_query::sketch::GAMMA;
use spindle_store::{MinuteBucket, QueryControl, RedBucket, RowFields, SpanRow, StoreError, TraceQuery};

use crate::blob::{Decoder, Row, SPAN_COLUMNS, TAIL_COLUMNS};
use crate::rowbinary::Reader;
use crate::{day_filter, dedupe, kind_code, literal, span_clause, span_filter, ClickHouseStore};

const MINUTE_NANOS: u64 = 60_000_000_000;

/// Keys [`Span::group_text`] answers from the span's identity, not its attributes.
fn identity_group(span_service: &str, name: &str, key: &str) -> Option<String> {
    match key {
        "service.name" | "service" => Some(span_service.to_string()),
        "span.name" | "operation" => Some(name.to_string()),
        _ => None,
    }
}

/// Where the value of attribute key `k` (a literal) that [`Span::group_text`] reads is:
/// 1-4 the span's string, int, bool or double attribute, 6 the resource's string attribute,
/// 0 nowhere, 5 only a rebuilt span can say. A key in exactly one typed array and nowhere in
/// the blob (which holds the span's other attributes and the resource's non-string ones) is
/// the span's first (routes 1-4); a key in no typed array and nowhere in the blob is the
/// resource's first string attribute, if any (6). Anything else, rare, is route 5: a key
/// twice, a bytes or array value, a non-string resource attribute, a version-1 blob (which
/// holds every attribute), or a key that merely occurs in the blob's text (an event's
/// attribute, say).
fn group_route(k: &str) -> String {
    let typed = format!(
        "countEqual(str_keys, {k}) + countEqual(int_keys, {k}) + countEqual(bool_keys, {k}) \
         + countEqual(double_keys, {k})"
    );
    format!(
        "multiIf({typed} = 1 AND position(span, {k}) = 0, \
         multiIf(has(str_keys, {k}), 1, has(int_keys, {k}), 2, has(bool_keys, {k}), 3, 4), \
         {typed} = 0 AND position(span, {k}) = 0, if(has(resource_keys, {k}), 6, 0), 5)"
    )
}

/// Rows a RED part rebuilds one by one before it aggregates by (trace id, span id) instead.
const REBUILD_LIMIT: u64 = 10_000;

/// The value columns of [`ClickHouseStore::red_part`] for a group that is always a string.
fn string_value(text: &str) -> [String; 4] {
    [text.to_string(), "toInt64(0)".into(), "toUInt8(0)".into(), "toFloat64(0)".into()]
}

/// The sketch bucket of `duration_ns` in SQL, as `spindle_query::sketch::bucket_index`: 0
/// for zero, else `ceil(ln d / ln γ) + 1`.
fn bucket_sql() -> String {
    format!("toInt32(if(duration_ns = 0, 0, ceil(log(duration_ns) / log({GAMMA:?})) + 1))")
}

impl ClickHouseStore {
    /// Every span matching `query`, each once, rebuilt from its row.
    pub(crate) fn scan_matching(&self, query: &TraceQuery, visit: &mut dyn FnMut(&Span)) -> Result<(), StoreError> {
        query.check()?;
        if query.start_time_min_unix_nano > query.start_time_max_unix_nano {
            return Ok(());
        }
        let bytes = self
            .rows(&format!("SELECT {SPAN_COLUMNS} FROM spans {} LIMIT 1 BY trace_id, span_id", span_clause(query)))?;
        query.check()?;
        self.read_spans(&bytes, &mut |span| {
            if query.matches_span(&span) {
                visit(&span);
            }
        })
    }

    /// Rows for RED statistics: typed columns only, unless the query has attribute pairs
    /// (decided by the span matcher on whole spans) or the group key may be held where the
    /// typed columns cannot say it comes first (a bytes or array value, a non-string
    /// resource attribute, a key twice).
    pub(crate) fn scan_span_rows(
        &self,
        query: &TraceQuery,
        fields: &RowFields,
        visit: &mut dyn FnMut(&SpanRow),
    ) -> Result<(), StoreError> {
        if !query.attributes.is_empty() {
            return self.scan_matching(query, &mut |span| visit(&SpanRow::of(span, fields)));
        }
        query.check()?;
        if query.start_time_min_unix_nano > query.start_time_max_unix_nano {
            return Ok(());
        }
        let attribute_key = fields.group_by.as_deref().filter(|k| identity_group("", "", k).is_none());
        // `Span::group_text`: the span's first attribute with the key, of any type, else the
        // resource's ([`group_route`]); route 5 rebuilds the span.
        let group_columns = match attribute_key {
            None => String::new(),
            Some(key) => {
                let k = literal(key.as_bytes());
                let route = group_route(&k);
                let tail: Vec<String> = TAIL_COLUMNS
                    .iter()
                    .map(|&c| match c {
                        "parent_span_id" => c.to_string(),
                        "span" => "if(route = 5, span, '')".to_string(),
                        // Empty unless rebuilt; `if` with `[]` is refused by 18.16.
                        array => format!("arraySlice({array}, 1, if(route = 5, length({array}), 0))"),
                    })
                    .collect();
                format!(
                    ", {route} AS route, \
                     str_values[indexOf(str_keys, {k})], int_values[indexOf(int_keys, {k})], \
                     bool_values[indexOf(bool_keys, {k})], double_values[indexOf(double_keys, {k})], \
                     resource_values[indexOf(resource_keys, {k})], {}",
                    tail.join(", ")
                )
            }
        };
        let bytes = self.rows(&format!(
            "SELECT trace_id, span_id, service, name, kind, start_ns, duration_ns, status_code{group_columns} \
             FROM spans WHERE {} LIMIT 1 BY trace_id, span_id",
            span_filter(query)
        ))?;
        query.check()?;
        let bad = |e| self.malformed(e);
        let mut reader = Reader::new(&bytes);
        let mut decoder = Decoder::default();
        while !reader.is_empty() {
            let mut head = Row::default();
            head.trace_id = reader.trace_id().map_err(bad)?;
            head.span_id = SpanId(reader.u64().map_err(bad)?);
            let service = String::from_utf8_lossy(reader.string().map_err(bad)?);
            head.name = reader.string().map_err(bad)?;
            head.kind = reader.u8().map_err(bad)?;
            head.start = reader.u64().map_err(bad)?;
            head.duration = reader.u64().map_err(bad)?;
            head.status = reader.u8().map_err(bad)?;
            let (trace_id, span_id, start, duration) = (head.trace_id, head.span_id, head.start, head.duration);
            let name = String::from_utf8_lossy(head.name);
            let kind = SpanKind::from_otlp(i32::from(head.kind));
            let status = StatusCode::from_otlp(i32::from(head.status));
            let group = match (&fields.group_by, attribute_key) {
                (None, _) => None,
                (Some(key), None) => identity_group(&service, &name, key),
                (Some(key), Some(_)) => {
                    let route = reader.u8().map_err(bad)?;
                    let text = reader.string().map_err(bad)?;
                    let int = reader.i64().map_err(bad)?;
                    let boolean = reader.u8().map_err(bad)?;
                    let double = reader.f64().map_err(bad)?;
                    let resource_text = reader.string().map_err(bad)?;
                    let mut row = head;
                    row.read_tail(&mut reader).map_err(bad)?;
                    match route {
                        1 => Some(String::from_utf8_lossy(text).into_owned()),
                        2 => Some(AttributeValue::Int(int).to_display_string()),
                        3 => Some(AttributeValue::Bool(boolean != 0).to_display_string()),
                        4 => Some(AttributeValue::Double(double).to_display_string()),
                        5 => decoder.span(row)?.group_text(key).map(|g| g.into_owned()),
                        6 => Some(String::from_utf8_lossy(resource_text).into_owned()),
                        _ => None,
                    }
                }
            };
            let row = SpanRow {
                trace_id: if fields.ids { trace_id } else { TraceId::default() },
                span_id: if fields.ids { span_id } else { SpanId::default() },
                service: &service,
                name: if fields.operation { &name } else { "" },
                kind: if fields.operation { kind } else { SpanKind::Unspecified },
                start_unix_nano: start,
                duration_nanos: duration,
                error: status == StatusCode::Error,
                group: group.map(Into::into),
            };
            visit(&row);
        }
        Ok(())
    }

    /// RED buckets of the spans matching `query` (without attribute pairs, which only the
    /// span matcher decides: `false` then), each span once, aggregated in SQL. With an
    /// attribute key, rows whose typed arrays say everything (`typed_only`) and hold the key
    /// as a string are read apart, from the string arrays alone; the rest take
    /// [`group_route`]. Spans whose group only a rebuilt span can say (route 5), and spans
    /// whose id another trace's span has too (then the per-id dedupe cannot tell them
    /// apart), come one per bucket by span id and are rebuilt by a second read.
    pub(crate) fn red_statistics(
        &self,
        query: &TraceQuery,
        group_by: Option<&str>,
        step_nanos: u64,
        visit: &mut dyn FnMut(&RedBucket),
    ) -> Result<bool, StoreError> {
        if !query.attributes.is_empty() {
            return Ok(false);
        }
        query.check()?;
        if query.start_time_min_unix_nano > query.start_time_max_unix_nano {
            return Ok(true);
        }
        let step = step_nanos.max(1);
        let filter = span_filter(query);
        match group_by {
            None => self.red_part(&filter, "1", string_value("''"), None, step, group_by, visit)?,
            Some(key) => match identity_group("service", "name", key) {
                Some(column) => self.red_part(&filter, "1", string_value(&column), None, step, group_by, visit)?,
                None => {
                    let k = literal(key.as_bytes());
                    let fast = format!("typed_only = 1 AND has(str_keys, {k})");
                    let value = string_value(&format!("str_values[indexOf(str_keys, {k})]"));
                    self.red_part(&filter, "1", value, Some(&fast), step, group_by, visit)?;
                    let value = [
                        format!(
                            "multiIf(route = 1, str_values[indexOf(str_keys, {k})], \
                             route = 6, resource_values[indexOf(resource_keys, {k})], '')"
                        ),
                        format!("if(route = 2, int_values[indexOf(int_keys, {k})], 0)"),
                        format!("if(route = 3, bool_values[indexOf(bool_keys, {k})], 0)"),
                        format!("if(route = 4, double_values[indexOf(double_keys, {k})], 0)"),
                    ];
                    let rest = format!("NOT ({fast})");
                    self.red_part(&filter, &group_route(&k), value, Some(&rest), step, group_by, visit)?;
                }
            },
        }
        Ok(true)
    }

    /// One part of [`Self::red_statistics`]: the rows of `filter` (and `part`, read first
    /// as `PREWHERE`), their route by `route` (an expression of the row; 1 when the value is
    /// a string), and their group's value by `value`: one string, or the string, int, bool
    /// and double of [`group_route`]'s routes. Spans it cannot aggregate it rebuilds from
    /// the rows of the same part, so a span id another part holds too is not counted twice.
    ///
    /// Duplicates of a retried append are one span. Grouping by the span id alone is
    /// several times faster than by (trace id, span id) on 18.16; span ids another trace
    /// shares are found by their differing trace ids and rebuilt apart. A writer that
    /// reuses span ids across many traces would make that rebuild large: past
    /// [`REBUILD_LIMIT`] rows the part is aggregated again by (trace id, span id).
    #[allow(clippy::too_many_arguments)]
    fn red_part(
        &self,
        filter: &str,
        route: &str,
        value: [String; 4],
        part: Option<&str>,
        step: u64,
        group_by: Option<&str>,
        visit: &mut dyn FnMut(&RedBucket),
    ) -> Result<(), StoreError> {
        let [gs, gi, gb, gd] = value;
        let part = part.unwrap_or("1");
        let sql = |exact: bool| {
            let (dedupe, clash, trace) = match exact {
                true => ("trace_id, span_id", "0", "if(route_any = 5, trace_id, toFixedString('', 16))"),
                false => ("span_id", "if(min(trace_id) = max(trace_id), 0, 1)", "toFixedString('', 16)"),
            };
            format!(
                "SELECT r, gs, gi, gb, gd, redo, rt, rs, min(s), e, b, count(), sum(d), min(d), max(d), sum(n) FROM ( \
                   SELECT {clash} AS clash, any(route) AS route_any, if(route_any = 6, 1, route_any) AS r, \
                   route_any = 5 OR clash = 1 AS redo, {trace} AS rt, if(redo, span_id, 0) AS rs, \
                   any(gs0) AS gs, any(gi0) AS gi, any(gb0) AS gb, any(gd0) AS gd, any(start_ns) AS s, \
                   any(duration_ns) AS d, any(error) AS e, any(bucket) AS b, count() AS n FROM ( \
                     SELECT trace_id, span_id, start_ns, duration_ns, status_code = {error} AS error, \
                     {bucket} AS bucket, {route} AS route, {gs} AS gs0, {gi} AS gi0, {gb} AS gb0, {gd} AS gd0 \
                     FROM spans PREWHERE {part} WHERE {filter}) \
                   GROUP BY {dedupe}) \
                 WHERE r != 0 OR redo GROUP BY r, gs, gi, gb, gd, redo, rt, rs, intDiv(s, {step}), e, b",
                error = StatusCode::Error.to_otlp(),
                bucket = bucket_sql(),
            )
        };
        let mut bytes = self.rows(&sql(false))?;
        let (mut rebuild, rows) = self.red_rows(&bytes, group_by, &mut |_| {})?;
        if rows > REBUILD_LIMIT {
            bytes = self.rows(&sql(true))?;
            rebuild = self.red_rows(&bytes, group_by, &mut |_| {})?.0;
        }
        self.red_rows(&bytes, group_by, visit)?;
        if rebuild.is_empty() {
            return Ok(());
        }
        // Spans of a clash (no trace id) by their ids within the part; route-5 spans of an
        // exact aggregation by (trace id, span id). Invalid all-zero trace ids are stored
        // too: those are rebuilt by span id, which only reads more.
        let (clashes, pairs): (Vec<_>, Vec<_>) = rebuild.into_iter().partition(|(trace, _)| trace.is_none());
        let mut which = Vec::new();
        if !clashes.is_empty() {
            let ids: Vec<String> = clashes.iter().map(|(_, span)| span.to_string()).collect();
            which.push(format!("span_id IN ({})", ids.join(", ")));
        }
        if !pairs.is_empty() {
            let ids: Vec<String> = pairs
                .iter()
                .filter_map(|(trace, span)| trace.map(|t| format!("({}, {span})", crate::trace_literal(t))))
                .collect();
            which.push(format!("(trace_id, span_id) IN ({})", ids.join(", ")));
        }
        let spans = self.spans_selected(&format!(
            "PREWHERE ({}) AND {part} WHERE {filter} LIMIT 1 BY trace_id, span_id",
            which.join(" OR ")
        ))?;
        for span in spans {
            let duration = span.duration_nanos();
            visit(&RedBucket {
                group: group_by.and_then(|key| span.group_text(key)),
                start_unix_nano: span.start_time_unix_nano,
                error: span.is_error(),
                bucket: spindle_query::sketch::bucket_index(duration),
                count: 1,
                sum_nanos: u128::from(duration),
                min_nanos: duration,
                max_nanos: duration,
            });
        }
        Ok(())
    }

    /// Reads an answer of [`Self::red_part`]'s SQL: visits its buckets, and returns the spans
    /// to rebuild, by trace id (when the answer says it) and span id, and how many rows
    /// those stand for.
    fn red_rows(
        &self,
        bytes: &[u8],
        group_by: Option<&str>,
        visit: &mut dyn FnMut(&RedBucket),
    ) -> Result<(HashSet<(Option<TraceId>, u64)>, u64), StoreError> {
        let bad = |e| self.malformed(e);
        let mut reader = Reader::new(bytes);
        let (mut rebuild, mut rows) = (HashSet::new(), 0);
        while !reader.is_empty() {
            let route = reader.u8().map_err(bad)?;
            let text = reader.string().map_err(bad)?;
            let int = reader.i64().map_err(bad)?;
            let boolean = reader.u8().map_err(bad)?;
            let double = reader.f64().map_err(bad)?;
            let redo = reader.u8().map_err(bad)? != 0;
            let trace_id = reader.trace_id().map_err(bad)?;
            let span_id = reader.u64().map_err(bad)?;
            let mut bucket = RedBucket {
                group: None,
                start_unix_nano: reader.u64().map_err(bad)?,
                error: reader.u8().map_err(bad)? != 0,
                bucket: reader.i32().map_err(bad)?,
                count: reader.u64().map_err(bad)?,
                sum_nanos: u128::from(reader.u64().map_err(bad)?),
                min_nanos: reader.u64().map_err(bad)?,
                max_nanos: reader.u64().map_err(bad)?,
            };
            let folded = reader.u64().map_err(bad)?;
            if redo {
                rebuild.insert(((trace_id != TraceId::default()).then_some(trace_id), span_id));
                rows += folded;
                continue;
            }
            bucket.group = match (group_by, route) {
                (None, _) | (_, 0) => None,
                (Some(_), 1) => Some(String::from_utf8_lossy(text)),
                (Some(_), 2) => Some(AttributeValue::Int(int).to_display_string().into()),
                (Some(_), 3) => Some(AttributeValue::Bool(boolean != 0).to_display_string().into()),
                (Some(_), _) => Some(AttributeValue::Double(double).to_display_string().into()),
            };
            visit(&bucket);
        }
        Ok((rebuild, rows))
    }

    /// The spans of every trace whose earliest span started in `[start, end]`, one trace at
    /// a time, each span once.
    pub(crate) fn scan_whole_traces(
        &self,
        start_unix_nano: u64,
        end_unix_nano: u64,
        visit: &mut dyn FnMut(&[Span]),
    ) -> Result<(), StoreError> {
        QueryControl::check_current()?;
        let spans = self.spans_where(&format!(
            "trace_id IN (SELECT trace_id FROM trace_id_ts GROUP BY trace_id \
             HAVING min(min_start) >= {start_unix_nano} AND min(min_start) <= {end_unix_nano})"
        ))?;
        QueryControl::check_current()?;
        let mut traces: HashMap<TraceId, Vec<Span>> = HashMap::new();
        for span in spans {
            traces.entry(span.trace_id).or_default().push(span);
        }
        for spans in traces.into_values() {
            visit(&dedupe(spans));
        }
        Ok(())
    }

    /// Per-minute statistics by series and latency bucket, computed by ClickHouse over the
    /// spans themselves (each span once), so any instance answers span-metric queries for
    /// spans any other instance appended.
    pub(crate) fn minute_statistics(
        &self,
        start_unix_nano: u64,
        end_unix_nano: u64,
        services: &[String],
        kinds: &[SpanKind],
    ) -> Result<Vec<MinuteBucket>, StoreError> {
        if start_unix_nano >= end_unix_nano {
            return Ok(Vec::new());
        }
        let last = end_unix_nano - 1;
        let mut filter =
            format!("{} AND start_ns >= {start_unix_nano} AND start_ns <= {last}", day_filter(start_unix_nano, last));
        if !services.is_empty() {
            let list: BTreeSet<String> = services.iter().map(|s| literal(s.as_bytes())).collect();
            filter.push_str(&format!(" AND service IN ({})", list.into_iter().collect::<Vec<_>>().join(", ")));
        }
        if !kinds.is_empty() {
            let list: BTreeSet<String> = kinds.iter().map(|k| kind_code(*k).to_string()).collect();
            filter.push_str(&format!(" AND kind IN ({})", list.into_iter().collect::<Vec<_>>().join(", ")));
        }
        let bucket = bucket_sql();
        // Each span once: by its id alone, several times faster than by (trace id, span
        // id) on 18.16, unless a span id recurs in another trace (the `clash` of any row),
        // when the statistics are computed again by (trace id, span id).
        let bytes = self.rows(&format!(
            "SELECT intDiv(s, {MINUTE_NANOS}) AS minute, sv, nm, k, st, {bucket} AS bucket, \
             count(), sum(duration_ns), min(duration_ns), max(duration_ns), max(clash) \
             FROM (SELECT if(min(trace_id) = max(trace_id), 0, 1) AS clash, any(start_ns) AS s, any(service) AS sv, \
             any(name) AS nm, any(kind) AS k, any(status_code) AS st, any(duration_ns) AS duration_ns \
             FROM spans WHERE {filter} GROUP BY span_id) \
             GROUP BY minute, sv, nm, k, st, bucket"
        ))?;
        let mut out = self.minute_rows(&bytes, true)?;
        if out.iter().any(|(_, clash)| *clash) {
            let bytes = self.rows(&format!(
                "SELECT intDiv(start_ns, {MINUTE_NANOS}) AS minute, service, name, kind, status_code, \
                 {bucket} AS bucket, count(), sum(duration_ns), min(duration_ns), max(duration_ns) \
                 FROM (SELECT start_ns, service, name, kind, status_code, duration_ns FROM spans WHERE {filter} \
                 LIMIT 1 BY trace_id, span_id) \
                 GROUP BY minute, service, name, kind, status_code, bucket"
            ))?;
            out = self.minute_rows(&bytes, false)?;
        }
        Ok(out.into_iter().map(|(bucket, _)| bucket).collect())
    }

    /// The buckets of an answer of [`Self::minute_statistics`], each with its `clash` when
    /// the answer has that column.
    fn minute_rows(&self, bytes: &[u8], with_clash: bool) -> Result<Vec<(MinuteBucket, bool)>, StoreError> {
        let bad = |e| self.malformed(e);
        let mut reader = Reader::new(bytes);
        let mut out = Vec::new();
        while !reader.is_empty() {
            let bucket = MinuteBucket {
                minute: reader.u64().map_err(bad)?,
                service: String::from_utf8_lossy(reader.string().map_err(bad)?).into_owned(),
                name: String::from_utf8_lossy(reader.string().map_err(bad)?).into_owned(),
                kind: SpanKind::from_otlp(i32::from(reader.u8().map_err(bad)?)),
                status: StatusCode::from_otlp(i32::from(reader.u8().map_err(bad)?)),
                bucket: reader.i32().map_err(bad)?,
                count: reader.u64().map_err(bad)?,
                sum_nanos: u128::from(reader.u64().map_err(bad)?),
                min_nanos: reader.u64().map_err(bad)?,
                max_nanos: reader.u64().map_err(bad)?,
            };
            let clash = with_clash && reader.u8().map_err(bad)? != 0;
            out.push((bucket, clash));
        }
        Ok(out)
    }
}
