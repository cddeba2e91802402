//! The scans analytics, service graphs and span metrics read through, answered by
//! ClickHouse rather than by the trait's defaults (which find trace ids, then read every
//! trace whole). Duplicates of a retried append are dropped in SQL (`LIMIT 1 BY trace_id,
//! span_id`); duplicates share a trace id, so on a cluster they share a shard.

use std::collections::{BTreeSet, HashMap};

use spindle_model::{AttributeValue, Span, SpanId, SpanKind, StatusCode, TraceId};
use spindle_query::sketch::GAMMA;
use spindle_store::{MinuteBucket, QueryControl, RedBucket, RowFields, SpanRow, StoreError, TraceQuery};

use crate::blob::{Decoder, Row, SPAN_COLUMNS, TAIL_COLUMNS};
use crate::rowbinary::Reader;
use crate::{day_filter, dedupe, kind_code, literal, schema, span_clauses, span_filter, ClickHouseStore};

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

/// Span ids occurring more than once in a scan's rows that are read apart, deduplicated;
/// with more, every row is deduplicated.
const REPEATED_LIMIT: usize = 10_000;

/// The rows of a scan's filter, each span once. Deduplicating every row (`LIMIT 1 BY
/// trace_id, span_id`) costs more than the aggregation itself on 18.16, and nearly every span
/// id occurs once: the ids that occur more than once (a retried append's copies, or another
/// trace's span with the same id) are found first by a grouping on the id alone, and only
/// their rows are deduplicated.
struct Rows {
    filter: String,
    repeated: Repeated,
}

enum Repeated {
    None,
    /// The repeated span ids, comma-separated.
    Ids(String),
    /// More than [`REPEATED_LIMIT`].
    Many,
}

impl Rows {
    fn of(store: &ClickHouseStore, filter: String) -> Result<Rows, StoreError> {
        let bytes = store.rows(&format!(
            "SELECT span_id FROM spans WHERE {filter} GROUP BY span_id HAVING count() > 1 LIMIT {}",
            REPEATED_LIMIT + 1
        ))?;
        let mut reader = Reader::new(&bytes);
        let mut ids = Vec::new();
        while !reader.is_empty() {
            ids.push(reader.u64().map_err(|e| store.malformed(e))?.to_string());
        }
        let repeated = match ids.len() {
            0 => Repeated::None,
            n if n > REPEATED_LIMIT => Repeated::Many,
            _ => Repeated::Ids(ids.join(", ")),
        };
        Ok(Rows { filter, repeated })
    }

    /// `SELECT {columns}` of the rows, `part` read first (`PREWHERE`), each span once.
    fn select(&self, columns: &str, part: &str) -> String {
        let filter = &self.filter;
        match &self.repeated {
            Repeated::None => format!("SELECT {columns} FROM spans PREWHERE {part} WHERE {filter}"),
            Repeated::Ids(ids) => format!(
                "SELECT {columns} FROM spans PREWHERE {part} WHERE {filter} AND span_id NOT IN ({ids}) \
                 UNION ALL SELECT {columns} FROM spans PREWHERE {part} AND span_id IN ({ids}) WHERE {filter} \
                 LIMIT 1 BY trace_id, span_id"
            ),
            Repeated::Many => {
                format!("SELECT {columns} FROM spans PREWHERE {part} WHERE {filter} LIMIT 1 BY trace_id, span_id")
            }
        }
    }
}

/// A group's value as SQL of [`group_route`] answers it: the route, then the string, int,
/// bool and double it may be.
struct GroupValue<'a> {
    route: u8,
    text: &'a [u8],
    int: i64,
    boolean: u8,
    double: f64,
}

impl<'a> GroupValue<'a> {
    fn read(reader: &mut Reader<'a>) -> Result<Self, &'static str> {
        Ok(GroupValue {
            route: reader.u8()?,
            text: reader.string()?,
            int: reader.i64()?,
            boolean: reader.u8()?,
            double: reader.f64()?,
        })
    }

    /// The text `Span::group_text` gives for routes 1 to 4 (the span's string, int, bool or
    /// double attribute); `None` for the others.
    fn typed_text(&self) -> Option<std::borrow::Cow<'a, str>> {
        match self.route {
            1 => Some(String::from_utf8_lossy(self.text)),
            2 => Some(AttributeValue::Int(self.int).to_display_string().into()),
            3 => Some(AttributeValue::Bool(self.boolean != 0).to_display_string().into()),
            4 => Some(AttributeValue::Double(self.double).to_display_string().into()),
            _ => None,
        }
    }
}

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
        for clause in span_clauses(query, &self.hot) {
            let bytes =
                self.rows(&format!("SELECT {SPAN_COLUMNS} FROM spans {clause} LIMIT 1 BY trace_id, span_id"))?;
            query.check()?;
            self.read_spans(&bytes, &mut |span| {
                if query.matches_span(&span) {
                    visit(&span);
                }
            })?;
        }
        Ok(())
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
        if fields.trace_only {
            // A repeated span changes neither answer, so no deduplication; one row per trace.
            let filter = span_filter(query);
            let bytes =
                self.rows(&format!("SELECT trace_id, max(start_ns) FROM spans WHERE {filter} GROUP BY trace_id"))?;
            query.check()?;
            let mut reader = Reader::new(&bytes);
            while !reader.is_empty() {
                let trace_id = reader.trace_id().map_err(|e| self.malformed(e))?;
                let start = reader.u64().map_err(|e| self.malformed(e))?;
                visit(&SpanRow::of_trace(trace_id, start));
            }
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
        let rows = Rows::of(self, span_filter(query))?;
        let bytes = self.rows(&rows.select(
            &format!("trace_id, span_id, service, name, kind, start_ns, duration_ns, status_code{group_columns}"),
            "1",
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
                    let value = GroupValue::read(&mut reader).map_err(bad)?;
                    let resource_text = reader.string().map_err(bad)?;
                    let mut row = head;
                    row.read_tail(&mut reader).map_err(bad)?;
                    match value.route {
                        5 => decoder.span(row)?.group_text(key).map(|g| g.into_owned()),
                        6 => Some(String::from_utf8_lossy(resource_text).into_owned()),
                        _ => value.typed_text().map(|g| g.into_owned()),
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
    /// [`group_route`], and spans whose group only a rebuilt span can say (route 5) come
    /// one per bucket and are rebuilt by a second read.
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
        let rows = Rows::of(self, span_filter(query))?;
        let mut rebuild = Vec::new();
        match group_by {
            None => self.red_part(&rows, "1", string_value("''"), "1", (step, group_by), &mut rebuild, visit)?,
            Some(key) => match identity_group("service", "name", key) {
                Some(column) => {
                    self.red_part(&rows, "1", string_value(&column), "1", (step, group_by), &mut rebuild, visit)?
                }
                None => {
                    let k = literal(key.as_bytes());
                    let (fast, value) = if self.hot.contains(key) {
                        (format!("{} = 1", schema::hot_place_column(key)), schema::hot_column(key))
                    } else {
                        (
                            format!("typed_only = 1 AND has(str_keys, {k})"),
                            format!("str_values[indexOf(str_keys, {k})]"),
                        )
                    };
                    let value = string_value(&value);
                    self.red_part(&rows, "1", value, &fast, (step, group_by), &mut rebuild, visit)?;
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
                    let route = group_route(&k);
                    self.red_part(&rows, &route, value, &rest, (step, group_by), &mut rebuild, visit)?;
                }
            },
        }
        query.check()?;
        if rebuild.is_empty() {
            return Ok(true);
        }
        let pairs: Vec<String> =
            rebuild.iter().map(|(trace, span)| format!("({}, {span})", crate::trace_literal(*trace))).collect();
        let spans = self.spans_selected(&format!(
            "PREWHERE (trace_id, span_id) IN ({}) WHERE {} LIMIT 1 BY trace_id, span_id",
            pairs.join(", "),
            rows.filter
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
        Ok(true)
    }

    /// One part of [`Self::red_statistics`]: the rows `rows` selects that meet `part` (read
    /// first, as `PREWHERE`; `1` for all), their route by `route` (an expression of the row; 1 when the value is
    /// a string), and their group's value by `value`: one string, or the string, int, bool
    /// and double of [`group_route`]'s routes, in steps of `step` grouped by `group_by`.
    /// Route-5 spans go to `rebuild`.
    #[allow(clippy::too_many_arguments)]
    fn red_part(
        &self,
        rows: &Rows,
        route: &str,
        value: [String; 4],
        part: &str,
        (step, group_by): (u64, Option<&str>),
        rebuild: &mut Vec<(TraceId, u64)>,
        visit: &mut dyn FnMut(&RedBucket),
    ) -> Result<(), StoreError> {
        let [gs, gi, gb, gd] = value;
        let columns = format!(
            "trace_id, span_id, start_ns, duration_ns, status_code = {error} AS error, {bucket} AS bucket, \
             {route} AS route, {gs} AS gs, {gi} AS gi, {gb} AS gb, {gd} AS gd",
            error = StatusCode::Error.to_otlp(),
            bucket = bucket_sql(),
        );
        let bytes = self.rows(&format!(
            "SELECT if(route = 6, 1, route) AS r, gs, gi, gb, gd, if(route = 5, trace_id, toFixedString('', 16)) AS rt, \
             if(route = 5, span_id, 0) AS rs, min(start_ns), error, bucket, count(), sum(duration_ns), \
             min(duration_ns), max(duration_ns) FROM ({}) WHERE route != 0 \
             GROUP BY r, gs, gi, gb, gd, rt, rs, intDiv(start_ns, {step}), error, bucket",
            rows.select(&columns, part)
        ))?;
        let bad = |e| self.malformed(e);
        let mut reader = Reader::new(&bytes);
        while !reader.is_empty() {
            let value = GroupValue::read(&mut reader).map_err(bad)?;
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
            bucket.group = match (group_by, value.route) {
                (None, _) => None,
                (Some(_), 5) => {
                    rebuild.push((trace_id, span_id));
                    continue;
                }
                (Some(_), _) => value.typed_text(),
            };
            visit(&bucket);
        }
        Ok(())
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
        let rows = Rows::of(self, filter)?;
        let bytes = self.rows(&format!(
            "SELECT intDiv(start_ns, {MINUTE_NANOS}) AS minute, service, name, kind, status_code, \
             {bucket} AS bucket, count(), sum(duration_ns), min(duration_ns), max(duration_ns) \
             FROM ({}) GROUP BY minute, service, name, kind, status_code, bucket",
            rows.select("trace_id, span_id, start_ns, service, name, kind, status_code, duration_ns", "1"),
            bucket = bucket_sql(),
        ))?;
        self.minute_rows(&bytes)
    }

    /// The buckets of an answer of [`Self::minute_statistics`].
    fn minute_rows(&self, bytes: &[u8]) -> Result<Vec<MinuteBucket>, StoreError> {
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
            out.push(bucket);
        }
        Ok(out)
    }
}
