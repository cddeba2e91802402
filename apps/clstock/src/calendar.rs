//! Calendar dates for daily bars: days since 1970-01-01, ISO `YYYY-MM-DD` text, weekdays.
//!
//! Calendar arithmetic is chrono's `NaiveDate`; trading days are Monday to Friday (exchange
//! holidays are not modelled).

use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, NaiveDate, Weekday};

/// A calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date(NaiveDate);

/// A date string that is not `YYYY-MM-DD` or names no real day.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid date {0:?}, expected YYYY-MM-DD")]
pub struct DateError(pub String);

impl Date {
    /// The date `days` after 1970-01-01.
    ///
    /// # Panics
    ///
    /// When `days` is outside chrono's range of about ±262,000 years (in a `const`, that is a
    /// compile error).
    pub const fn from_days_since_epoch(days: i32) -> Date {
        match NaiveDate::from_epoch_days(days) {
            Some(date) => Date(date),
            None => panic!("date outside chrono's range"),
        }
    }

    /// The date `year-month-day`, or `None` if no such day exists.
    pub fn from_ymd(year: i64, month: u32, day: u32) -> Option<Date> {
        NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day).map(Date)
    }

    /// `(year, month, day)`.
    pub fn ymd(self) -> (i64, u32, u32) {
        (i64::from(self.0.year()), self.0.month(), self.0.day())
    }

    /// Days since 1970-01-01.
    pub fn days_since_epoch(self) -> i64 {
        i64::from(self.0.to_epoch_days())
    }

    /// Whether the day is Saturday or Sunday.
    pub fn is_weekend(self) -> bool {
        matches!(self.0.weekday(), Weekday::Sat | Weekday::Sun)
    }

    /// The `n` weekdays ending at `self` (or at the last weekday before it), oldest first;
    /// fewer when chrono's range of dates ends first.
    pub fn trading_days_until(self, n: usize) -> Vec<Date> {
        let mut days = Vec::with_capacity(n);
        let mut day = Some(self.0);
        while let Some(date) = day.filter(|_| days.len() < n) {
            if !Date(date).is_weekend() {
                days.push(Date(date));
            }
            day = date.pred_opt();
        }
        days.reverse();
        days
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
