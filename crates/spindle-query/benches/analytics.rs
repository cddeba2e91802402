//! Criterion benches of the analytics that issue 7 puts figures on, on the reference
//! workload (`spindle-workload`). `cargo bench -p spindle-query --bench analytics`
//!
//! - `red_24h/all_services_by_operation`: the Jaeger SPM answer for every service over a
//!   day in one-minute steps, from span metrics holding 24 h of minutes (10M spans).
//! - `p99_by_attribute_1h/*`: p50–p99 of one service grouped by `symbol` over the hour
//!   an embedded store holds (`SPINDLE_BENCH_SPANS` spans, default 1,000,000, flushed and
//!   compacted). `scripts/bench-queries` measures the same through HTTP at 10M spans.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use spindle_query::spanmetrics::{BatchAggregate, SeriesFilter, SpanMetrics, BUCKET_NANOS};
use spindle_query::QueryService;
use spindle_store::{EmbeddedStore, StoreOptions, TraceQuery, TraceStore};
use spindle_workload::{Workload, SERVICES, SPANS_PER_TRACE};

const START: u64 = 1_700_000_000_000_000_000;
const HOUR: u64 = 3_600_000_000_000;

/// Span metrics holding 24 h of minutes of the reference workload, 10M spans a day.
fn day_of_metrics() -> SpanMetrics {
    let per_day: u64 = 10_000_000;
    let minutes = 24 * 60;
    let traces_per_minute = (per_day / minutes / SPANS_PER_TRACE as u64) as usize;
    let mut workload = Workload::new(7);
    let mut metrics = SpanMetrics::default();
    for m in 0..minutes {
        let spans = workload.batch(traces_per_minute, START + m * BUCKET_NANOS, BUCKET_NANOS - 1_000_000_000);
        metrics.merge(BatchAggregate::from_spans(&spans));
    }
    metrics
}

fn red_24h(c: &mut Criterion) {
    // Built on first use, so a filtered run of another bench does not pay for it.
    let metrics = std::sync::OnceLock::new();
    let filter = SeriesFilter { services: SERVICES.iter().map(|s| s.to_string()).collect(), ..Default::default() };
    let mut group = c.benchmark_group("red_24h");
    group.sample_size(20);
    group.bench_function("all_services_by_operation", |b| {
        let metrics = metrics.get_or_init(day_of_metrics);
        b.iter(|| {
            let series = metrics.series(&filter, START, START + 24 * HOUR, BUCKET_NANOS, true);
            // What the SPM API then reads from every point: calls, errors and p99.
            let mut checksum = 0.0;
            for points in series.values() {
                for p in points {
                    checksum += p.calls as f64 + p.errors as f64 + p.latency.quantile(0.99).unwrap_or(0.0);
                }
            }
            black_box(checksum)
        })
    });
    group.finish();
}

fn p99_by_attribute(c: &mut Criterion) {
    let spans: usize = std::env::var("SPINDLE_BENCH_SPANS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(StoreOptions { background: false, ..StoreOptions::new(dir.path()) }).expect("open");
    let mut workload = Workload::new(1);
    let traces = spans / SPANS_PER_TRACE;
    let per_batch = 1_000;
    for k in 0..traces.div_ceil(per_batch) {
        let n = per_batch.min(traces - k * per_batch);
        let at = START + (k * per_batch) as u64 * HOUR / traces as u64;
        store.append(workload.batch(n, at, HOUR / traces as u64 * n as u64)).expect("append");
        if k % 100 == 99 {
            store.flush().expect("flush");
        }
    }
    store.flush().expect("flush");
    store.compact_all().expect("compact");
    let query = QueryService::new(Arc::new(store));
    let window = |service: &str, operation: Option<&str>| TraceQuery {
        service: Some(service.into()),
        operation: operation.map(str::to_string),
        start_time_min_unix_nano: START,
        start_time_max_unix_nano: START + HOUR,
        limit: usize::MAX,
        ..TraceQuery::default()
    };
    let mut group = c.benchmark_group("p99_by_attribute_1h");
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    let pricing = window("pricing", None);
    group.bench_function(format!("service_by_symbol_{spans}_spans"), |b| {
        b.iter(|| black_box(query.red(&pricing, Some("symbol"), 300_000_000_000).expect("red").len()))
    });
    let bsm = window("pricing", Some("calculate_bsm"));
    group.bench_function(format!("operation_by_symbol_{spans}_spans"), |b| {
        b.iter(|| black_box(query.red(&bsm, Some("symbol"), 300_000_000_000).expect("red").len()))
    });
    group.finish();
}

criterion_group!(benches, red_24h, p99_by_attribute);
criterion_main!(benches);
