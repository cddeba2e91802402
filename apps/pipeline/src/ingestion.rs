//! `ingestion-service`: fetches option snapshots from a [`MarketDataSource`] at a steady rate
//! and publishes them to the `market-data` topic.
//!
//! Spans per snapshot, as the seed draws them:
//! `fetch_instrument_data` (root, `symbol`) → `enrich_context`, `send_to_kafka` (PRODUCER,
//! messaging attributes, context into the record headers). `enrich_context` reads the
//! symbol's reference data through the Redis cache ([`crate::reference`]): a CLIENT span
//! `GET` below it, and `SET` after a miss.
//!
//! Symbols are taken round-robin from the configured universe; the key of every record is
//! its symbol, so one symbol's snapshots stay in order on one partition. Up to
//! `max_in_flight` snapshots await the broker's acknowledgement at once. On shutdown (or
//! after `count` snapshots) no new snapshot is fetched, every one in flight is delivered and
//! the producer is flushed.
//!
//! A snapshot's spans are exported before its record is handed to the producer: once the
//! record is on the broker the rest of its trace hangs off `send_to_kafka`, so a `kill -9`
//! between the broker's acknowledgement and the export would leave a trace without its root.
//! `fetch_instrument_data` and `send_to_kafka` therefore end when the record is ready to
//! send (the context in its headers is `send_to_kafka`'s), and a publisher task exports the
//! spans of all the records ready so far with one flush (bounded, see [`crate::flush`]), then
//! hands them to the producer. `send_to_kafka` covers the encoding and the hand-off, not the
//! broker's acknowledgement, and carries no partition or offset (they are not known yet);
//! a delivery that fails for good (only at shutdown) is logged and counted.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use spindle_sdk::rdkafka::message::OwnedHeaders;
use spindle_sdk::rdkafka::producer::{FutureProducer, Producer};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::field::Empty;
use tracing::Instrument;

use crate::error::Error;
use crate::flush::SpanFlush;
use crate::market::MarketDataSource;
use crate::messaging::{self, Outgoing};
use crate::metrics::{CacheResult, Metrics};
use crate::record::{encode, InstrumentMessage, OptionSnapshot};
use crate::reference::{ReferenceCache, ReferenceCacheConfig};

/// Flushes of ingestion's spans start at least this far apart, so that at a steady rate
/// each exports the spans of several snapshots: at 1000 snapshots a second one flush per
/// snapshot cost a gRPC request each (ingestion's CPU per snapshot doubled, Spindle's
/// quadrupled). Like the producer's `linger.ms`, it delays a record by as much at most.
const FLUSH_INTERVAL: Duration = Duration::from_millis(5);

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
    /// How long the simulator's reference-data lookup takes (what the cache saves),
    /// milliseconds.
    #[arg(long, env = "PIPELINE_REFERENCE_LATENCY_MS", default_value_t = 20)]
    pub reference_latency_ms: u64,
    #[command(flatten)]
    pub cache: ReferenceCacheConfig,
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
    spans: SpanFlush,
) -> Result<IngestionSummary, Error> {
    if config.symbols.is_empty() || config.symbols.iter().any(|s| s.trim().is_empty()) {
        return Err(Error::Config { name: "symbols", reason: "a comma-separated list of non-empty symbols".into() });
    }
    if !(config.rate.is_finite() && config.rate >= 0.0) {
        return Err(Error::Config { name: "rate", reason: format!("{} is not a non-negative number", config.rate) });
    }
    let in_flight_limit = u32::try_from(config.max_in_flight.clamp(1, 1_000_000)).unwrap_or(1_000_000);
    let mut cache = ReferenceCache::new(&config.cache, Arc::clone(&metrics))?;
    let producer = messaging::producer(&config.brokers, SERVICE)?;
    let permits = Arc::new(Semaphore::new(in_flight_limit as usize));
    let counts = Arc::new(Counts::default());
    let mut pacer = Pacer::new(config.rate);
    let mut sequence: u64 = 0;
    let (ready_tx, ready_rx) = mpsc::unbounded_channel();
    let publisher = Publisher {
        producer: producer.clone(),
        topic: config.topic.clone(),
        stop: stop.clone(),
        metrics: Arc::clone(&metrics),
        counts: Arc::clone(&counts),
    };
    let publishing = tokio::spawn(publisher.run(ready_rx, spans, in_flight_limit as usize));
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
        let message = enrich_context(snapshot, &source, &mut cache, sequence).instrument(root.clone()).await;
        sequence += 1;
        let ready = root.in_scope(|| send_to_kafka(&config.topic, message, started, permit));
        // The snapshot's spans end here, before the publisher's flush.
        drop(root);
        if ready_tx.send(ready).is_err() {
            break;
        }
    }

    // Everything fetched is delivered before the service reports done.
    drop(ready_tx);
    let _ = publishing.await;
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

/// The `enrich_context` step: adds the contract identifier, the symbol's reference data
/// (through the cache), the source, the sequence number and the publication time.
async fn enrich_context<S: MarketDataSource>(
    snapshot: OptionSnapshot,
    source: &S,
    cache: &mut ReferenceCache,
    sequence: u64,
) -> InstrumentMessage {
    let span = tracing::info_span!(
        "enrich_context",
        instrument.contract = Empty,
        instrument.sequence = sequence,
        instrument.exchange = Empty,
        reference.cache = Empty,
    );
    let contract = snapshot.contract_id();
    span.record("instrument.contract", contract.as_str());
    let (reference, lookup) = cache.lookup(source, &snapshot.symbol).instrument(span.clone()).await;
    span.record("reference.cache", lookup.map_or("uncached", CacheResult::as_str));
    if let Some(reference) = &reference {
        span.record("instrument.exchange", reference.exchange.as_str());
    }
    InstrumentMessage {
        snapshot,
        contract,
        source: source.name().to_owned(),
        sequence,
        ingested_at_ms: unix_ms(),
        reference,
    }
}

/// A snapshot whose spans have ended, ready to be handed to the producer.
struct Ready {
    symbol: String,
    sequence: u64,
    payload: Vec<u8>,
    /// `send_to_kafka`'s context.
    headers: OwnedHeaders,
    started: Instant,
    permit: OwnedSemaphorePermit,
}

/// The `send_to_kafka` step, inside the root span: encodes the record and puts the PRODUCER
/// span's context in its headers. The span ends when this returns (see the module).
fn send_to_kafka(topic: &str, message: InstrumentMessage, started: Instant, permit: OwnedSemaphorePermit) -> Ready {
    let symbol = message.snapshot.symbol.clone();
    let span = messaging::producer_span("send_to_kafka", topic, Some(&symbol));
    // Semantic conventions: a span giving one message its context, the message being sent
    // later (in a batch), is a `create` operation.
    span.record("messaging.operation.type", "create");
    span.record("messaging.operation.name", "create");
    let payload = span.in_scope(|| encode(&message));
    let headers = messaging::context_headers(&span);
    Ready { symbol, sequence: message.sequence, payload, headers, started, permit }
}

struct Publisher {
    producer: FutureProducer,
    topic: String,
    stop: CancellationToken,
    metrics: Arc<Metrics>,
    counts: Arc<Counts>,
}

impl Publisher {
    /// Takes every snapshot ready so far, exports their spans with one flush, then hands
    /// them to the producer; until the channel closes. While a flush waits (and until
    /// [`FLUSH_INTERVAL`] has passed since the last one started) more snapshots become ready
    /// and share the next one, so the flushes keep up with any rate.
    async fn run(self, mut ready: mpsc::UnboundedReceiver<Ready>, spans: SpanFlush, max: usize) {
        let this = Arc::new(self);
        let mut batch = Vec::new();
        let mut last_flush: Option<tokio::time::Instant> = None;
        while ready.recv_many(&mut batch, max).await > 0 {
            if spans.is_active() {
                if let Some(last) = last_flush {
                    tokio::time::sleep_until(last + FLUSH_INTERVAL).await;
                    while batch.len() < max {
                        match ready.try_recv() {
                            Ok(snapshot) => batch.push(snapshot),
                            Err(_) => break,
                        }
                    }
                }
                last_flush = Some(tokio::time::Instant::now());
                spans.flush().await;
            }
            for snapshot in batch.drain(..) {
                tokio::spawn(Arc::clone(&this).deliver(snapshot));
            }
        }
    }

    async fn deliver(self: Arc<Self>, snapshot: Ready) {
        let Ready { symbol, sequence, payload, headers, started, permit } = snapshot;
        let out = Outgoing { topic: &self.topic, key: Some(&symbol), payload: &payload, headers };
        // No span to record on: the context is in the headers already, and the spans ended.
        let span = tracing::Span::none();
        match messaging::deliver(&self.producer, &span, out, &self.stop, &self.metrics).await {
            Ok(_) => {
                self.counts.published.fetch_add(1, Ordering::Relaxed);
                self.metrics.processed(started.elapsed());
            }
            Err(error) => {
                self.counts.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, sequence, %symbol, "snapshot not delivered before shutdown");
            }
        }
        drop(permit);
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
