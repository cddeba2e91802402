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
    /// `collector,query`: a collector that also serves the query API, UI and admin over
    /// ClickHouse — the stateless front instance of a scaled-out deployment.
    CollectorQuery,
}

impl Target {
    /// Whether the receivers run.
    pub fn receives(self) -> bool {
        matches!(self, Target::All | Target::Collector | Target::CollectorQuery)
    }

    /// Whether this instance holds stores (and so serves queries).
    pub fn stores(self) -> bool {
        matches!(self, Target::All | Target::Ingester | Target::Query | Target::CollectorQuery)
    }
}

/// Where the Kafka ingest buffer is, and how collectors write it and ingesters read it.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaSettings {
    pub brokers: String,
    pub topic: String,
    pub group: String,
    /// The partitions an ingester reads (`kafka_partitions`), ascending; `None`: every
    /// partition of the topic.
    pub partitions: Option<Vec<i32>>,
    /// librdkafka's `compression.codec` of the collector's producer (`kafka_compression`).
    pub compression: &'static str,
    /// The producer's `linger.ms` (`kafka_linger`).
    pub linger: Duration,
    /// The producer's `batch.size` (`kafka_batch_bytes`).
    pub batch_bytes: usize,
    /// An ingester appends once it gathered this many spans (`ingester_batch_spans`)...
    pub batch_spans: usize,
    /// ...or this long after the first message of the batch (`ingester_batch_wait`).
    pub batch_wait: Duration,
}

/// The codecs `kafka_compression` takes: those this build of librdkafka has (zstd would need
/// librdkafka built with libzstd), each checked against the tests' broker.
pub const COMPRESSIONS: [&str; 4] = ["none", "gzip", "snappy", "lz4"];

/// The role and Kafka settings from the merged settings (`target`, `kafka_*`,
/// `ingester_batch_*`); `shared_store` is whether the store is ClickHouse, which a query
/// instance needs.
pub fn settings(
    shared_store: bool,
    args: &crate::config::ServeArgs,
) -> anyhow::Result<(Target, Option<KafkaSettings>)> {
    let target = match args.target.as_deref().unwrap_or("all").replace(' ', "").as_str() {
        "all" => Target::All,
        "collector" => Target::Collector,
        "ingester" => Target::Ingester,
        "query" if shared_store => Target::Query,
        "collector,query" | "query,collector" if shared_store => Target::CollectorQuery,
        "collector,query" | "query,collector" => anyhow::bail!(
            "target collector,query needs storage = clickhouse: its queries read the store the ingesters write"
        ),
        "query" => anyhow::bail!(
            "target query needs storage = clickhouse: a query instance reads a store shared with the \
             ingesters, and the embedded store belongs to the one process that writes it; set storage and \
             clickhouse_url, or run --target ingester, which serves the query API over the store it writes"
        ),
        other => anyhow::bail!("invalid target {other:?}: expected all, collector, ingester, query or collector,query"),
    };
    let brokers = args.kafka_brokers.as_deref().map(str::trim).filter(|b| !b.is_empty());
    let brokers = match (target, brokers) {
        (Target::All | Target::Query, _) => return Ok((target, None)),
        // Without Kafka a collector writes ClickHouse itself, in joined inserts.
        (Target::Collector, None) if shared_store => return Ok((target, None)),
        (_, None) => anyhow::bail!(
            "target {target:?} needs kafka_brokers (host:port, comma-separated){}",
            if target == Target::Collector { ", or storage = clickhouse to write there directly" } else { "" }
        ),
        (_, Some(brokers)) => brokers.to_string(),
    };
    let topic = args.kafka_topic.as_deref().unwrap_or("spindle-spans").trim().to_string();
    let group = args.kafka_group.as_deref().unwrap_or("spindle-ingester").trim().to_string();
    anyhow::ensure!(!topic.is_empty(), "kafka_topic must not be empty");
    anyhow::ensure!(!group.is_empty(), "kafka_group must not be empty");
    let partitions = args.kafka_partitions.as_deref().map(parse_partitions).transpose()?;
    let compression = match args.kafka_compression.as_deref().map(str::trim) {
        None => "lz4",
        Some(c) => COMPRESSIONS
            .into_iter()
            .find(|k| *k == c)
            .ok_or_else(|| anyhow::anyhow!("invalid kafka_compression {c:?}: expected {}", COMPRESSIONS.join(", ")))?,
    };
    let linger = match args.kafka_linger.as_deref() {
        None => Duration::from_millis(5),
        Some(text) => crate::api::params::parse_go_duration(text.trim())
            .map(Duration::from_nanos)
            // librdkafka's bound on linger.ms.
            .filter(|d| *d <= Duration::from_secs(900))
            .ok_or_else(|| {
                anyhow::anyhow!("invalid kafka_linger {text:?}: expected a duration such as 5ms, 0 to 15m")
            })?,
    };
    let batch_bytes = args.kafka_batch_bytes.unwrap_or(1_000_000);
    anyhow::ensure!(
        (1..=i32::MAX as usize).contains(&batch_bytes),
        "kafka_batch_bytes must be between 1 and {}",
        i32::MAX
    );
    let batch_spans = args.ingester_batch_spans.unwrap_or(10_000);
    anyhow::ensure!(batch_spans > 0, "ingester_batch_spans must be positive");
    let batch_wait = match args.ingester_batch_wait.as_deref() {
        None => Duration::from_millis(200),
        Some(text) => {
            crate::api::params::parse_go_duration(text.trim()).map(Duration::from_nanos).ok_or_else(|| {
                anyhow::anyhow!("invalid ingester_batch_wait {text:?}: expected a duration such as 200ms")
            })?
        }
    };
    let kafka =
        KafkaSettings { brokers, topic, group, partitions, compression, linger, batch_bytes, batch_spans, batch_wait };
    Ok((target, Some(kafka)))
}

/// `kafka_partitions`: comma-separated partition numbers and inclusive ranges (`0-3,6`).
fn parse_partitions(text: &str) -> anyhow::Result<Vec<i32>> {
    let invalid =
        || anyhow::anyhow!("invalid kafka_partitions {text:?}: expected partition numbers and ranges such as 0-3,6");
    let number = |s: &str| s.trim().parse::<i32>().ok().filter(|n| *n >= 0);
    let mut partitions = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((from, to)) => {
                let (from, to) = (number(from).ok_or_else(invalid)?, number(to).ok_or_else(invalid)?);
                anyhow::ensure!(from <= to, "invalid kafka_partitions {text:?}: range {part} runs backwards");
                anyhow::ensure!(to - from < 100_000, "invalid kafka_partitions {text:?}: range {part} is too long");
                partitions.extend(from..=to);
            }
            None => partitions.push(number(part).ok_or_else(invalid)?),
        }
    }
    anyhow::ensure!(!partitions.is_empty(), "kafka_partitions names no partition; leave it unset to read them all");
    partitions.sort_unstable();
    partitions.dedup();
    Ok(partitions)
}

/// A batch encoded as a message.
pub struct Encoded {
    /// The first span's trace id: spreads batches over the partitions, so over the
    /// ingesters, whatever their tenant (docs/adr/019).
    key: Option<[u8; 16]>,
    value: Vec<u8>,
}

/// Encodes a batch as a message.
pub fn encode(spans: &[Span]) -> Encoded {
    let value = ExportTraceServiceRequest { resource_spans: spindle_codec::otlp::spans_to_resource_spans(spans) }
        .encode_to_vec();
    Encoded { key: spans.first().map(|s| s.trace_id.to_bytes()), value }
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
    pub async fn send(&self, tenant: &str, protocol: &str, spans: usize, value: Encoded) -> Result<(), IngestError> {
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
        .set("linger.ms", format!("{}", settings.linger.as_secs_f64() * 1000.0))
        .set("batch.size", settings.batch_bytes.to_string())
        .set("compression.codec", settings.compression)
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
    message: Encoded,
) -> Result<(), IngestError> {
    let count = spans.to_string();
    let headers = OwnedHeaders::new()
        .insert(Header { key: "format", value: Some(FORMAT) })
        .insert(Header { key: "tenant", value: Some(tenant) })
        .insert(Header { key: "protocol", value: Some(protocol) })
        .insert(Header { key: "spans", value: Some(&count) });
    let mut record = FutureRecord::to(topic).payload(&message.value).headers(headers);
    if let Some(key) = &message.key {
        record = record.key(&key[..]);
    }
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

/// A message gathered into an ingester's batch.
struct Pending {
    tenant: Option<String>,
    partition: i32,
    offset: i64,
    payload: Vec<u8>,
}

/// An ingester's loop: consumes its partitions until `stop` flips, gathering consecutive
/// messages into batches of up to `batch_spans` spans or `batch_wait`, appending each
/// tenant's spans of a batch in one append and committing the batch's offsets after every
/// append returned. A store that fails is retried with backoff, holding the offsets; an
/// undecodable message is logged and skipped (it can never succeed); a message of an
/// unknown format stops the ingester (after the batch before it is stored), so an older
/// ingester never drops a newer collector's data.
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
    loop {
        let mut batch: Vec<Pending> = Vec::new();
        let mut spans = 0usize;
        let mut unknown_format = None;
        let mut deadline = None;
        while spans < settings.batch_spans && unknown_format.is_none() {
            let wait = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let message = tokio::select! {
                // A batch gathered but not stored is not committed: read again after a restart.
                _ = stop.wait_for(|s| *s) => return Ok(()),
                _ = wait => break,
                m = consumer.recv() => m,
            };
            let message = match message {
                Ok(m) => m.detach(),
                Err(e) => {
                    tracing::warn!(error = %e, "Kafka consume failed, retrying");
                    if !batch.is_empty() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            if header(&message, "format") != Some(FORMAT) {
                unknown_format = Some(anyhow::anyhow!(
                    "Kafka message at {}/{}/{} has format {:?}, not {FORMAT:?}: upgrade this ingester",
                    message.topic(),
                    message.partition(),
                    message.offset(),
                    header(&message, "format"),
                ));
                break;
            }
            // The collector's count; a message without one counts as one span.
            spans += header(&message, "spans").and_then(|n| n.parse::<usize>().ok()).unwrap_or(1).max(1);
            deadline.get_or_insert_with(|| tokio::time::Instant::now() + settings.batch_wait);
            batch.push(Pending {
                tenant: header(&message, "tenant").map(str::to_string),
                partition: message.partition(),
                offset: message.offset(),
                payload: message.payload().unwrap_or_default().to_vec(),
            });
        }
        if !batch.is_empty() {
            let mut offsets = TopicPartitionList::new();
            let mut next: std::collections::BTreeMap<i32, i64> = std::collections::BTreeMap::new();
            for p in &batch {
                let n = next.entry(p.partition).or_default();
                *n = (*n).max(p.offset + 1);
            }
            for (partition, offset) in next {
                offsets
                    .add_partition_offset(&settings.topic, partition, Offset::Offset(offset))
                    .context("Kafka offset")?;
            }
            if !store_batch(&settings.topic, &tenants, &telemetry, batch, &mut stop).await {
                return Ok(());
            }
            // Async: a lost commit only means the batch is stored again after a restart, and
            // reads drop the duplicates.
            if let Err(e) = consumer.commit(&offsets, CommitMode::Async) {
                tracing::warn!(error = %e, "Kafka offset commit failed");
            }
        }
        if let Some(e) = unknown_format {
            return Err(e);
        }
    }
}

/// Appends a gathered batch, one append per tenant, retrying a failing store with backoff
/// until it succeeds; `false` when `stop` flipped first (nothing may then be committed).
async fn store_batch(
    topic: &str,
    tenants: &Tenants,
    telemetry: &Arc<Telemetry>,
    batch: Vec<Pending>,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let labels = ProtocolLabels { protocol: "kafka".to_string() };
    // Each tenant's messages in their order.
    let mut by_tenant: Vec<(Option<String>, Vec<Pending>)> = Vec::new();
    for p in batch {
        match by_tenant.iter_mut().find(|(t, _)| *t == p.tenant) {
            Some((_, messages)) => messages.push(p),
            None => by_tenant.push((p.tenant.clone(), vec![p])),
        }
    }
    for (tenant, messages) in by_tenant {
        let messages = Arc::new(messages);
        let mut backoff = Duration::from_millis(100);
        let mut first = true;
        loop {
            let result = store(tenants, telemetry, tenant.clone(), Arc::clone(&messages), first).await;
            first = false;
            match result {
                Ok(stored) => {
                    telemetry.server.spans_received.get_or_create(&labels).inc_by(stored.spans);
                    telemetry.server.spans_accepted.get_or_create(&labels).inc_by(stored.spans);
                    for (partition, offset, reason) in stored.skipped {
                        telemetry.server.requests_failed.get_or_create(&labels).inc();
                        tracing::error!(topic, partition, offset, "Kafka message skipped: {reason}");
                    }
                    break;
                }
                Err(Failure::Skip(reason)) => {
                    for m in messages.iter() {
                        telemetry.server.requests_failed.get_or_create(&labels).inc();
                        tracing::error!(
                            topic,
                            partition = m.partition,
                            offset = m.offset,
                            "Kafka message skipped: {reason}"
                        );
                    }
                    break;
                }
                Err(Failure::Retry(reason)) => {
                    telemetry.server.requests_failed.get_or_create(&labels).inc();
                    tracing::warn!(retry_in = ?backoff, "storing a Kafka batch failed, offsets held: {reason}");
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => return false,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
    true
}

/// A consumer of this ingester's partitions of the topic (`kafka_partitions`, or every
/// partition), each from the group's committed offset (its beginning when none is
/// committed).
///
/// Partitions are assigned here rather than through the group protocol: on the tansu broker
/// a consumer restarted after `kill -9` rejoined a group whose dead member stayed its
/// leader, and got no partition for good. Offsets are still the group's, committed and
/// fetched under `kafka_group`; several ingesters of a topic each take a disjoint set.
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
    let mut existing: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    existing.sort_unstable();
    anyhow::ensure!(!existing.is_empty(), "Kafka topic {topic} does not exist (or has no partitions): create it");
    let (read, missing, others) = split_partitions(&existing, settings.partitions.as_deref());
    if !missing.is_empty() {
        tracing::warn!(
            topic = %topic,
            missing = ?missing,
            "kafka_partitions names partitions the topic does not have; they are not read"
        );
    }
    anyhow::ensure!(
        !read.is_empty(),
        "kafka_partitions names none of the {} partitions of Kafka topic {topic} (0 to {})",
        existing.len(),
        existing.last().copied().unwrap_or_default()
    );
    let mut wanted = TopicPartitionList::new();
    for p in &read {
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
    tracing::info!(
        topic = %topic,
        group = %settings.group,
        partitions = ?read,
        not_read_here = ?others,
        "ingester consuming its partitions; those not read here must be in another ingester's kafka_partitions"
    );
    Ok(consumer)
}

/// Of a topic's `existing` partitions, those `wanted` (all when `None`): the ones read, the
/// wanted ones the topic lacks, and the topic's partitions left to other ingesters.
fn split_partitions(existing: &[i32], wanted: Option<&[i32]>) -> (Vec<i32>, Vec<i32>, Vec<i32>) {
    let Some(wanted) = wanted else { return (existing.to_vec(), Vec::new(), Vec::new()) };
    let read = wanted.iter().copied().filter(|p| existing.contains(p)).collect();
    let missing = wanted.iter().copied().filter(|p| !existing.contains(p)).collect();
    let others = existing.iter().copied().filter(|p| !wanted.contains(p)).collect();
    (read, missing, others)
}

enum Failure {
    Skip(String),
    Retry(String),
}

/// What one tenant's append stored: its spans, and the messages skipped as undecodable.
struct Stored {
    spans: u64,
    skipped: Vec<(i32, i64, String)>,
}

/// Appends one tenant's messages of a batch to its store in one append, deriving the
/// tenant's span metrics. `report_skipped`: whether to report undecodable messages (a
/// retry decodes them again and says nothing more).
async fn store(
    tenants: &Tenants,
    telemetry: &Arc<Telemetry>,
    tenant: Option<String>,
    messages: Arc<Vec<Pending>>,
    report_skipped: bool,
) -> Result<Stored, Failure> {
    // The collector checked the caller's right to write this tenant; here the tenant's
    // name alone decides.
    let caller = Caller { principal: Principal::anonymous(), org_id: tenant };
    let tenant = tenants.resolve(&caller, Access::Write).map_err(|e| match e {
        crate::tenancy::TenantError::Store { .. } => Failure::Retry(e.to_string()),
        _ => Failure::Skip(e.to_string()),
    })?;
    let telemetry = Arc::clone(telemetry);
    tokio::task::spawn_blocking(move || {
        let mut spans = Vec::new();
        let mut skipped = Vec::new();
        for m in messages.iter() {
            match spindle_codec::otlp::decode_request(&m.payload) {
                Ok(decoded) => spans.extend(decoded.spans),
                Err(e) if report_skipped => skipped.push((m.partition, m.offset, e.to_string())),
                Err(_) => {}
            }
        }
        let n = spans.len() as u64;
        if n > 0 {
            let prepared = tenant.metrics.prepare(&spans);
            tenant.store.append(spans).map_err(|e| Failure::Retry(e.to_string()))?;
            tenant.metrics.record(prepared, &telemetry.limits);
            telemetry.server.ingester_appends.inc();
            telemetry.server.ingester_append_spans.observe(n as f64);
        }
        Ok(Stored { spans: n, skipped })
    })
    .await
    .map_err(|e| Failure::Retry(format!("store task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServeArgs;

    fn args(target: Option<&str>, brokers: Option<&str>) -> ServeArgs {
        ServeArgs {
            target: target.map(str::to_string),
            kafka_brokers: brokers.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn all_is_the_default_and_needs_no_kafka() {
        let (target, kafka) = settings(false, &args(None, None)).unwrap();
        assert_eq!(target, Target::All);
        assert!(kafka.is_none());
        assert!(target.receives() && target.stores());
    }

    #[test]
    fn collector_and_ingester_need_brokers_and_take_the_defaults() {
        for (name, target) in [("collector", Target::Collector), ("ingester", Target::Ingester)] {
            let e = settings(false, &args(Some(name), None)).unwrap_err().to_string();
            assert!(e.contains("kafka_brokers"), "{e}");
            let (t, kafka) = settings(false, &args(Some(name), Some("k:9092"))).unwrap();
            let kafka = kafka.unwrap();
            assert_eq!(t, target);
            assert_eq!((kafka.brokers.as_str(), kafka.topic.as_str()), ("k:9092", "spindle-spans"));
            assert_eq!(kafka.group, "spindle-ingester");
            assert_eq!(kafka.partitions, None);
            assert_eq!(
                (kafka.compression, kafka.linger, kafka.batch_bytes),
                ("lz4", Duration::from_millis(5), 1_000_000)
            );
            assert_eq!((kafka.batch_spans, kafka.batch_wait), (10_000, Duration::from_millis(200)));
        }
        assert!(!Target::Collector.stores() && !Target::Ingester.receives());
    }

    #[test]
    fn query_needs_clickhouse_and_no_kafka_and_unknown_roles_are_named() {
        let e = settings(false, &args(Some("query"), Some("k:9092"))).unwrap_err().to_string();
        assert!(e.contains("shared") && e.contains("clickhouse"), "{e}");
        let (t, kafka) = settings(true, &args(Some("query"), None)).unwrap();
        assert_eq!(t, Target::Query);
        assert!(kafka.is_none() && t.stores() && !t.receives());
        let e = settings(false, &args(Some("frontend"), None)).unwrap_err().to_string();
        assert!(e.contains("\"frontend\""), "{e}");
    }

    #[test]
    fn producer_and_batching_settings_are_checked() {
        let mut a = args(Some("collector"), Some("k:9092"));
        a.kafka_compression = Some("gzip".into());
        a.kafka_linger = Some("0".into());
        a.kafka_batch_bytes = Some(65_536);
        a.ingester_batch_spans = Some(500);
        a.ingester_batch_wait = Some("1s".into());
        let kafka = settings(false, &a).unwrap().1.unwrap();
        assert_eq!((kafka.compression, kafka.linger, kafka.batch_bytes), ("gzip", Duration::ZERO, 65_536));
        assert_eq!((kafka.batch_spans, kafka.batch_wait), (500, Duration::from_secs(1)));
        for (field, value, wanted) in [
            ("compression", "zstd", "invalid kafka_compression \"zstd\": expected none, gzip, snappy, lz4"),
            ("linger", "soon", "invalid kafka_linger"),
            ("linger", "1h", "invalid kafka_linger"),
            ("batch_wait", "later", "invalid ingester_batch_wait"),
        ] {
            let mut a = args(Some("ingester"), Some("k:9092"));
            match field {
                "compression" => a.kafka_compression = Some(value.into()),
                "linger" => a.kafka_linger = Some(value.into()),
                _ => a.ingester_batch_wait = Some(value.into()),
            }
            let e = settings(false, &a).unwrap_err().to_string();
            assert!(e.contains(wanted), "{e}");
        }
        let mut a = args(Some("ingester"), Some("k:9092"));
        a.ingester_batch_spans = Some(0);
        assert!(settings(false, &a).unwrap_err().to_string().contains("ingester_batch_spans must be positive"));
        a.ingester_batch_spans = None;
        a.kafka_batch_bytes = Some(0);
        assert!(settings(false, &a).unwrap_err().to_string().contains("kafka_batch_bytes"));
    }

    #[test]
    fn partition_lists_take_numbers_and_ranges() {
        assert_eq!(parse_partitions("0-3,6").unwrap(), vec![0, 1, 2, 3, 6]);
        assert_eq!(parse_partitions(" 5, 1-2 ,2,").unwrap(), vec![1, 2, 5]);
        assert_eq!(parse_partitions("7").unwrap(), vec![7]);
        for bad in ["", ",", "a", "1-", "-1", "3-1", "1-2-3", "0-999999"] {
            let e = parse_partitions(bad).unwrap_err().to_string();
            assert!(e.contains("kafka_partitions"), "{bad:?}: {e}");
        }
        let mut a = args(Some("ingester"), Some("k:9092"));
        a.kafka_partitions = Some("2-3".into());
        assert_eq!(settings(false, &a).unwrap().1.unwrap().partitions, Some(vec![2, 3]));
    }

    #[test]
    fn an_ingester_reads_its_partitions_that_exist_and_names_the_rest() {
        let topic = [0, 1, 2, 3];
        assert_eq!(split_partitions(&topic, None), (vec![0, 1, 2, 3], vec![], vec![]));
        assert_eq!(split_partitions(&topic, Some(&[1, 3, 4, 9])), (vec![1, 3], vec![4, 9], vec![0, 2]));
        assert_eq!(split_partitions(&topic, Some(&[8])), (vec![], vec![8], vec![0, 1, 2, 3]));
    }

    #[test]
    fn a_batch_survives_the_message_encoding_keyed_by_its_first_trace() {
        let spans = spindle_workload::Workload::new(7).batch(3, 1_700_000_000_000_000_000, 1_000_000_000);
        let encoded = encode(&spans);
        assert_eq!(encoded.key, Some(spans[0].trace_id.to_bytes()));
        let mut decoded = spindle_codec::otlp::decode_request(&encoded.value).unwrap();
        assert_eq!(decoded.rejected, 0);
        // Grouped by resource and scope on the wire: the same spans, in another order.
        let mut spans = spans;
        spans.sort_by_key(|s| (s.trace_id, s.span_id));
        decoded.spans.sort_by_key(|s| (s.trace_id, s.span_id));
        assert_eq!(decoded.spans, spans);
    }
}
