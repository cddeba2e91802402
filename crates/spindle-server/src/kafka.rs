//! Roles and the Kafka ingest buffer (docs/OPERATIONS.md, "Roles"; docs/adr/019).
//!
//! A collector's [`crate::ingest::Ingest`] hands each accepted batch to a [`KafkaSink`] and
//! answers its client only once the brokers hold it (`acks=all`); an ingester's [`consume`]
//! reads the batches back, appends them to their tenant's store and commits a message's
//! offset only after that append returned: at-least-once, duplicates dropped at read time.
//!
//! One message per batch: key = tenant name (a tenant's batches keep their order within a
//! partition), value = OTLP `ExportTraceServiceRequest` protobuf, headers `format`
//! ([`FORMAT`]), `tenant`, `protocol` and `spans`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use spindle_model::Span;
use tokio::sync::watch;

use crate::ingest::IngestError;
use crate::security::Principal;
use crate::telemetry::{ProtocolLabels, Telemetry};
use crate::tenancy::{Access, Caller, Tenants};

/// The `format` header of every message; an ingester refuses a format it does not know.
pub const FORMAT: &str = "otlp-proto/1";

/// How long a produce may wait for the brokers' acknowledgement before the client is
/// answered unavailable. Below the OTLP exporters' default 10 s timeout, so they see the
/// answer and retry rather than give up on their own.
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(5);

/// Which parts of Spindle this instance runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Receivers, store, query API and admin in one process: Spindle without Kafka.
    All,
    /// Receivers writing to Kafka, and admin; no store.
    Collector,
    /// Kafka to the store, the query API over that store, and admin; no receivers.
    Ingester,
    /// The query API, UI and admin over ClickHouse (`storage = clickhouse`); no receivers,
    /// no Kafka.
    Query,
}

impl Target {
    /// Whether the receivers run.
    pub fn receives(self) -> bool {
        matches!(self, Target::All | Target::Collector)
    }

    /// Whether this instance holds stores (and so serves queries).
    pub fn stores(self) -> bool {
        matches!(self, Target::All | Target::Ingester | Target::Query)
    }
}

/// Where the Kafka ingest buffer is.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub brokers: String,
    pub topic: String,
    pub group: String,
}

/// The role and Kafka settings from their raw values (`target`, `kafka_*`); `shared_store`
/// is whether the store is ClickHouse, which a query instance needs.
pub fn settings(
    shared_store: bool,
    target: Option<&str>,
    brokers: Option<&str>,
    topic: Option<&str>,
    group: Option<&str>,
) -> anyhow::Result<(Target, Option<KafkaSettings>)> {
    let target = match target.unwrap_or("all") {
        "all" => Target::All,
        "collector" => Target::Collector,
        "ingester" => Target::Ingester,
        "query" if shared_store => Target::Query,
        "query" => anyhow::bail!(
            "target query needs storage = clickhouse: a query instance reads a store shared with the \
             ingesters, and the embedded store belongs to the one process that writes it; set storage and \
             clickhouse_url, or run --target ingester, which serves the query API over the store it writes"
        ),
        other => anyhow::bail!("invalid target {other:?}: expected all, collector, ingester or query"),
    };
    let brokers = brokers.map(str::trim).filter(|b| !b.is_empty());
    let kafka = match (target, brokers) {
        (Target::All | Target::Query, _) => None,
        (_, None) => anyhow::bail!("target {target:?} needs kafka_brokers (host:port, comma-separated)"),
        (_, Some(brokers)) => {
            let topic = topic.unwrap_or("spindle-spans").trim().to_string();
            let group = group.unwrap_or("spindle-ingester").trim().to_string();
            anyhow::ensure!(!topic.is_empty(), "kafka_topic must not be empty");
            anyhow::ensure!(!group.is_empty(), "kafka_group must not be empty");
            Some(KafkaSettings { brokers: brokers.to_string(), topic, group })
        }
    };
    Ok((target, kafka))
}

/// Encodes a batch as a message value.
pub fn encode(spans: &[Span]) -> Vec<u8> {
    ExportTraceServiceRequest { resource_spans: spindle_codec::otlp::spans_to_resource_spans(spans) }.encode_to_vec()
}

/// A collector's producer.
pub struct KafkaSink {
    producer: std::sync::RwLock<FutureProducer>,
    /// When the producer was last replaced.
    renewed: std::sync::Mutex<std::time::Instant>,
    settings: KafkaSettings,
}

impl KafkaSink {
    pub fn new(settings: &KafkaSettings) -> anyhow::Result<Self> {
        Ok(KafkaSink {
            producer: std::sync::RwLock::new(producer(settings)?),
            renewed: std::sync::Mutex::new(std::time::Instant::now()),
            settings: settings.clone(),
        })
    }

    fn producer(&self) -> FutureProducer {
        self.producer.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// After a failed produce, the producer is replaced (at most once per
    /// [`PRODUCE_TIMEOUT`], or at once when it failed fatally): an idempotent producer in a
    /// fatal state refuses every later batch, and one whose broker came back without its
    /// state (a restarted in-memory broker, in the tests) kept timing out while a new one
    /// produced at once. Sends in flight keep the old one until they are answered.
    fn renew(&self, failed: &FutureProducer) {
        let fatal = failed.client().fatal_error();
        let mut renewed = self.renewed.lock().unwrap_or_else(|e| e.into_inner());
        if fatal.is_none() && renewed.elapsed() < PRODUCE_TIMEOUT {
            return;
        }
        let mut current = self.producer.write().unwrap_or_else(|e| e.into_inner());
        if !std::ptr::eq(current.client().native_ptr(), failed.client().native_ptr()) {
            return;
        }
        match producer(&self.settings) {
            Ok(p) => {
                tracing::warn!(fatal = ?fatal, "Kafka produce failed: replacing the producer");
                *current = p;
                *renewed = std::time::Instant::now();
            }
            Err(e) => tracing::error!(error = %e, "creating a new Kafka producer failed"),
        }
    }

    /// Produces one batch; `Ok` once every in-sync replica has it.
    pub async fn send(&self, tenant: &str, protocol: &str, spans: usize, value: Vec<u8>) -> Result<(), IngestError> {
        let producer = self.producer();
        let result = send(&producer, &self.settings.topic, tenant, protocol, spans, value).await;
        if matches!(result, Err(IngestError::Store(_))) {
            self.renew(&producer);
        }
        result
    }
}

fn producer(settings: &KafkaSettings) -> anyhow::Result<FutureProducer> {
    ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .set("client.id", "spindle-collector")
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", PRODUCE_TIMEOUT.as_millis().to_string())
        // The bound on batches waiting for the brokers: beyond it a batch is refused
        // with backpressure at once (`QueueFull`), never buffered.
        .set("queue.buffering.max.messages", "10000")
        .set("queue.buffering.max.kbytes", "262144")
        .set("message.max.bytes", "67108864")
        .create()
        .context("creating the Kafka producer")
}

async fn send(
    producer: &FutureProducer,
    topic: &str,
    tenant: &str,
    protocol: &str,
    spans: usize,
    value: Vec<u8>,
) -> Result<(), IngestError> {
    let count = spans.to_string();
    let headers = OwnedHeaders::new()
        .insert(Header { key: "format", value: Some(FORMAT) })
        .insert(Header { key: "tenant", value: Some(tenant) })
        .insert(Header { key: "protocol", value: Some(protocol) })
        .insert(Header { key: "spans", value: Some(&count) });
    let record = FutureRecord::to(topic).key(tenant).payload(&value).headers(headers);
    let delivery = match producer.send_result(record) {
        Ok(delivery) => delivery,
        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
            return Err(IngestError::Overloaded);
        }
        Err((e, _)) => return Err(IngestError::Store(format!("Kafka produce failed: {e}"))),
    };
    match delivery.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => {
            tracing::warn!(error = %e, topic, "Kafka produce failed");
            Err(IngestError::Store(format!("Kafka produce failed: {e}")))
        }
        Err(_) => Err(IngestError::Store("Kafka producer shut down".to_string())),
    }
}

/// A message's header `key` as text.
fn header<'a>(message: &'a OwnedMessage, key: &str) -> Option<&'a str> {
    let headers = message.headers()?;
    headers.iter().find(|h| h.key == key).and_then(|h| h.value).and_then(|v| std::str::from_utf8(v).ok())
}

/// An ingester's loop: consumes the topic until `stop` flips, appending each batch to its
/// tenant's store and committing its offset after the append returned. A store that fails
/// is retried with backoff, holding the offset; an undecodable message is logged and
/// skipped (it can never succeed); a message of an unknown format stops the ingester, so
/// an older ingester never drops a newer collector's data.
pub async fn consume(
    settings: KafkaSettings,
    tenants: Arc<Tenants>,
    telemetry: Arc<Telemetry>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let consumer = {
        let settings = settings.clone();
        tokio::task::spawn_blocking(move || assigned_consumer(&settings)).await.context("Kafka consumer task")??
    };
    let labels = ProtocolLabels { protocol: "kafka".to_string() };
    loop {
        let message = tokio::select! {
            _ = stop.wait_for(|s| *s) => return Ok(()),
            m = consumer.recv() => m,
        };
        let message = match message {
            Ok(m) => m.detach(),
            Err(e) => {
                tracing::warn!(error = %e, "Kafka consume failed, retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        match header(&message, "format") {
            Some(FORMAT) => {}
            other => anyhow::bail!(
                "Kafka message at {}/{}/{} has format {other:?}, not {FORMAT:?}: upgrade this ingester",
                message.topic(),
                message.partition(),
                message.offset()
            ),
        }
        let tenant = header(&message, "tenant")
            .map(str::to_string)
            .or_else(|| message.key().map(|k| String::from_utf8_lossy(k).into_owned()));
        let mut backoff = Duration::from_millis(100);
        loop {
            match store(&tenants, &telemetry, tenant.clone(), &message).await {
                Ok(spans) => {
                    telemetry.server.spans_received.get_or_create(&labels).inc_by(spans);
                    telemetry.server.spans_accepted.get_or_create(&labels).inc_by(spans);
                    break;
                }
                Err(Failure::Skip(reason)) => {
                    telemetry.server.requests_failed.get_or_create(&labels).inc();
                    tracing::error!(
                        topic = message.topic(),
                        partition = message.partition(),
                        offset = message.offset(),
                        "Kafka message skipped: {reason}"
                    );
                    break;
                }
                Err(Failure::Retry(reason)) => {
                    telemetry.server.requests_failed.get_or_create(&labels).inc();
                    tracing::warn!(retry_in = ?backoff, "storing a Kafka batch failed, offset held: {reason}");
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => return Ok(()),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(message.topic(), message.partition(), Offset::Offset(message.offset() + 1))
            .context("Kafka offset")?;
        // Async: a lost commit only means the batch is stored again after a restart, and
        // reads drop the duplicates.
        if let Err(e) = consumer.commit(&offsets, CommitMode::Async) {
            tracing::warn!(error = %e, "Kafka offset commit failed");
        }
    }
}

/// A consumer of every partition of the topic, each from the group's committed offset (its
/// beginning when none is committed).
///
/// Partitions are assigned here rather than through the group protocol: on the tansu broker
/// a consumer restarted after `kill -9` rejoined a group whose dead member stayed its
/// leader, and got no partition for good. Offsets are still the group's, committed and
/// fetched under `kafka_group`. One ingester per topic, therefore, in this slice.
fn assigned_consumer(settings: &KafkaSettings) -> anyhow::Result<StreamConsumer> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .set("group.id", &settings.group)
        .set("client.id", "spindle-ingester")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.message.max.bytes", "67108864")
        .create()
        .context("creating the Kafka consumer")?;
    let topic = &settings.topic;
    let timeout = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .with_context(|| format!("reading the metadata of Kafka topic {topic}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    anyhow::ensure!(!partitions.is_empty(), "Kafka topic {topic} does not exist (or has no partitions): create it");
    let mut wanted = TopicPartitionList::new();
    for p in &partitions {
        wanted.add_partition(topic, *p);
    }
    let committed = consumer
        .committed_offsets(wanted, timeout)
        .with_context(|| format!("reading the committed offsets of group {}", settings.group))?;
    let mut assignment = TopicPartitionList::new();
    for e in committed.elements() {
        let offset = match e.offset() {
            Offset::Offset(n) => Offset::Offset(n),
            _ => Offset::Beginning,
        };
        assignment.add_partition_offset(topic, e.partition(), offset).context("Kafka assignment")?;
    }
    consumer.assign(&assignment).context("assigning the Kafka partitions")?;
    tracing::info!(topic = %topic, group = %settings.group, partitions = partitions.len(), "ingester consuming");
    Ok(consumer)
}

enum Failure {
    Skip(String),
    Retry(String),
}

/// Appends one message's batch to its tenant's store, deriving the tenant's span metrics;
/// the number of spans stored.
async fn store(
    tenants: &Tenants,
    telemetry: &Arc<Telemetry>,
    tenant: Option<String>,
    message: &OwnedMessage,
) -> Result<u64, Failure> {
    // The collector checked the caller's right to write this tenant; here the tenant's
    // name alone decides.
    let caller = Caller { principal: Principal::anonymous(), org_id: tenant };
    let tenant = tenants.resolve(&caller, Access::Write).map_err(|e| match e {
        crate::tenancy::TenantError::Store { .. } => Failure::Retry(e.to_string()),
        _ => Failure::Skip(e.to_string()),
    })?;
    let payload = message.payload().unwrap_or_default().to_vec();
    let telemetry = Arc::clone(telemetry);
    tokio::task::spawn_blocking(move || {
        let decoded = spindle_codec::otlp::decode_request(&payload).map_err(|e| Failure::Skip(e.to_string()))?;
        let n = decoded.spans.len() as u64;
        if n == 0 {
            return Ok(0);
        }
        let prepared = tenant.metrics.prepare(&decoded.spans);
        tenant.store.append(decoded.spans).map_err(|e| Failure::Retry(e.to_string()))?;
        tenant.metrics.record(prepared, &telemetry.limits);
        Ok(n)
    })
    .await
    .map_err(|e| Failure::Retry(format!("store task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_the_default_and_needs_no_kafka() {
        let (target, kafka) = settings(false, None, None, None, None).unwrap();
        assert_eq!(target, Target::All);
        assert!(kafka.is_none());
        assert!(target.receives() && target.stores());
    }

    #[test]
    fn collector_and_ingester_need_brokers_and_take_the_defaults() {
        for (name, target) in [("collector", Target::Collector), ("ingester", Target::Ingester)] {
            let e = settings(false, Some(name), None, None, None).unwrap_err().to_string();
            assert!(e.contains("kafka_brokers"), "{e}");
            let (t, kafka) = settings(false, Some(name), Some("k:9092"), None, None).unwrap();
            let kafka = kafka.unwrap();
            assert_eq!(t, target);
            assert_eq!((kafka.brokers.as_str(), kafka.topic.as_str()), ("k:9092", "spindle-spans"));
            assert_eq!(kafka.group, "spindle-ingester");
        }
        assert!(!Target::Collector.stores() && !Target::Ingester.receives());
    }

    #[test]
    fn query_needs_clickhouse_and_no_kafka_and_unknown_roles_are_named() {
        let e = settings(false, Some("query"), Some("k:9092"), None, None).unwrap_err().to_string();
        assert!(e.contains("shared") && e.contains("clickhouse"), "{e}");
        let (t, kafka) = settings(true, Some("query"), None, None, None).unwrap();
        assert_eq!(t, Target::Query);
        assert!(kafka.is_none() && t.stores() && !t.receives());
        let e = settings(false, Some("frontend"), None, None, None).unwrap_err().to_string();
        assert!(e.contains("\"frontend\""), "{e}");
    }

    #[test]
    fn a_batch_survives_the_message_encoding() {
        let spans = spindle_workload::Workload::new(7).batch(3, 1_700_000_000_000_000_000, 1_000_000_000);
        let mut decoded = spindle_codec::otlp::decode_request(&encode(&spans)).unwrap();
        assert_eq!(decoded.rejected, 0);
        // Grouped by resource and scope on the wire: the same spans, in another order.
        let mut spans = spans;
        spans.sort_by_key(|s| (s.trace_id, s.span_id));
        decoded.spans.sort_by_key(|s| (s.trace_id, s.span_id));
        assert_eq!(decoded.spans, spans);
    }
}
