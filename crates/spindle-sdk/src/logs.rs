//! Log lines of the SDK's own subscriber (module `subscriber`): one line per event on
//! standard output, as text or JSON, in the layout of `tracing-subscriber`'s `fmt` layer
//! (timestamp, level, the scope of spans with their fields, target, message and fields).
//!
//! The scope's fields are read from the span records the subscriber keeps anyway, at the
//! moment a line is written: a span costs nothing for logging until an event inside it is
//! logged. Colours are never written.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::Value;
use tracing::field::{Field, Visit};
use tracing::{Event, Metadata};
use tracing_subscriber::filter::{LevelFilter, Targets};

use crate::config::LogFormat;
use crate::record::{AttrView, Scalar, SpanRecord};

/// The most verbose level `filter` enables anywhere.
pub(crate) fn max_level(filter: &Targets) -> LevelFilter {
    tracing_subscriber::layer::Filter::<tracing_subscriber::Registry>::max_level_hint(filter)
        .unwrap_or(LevelFilter::TRACE)
}

/// Calls its argument with the record of each span around an event, outermost first.
pub(crate) type Scope<'a> = dyn FnMut(&mut dyn FnMut(&SpanRecord)) + 'a;

/// Which events are logged, and how.
pub(crate) struct Logs {
    filter: Targets,
    max_level: LevelFilter,
    format: LogFormat,
}

thread_local! {
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

impl Logs {
    pub(crate) fn new(filter: Targets, format: LogFormat) -> Self {
        Self { max_level: max_level(&filter), filter, format }
    }

    pub(crate) fn enabled(&self, meta: &Metadata<'_>) -> bool {
        self.filter.would_enable(meta.target(), meta.level())
    }

    pub(crate) fn filter(&self) -> &Targets {
        &self.filter
    }

    pub(crate) fn max_level(&self) -> LevelFilter {
        self.max_level
    }

    /// Writes `event` as one line; `scope` gives the records of the spans around it,
    /// outermost first.
    pub(crate) fn write(&self, event: &Event<'_>, scope: &mut Scope<'_>) {
        let _ = LINE.try_with(|line| {
            let mut line = line.borrow_mut();
            line.clear();
            match self.format {
                LogFormat::Text => text_line(&mut line, event, scope),
                LogFormat::Json => json_line(&mut line, event, scope),
            }
            line.push('\n');
            // A closed or full standard output loses the line, never the service.
            let _ = std::io::stdout().lock().write_all(line.as_bytes());
        });
    }
}

fn text_line(line: &mut String, event: &Event<'_>, scope: &mut Scope<'_>) {
    let meta = event.metadata();
    timestamp(line);
    let _ = write!(line, " {:>5} ", meta.level().as_str());
    let mut any = false;
    scope(&mut |record| {
        any = true;
        line.push_str(record.name());
        let mut attributes = record.attributes().peekable();
        if attributes.peek().is_some() {
            line.push('{');
            for (i, (key, value)) in attributes.enumerate() {
                if i > 0 {
                    line.push(' ');
                }
                line.push_str(key);
                line.push('=');
                text_value(line, value);
            }
            line.push('}');
        }
        line.push(':');
    });
    if any {
        line.push(' ');
    }
    line.push_str(meta.target());
    line.push_str(": ");
    let mut fields = TextFields { message: None, rest: String::new() };
    event.record(&mut fields);
    let TextFields { message, rest } = fields;
    if let Some(message) = message {
        line.push_str(&message);
        if !rest.is_empty() {
            line.push(' ');
        }
    }
    line.push_str(&rest);
}

fn text_value(line: &mut String, value: AttrView<'_>) {
    let _ = match value {
        AttrView::Str(s) => write!(line, "{s:?}"),
        AttrView::Scalar(scalar) => write!(line, "{}", Value::from(scalar)),
        AttrView::Other(v) => write!(line, "{v}"),
    };
}

/// An event's fields as text: the message first, then `name=value` pairs.
struct TextFields {
    message: Option<String>,
    rest: String,
}

impl TextFields {
    fn pair(&mut self, field: &Field, value: std::fmt::Arguments<'_>) {
        if !self.rest.is_empty() {
            self.rest.push(' ');
        }
        let _ = write!(self.rest, "{}={}", field.name(), value);
    }
}

impl Visit for TextFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_owned());
        } else {
            self.pair(field, format_args!("{value:?}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = Some(format!("{value:?}"));
        } else {
            self.pair(field, format_args!("{value:?}"));
        }
    }
}

fn json_line(line: &mut String, event: &Event<'_>, scope: &mut Scope<'_>) {
    let meta = event.metadata();
    line.push_str("{\"timestamp\":\"");
    timestamp(line);
    line.push_str("\",\"level\":\"");
    line.push_str(meta.level().as_str());
    line.push_str("\",\"fields\":{");
    let mut fields = JsonFields { line, first: true };
    event.record(&mut fields);
    let line = fields.line;
    line.push_str("},\"target\":");
    json_string(line, meta.target());
    let mut spans = String::new();
    let mut innermost = String::new();
    scope(&mut |record| {
        innermost.clear();
        innermost.push('{');
        for (key, value) in record.attributes() {
            json_string(&mut innermost, key);
            innermost.push(':');
            json_value(&mut innermost, value);
            innermost.push(',');
        }
        innermost.push_str("\"name\":");
        json_string(&mut innermost, record.name());
        innermost.push('}');
        if !spans.is_empty() {
            spans.push(',');
        }
        spans.push_str(&innermost);
    });
    if !innermost.is_empty() {
        line.push_str(",\"span\":");
        line.push_str(&innermost);
        line.push_str(",\"spans\":[");
        line.push_str(&spans);
        line.push(']');
    }
    line.push('}');
}

fn json_value(line: &mut String, value: AttrView<'_>) {
    match value {
        AttrView::Str(s) => json_string(line, s),
        AttrView::Scalar(Scalar::Bool(b)) => {
            let _ = write!(line, "{b}");
        }
        AttrView::Scalar(Scalar::I64(i)) => {
            let _ = write!(line, "{i}");
        }
        AttrView::Scalar(Scalar::F64(f)) if f.is_finite() => {
            let _ = write!(line, "{f}");
        }
        AttrView::Scalar(scalar) => json_string(line, &Value::from(scalar).as_str()),
        AttrView::Other(v) => json_string(line, &v.as_str()),
    }
}

/// An event's fields as the members of a JSON object.
struct JsonFields<'a> {
    line: &'a mut String,
    first: bool,
}

impl JsonFields<'_> {
    fn key(&mut self, field: &Field) {
        if !self.first {
            self.line.push(',');
        }
        self.first = false;
        json_string(self.line, field.name());
        self.line.push(':');
    }
}

impl Visit for JsonFields<'_> {
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        let _ = write!(self.line, "{value}");
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(self.line, "{value}");
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.line, "{value}");
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.key(field);
            let _ = write!(self.line, "{value}");
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        json_string(self.line, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.key(field);
        json_string(self.line, &format!("{value:?}"));
    }
}

fn json_string(line: &mut String, text: &str) {
    line.push('"');
    for c in text.chars() {
        match c {
            '"' => line.push_str("\\\""),
            '\\' => line.push_str("\\\\"),
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            '\t' => line.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(line, "\\u{:04x}", u32::from(c));
            }
            c => line.push(c),
        }
    }
    line.push('"');
}

/// Now as RFC 3339 in UTC with microseconds (`2026-12-06T02:58:54.123456Z`).
fn timestamp(line: &mut String) {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    let _ = write!(
        line,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_micros()
    );
}

/// The proleptic Gregorian date of a day number counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_numbers_become_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_793), (2026, 12, 6));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut out = String::new();
        json_string(&mut out, "a\"b\\c\nd\u{1}");
        assert_eq!(out, r#""a\"b\\c\nd\u0001""#);
    }
}
