//! `processor-service`: consumes `market-data`, values each option with Black–Scholes–Merton
//! and publishes the result to `enriched-data`.
//!
//! Spans per message, continuing the trace from the record headers:
//! `process_message` (CONSUMER, child of `send_to_kafka`, `symbol`) → `clean_data`,
//! `calculate_bsm`, `send_enriched` (PRODUCER). A record that fails `clean_data` (or has no
//! implied volatility) is never dropped: it goes to the dead-letter topic in a `dead_letter`
//! PRODUCER span, and the failing step and `process_message` are marked as errors.
//!
//! Messages are taken in small batches; each batch is processed concurrently (records keep
//! their order in the producer queue), and offsets are committed only after every result of
//! the batch — forwarded or dead-lettered — has been acknowledged by the broker, and the
//! batch's spans exported: at-least-once delivery, and whole traces after a crash. On shutdown the current batch is finished, the offsets committed
//! synchronously and the producer flushed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use spindle_sdk::rdkafka::message::{Message, OwnedHeaders, OwnedMessage};
use spindle_sdk::rdkafka::producer::FutureProducer;
use tokio_util::sync::CancellationToken;
use tracing::field::Empty;
use tracing::{Instrument, Span};

use crate::bsm::{self, IvError};
use crate::error::Error;
use crate::flush::SpanFlush;
use crate::ingestion::unix_ms;
use crate::messaging::{self, BatchHandler, Batching, DeadLetter, Outgoing};
use crate::metrics::Metrics;
use crate::record::{decode, encode, Analytics, EnrichedRecord, InstrumentMessage, OptionSnapshot, RecordError};

/// The service name spans and metrics carry.
pub const SERVICE: &str = "processor-service";

/// Settings of `processor-service` (flags and environment variables).
#[derive(Debug, Clone, clap::Args)]
pub struct ProcessorConfig {
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Topic of instrument snapshots.
    #[arg(long, env = "PIPELINE_MARKET_DATA_TOPIC", default_value = "market-data")]
    pub input_topic: String,
    /// Topic the enriched records are published to.
    #[arg(long, env = "PIPELINE_ENRICHED_TOPIC", default_value = "enriched-data")]
    pub output_topic: String,
    /// Topic of records that cannot be processed.
    #[arg(long, env = "PIPELINE_DEAD_LETTER_TOPIC", default_value = "dead-letter")]
    pub dead_letter_topic: String,
    /// Consumer group.
    #[arg(long, env = "PROCESSOR_GROUP_ID", default_value = SERVICE)]
    pub group_id: String,
    /// Static member id in the group (`group.instance.id`): a restart with the same id gets
    /// its partitions back at once, also after a crash. Default `<group-id>@<host name>`;
    /// every running instance of a group needs its own; empty for a dynamic member.
    #[arg(long, env = "PROCESSOR_GROUP_INSTANCE_ID")]
    pub group_instance_id: Option<String>,
    /// Messages per batch at most.
    #[arg(long, default_value_t = 500)]
    pub batch_size: usize,
    /// How long a batch waits for more messages after the first, in milliseconds.
    #[arg(long, default_value_t = 20)]
    pub batch_linger_ms: u64,
    /// Address of /metrics and /healthz.
    #[arg(long, env = "PROCESSOR_METRICS_ADDR", default_value = "0.0.0.0:9102")]
    pub metrics_addr: SocketAddr,
}

/// Values an option: fair value and greeks at the historical volatility, and the implied
/// volatility of the market price.
pub fn analyse(snapshot: &OptionSnapshot) -> Result<Analytics, IvError> {
    let contract = snapshot.contract();
    let fair = contract.value(snapshot.historical_volatility);
    let implied = bsm::implied_volatility(&contract, snapshot.market_price)?;
    Ok(Analytics {
        time_to_expiry_years: contract.time_years,
        fair_value: fair.price,
        delta: fair.greeks.delta,
        gamma: fair.greeks.gamma,
        vega: fair.greeks.vega,
        theta: fair.greeks.theta,
        rho: fair.greeks.rho,
        implied_volatility: implied.volatility,
        iv_method: implied.method,
    })
}

/// Consumes and processes until `stop` is cancelled.
pub async fn run(
    config: &ProcessorConfig,
    stop: CancellationToken,
    metrics: Arc<Metrics>,
    spans: SpanFlush,
) -> Result<(), Error> {
    metrics.set_consumer_group(&config.group_id);
    // The dead-letter series at 0 from the start: a rate of it has data before the first.
    metrics.messages_out(&config.dead_letter_topic, 0);
    let instance = config.group_instance_id.clone().or_else(|| messaging::default_instance_id(&config.group_id));
    let consumer = Arc::new(messaging::consumer(
        &config.brokers,
        &config.group_id,
        instance.as_deref(),
        SERVICE,
        &config.input_topic,
    )?);
    let producer = messaging::producer(&config.brokers, SERVICE)?;
    let batching = Batching { size: config.batch_size, linger: Duration::from_millis(config.batch_linger_ms) };
    let step = Step { config, producer: &producer, stop: &stop, metrics: &metrics };
    tracing::info!(input = %config.input_topic, output = %config.output_topic, group = %config.group_id, instance = instance.as_deref().unwrap_or(""), "processor started");
    messaging::consume(consumer, &producer, batching, &spans, &step, &stop, &metrics).await;
    tracing::info!("processor stopped");
    Ok(())
}

struct Step<'a> {
    config: &'a ProcessorConfig,
    producer: &'a FutureProducer,
    stop: &'a CancellationToken,
    metrics: &'a Metrics,
}

impl BatchHandler for Step<'_> {
    /// Every message of the batch at once; results keep their order in the producer queue.
    fn handle<'a>(&'a self, batch: &'a [OwnedMessage]) -> impl std::future::Future<Output = Vec<bool>> + 'a {
        join_all(batch.iter().map(|m| self.handle_one(m)))
    }
}

impl Step<'_> {
    /// Handles one message; `true` once its result (enriched or dead letter) is delivered.
    async fn handle_one(&self, message: &OwnedMessage) -> bool {
        let started = Instant::now();
        let span = messaging::consumer_span("process_message", message);
        let done = self.process_message(message, &span).instrument(span.clone()).await;
        if done {
            self.metrics.processed(started.elapsed());
        }
        done
    }

    async fn process_message(&self, message: &OwnedMessage, span: &Span) -> bool {
        let clean = tracing::info_span!("clean_data", error.type = Empty);
        let instrument = match clean.in_scope(|| clean_data(message.payload())) {
            Ok(instrument) => instrument,
            Err(error) => {
                mark_failed(&clean, error.kind(), &error);
                return self.reject(message, span, error.kind(), error.to_string()).await;
            }
        };
        drop(clean);
        messaging::record_symbol(span, message, &instrument.snapshot.symbol);

        let calculate = tracing::info_span!(
            "calculate_bsm",
            option.type = instrument.snapshot.option_type.as_str(),
            bsm.fair_value = Empty,
            bsm.implied_volatility = Empty,
            bsm.iv_method = Empty,
            error.type = Empty,
        );
        let analytics = match calculate.in_scope(|| analyse(&instrument.snapshot)) {
            Ok(analytics) => {
                calculate.record("bsm.fair_value", analytics.fair_value);
                calculate.record("bsm.implied_volatility", analytics.implied_volatility);
                calculate.record("bsm.iv_method", analytics.iv_method.as_str());
                analytics
            }
            Err(error) => {
                mark_failed(&calculate, "no_implied_volatility", &error);
                return self.reject(message, span, "no_implied_volatility", error.to_string()).await;
            }
        };
        drop(calculate);

        let record = EnrichedRecord { instrument, analytics, processed_at_ms: unix_ms() };
        let payload = encode(&record);
        let symbol = record.instrument.snapshot.symbol.as_str();
        let topic = self.config.output_topic.as_str();
        let send = messaging::producer_span("send_enriched", topic, Some(symbol));
        let out = Outgoing { topic, key: Some(symbol), payload: &payload, headers: OwnedHeaders::new() };
        messaging::deliver(self.producer, &send, out, self.stop, self.metrics).await.is_ok()
    }

    /// Dead-letters `message` and marks `span` (`process_message`) as failed.
    async fn reject(&self, message: &OwnedMessage, span: &Span, kind: &str, reason: String) -> bool {
        mark_failed(span, kind, &reason);
        self.metrics.error(kind);
        tracing::warn!(topic = message.topic(), partition = message.partition(), offset = message.offset(), %reason, "record dead-lettered");
        let why = DeadLetter { service: SERVICE, kind, reason };
        let topic = self.config.dead_letter_topic.as_str();
        messaging::dead_letter(self.producer, topic, message, why, self.stop, self.metrics).await.is_ok()
    }
}

/// The `clean_data` step: decodes the payload and validates the snapshot.
fn clean_data(payload: Option<&[u8]>) -> Result<InstrumentMessage, RecordError> {
    let message: InstrumentMessage = decode(payload)?;
    message.snapshot.validate()?;
    Ok(message)
}

/// Status ERROR, `error.type` and an exception event on `span`.
pub(crate) fn mark_failed(span: &Span, kind: &str, error: &(impl std::fmt::Display + ?Sized)) {
    span.record("error.type", kind);
    spindle_sdk::record_error(span, error);
}
