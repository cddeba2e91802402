//! The stocks ClStock ranks and the market-data service serves: US symbols, quoted as they
//! are, and Japanese (Tokyo Stock Exchange) codes, quoted under the `{code}.T` ticker as
//! Yahoo Finance names them.
//!
//! Pure data; both services read it, so the API's universe and the market data agree.

/// Where a listing trades, which decides its ticker and currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Market {
    Us,
    Jp,
}

impl Market {
    /// The ISO 4217 code prices are quoted in.
    pub fn currency(self) -> &'static str {
        match self {
            Market::Us => "USD",
            Market::Jp => "JPY",
        }
    }
}

/// One stock of the universe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listing {
    /// What users ask for: `AAPL`, or a bare Tokyo code like `7203`.
    pub symbol: &'static str,
    pub name: &'static str,
    pub market: Market,
}

impl Listing {
    /// The quote-source ticker: the symbol for US stocks, `{code}.T` for Tokyo.
    pub fn ticker(&self) -> String {
        match self.market {
            Market::Us => self.symbol.to_owned(),
            Market::Jp => format!("{}.T", self.symbol),
        }
    }
}

const fn us(symbol: &'static str, name: &'static str) -> Listing {
    Listing { symbol, name, market: Market::Us }
}

const fn jp(symbol: &'static str, name: &'static str) -> Listing {
    Listing { symbol, name, market: Market::Jp }
}

/// Every stock ClStock knows, US first.
pub const UNIVERSE: &[Listing] = &[
    us("AAPL", "Apple"),
    us("MSFT", "Microsoft"),
    us("GOOGL", "Alphabet"),
    us("AMZN", "Amazon"),
    us("NVDA", "NVIDIA"),
    us("META", "Meta Platforms"),
    us("TSLA", "Tesla"),
    us("JPM", "JPMorgan Chase"),
    us("V", "Visa"),
    us("JNJ", "Johnson & Johnson"),
    jp("7203", "Toyota Motor"),
    jp("6758", "Sony Group"),
    jp("9984", "SoftBank Group"),
    jp("6861", "Keyence"),
    jp("8306", "Mitsubishi UFJ Financial Group"),
    jp("9432", "Nippon Telegraph and Telephone"),
    jp("7974", "Nintendo"),
    jp("4063", "Shin-Etsu Chemical"),
];

/// The listing a user-facing symbol names (case-insensitive; `7203.T` finds `7203` too).
pub fn by_symbol(symbol: &str) -> Option<&'static Listing> {
    let bare = symbol.strip_suffix(".T").or_else(|| symbol.strip_suffix(".t")).unwrap_or(symbol);
    UNIVERSE.iter().find(|l| l.symbol.eq_ignore_ascii_case(bare))
}

/// The listing a quote-source ticker names: Tokyo stocks only under `.T`, as the real
/// source behaves (a bare `7203` is not a ticker).
pub fn by_ticker(ticker: &str) -> Option<&'static Listing> {
    UNIVERSE.iter().find(|l| l.ticker().eq_ignore_ascii_case(ticker))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokyo_codes_are_quoted_under_dot_t() {
        let toyota = by_symbol("7203").expect("toyota is listed");
        assert_eq!(toyota.ticker(), "7203.T");
        assert_eq!(by_ticker("7203.T"), Some(toyota));
        assert_eq!(by_ticker("7203"), None, "a bare code is not a ticker");
        assert_eq!(by_symbol("7203.T"), Some(toyota));
        assert_eq!(by_ticker("AAPL").map(|l| l.market), Some(Market::Us));
        assert_eq!(by_symbol("aapl").map(|l| l.symbol), Some("AAPL"));
    }

    #[test]
    fn symbols_and_tickers_are_unique() {
        let mut tickers: Vec<String> = UNIVERSE.iter().map(Listing::ticker).collect();
        tickers.sort();
        tickers.dedup();
        assert_eq!(tickers.len(), UNIVERSE.len());
    }
}
