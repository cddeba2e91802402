use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an id string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("id is empty")]
    Empty,
    #[error("id has {len} hex characters, at most {max} are allowed")]
    TooLong { len: usize, max: usize },
    #[error("id contains a non-hex character {found:?} at position {position}")]
    NotHex { found: char, position: usize },
}

/// A 128-bit trace id. Zero is invalid on the wire; the type itself allows it so that
/// decoders can report it instead of failing to represent it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct TraceId(pub u128);

/// A 64-bit span id. Zero means "none".
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct SpanId(pub u64);

fn parse_hex(s: &str, max: usize) -> Result<u128, IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > max {
        return Err(IdError::TooLong { len: s.len(), max });
    }
    let mut value: u128 = 0;
    for (position, found) in s.chars().enumerate() {
        let digit = found.to_digit(16).ok_or(IdError::NotHex { found, position })?;
        value = (value << 4) | u128::from(digit);
    }
    Ok(value)
}

impl TraceId {
    pub const INVALID: TraceId = TraceId(0);

    /// Parses up to 32 hex characters; shorter ids are left-padded with zeros, as Jaeger does.
    pub fn from_hex(s: &str) -> Result<Self, IdError> {
        parse_hex(s, 32).map(TraceId)
    }

    /// Big-endian bytes, as OTLP and Jaeger proto carry them.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        TraceId(u128::from_be_bytes(bytes))
    }

    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    pub fn high(self) -> u64 {
        (self.0 >> 64) as u64
    }

    pub fn low(self) -> u64 {
        self.0 as u64
    }

    pub fn from_parts(high: u64, low: u64) -> Self {
        TraceId((u128::from(high) << 64) | u128::from(low))
    }

    pub fn is_valid(self) -> bool {
        self.0 != 0
    }

    /// 32 lowercase hex characters, as OTLP JSON writes it.
    pub fn to_hex(self) -> String {
        format!("{:032x}", self.0)
    }

    /// Jaeger's form: 16 characters when the high 64 bits are zero, otherwise 32.
    pub fn to_jaeger_hex(self) -> String {
        if self.high() == 0 {
            format!("{:016x}", self.low())
        } else {
            self.to_hex()
        }
    }
}

impl SpanId {
    pub const INVALID: SpanId = SpanId(0);

    pub fn from_hex(s: &str) -> Result<Self, IdError> {
        parse_hex(s, 16).map(|v| SpanId(v as u64))
    }

    pub fn from_bytes(bytes: [u8; 8]) -> Self {
        SpanId(u64::from_be_bytes(bytes))
    }

    pub fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    pub fn is_valid(self) -> bool {
        self.0 != 0
    }

    pub fn to_hex(self) -> String {
        format!("{:016x}", self.0)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({:032x})", self.0)
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({:016x})", self.0)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jaeger_hex_is_short_when_high_bits_are_zero() {
        assert_eq!(TraceId(0xab).to_jaeger_hex(), "00000000000000ab");
        assert_eq!(TraceId::from_parts(1, 2).to_jaeger_hex(), "00000000000000010000000000000002");
    }

    #[test]
    fn parses_short_and_long_hex() {
        assert_eq!(TraceId::from_hex("ab").unwrap(), TraceId(0xab));
        assert_eq!(
            TraceId::from_hex("0102030405060708090a0b0c0d0e0f10").unwrap().to_bytes(),
            [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]
        );
        assert_eq!(TraceId::from_hex(""), Err(IdError::Empty));
        assert_eq!(TraceId::from_hex("zz"), Err(IdError::NotHex { found: 'z', position: 0 }));
        assert!(matches!(SpanId::from_hex("00000000000000001"), Err(IdError::TooLong { .. })));
    }
}
