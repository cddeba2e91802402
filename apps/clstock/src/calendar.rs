//! Calendar dates for daily bars: days since 1970-01-01, ISO `YYYY-MM-DD` text, weekdays.
//!
//! Pure arithmetic (Howard Hinnant's civil-date algorithms), so the crate needs no date
//! library; trading days are Monday to Friday (exchange holidays are not modelled).

use std::fmt;
use std::str::FromStr;

/// A calendar date, as days since 1970-01-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date(i64);

/// A date string that is not `YYYY-MM-DD` or names no real day.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid date {0:?}, expected YYYY-MM-DD")]
pub struct DateError(pub String);

impl Date {
    pub const fn from_days_since_epoch(days: i64) -> Date {
        Date(days)
    }

    /// The date `year-month-day`, or `None` if no such day exists.
    pub fn from_ymd(year: i64, month: u32, day: u32) -> Option<Date> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        let y = if month <= 2 { year - 1 } else { year };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        Some(Date(era * 146_097 + doe - 719_468))
    }

    /// `(year, month, day)`.
    pub fn ymd(self) -> (i64, u32, u32) {
        let z = self.0 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        (year, month, day)
    }

    /// Days since 1970-01-01.
    pub fn days_since_epoch(self) -> i64 {
        self.0
    }

    /// Whether the day is Saturday or Sunday.
    pub fn is_weekend(self) -> bool {
        // 1970-01-01 was a Thursday: 0 = Thursday, 2 = Saturday, 3 = Sunday.
        matches!(self.0.rem_euclid(7), 2 | 3)
    }

    /// The `n` weekdays ending at `self` (or at the last weekday before it), oldest first.
    pub fn trading_days_until(self, n: usize) -> Vec<Date> {
        let mut days = Vec::with_capacity(n);
        let mut day = self;
        while days.len() < n {
            if !day.is_weekend() {
                days.push(day);
            }
            day = Date(day.0 - 1);
        }
        days.reverse();
        days
    }
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

impl FromStr for Date {
    type Err = DateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || DateError(s.to_owned());
        let mut parts = s.splitn(3, '-');
        let mut next = || parts.next().filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        let year = next().and_then(|p| p.parse().ok()).ok_or_else(invalid)?;
        let month = next().and_then(|p| p.parse().ok()).ok_or_else(invalid)?;
        let day = next().and_then(|p| p.parse().ok()).ok_or_else(invalid)?;
        Date::from_ymd(year, month, day).ok_or_else(invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates_round_trip() {
        for (text, days) in [("1970-01-01", 0), ("2000-02-29", 11_016), ("2024-12-31", 20_088), ("1969-12-31", -1)] {
            let date: Date = text.parse().expect(text);
            assert_eq!(date.days_since_epoch(), days, "{text}");
            assert_eq!(date.to_string(), text);
        }
    }

    #[test]
    fn invalid_dates_are_rejected() {
        for text in ["2023-02-29", "2024-13-01", "2024-00-10", "2024-1", "24-01-01x", "", "2024-01-32"] {
            assert!(text.parse::<Date>().is_err(), "{text}");
        }
    }

    #[test]
    fn trading_days_skip_weekends() {
        // 2024-12-31 is a Tuesday; the five weekdays ending there start on Wednesday the 25th.
        let end: Date = "2024-12-31".parse().expect("date");
        let days: Vec<String> = end.trading_days_until(5).iter().map(Date::to_string).collect();
        assert_eq!(days, ["2024-12-25", "2024-12-26", "2024-12-27", "2024-12-30", "2024-12-31"]);
        let sunday: Date = "2024-12-29".parse().expect("date");
        assert!(sunday.is_weekend());
        assert_eq!(sunday.trading_days_until(1)[0].to_string(), "2024-12-27");
    }
}
