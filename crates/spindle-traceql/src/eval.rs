//! Evaluation of a spanset expression on one trace, and of field expressions on one span.

use std::cmp::Ordering;
use std::collections::HashMap;

use spindle_model::{AttributeValue, KeyValue, Span, SpanId};

use crate::ast::*;

/// One trace prepared for evaluation: parents and children by index, the root.
pub struct TraceView<'a> {
    pub spans: &'a [Span],
    /// Index of each span's parent within the trace, when it is there.
    pub parent: Vec<Option<usize>>,
    pub child_count: Vec<u32>,
    pub root: Option<usize>,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
}

impl<'a> TraceView<'a> {
    pub fn new(spans: &'a [Span]) -> Self {
        let mut by_id: HashMap<SpanId, usize> = HashMap::with_capacity(spans.len());
        for (i, s) in spans.iter().enumerate() {
            by_id.entry(s.span_id).or_insert(i);
        }
        let mut child_count = vec![0u32; spans.len()];
        let parent: Vec<Option<usize>> = spans
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let p = if s.parent_span_id.is_valid() { by_id.get(&s.parent_span_id).copied() } else { None };
                p.filter(|&p| p != i)
            })
            .collect();
        for p in parent.iter().flatten() {
            child_count[*p] += 1;
        }
        // The root: a span without a parent id, the earliest if several.
        let root = spans
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.parent_span_id.is_valid())
            .min_by_key(|(_, s)| s.start_time_unix_nano)
            .map(|(i, _)| i);
        let start_unix_nano = spans.iter().map(|s| s.start_time_unix_nano).min().unwrap_or(0);
        let end_unix_nano = spans.iter().map(|s| s.end_time_unix_nano.max(s.start_time_unix_nano)).max().unwrap_or(0);
        TraceView { spans, parent, child_count, root, start_unix_nano, end_unix_nano }
    }

    /// A view of one span alone, for filters that read nothing of the rest of its trace.
    pub fn single(span: &'a Span) -> Self {
        TraceView {
            spans: std::slice::from_ref(span),
            parent: vec![None],
            child_count: vec![0],
            root: None,
            start_unix_nano: span.start_time_unix_nano,
            end_unix_nano: span.end_time_unix_nano,
        }
    }

    pub fn duration_nanos(&self) -> u64 {
        self.end_unix_nano.saturating_sub(self.start_unix_nano)
    }

    pub fn root_service(&self) -> Option<&'a str> {
        self.root.map(|r| self.spans[r].service_name())
    }

    pub fn root_name(&self) -> Option<&'a str> {
        self.root.map(|r| self.spans[r].name.as_str())
    }
}

/// Spans of one trace (indices into [`TraceView::spans`], sorted, distinct) selected
/// together, with what the pipeline computed for them.
#[derive(Debug, Clone, Default)]
pub struct Spanset {
    pub spans: Vec<usize>,
    /// The value of the last aggregate filter (`count() > 2`): shown with the spanset.
    pub scalar: Option<Static>,
    /// The values of `by(…)`, as `(field text, value)`.
    pub by: Vec<(String, Static)>,
    /// Fields `select(…)` asked for.
    pub select: Vec<Field>,
}

/// The value of a field on a span: one value, or several (an array attribute, or an event
/// or link field, one per event or link).
#[derive(Debug, Clone)]
pub enum Value {
    One(Static),
    /// `array`: an array attribute, for which `!=` and `!~` mean "no element"; otherwise
    /// the values of events or links, any of which may match.
    Many {
        items: Vec<Static>,
        array: bool,
    },
}

impl Value {
    pub fn single(self) -> Static {
        match self {
            Value::One(s) => s,
            Value::Many { items, .. } => items.into_iter().next().unwrap_or(Static::Nil),
        }
    }
}

pub fn static_of(value: &AttributeValue) -> Value {
    match value {
        AttributeValue::Array(items) => {
            Value::Many { items: items.iter().map(|v| static_of(v).single()).collect(), array: true }
        }
        other => Value::One(scalar_of(other)),
    }
}

fn scalar_of(value: &AttributeValue) -> Static {
    match value {
        AttributeValue::String(s) => Static::Str(s.to_string()),
        AttributeValue::Int(i) => Static::Int(*i),
        AttributeValue::Double(d) => Static::Float(*d),
        AttributeValue::Bool(b) => Static::Bool(*b),
        other => Static::Str(other.to_display_string()),
    }
}

fn find<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a AttributeValue> {
    attributes.iter().find(|kv| kv.key == key).map(|kv| &kv.value)
}

/// The value of an attribute on span `i`.
pub fn attribute_value(attribute: &Attribute, span: &Span) -> Value {
    let name = attribute.name.as_str();
    let found = |v: Option<&AttributeValue>| v.map_or(Value::One(Static::Nil), static_of);
    match attribute.scope {
        Scope::Span => found(find(&span.attributes, name)),
        Scope::Resource => found(find(&span.resource.attributes, name)),
        Scope::Unscoped => found(find(&span.attributes, name).or_else(|| find(&span.resource.attributes, name))),
        Scope::Instrumentation => found(find(&span.scope.attributes, name)),
        Scope::Event => {
            let items: Vec<Static> =
                span.events.iter().filter_map(|e| find(&e.attributes, name)).map(|v| static_of(v).single()).collect();
            many(items)
        }
        Scope::Link => {
            let items: Vec<Static> =
                span.links.iter().filter_map(|l| find(&l.attributes, name)).map(|v| static_of(v).single()).collect();
            many(items)
        }
    }
}

fn many(items: Vec<Static>) -> Value {
    if items.is_empty() {
        Value::One(Static::Nil)
    } else {
        Value::Many { items, array: false }
    }
}

pub fn intrinsic_value(intrinsic: Intrinsic, i: usize, trace: &TraceView) -> Value {
    let span = &trace.spans[i];
    let one = Value::One;
    match intrinsic {
        Intrinsic::Name => one(Static::Str(span.name.to_string())),
        Intrinsic::Status => one(Static::Status(span.status.code)),
        Intrinsic::StatusMessage => one(Static::Str(span.status.message.clone())),
        Intrinsic::Kind => one(Static::Kind(span.kind)),
        Intrinsic::Duration => one(Static::Duration(span.duration_nanos().min(i64::MAX as u64) as i64)),
        Intrinsic::SpanId => one(Static::Str(span.span_id.to_hex())),
        Intrinsic::ParentId => {
            if span.parent_span_id.is_valid() {
                one(Static::Str(span.parent_span_id.to_hex()))
            } else {
                one(Static::Nil)
            }
        }
        Intrinsic::ChildCount => one(Static::Int(i64::from(trace.child_count[i]))),
        Intrinsic::TraceDuration => one(Static::Duration(trace.duration_nanos().min(i64::MAX as u64) as i64)),
        Intrinsic::RootName => one(trace.root_name().map_or(Static::Nil, |s| Static::Str(s.to_string()))),
        Intrinsic::RootService => one(trace.root_service().map_or(Static::Nil, |s| Static::Str(s.to_string()))),
        Intrinsic::TraceId => one(Static::Str(span.trace_id.to_hex())),
        Intrinsic::EventName => many(span.events.iter().map(|e| Static::Str(e.name.to_string())).collect()),
        Intrinsic::EventTimeSinceStart => many(
            span.events
                .iter()
                .map(|e| Static::Duration(e.time_unix_nano as i64 - span.start_time_unix_nano as i64))
                .collect(),
        ),
        Intrinsic::LinkTraceId => many(span.links.iter().map(|l| Static::Str(l.trace_id.to_hex())).collect()),
        Intrinsic::LinkSpanId => many(span.links.iter().map(|l| Static::Str(l.span_id.to_hex())).collect()),
        Intrinsic::InstrumentationName => one(Static::Str(span.scope.name.clone())),
        Intrinsic::InstrumentationVersion => one(Static::Str(span.scope.version.clone())),
    }
}

/// Evaluates a field on span `i` of `trace`.
pub fn eval_field(field: &Field, i: usize, trace: &TraceView) -> Value {
    match field {
        Field::Static(s) => Value::One(s.clone()),
        Field::Attribute(a) => attribute_value(a, &trace.spans[i]),
        Field::Intrinsic(intrinsic) => intrinsic_value(*intrinsic, i, trace),
        Field::Binary(BinaryOp::And, l, r) => {
            Value::One(Static::Bool(truthy(&eval_field(l, i, trace)) && truthy(&eval_field(r, i, trace))))
        }
        Field::Binary(BinaryOp::Or, l, r) => {
            Value::One(Static::Bool(truthy(&eval_field(l, i, trace)) || truthy(&eval_field(r, i, trace))))
        }
        Field::Binary(op, l, r) if op.is_comparison() => {
            Value::One(Static::Bool(compare_values(*op, &eval_field(l, i, trace), &eval_field(r, i, trace))))
        }
        Field::Binary(op, l, r) => {
            Value::One(arithmetic(*op, &eval_field(l, i, trace).single(), &eval_field(r, i, trace).single()))
        }
        Field::Regex { field, pattern, negated } => {
            let matches = |s: &Static| matches!(s, Static::Str(text) if pattern.is_match(text));
            let result = match eval_field(field, i, trace) {
                Value::One(Static::Str(text)) => pattern.is_match(&text) != *negated,
                Value::One(_) => false,
                Value::Many { items, array: true } => {
                    let any = items.iter().any(matches);
                    if *negated {
                        !any && items.iter().any(|s| matches!(s, Static::Str(_)))
                    } else {
                        any
                    }
                }
                Value::Many { items, array: false } => {
                    items.iter().any(|s| matches!(s, Static::Str(t) if pattern.is_match(t) != *negated))
                }
            };
            Value::One(Static::Bool(result))
        }
        Field::Not(inner) => match eval_field(inner, i, trace).single() {
            Static::Bool(b) => Value::One(Static::Bool(!b)),
            _ => Value::One(Static::Nil),
        },
        Field::Negate(inner) => {
            Value::One(arithmetic(BinaryOp::Sub, &Static::Int(0), &eval_field(inner, i, trace).single()))
        }
    }
}

pub fn truthy(value: &Value) -> bool {
    matches!(value, Value::One(Static::Bool(true)))
}

/// `l op r` for comparison operators, with TraceQL's rules for nil, arrays, events and links.
pub fn compare_values(op: BinaryOp, l: &Value, r: &Value) -> bool {
    match (l, r) {
        (Value::One(a), Value::One(b)) => compare(op, a, b),
        (Value::Many { items, array }, Value::One(b)) => many_compare(op, items, *array, |x| compare(op, x, b), b),
        (Value::One(a), Value::Many { items, array }) => many_compare(op, items, *array, |x| compare(op, a, x), a),
        (Value::Many { items: a, .. }, Value::Many { items: b, .. }) => {
            a.iter().any(|x| b.iter().any(|y| compare(op, x, y)))
        }
    }
}

fn many_compare(op: BinaryOp, items: &[Static], array: bool, test: impl Fn(&Static) -> bool, other: &Static) -> bool {
    if matches!(other, Static::Nil) {
        // A present array or event value is not nil.
        return op == BinaryOp::Ne;
    }
    if array && op == BinaryOp::Ne {
        // `!=` on an array: no element equals.
        return !items.iter().any(|x| compare(BinaryOp::Eq, x, other)) && items.iter().any(|x| comparable(x, other));
    }
    items.iter().any(test)
}

fn comparable(a: &Static, b: &Static) -> bool {
    order(a, b).is_some() || matches!((a, b), (Static::Bool(_), Static::Bool(_)))
}

fn numeric(s: &Static) -> Option<f64> {
    match s {
        Static::Int(i) => Some(*i as f64),
        Static::Float(f) => Some(*f),
        Static::Duration(d) => Some(*d as f64),
        _ => None,
    }
}

/// The order of two values when they compare: numbers with numbers (durations count
/// nanoseconds), strings with strings, statuses and kinds with their own kind.
fn order(a: &Static, b: &Static) -> Option<Ordering> {
    match (a, b) {
        (Static::Int(x), Static::Int(y)) => Some(x.cmp(y)),
        (Static::Duration(x), Static::Duration(y)) => Some(x.cmp(y)),
        (Static::Str(x), Static::Str(y)) => Some(x.cmp(y)),
        (Static::Status(x), Static::Status(y)) => (x == y).then_some(Ordering::Equal).or(Some(Ordering::Less)),
        (Static::Kind(x), Static::Kind(y)) => (x == y).then_some(Ordering::Equal).or(Some(Ordering::Less)),
        (Static::Bool(x), Static::Bool(y)) => (x == y).then_some(Ordering::Equal).or(Some(Ordering::Less)),
        _ => numeric(a)?.partial_cmp(&numeric(b)?),
    }
}

/// `a op b` for one value on each side.
pub fn compare(op: BinaryOp, a: &Static, b: &Static) -> bool {
    match (a, b) {
        (Static::Nil, Static::Nil) => op == BinaryOp::Eq,
        (Static::Nil, _) | (_, Static::Nil) => op == BinaryOp::Ne,
        _ => {
            let ordering = order(a, b);
            let unordered = matches!(a, Static::Status(_) | Static::Kind(_) | Static::Bool(_));
            match (op, ordering) {
                (_, None) => false,
                (BinaryOp::Eq, Some(o)) => o == Ordering::Equal,
                (BinaryOp::Ne, Some(o)) => o != Ordering::Equal,
                (_, Some(_)) if unordered => false,
                (BinaryOp::Lt, Some(o)) => o == Ordering::Less,
                (BinaryOp::Le, Some(o)) => o != Ordering::Greater,
                (BinaryOp::Gt, Some(o)) => o == Ordering::Greater,
                (BinaryOp::Ge, Some(o)) => o != Ordering::Less,
                _ => false,
            }
        }
    }
}

/// `a op b` for arithmetic operators; nil when the operands are not numbers.
pub fn arithmetic(op: BinaryOp, a: &Static, b: &Static) -> Static {
    use Static::*;
    match (a, b) {
        (Int(x), Int(y)) => {
            let r = match op {
                BinaryOp::Add => x.checked_add(*y),
                BinaryOp::Sub => x.checked_sub(*y),
                BinaryOp::Mul => x.checked_mul(*y),
                BinaryOp::Div => x.checked_div(*y),
                BinaryOp::Mod => x.checked_rem(*y),
                BinaryOp::Pow => u32::try_from(*y).ok().and_then(|e| x.checked_pow(e)),
                _ => None,
            };
            r.map_or(Nil, Int)
        }
        (Duration(x), Duration(y)) if matches!(op, BinaryOp::Add | BinaryOp::Sub) => {
            let r = if op == BinaryOp::Add { x.checked_add(*y) } else { x.checked_sub(*y) };
            r.map_or(Nil, Duration)
        }
        (Duration(x), Int(y)) | (Int(y), Duration(x)) if op == BinaryOp::Mul => x.checked_mul(*y).map_or(Nil, Duration),
        (Duration(x), Int(y)) if op == BinaryOp::Div => x.checked_div(*y).map_or(Nil, Duration),
        _ => match (numeric(a), numeric(b)) {
            (Some(x), Some(y)) => {
                let r = match op {
                    BinaryOp::Add => x + y,
                    BinaryOp::Sub => x - y,
                    BinaryOp::Mul => x * y,
                    BinaryOp::Div => x / y,
                    BinaryOp::Mod => x % y,
                    BinaryOp::Pow => x.powf(y),
                    _ => return Nil,
                };
                if r.is_finite() {
                    Float(r)
                } else {
                    Nil
                }
            }
            _ => Nil,
        },
    }
}

/// Evaluates `expr` on `input` spansets of `trace`.
pub fn eval_spansets(expr: &SpansetExpr, trace: &TraceView, input: Vec<Spanset>) -> Vec<Spanset> {
    match expr {
        SpansetExpr::Filter(field) => input
            .into_iter()
            .filter_map(|set| {
                let spans: Vec<usize> =
                    set.spans.iter().copied().filter(|&i| truthy(&eval_field(field, i, trace))).collect();
                (!spans.is_empty()).then_some(Spanset { spans, ..set })
            })
            .collect(),
        SpansetExpr::Binary(op, l, r) => {
            let mut out = Vec::new();
            for set in input {
                let left = eval_spansets(l, trace, vec![set.clone()]);
                let right = eval_spansets(r, trace, vec![set.clone()]);
                let spans = combine(*op, trace, &union(&left), &union(&right), !left.is_empty(), !right.is_empty());
                if let Some(spans) = spans.filter(|s| !s.is_empty()) {
                    let select = left.iter().chain(&right).flat_map(|s| s.select.iter().cloned()).collect();
                    out.push(Spanset { spans, select, ..set });
                }
            }
            out
        }
        SpansetExpr::Pipeline(first, stages) => {
            let mut sets = eval_spansets(first, trace, input);
            for stage in stages {
                if sets.is_empty() {
                    break;
                }
                sets = apply_stage(stage, trace, sets);
            }
            sets
        }
    }
}

fn union(sets: &[Spanset]) -> Vec<usize> {
    let mut all: Vec<usize> = sets.iter().flat_map(|s| s.spans.iter().copied()).collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// The spans `lhs op rhs` selects, given each side's spans.
fn combine(
    op: SpansetOp,
    trace: &TraceView,
    lhs: &[usize],
    rhs: &[usize],
    lhs_any: bool,
    rhs_any: bool,
) -> Option<Vec<usize>> {
    match op {
        SpansetOp::And => (lhs_any && rhs_any).then(|| merge(lhs, rhs)),
        SpansetOp::Or => (lhs_any || rhs_any).then(|| merge(lhs, rhs)),
        _ => {
            let (relation, mode) = op.structural()?;
            Some(structural(relation, mode, trace, lhs, rhs))
        }
    }
}

fn merge(a: &[usize], b: &[usize]) -> Vec<usize> {
    let mut all: Vec<usize> = a.iter().chain(b).copied().collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// Structural evaluation with marks over the trace: one pass up each span's ancestor chain
/// (memoised), never pairs of spans.
pub fn structural(
    relation: Relation,
    mode: StructuralMode,
    trace: &TraceView,
    lhs: &[usize],
    rhs: &[usize],
) -> Vec<usize> {
    let n = trace.spans.len();
    let mut in_lhs = vec![false; n];
    for &i in lhs {
        in_lhs[i] = true;
    }
    // related[r]: r stands in the relation to some lhs span.
    let related: Box<dyn Fn(usize) -> bool> = match relation {
        Relation::Child => Box::new(|r| trace.parent[r].is_some_and(|p| in_lhs[p])),
        Relation::Parent => {
            let mut is_parent = vec![false; n];
            for &l in lhs {
                if let Some(p) = trace.parent[l] {
                    is_parent[p] = true;
                }
            }
            Box::new(move |r| is_parent[r])
        }
        Relation::Descendant => {
            let below = has_marked_ancestor(trace, &in_lhs);
            Box::new(move |r| below[r])
        }
        Relation::Ancestor => {
            let mut above = vec![false; n];
            for &l in lhs {
                let mut at = trace.parent[l];
                let mut steps = 0;
                while let Some(p) = at {
                    if above[p] || steps > n {
                        break;
                    }
                    above[p] = true;
                    at = trace.parent[p];
                    steps += 1;
                }
            }
            Box::new(move |r| above[r])
        }
        Relation::Sibling => {
            let mut lhs_children: HashMap<usize, u32> = HashMap::new();
            for &l in lhs {
                if let Some(p) = trace.parent[l] {
                    *lhs_children.entry(p).or_default() += 1;
                }
            }
            let in_lhs = in_lhs.clone();
            Box::new(move |r| {
                trace.parent[r].is_some_and(|p| {
                    let count = lhs_children.get(&p).copied().unwrap_or(0);
                    count > u32::from(in_lhs[r])
                })
            })
        }
    };
    match mode {
        StructuralMode::Plain => rhs.iter().copied().filter(|&r| related(r)).collect(),
        StructuralMode::Not => rhs.iter().copied().filter(|&r| !related(r)).collect(),
        StructuralMode::Union => {
            let matched: Vec<usize> = rhs.iter().copied().filter(|&r| related(r)).collect();
            if matched.is_empty() {
                return matched;
            }
            // The lhs spans on the other end of the relation from a matched rhs span.
            let partners = structural(inverse(relation), StructuralMode::Plain, trace, &matched, lhs);
            merge(&matched, &partners)
        }
    }
}

fn inverse(relation: Relation) -> Relation {
    match relation {
        Relation::Child => Relation::Parent,
        Relation::Parent => Relation::Child,
        Relation::Descendant => Relation::Ancestor,
        Relation::Ancestor => Relation::Descendant,
        Relation::Sibling => Relation::Sibling,
    }
}

/// For each span, whether one of its ancestors is marked: each chain walked once.
fn has_marked_ancestor(trace: &TraceView, marked: &[bool]) -> Vec<bool> {
    let n = trace.spans.len();
    // 0 unknown, 1 no, 2 yes, 3 on the current path (a cycle).
    let mut state = vec![0u8; n];
    let mut path = Vec::new();
    for start in 0..n {
        let mut at = start;
        loop {
            if state[at] != 0 {
                break;
            }
            state[at] = 3;
            path.push(at);
            match trace.parent[at] {
                Some(p) => at = p,
                None => break,
            }
        }
        // Resolve the path from its top down.
        let mut above = match trace.parent[*path.last().unwrap_or(&start)] {
            Some(p) if state[p] == 1 || state[p] == 2 => state[p] == 2 || marked[p],
            _ => false,
        };
        while let Some(i) = path.pop() {
            if state[i] == 3 {
                state[i] = if above { 2 } else { 1 };
            }
            above = above || marked[i];
        }
    }
    state.iter().map(|&s| s == 2).collect()
}

fn apply_stage(stage: &Stage, trace: &TraceView, sets: Vec<Spanset>) -> Vec<Spanset> {
    match stage {
        Stage::Spans(expr) => sets.into_iter().flat_map(|set| eval_spansets(expr, trace, vec![set])).collect(),
        Stage::Scalar(filter) => sets
            .into_iter()
            .filter_map(|mut set| {
                let l = eval_scalar(&filter.lhs, trace, &set.spans);
                let r = eval_scalar(&filter.rhs, trace, &set.spans);
                if compare(filter.op, &l, &r) && !matches!((&l, &r), (Static::Nil, _) | (_, Static::Nil)) {
                    set.scalar = Some(l);
                    Some(set)
                } else {
                    None
                }
            })
            .collect(),
        Stage::By(fields) => {
            let mut out = Vec::new();
            for set in sets {
                let mut groups: Vec<(Vec<Static>, Vec<usize>)> = Vec::new();
                for &i in &set.spans {
                    let key: Vec<Static> = fields.iter().map(|f| eval_field(f, i, trace).single()).collect();
                    match groups.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, spans)) => spans.push(i),
                        None => groups.push((key, vec![i])),
                    }
                }
                for (key, spans) in groups {
                    let by = fields.iter().zip(key).map(|(f, v)| (field_text(f), v)).collect();
                    out.push(Spanset { spans, by, select: set.select.clone(), scalar: None });
                }
            }
            out
        }
        Stage::Coalesce => {
            let all = union(&sets);
            let select = sets.iter().flat_map(|s| s.select.iter().cloned()).collect();
            vec![Spanset { spans: all, select, ..Spanset::default() }]
        }
        Stage::Select(fields) => sets
            .into_iter()
            .map(|mut set| {
                set.select.extend(fields.iter().cloned());
                set
            })
            .collect(),
    }
}

/// An aggregate expression over the spans of one spanset.
pub fn eval_scalar(expr: &ScalarExpr, trace: &TraceView, spans: &[usize]) -> Static {
    match expr {
        ScalarExpr::Literal(s) => s.clone(),
        ScalarExpr::Binary(op, l, r) => arithmetic(*op, &eval_scalar(l, trace, spans), &eval_scalar(r, trace, spans)),
        ScalarExpr::Aggregate(Aggregate::Count, _) => Static::Int(spans.len() as i64),
        ScalarExpr::Aggregate(aggregate, field) => {
            let Some(field) = field else { return Static::Nil };
            let values: Vec<Static> = spans
                .iter()
                .map(|&i| eval_field(field, i, trace).single())
                .filter(|v| matches!(v, Static::Int(_) | Static::Float(_) | Static::Duration(_)))
                .collect();
            aggregate_values(*aggregate, &values)
        }
    }
}

fn aggregate_values(aggregate: Aggregate, values: &[Static]) -> Static {
    if values.is_empty() {
        return Static::Nil;
    }
    let all_durations = values.iter().all(|v| matches!(v, Static::Duration(_)));
    let all_ints = values.iter().all(|v| matches!(v, Static::Int(_)));
    let nums: Vec<f64> = values.iter().filter_map(numeric).collect();
    let wrap = |x: f64| {
        if all_durations {
            Static::Duration(x as i64)
        } else if all_ints && x.fract() == 0.0 && aggregate != Aggregate::Avg {
            Static::Int(x as i64)
        } else {
            Static::Float(x)
        }
    };
    match aggregate {
        Aggregate::Sum => wrap(nums.iter().sum()),
        Aggregate::Avg => wrap(nums.iter().sum::<f64>() / nums.len() as f64),
        Aggregate::Min => wrap(nums.iter().copied().fold(f64::INFINITY, f64::min)),
        Aggregate::Max => wrap(nums.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
        Aggregate::Count => Static::Int(values.len() as i64),
    }
}

/// A field as text, for labels: `resource.service.name`, `name`, `span:duration`.
pub fn field_text(field: &Field) -> String {
    match field {
        Field::Attribute(a) => a.to_string(),
        Field::Intrinsic(i) => i.name().to_string(),
        Field::Static(s) => s.to_string(),
        other => format!("{other:?}"),
    }
}

/// The spansets `expr` selects from a whole trace; empty when the trace does not match.
pub fn eval_trace(expr: &SpansetExpr, trace: &TraceView) -> Vec<Spanset> {
    let all = Spanset { spans: (0..trace.spans.len()).collect(), ..Spanset::default() };
    eval_spansets(expr, trace, vec![all])
}
