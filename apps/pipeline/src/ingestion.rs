//! `ingestion-service`: fetches option snapshots from a [`MarketDataSource`] at a steady rate
//! and publishes them to the `market-data` topic.
//!
//! Spans per snapshot, as the seed draws them:
//! `fetch_instrument_data` (root, `symbol`) → `enrich_context`, `send_to_kafka` (PRODUCER,
//! messaging attributes, context into the record headers).
//!
//! Symbols are taken round-robin from the configured universe; the key of every record is
//! its symbol, so one symbol's snapshots stay in order on one partition. Up to
//! `max_in_flight` snapshots await the broker's acknowledgement at once. On shutdown (or
//! after `count` snapshots) no new snapshot is fetched, every one in flight is delivered and
//! the producer is flushed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use spindle_sdk::rdkafka::message::OwnedHeaders;
use spindle_sdk::rdkafka::producer::{FutureProducer, Producer};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::field::Empty;
use tracing::{Instrument, Span};

use crate::error::Error;
use crate::market::MarketDataSource;
use crate::messaging::{self, Outgoing};
use crate::metrics::Metrics;
use crate::record::{encode, InstrumentMessage, OptionSnapshot};

/// The service name spans and metrics carry.
pub const SERVICE: &str = "ingestion-service";

/// Settings of `ingestion-service` (flags and environment variables).
#[derive(Debug, Clone, clap::Args)]
pub struct IngestionConfig {
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Topic the snapshots are published to.
    #[arg(long, env = "PIPELINE_MARKET_DATA_TOPIC", default_value = "market-data")]
    pub topic: String,
    /// Symbol universe, comma-separated; quoted round-robin.
    #[arg(long, env = "PIPELINE_SYMBOLS", value_delimiter = ',', default_value = "AAPL,MSFT,GOOG,AMZN,NVDA,7203.T")]
    pub symbols: Vec<String>,
    /// Snapshots per second; 0 publishes as fast as the broker acknowledges.
    #[arg(long, env = "PIPELINE_RATE", default_value_t = 10.0)]
    pub rate: f64,
    /// Stop after this many snapshots (default: run until stopped).
    #[arg(long, env = "PIPELINE_COUNT")]
    pub count: Option<u64>,
    /// Seed of the market simulator.
    #[arg(long, env = "PIPELINE_SEED", default_value_t = 42)]
    pub seed: u64,
    /// Simulated clock at the first snapshot, unix milliseconds (default: now).
    #[arg(long, env = "PIPELINE_START_MS")]
    pub start_ms: Option<i64>,
    /// Snapshots awaiting the broker's acknowledgement at most.
    #[arg(long, default_value_t = 1000)]
    pub max_in_flight: usize,
    /// Address of /metrics and /healthz.
    #[arg(long, env = "INGESTION_METRICS_ADDR", default_value = "0.0.0.0:9101")]
    pub metrics_addr: SocketAddr,
}

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IngestionSummary {
    pub published: u64,
    pub failed: u64,
}

#[derive(Default)]
struct Counts {
    published: AtomicU64,
    failed: AtomicU64,
}

/// Publishes snapshots from `source` until `count` is reached or `stop` is cancelled.
pub async fn run<S: MarketDataSource>(
    config: &IngestionConfig,
    mut source: S,
    stop: CancellationToken,
    metrics: Arc<Metrics>,
) -> Result<IngestionSummary, Error> {
    if config.symbols.is_empty() || config.symbols.iter().any(|s| s.trim().is_empty()) {
        return Err(Error::Config { name: "symbols", reason: "a comma-separated list of non-empty symbols".into() });
    }
    if !(config.rate.is_finite() && config.rate >= 0.0) {
        return Err(Error::Config { name: "rate", reason: format!("{} is not a non-negative number", config.rate) });
    }
    let in_flight_limit = u32::try_from(config.max_in_flight.clamp(1, 1_000_000)).unwrap_or(1_000_000);
    let producer = messaging::producer(&config.brokers, SERVICE)?;
    let permits = Arc::new(Semaphore::new(in_flight_limit as usize));
    let counts = Arc::new(Counts::default());
    let mut pacer = Pacer::new(config.rate);
    let mut sequence: u64 = 0;
    tracing::info!(symbols = ?config.symbols, rate = config.rate, count = ?config.count, topic = %config.topic, "ingestion started");

    while config.count.is_none_or(|count| sequence < count) && !stop.is_cancelled() {
        tokio::select! {
            _ = pacer.wait() => {}
            _ = stop.cancelled() => break,
        }
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stop.cancelled() => break,
        };
        let symbol = &config.symbols[(sequence % config.symbols.len() as u64) as usize];
        let started = Instant::now();
        let root = tracing::info_span!("fetch_instrument_data", symbol = %symbol, instrument.source = source.name(), error.type = Empty);
        let fetched = source.fetch(symbol).instrument(root.clone()).await;
        let snapshot = match fetched {
            Ok(snapshot) => snapshot,
            Err(error) => {
                root.record("error.type", "source_error");
                spindle_sdk::record_error(&root, &error);
                metrics.error("source");
                tracing::warn!(parent: &root, %error, %symbol, "fetch failed");
                counts.failed.fetch_add(1, Ordering::Relaxed);
                sequence += 1;
                continue;
            }
        };
        let message = root.in_scope(|| enrich_context(snapshot, source.name(), sequence));
        sequence += 1;

        let task = Publish {
            producer: producer.clone(),
            topic: config.topic.clone(),
            stop: stop.clone(),
            metrics: Arc::clone(&metrics),
            counts: Arc::clone(&counts),
        };
        tokio::spawn(
            async move {
                task.send_to_kafka(message, started).await;
                drop(permit);
            }
            .instrument(root),
        );
    }

    // Everything fetched is delivered before the service reports done.
    let _all = permits.acquire_many(in_flight_limit).await;
    let flush = tokio::task::block_in_place(|| producer.flush(Duration::from_secs(10)));
    if let Err(error) = flush {
        tracing::warn!(%error, "producer flush incomplete");
    }
    let summary = IngestionSummary {
        published: counts.published.load(Ordering::Relaxed),
        failed: counts.failed.load(Ordering::Relaxed),
    };
    tracing::info!(published = summary.published, failed = summary.failed, "ingestion finished");
    Ok(summary)
}

/// The `enrich_context` step: adds the contract identifier, the source, the sequence number
/// and the publication time.
fn enrich_context(snapshot: OptionSnapshot, source: &str, sequence: u64) -> InstrumentMessage {
    let span = tracing::info_span!("enrich_context", instrument.contract = Empty, instrument.sequence = sequence);
    let _entered = span.enter();
    let contract = snapshot.contract_id();
    span.record("instrument.contract", contract.as_str());
    InstrumentMessage { snapshot, contract, source: source.to_owned(), sequence, ingested_at_ms: unix_ms() }
}

struct Publish {
    producer: FutureProducer,
    topic: String,
    stop: CancellationToken,
    metrics: Arc<Metrics>,
    counts: Arc<Counts>,
}

impl Publish {
    /// The `send_to_kafka` step, inside the root span.
    async fn send_to_kafka(self, message: InstrumentMessage, started: Instant) {
        let payload = encode(&message);
        let symbol = message.snapshot.symbol.as_str();
        let span = messaging::producer_span("send_to_kafka", &self.topic, Some(symbol));
        let out = Outgoing { topic: &self.topic, key: Some(symbol), payload: &payload, headers: OwnedHeaders::new() };
        match messaging::deliver(&self.producer, &span, out, &self.stop, &self.metrics).await {
            Ok(_) => {
                self.counts.published.fetch_add(1, Ordering::Relaxed);
                self.metrics.processed(started.elapsed());
            }
            Err(error) => {
                let root = Span::current();
                root.record("error.type", "kafka_delivery");
                spindle_sdk::record_error(&root, &error);
                self.counts.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, sequence = message.sequence, "snapshot not delivered before shutdown");
            }
        }
    }
}

/// Spaces events `1 / rate` apart on a fixed schedule (no drift, catching up after a stall).
struct Pacer {
    period: Option<Duration>,
    start: tokio::time::Instant,
    sent: u32,
}

impl Pacer {
    fn new(rate: f64) -> Self {
        let period = (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate));
        Self { period, start: tokio::time::Instant::now(), sent: 0 }
    }

    async fn wait(&mut self) {
        if let Some(period) = self.period {
            let due = self.start + period * self.sent;
            self.sent = self.sent.saturating_add(1);
            tokio::time::sleep_until(due).await;
        }
    }
}

/// Now as unix milliseconds.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
