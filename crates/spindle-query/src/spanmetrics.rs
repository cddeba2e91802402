//! Span metrics: calls, errors and latency sketches per (service, operation, kind, status)
//! and per minute, derived from spans as they are ingested.
//!
//! These are the pre-aggregates behind the Jaeger SPM API and RED dashboards, so those
//! never rescan spans. Aggregation is two-step: [`BatchAggregate::from_spans`] groups one
//! batch under borrowed keys (cheap, before the batch moves into the store) and
//! [`SpanMetrics::merge`] adds it once the store has accepted the batch, so nothing
//! refused is counted. The whole state serializes for persistence by the caller.
//!
//! Names are client-chosen, so the caller bounds the series per service: past its limit a
//! service's new span names are counted in an overflow series ([`SeriesKey::overflow`]),
//! as the OpenTelemetry spanmetrics connector does with `otel.metric.overflow`. The number
//! of services is bounded too: spans of services past it are counted in the overflow series
//! of the service [`OVERFLOW_SERVICE`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use spindle_model::{Span, SpanKind, StatusCode, TraceId};

use crate::sketch::LatencySketch;

pub const BUCKET_NANOS: u64 = 60_000_000_000;

/// The operation an overflow series is shown under when series are grouped by operation.
pub const OVERFLOW_OPERATION: &str = "otel.metric.overflow";

/// The service of the overflow series of services past the caller's limit on services: the
/// spans of every service beyond it, all together (no operation, kind and status kept). The
/// caller reserves the name: spans of a client's own service of that name count there too,
/// so no real service's series can carry it.
pub const OVERFLOW_SERVICE: &str = "otel.metric.overflow";

/// One series. Names are shared (`Arc`), so a series present in many minutes holds its
/// strings once and copying a key into a minute allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeriesKey {
    pub service: Arc<str>,
    /// Empty for an overflow series.
    pub operation: Arc<str>,
    pub kind: SpanKind,
    pub status: StatusCode,
    /// The service's spans of names beyond its series limit, all names together (kind and
    /// status are kept: they are bounded, and Jaeger's Monitor tab filters on the kind).
    pub overflow: bool,
}

impl SeriesKey {
    /// The operation as series grouped by operation show it.
    pub fn operation_label(&self) -> &str {
        if self.overflow {
            OVERFLOW_OPERATION
        } else {
            &self.operation
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    pub calls: u64,
    pub latency: LatencySketch,
    /// A recent trace of this series, for exemplars and "show me one" links.
    pub example_trace: Option<TraceId>,
}

impl Aggregate {
    pub fn merge(&mut self, other: &Aggregate) {
        self.calls += other.calls;
        self.latency.merge(&other.latency);
        if other.example_trace.is_some() {
            self.example_trace = other.example_trace;
        }
    }
}

/// One batch, grouped by series and minute.
#[derive(Debug, Default)]
pub struct BatchAggregate {
    groups: HashMap<(u64, SeriesKey), Aggregate>,
}

impl BatchAggregate {
    pub fn from_spans(spans: &[Span]) -> Self {
        // ahash: SipHash over two strings per span was a visible part of the receivers' time.
        let mut borrowed: HashMap<(u64, &str, &str, SpanKind, StatusCode), Aggregate, ahash::RandomState> =
            HashMap::default();
        let mut services = spindle_model::ServiceNames::default();
        for span in spans {
            let minute = span.start_time_unix_nano / BUCKET_NANOS;
            let agg = borrowed
                .entry((minute, services.of(span), span.name.as_str(), span.kind, span.status.code))
                .or_default();
            agg.calls += 1;
            agg.latency.add(span.duration_nanos());
            agg.example_trace = Some(span.trace_id);
        }
        BatchAggregate {
            groups: borrowed
                .into_iter()
                .map(|((minute, service, operation, kind, status), agg)| {
                    let key = SeriesKey {
                        service: service.into(),
                        operation: operation.into(),
                        kind,
                        status,
                        overflow: false,
                    };
                    ((minute, key), agg)
                })
                .collect(),
        }
    }

    /// Adds `agg` to `key`'s minute.
    pub fn add(&mut self, minute: u64, key: SeriesKey, agg: &Aggregate) {
        self.groups.entry((minute, key)).or_default().merge(agg);
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Per series, the batch's total (all minutes together).
    pub fn totals(&self) -> HashMap<&SeriesKey, Aggregate> {
        let mut out: HashMap<&SeriesKey, Aggregate> = HashMap::new();
        for ((_, key), agg) in &self.groups {
            out.entry(key).or_default().merge(agg);
        }
        out
    }
}

/// Minute buckets of every series.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanMetrics {
    buckets: BTreeMap<u64, HashMap<SeriesKey, Aggregate>>,
}

/// Which series a metrics query covers.
#[derive(Debug, Clone, Default)]
pub struct SeriesFilter {
    /// Empty means every service.
    pub services: Vec<String>,
    /// Empty means every kind.
    pub kinds: Vec<SpanKind>,
    pub operation: Option<String>,
}

impl SeriesFilter {
    fn matches(&self, key: &SeriesKey) -> bool {
        (self.services.is_empty() || self.services.iter().any(|s| **s == *key.service))
            && (self.kinds.is_empty() || self.kinds.contains(&key.kind))
            && self.operation.as_ref().is_none_or(|o| **o == *key.operation_label())
    }
}

/// One point of a series: calls, errors and latencies over `[start, start + step)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Point {
    pub start_unix_nano: u64,
    pub calls: u64,
    pub errors: u64,
    pub latency: LatencySketch,
}

impl SpanMetrics {
    pub fn merge(&mut self, batch: BatchAggregate) {
        for ((minute, key), agg) in batch.groups {
            self.buckets.entry(minute).or_default().entry(key).or_default().merge(&agg);
        }
    }

    /// The minute aggregates a store computed itself ([`TraceStore::minute_buckets`]): each
    /// row's bucket merged into its series and minute, so the answers are those of the same
    /// spans counted at append (apart from example traces, which rows do not carry). No
    /// series limit applies here: the store's rows are bounded by what the query asked for.
    ///
    /// [`TraceStore::minute_buckets`]: spindle_store::TraceStore::minute_buckets
    pub fn from_minute_buckets(rows: impl IntoIterator<Item = spindle_store::MinuteBucket>) -> Self {
        let mut names: HashMap<String, Arc<str>> = HashMap::new();
        let mut intern = |name: String| Arc::clone(names.entry(name).or_insert_with_key(|n| n.as_str().into()));
        let mut out = SpanMetrics::default();
        for row in rows {
            let key = SeriesKey {
                service: intern(row.service),
                operation: intern(row.name),
                kind: row.kind,
                status: row.status,
                overflow: false,
            };
            let latency =
                LatencySketch::from_bucket(row.bucket, row.count, row.sum_nanos, row.min_nanos, row.max_nanos);
            out.insert(row.minute, key, &Aggregate { calls: row.count, latency, example_trace: None });
        }
        out
    }

    /// Drops minutes that start before `unix_nano` (retention).
    pub fn drop_before(&mut self, unix_nano: u64) {
        let keep = self.buckets.split_off(&(unix_nano / BUCKET_NANOS));
        self.buckets = keep;
    }

    /// Drops minutes that start after `unix_nano`: state from a client clock far ahead,
    /// which retention, measured from now, would never reach.
    pub fn drop_after(&mut self, unix_nano: u64) {
        if let Some(first) = (unix_nano / BUCKET_NANOS).checked_add(1) {
            self.buckets.split_off(&first);
        }
    }

    pub fn minutes(&self) -> usize {
        self.buckets.len()
    }

    /// The first and last minute held, as unix nanoseconds of their start.
    pub fn span_of_minutes(&self) -> Option<(u64, u64)> {
        let first = self.buckets.keys().next()?;
        let last = self.buckets.keys().next_back()?;
        Some((first * BUCKET_NANOS, last * BUCKET_NANOS))
    }

    /// Every series present in some minute, once each.
    pub fn series_keys(&self) -> Vec<&SeriesKey> {
        let mut seen: std::collections::HashSet<&SeriesKey> = std::collections::HashSet::new();
        for series in self.buckets.values() {
            seen.extend(series.keys());
        }
        seen.into_iter().collect()
    }

    /// Every minute with its series, oldest first (for persistence by the caller).
    pub fn iter(&self) -> impl Iterator<Item = (u64, &HashMap<SeriesKey, Aggregate>)> {
        self.buckets.iter().map(|(m, s)| (*m, s))
    }

    /// Adds `agg` to `key` in `minute` (as a number of [`BUCKET_NANOS`] since the epoch).
    pub fn insert(&mut self, minute: u64, key: SeriesKey, agg: &Aggregate) {
        self.buckets.entry(minute).or_default().entry(key).or_default().merge(agg);
    }

    /// Series over `[start, end)` in steps of `step` (rounded up to whole minutes),
    /// grouped by service, or by service and operation.
    pub fn series(
        &self,
        filter: &SeriesFilter,
        start_unix_nano: u64,
        end_unix_nano: u64,
        step_nanos: u64,
        by_operation: bool,
    ) -> BTreeMap<(String, Option<String>), Vec<Point>> {
        let step = step_nanos.max(BUCKET_NANOS).div_ceil(BUCKET_NANOS) * BUCKET_NANOS;
        let first = start_unix_nano / step * step;
        // Groups are looked up by borrowed names and numbered, so a day of minutes costs no
        // allocation per minute and series.
        let mut index: HashMap<(&str, Option<&str>), usize> = HashMap::new();
        let mut groups: Vec<BTreeMap<u64, Point>> = Vec::new();
        let range = (start_unix_nano / BUCKET_NANOS)..=(end_unix_nano.saturating_sub(1) / BUCKET_NANOS);
        for (minute, series) in self.buckets.range(range) {
            let slot = (minute * BUCKET_NANOS).max(first) / step * step;
            for (key, agg) in series.iter().filter(|(k, _)| filter.matches(k)) {
                let name = (&*key.service, by_operation.then_some(key.operation_label()));
                let g = *index.entry(name).or_insert_with(|| {
                    groups.push(BTreeMap::new());
                    groups.len() - 1
                });
                let point =
                    groups[g].entry(slot).or_insert_with(|| Point { start_unix_nano: slot, ..Default::default() });
                point.calls += agg.calls;
                if key.status == StatusCode::Error {
                    point.errors += agg.calls;
                }
                point.latency.merge(&agg.latency);
            }
        }
        index
            .into_iter()
            .map(|((service, operation), g)| {
                let points = std::mem::take(&mut groups[g]).into_values().collect();
                ((service.to_string(), operation.map(str::to_string)), points)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use spindle_model::{KeyValue, Resource, SpanId, Status};

    use super::*;

    fn span(service: &str, op: &str, minute: u64, duration: u64, error: bool) -> Span {
        let start = minute * BUCKET_NANOS + 1;
        Span {
            trace_id: TraceId(minute as u128 + 1),
            span_id: SpanId(1),
            name: op.into(),
            kind: SpanKind::Server,
            start_time_unix_nano: start,
            end_time_unix_nano: start + duration,
            status: Status { code: if error { StatusCode::Error } else { StatusCode::Unset }, message: String::new() },
            resource: Arc::new(Resource {
                attributes: vec![KeyValue::string("service.name", service)],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn series_roll_minutes_into_steps_and_count_errors() {
        let mut m = SpanMetrics::default();
        m.merge(BatchAggregate::from_spans(&[
            span("a", "x", 10, 1_000, false),
            span("a", "x", 10, 3_000, true),
            span("a", "y", 11, 2_000, false),
            span("b", "x", 11, 5_000, false),
            span("a", "x", 13, 4_000, false),
        ]));
        let filter = SeriesFilter { services: vec!["a".into()], ..Default::default() };
        let series = m.series(&filter, 10 * BUCKET_NANOS, 14 * BUCKET_NANOS, 2 * BUCKET_NANOS, false);
        let points = &series[&("a".to_string(), None)];
        assert_eq!(points.len(), 2);
        assert_eq!((points[0].calls, points[0].errors), (3, 1));
        assert_eq!((points[1].calls, points[1].errors), (1, 0));
        assert_eq!(points[1].start_unix_nano, 12 * BUCKET_NANOS);
        let by_op = m.series(&filter, 0, u64::MAX, BUCKET_NANOS, true);
        assert_eq!(by_op.len(), 2);
        m.drop_before(11 * BUCKET_NANOS);
        assert_eq!(m.minutes(), 2);
        m.drop_after(12 * BUCKET_NANOS);
        assert_eq!(m.minutes(), 1, "minute 13 starts after minute 12's start");
        m.drop_after(u64::MAX);
        assert_eq!(m.minutes(), 1);
    }

    #[test]
    fn bucketed_rows_give_the_minutes_that_counting_at_append_gives() {
        let spans: Vec<Span> = (0..200u64)
            .map(|i| {
                span(
                    ["a", "b"][(i % 2) as usize],
                    ["x", "y", "z"][(i % 3) as usize],
                    10 + i % 4,
                    i * 7_919 % 50_000,
                    i % 5 == 0,
                )
            })
            .collect();
        let mut counted = SpanMetrics::default();
        counted.merge(BatchAggregate::from_spans(&spans));
        // What a store grouping by minute, series and bucket answers.
        let mut rows: BTreeMap<(u64, String, String, i32, bool), spindle_store::MinuteBucket> = BTreeMap::new();
        for s in &spans {
            let d = s.duration_nanos();
            let bucket = crate::sketch::bucket_index(d);
            let minute = s.start_time_unix_nano / BUCKET_NANOS;
            let row = rows
                .entry((minute, s.service_name().into(), s.name.to_string(), bucket, s.is_error()))
                .or_insert(spindle_store::MinuteBucket {
                    minute,
                    service: s.service_name().into(),
                    name: s.name.to_string(),
                    kind: s.kind,
                    status: s.status.code,
                    bucket,
                    count: 0,
                    sum_nanos: 0,
                    min_nanos: u64::MAX,
                    max_nanos: 0,
                });
            row.count += 1;
            row.sum_nanos += u128::from(d);
            row.min_nanos = row.min_nanos.min(d);
            row.max_nanos = row.max_nanos.max(d);
        }
        let built = SpanMetrics::from_minute_buckets(rows.into_values());
        let filter = SeriesFilter::default();
        for by_operation in [false, true] {
            let want = counted.series(&filter, 0, u64::MAX, 2 * BUCKET_NANOS, by_operation);
            let got = built.series(&filter, 0, u64::MAX, 2 * BUCKET_NANOS, by_operation);
            assert_eq!(got, want, "by operation: {by_operation}");
        }
        let calls: u64 =
            built.series(&filter, 0, u64::MAX, BUCKET_NANOS, true).values().flatten().map(|p| p.calls).sum();
        assert_eq!(calls, 200);
    }

    #[test]
    fn an_overflow_series_is_its_own_operation() {
        let mut m = SpanMetrics::default();
        let overflow = SeriesKey {
            service: "a".into(),
            operation: "".into(),
            kind: SpanKind::Server,
            status: StatusCode::Error,
            overflow: true,
        };
        m.insert(5, overflow, &Aggregate { calls: 4, ..Default::default() });
        m.merge(BatchAggregate::from_spans(&[span("a", "", 5, 1_000, false)]));
        let by_op = m.series(&SeriesFilter::default(), 0, u64::MAX, BUCKET_NANOS, true);
        let calls = |op: &str| by_op[&("a".to_string(), Some(op.to_string()))][0].calls;
        assert_eq!((calls(OVERFLOW_OPERATION), calls("")), (4, 1));
        assert_eq!(by_op[&("a".to_string(), Some(OVERFLOW_OPERATION.to_string()))][0].errors, 4);
        let only = SeriesFilter { operation: Some(OVERFLOW_OPERATION.into()), ..Default::default() };
        assert_eq!(m.series(&only, 0, u64::MAX, BUCKET_NANOS, true).len(), 1);
        assert_eq!(m.series_keys().len(), 2);
    }
}
