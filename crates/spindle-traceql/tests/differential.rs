//! Differential test: random TraceQL queries over random traces, answered by the engine
//! through the embedded store (pushdown, candidate scans, paging, structural marks, the
//! RED fast path for metrics) and by a naive evaluator written here: every trace in memory,
//! spanset operators by their definitions, structural relations by walking parent ids
//! pair by pair. Per-span field values come from `eval_field` in both.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::prelude::*;
use spindle_model::{AttributeValue, Event, KeyValue, Resource, Span, SpanId, SpanKind, Status, StatusCode, TraceId};
use spindle_query::QueryService;
use spindle_store::{EmbeddedStore, QueryControl, StoreOptions, TraceStore};
use spindle_traceql::ast::*;
use spindle_traceql::engine::{self, SearchOptions};
use spindle_traceql::eval::{compare, eval_field, eval_scalar, field_text, truthy, TraceView};
use spindle_traceql::metrics::Window;

const START: u64 = 1_700_000_000_000_000_000;
const SERVICES: [&str; 3] = ["a", "b", "c"];
const NAMES: [&str; 3] = ["x", "y", "z"];

fn resources() -> Vec<Arc<Resource>> {
    SERVICES
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Arc::new(Resource {
                attributes: vec![
                    KeyValue::string("service.name", *s),
                    KeyValue::string("env", if i == 2 { "dev" } else { "prod" }),
                ],
                dropped_attributes_count: 0,
            })
        })
        .collect()
}

/// (parent choice, service, name, kind, error, duration ms, k, n, event)
type SpanSeed = (usize, usize, usize, usize, bool, u64, Option<u8>, Option<i64>, bool);

fn build_traces(seeds: &[(u64, Vec<SpanSeed>)]) -> Vec<Vec<Span>> {
    let resources = resources();
    let kinds = [SpanKind::Server, SpanKind::Client, SpanKind::Internal, SpanKind::Producer];
    seeds
        .iter()
        .enumerate()
        .map(|(t, (offset_ms, spans))| {
            let trace_id = TraceId(0x1000 + t as u128);
            let trace_start = START + offset_ms * 1_000_000;
            spans
                .iter()
                .enumerate()
                .map(|(i, &(parent, service, name, kind, error, duration_ms, k, n, event))| {
                    let start = trace_start + i as u64 * 1_000_000;
                    let mut attributes = Vec::new();
                    if let Some(k) = k {
                        attributes.push(KeyValue::string("k", format!("v{k}")));
                    }
                    if let Some(n) = n {
                        attributes.push(KeyValue::new("n", AttributeValue::Int(n)));
                    }
                    Span {
                        trace_id,
                        span_id: SpanId(((t as u64) << 8) + i as u64 + 1),
                        // The first span is the root; others hang under an earlier one, or
                        // (parent choice 0 for later spans) under a span not in the trace.
                        parent_span_id: if i == 0 {
                            SpanId::INVALID
                        } else if parent % (i + 1) == i {
                            SpanId(0xdead)
                        } else {
                            SpanId(((t as u64) << 8) + (parent % i) as u64 + 1)
                        },
                        name: NAMES[name].into(),
                        kind: kinds[kind],
                        start_time_unix_nano: start,
                        end_time_unix_nano: start + duration_ms * 1_000_000,
                        attributes,
                        events: if event {
                            vec![Event {
                                time_unix_nano: start,
                                name: "e".into(),
                                attributes: vec![KeyValue::string("ek", "ev")],
                                dropped_attributes_count: 0,
                            }]
                        } else {
                            Vec::new()
                        },
                        status: if error {
                            Status { code: StatusCode::Error, message: "boom".into() }
                        } else {
                            Status::default()
                        },
                        resource: Arc::clone(&resources[service]),
                        ..Default::default()
                    }
                })
                .collect()
        })
        .collect()
}

fn span_seed() -> impl Strategy<Value = SpanSeed> {
    (
        0usize..8,
        0usize..3,
        0usize..3,
        0usize..4,
        prop::bool::weighted(0.25),
        1u64..40,
        prop::option::of(0u8..3),
        prop::option::of(0i64..4),
        prop::bool::weighted(0.15),
    )
}

fn trace_seeds() -> impl Strategy<Value = Vec<(u64, Vec<SpanSeed>)>> {
    prop::collection::vec((0u64..600_000, prop::collection::vec(span_seed(), 1..8)), 1..25)
}

const TERMS: [&str; 22] = [
    "resource.service.name = \"a\"",
    "resource.service.name = \"b\"",
    "name = \"x\"",
    "span:name != \"y\"",
    "status = error",
    "status != error",
    "kind = server",
    "kind = client",
    "duration > 10ms",
    "duration <= 5ms",
    "span.k = \"v1\"",
    ".k != \"v2\"",
    "span.n >= 2",
    "span.n = 1",
    "span.k =~ \"v[01]\"",
    "resource.env = \"dev\"",
    "span.k = nil",
    "span.n != nil",
    "trace:rootService = \"a\"",
    "span:childCount > 0",
    "event:name = \"e\"",
    "trace:duration > 20ms",
];

fn filter() -> impl Strategy<Value = String> {
    let term = prop::sample::select(TERMS.to_vec()).prop_map(str::to_string);
    let field = term.prop_recursive(2, 6, 2, |inner| {
        (inner.clone(), prop::sample::select(vec!["&&", "||"]), inner).prop_map(|(a, op, b)| format!("({a} {op} {b})"))
    });
    prop_oneof![1 => Just("{ }".to_string()), 6 => field.prop_map(|f| format!("{{ {f} }}"))]
}

const OPS: [&str; 17] =
    ["&&", "||", ">", "<", ">>", "<<", "~", "!>", "!<", "!>>", "!<<", "!~", "&>", "&<", "&>>", "&<<", "&~"];

fn spanset() -> impl Strategy<Value = String> {
    filter().prop_recursive(2, 6, 2, |inner| {
        (inner.clone(), prop::sample::select(OPS.to_vec()), inner).prop_map(|(a, op, b)| format!("({a} {op} {b})"))
    })
}

fn query() -> impl Strategy<Value = String> {
    let stage = prop::sample::select(vec![
        "",
        " | count() > 1",
        " | by(resource.service.name) | count() > 1",
        " | avg(duration) > 8ms",
        " | select(span.n)",
        " | { status = error }",
        " | coalesce()",
    ]);
    (spanset(), stage).prop_map(|(s, stage)| format!("{s}{stage}"))
}

// ---- the naive evaluator ----

#[derive(Clone)]
struct Set {
    spans: BTreeSet<usize>,
}

fn parent_of(trace: &[Span], i: usize) -> Option<usize> {
    let p = trace[i].parent_span_id;
    if !p.is_valid() {
        return None;
    }
    (0..trace.len()).find(|&j| j != i && trace[j].span_id == p)
}

fn is_ancestor(trace: &[Span], a: usize, d: usize) -> bool {
    let mut at = parent_of(trace, d);
    let mut steps = 0;
    while let Some(p) = at {
        if p == a {
            return true;
        }
        steps += 1;
        if steps > trace.len() {
            return false;
        }
        at = parent_of(trace, p);
    }
    false
}

fn relation(trace: &[Span], op: SpansetOp, l: usize, r: usize) -> bool {
    let (rel, _) = op.structural().expect("structural");
    match rel {
        Relation::Child => parent_of(trace, r) == Some(l),
        Relation::Parent => parent_of(trace, l) == Some(r),
        Relation::Descendant => is_ancestor(trace, l, r),
        Relation::Ancestor => is_ancestor(trace, r, l),
        Relation::Sibling => l != r && parent_of(trace, l).is_some() && parent_of(trace, l) == parent_of(trace, r),
    }
}

fn naive(expr: &SpansetExpr, trace: &[Span], view: &TraceView, input: Vec<Set>) -> Vec<Set> {
    match expr {
        SpansetExpr::Filter(f) => input
            .into_iter()
            .map(|s| Set { spans: s.spans.into_iter().filter(|&i| truthy(&eval_field(f, i, view))).collect() })
            .filter(|s| !s.spans.is_empty())
            .collect(),
        SpansetExpr::Binary(op, l, r) => {
            let mut out = Vec::new();
            for set in input {
                let ls = naive(l, trace, view, vec![set.clone()]);
                let rs = naive(r, trace, view, vec![set]);
                let lu: BTreeSet<usize> = ls.iter().flat_map(|s| s.spans.iter().copied()).collect();
                let ru: BTreeSet<usize> = rs.iter().flat_map(|s| s.spans.iter().copied()).collect();
                let spans: BTreeSet<usize> = match op {
                    SpansetOp::And if !ls.is_empty() && !rs.is_empty() => lu.union(&ru).copied().collect(),
                    SpansetOp::Or if !ls.is_empty() || !rs.is_empty() => lu.union(&ru).copied().collect(),
                    SpansetOp::And | SpansetOp::Or => BTreeSet::new(),
                    _ => {
                        let (_, mode) = op.structural().expect("structural");
                        let hits: BTreeSet<usize> =
                            ru.iter().copied().filter(|&r| lu.iter().any(|&l| relation(trace, *op, l, r))).collect();
                        match mode {
                            StructuralMode::Plain => hits,
                            StructuralMode::Not => ru.difference(&hits).copied().collect(),
                            StructuralMode::Union => {
                                let partners: BTreeSet<usize> = lu
                                    .iter()
                                    .copied()
                                    .filter(|&l| hits.iter().any(|&r| relation(trace, *op, l, r)))
                                    .collect();
                                hits.union(&partners).copied().collect()
                            }
                        }
                    }
                };
                if !spans.is_empty() {
                    out.push(Set { spans });
                }
            }
            out
        }
        SpansetExpr::Pipeline(first, stages) => {
            let mut sets = naive(first, trace, view, input);
            for stage in stages {
                sets = match stage {
                    Stage::Spans(e) => sets.into_iter().flat_map(|s| naive(e, trace, view, vec![s])).collect(),
                    Stage::Scalar(f) => sets
                        .into_iter()
                        .filter(|s| {
                            let spans: Vec<usize> = s.spans.iter().copied().collect();
                            let l = eval_scalar(&f.lhs, view, &spans);
                            let r = eval_scalar(&f.rhs, view, &spans);
                            l != Static::Nil && r != Static::Nil && compare(f.op, &l, &r)
                        })
                        .collect(),
                    Stage::By(fields) => {
                        let mut groups: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
                        let mut out = Vec::new();
                        for s in sets {
                            groups.clear();
                            for &i in &s.spans {
                                let key: Vec<String> =
                                    fields.iter().map(|f| format!("{:?}", eval_field(f, i, view).single())).collect();
                                groups.entry(key.join("\u{1}")).or_default().insert(i);
                            }
                            out.extend(groups.values().map(|g| Set { spans: g.clone() }));
                        }
                        out
                    }
                    Stage::Coalesce => {
                        let all: BTreeSet<usize> = sets.iter().flat_map(|s| s.spans.iter().copied()).collect();
                        if all.is_empty() {
                            Vec::new()
                        } else {
                            vec![Set { spans: all }]
                        }
                    }
                    Stage::Select(_) => sets,
                };
            }
            sets
        }
    }
}

fn open(traces: &[Vec<Span>]) -> (tempfile::TempDir, Arc<dyn TraceStore>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(StoreOptions { background: false, ..StoreOptions::new(dir.path()) }).expect("open");
    let half = traces.len() / 2;
    // Half the traces in a flushed block, half in the head: both read paths.
    store.append(traces[..half].iter().flatten().cloned().collect()).expect("append");
    store.flush().expect("flush");
    if half < traces.len() {
        store.append(traces[half..].iter().flatten().cloned().collect()).expect("append");
    }
    (dir, Arc::new(store))
}

fn options() -> SearchOptions {
    SearchOptions {
        start_unix_nano: START,
        end_unix_nano: START + 3_600_000_000_000,
        limit: 1000,
        spans_per_spanset: 1000,
        min_trace_duration_nanos: None,
        max_trace_duration_nanos: None,
        control: QueryControl::default(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn search_matches_the_naive_evaluator(seeds in trace_seeds(), queries in prop::collection::vec(query(), 4)) {
        let traces = build_traces(&seeds);
        let (_dir, store) = open(&traces);
        for text in &queries {
            let parsed = spindle_traceql::parse(text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            let Query::Search(expr) = parsed.query else { unreachable!() };
            let answer = engine::search(&QueryService::new(Arc::clone(&store)), &expr, &options()).expect("search");
            let got: BTreeMap<TraceId, BTreeSet<SpanId>> = answer
                .traces
                .iter()
                .map(|t| (t.trace_id, t.spansets.iter().flat_map(|s| s.spans.iter().map(|x| x.span_id)).collect()))
                .collect();
            let mut want: BTreeMap<TraceId, BTreeSet<SpanId>> = BTreeMap::new();
            for trace in &traces {
                let view = TraceView::new(trace);
                let all = Set { spans: (0..trace.len()).collect() };
                let sets = naive(&expr, trace, &view, vec![all]);
                if !sets.is_empty() {
                    want.insert(trace[0].trace_id, sets.iter().flat_map(|s| s.spans.iter().map(|&i| trace[i].span_id)).collect());
                }
            }
            prop_assert_eq!(&got, &want, "query {}", text);
            // Newest first.
            let starts: Vec<u64> = answer.traces.iter().map(|t| t.start_unix_nano).collect();
            prop_assert!(starts.windows(2).all(|w| w[0] >= w[1]), "not newest first: {:?}", starts);
        }
    }

    #[test]
    fn metrics_match_the_naive_evaluator(
        seeds in trace_seeds(),
        filter in filter(),
        function in prop::sample::select(vec![
            "rate()", "count_over_time()", "quantile_over_time(duration, .5, .9)", "avg_over_time(duration)",
            "max_over_time(duration)", "min_over_time(duration)", "sum_over_time(span.n)",
        ]),
        by in prop::sample::select(vec!["", " by (resource.service.name)", " by (name)", " by (span.k)", " by (.k, name)"]),
    ) {
        let traces = build_traces(&seeds);
        let (_dir, store) = open(&traces);
        let text = format!("{filter} | {function}{by}");
        let parsed = spindle_traceql::parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        let Query::Metrics(MetricsExpr::Query(q)) = &parsed.query else { unreachable!() };
        let window = Window { start_unix_nano: START, end_unix_nano: START + 600_000_000_000, step_nanos: 60_000_000_000 };
        let service = QueryService::new(Arc::clone(&store));
        let answer = engine::metrics(&service, &parsed_metrics(&parsed), window, 10_000, &QueryControl::default()).expect("metrics");
        // Naive: every span of every trace that the filter selects, grouped and bucketed here.
        let SpansetExpr::Filter(f) = &q.spans else { unreachable!() };
        let mut groups: BTreeMap<(String, usize), Vec<f64>> = BTreeMap::new();
        for trace in &traces {
            let view = TraceView::new(trace);
            for (i, span) in trace.iter().enumerate() {
                if !truthy(&eval_field(f, i, &view)) || !(window.start_unix_nano..window.end_unix_nano).contains(&span.start_time_unix_nano) {
                    continue;
                }
                let mut labels = Vec::new();
                let mut missing = false;
                for field in &q.by {
                    match spindle_traceql::metrics::group_value(field, i, &view) {
                        Some(v) => labels.push(format!("{}={}", field_text(field), v)),
                        None => missing = true,
                    }
                }
                if missing { continue; }
                let value = match &q.function {
                    MetricsFunction::SumOverTime(field) => match eval_field(field, i, &view).single() {
                        Static::Int(n) => n as f64,
                        _ => continue,
                    },
                    _ => span.duration_nanos() as f64 / 1e9,
                };
                let step = window.index(span.start_time_unix_nano).expect("in window");
                groups.entry((labels.join(","), step)).or_default().push(value);
            }
        }
        let mut want: BTreeMap<(String, usize), f64> = BTreeMap::new();
        for ((labels, step), values) in &groups {
            let v = match &q.function {
                MetricsFunction::Rate => values.len() as f64 / 60.0,
                MetricsFunction::CountOverTime => values.len() as f64,
                MetricsFunction::AvgOverTime(_) => values.iter().sum::<f64>() / values.len() as f64,
                MetricsFunction::MaxOverTime(_) => values.iter().copied().fold(f64::MIN, f64::max),
                MetricsFunction::MinOverTime(_) => values.iter().copied().fold(f64::MAX, f64::min),
                MetricsFunction::SumOverTime(_) => values.iter().sum(),
                // Quantiles come from the latency sketch; checked against exact ones below.
                _ => continue,
            };
            want.insert((labels.clone(), *step), v);
        }
        let mut got: BTreeMap<(String, usize), f64> = BTreeMap::new();
        for series in &answer.series {
            let labels: Vec<String> = series.labels.iter().filter(|(k, _)| k != "p").map(|(k, v)| format!("{k}={v}")).collect();
            for &(t, v) in &series.samples {
                let step = ((t * 1_000_000) / window.step_nanos - window.start_unix_nano / window.step_nanos - 1) as usize;
                if let MetricsFunction::QuantileOverTime(_, _) = &q.function {
                    let values = groups.get(&(labels.join(","), step)).expect("a quantile where spans are");
                    let (lo, hi) = values.iter().fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(*x), b.max(*x)));
                    prop_assert!(v >= lo * 0.98 && v <= hi * 1.02, "{}: quantile {} outside [{}, {}]", text, v, lo, hi);
                    continue;
                }
                // Counts are reported for every step of a series; zero steps have no spans.
                if v == 0.0 && !groups.contains_key(&(labels.join(","), step)) {
                    continue;
                }
                got.insert((labels.join(","), step), v);
            }
        }
        if !matches!(q.function, MetricsFunction::QuantileOverTime(..)) {
            prop_assert_eq!(got.len(), want.len(), "{}: {:?} vs {:?}", text, got, want);
            for (k, w) in &want {
                let g = got.get(k).copied().unwrap_or(f64::NAN);
                prop_assert!((g - w).abs() <= 1e-9 * w.abs().max(1.0), "{}: {:?} got {} want {}", text, k, g, w);
            }
        }
    }
}

fn parsed_metrics(parsed: &spindle_traceql::Parsed) -> MetricsExpr {
    match &parsed.query {
        Query::Metrics(m) => m.clone(),
        Query::Search(_) => unreachable!(),
    }
}

/// The reference workload, where candidates outnumber matches: reading pages of candidates,
/// narrowing by the next filter's search, and stopping at `limit` still give the naive
/// evaluator's traces.
#[test]
fn narrowing_and_limits_keep_the_naive_answer() {
    let mut workload = spindle_workload::Workload::new(7);
    let traces: Vec<Vec<Span>> = (0..3000).map(|i| workload.trace(START + i * 1_000_000_000)).collect();
    let (_dir, store) = open(&traces);
    for text in [
        "{ resource.service.name = \"pricing\" && span.user.tier = \"pro\" } >> { status = error }",
        "{ name = \"GET /v1/quote\" } > { name = \"POST pricing\" } >> { name = \"calculate_bsm\" && status = error }",
        "{ span.user.tier = \"pro\" } && { status = error } && { kind = consumer && duration > 4ms }",
        "{ span.http.request.method = \"POST\" } ~ { status = error }",
    ] {
        let Query::Search(expr) = spindle_traceql::parse(text).unwrap().query else { unreachable!() };
        let mut want: BTreeMap<TraceId, (u64, BTreeSet<SpanId>)> = BTreeMap::new();
        for trace in &traces {
            let view = TraceView::new(trace);
            let sets = naive(&expr, trace, &view, vec![Set { spans: (0..trace.len()).collect() }]);
            if !sets.is_empty() {
                let spans = sets.iter().flat_map(|s| s.spans.iter().map(|&i| trace[i].span_id)).collect();
                want.insert(trace[0].trace_id, (view.start_unix_nano, spans));
            }
        }
        assert!(!want.is_empty(), "{text} matches nothing in the workload");
        for limit in [3, 20, 10_000] {
            let answer =
                engine::search(&QueryService::new(Arc::clone(&store)), &expr, &SearchOptions { limit, ..options() })
                    .unwrap();
            assert_eq!(answer.traces.len(), want.len().min(limit), "{text} limit {limit}");
            for t in &answer.traces {
                let spans: BTreeSet<SpanId> =
                    t.spansets.iter().flat_map(|s| s.spans.iter().map(|x| x.span_id)).collect();
                assert_eq!(Some(&spans), want.get(&t.trace_id).map(|w| &w.1), "{text}: trace {:?}", t.trace_id);
            }
            // The newest matches: workload traces are short, so candidates read newest
            // first give exactly the `limit` newest.
            let mut newest: Vec<u64> = want.values().map(|w| w.0).collect();
            newest.sort_unstable_by(|a, b| b.cmp(a));
            newest.truncate(limit);
            let got: Vec<u64> = answer.traces.iter().map(|t| t.start_unix_nano).collect();
            assert_eq!(got, newest, "{text} limit {limit}");
            if limit == 3 {
                assert!(
                    answer.inspected_traces < want.len() as u64 * 10 + 200,
                    "{text}: read {}",
                    answer.inspected_traces
                );
            }
        }
    }
}
