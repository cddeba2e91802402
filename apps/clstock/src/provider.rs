//! `StockDataProvider`: the API's client of the market-data service, over traced reqwest.
//!
//! `get_stock_data` is the seed's data-fetching span (`symbol`, `period`, `ticker`,
//! `data_points`, and a `No data returned` event on an empty answer); inside it `http_get`
//! wraps the SDK's CLIENT span, whose context travels in the request headers so the
//! market-data SERVER span becomes its child. Requests in flight are bounded by a semaphore.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use spindle_sdk::http::reqwest::traced_client;
use spindle_sdk::reqwest_middleware::{self, ClientWithMiddleware};
use tokio::sync::Semaphore;
use tracing::field::Empty;

use crate::history::{Bar, HistoryResponse, Period};
use crate::universe::{Market, UNIVERSE};

/// Why market data could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("invalid symbol {0:?}, expected 1 to 12 letters, digits, '.' or '-'")]
    InvalidSymbol(String),
    #[error("market data request for {ticker} failed: {source}")]
    Request { ticker: String, source: reqwest_middleware::Error },
    #[error("market data has no ticker {0}")]
    UnknownTicker(String),
    #[error("market data answered {status} for {ticker}: {message}")]
    Upstream { ticker: String, status: u16, message: String },
    #[error("market data for {ticker} is unreadable: {source}")]
    Decode { ticker: String, source: reqwest::Error },
    #[error("market data client is shutting down")]
    Closed,
}

/// Fetches daily histories from the market-data service.
#[derive(Debug, Clone)]
pub struct StockDataProvider {
    client: ClientWithMiddleware,
    base_url: String,
    jp_stock_codes: Arc<HashSet<&'static str>>,
    in_flight: Arc<Semaphore>,
}

impl StockDataProvider {
    /// A provider for the service at `base_url` (`http://host:9201`), with a per-request
    /// `timeout` and at most `max_in_flight` requests at once.
    pub fn new(base_url: &str, timeout: Duration, max_in_flight: usize) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        Ok(Self {
            client: traced_client(client),
            base_url: base_url.trim_end_matches('/').to_owned(),
            jp_stock_codes: Arc::new(UNIVERSE.iter().filter(|l| l.market == Market::Jp).map(|l| l.symbol).collect()),
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
        })
    }

    /// The quote-source ticker of `symbol`: Tokyo codes get `.T`, as in the seed.
    pub fn ticker(&self, symbol: &str) -> String {
        if self.jp_stock_codes.contains(symbol) {
            format!("{symbol}.T")
        } else {
            symbol.to_owned()
        }
    }

    /// The daily bars of `symbol` over `period`, oldest first; empty when the source had
    /// none (recorded as the `No data returned` event).
    #[tracing::instrument(
        name = "get_stock_data",
        skip_all,
        fields(symbol = %symbol, period = %period, ticker = Empty, data_points = Empty),
        err(level = "warn")
    )]
    pub async fn get_stock_data(&self, symbol: &str, period: Period) -> Result<Vec<Bar>, DataError> {
        if !is_valid_symbol(symbol) {
            return Err(DataError::InvalidSymbol(symbol.to_owned()));
        }
        let ticker = self.ticker(symbol);
        let span = tracing::Span::current();
        span.record("ticker", ticker.as_str());
        tracing::debug!(symbol, %period, "fetching data");
        let url = format!("{}/v1/history/{ticker}?period={period}", self.base_url);
        let response = {
            let _permit = self.in_flight.acquire().await.map_err(|_| DataError::Closed)?;
            self.http_get(&url, &ticker).await?
        };
        let history: HistoryResponse =
            response.json().await.map_err(|source| DataError::Decode { ticker: ticker.clone(), source })?;
        span.record("data_points", history.bars.len());
        if history.bars.is_empty() {
            tracing::warn!(symbol, ticker = %ticker, "No data returned");
        }
        Ok(history.bars)
    }

    /// One GET, named as the seed names its traced request helper; the SDK middleware adds
    /// the CLIENT span beneath it and propagates the context.
    #[tracing::instrument(
        name = "http_get",
        skip_all,
        fields(url.full = %url, http.request.method = "GET", http.response.status_code = Empty),
        err(level = "warn")
    )]
    async fn http_get(&self, url: &str, ticker: &str) -> Result<reqwest::Response, DataError> {
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|source| DataError::Request { ticker: ticker.to_owned(), source })?;
        let status = response.status();
        tracing::Span::current().record("http.response.status_code", status.as_u16());
        match status {
            s if s.is_success() => Ok(response),
            StatusCode::NOT_FOUND => Err(DataError::UnknownTicker(ticker.to_owned())),
            s => {
                let body = response.text().await.unwrap_or_default();
                let message = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_owned))
                    .unwrap_or(body);
                Err(DataError::Upstream { ticker: ticker.to_owned(), status: s.as_u16(), message })
            }
        }
    }
}

/// Letters, digits, `.` and `-`, 1 to 12 of them: every real ticker, and nothing that could
/// change the request URL.
pub fn is_valid_symbol(symbol: &str) -> bool {
    (1..=12).contains(&symbol.len()) && symbol.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokyo_codes_get_dot_t_and_others_stay() {
        let provider = StockDataProvider::new("http://127.0.0.1:1/", Duration::from_secs(1), 4).expect("client");
        assert_eq!(provider.ticker("7203"), "7203.T");
        assert_eq!(provider.ticker("AAPL"), "AAPL");
        assert_eq!(provider.ticker("1234"), "1234", "only listed tokyo codes are rewritten");
        assert_eq!(provider.base_url, "http://127.0.0.1:1");
    }

    #[test]
    fn symbols_cannot_reach_into_the_url() {
        for ok in ["AAPL", "7203", "7203.T", "BRK-B"] {
            assert!(is_valid_symbol(ok), "{ok}");
        }
        for bad in ["", "../admin", "A?period=max", "A B", "ABCDEFGHIJKLM", "ＡＡＰＬ"] {
            assert!(!is_valid_symbol(bad), "{bad}");
        }
    }
}
