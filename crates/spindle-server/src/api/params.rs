//! Query-string parameters as the Jaeger APIs take them: repeated keys, Go durations,
//! microsecond and millisecond epochs, RFC 3339 times.

use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat, Utc};

/// A parameter that could not be used, named with the form it should have had.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamError {
    pub message: String,
}

impl ParamError {
    pub fn new(name: &str, value: &str, expected: &str) -> Self {
        ParamError { message: format!("invalid parameter {name}={value:?}: expected {expected}") }
    }

    pub fn missing(name: &str, expected: &str) -> Self {
        ParamError { message: format!("missing parameter {name}: expected {expected}") }
    }
}

/// Decoded `key=value` pairs in order; keys may repeat.
#[derive(Debug, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn parse(query: Option<&str>) -> Self {
        Params(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The last non-empty value of the first of `names` that has one.
    pub fn get(&self, names: &[&str]) -> Option<(&str, &str)> {
        names.iter().find_map(|name| {
            self.0.iter().rev().find(|(k, v)| k == name && !v.is_empty()).map(|(k, v)| (k.as_str(), v.as_str()))
        })
    }

    pub fn value(&self, names: &[&str]) -> Option<&str> {
        self.get(names).map(|(_, v)| v)
    }

    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(move |(k, v)| k == name && !v.is_empty()).map(|(_, v)| v.as_str())
    }

    pub fn u64(&self, names: &[&str], expected: &str) -> Result<Option<u64>, ParamError> {
        match self.get(names) {
            None => Ok(None),
            Some((k, v)) => v.parse().map(Some).map_err(|_| ParamError::new(k, v, expected)),
        }
    }

    pub fn duration_nanos(&self, names: &[&str]) -> Result<Option<u64>, ParamError> {
        match self.get(names) {
            None => Ok(None),
            Some((k, v)) => parse_go_duration(v)
                .map(Some)
                .ok_or_else(|| ParamError::new(k, v, "a duration such as 1.5ms, 300us, 2s or 1h30m")),
        }
    }
}

pub fn now_unix_nano() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// Parses Go's `time.ParseDuration` syntax (unsigned): `300ms`, `1.5h`, `2h45m`, `0`.
pub fn parse_go_duration(s: &str) -> Option<u64> {
    let s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Some(0);
    }
    if s.is_empty() {
        return None;
    }
    let mut rest = s;
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_end);
        if num.is_empty() || num == "." {
            return None;
        }
        let value: f64 = num.parse().ok()?;
        let unit_end = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += value * scale;
        rest = next;
    }
    (total.is_finite() && total < u64::MAX as f64).then_some(total.round() as u64)
}

/// Parses an RFC 3339 timestamp with optional fraction (up to nanoseconds) into unix ns.
pub fn parse_rfc3339_nanos(s: &str) -> Option<u64> {
    let time = DateTime::parse_from_rfc3339(s).ok()?;
    // In i128, so times after 2262 (past i64 nanoseconds) still parse; a leap second's
    // subsecond nanos exceed 1e9 and land on the next second.
    let total = i128::from(time.timestamp()) * 1_000_000_000 + i128::from(time.timestamp_subsec_nanos());
    u64::try_from(total).ok()
}

/// Formats unix ns as RFC 3339 UTC with milliseconds, as Go's jsonpb writes timestamps.
pub fn format_rfc3339_millis(unix_nano: u64) -> String {
    let (secs, nanos) = ((unix_nano / 1_000_000_000) as i64, (unix_nano % 1_000_000_000) as u32);
    // Every u64 of nanoseconds (up to the year 2554) is within chrono's range.
    let time = DateTime::<Utc>::from_timestamp(secs, nanos).unwrap_or_default();
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1.5ms"), Some(1_500_000));
        assert_eq!(parse_go_duration("300us"), Some(300_000));
        assert_eq!(parse_go_duration("300µs"), Some(300_000));
        assert_eq!(parse_go_duration("1h30m"), Some(5_400_000_000_000));
        assert_eq!(parse_go_duration("0"), Some(0));
        assert_eq!(parse_go_duration("10"), None, "a unit is required");
        assert_eq!(parse_go_duration("1x"), None);
        assert_eq!(parse_go_duration("ms"), None);
        assert_eq!(parse_go_duration(""), None);
    }

    #[test]
    fn rfc3339_times() {
        assert_eq!(parse_rfc3339_nanos("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_nanos("2021-09-10T11:03:43.806Z"), Some(1_631_271_823_806_000_000));
        assert_eq!(parse_rfc3339_nanos("2021-09-10T13:03:43.806000001+02:00"), Some(1_631_271_823_806_000_001));
        assert_eq!(parse_rfc3339_nanos("2021-09-10 11:03:43Z"), Some(1_631_271_823_000_000_000));
        assert_eq!(parse_rfc3339_nanos("2021-13-10T11:03:43Z"), None);
        assert_eq!(parse_rfc3339_nanos("yesterday"), None);
        assert_eq!(parse_rfc3339_nanos("2021-09-10T11:03:43"), None, "offset required");
        assert_eq!(parse_rfc3339_nanos("1969-12-31T23:59:59Z"), None, "before the epoch");
        assert_eq!(parse_rfc3339_nanos("2021-02-29T00:00:00Z"), None, "no such day");
        assert_eq!(parse_rfc3339_nanos("2500-01-01T00:00:00Z"), Some(16_725_225_600_000_000_000));
    }

    #[test]
    fn rfc3339_formatting_round_trips() {
        for t in [
            0u64,
            1_631_271_823_806_000_000,
            951_782_400_000_000_000,
            4_102_444_799_999_000_000,
            16_725_225_600_000_000_000,
        ] {
            assert_eq!(parse_rfc3339_nanos(&format_rfc3339_millis(t)), Some(t));
        }
        assert_eq!(format_rfc3339_millis(1_631_271_823_806_000_000), "2021-09-10T11:03:43.806Z");
    }

    #[test]
    fn repeated_and_encoded_params() {
        let p = Params::parse(Some("tag=a%3A1&tag=b:2&service=x+y&limit="));
        assert_eq!(p.all("tag").collect::<Vec<_>>(), vec!["a:1", "b:2"]);
        assert_eq!(p.value(&["service"]), Some("x y"));
        assert_eq!(p.value(&["limit"]), None, "empty means absent");
    }
}
