//! TraceQL, as Grafana Tempo's documentation defines it: a parser with errors that point
//! at what was typed wrong ([`parse`]), an evaluator of spanset pipelines on one trace
//! ([`eval`]), TraceQL metrics ([`metrics`]), and the engine that runs both over any
//! [`spindle_store::TraceStore`] ([`engine`]). What is left out is listed in docs/TRACEQL.md.

pub mod ast;
pub mod engine;
pub mod eval;
mod lexer;
pub mod metrics;
mod parser;

use std::fmt;

pub use lexer::MAX_QUERY_BYTES;
pub use parser::{compile_regex, parse, Parsed};

/// Why a query did not parse: where (line and column, from 1, in characters) and what was
/// expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub column: usize,
    /// Byte offset in the query.
    pub offset: usize,
    pub message: String,
}

impl ParseError {
    pub(crate) fn at(text: &str, offset: usize, message: String) -> Self {
        let offset = offset.min(text.len());
        let mut cut = offset;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let before = &text[..cut];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        ParseError { line, column, offset, message }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "parse error at line {}, column {}: {}", self.line, self.column, self.message)
    }
}

impl std::error::Error for ParseError {}
