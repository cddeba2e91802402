//! A recursive-descent parser for TraceQL as Tempo's documentation defines it.
//!
//! Precedence, loosest first: metrics arithmetic `+ -`, `* /`; pipes `|`; spanset `||`,
//! `&&`; structural operators; then inside braces `||`, `&&`, comparisons, `+ -`,
//! `* / %`, `^`, unary `!` and `-`.

use regex::{Regex, RegexBuilder};
use spindle_model::{SpanKind, StatusCode};

use crate::ast::*;
use crate::lexer::{lex, Tok, Token};
use crate::ParseError;

/// Nesting deeper than this is refused: recursion stays bounded on any input.
const MAX_DEPTH: usize = 64;
/// Compiled size limit of one regular expression.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A parsed query and its hints (`with(most_recent=true)`, sampling hints).
#[derive(Debug, Clone)]
pub struct Parsed {
    pub query: Query,
    pub hints: Vec<(String, Static)>,
}

pub fn parse(text: &str) -> Result<Parsed, ParseError> {
    let tokens = lex(text)?;
    let mut p = Parser { text, tokens, pos: 0, depth: 0 };
    let first = p.arith(0)?;
    let query = match first {
        Node::Spans(s) => Query::Search(s),
        Node::Metrics(m) => Query::Metrics(p.metric_stages(m)?),
        Node::Number(_) => return Err(p.error_here("a number alone is not a query; start with a spanset like { }")),
    };
    let hints = p.hints()?;
    if p.peek() != &Tok::Eof {
        return Err(p.unexpected("the end of the query, '|' or an operator"));
    }
    Ok(Parsed { query, hints })
}

/// What a parenthesised or top-level expression turned out to be.
enum Node {
    Spans(SpansetExpr),
    Metrics(MetricsExpr),
    Number(f64),
}

struct Parser<'a> {
    text: &'a str,
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.tokens[self.pos.min(self.tokens.len() - 1)].tok
    }

    fn peek_n(&self, n: usize) -> &Tok {
        &self.tokens[(self.pos + n).min(self.tokens.len() - 1)].tok
    }

    fn at(&self) -> usize {
        self.tokens[self.pos.min(self.tokens.len() - 1)].at
    }

    fn next(&mut self) -> Tok {
        let tok = self.peek().clone();
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        tok
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if self.peek() == tok {
            self.next();
            true
        } else {
            false
        }
    }

    fn error_here(&self, message: impl Into<String>) -> ParseError {
        ParseError::at(self.text, self.at(), message.into())
    }

    fn unexpected(&self, expected: &str) -> ParseError {
        self.error_here(format!("expected {expected}, found {}", self.peek().describe()))
    }

    fn expect(&mut self, tok: Tok, expected: &str) -> Result<(), ParseError> {
        if self.eat(&tok) {
            Ok(())
        } else {
            Err(self.unexpected(expected))
        }
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error_here(format!("the query nests deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
    }

    // ---- metrics arithmetic (the outermost level) ----

    fn arith(&mut self, min_prec: u8) -> Result<Node, ParseError> {
        self.enter()?;
        let mut lhs = self.arith_primary()?;
        loop {
            let (op, prec) = match self.peek() {
                Tok::Add => (BinaryOp::Add, 1),
                Tok::Sub => (BinaryOp::Sub, 1),
                Tok::Mul => (BinaryOp::Mul, 2),
                Tok::Div => (BinaryOp::Div, 2),
                _ => break,
            };
            if matches!(lhs, Node::Spans(_)) || prec < min_prec {
                break;
            }
            let op_at = self.at();
            self.next();
            let rhs = self.arith(prec + 1)?;
            lhs = match (lhs, rhs) {
                (Node::Number(a), Node::Number(b)) => Node::Number(apply_number(op, a, b)),
                (Node::Spans(_), _) | (_, Node::Spans(_)) => {
                    return Err(ParseError::at(
                        self.text,
                        op_at,
                        format!(
                            "'{}' combines metrics queries in parentheses, like ({{}} | rate()) / 2; a spanset is not a number",
                            op.symbol()
                        ),
                    ))
                }
                (a, b) => Node::Metrics(MetricsExpr::Binary(op, Box::new(into_metrics(a)), Box::new(into_metrics(b)))),
            };
        }
        self.depth -= 1;
        Ok(lhs)
    }

    fn arith_primary(&mut self) -> Result<Node, ParseError> {
        match self.peek().clone() {
            Tok::Int(i) => {
                self.next();
                Ok(Node::Number(i as f64))
            }
            Tok::Float(f) => {
                self.next();
                Ok(Node::Number(f))
            }
            Tok::Sub => {
                self.next();
                match self.arith_primary()? {
                    Node::Number(n) => Ok(Node::Number(-n)),
                    Node::Metrics(m) => Ok(Node::Metrics(MetricsExpr::Binary(
                        BinaryOp::Mul,
                        Box::new(MetricsExpr::Scalar(-1.0)),
                        Box::new(m),
                    ))),
                    Node::Spans(_) => Err(self.error_here("'-' cannot negate a spanset")),
                }
            }
            _ => self.pipeline(),
        }
    }

    // ---- spanset pipelines ----

    /// `element | stage | …`; turns into a metrics query at a metrics function.
    fn pipeline(&mut self) -> Result<Node, ParseError> {
        self.enter()?;
        let first = self.spanset_binary(0)?;
        let node = match first {
            Node::Spans(spans) => {
                let mut stages = Vec::new();
                let mut metrics = None;
                while self.peek() == &Tok::Pipe {
                    if let Tok::Ident(name) = self.peek_n(1) {
                        if is_metrics_function(name) {
                            self.next();
                            let spans = wrap(spans.clone(), std::mem::take(&mut stages));
                            metrics = Some(self.metrics_query(spans)?);
                            break;
                        }
                        if matches!(name.as_str(), "topk" | "bottomk") {
                            return Err(self.error_here(format!("'{name}' follows a metrics function like rate()")));
                        }
                    }
                    self.next();
                    stages.push(self.stage()?);
                }
                match metrics {
                    Some(m) => Node::Metrics(m),
                    None => Node::Spans(wrap(spans, stages)),
                }
            }
            other => other,
        };
        self.depth -= 1;
        Ok(node)
    }

    fn spanset_binary(&mut self, min_prec: u8) -> Result<Node, ParseError> {
        self.enter()?;
        let mut lhs = self.spanset_primary()?;
        loop {
            let Node::Spans(_) = lhs else { break };
            let (op, prec) = match self.peek() {
                Tok::OrOr => (SpansetOp::Or, 1),
                Tok::AndAnd => (SpansetOp::And, 2),
                Tok::Gt => (SpansetOp::Child, 3),
                Tok::Lt => (SpansetOp::Parent, 3),
                Tok::Desc => (SpansetOp::Descendant, 3),
                Tok::Anc => (SpansetOp::Ancestor, 3),
                Tok::Tilde => (SpansetOp::Sibling, 3),
                Tok::NotChild => (SpansetOp::NotChild, 3),
                Tok::NotParent => (SpansetOp::NotParent, 3),
                Tok::NotDesc => (SpansetOp::NotDescendant, 3),
                Tok::NotAnc => (SpansetOp::NotAncestor, 3),
                Tok::Nre => (SpansetOp::NotSibling, 3),
                Tok::UnionChild => (SpansetOp::UnionChild, 3),
                Tok::UnionParent => (SpansetOp::UnionParent, 3),
                Tok::UnionDesc => (SpansetOp::UnionDescendant, 3),
                Tok::UnionAnc => (SpansetOp::UnionAncestor, 3),
                Tok::UnionSibling => (SpansetOp::UnionSibling, 3),
                _ => break,
            };
            if prec < min_prec {
                break;
            }
            self.next();
            let rhs = match self.spanset_binary(prec + 1)? {
                Node::Spans(s) => s,
                _ => return Err(self.error_here(format!("'{}' needs a spanset on its right, like {{ }}", op.symbol()))),
            };
            if let Node::Spans(l) = lhs {
                lhs = Node::Spans(SpansetExpr::Binary(op, Box::new(l), Box::new(rhs)));
            }
        }
        self.depth -= 1;
        Ok(lhs)
    }

    fn spanset_primary(&mut self) -> Result<Node, ParseError> {
        match self.peek().clone() {
            Tok::LBrace => Ok(Node::Spans(self.filter()?)),
            Tok::LParen => {
                self.next();
                let inner = self.arith(0)?;
                self.expect(Tok::RParen, "')'")?;
                Ok(match inner {
                    Node::Metrics(m) => Node::Metrics(self.metric_stages(m)?),
                    other => other,
                })
            }
            Tok::Ident(name) if is_aggregate(&name) => {
                // `count() > 10` alone: a scalar filter over every span of the trace.
                let filter = self.scalar_filter()?;
                Ok(Node::Spans(SpansetExpr::Pipeline(
                    Box::new(SpansetExpr::Filter(Field::Static(Static::Bool(true)))),
                    vec![Stage::Scalar(filter)],
                )))
            }
            Tok::Int(i) => {
                self.next();
                Ok(Node::Number(i as f64))
            }
            Tok::Float(f) => {
                self.next();
                Ok(Node::Number(f))
            }
            _ => Err(self.unexpected("a spanset such as { span.http.status_code = 500 }")),
        }
    }

    fn filter(&mut self) -> Result<SpansetExpr, ParseError> {
        self.expect(Tok::LBrace, "'{'")?;
        if self.eat(&Tok::RBrace) {
            return Ok(SpansetExpr::Filter(Field::Static(Static::Bool(true))));
        }
        let field = self.field(0)?;
        if !self.eat(&Tok::RBrace) {
            return Err(self.unexpected("'}' or an operator"));
        }
        Ok(SpansetExpr::Filter(field))
    }

    fn stage(&mut self) -> Result<Stage, ParseError> {
        match self.peek().clone() {
            Tok::Ident(name) if name == "by" => {
                self.next();
                Ok(Stage::By(self.field_list("by")?))
            }
            Tok::Ident(name) if name == "select" => {
                self.next();
                Ok(Stage::Select(self.field_list("select")?))
            }
            Tok::Ident(name) if name == "coalesce" => {
                self.next();
                self.expect(Tok::LParen, "'(' after coalesce")?;
                self.expect(Tok::RParen, "')': coalesce takes no arguments")?;
                Ok(Stage::Coalesce)
            }
            Tok::Ident(name) if is_aggregate(&name) => Ok(Stage::Scalar(self.scalar_filter()?)),
            Tok::LBrace | Tok::LParen => match self.spanset_binary(0)? {
                Node::Spans(s) => Ok(Stage::Spans(s)),
                _ => Err(self.error_here(
                    "a pipeline stage must be a spanset, an aggregate filter, by(), select() or coalesce()",
                )),
            },
            _ => Err(self.unexpected("a pipeline stage: { … }, count() > n, by(…), select(…) or a metrics function")),
        }
    }

    fn field_list(&mut self, what: &str) -> Result<Vec<Field>, ParseError> {
        self.expect(Tok::LParen, &format!("'(' after {what}"))?;
        let mut fields = Vec::new();
        loop {
            fields.push(self.field(0)?);
            if self.eat(&Tok::Comma) {
                continue;
            }
            self.expect(Tok::RParen, "',' or ')'")?;
            return Ok(fields);
        }
    }

    fn scalar_filter(&mut self) -> Result<ScalarFilter, ParseError> {
        let lhs = self.scalar(0)?;
        let op = match self.next() {
            Tok::Eq => BinaryOp::Eq,
            Tok::Ne => BinaryOp::Ne,
            Tok::Lt => BinaryOp::Lt,
            Tok::Le => BinaryOp::Le,
            Tok::Gt => BinaryOp::Gt,
            Tok::Ge => BinaryOp::Ge,
            _ => {
                self.pos -= 1;
                return Err(self.unexpected("a comparison after the aggregate, like count() > 2"));
            }
        };
        let rhs = self.scalar(0)?;
        Ok(ScalarFilter { lhs, op, rhs })
    }

    fn scalar(&mut self, min_prec: u8) -> Result<ScalarExpr, ParseError> {
        self.enter()?;
        let mut lhs = self.scalar_primary()?;
        loop {
            let (op, prec) = match self.peek() {
                Tok::Add => (BinaryOp::Add, 1),
                Tok::Sub => (BinaryOp::Sub, 1),
                Tok::Mul => (BinaryOp::Mul, 2),
                Tok::Div => (BinaryOp::Div, 2),
                Tok::Mod => (BinaryOp::Mod, 2),
                Tok::Pow => (BinaryOp::Pow, 3),
                _ => break,
            };
            if prec < min_prec {
                break;
            }
            self.next();
            let rhs = self.scalar(prec + 1)?;
            lhs = ScalarExpr::Binary(op, Box::new(lhs), Box::new(rhs));
        }
        self.depth -= 1;
        Ok(lhs)
    }

    fn scalar_primary(&mut self) -> Result<ScalarExpr, ParseError> {
        match self.next() {
            Tok::Ident(name) if is_aggregate(&name) => {
                let aggregate = match name.as_str() {
                    "count" => Aggregate::Count,
                    "avg" => Aggregate::Avg,
                    "min" => Aggregate::Min,
                    "max" => Aggregate::Max,
                    _ => Aggregate::Sum,
                };
                self.expect(Tok::LParen, &format!("'(' after {name}"))?;
                if aggregate == Aggregate::Count {
                    self.expect(Tok::RParen, "')': count() takes no arguments")?;
                    return Ok(ScalarExpr::Aggregate(aggregate, None));
                }
                let field = self.field(0)?;
                self.expect(Tok::RParen, "')'")?;
                Ok(ScalarExpr::Aggregate(aggregate, Some(field)))
            }
            Tok::Int(i) => Ok(ScalarExpr::Literal(Static::Int(i))),
            Tok::Float(f) => Ok(ScalarExpr::Literal(Static::Float(f))),
            Tok::Duration(d) => Ok(ScalarExpr::Literal(Static::Duration(d))),
            Tok::Sub => match self.scalar_primary()? {
                ScalarExpr::Literal(Static::Int(i)) => Ok(ScalarExpr::Literal(Static::Int(i.wrapping_neg()))),
                ScalarExpr::Literal(Static::Float(f)) => Ok(ScalarExpr::Literal(Static::Float(-f))),
                ScalarExpr::Literal(Static::Duration(d)) => Ok(ScalarExpr::Literal(Static::Duration(-d))),
                other => Ok(ScalarExpr::Binary(
                    BinaryOp::Sub,
                    Box::new(ScalarExpr::Literal(Static::Int(0))),
                    Box::new(other),
                )),
            },
            Tok::LParen => {
                let inner = self.scalar(0)?;
                self.expect(Tok::RParen, "')'")?;
                Ok(inner)
            }
            _ => {
                self.pos -= 1;
                Err(self.unexpected("an aggregate (count, avg, min, max, sum) or a number"))
            }
        }
    }

    // ---- field expressions (inside braces) ----

    fn field(&mut self, min_prec: u8) -> Result<Field, ParseError> {
        self.enter()?;
        let mut lhs = self.field_unary()?;
        loop {
            let (op, prec) = match self.peek() {
                Tok::OrOr => (BinaryOp::Or, 1),
                Tok::AndAnd => (BinaryOp::And, 2),
                Tok::Eq => (BinaryOp::Eq, 3),
                Tok::Ne => (BinaryOp::Ne, 3),
                Tok::Lt => (BinaryOp::Lt, 3),
                Tok::Le => (BinaryOp::Le, 3),
                Tok::Gt => (BinaryOp::Gt, 3),
                Tok::Ge => (BinaryOp::Ge, 3),
                Tok::Re | Tok::Nre if min_prec <= 3 => {
                    let negated = self.next() == Tok::Nre;
                    let pattern_at = self.at();
                    let pattern = match self.next() {
                        Tok::Str(s) => s,
                        _ => {
                            self.pos -= 1;
                            return Err(self.unexpected("a regular expression in quotes"));
                        }
                    };
                    let regex = compile_regex(&pattern).map_err(|e| ParseError::at(self.text, pattern_at, e))?;
                    lhs = Field::Regex { field: Box::new(lhs), pattern: regex, negated };
                    continue;
                }
                Tok::Add => (BinaryOp::Add, 4),
                Tok::Sub => (BinaryOp::Sub, 4),
                Tok::Mul => (BinaryOp::Mul, 5),
                Tok::Div => (BinaryOp::Div, 5),
                Tok::Mod => (BinaryOp::Mod, 5),
                Tok::Pow => (BinaryOp::Pow, 6),
                _ => break,
            };
            if prec < min_prec {
                break;
            }
            self.next();
            // `^` is right-associative; the rest are left-associative.
            let rhs = self.field(if op == BinaryOp::Pow { prec } else { prec + 1 })?;
            if op.is_comparison() && matches!(&lhs, Field::Binary(inner, ..) if inner.is_comparison()) {
                return Err(self.error_here("comparisons do not chain; join them with && or ||"));
            }
            lhs = normalize_comparison(Field::Binary(op, Box::new(lhs), Box::new(rhs)));
        }
        self.depth -= 1;
        Ok(lhs)
    }

    fn field_unary(&mut self) -> Result<Field, ParseError> {
        match self.peek() {
            Tok::Not => {
                self.next();
                self.enter()?;
                let inner = self.field_unary()?;
                self.depth -= 1;
                Ok(Field::Not(Box::new(inner)))
            }
            Tok::Sub => {
                self.next();
                self.enter()?;
                let inner = self.field_unary()?;
                self.depth -= 1;
                Ok(match inner {
                    Field::Static(Static::Int(i)) => Field::Static(Static::Int(i.wrapping_neg())),
                    Field::Static(Static::Float(f)) => Field::Static(Static::Float(-f)),
                    Field::Static(Static::Duration(d)) => Field::Static(Static::Duration(-d)),
                    other => Field::Negate(Box::new(other)),
                })
            }
            _ => self.field_primary(),
        }
    }

    fn field_primary(&mut self) -> Result<Field, ParseError> {
        let at = self.at();
        match self.next() {
            Tok::Str(s) => Ok(Field::Static(Static::Str(s))),
            Tok::Int(i) => Ok(Field::Static(Static::Int(i))),
            Tok::Float(f) => Ok(Field::Static(Static::Float(f))),
            Tok::Duration(d) => Ok(Field::Static(Static::Duration(d))),
            Tok::Attr(scope, name) => Ok(Field::Attribute(Attribute { scope, name })),
            Tok::Intrinsic(i) => Ok(Field::Intrinsic(i)),
            Tok::LParen => {
                let inner = self.field(0)?;
                self.expect(Tok::RParen, "')'")?;
                Ok(inner)
            }
            Tok::Ident(word) => keyword(&word).map(Field::Static).ok_or_else(|| {
                ParseError::at(
                    self.text,
                    at,
                    format!(
                        "unknown name '{word}': attributes take a scope (span.{word}, resource.{word} or .{word}); \
                         intrinsics are name, status, kind, duration, statusMessage and span:/trace:/event:/link: names"
                    ),
                )
            }),
            Tok::Eof => {
                self.pos = self.tokens.len() - 1;
                Err(self.error_here("the query ends early: a value or '}' is missing"))
            }
            other => {
                self.pos -= 1;
                Err(ParseError::at(self.text, at, format!("expected a value, found {}", other.describe())))
            }
        }
    }

    // ---- metrics ----

    fn metrics_query(&mut self, spans: SpansetExpr) -> Result<MetricsExpr, ParseError> {
        let name_at = self.at();
        let Tok::Ident(name) = self.next() else {
            return Err(ParseError::at(self.text, name_at, "expected a metrics function".into()));
        };
        self.expect(Tok::LParen, &format!("'(' after {name}"))?;
        let function = match name.as_str() {
            "rate" => MetricsFunction::Rate,
            "count_over_time" => MetricsFunction::CountOverTime,
            "sum_over_time" | "min_over_time" | "max_over_time" | "avg_over_time" | "histogram_over_time" => {
                let field = self.field(0)?;
                match name.as_str() {
                    "sum_over_time" => MetricsFunction::SumOverTime(field),
                    "min_over_time" => MetricsFunction::MinOverTime(field),
                    "max_over_time" => MetricsFunction::MaxOverTime(field),
                    "avg_over_time" => MetricsFunction::AvgOverTime(field),
                    _ => MetricsFunction::HistogramOverTime(field),
                }
            }
            "quantile_over_time" => {
                let field = self.field(0)?;
                let mut quantiles = Vec::new();
                while self.eat(&Tok::Comma) {
                    let q_at = self.at();
                    let q = match self.next() {
                        Tok::Float(f) => f,
                        Tok::Int(i) => i as f64,
                        _ => {
                            self.pos -= 1;
                            return Err(self.unexpected("a quantile between 0 and 1, like .99"));
                        }
                    };
                    if !(0.0..=1.0).contains(&q) {
                        return Err(ParseError::at(self.text, q_at, format!("quantile {q} is not between 0 and 1")));
                    }
                    quantiles.push(q);
                }
                if quantiles.is_empty() {
                    return Err(
                        self.unexpected("',' and at least one quantile, like quantile_over_time(duration, .99)")
                    );
                }
                MetricsFunction::QuantileOverTime(field, quantiles)
            }
            "compare" => {
                let selection = match self.filter()? {
                    SpansetExpr::Filter(f) => f,
                    _ => return Err(self.error_here("compare's first argument is a spanset filter { … }")),
                };
                let mut top = 10;
                let mut window = None;
                if self.eat(&Tok::Comma) {
                    top = self.positive_int("the number of top values (1 to 1000)")?;
                    if !(1..=1000).contains(&top) {
                        return Err(self.error_here("compare's top value count must be between 1 and 1000"));
                    }
                    if self.eat(&Tok::Comma) {
                        let start = self.positive_int("a start time in unix nanoseconds")? as u64;
                        self.expect(Tok::Comma, "',' and an end time: compare takes both or neither")?;
                        let end = self.positive_int("an end time in unix nanoseconds")? as u64;
                        window = Some((start, end));
                    }
                }
                MetricsFunction::Compare { selection, top, window }
            }
            _ => unreachable!("is_metrics_function"),
        };
        self.expect(Tok::RParen, "')'")?;
        let mut by = Vec::new();
        if matches!(self.peek(), Tok::Ident(w) if w == "by") {
            self.next();
            by = self.field_list("by")?;
        }
        Ok(MetricsExpr::Query(Box::new(MetricsQuery { spans, function, by, stages: Vec::new() })))
    }

    fn positive_int(&mut self, what: &str) -> Result<usize, ParseError> {
        match self.next() {
            Tok::Int(i) if i >= 0 => Ok(i as usize),
            _ => {
                self.pos -= 1;
                Err(self.unexpected(what))
            }
        }
    }

    /// `| topk(n)`, `| bottomk(n)` and comparisons with a number after a metrics query.
    fn metric_stages(&mut self, mut m: MetricsExpr) -> Result<MetricsExpr, ParseError> {
        loop {
            let stage = match self.peek().clone() {
                Tok::Pipe => match self.peek_n(1).clone() {
                    Tok::Ident(name) if name == "topk" || name == "bottomk" => {
                        self.next();
                        self.next();
                        self.expect(Tok::LParen, &format!("'(' after {name}"))?;
                        let k = self.positive_int("a number of series")?;
                        self.expect(Tok::RParen, "')'")?;
                        if name == "topk" {
                            SecondStage::TopK(k)
                        } else {
                            SecondStage::BottomK(k)
                        }
                    }
                    _ => {
                        self.next();
                        return Err(self.unexpected("topk(n) or bottomk(n) after a metrics query"));
                    }
                },
                Tok::Eq | Tok::Ne | Tok::Lt | Tok::Le | Tok::Gt | Tok::Ge => {
                    let op = match self.next() {
                        Tok::Eq => BinaryOp::Eq,
                        Tok::Ne => BinaryOp::Ne,
                        Tok::Lt => BinaryOp::Lt,
                        Tok::Le => BinaryOp::Le,
                        Tok::Gt => BinaryOp::Gt,
                        _ => BinaryOp::Ge,
                    };
                    let negative = self.eat(&Tok::Sub);
                    let value = match self.next() {
                        Tok::Int(i) => i as f64,
                        Tok::Float(f) => f,
                        // Durations compare as seconds, the unit metrics answer them in.
                        Tok::Duration(d) => d as f64 / 1e9,
                        _ => {
                            self.pos -= 1;
                            return Err(self.unexpected("a number or duration to compare with"));
                        }
                    };
                    SecondStage::Filter(op, if negative { -value } else { value })
                }
                _ => return Ok(m),
            };
            m = match m {
                MetricsExpr::Query(mut q) => {
                    q.stages.push(stage);
                    MetricsExpr::Query(q)
                }
                MetricsExpr::Staged(inner, mut stages) => {
                    stages.push(stage);
                    MetricsExpr::Staged(inner, stages)
                }
                other => MetricsExpr::Staged(Box::new(other), vec![stage]),
            };
        }
    }

    /// `with(key=value, …)` at the end of a query.
    fn hints(&mut self) -> Result<Vec<(String, Static)>, ParseError> {
        let mut hints = Vec::new();
        if !matches!(self.peek(), Tok::Ident(w) if w == "with") {
            return Ok(hints);
        }
        self.next();
        self.expect(Tok::LParen, "'(' after with")?;
        loop {
            let key = match self.next() {
                Tok::Ident(k) => k,
                _ => {
                    self.pos -= 1;
                    return Err(self.unexpected("a hint name like most_recent"));
                }
            };
            self.expect(Tok::Eq, "'=' after the hint name")?;
            let value = match self.next() {
                Tok::Int(i) => Static::Int(i),
                Tok::Float(f) => Static::Float(f),
                Tok::Str(s) => Static::Str(s),
                Tok::Duration(d) => Static::Duration(d),
                Tok::Ident(w) if w == "true" || w == "false" => Static::Bool(w == "true"),
                _ => {
                    self.pos -= 1;
                    return Err(self.unexpected("a hint value"));
                }
            };
            hints.push((key, value));
            if self.eat(&Tok::Comma) {
                continue;
            }
            self.expect(Tok::RParen, "',' or ')'")?;
            return Ok(hints);
        }
    }
}

fn wrap(spans: SpansetExpr, stages: Vec<Stage>) -> SpansetExpr {
    if stages.is_empty() {
        spans
    } else {
        SpansetExpr::Pipeline(Box::new(spans), stages)
    }
}

fn into_metrics(node: Node) -> MetricsExpr {
    match node {
        Node::Metrics(m) => m,
        Node::Number(n) => MetricsExpr::Scalar(n),
        Node::Spans(_) => MetricsExpr::Scalar(f64::NAN),
    }
}

/// Numbers combined in a query keep integer semantics when both are whole (`1 / 2` is 0).
fn apply_number(op: BinaryOp, a: f64, b: f64) -> f64 {
    let whole = a.fract() == 0.0 && b.fract() == 0.0 && a.abs() < 9e15 && b.abs() < 9e15;
    match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div if whole && b != 0.0 => (a as i64 / b as i64) as f64,
        _ => a / b,
    }
}

fn is_aggregate(name: &str) -> bool {
    matches!(name, "count" | "avg" | "min" | "max" | "sum")
}

fn is_metrics_function(name: &str) -> bool {
    matches!(
        name,
        "rate"
            | "count_over_time"
            | "sum_over_time"
            | "min_over_time"
            | "max_over_time"
            | "avg_over_time"
            | "quantile_over_time"
            | "histogram_over_time"
            | "compare"
    )
}

fn keyword(word: &str) -> Option<Static> {
    Some(match word {
        "true" => Static::Bool(true),
        "false" => Static::Bool(false),
        "nil" => Static::Nil,
        "error" => Static::Status(StatusCode::Error),
        "ok" => Static::Status(StatusCode::Ok),
        "unset" => Static::Status(StatusCode::Unset),
        "server" => Static::Kind(SpanKind::Server),
        "client" => Static::Kind(SpanKind::Client),
        "producer" => Static::Kind(SpanKind::Producer),
        "consumer" => Static::Kind(SpanKind::Consumer),
        "internal" => Static::Kind(SpanKind::Internal),
        "unspecified" => Static::Kind(SpanKind::Unspecified),
        "minInt" => Static::Int(i64::MIN),
        "maxInt" => Static::Int(i64::MAX),
        _ => return None,
    })
}

/// Compiles a TraceQL regular expression: fully anchored, size-limited.
pub fn compile_regex(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(_) => format!("regular expression \"{pattern}\" is too large"),
            other => {
                format!("invalid regular expression \"{pattern}\": {}", other.to_string().lines().last().unwrap_or(""))
            }
        })
}

/// Id intrinsics compare with hex strings of any width: the literal is padded to the id's
/// width, so `{ span:id = "1" }` finds span 0000000000000001.
fn normalize_comparison(field: Field) -> Field {
    let Field::Binary(op, lhs, rhs) = field else { return field };
    let width = |f: &Field| match f {
        Field::Intrinsic(Intrinsic::TraceId | Intrinsic::LinkTraceId) => Some(32),
        Field::Intrinsic(Intrinsic::SpanId | Intrinsic::ParentId | Intrinsic::LinkSpanId) => Some(16),
        _ => None,
    };
    let pad = |w: usize, f: Box<Field>| match *f {
        Field::Static(Static::Str(s)) if s.len() <= w && s.chars().all(|c| c.is_ascii_hexdigit()) => {
            Box::new(Field::Static(Static::Str(format!("{:0>w$}", s.to_ascii_lowercase()))))
        }
        other => Box::new(other),
    };
    match (width(&lhs), width(&rhs)) {
        (Some(w), _) => Field::Binary(op, lhs, pad(w, rhs)),
        (_, Some(w)) => Field::Binary(op, pad(w, lhs), rhs),
        _ => Field::Binary(op, lhs, rhs),
    }
}
