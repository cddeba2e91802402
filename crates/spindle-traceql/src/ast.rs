//! What a parsed TraceQL query is: spanset pipelines, field expressions, metrics.

use std::fmt;

use regex::Regex;
use spindle_model::{SpanKind, StatusCode};

/// A whole query: a search (spansets out) or a metrics query (time series out).
#[derive(Debug, Clone)]
pub enum Query {
    Search(SpansetExpr),
    Metrics(MetricsExpr),
}

/// An expression over the spans of one trace whose value is a list of spansets.
#[derive(Debug, Clone)]
pub enum SpansetExpr {
    /// `{ condition }`.
    Filter(Field),
    /// `lhs op rhs` between spansets: logical or structural.
    Binary(SpansetOp, Box<SpansetExpr>, Box<SpansetExpr>),
    /// `input | stage | stage …`.
    Pipeline(Box<SpansetExpr>, Vec<Stage>),
}

/// A pipeline stage after the first element.
#[derive(Debug, Clone)]
pub enum Stage {
    /// A spanset expression applied to each input spanset's spans.
    Spans(SpansetExpr),
    /// `count() > 3`, `avg(duration) > 1s`: keeps the spansets whose aggregate compares true.
    Scalar(ScalarFilter),
    /// `by(field, …)`: splits each spanset by the fields' values.
    By(Vec<Field>),
    /// `coalesce()`: merges the spansets of a trace into one.
    Coalesce,
    /// `select(field, …)`: fields shown with each matched span.
    Select(Vec<Field>),
}

#[derive(Debug, Clone)]
pub struct ScalarFilter {
    pub lhs: ScalarExpr,
    pub op: BinaryOp,
    pub rhs: ScalarExpr,
}

/// A value computed over a spanset.
#[derive(Debug, Clone)]
pub enum ScalarExpr {
    Aggregate(Aggregate, Option<Field>),
    Literal(Static),
    Binary(BinaryOp, Box<ScalarExpr>, Box<ScalarExpr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    Count,
    Avg,
    Min,
    Max,
    Sum,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpansetOp {
    And,
    Or,
    /// `>`: rhs spans whose parent matches lhs.
    Child,
    /// `<`: rhs spans that are the parent of an lhs span.
    Parent,
    /// `>>`: rhs spans with an lhs ancestor.
    Descendant,
    /// `<<`: rhs spans that are an ancestor of an lhs span.
    Ancestor,
    /// `~`: rhs spans with an lhs sibling.
    Sibling,
    NotChild,
    NotParent,
    NotDescendant,
    NotAncestor,
    NotSibling,
    UnionChild,
    UnionParent,
    UnionDescendant,
    UnionAncestor,
    UnionSibling,
}

/// The structural relation a structural operator tests, and how it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    Child,
    Parent,
    Descendant,
    Ancestor,
    Sibling,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StructuralMode {
    /// The rhs spans that have the relation.
    Plain,
    /// The rhs spans that do not.
    Not,
    /// Both sides' spans taking part in the relation.
    Union,
}

impl SpansetOp {
    pub fn structural(self) -> Option<(Relation, StructuralMode)> {
        use Relation as R;
        use SpansetOp::*;
        use StructuralMode as M;
        Some(match self {
            And | Or => return None,
            Child => (R::Child, M::Plain),
            Parent => (R::Parent, M::Plain),
            Descendant => (R::Descendant, M::Plain),
            Ancestor => (R::Ancestor, M::Plain),
            Sibling => (R::Sibling, M::Plain),
            NotChild => (R::Child, M::Not),
            NotParent => (R::Parent, M::Not),
            NotDescendant => (R::Descendant, M::Not),
            NotAncestor => (R::Ancestor, M::Not),
            NotSibling => (R::Sibling, M::Not),
            UnionChild => (R::Child, M::Union),
            UnionParent => (R::Parent, M::Union),
            UnionDescendant => (R::Descendant, M::Union),
            UnionAncestor => (R::Ancestor, M::Union),
            UnionSibling => (R::Sibling, M::Union),
        })
    }

    pub fn symbol(self) -> &'static str {
        use SpansetOp::*;
        match self {
            And => "&&",
            Or => "||",
            Child => ">",
            Parent => "<",
            Descendant => ">>",
            Ancestor => "<<",
            Sibling => "~",
            NotChild => "!>",
            NotParent => "!<",
            NotDescendant => "!>>",
            NotAncestor => "!<<",
            NotSibling => "!~",
            UnionChild => "&>",
            UnionParent => "&<",
            UnionDescendant => "&>>",
            UnionAncestor => "&<<",
            UnionSibling => "&~",
        }
    }
}

/// An expression evaluated on one span.
#[derive(Debug, Clone)]
pub enum Field {
    Static(Static),
    Attribute(Attribute),
    Intrinsic(Intrinsic),
    Binary(BinaryOp, Box<Field>, Box<Field>),
    /// `lhs =~ "re"` / `lhs !~ "re"`, the pattern compiled once, fully anchored.
    Regex {
        field: Box<Field>,
        pattern: Regex,
        negated: bool,
    },
    Not(Box<Field>),
    Negate(Box<Field>),
}

impl Field {
    /// Calls `visit` with each leaf of the expression: the attributes, intrinsics and
    /// values it reads.
    pub fn for_each_leaf(&self, visit: &mut dyn FnMut(&Field)) {
        match self {
            Field::Binary(_, l, r) => {
                l.for_each_leaf(visit);
                r.for_each_leaf(visit);
            }
            Field::Regex { field, .. } | Field::Not(field) | Field::Negate(field) => field.for_each_leaf(visit),
            leaf => visit(leaf),
        }
    }
}

impl ScalarExpr {
    fn for_each_field(&self, visit: &mut dyn FnMut(&Field)) {
        match self {
            ScalarExpr::Aggregate(_, Some(field)) => visit(field),
            ScalarExpr::Binary(_, l, r) => {
                l.for_each_field(visit);
                r.for_each_field(visit);
            }
            _ => {}
        }
    }
}

impl SpansetExpr {
    /// Calls `visit` with every field expression of the query: filters, `by(…)` and
    /// `select(…)`, and with `aggregates` the fields of aggregate filters (`avg(…) > 1`).
    pub fn for_each_field(&self, aggregates: bool, visit: &mut dyn FnMut(&Field)) {
        match self {
            SpansetExpr::Filter(field) => visit(field),
            SpansetExpr::Binary(_, l, r) => {
                l.for_each_field(aggregates, visit);
                r.for_each_field(aggregates, visit);
            }
            SpansetExpr::Pipeline(first, stages) => {
                first.for_each_field(aggregates, visit);
                for stage in stages {
                    match stage {
                        Stage::Spans(e) => e.for_each_field(aggregates, visit),
                        Stage::Scalar(f) if aggregates => {
                            f.lhs.for_each_field(visit);
                            f.rhs.for_each_field(visit);
                        }
                        Stage::By(fields) | Stage::Select(fields) => fields.iter().for_each(&mut *visit),
                        Stage::Scalar(_) | Stage::Coalesce => {}
                    }
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    And,
    Or,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
}

impl BinaryOp {
    pub fn symbol(self) -> &'static str {
        use BinaryOp::*;
        match self {
            And => "&&",
            Or => "||",
            Eq => "=",
            Ne => "!=",
            Lt => "<",
            Le => "<=",
            Gt => ">",
            Ge => ">=",
            Add => "+",
            Sub => "-",
            Mul => "*",
            Div => "/",
            Mod => "%",
            Pow => "^",
        }
    }

    pub fn is_comparison(self) -> bool {
        matches!(self, BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge)
    }
}

/// Where an attribute is looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `.name`: the span's attribute, else its resource's.
    Unscoped,
    Span,
    Resource,
    Event,
    Link,
    Instrumentation,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attribute {
    pub scope: Scope,
    pub name: String,
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = match self.scope {
            Scope::Unscoped => "",
            Scope::Span => "span",
            Scope::Resource => "resource",
            Scope::Event => "event",
            Scope::Link => "link",
            Scope::Instrumentation => "instrumentation",
        };
        let plain = !self.name.is_empty()
            && self.name.chars().all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':'));
        if plain {
            write!(f, "{prefix}.{}", self.name)
        } else {
            write!(f, "{prefix}.\"{}\"", self.name.replace('\\', "\\\\").replace('"', "\\\""))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Intrinsic {
    Name,
    Status,
    StatusMessage,
    Kind,
    Duration,
    SpanId,
    ParentId,
    ChildCount,
    TraceDuration,
    RootName,
    RootService,
    TraceId,
    EventName,
    EventTimeSinceStart,
    LinkTraceId,
    LinkSpanId,
    InstrumentationName,
    InstrumentationVersion,
}

impl Intrinsic {
    /// Every intrinsic with its canonical spelling, as `/api/v2/search/tags` lists them.
    pub const ALL: [(Intrinsic, &'static str); 18] = [
        (Intrinsic::Name, "name"),
        (Intrinsic::Status, "status"),
        (Intrinsic::StatusMessage, "statusMessage"),
        (Intrinsic::Kind, "kind"),
        (Intrinsic::Duration, "duration"),
        (Intrinsic::SpanId, "span:id"),
        (Intrinsic::ParentId, "span:parentID"),
        (Intrinsic::ChildCount, "span:childCount"),
        (Intrinsic::TraceDuration, "trace:duration"),
        (Intrinsic::RootName, "trace:rootName"),
        (Intrinsic::RootService, "trace:rootService"),
        (Intrinsic::TraceId, "trace:id"),
        (Intrinsic::EventName, "event:name"),
        (Intrinsic::EventTimeSinceStart, "event:timeSinceStart"),
        (Intrinsic::LinkTraceId, "link:traceID"),
        (Intrinsic::LinkSpanId, "link:spanID"),
        (Intrinsic::InstrumentationName, "instrumentation:name"),
        (Intrinsic::InstrumentationVersion, "instrumentation:version"),
    ];

    pub fn name(self) -> &'static str {
        Intrinsic::ALL.iter().find(|(i, _)| *i == self).map_or("", |(_, n)| n)
    }

    /// Whether its value depends on other spans of the trace.
    pub fn needs_trace(self) -> bool {
        matches!(self, Intrinsic::ChildCount | Intrinsic::TraceDuration | Intrinsic::RootName | Intrinsic::RootService)
    }
}

/// A literal or computed value.
#[derive(Debug, Clone, PartialEq)]
pub enum Static {
    Nil,
    Int(i64),
    Float(f64),
    Str(String),
    Bool(bool),
    Duration(i64),
    Status(StatusCode),
    Kind(SpanKind),
}

// Values key series and groups; floats hash by their bits (NaN never equals, which only
// keeps NaN-valued groups apart).
impl Eq for Static {}

impl std::hash::Hash for Static {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        match self {
            Static::Nil => {}
            Static::Int(i) | Static::Duration(i) => i.hash(state),
            Static::Float(f) => f.to_bits().hash(state),
            Static::Str(s) => s.hash(state),
            Static::Bool(b) => b.hash(state),
            Static::Status(s) => s.to_otlp().hash(state),
            Static::Kind(k) => k.to_otlp().hash(state),
        }
    }
}

impl fmt::Display for Static {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Static::Nil => write!(f, "nil"),
            Static::Int(i) => write!(f, "{i}"),
            Static::Float(x) => write!(f, "{x}"),
            Static::Str(s) => write!(f, "{s}"),
            Static::Bool(b) => write!(f, "{b}"),
            Static::Duration(d) => write!(f, "{}", format_duration(*d)),
            Static::Status(s) => write!(
                f,
                "{}",
                match s {
                    StatusCode::Error => "error",
                    StatusCode::Ok => "ok",
                    StatusCode::Unset => "unset",
                }
            ),
            Static::Kind(k) => write!(f, "{}", kind_name(*k)),
        }
    }
}

pub fn kind_name(kind: SpanKind) -> &'static str {
    match kind {
        SpanKind::Server => "server",
        SpanKind::Client => "client",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
        SpanKind::Internal => "internal",
        SpanKind::Unspecified => "unspecified",
    }
}

/// A duration as TraceQL writes it, in the largest unit that keeps it whole.
pub fn format_duration(nanos: i64) -> String {
    const UNITS: [(i64, &str); 6] = [
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
        (1, "ns"),
    ];
    if nanos == 0 {
        return "0s".into();
    }
    for (size, unit) in UNITS {
        if nanos % size == 0 {
            return format!("{}{unit}", nanos / size);
        }
    }
    format!("{nanos}ns")
}

/// A metrics query: a function over a spanset pipeline's spans, then second stages, or
/// arithmetic between such queries and numbers.
#[derive(Debug, Clone)]
pub enum MetricsExpr {
    Query(Box<MetricsQuery>),
    Scalar(f64),
    Binary(BinaryOp, Box<MetricsExpr>, Box<MetricsExpr>),
    /// Second stages after an arithmetic expression.
    Staged(Box<MetricsExpr>, Vec<SecondStage>),
}

#[derive(Debug, Clone)]
pub struct MetricsQuery {
    pub spans: SpansetExpr,
    pub function: MetricsFunction,
    pub by: Vec<Field>,
    pub stages: Vec<SecondStage>,
}

#[derive(Debug, Clone)]
pub enum MetricsFunction {
    Rate,
    CountOverTime,
    SumOverTime(Field),
    MinOverTime(Field),
    MaxOverTime(Field),
    AvgOverTime(Field),
    QuantileOverTime(Field, Vec<f64>),
    HistogramOverTime(Field),
    /// `compare({selection}, topN, start, end)`.
    Compare {
        selection: Field,
        top: usize,
        window: Option<(u64, u64)>,
    },
}

impl MetricsFunction {
    pub fn name(&self) -> &'static str {
        match self {
            MetricsFunction::Rate => "rate",
            MetricsFunction::CountOverTime => "count_over_time",
            MetricsFunction::SumOverTime(_) => "sum_over_time",
            MetricsFunction::MinOverTime(_) => "min_over_time",
            MetricsFunction::MaxOverTime(_) => "max_over_time",
            MetricsFunction::AvgOverTime(_) => "avg_over_time",
            MetricsFunction::QuantileOverTime(..) => "quantile_over_time",
            MetricsFunction::HistogramOverTime(_) => "histogram_over_time",
            MetricsFunction::Compare { .. } => "compare",
        }
    }
}

#[derive(Debug, Clone)]
pub enum SecondStage {
    TopK(usize),
    BottomK(usize),
    /// Keeps the samples whose value compares true with the number.
    Filter(BinaryOp, f64),
}
