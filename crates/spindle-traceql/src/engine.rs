//! Runs TraceQL against a [`TraceStore`]: the planner pushes what each spanset filter
//! requires into the store's own search (`TraceQuery`: service, operation, kind, duration,
//! `key=value` attributes — dedicated, promoted and hot columns, row-group statistics and
//! dictionaries on the embedded store; SQL on ClickHouse), intersects the candidate trace
//! ids of the most selective filters, and only then reads those traces, newest first, a
//! page at a time, until `limit` traces matched. Structural operators are evaluated on the
//! candidate traces in memory (ADR 021).

use std::collections::{HashMap, HashSet};

use spindle_model::{semconv, Span, SpanId, StatusCode, TraceId};
use spindle_query::{QueryError, QueryService};
use spindle_store::{QueryControl, RowFields, SpanFields, SpanRow, StoreError, TraceQuery, TraceStore, SCAN_THREADS};

use crate::ast::*;
use crate::eval::{eval_field, eval_trace, truthy, Spanset, TraceView};
use crate::metrics::{self, Accumulator, Series, Window};

/// Spans may start this long after their trace's first span and still make it a candidate.
pub const TRACE_SLACK_NANOS: u64 = 3600 * 1_000_000_000;
/// Traces read per store call while evaluating candidates.
const TRACES_PER_READ: usize = 64;
/// An `&&` of filters scans the next filter's search while candidates are more than this.
const NARROW_ABOVE: usize = 256;
/// Reading more candidate traces than this to reach `limit`, at the rate they have matched
/// so far, costs more than the next filter's search: it narrows the rest first.
const NARROW_AFTER: usize = 128;

#[derive(Debug, Clone)]
pub struct SearchOptions {
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub limit: usize,
    /// Spans shown per spanset (`spss`).
    pub spans_per_spanset: usize,
    pub min_trace_duration_nanos: Option<u64>,
    pub max_trace_duration_nanos: Option<u64>,
    pub control: QueryControl,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MatchedSpan {
    pub span_id: SpanId,
    pub name: String,
    pub start_unix_nano: u64,
    pub duration_nanos: u64,
    /// The attributes the query reads and selects, and the span's service.
    pub attributes: Vec<(String, Static)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MatchedSpanset {
    /// At most `spans_per_spanset` of the matched spans, earliest first.
    pub spans: Vec<MatchedSpan>,
    pub matched: usize,
    /// `by()` values and the aggregate a scalar filter computed.
    pub attributes: Vec<(String, Static)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TraceMatch {
    pub trace_id: TraceId,
    pub root_service: Option<String>,
    pub root_name: Option<String>,
    pub start_unix_nano: u64,
    pub duration_nanos: u64,
    pub spansets: Vec<MatchedSpanset>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchAnswer {
    /// Newest first.
    pub traces: Vec<TraceMatch>,
    pub inspected_traces: u64,
    pub inspected_spans: u64,
}

/// What a spanset filter requires of a trace, as store searches.
#[derive(Debug, Clone)]
enum Need {
    /// Any trace may match.
    All,
    /// Traces with a span the search finds, and how selective the search is expected to be.
    Search(Box<TraceQuery>, u32),
    And(Vec<Need>),
    Or(Vec<Need>),
}

/// Expected selectivity of pushed-down conditions: an attribute value or an operation
/// leaves few traces, a service or the error status some, a kind or a duration bound many.
const SCORE_ATTRIBUTE: u32 = 30;
const SCORE_OPERATION: u32 = 20;
const SCORE_SERVICE: u32 = 10;
const SCORE_ERROR: u32 = 10;
const SCORE_WEAK: u32 = 3;
/// Searches scoring less are not worth a scan of their own.
const SCANNABLE: u32 = 10;
/// A search of typed columns alone (no attribute values, whose lists are the costly read)
/// scoring at least this — an operation with the error status, say — is scanned before
/// any search of attributes: a low-cardinality attribute (a tier, a region) scores as high
/// as an id but leaves a third of the traces.
const CHEAP_FIRST: u32 = SCORE_OPERATION + SCORE_ERROR;

impl Need {
    fn score(&self) -> u32 {
        match self {
            Need::All => 0,
            Need::Search(_, score) => *score,
            Need::And(children) => children.iter().map(Need::score).max().unwrap_or(0),
            Need::Or(children) => children.iter().map(Need::score).min().unwrap_or(0),
        }
    }

    /// Whether the store answers it from typed columns alone.
    fn typed_only(&self) -> bool {
        match self {
            Need::All => true,
            Need::Search(query, _) => query.attributes.is_empty(),
            Need::And(children) | Need::Or(children) => children.iter().all(Need::typed_only),
        }
    }

    /// The conjuncts of a requirement, most selective first (selective typed-column searches
    /// before attribute searches), without the unscannable.
    fn steps(&self) -> Vec<&Need> {
        fn flatten<'a>(need: &'a Need, out: &mut Vec<&'a Need>) {
            match need {
                Need::And(children) => children.iter().for_each(|c| flatten(c, out)),
                other if other.score() >= SCANNABLE => out.push(other),
                _ => {}
            }
        }
        let mut out = Vec::new();
        flatten(self, &mut out);
        out.sort_by_key(|n| std::cmp::Reverse((n.typed_only() && n.score() >= CHEAP_FIRST, n.score())));
        out
    }
}

fn need(expr: &SpansetExpr) -> Need {
    match expr {
        SpansetExpr::Filter(field) => match pushdown(field) {
            Some((query, score, _)) => Need::Search(Box::new(query), score),
            None => Need::All,
        },
        SpansetExpr::Binary(op, l, r) => match op.structural() {
            None if *op == SpansetOp::Or => Need::Or(vec![need(l), need(r)]),
            None => Need::And(vec![need(l), need(r)]),
            Some((_, StructuralMode::Not)) => need(r),
            Some(_) => Need::And(vec![need(l), need(r)]),
        },
        SpansetExpr::Pipeline(first, stages) => {
            let mut all = vec![need(first)];
            for stage in stages {
                if let Stage::Spans(e) = stage {
                    all.push(need(e));
                }
            }
            Need::And(all)
        }
    }
}

/// The conjuncts of a filter.
fn conjuncts<'a>(field: &'a Field, out: &mut Vec<&'a Field>) {
    match field {
        Field::Binary(BinaryOp::And, l, r) => {
            conjuncts(l, out);
            conjuncts(r, out);
        }
        other => out.push(other),
    }
}

/// The store search a filter implies (every span it selects matches it), its class, and
/// whether the search is exact (selects exactly the filter's spans).
fn pushdown(field: &Field) -> Option<(TraceQuery, u32, bool)> {
    let mut terms = Vec::new();
    conjuncts(field, &mut terms);
    let mut query = TraceQuery { limit: usize::MAX, ..TraceQuery::default() };
    let mut score = 0;
    let mut exact = true;
    let mut pushed = false;
    for term in terms {
        let (op, attr, value) = match term {
            Field::Static(Static::Bool(true)) => continue,
            Field::Binary(op, l, r) => match (&**l, &**r) {
                (lhs, Field::Static(v)) if !matches!(lhs, Field::Static(_)) => (*op, lhs, v),
                (Field::Static(v), rhs) => (flip(*op), rhs, v),
                _ => {
                    exact = false;
                    continue;
                }
            },
            _ => {
                exact = false;
                continue;
            }
        };
        let pushed_here = match (op, attr, value) {
            (BinaryOp::Eq, Field::Attribute(Attribute { scope: Scope::Resource, name }), Static::Str(v))
                if name == semconv::SERVICE_NAME && query.service.is_none() =>
            {
                query.service = Some(v.clone());
                score += SCORE_SERVICE;
                true
            }
            (BinaryOp::Eq, Field::Intrinsic(Intrinsic::Name), Static::Str(v)) if query.operation.is_none() => {
                query.operation = Some(v.clone());
                score += SCORE_OPERATION;
                true
            }
            (BinaryOp::Eq, Field::Intrinsic(Intrinsic::Kind), Static::Kind(k)) if query.span_kind.is_none() => {
                query.span_kind = Some(*k);
                score += SCORE_WEAK;
                true
            }
            (op, Field::Intrinsic(Intrinsic::Duration), Static::Duration(d)) if *d >= 0 => {
                let d = *d as u64;
                match op {
                    BinaryOp::Gt => query.duration_min_nanos = Some(query.duration_min_nanos.unwrap_or(0).max(d + 1)),
                    BinaryOp::Ge => query.duration_min_nanos = Some(query.duration_min_nanos.unwrap_or(0).max(d)),
                    BinaryOp::Lt if d > 0 => {
                        query.duration_max_nanos = Some(query.duration_max_nanos.unwrap_or(u64::MAX).min(d - 1))
                    }
                    BinaryOp::Le => {
                        query.duration_max_nanos = Some(query.duration_max_nanos.unwrap_or(u64::MAX).min(d))
                    }
                    _ => {}
                }
                score += SCORE_WEAK;
                matches!(op, BinaryOp::Gt | BinaryOp::Ge | BinaryOp::Le) || (op == BinaryOp::Lt && d > 0)
            }
            (BinaryOp::Eq, Field::Intrinsic(Intrinsic::Status), Static::Status(code)) if query.status.is_none() => {
                query.status = Some(*code);
                if *code == StatusCode::Error {
                    score += SCORE_ERROR;
                }
                true
            }
            (
                BinaryOp::Eq,
                Field::Attribute(Attribute { scope: Scope::Span | Scope::Resource | Scope::Unscoped, name }),
                v,
            ) => {
                let text = match v {
                    Static::Str(s) => Some(s.clone()),
                    Static::Int(i) => Some(i.to_string()),
                    Static::Bool(b) => Some(b.to_string()),
                    _ => None,
                };
                match text {
                    Some(text) => {
                        query.attributes.push((name.clone(), text));
                        score += SCORE_ATTRIBUTE;
                        // The store's tag search also looks at events and matches text.
                        exact = false;
                        true
                    }
                    None => false,
                }
            }
            _ => false,
        };
        pushed |= pushed_here;
        exact &= pushed_here;
    }
    // `{ }` and filters of only `true` push nothing but are exact, selecting everything.
    (pushed || exact).then_some((query, score, exact))
}

/// Calls `visit` with recent spans matching `filter` (a spanset filter's condition), at
/// most `max_spans` of them, until it answers `true`: a sample for tag names and values.
pub fn sample_spans(
    query: &QueryService,
    filter: Option<&Field>,
    start_unix_nano: u64,
    end_unix_nano: u64,
    max_spans: u64,
    control: &QueryControl,
    visit: &mut dyn FnMut(&Span) -> bool,
) -> Result<(), QueryError> {
    let pushed = filter.and_then(filter_pushdown).unwrap_or_default();
    let enough = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let search = TraceQuery {
        start_time_min_unix_nano: start_unix_nano,
        start_time_max_unix_nano: end_unix_nano,
        limit: usize::MAX,
        control: control.stopped_by(std::sync::Arc::clone(&enough)),
        ..pushed
    };
    let stop = |e: &std::sync::Arc<std::sync::atomic::AtomicBool>| e.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut seen = 0u64;
    let result = query.store().scan_fields(&search, &SpanFields { attributes: None, events: true }, &mut |span| {
        if enough.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        if let Some(f) = filter {
            if !truthy(&eval_field(f, 0, &TraceView::single(span))) {
                return;
            }
        }
        seen += 1;
        if visit(span) || seen >= max_spans {
            stop(&enough);
        }
    });
    match result {
        Err(StoreError::Cancelled) if enough.load(std::sync::atomic::Ordering::Relaxed) => Ok(()),
        other => other.map_err(QueryError::from),
    }
}

/// The store search a one-filter query pushes down (`None`: it pushes nothing).
pub fn filter_pushdown(field: &Field) -> Option<TraceQuery> {
    pushdown(field).map(|(query, _, _)| query)
}

fn flip(op: BinaryOp) -> BinaryOp {
    match op {
        BinaryOp::Lt => BinaryOp::Gt,
        BinaryOp::Le => BinaryOp::Ge,
        BinaryOp::Gt => BinaryOp::Lt,
        BinaryOp::Ge => BinaryOp::Le,
        other => other,
    }
}

/// Candidate traces with the latest start of a matching span; `None` means every trace.
/// Trace ids (random, from clients) to the latest start of their matching spans; ahash:
/// SipHash was a sixth of a scan of error spans.
type TraceStarts = HashMap<TraceId, u64, ahash::RandomState>;
type Candidates = Option<TraceStarts>;

/// Records that `id` has a matching span starting at `start`, keeping the latest.
fn note_start(starts: &mut TraceStarts, id: TraceId, start: u64) {
    let latest = starts.entry(id).or_insert(0);
    *latest = (*latest).max(start);
}

fn scan_candidates(
    store: &dyn TraceStore,
    query: &TraceQuery,
    opts: &SearchOptions,
) -> Result<TraceStarts, StoreError> {
    let query = TraceQuery {
        start_time_min_unix_nano: opts.start_unix_nano,
        start_time_max_unix_nano: opts.end_unix_nano.saturating_add(TRACE_SLACK_NANOS),
        limit: usize::MAX,
        control: opts.control.clone(),
        ..query.clone()
    };
    let fields = RowFields { trace_only: true, ..RowFields::default() };
    // One map per scanning thread, merged at the end: the scan decodes on every core.
    let mut parts: Vec<TraceStarts> = (0..SCAN_THREADS).map(|_| TraceStarts::default()).collect();
    {
        let mut visitors: Vec<_> = parts
            .iter_mut()
            .map(|found| move |row: &SpanRow| note_start(found, row.trace_id, row.start_unix_nano))
            .collect();
        let mut refs: Vec<&mut (dyn FnMut(&SpanRow) + Send)> =
            visitors.iter_mut().map(|v| v as &mut (dyn FnMut(&SpanRow) + Send)).collect();
        store.scan_rows_split(&query, &fields, &mut refs)?;
    }
    let mut found = parts.pop().unwrap_or_default();
    for part in parts {
        part.into_iter().for_each(|(id, at)| note_start(&mut found, id, at));
    }
    Ok(found)
}

fn candidates(store: &dyn TraceStore, need: &Need, opts: &SearchOptions) -> Result<Candidates, StoreError> {
    match need {
        Need::All => Ok(None),
        Need::Search(_, score) if *score < SCANNABLE => Ok(None),
        Need::Search(query, _) => scan_candidates(store, query, opts).map(Some),
        Need::Or(children) => {
            let mut all = TraceStarts::default();
            for child in children {
                match candidates(store, child, opts)? {
                    None => return Ok(None),
                    Some(found) => {
                        found.into_iter().for_each(|(id, at)| note_start(&mut all, id, at));
                    }
                }
            }
            Ok(Some(all))
        }
        Need::And(_) => {
            let mut result: Candidates = None;
            for child in need.steps() {
                let enough = result.as_ref().is_some_and(|r| r.len() <= NARROW_ABOVE);
                if enough {
                    break;
                }
                if let Some(found) = candidates(store, child, opts)? {
                    result = Some(match result {
                        None => found,
                        Some(mut r) => {
                            r.retain(|id, _| found.contains_key(id));
                            r
                        }
                    });
                }
            }
            Ok(result)
        }
    }
}

/// What evaluating a query reads of a span beyond what every projection carries.
#[derive(Debug, Default)]
struct Reads {
    keys: Vec<String>,
    events: bool,
    links: bool,
}

impl Reads {
    fn field(&mut self, field: &Field) {
        field.for_each_leaf(&mut |leaf| match leaf {
            Field::Attribute(Attribute { scope: Scope::Span | Scope::Unscoped, name }) if !self.keys.contains(name) => {
                self.keys.push(name.clone());
            }
            Field::Attribute(Attribute { scope: Scope::Event, .. })
            | Field::Intrinsic(Intrinsic::EventName | Intrinsic::EventTimeSinceStart) => self.events = true,
            Field::Attribute(Attribute { scope: Scope::Link, .. })
            | Field::Intrinsic(Intrinsic::LinkTraceId | Intrinsic::LinkSpanId) => self.links = true,
            _ => {}
        });
    }

    fn spans(&mut self, expr: &SpansetExpr) {
        expr.for_each_field(true, &mut |field| self.field(field));
    }

    /// The projection to read, `None` when spans must be whole (links are read).
    fn projection(&self) -> Option<SpanFields> {
        (!self.links).then(|| SpanFields { attributes: Some(self.keys.clone()), events: self.events })
    }
}

/// Attributes a query reads or selects, shown with matched spans.
fn shown_fields(expr: &SpansetExpr) -> Vec<Field> {
    let mut out: Vec<Field> = Vec::new();
    expr.for_each_field(false, &mut |field| {
        field.for_each_leaf(&mut |leaf| {
            if matches!(leaf, Field::Attribute(_))
                && !out.iter().any(|f| matches!((f, leaf), (Field::Attribute(a), Field::Attribute(b)) if a == b))
            {
                out.push(leaf.clone());
            }
        })
    });
    out
}

/// The answer for one trace, when it matches.
pub fn match_trace(expr: &SpansetExpr, spans: &[Span], opts: &SearchOptions, shown: &[Field]) -> Option<TraceMatch> {
    let view = TraceView::new(spans);
    if view.start_unix_nano < opts.start_unix_nano || view.start_unix_nano > opts.end_unix_nano {
        return None;
    }
    let duration = view.duration_nanos();
    if opts.min_trace_duration_nanos.is_some_and(|m| duration < m)
        || opts.max_trace_duration_nanos.is_some_and(|m| duration > m)
    {
        return None;
    }
    let sets = eval_trace(expr, &view);
    if sets.is_empty() {
        return None;
    }
    let spansets = sets.iter().map(|set| shown_spanset(set, &view, opts.spans_per_spanset, shown)).collect();
    Some(TraceMatch {
        trace_id: spans[0].trace_id,
        root_service: view.root_service().map(str::to_string),
        root_name: view.root_name().map(str::to_string),
        start_unix_nano: view.start_unix_nano,
        duration_nanos: duration,
        spansets,
    })
}

fn shown_spanset(set: &Spanset, view: &TraceView, limit: usize, shown: &[Field]) -> MatchedSpanset {
    let mut order = set.spans.clone();
    order.sort_by_key(|&i| (view.spans[i].start_time_unix_nano, i));
    let spans = order
        .iter()
        .take(limit)
        .map(|&i| {
            let span = &view.spans[i];
            let mut attributes =
                vec![("resource.service.name".to_string(), Static::Str(span.service_name().to_string()))];
            for field in shown.iter().chain(&set.select) {
                let value = eval_field(field, i, view).single();
                let name = crate::eval::field_text(field);
                if value != Static::Nil && !attributes.iter().any(|(k, _)| *k == name) {
                    attributes.push((name, value));
                }
            }
            MatchedSpan {
                span_id: span.span_id,
                name: span.name.to_string(),
                start_unix_nano: span.start_time_unix_nano,
                duration_nanos: span.duration_nanos(),
                attributes,
            }
        })
        .collect();
    let mut attributes: Vec<(String, Static)> = set.by.clone();
    if let Some(scalar) = &set.scalar {
        attributes.push(("aggregate".into(), scalar.clone()));
    }
    MatchedSpanset { spans, matched: set.spans.len(), attributes }
}

/// Traces matching `expr`, newest first, at most `opts.limit`.
pub fn search(query: &QueryService, expr: &SpansetExpr, opts: &SearchOptions) -> Result<SearchAnswer, QueryError> {
    let store = query.store().as_ref();
    let shown = shown_fields(expr);
    let mut answer = SearchAnswer::default();
    let limit = opts.limit.max(1);
    let mut reads = Reads::default();
    reads.spans(expr);
    let projection = reads.projection();
    let requirement = need(expr);
    let mut steps = requirement.steps().into_iter();
    let first = match steps.next() {
        Some(first) => candidates(store, first, opts)?,
        None => None,
    };
    match first {
        Some(found) => {
            let mut ordered: Vec<(TraceId, u64)> = found.into_iter().collect();
            ordered.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
            let first_page = TRACES_PER_READ.min(limit * 2).max(8);
            let mut page = first_page;
            let mut at = 0;
            // Traces read and matched since the candidates were last narrowed: the first
            // page is a sample of how many match.
            let (mut read_since, mut matched_since) = (0usize, 0usize);
            while at < ordered.len() && answer.traces.len() < limit {
                opts.control.check()?;
                let left = ordered.len() - at;
                let wanted = limit - answer.traces.len();
                let reads_needed = (wanted.saturating_mul(read_since) / matched_since.max(1)).min(left);
                if read_since >= first_page && reads_needed > NARROW_AFTER {
                    if let Some(next) = steps.next() {
                        if let Some(more) = candidates(store, next, opts)? {
                            ordered = ordered.split_off(at);
                            ordered.retain(|(id, _)| more.contains_key(id));
                            at = 0;
                        }
                        (read_since, matched_since) = (0, 0);
                        continue;
                    }
                }
                let ids: Vec<TraceId> = ordered[at..(at + page).min(ordered.len())].iter().map(|(id, _)| *id).collect();
                at += ids.len();
                read_since += ids.len();
                page = (page * 2).min(TRACES_PER_READ);
                let read = read_traces(store, &ids, projection.as_ref(), &opts.control)?;
                for spans in read {
                    if spans.is_empty() {
                        continue;
                    }
                    answer.inspected_traces += 1;
                    answer.inspected_spans += spans.len() as u64;
                    if let Some(m) = match_trace(expr, &spans, opts, &shown) {
                        answer.traces.push(m);
                        matched_since += 1;
                    }
                }
            }
        }
        None => {
            let fields = projection.unwrap_or(SpanFields { attributes: None, events: true });
            let mut error = None;
            store.scan_traces(opts.start_unix_nano, opts.end_unix_nano, &fields, &mut |spans| {
                if error.is_some() {
                    return;
                }
                if let Err(e) = opts.control.check() {
                    error = Some(e);
                    return;
                }
                answer.inspected_traces += 1;
                answer.inspected_spans += spans.len() as u64;
                if let Some(m) = match_trace(expr, spans, opts, &shown) {
                    answer.traces.push(m);
                    // Keep the newest `limit`: trim now and then, not on every match.
                    if answer.traces.len() >= limit * 4 + 64 {
                        newest_first(&mut answer.traces, limit);
                    }
                }
            })?;
            if let Some(e) = error {
                return Err(e.into());
            }
        }
    }
    newest_first(&mut answer.traces, limit);
    Ok(answer)
}

/// A page of traces, read on two threads: reading a trace is decoding its pages, CPU-bound.
fn read_traces(
    store: &dyn TraceStore,
    ids: &[TraceId],
    fields: Option<&SpanFields>,
    control: &QueryControl,
) -> Result<Vec<Vec<Span>>, StoreError> {
    let read = |ids: &[TraceId]| {
        control.run(|| match fields {
            Some(fields) => store.get_traces_fields(ids, fields),
            None => store.get_traces(ids),
        })
    };
    if ids.len() < 8 {
        return read(ids);
    }
    let (a, b) = ids.split_at(ids.len() / 2);
    let (mut first, second) = std::thread::scope(|s| {
        let other = s.spawn(|| read(b));
        let mine = read(a);
        (mine, other.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
    });
    if let Ok(traces) = first.as_mut() {
        traces.extend(second?);
    }
    first
}

fn newest_first(traces: &mut Vec<TraceMatch>, limit: usize) {
    traces.sort_by(|a, b| b.start_unix_nano.cmp(&a.start_unix_nano).then(b.trace_id.cmp(&a.trace_id)));
    traces.truncate(limit);
}

/// What a metrics query answers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsAnswer {
    pub series: Vec<Series>,
    /// Series beyond the query's `max_series` were left out.
    pub truncated: bool,
    pub inspected_spans: u64,
}

fn field_needs_trace(field: &Field) -> bool {
    let mut needs = false;
    field.for_each_leaf(&mut |leaf| needs |= matches!(leaf, Field::Intrinsic(i) if i.needs_trace()));
    needs
}

fn function_field(function: &MetricsFunction) -> Option<&Field> {
    match function {
        MetricsFunction::SumOverTime(f)
        | MetricsFunction::MinOverTime(f)
        | MetricsFunction::MaxOverTime(f)
        | MetricsFunction::AvgOverTime(f)
        | MetricsFunction::QuantileOverTime(f, _)
        | MetricsFunction::HistogramOverTime(f) => Some(f),
        MetricsFunction::Compare { selection, .. } => Some(selection),
        _ => None,
    }
}

/// Evaluates a metrics expression over `[window.start, window.end)`, keeping at most
/// `max_series` series per metrics function.
pub fn metrics(
    query: &QueryService,
    expr: &MetricsExpr,
    window: Window,
    max_series: usize,
    control: &QueryControl,
) -> Result<MetricsAnswer, QueryError> {
    match expr {
        MetricsExpr::Scalar(v) => {
            Ok(MetricsAnswer { series: metrics::scalar_series(*v, window), ..MetricsAnswer::default() })
        }
        MetricsExpr::Binary(op, l, r) => {
            let l = metrics(query, l, window, max_series, control)?;
            let r = metrics(query, r, window, max_series, control)?;
            Ok(MetricsAnswer {
                series: metrics::combine(*op, l.series, r.series),
                truncated: l.truncated || r.truncated,
                inspected_spans: l.inspected_spans + r.inspected_spans,
            })
        }
        MetricsExpr::Staged(inner, stages) => {
            let mut answer = metrics(query, inner, window, max_series, control)?;
            answer.series = metrics::apply_stages(answer.series, stages);
            Ok(answer)
        }
        MetricsExpr::Query(q) => {
            let mut answer = match fast_metrics(query, q, window, max_series, control)? {
                Some(answer) => answer,
                None => scan_metrics(query.store().as_ref(), q, window, max_series, control)?,
            };
            answer.series = metrics::apply_stages(answer.series, &q.stages);
            Ok(answer)
        }
    }
}

/// The general path: every span the pipeline selects, read from the store.
fn scan_metrics(
    store: &dyn TraceStore,
    q: &MetricsQuery,
    window: Window,
    max_series: usize,
    control: &QueryControl,
) -> Result<MetricsAnswer, StoreError> {
    let mut acc = Accumulator::new(q, window, max_series);
    let mut inspected = 0u64;
    let single = match &q.spans {
        SpansetExpr::Filter(field)
            if !field_needs_trace(field)
                && !q.by.iter().any(field_needs_trace)
                && !function_field(&q.function).is_some_and(field_needs_trace) =>
        {
            Some(field)
        }
        _ => None,
    };
    let mut reads = Reads::default();
    reads.spans(&q.spans);
    q.by.iter().for_each(|f| reads.field(f));
    if let Some(f) = function_field(&q.function) {
        reads.field(f);
    }
    // compare() counts every attribute of the spans.
    let all = SpanFields { attributes: None, events: true };
    let fields = match &q.function {
        MetricsFunction::Compare { .. } => all,
        _ => reads.projection().unwrap_or(all),
    };
    match single {
        Some(field) => {
            let pushed = pushdown(field).map(|(query, _, _)| query).unwrap_or_default();
            let query = TraceQuery {
                start_time_min_unix_nano: window.start_unix_nano,
                start_time_max_unix_nano: window.end_unix_nano.saturating_sub(1),
                limit: usize::MAX,
                control: control.clone(),
                ..pushed
            };
            store.scan_fields(&query, &fields, &mut |span| {
                inspected += 1;
                let view = TraceView::single(span);
                if truthy(&eval_field(field, 0, &view)) {
                    acc.add(0, &view);
                }
            })?;
        }
        None => {
            let mut error = None;
            store.scan_traces(
                window.start_unix_nano,
                window.end_unix_nano.saturating_sub(1),
                &fields,
                &mut |spans| {
                    if error.is_some() {
                        return;
                    }
                    if let Err(e) = control.check() {
                        error = Some(e);
                        return;
                    }
                    inspected += spans.len() as u64;
                    let view = TraceView::new(spans);
                    let mut seen = HashSet::new();
                    for set in eval_trace(&q.spans, &view) {
                        for i in set.spans {
                            if seen.insert(i) {
                                acc.add(i, &view);
                            }
                        }
                    }
                },
            )?;
            if let Some(e) = error {
                return Err(e);
            }
        }
    }
    let truncated = acc.truncated;
    Ok(MetricsAnswer { series: acc.finish(), truncated, inspected_spans: inspected })
}

/// The key RED statistics group by for a by() field, when they group exactly as TraceQL.
fn red_key(field: &Field) -> Option<String> {
    match field {
        Field::Attribute(Attribute { scope: Scope::Resource, name }) if name == semconv::SERVICE_NAME => {
            Some("service.name".into())
        }
        Field::Intrinsic(Intrinsic::Name) => Some("span.name".into()),
        Field::Attribute(Attribute { scope: Scope::Span | Scope::Unscoped, name })
            if !matches!(name.as_str(), "service.name" | "service" | "span.name" | "operation") =>
        {
            Some(name.clone())
        }
        _ => None,
    }
}

/// Span-count and duration functions over a filter the store answers exactly, at most one
/// by() key: the store's RED aggregation (ClickHouse aggregates in SQL, the embedded store
/// scans typed columns on every core) answers them without building spans.
fn fast_metrics(
    query: &QueryService,
    q: &MetricsQuery,
    window: Window,
    max_series: usize,
    control: &QueryControl,
) -> Result<Option<MetricsAnswer>, QueryError> {
    let duration = |f: &Field| matches!(f, Field::Intrinsic(Intrinsic::Duration));
    let supported = match &q.function {
        MetricsFunction::Rate | MetricsFunction::CountOverTime => true,
        MetricsFunction::QuantileOverTime(f, _)
        | MetricsFunction::AvgOverTime(f)
        | MetricsFunction::MaxOverTime(f)
        | MetricsFunction::SumOverTime(f) => duration(f),
        _ => false,
    };
    let SpansetExpr::Filter(field) = &q.spans else { return Ok(None) };
    let Some((pushed, _, true)) = pushdown(field) else { return Ok(None) };
    if !supported || q.by.len() > 1 {
        return Ok(None);
    }
    let key = match q.by.first() {
        None => None,
        Some(f) => match red_key(f) {
            Some(k) => Some(k),
            None => return Ok(None),
        },
    };
    let search = TraceQuery {
        start_time_min_unix_nano: window.start_unix_nano,
        start_time_max_unix_nano: window.end_unix_nano.saturating_sub(1),
        limit: usize::MAX,
        control: control.clone(),
        ..pushed
    };
    let answer = query.red_top(&search, key.as_deref(), window.step_nanos, max_series)?;
    let step_seconds = window.step_nanos as f64 / 1e9;
    let mut series = Vec::new();
    let mut inspected = 0;
    for group in answer.groups {
        inspected += group.total.calls;
        let labels: Vec<(String, Static)> = match (&group.group, q.by.first()) {
            (Some(text), Some(f)) => vec![(crate::eval::field_text(f), Static::Str(text.clone()))],
            _ => Vec::new(),
        };
        let points = |value: &dyn Fn(&spindle_query::analytics::Stats) -> Option<f64>| -> Vec<(u64, f64)> {
            group
                .series
                .iter()
                .filter_map(|(at, stats)| window.step_at(*at).map(|i| (i, stats)))
                .filter_map(|(i, stats)| value(stats).map(|v| (window.timestamp_ms(i), v)))
                .collect()
        };
        let every_step = |samples: Vec<(u64, f64)>| -> Vec<(u64, f64)> {
            let given: HashMap<u64, f64> = samples.into_iter().collect();
            (0..window.steps())
                .map(|i| {
                    let t = window.timestamp_ms(i);
                    (t, given.get(&t).copied().unwrap_or(0.0))
                })
                .collect()
        };
        match &q.function {
            MetricsFunction::Rate => {
                series.push(Series { labels, samples: every_step(points(&|s| Some(s.calls as f64 / step_seconds))) })
            }
            MetricsFunction::CountOverTime => {
                series.push(Series { labels, samples: every_step(points(&|s| Some(s.calls as f64))) })
            }
            MetricsFunction::QuantileOverTime(_, qs) => {
                for quantile in qs {
                    let mut with_p = labels.clone();
                    with_p.push(("p".into(), Static::Float(*quantile)));
                    series.push(Series {
                        labels: with_p,
                        samples: points(&|s| s.latency.quantile(*quantile).map(|n| n / 1e9)),
                    });
                }
            }
            MetricsFunction::AvgOverTime(_) => series.push(Series {
                labels,
                samples: points(&|s| (s.calls > 0).then(|| s.latency.sum_nanos() as f64 / s.calls as f64 / 1e9)),
            }),
            MetricsFunction::MaxOverTime(_) => series
                .push(Series { labels, samples: points(&|s| (s.calls > 0).then(|| s.latency.max() as f64 / 1e9)) }),
            MetricsFunction::SumOverTime(_) => series.push(Series {
                labels,
                samples: points(&|s| (s.calls > 0).then(|| s.latency.sum_nanos() as f64 / 1e9)),
            }),
            _ => return Ok(None),
        }
    }
    metrics::sort_series(&mut series);
    Ok(Some(MetricsAnswer { series, truncated: answer.other.is_some(), inspected_spans: inspected }))
}
