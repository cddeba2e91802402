//! Turns query text into tokens, each with its byte offset for error messages.

use crate::ast::{Intrinsic, Scope};
use crate::ParseError;

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    LBrace,
    RBrace,
    LParen,
    RParen,
    Comma,
    Pipe,
    AndAnd,
    OrOr,
    Not,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `=~`
    Re,
    /// `!~`: negated regex in a field, not-sibling between spansets.
    Nre,
    Desc,
    Anc,
    Tilde,
    NotChild,
    NotParent,
    NotDesc,
    NotAnc,
    UnionChild,
    UnionParent,
    UnionDesc,
    UnionAnc,
    UnionSibling,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Str(String),
    Int(i64),
    Float(f64),
    Duration(i64),
    Ident(String),
    Attr(Scope, String),
    Intrinsic(Intrinsic),
    Eof,
}

impl Tok {
    /// How the token reads in an error message.
    pub fn describe(&self) -> String {
        match self {
            Tok::Str(s) => format!("string \"{s}\""),
            Tok::Int(i) => format!("number {i}"),
            Tok::Float(f) => format!("number {f}"),
            Tok::Duration(d) => format!("duration {}", crate::ast::format_duration(*d)),
            Tok::Ident(i) => format!("'{i}'"),
            Tok::Attr(scope, name) => {
                format!("attribute '{}'", crate::ast::Attribute { scope: *scope, name: name.clone() })
            }
            Tok::Intrinsic(i) => format!("'{}'", i.name()),
            Tok::Eof => "the end of the query".into(),
            other => format!("'{}'", other.symbol()),
        }
    }

    fn symbol(&self) -> &'static str {
        match self {
            Tok::LBrace => "{",
            Tok::RBrace => "}",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::Comma => ",",
            Tok::Pipe => "|",
            Tok::AndAnd => "&&",
            Tok::OrOr => "||",
            Tok::Not => "!",
            Tok::Eq => "=",
            Tok::Ne => "!=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::Re => "=~",
            Tok::Nre => "!~",
            Tok::Desc => ">>",
            Tok::Anc => "<<",
            Tok::Tilde => "~",
            Tok::NotChild => "!>",
            Tok::NotParent => "!<",
            Tok::NotDesc => "!>>",
            Tok::NotAnc => "!<<",
            Tok::UnionChild => "&>",
            Tok::UnionParent => "&<",
            Tok::UnionDesc => "&>>",
            Tok::UnionAnc => "&<<",
            Tok::UnionSibling => "&~",
            Tok::Add => "+",
            Tok::Sub => "-",
            Tok::Mul => "*",
            Tok::Div => "/",
            Tok::Mod => "%",
            Tok::Pow => "^",
            _ => "?",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Token {
    pub tok: Tok,
    /// Byte offset in the query.
    pub at: usize,
}

/// Characters that end an attribute name (besides whitespace), as in Tempo's grammar.
fn ends_attribute(c: char) -> bool {
    c.is_whitespace() || matches!(c, '{' | '}' | '(' | ')' | '=' | '~' | '!' | '<' | '>' | '&' | '|' | '^' | ',' | '"')
}

fn intrinsic(scope: &str, name: &str) -> Option<Intrinsic> {
    use Intrinsic::*;
    Some(match (scope, name) {
        ("span", "name") => Name,
        ("span", "status") => Status,
        ("span", "statusMessage") => StatusMessage,
        ("span", "kind") => Kind,
        ("span", "duration") => Duration,
        ("span", "id") => SpanId,
        ("span", "parentID") => ParentId,
        ("span", "childCount") => ChildCount,
        ("trace", "duration") => TraceDuration,
        ("trace", "rootName") => RootName,
        ("trace", "rootService") => RootService,
        ("trace", "id") => TraceId,
        ("event", "name") => EventName,
        ("event", "timeSinceStart") => EventTimeSinceStart,
        ("link", "traceID") => LinkTraceId,
        ("link", "spanID") => LinkSpanId,
        ("instrumentation", "name") => InstrumentationName,
        ("instrumentation", "version") => InstrumentationVersion,
        _ => return None,
    })
}

fn scope_of(word: &str) -> Option<Scope> {
    Some(match word {
        "span" => Scope::Span,
        "resource" => Scope::Resource,
        "event" => Scope::Event,
        "link" => Scope::Link,
        "instrumentation" => Scope::Instrumentation,
        _ => return None,
    })
}

/// The longest accepted query, and the most tokens: bounds the parser's time and memory
/// whatever is sent.
pub const MAX_QUERY_BYTES: usize = 64 * 1024;

pub fn lex(text: &str) -> Result<Vec<Token>, ParseError> {
    if text.len() > MAX_QUERY_BYTES {
        return Err(ParseError::at(text, 0, format!("the query is longer than {MAX_QUERY_BYTES} bytes")));
    }
    let mut lexer = Lexer { text, at: 0, tokens: Vec::new() };
    lexer.run()?;
    Ok(lexer.tokens)
}

struct Lexer<'a> {
    text: &'a str,
    at: usize,
    tokens: Vec<Token>,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.text[self.at..].chars().next()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.text[self.at..].chars().nth(n)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.at += c.len_utf8();
        Some(c)
    }

    fn error(&self, at: usize, message: impl Into<String>) -> ParseError {
        ParseError::at(self.text, at, message.into())
    }

    fn push(&mut self, tok: Tok, at: usize) {
        self.tokens.push(Token { tok, at });
    }

    fn run(&mut self) -> Result<(), ParseError> {
        while let Some(c) = self.peek() {
            let start = self.at;
            if c.is_whitespace() {
                self.bump();
                continue;
            }
            let two = |l: &Self, a: char| l.peek_at(1) == Some(a);
            let (tok, len) = match c {
                '{' => (Tok::LBrace, 1),
                '}' => (Tok::RBrace, 1),
                '(' => (Tok::LParen, 1),
                ')' => (Tok::RParen, 1),
                ',' => (Tok::Comma, 1),
                '+' => (Tok::Add, 1),
                '*' => (Tok::Mul, 1),
                '/' => (Tok::Div, 1),
                '%' => (Tok::Mod, 1),
                '^' => (Tok::Pow, 1),
                '-' => (Tok::Sub, 1),
                '~' => (Tok::Tilde, 1),
                '|' if two(self, '|') => (Tok::OrOr, 2),
                '|' => (Tok::Pipe, 1),
                '&' if two(self, '&') => (Tok::AndAnd, 2),
                '&' if two(self, '>') && self.peek_at(2) == Some('>') => (Tok::UnionDesc, 3),
                '&' if two(self, '>') => (Tok::UnionChild, 2),
                '&' if two(self, '<') && self.peek_at(2) == Some('<') => (Tok::UnionAnc, 3),
                '&' if two(self, '<') => (Tok::UnionParent, 2),
                '&' if two(self, '~') => (Tok::UnionSibling, 2),
                '=' if two(self, '~') => (Tok::Re, 2),
                '=' => (Tok::Eq, 1),
                '!' if two(self, '=') => (Tok::Ne, 2),
                '!' if two(self, '~') => (Tok::Nre, 2),
                '!' if two(self, '>') && self.peek_at(2) == Some('>') => (Tok::NotDesc, 3),
                '!' if two(self, '>') => (Tok::NotChild, 2),
                '!' if two(self, '<') && self.peek_at(2) == Some('<') => (Tok::NotAnc, 3),
                '!' if two(self, '<') => (Tok::NotParent, 2),
                '!' => (Tok::Not, 1),
                '>' if two(self, '=') => (Tok::Ge, 2),
                '>' if two(self, '>') => (Tok::Desc, 2),
                '>' => (Tok::Gt, 1),
                '<' if two(self, '=') => (Tok::Le, 2),
                '<' if two(self, '<') => (Tok::Anc, 2),
                '<' => (Tok::Lt, 1),
                '"' | '`' => {
                    let s = self.string()?;
                    self.push(Tok::Str(s), start);
                    continue;
                }
                '.' if self.peek_at(1).is_some_and(|d| d.is_ascii_digit()) && self.number_follows_dot() => {
                    let tok = self.number()?;
                    self.push(tok, start);
                    continue;
                }
                '.' => {
                    self.bump();
                    let name = self.attribute_name(start)?;
                    self.push(Tok::Attr(Scope::Unscoped, name), start);
                    continue;
                }
                c if c.is_ascii_digit() => {
                    let tok = self.number()?;
                    self.push(tok, start);
                    continue;
                }
                c if c.is_alphabetic() || c == '_' => {
                    let tok = self.word()?;
                    self.push(tok, start);
                    continue;
                }
                other => return Err(self.error(start, format!("unexpected character '{other}'"))),
            };
            for _ in 0..len {
                self.bump();
            }
            self.push(tok, start);
        }
        self.push(Tok::Eof, self.text.len());
        Ok(())
    }

    /// Whether `.` starts a number like `.99` rather than an attribute like `.5xx`.
    fn number_follows_dot(&self) -> bool {
        let rest = &self.text[self.at + 1..];
        let end = rest.find(ends_attribute).unwrap_or(rest.len());
        rest[..end].chars().all(|c| c.is_ascii_digit())
    }

    fn string(&mut self) -> Result<String, ParseError> {
        let start = self.at;
        let quote = self.bump().unwrap_or('"');
        let mut out = String::new();
        loop {
            match self.bump() {
                None => return Err(self.error(start, "unterminated string: a closing quote is missing")),
                Some(c) if c == quote => return Ok(out),
                Some('\\') if quote == '"' => match self.bump() {
                    Some('"') => out.push('"'),
                    Some('\\') => out.push('\\'),
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some(other) => {
                        return Err(self.error(
                            self.at - other.len_utf8() - 1,
                            format!("unknown escape '\\{other}' in a string (\\\" and \\\\ are supported)"),
                        ))
                    }
                    None => return Err(self.error(start, "unterminated string: a closing quote is missing")),
                },
                Some(c) => out.push(c),
            }
        }
    }

    /// An attribute name after its scope's `.`: plain characters and quoted segments.
    fn attribute_name(&mut self, start: usize) -> Result<String, ParseError> {
        let mut name = String::new();
        loop {
            match self.peek() {
                Some('"') => {
                    name.push_str(&self.string()?);
                    if self.peek() == Some('.') {
                        self.bump();
                        name.push('.');
                        continue;
                    }
                    break;
                }
                Some(c) if !ends_attribute(c) => {
                    name.push(c);
                    self.bump();
                }
                _ => break,
            }
        }
        if name.is_empty() {
            return Err(self.error(start, "expected an attribute name after '.'"));
        }
        Ok(name)
    }

    fn number(&mut self) -> Result<Tok, ParseError> {
        let start = self.at;
        let mut seen_dot = false;
        while let Some(c) = self.peek() {
            if c.is_ascii_digit() || (c == '.' && !seen_dot && self.peek_at(1).is_some_and(|d| d.is_ascii_digit())) {
                seen_dot |= c == '.';
                self.bump();
            } else if (c == 'e' || c == 'E')
                && (self.peek_at(1).is_some_and(|d| d.is_ascii_digit())
                    || (matches!(self.peek_at(1), Some('+' | '-'))
                        && self.peek_at(2).is_some_and(|d| d.is_ascii_digit())))
            {
                seen_dot = true;
                self.bump();
                self.bump();
            } else {
                break;
            }
        }
        let digits = &self.text[start..self.at];
        if self.peek().is_some_and(|c| c.is_alphabetic() || c == 'µ') {
            return self.duration(start);
        }
        if seen_dot {
            digits.parse::<f64>().map(Tok::Float).map_err(|_| self.error(start, format!("'{digits}' is not a number")))
        } else {
            digits
                .parse::<i64>()
                .map(Tok::Int)
                .map_err(|_| self.error(start, format!("'{digits}' does not fit a 64-bit integer")))
        }
    }

    /// A Go-style duration from `start`: `100ms`, `1.5s`, `1h30m`.
    fn duration(&mut self, start: usize) -> Result<Tok, ParseError> {
        self.at = start;
        let mut total: f64 = 0.0;
        loop {
            let from = self.at;
            while self.peek().is_some_and(|c| c.is_ascii_digit() || c == '.') {
                self.bump();
            }
            let value: f64 = self.text[from..self.at]
                .parse()
                .map_err(|_| self.error(from, format!("'{}' is not a number", &self.text[from..self.at])))?;
            let unit_at = self.at;
            while self.peek().is_some_and(|c| c.is_alphabetic() || c == 'µ') {
                self.bump();
            }
            let scale = match &self.text[unit_at..self.at] {
                "ns" => 1.0,
                "us" | "µs" => 1e3,
                "ms" => 1e6,
                "s" => 1e9,
                "m" => 60e9,
                "h" => 3600e9,
                "d" => 86400e9,
                unit => {
                    return Err(
                        self.error(unit_at, format!("unknown duration unit '{unit}' (ns, us, ms, s, m, h or d)"))
                    )
                }
            };
            total += value * scale;
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                break;
            }
        }
        if !total.is_finite() || total > i64::MAX as f64 {
            return Err(self.error(start, "the duration is too long"));
        }
        Ok(Tok::Duration(total.round() as i64))
    }

    fn word(&mut self) -> Result<Tok, ParseError> {
        let start = self.at;
        while self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_') {
            self.bump();
        }
        let word = &self.text[start..self.at];
        match self.peek() {
            Some(':') if matches!(word, "span" | "trace" | "event" | "link" | "instrumentation") => {
                self.bump();
                let name_at = self.at;
                while self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    self.bump();
                }
                let name = &self.text[name_at..self.at];
                intrinsic(word, name)
                    .map(Tok::Intrinsic)
                    .ok_or_else(|| self.error(start, format!("unknown intrinsic '{word}:{name}'")))
            }
            Some('.') if scope_of(word).is_some() => {
                self.bump();
                let name = self.attribute_name(start)?;
                Ok(Tok::Attr(scope_of(word).unwrap_or(Scope::Unscoped), name))
            }
            _ => Ok(match word {
                "name" => Tok::Intrinsic(Intrinsic::Name),
                "status" => Tok::Intrinsic(Intrinsic::Status),
                "statusMessage" => Tok::Intrinsic(Intrinsic::StatusMessage),
                "kind" => Tok::Intrinsic(Intrinsic::Kind),
                "duration" => Tok::Intrinsic(Intrinsic::Duration),
                "childCount" => Tok::Intrinsic(Intrinsic::ChildCount),
                "rootName" => Tok::Intrinsic(Intrinsic::RootName),
                "rootServiceName" => Tok::Intrinsic(Intrinsic::RootService),
                "traceDuration" => Tok::Intrinsic(Intrinsic::TraceDuration),
                _ => Tok::Ident(word.to_string()),
            }),
        }
    }
}
