//! The records that travel through the pipeline, their JSON wire form, and the validation
//! the processor's `clean_data` step applies.
//!
//! - [`OptionSnapshot`]: what a market-data source returns for one option.
//! - [`InstrumentReference`]: static reference data of a symbol (exchange, currency, contract
//!   multiplier), which ingestion reads through the Redis cache.
//! - [`InstrumentMessage`]: a snapshot plus ingestion context, on the `market-data` topic.
//! - [`EnrichedRecord`]: an instrument plus its BSM analytics, on the `enriched-data` topic
//!   and, one row each, in PostgreSQL.
//!
//! Pure: no IO. Decoding and validation return errors that name the field and the value.

use chrono::{DateTime, Datelike};
use serde::{Deserialize, Serialize};

use crate::bsm::{Contract, IvMethod, OptionType};

/// Milliseconds in a (Julian) year, the unit of time to expiry.
pub const YEAR_MS: f64 = 365.25 * 86_400_000.0;

/// One option quote as a market-data source sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptionSnapshot {
    /// Ticker of the underlying (`AAPL`).
    pub symbol: String,
    pub option_type: OptionType,
    pub underlying_price: f64,
    pub strike: f64,
    /// Expiry, unix milliseconds.
    pub expiry_ms: i64,
    /// When the quote was observed, unix milliseconds.
    pub observed_at_ms: i64,
    pub risk_free_rate: f64,
    pub dividend_yield: f64,
    /// Mid price of the option, from which the implied volatility is solved.
    pub market_price: f64,
    /// Annualised realised volatility of the underlying, at which the fair value is computed.
    pub historical_volatility: f64,
}

/// Reference data of a symbol: what changes rarely and comes from a slower source than the
/// quotes, hence cached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstrumentReference {
    /// Listing exchange's MIC (`XNAS`, `XTKS`).
    pub exchange: String,
    /// ISO 4217 currency of the prices (`USD`).
    pub currency: String,
    /// Shares per option contract.
    pub contract_multiplier: u32,
}

/// A snapshot with the context `enrich_context` adds: the message on `market-data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstrumentMessage {
    #[serde(flatten)]
    pub snapshot: OptionSnapshot,
    /// The contract's identifier, e.g. `AAPL-20250117-C-150.00`; with `observed_at_ms`
    /// the natural key of the stored row.
    pub contract: String,
    /// Which source produced the snapshot (`simulator`).
    pub source: String,
    /// Position of the snapshot in the ingestion run.
    pub sequence: u64,
    /// When ingestion published it, unix milliseconds.
    pub ingested_at_ms: i64,
    /// The symbol's reference data; absent when neither the cache nor the source had it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<InstrumentReference>,
}

/// Black–Scholes–Merton analytics of one instrument.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Analytics {
    pub time_to_expiry_years: f64,
    /// BSM price at the historical volatility.
    pub fair_value: f64,
    pub delta: f64,
    pub gamma: f64,
    pub vega: f64,
    pub theta: f64,
    pub rho: f64,
    /// Volatility at which the BSM price equals the market price.
    pub implied_volatility: f64,
    /// `newton` or `bisection`.
    pub iv_method: IvMethod,
}

/// An instrument with its analytics: the message on `enriched-data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrichedRecord {
    #[serde(flatten)]
    pub instrument: InstrumentMessage,
    pub analytics: Analytics,
    /// When the processor computed the analytics, unix milliseconds.
    pub processed_at_ms: i64,
}

/// Why a record was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecordError {
    #[error("payload is not a valid record: {0}")]
    Malformed(String),
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl RecordError {
    /// A short machine-readable kind for metrics labels and `error.type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed_record",
            Self::Invalid { .. } => "invalid_record",
        }
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> RecordError {
    RecordError::Invalid { field, reason: reason.into() }
}

/// Decodes a JSON payload; a missing payload is malformed too.
pub fn decode<T: for<'de> Deserialize<'de>>(payload: Option<&[u8]>) -> Result<T, RecordError> {
    let bytes = payload.ok_or_else(|| RecordError::Malformed("empty payload".to_owned()))?;
    serde_json::from_slice(bytes).map_err(|e| RecordError::Malformed(e.to_string()))
}

/// Encodes a record as JSON.
pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    // Records hold only strings, numbers and enums: serialisation cannot fail. Non-finite
    // floats become `null`, which `clean_data` then rejects downstream.
    serde_json::to_vec(record).unwrap_or_default()
}

impl OptionSnapshot {
    /// Years from observation to expiry.
    pub fn time_to_expiry_years(&self) -> f64 {
        (self.expiry_ms - self.observed_at_ms) as f64 / YEAR_MS
    }

    /// The option to value, without volatility.
    pub fn contract(&self) -> Contract {
        Contract {
            option_type: self.option_type,
            spot: self.underlying_price,
            strike: self.strike,
            rate: self.risk_free_rate,
            dividend_yield: self.dividend_yield,
            time_years: self.time_to_expiry_years(),
        }
    }

    /// The contract identifier: `SYMBOL-YYYYMMDD-C|P-STRIKE`, strike with two decimals.
    pub fn contract_id(&self) -> String {
        // Only an expiry beyond chrono's ±262,000 years has no date (the epoch stands in);
        // `validate` rejects such a record anyway.
        let expiry = DateTime::from_timestamp_millis(self.expiry_ms).unwrap_or_default();
        let (y, m, d) = (expiry.year(), expiry.month(), expiry.day());
        let kind = match self.option_type {
            OptionType::Call => 'C',
            OptionType::Put => 'P',
        };
        format!("{}-{y:04}{m:02}{d:02}-{kind}-{:.2}", self.symbol, self.strike)
    }

    /// What `clean_data` checks: a plausible symbol, positive finite prices, an unexpired
    /// contract, sane rates and volatility, and a market price inside the no-arbitrage
    /// bounds (otherwise no implied volatility exists).
    pub fn validate(&self) -> Result<(), RecordError> {
        let symbol_ok = !self.symbol.is_empty()
            && self.symbol.len() <= 16
            && self.symbol.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        if !symbol_ok {
            return Err(invalid("symbol", format!("{:?} is not 1 to 16 of A-Z 0-9 . -", self.symbol)));
        }
        for (field, value) in
            [("underlying_price", self.underlying_price), ("strike", self.strike), ("market_price", self.market_price)]
        {
            if !(value.is_finite() && value > 0.0) {
                return Err(invalid(field, format!("{value} is not a positive finite number")));
            }
        }
        if !(self.historical_volatility.is_finite()
            && self.historical_volatility > 0.0
            && self.historical_volatility <= 5.0)
        {
            return Err(invalid("historical_volatility", format!("{} is outside (0, 5]", self.historical_volatility)));
        }
        for (field, value) in [("risk_free_rate", self.risk_free_rate), ("dividend_yield", self.dividend_yield)] {
            if !(value.is_finite() && (-0.5..=1.0).contains(&value)) {
                return Err(invalid(field, format!("{value} is outside [-0.5, 1]")));
            }
        }
        let years = self.time_to_expiry_years();
        if !(years > 0.0 && years <= 30.0) {
            return Err(invalid(
                "expiry_ms",
                format!("{} is not within 30 years after observed_at_ms {}", self.expiry_ms, self.observed_at_ms),
            ));
        }
        let (lower, upper) = self.contract().price_bounds();
        if !(self.market_price > lower && self.market_price < upper) {
            return Err(invalid(
                "market_price",
                format!("{} is outside the no-arbitrage bounds ({lower}, {upper})", self.market_price),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn snapshot() -> OptionSnapshot {
        OptionSnapshot {
            symbol: "AAPL".into(),
            option_type: OptionType::Call,
            underlying_price: 150.0,
            strike: 155.0,
            expiry_ms: 1_737_072_000_000,      // 2025-01-17
            observed_at_ms: 1_734_393_600_000, // 2024-12-17
            risk_free_rate: 0.045,
            dividend_yield: 0.005,
            market_price: 3.1,
            historical_volatility: 0.25,
        }
    }

    #[test]
    fn contract_id_names_symbol_expiry_date_type_and_strike() {
        assert_eq!(snapshot().contract_id(), "AAPL-20250117-C-155.00");
        let leap_day = OptionSnapshot { expiry_ms: 951_782_400_000 + 72_000_000, ..snapshot() }; // 2000-02-29 20:00
        assert_eq!(leap_day.contract_id(), "AAPL-20000229-C-155.00");
    }

    #[test]
    fn json_round_trip_keeps_the_flat_wire_shape() {
        let message = InstrumentMessage {
            contract: snapshot().contract_id(),
            snapshot: snapshot(),
            source: "simulator".into(),
            sequence: 7,
            ingested_at_ms: 1_734_393_600_001,
            reference: Some(InstrumentReference {
                exchange: "XNAS".into(),
                currency: "USD".into(),
                contract_multiplier: 100,
            }),
        };
        let bytes = encode(&message);
        let json: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(json["symbol"], "AAPL");
        assert_eq!(json["option_type"], "call");
        assert_eq!(decode::<InstrumentMessage>(Some(&bytes)), Ok(message));
    }

    #[test]
    fn decode_names_what_is_wrong() {
        assert_eq!(decode::<InstrumentMessage>(None), Err(RecordError::Malformed("empty payload".into())));
        let err = decode::<InstrumentMessage>(Some(b"{\"symbol\":\"AAPL\"}")).expect_err("incomplete");
        assert!(err.to_string().contains("missing field"), "{err}");
        assert_eq!(err.kind(), "malformed_record");
    }

    #[test]
    fn validation_rejects_each_kind_of_bad_field() {
        assert_eq!(snapshot().validate(), Ok(()));
        type Breakage = Box<dyn Fn(&mut OptionSnapshot)>;
        let cases: Vec<(&str, Breakage)> = vec![
            ("symbol", Box::new(|s| s.symbol = "aapl".into())),
            ("symbol", Box::new(|s| s.symbol.clear())),
            ("underlying_price", Box::new(|s| s.underlying_price = -1.0)),
            ("strike", Box::new(|s| s.strike = f64::NAN)),
            ("market_price", Box::new(|s| s.market_price = 0.0)),
            ("historical_volatility", Box::new(|s| s.historical_volatility = 0.0)),
            ("risk_free_rate", Box::new(|s| s.risk_free_rate = 3.0)),
            ("dividend_yield", Box::new(|s| s.dividend_yield = f64::INFINITY)),
            ("expiry_ms", Box::new(|s| s.expiry_ms = s.observed_at_ms)),
            ("market_price", Box::new(|s| s.market_price = 200.0)),
        ];
        for (field, break_it) in cases {
            let mut s = snapshot();
            break_it(&mut s);
            match s.validate() {
                Err(RecordError::Invalid { field: got, .. }) => assert_eq!(got, field, "{s:?}"),
                other => panic!("expected {field} to be rejected, got {other:?}"),
            }
        }
    }
}
