//! Query-string parameters as the Jaeger APIs take them: repeated keys, Go durations,
//! microsecond and millisecond epochs, RFC 3339 times.

use std::time::{SystemTime, UNIX_EPOCH};

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
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes().all(|c| c.is_ascii_digit()).then(|| part.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos: i64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = &s[start..i];
        if frac.is_empty() {
            return None;
        }
        let digits = &frac[..frac.len().min(9)];
        nanos = digits.parse::<i64>().ok()? * 10i64.pow(9 - digits.len() as u32);
    }
    let offset_secs = match s.get(i..)? {
        "Z" | "z" => 0,
        tz if tz.len() == 6 && (tz.starts_with('+') || tz.starts_with('-')) && &tz[3..4] == ":" => {
            let h = num(i + 1..i + 3)?;
            let m = num(i + 4..i + 6)?;
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            sign * (h * 3600 + m * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    let total = i128::from(secs) * 1_000_000_000 + i128::from(nanos);
    u64::try_from(total).ok()
}

/// Formats unix ns as RFC 3339 UTC with milliseconds, as Go's jsonpb writes timestamps.
pub fn format_rfc3339_millis(unix_nano: u64) -> String {
    let secs = (unix_nano / 1_000_000_000) as i64;
    let millis = (unix_nano / 1_000_000) % 1000;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days, the inverse of `days_from_civil`.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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
    }

    #[test]
    fn rfc3339_formatting_round_trips() {
        for t in [0u64, 1_631_271_823_806_000_000, 951_782_400_000_000_000, 4_102_444_799_999_000_000] {
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
