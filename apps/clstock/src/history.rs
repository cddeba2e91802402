//! The market-data wire contract both services share: daily OHLCV bars, the history
//! response, and the `period` parameter (`1mo` ... `10y`, `max`) in yfinance's spelling.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One trading day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bar {
    /// `YYYY-MM-DD`.
    pub date: String,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: u64,
}

/// What `GET /v1/history/{ticker}` answers: the bars of `period`, oldest first. An empty
/// `bars` is a valid answer (the source had nothing), as yfinance returns an empty frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryResponse {
    pub ticker: String,
    pub currency: String,
    pub period: Period,
    pub bars: Vec<Bar>,
}

/// How far back a history reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Period {
    OneMonth,
    ThreeMonths,
    SixMonths,
    OneYear,
    TwoYears,
    FiveYears,
    TenYears,
    Max,
}

/// A period that is not one of the spellings [`Period`] accepts.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid period {0:?}, expected one of 1mo, 3mo, 6mo, 1y, 2y, 5y, 10y, max")]
pub struct PeriodError(pub String);

/// Trading days the market-data service keeps per ticker (ten years of weekdays).
pub const MAX_TRADING_DAYS: usize = 2610;

impl Period {
    /// Trading days in the period (weekdays: 21 a month, 261 a year).
    pub fn trading_days(self) -> usize {
        match self {
            Period::OneMonth => 21,
            Period::ThreeMonths => 63,
            Period::SixMonths => 130,
            Period::OneYear => 261,
            Period::TwoYears => 522,
            Period::FiveYears => 1305,
            Period::TenYears | Period::Max => MAX_TRADING_DAYS,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Period::OneMonth => "1mo",
            Period::ThreeMonths => "3mo",
            Period::SixMonths => "6mo",
            Period::OneYear => "1y",
            Period::TwoYears => "2y",
            Period::FiveYears => "5y",
            Period::TenYears => "10y",
            Period::Max => "max",
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Period {
    type Err = PeriodError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "1mo" => Period::OneMonth,
            "3mo" => Period::ThreeMonths,
            "6mo" => Period::SixMonths,
            "1y" => Period::OneYear,
            "2y" => Period::TwoYears,
            "5y" => Period::FiveYears,
            "10y" => Period::TenYears,
            "max" => Period::Max,
            _ => return Err(PeriodError(s.to_owned())),
        })
    }
}

impl TryFrom<String> for Period {
    type Error = PeriodError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Period> for String {
    fn from(p: Period) -> String {
        p.as_str().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_round_trip_and_grow() {
        let all = ["1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "max"];
        let mut last = 0;
        for text in all {
            let period: Period = text.parse().expect(text);
            assert_eq!(period.to_string(), text);
            assert!(period.trading_days() >= last, "{text}");
            last = period.trading_days();
        }
        assert_eq!("2w".parse::<Period>(), Err(PeriodError("2w".into())));
        let json = serde_json::to_string(&Period::OneYear).expect("serialises");
        assert_eq!(json, "\"1y\"");
        assert!(serde_json::from_str::<Period>("\"1d\"").is_err());
    }
}
