//! TraceQL's in-memory costs: parsing, and evaluating on reference-workload traces (spanset
//! filters, a structural query, a pipeline). Store-backed figures are in
//! `scripts/bench-queries` (docs/PERFORMANCE.md "TraceQL").

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use spindle_model::Span;
use spindle_traceql::ast::Query;
use spindle_traceql::eval::{eval_trace, TraceView};

const STRUCTURAL: &str = "{ resource.service.name = \"pricing\" && span.symbol = \"TK042\" } >> { status = error }";

fn traces() -> Vec<Vec<Span>> {
    let mut workload = spindle_workload::Workload::new(1);
    (0..1000u64).map(|i| workload.trace(1_700_000_000_000_000_000 + i * 1_000_000)).collect()
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    group.bench_function("structural", |b| b.iter(|| spindle_traceql::parse(STRUCTURAL).unwrap()));
    let metrics = "({ status = error } | rate() by (resource.service.name)) / ({ } | rate() by (resource.service.name)) | topk(5)";
    group.bench_function("metrics_arithmetic", |b| b.iter(|| spindle_traceql::parse(metrics).unwrap()));
    group.finish();
}

fn evaluate(c: &mut Criterion) {
    let traces = traces();
    let mut group = c.benchmark_group("evaluate_1000_traces");
    group.throughput(Throughput::Elements(traces.len() as u64));
    for (name, q) in [
        ("filter", "{ span.user.tier = \"pro\" && duration > 2ms }"),
        ("structural", "{ resource.service.name = \"pricing\" } >> { status = error }"),
        ("two_level", "{ name = \"GET /v1/quote\" } > { name = \"POST pricing\" } >> { name = \"calculate_bsm\" }"),
        ("pipeline", "{ } | by(resource.service.name) | avg(duration) > 2ms"),
    ] {
        let Query::Search(expr) = spindle_traceql::parse(q).unwrap().query else { unreachable!() };
        group.bench_function(name, |b| {
            b.iter_batched(
                || (),
                |()| traces.iter().filter(|t| !eval_trace(&expr, &TraceView::new(t)).is_empty()).count(),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, parse, evaluate);
criterion_main!(benches);
