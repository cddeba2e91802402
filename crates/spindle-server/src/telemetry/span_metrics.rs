//! Span metrics derived at ingest, named as the OpenTelemetry spanmetrics connector names
//! them: `traces_span_metrics_calls_total` and `traces_span_metrics_duration_seconds_*` by
//! service, span name, kind and status, with the trace id of a recent span as the bucket's
//! exemplar. [`prepare`] groups a batch before the store takes it; the groups feed these
//! cumulative series and the per-minute aggregates of [`super::persistence`].

use std::collections::HashMap;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::{Registry, Unit};
use spindle_model::{Span, SpanKind, StatusCode, TraceId};
use spindle_query::spanmetrics::BatchAggregate;

/// The spanmetrics connector's default explicit buckets, in seconds.
const DURATION_BUCKETS: [f64; 16] =
    [0.002, 0.004, 0.006, 0.008, 0.01, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.4, 2.0, 5.0, 10.0, 15.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SpanLabels {
    pub service_name: String,
    pub span_name: String,
    pub span_kind: &'static str,
    pub status_code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
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

/// What a batch is grouped by: service, span name, kind, status.
type GroupKey<'a> = (&'a str, &'a str, SpanKind, StatusCode);

/// One group of a batch: its labels, the durations in seconds, the last span's trace.
type Group = (SpanLabels, Vec<f64>, TraceId);

/// A batch grouped by [`prepare`], waiting for the store to accept it.
pub struct PreparedBatch {
    pub(super) minutes: BatchAggregate,
    pub(super) series: Vec<Group>,
}

/// Groups a batch for span metrics; cheap, done before the batch moves into the store.
pub fn prepare(spans: &[Span]) -> PreparedBatch {
    // ahash: SipHash over two strings per span was a visible part of the receivers' time.
    let mut groups: HashMap<GroupKey, (Vec<f64>, TraceId), ahash::RandomState> = HashMap::default();
    let mut services = spindle_model::ServiceNames::default();
    for span in spans {
        let g = groups
            .entry((services.of(span), span.name.as_str(), span.kind, span.status.code))
            .or_insert_with(|| (Vec::new(), span.trace_id));
        g.0.push(span.duration_nanos() as f64 / 1e9);
        g.1 = span.trace_id;
    }
    PreparedBatch {
        minutes: BatchAggregate::from_spans(spans),
        series: groups
            .into_iter()
            .map(|((service, name, kind, status), (durations, trace))| {
                let labels = SpanLabels {
                    service_name: service.to_string(),
                    span_name: name.to_string(),
                    span_kind: kind_label(kind),
                    status_code: status_label(status),
                };
                (labels, durations, trace)
            })
            .collect(),
    }
}

/// The cumulative span-metric series of the registry.
pub struct SpanSeries {
    calls: Family<SpanLabels, Counter>,
    durations: Family<SpanLabels, HistogramWithExemplars<TraceExemplar>>,
}

impl SpanSeries {
    pub fn register(registry: &mut Registry) -> Self {
        let calls = Family::<SpanLabels, Counter>::default();
        let durations = Family::<SpanLabels, HistogramWithExemplars<TraceExemplar>>::new_with_constructor(|| {
            HistogramWithExemplars::new(DURATION_BUCKETS.into_iter())
        });
        registry.register("traces_span_metrics_calls", "Spans by service, name, kind and status", calls.clone());
        registry.register_with_unit(
            "traces_span_metrics_duration",
            "Span durations by service, name, kind and status",
            Unit::Seconds,
            durations.clone(),
        );
        SpanSeries { calls, durations }
    }

    pub fn record(&self, series: Vec<Group>) {
        for (labels, durations, trace) in series {
            self.calls.get_or_create(&labels).inc_by(durations.len() as u64);
            let histogram = self.durations.get_or_create(&labels);
            if let Some((last, rest)) = durations.split_last() {
                for d in rest {
                    histogram.observe(*d, None, None);
                }
                histogram.observe(*last, Some(TraceExemplar { trace_id: trace.to_hex() }), None);
            }
        }
    }
}
