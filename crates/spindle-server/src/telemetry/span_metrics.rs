//! Span metrics derived at ingest, named as the OpenTelemetry spanmetrics connector names
//! them: `traces_span_metrics_calls_total` and `traces_span_metrics_duration_seconds_*` by
//! service, span name, kind and status, with the trace id of a recent span as the bucket's
//! exemplar. [`SpanSeries::prepare`] groups a batch before the store takes it;
//! [`SpanSeries::record`] feeds the groups to these cumulative series and returns them as
//! the per-minute aggregates of [`super::persistence`].
//!
//! Span names are client-chosen (an id in a name is a classic instrumentation bug), so each
//! service has at most `max_span_metric_series_per_service` series. Past it, the service's
//! new (name, kind, status) combinations are counted in an overflow series per kind and
//! status, labelled `otel_metric_overflow="true"` without `span_name`, as the connector's
//! `aggregation_cardinality_limit` does. Known series keep counting. One registry decides
//! for both the Prometheus series and the per-minute aggregates, and is seeded from the
//! persisted minutes at start, so the limit holds across restarts.
//!
//! The services are client-chosen too (a `service.name` per host or per request), so at
//! most `max_services` have series of their own. Spans of further services count in one
//! overflow series set (per kind and status) whose `service_name` is
//! [`OVERFLOW_SERVICE`], labelled `otel_metric_overflow="true"` without `span_name`. That
//! name is reserved: a client's own service of that name counts there too, so no other
//! series can carry the label set. The registry decides this too, seeded the same way.
//!
//! Spans starting outside the accepted window around the server's clock are stored but
//! derive nothing here: minute buckets keyed by a client clock in 2076 would never be
//! trimmed.
//!
//! The per-span cost is a map lookup by borrowed names under a read lock: nothing is
//! allocated for a known series, and a name or a service past its limit costs the same
//! lookup.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::{Registry, Unit};
use spindle_model::{Span, SpanKind, StatusCode, TraceId};
use spindle_query::sketch::LatencySketch;
use spindle_query::spanmetrics::{Aggregate, BatchAggregate, SeriesKey, SpanMetrics, BUCKET_NANOS, OVERFLOW_SERVICE};

use crate::limits::{Limit, LimitHits};

/// The spanmetrics connector's default explicit buckets, in seconds.
const DURATION_BUCKETS: [f64; 16] =
    [0.002, 0.004, 0.006, 0.008, 0.01, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.4, 2.0, 5.0, 10.0, 15.0];

/// Labels of one series; `span_name` is `None` for a service's overflow series.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct SpanLabels {
    /// `None` for the default tenant, whose series keep the connector's label set.
    pub tenant: Option<Arc<str>>,
    pub service_name: Arc<str>,
    pub span_name: Option<Arc<str>>,
    pub span_kind: &'static str,
    pub status_code: &'static str,
}

impl EncodeLabelSet for SpanLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        let (kind, status) = (("span_kind", self.span_kind), ("status_code", self.status_code));
        match &self.span_name {
            Some(name) => {
                [("service_name", &*self.service_name), ("span_name", &**name), kind, status].encode(encoder)?
            }
            None => [("service_name", &*self.service_name), kind, status, ("otel_metric_overflow", "true")]
                .encode(encoder)?,
        }
        match &self.tenant {
            Some(tenant) => [("tenant", &**tenant)].encode(encoder),
            None => Ok(()),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct TraceExemplar {
    pub trace_id: String,
}

fn kind_label(kind: SpanKind) -> &'static str {
    match kind {
        SpanKind::Unspecified => "SPAN_KIND_UNSPECIFIED",
        SpanKind::Internal => "SPAN_KIND_INTERNAL",
        SpanKind::Server => "SPAN_KIND_SERVER",
        SpanKind::Client => "SPAN_KIND_CLIENT",
        SpanKind::Producer => "SPAN_KIND_PRODUCER",
        SpanKind::Consumer => "SPAN_KIND_CONSUMER",
    }
}

fn status_label(status: StatusCode) -> &'static str {
    match status {
        StatusCode::Unset => "STATUS_CODE_UNSET",
        StatusCode::Ok => "STATUS_CODE_OK",
        StatusCode::Error => "STATUS_CODE_ERROR",
    }
}

type Histogram = HistogramWithExemplars<TraceExemplar>;

/// One admitted series (or overflow series): its key and, once it has counted a span in
/// this process, its Prometheus handles (created lazily, so seeding from the persisted
/// minutes exposes no zero series).
struct Series {
    key: SeriesKey,
    metrics: OnceLock<(Counter, Histogram)>,
}

impl Series {
    fn new(key: SeriesKey) -> Arc<Self> {
        Arc::new(Series { key, metrics: OnceLock::new() })
    }

    fn matches(&self, kind: SpanKind, status: StatusCode) -> bool {
        self.key.kind == kind && self.key.status == status
    }
}

/// One service's series.
struct ServiceSeries {
    service: Arc<str>,
    /// By span name, the series of each (kind, status) seen with it (a handful at most).
    by_name: HashMap<Arc<str>, Vec<Arc<Series>>, ahash::RandomState>,
    /// Series in `by_name`.
    named: usize,
    overflow: Vec<Arc<Series>>,
}

enum Lookup<'a> {
    Known(&'a Arc<Series>),
    Overflow(&'a Arc<Series>),
    /// Needs the write lock: a series to admit or an overflow series to create.
    Missing,
}

impl ServiceSeries {
    fn new(service: Arc<str>) -> Self {
        ServiceSeries { service, by_name: HashMap::default(), named: 0, overflow: Vec::new() }
    }

    fn lookup(&self, name: &str, kind: SpanKind, status: StatusCode, limit: usize) -> Lookup<'_> {
        if let Some(s) = self.by_name.get(name).and_then(|v| v.iter().find(|s| s.matches(kind, status))) {
            return Lookup::Known(s);
        }
        if self.named < limit {
            return Lookup::Missing;
        }
        match self.overflow.iter().find(|s| s.matches(kind, status)) {
            Some(s) => Lookup::Overflow(s),
            None => Lookup::Missing,
        }
    }

    /// The span's series, admitted if the service is under `limit`; the bool says overflow.
    fn get_or_insert(&mut self, name: &str, kind: SpanKind, status: StatusCode, limit: usize) -> (Arc<Series>, bool) {
        match self.lookup(name, kind, status, limit) {
            Lookup::Known(s) => return (Arc::clone(s), false),
            Lookup::Overflow(s) => return (Arc::clone(s), true),
            Lookup::Missing => {}
        }
        if self.named < limit {
            let key = SeriesKey {
                service: Arc::clone(&self.service),
                operation: Arc::from(name),
                kind,
                status,
                overflow: false,
            };
            let series = Series::new(key);
            self.insert(Arc::clone(&series));
            (series, false)
        } else {
            let key = SeriesKey {
                service: Arc::clone(&self.service),
                operation: Arc::from(""),
                kind,
                status,
                overflow: true,
            };
            let series = Series::new(key);
            self.overflow.push(Arc::clone(&series));
            (series, true)
        }
    }

    /// Adds a series known from elsewhere (the persisted minutes), whatever the limit.
    fn insert(&mut self, series: Arc<Series>) {
        if series.key.overflow {
            if !self.overflow.iter().any(|s| s.matches(series.key.kind, series.key.status)) {
                self.overflow.push(series);
            }
            return;
        }
        let same = self.by_name.entry(Arc::clone(&series.key.operation)).or_default();
        if !same.iter().any(|s| s.matches(series.key.kind, series.key.status)) {
            same.push(series);
            self.named += 1;
        }
    }
}

/// Every service's series, and the overflow of the services past the limit.
struct Services {
    /// At most `max_services` (more when seeded from minutes kept under a higher limit);
    /// never holds [`OVERFLOW_SERVICE`].
    admitted: HashMap<Arc<str>, ServiceSeries, ahash::RandomState>,
    /// Series of [`OVERFLOW_SERVICE`]: overflow series only (its name limit is 0).
    overflow: ServiceSeries,
}

impl Default for Services {
    fn default() -> Self {
        Services { admitted: HashMap::default(), overflow: ServiceSeries::new(Arc::from(OVERFLOW_SERVICE)) }
    }
}

impl Services {
    /// The entry `service`'s spans count in and whether it is the services' overflow;
    /// `None` when a new service is to be admitted (under the write lock).
    fn entry(&self, service: &str, max_services: usize) -> Option<(&ServiceSeries, bool)> {
        if let Some(entry) = self.admitted.get(service) {
            return Some((entry, false));
        }
        if service == OVERFLOW_SERVICE || self.admitted.len() >= max_services {
            return Some((&self.overflow, true));
        }
        None
    }
}

/// The spans of one series and minute in a batch.
struct Group {
    series: Arc<Series>,
    minute: u64,
    durations: Vec<u64>,
    trace: TraceId,
}

/// A batch grouped by [`SpanSeries::prepare`], waiting for the store to accept it.
pub struct PreparedBatch {
    groups: Vec<Group>,
    /// Spans counted in an overflow series, and the first service they came from.
    overflowed: u64,
    overflow_service: Option<Arc<str>>,
    /// Spans counted in the services' overflow, and the first service they came from.
    services_overflowed: u64,
    services_overflow_example: Option<String>,
    /// Spans starting outside the accepted window, and the first one's service and start.
    outside_window: u64,
    outside_example: Option<(String, u64)>,
}

/// The cumulative span-metric series of the registry and the series limit's registry.
pub struct SpanSeries {
    /// The `tenant` label of the series; `None` for the default tenant.
    tenant: Option<Arc<str>>,
    calls: Family<SpanLabels, Counter>,
    durations: Family<SpanLabels, Histogram>,
    services: RwLock<Services>,
    max_series_per_service: usize,
    max_services: usize,
    max_future: Duration,
    max_age: Duration,
}

impl SpanSeries {
    pub fn register(
        registry: &mut Registry,
        max_series_per_service: usize,
        max_services: usize,
        max_future: Duration,
        max_age: Duration,
    ) -> Self {
        let calls = Family::<SpanLabels, Counter>::default();
        let durations = Family::<SpanLabels, Histogram>::new_with_constructor(|| {
            HistogramWithExemplars::new(DURATION_BUCKETS.into_iter())
        });
        registry.register("traces_span_metrics_calls", "Spans by service, name, kind and status", calls.clone());
        registry.register_with_unit(
            "traces_span_metrics_duration",
            "Span durations by service, name, kind and status",
            Unit::Seconds,
            durations.clone(),
        );
        SpanSeries {
            tenant: None,
            calls,
            durations,
            services: RwLock::default(),
            max_series_per_service,
            max_services,
            max_future,
            max_age,
        }
    }

    /// The series of another tenant, in the same metric families, labelled `tenant`, with
    /// limits of its own.
    pub fn for_tenant(
        &self,
        tenant: Arc<str>,
        max_series_per_service: usize,
        max_services: usize,
        max_future: Duration,
        max_age: Duration,
    ) -> Self {
        SpanSeries {
            tenant: Some(tenant),
            calls: self.calls.clone(),
            durations: self.durations.clone(),
            services: RwLock::default(),
            max_series_per_service,
            max_services,
            max_future,
            max_age,
        }
    }

    /// Admits every series and service the persisted minutes hold, so a restart does not
    /// admit a second set of names or services on top of them.
    pub fn seed(&self, minutes: &SpanMetrics) {
        let mut services = self.services.write().unwrap_or_else(|p| p.into_inner());
        for key in minutes.series_keys() {
            if &*key.service == OVERFLOW_SERVICE {
                // Named series of that service (from a release without the reservation) stay
                // in the minutes but get no place: the name means the overflow set now.
                if key.overflow {
                    services.overflow.insert(Series::new(key.clone()));
                }
                continue;
            }
            let service = services
                .admitted
                .entry(Arc::clone(&key.service))
                .or_insert_with(|| ServiceSeries::new(Arc::clone(&key.service)));
            service.insert(Series::new(key.clone()));
        }
    }

    /// Groups a batch by series and minute; cheap, done before the batch moves into the
    /// store. `now_unix_nano` is the server's clock.
    pub fn prepare(&self, spans: &[Span], now_unix_nano: u64) -> PreparedBatch {
        let earliest = now_unix_nano.saturating_sub(self.max_age.as_nanos() as u64);
        let latest = now_unix_nano.saturating_add(self.max_future.as_nanos() as u64);
        let limit = self.max_series_per_service;
        let max_services = self.max_services;
        let mut batch = PreparedBatch {
            groups: Vec::new(),
            overflowed: 0,
            overflow_service: None,
            services_overflowed: 0,
            services_overflow_example: None,
            outside_window: 0,
            outside_example: None,
        };
        // (series, minute) -> index in `batch.groups`; ahash, as the receivers' profile asks.
        let mut index: HashMap<(usize, u64), usize, ahash::RandomState> = HashMap::default();
        // `overflow`: the series is an overflow series; `of_services`: the services' one.
        let mut add =
            |batch: &mut PreparedBatch, series: &Arc<Series>, overflow: bool, of_services: bool, span: &Span| {
                let minute = span.start_time_unix_nano / BUCKET_NANOS;
                let slot = *index.entry((Arc::as_ptr(series) as usize, minute)).or_insert_with(|| {
                    batch.groups.push(Group {
                        series: Arc::clone(series),
                        minute,
                        durations: Vec::new(),
                        trace: span.trace_id,
                    });
                    batch.groups.len() - 1
                });
                let group = &mut batch.groups[slot];
                group.durations.push(span.duration_nanos());
                group.trace = span.trace_id;
                if of_services {
                    batch.services_overflowed += 1;
                    if batch.services_overflow_example.is_none() {
                        batch.services_overflow_example = Some(span.service_name().to_string());
                    }
                } else if overflow {
                    batch.overflowed += 1;
                    if batch.overflow_service.is_none() {
                        batch.overflow_service = Some(Arc::clone(&series.key.service));
                    }
                }
            };
        let mut names = spindle_model::ServiceNames::default();
        let mut missing: Vec<(&str, &Span)> = Vec::new();
        {
            let services = self.services.read().unwrap_or_else(|p| p.into_inner());
            // The last span's service entry: a batch's spans come grouped by resource.
            let mut last: Option<(&str, Option<(&ServiceSeries, bool)>)> = None;
            for span in spans {
                let start = span.start_time_unix_nano;
                let service = names.of(span);
                if start < earliest || start > latest {
                    batch.outside_window += 1;
                    if batch.outside_example.is_none() {
                        batch.outside_example = Some((service.to_string(), start));
                    }
                    continue;
                }
                let entry = match last {
                    Some((name, entry)) if std::ptr::eq(name, service) => entry,
                    _ => {
                        let entry = services.entry(service, max_services);
                        last = Some((service, entry));
                        entry
                    }
                };
                let Some((entry, of_services)) = entry else {
                    missing.push((service, span));
                    continue;
                };
                // The services' overflow holds overflow series only.
                let limit = if of_services { 0 } else { limit };
                match entry.lookup(&span.name, span.kind, span.status.code, limit) {
                    Lookup::Known(series) => add(&mut batch, series, false, of_services, span),
                    Lookup::Overflow(series) => add(&mut batch, series, true, of_services, span),
                    Lookup::Missing => missing.push((service, span)),
                }
            }
        }
        if !missing.is_empty() {
            let mut guard = self.services.write().unwrap_or_else(|p| p.into_inner());
            let services = &mut *guard;
            for (service, span) in missing {
                // Decided again under the write lock: another batch may have admitted services.
                if services.entry(service, max_services).is_none() {
                    let name: Arc<str> = Arc::from(service);
                    services.admitted.insert(Arc::clone(&name), ServiceSeries::new(name));
                }
                let (entry, of_services, limit) = match services.admitted.get_mut(service) {
                    Some(entry) => (entry, false, limit),
                    None => (&mut services.overflow, true, 0),
                };
                let (series, overflow) = entry.get_or_insert(&span.name, span.kind, span.status.code, limit);
                add(&mut batch, &series, overflow, of_services, span);
            }
        }
        batch
    }

    /// Counts a batch the store accepted in the Prometheus series and the limit hits, and
    /// returns it as per-minute aggregates.
    pub fn record(&self, batch: PreparedBatch, hits: &LimitHits) -> BatchAggregate {
        let mut minutes = BatchAggregate::default();
        for group in batch.groups {
            let (calls, histogram) = group.series.metrics.get_or_init(|| {
                let key = &group.series.key;
                let labels = SpanLabels {
                    tenant: self.tenant.clone(),
                    service_name: Arc::clone(&key.service),
                    span_name: (!key.overflow).then(|| Arc::clone(&key.operation)),
                    span_kind: kind_label(key.kind),
                    status_code: status_label(key.status),
                };
                (self.calls.get_or_create(&labels).clone(), self.durations.get_or_create(&labels).clone())
            });
            calls.inc_by(group.durations.len() as u64);
            let mut latency = LatencySketch::default();
            if let Some((last, rest)) = group.durations.split_last() {
                for &d in rest {
                    histogram.observe(d as f64 / 1e9, None, None);
                    latency.add(d);
                }
                histogram.observe(*last as f64 / 1e9, Some(TraceExemplar { trace_id: group.trace.to_hex() }), None);
                latency.add(*last);
            }
            let agg = Aggregate { calls: group.durations.len() as u64, latency, example_trace: Some(group.trace) };
            minutes.add(group.minute, group.series.key.clone(), &agg);
        }
        if let Some(service) = &batch.overflow_service {
            let limit = self.max_series_per_service;
            hits.hit(
                Limit::SpanMetricSeries,
                batch.overflowed,
                &format_args!(
                    "service {service:?} has {limit} span-metric series (max_span_metric_series_per_service); \
                     spans of further names are counted in its otel_metric_overflow series"
                ),
            );
        }
        if let Some(service) = &batch.services_overflow_example {
            let max = self.max_services;
            hits.hit(
                Limit::Services,
                batch.services_overflowed,
                &format_args!(
                    "{max} services have span metrics (max_services); spans of further services, such as \
                     {service:?}, are counted in the series of service_name={OVERFLOW_SERVICE:?}"
                ),
            );
        }
        if let Some((service, start)) = &batch.outside_example {
            hits.hit(
                Limit::SpanTimeWindow,
                batch.outside_window,
                &format_args!(
                    "spans starting more than {:?} ahead or {:?} ago (e.g. service {service:?}, start {start} ns) \
                     are stored but derive no span metrics (max_span_future, max_span_age)",
                    self.max_future, self.max_age
                ),
            );
        }
        minutes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000_000_000;

    fn series(max: usize) -> (SpanSeries, LimitHits, Registry) {
        let mut registry = Registry::default();
        let hits = LimitHits::register(&mut registry);
        let spans =
            SpanSeries::register(&mut registry, max, 1000, Duration::from_secs(3600), Duration::from_secs(86400));
        (spans, hits, registry)
    }

    fn series_of_services(max_services: usize) -> (SpanSeries, LimitHits, Registry) {
        let mut registry = Registry::default();
        let hits = LimitHits::register(&mut registry);
        let spans = SpanSeries::register(
            &mut registry,
            10,
            max_services,
            Duration::from_secs(3600),
            Duration::from_secs(86400),
        );
        (spans, hits, registry)
    }

    /// `spans` moved to a resource of `service`.
    fn of_service(service: &str, mut spans: Vec<Span>) -> Vec<Span> {
        let resource = Arc::new(spindle_model::Resource {
            attributes: vec![spindle_model::KeyValue::string("service.name", service)],
            ..Default::default()
        });
        for span in &mut spans {
            span.resource = Arc::clone(&resource);
        }
        spans
    }

    fn spans(names: impl IntoIterator<Item = String>, start: u64) -> Vec<Span> {
        let template = spindle_workload::Workload::new(3).trace(start).remove(0);
        names
            .into_iter()
            .map(|name| {
                let mut span = template.clone();
                span.name = name.as_str().into();
                span.kind = SpanKind::Server;
                span.status.code = StatusCode::Unset;
                span.start_time_unix_nano = start;
                span.end_time_unix_nano = start + 1_000_000;
                span
            })
            .collect()
    }

    fn exposition(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    #[test]
    fn names_past_the_limit_count_in_one_overflow_series_and_known_ones_keep_counting() {
        let (series, hits, registry) = series(3);
        let batch = spans((0..10).map(|i| format!("GET /users/{i}")), NOW);
        let service = batch[0].service_name().to_string();
        let minutes = series.record(series.prepare(&batch, NOW), &hits);
        // Known series keep counting after the limit is reached.
        let again = series.record(series.prepare(&spans(["GET /users/1".to_string()], NOW), NOW), &hits);
        assert_eq!(hits.count(Limit::SpanMetricSeries), 7);

        let text = exposition(&registry);
        let calls: Vec<&str> = text.lines().filter(|l| l.starts_with("traces_span_metrics_calls_total{")).collect();
        assert_eq!(calls.len(), 4, "{text}");
        assert!(calls.contains(&&*format!(
            "traces_span_metrics_calls_total{{service_name=\"{service}\",span_name=\"GET /users/1\",\
             span_kind=\"SPAN_KIND_SERVER\",status_code=\"STATUS_CODE_UNSET\"}} 2"
        )));
        assert!(calls.contains(&&*format!(
            "traces_span_metrics_calls_total{{service_name=\"{service}\",span_kind=\"SPAN_KIND_SERVER\",\
             status_code=\"STATUS_CODE_UNSET\",otel_metric_overflow=\"true\"}} 7"
        )));
        assert!(text.contains("spindle_limit_hits_total{limit=\"span_metric_series\"} 7"), "{text}");

        // The per-minute aggregates follow the same decision.
        let mut m = SpanMetrics::default();
        m.merge(minutes);
        m.merge(again);
        let keys = m.series_keys();
        assert_eq!(keys.len(), 4);
        let overflow: Vec<_> = keys.iter().filter(|k| k.overflow).collect();
        assert_eq!(overflow.len(), 1);
        let by_op = m.series(&Default::default(), 0, u64::MAX, BUCKET_NANOS, true);
        let overflow_calls: u64 =
            by_op[&(service.clone(), Some("otel.metric.overflow".to_string()))].iter().map(|p| p.calls).sum();
        assert_eq!(overflow_calls, 7);
    }

    #[test]
    fn the_limit_is_per_service_and_kind_and_status_make_series() {
        let (series, hits, _registry) = series(2);
        let mut batch = spans(["a".to_string()], NOW);
        let mut error = batch[0].clone();
        error.status.code = StatusCode::Error;
        let mut other = batch[0].clone();
        other.resource = Arc::new(spindle_model::Resource {
            attributes: vec![spindle_model::KeyValue::string("service.name", "other")],
            ..Default::default()
        });
        other.name = "b".into();
        batch.push(error);
        batch.push(other);
        series.record(series.prepare(&batch, NOW), &hits);
        assert_eq!(hits.count(Limit::SpanMetricSeries), 0, "two series in one service, one in another");
        // A third combination of the first service overflows, also under another kind.
        let mut third = batch[0].clone();
        third.kind = SpanKind::Client;
        series.record(series.prepare(&[third], NOW), &hits);
        assert_eq!(hits.count(Limit::SpanMetricSeries), 1);
    }

    #[test]
    fn spans_outside_the_window_derive_nothing_and_are_counted() {
        let (series, hits, registry) = series(10);
        let year_2076 = 3_360_000_000_000_000_000;
        let year_1990 = 631_152_000_000_000_000;
        let mut batch = spans(["future".to_string()], year_2076);
        batch.extend(spans(["past".to_string()], year_1990));
        batch.extend(spans(["now".to_string()], NOW - 1));
        let minutes = series.record(series.prepare(&batch, NOW), &hits);
        assert_eq!(hits.count(Limit::SpanTimeWindow), 2);
        let mut m = SpanMetrics::default();
        m.merge(minutes);
        assert_eq!(m.minutes(), 1);
        assert_eq!(m.span_of_minutes().map(|(a, _)| a / BUCKET_NANOS), Some((NOW - 1) / BUCKET_NANOS));
        let text = exposition(&registry);
        assert!(!text.contains("future") && !text.contains("past"), "{text}");
    }

    #[test]
    fn services_past_the_limit_count_in_one_overflow_set_in_prometheus_and_minutes_alike() {
        let (series, hits, registry) = series_of_services(3);
        let mut batch = Vec::new();
        for i in 0..10 {
            batch.extend(of_service(&format!("svc{i}"), spans([format!("GET /{i}"), "GET /health".to_string()], NOW)));
        }
        let mut error = of_service("svc9", spans(["GET /9".to_string()], NOW));
        error[0].status.code = StatusCode::Error;
        batch.extend(error);
        let mut m = SpanMetrics::default();
        m.merge(series.record(series.prepare(&batch, NOW), &hits));
        // A known service keeps its series; a client's own service of the reserved name
        // counts in the overflow, so no real service's series carries its labels.
        let later = [
            of_service("svc0", spans(["GET /0".to_string()], NOW)),
            of_service(OVERFLOW_SERVICE, spans(["x".to_string()], NOW)),
        ];
        m.merge(series.record(series.prepare(&later.concat(), NOW), &hits));
        assert_eq!(hits.count(Limit::Services), 16, "7 services' spans and the reserved name's");
        assert_eq!(hits.count(Limit::SpanMetricSeries), 0, "a service's overflow is not a series overflow");

        let text = exposition(&registry);
        let calls: Vec<&str> = text.lines().filter(|l| l.starts_with("traces_span_metrics_calls_total{")).collect();
        let services: std::collections::HashSet<&str> = calls.iter().map(|l| l.split('"').nth(1).unwrap()).collect();
        assert_eq!(services.len(), 4, "three services and the overflow: {text}");
        assert!(
            calls.contains(
                &"traces_span_metrics_calls_total{service_name=\"otel.metric.overflow\",\
             span_kind=\"SPAN_KIND_SERVER\",status_code=\"STATUS_CODE_UNSET\",otel_metric_overflow=\"true\"} 15"
            ),
            "{text}"
        );
        assert!(
            calls.contains(
                &"traces_span_metrics_calls_total{service_name=\"otel.metric.overflow\",\
             span_kind=\"SPAN_KIND_SERVER\",status_code=\"STATUS_CODE_ERROR\",otel_metric_overflow=\"true\"} 1"
            ),
            "{text}"
        );
        let total: u64 = calls.iter().map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap()).sum();
        assert_eq!(total, batch.len() as u64 + 2, "every span is counted once");

        // The per-minute aggregates follow the same decision.
        let keys = m.series_keys();
        let in_minutes: std::collections::HashSet<&str> = keys.iter().map(|k| &*k.service).collect();
        assert_eq!(in_minutes.len(), 4, "{in_minutes:?}");
        let by_op = m.series(&Default::default(), 0, u64::MAX, BUCKET_NANOS, true);
        let overflow = &by_op[&(OVERFLOW_SERVICE.to_string(), Some("otel.metric.overflow".to_string()))];
        assert_eq!(overflow.iter().map(|p| (p.calls, p.errors)).fold((0, 0), |a, p| (a.0 + p.0, a.1 + p.1)), (16, 1));

        // Across a restart the services kept in the minutes keep their places.
        let (after, hits, registry) = series_of_services(3);
        after.seed(&m);
        let batch = [
            of_service("svc1", spans(["GET /1".to_string()], NOW)),
            of_service("new", spans(["GET /".to_string()], NOW)),
        ];
        after.record(after.prepare(&batch.concat(), NOW), &hits);
        assert_eq!(hits.count(Limit::Services), 1);
        let text = exposition(&registry);
        assert!(text.contains("traces_span_metrics_calls_total{service_name=\"svc1\",span_name=\"GET /1\""), "{text}");
        assert!(!text.contains("service_name=\"new\""), "{text}");
    }

    #[test]
    fn seeding_from_persisted_minutes_keeps_the_limit_across_restarts() {
        let (before, hits, _r) = series(3);
        let mut m = SpanMetrics::default();
        m.merge(before.record(before.prepare(&spans((0..5).map(|i| format!("n{i}")), NOW), NOW), &hits));
        assert_eq!(m.series_keys().len(), 4, "three names and the overflow");

        let (after, hits, registry) = series(3);
        after.seed(&m);
        let batch = spans(["n0".to_string(), "n9".to_string(), "n10".to_string()], NOW);
        let mut m2 = SpanMetrics::default();
        m2.merge(after.record(after.prepare(&batch, NOW), &hits));
        assert_eq!(hits.count(Limit::SpanMetricSeries), 2, "new names still overflow after a restart");
        let keys = m2.series_keys();
        assert!(keys.iter().any(|k| &*k.operation == "n0" && !k.overflow));
        assert_eq!(keys.iter().filter(|k| k.overflow).count(), 1);
        // Seeding exposes no zero-valued series.
        let text = exposition(&registry);
        assert!(!text.contains("span_name=\"n1\""), "{text}");
    }
}
