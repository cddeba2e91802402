//! Kafka plumbing the three services share: clients, the seed-named PRODUCER and CONSUMER
//! spans, delivery with retry, the dead-letter topic, batched consumption with commits after
//! processing and span export (at-least-once, whole traces), and consumer lag.
//!
//! Spans: the seed names its Kafka spans after the work (`send_to_kafka`, `process_message`,
//! `send_enriched`, `store_data`), so the services take spindle-sdk's messaging spans
//! (`messaging.system=kafka`, destination, partition, offset, key — what makes Spindle draw
//! the `kafka` node) and rename them before they start. Context travels in the record
//! headers as W3C `traceparent`, written and read by spindle-sdk.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use spindle_sdk::kafka;
use spindle_sdk::rdkafka::config::ClientConfig;
use spindle_sdk::rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use spindle_sdk::rdkafka::error::KafkaError;
use spindle_sdk::rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use spindle_sdk::rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use spindle_sdk::rdkafka::util::Timeout;
use spindle_sdk::rdkafka::{Offset, TopicPartitionList};
use spindle_sdk::SpanExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span};

use crate::error::Error;
use crate::flush::SpanFlush;
use crate::metrics::{Health, Metrics};

/// How long a record may wait in the producer's queue, and in flight, before delivery is
/// retried from scratch.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait between two delivery attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A producer tuned for the pipeline: acknowledged by all replicas, short linger.
pub fn producer(brokers: &str, client_id: &str) -> Result<FutureProducer, Error> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("client.id", client_id)
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", MESSAGE_TIMEOUT.as_millis().to_string())
        .create()
        .map_err(Error::kafka("create a producer"))
}

/// A consumer in group `group` subscribed to `topic`, committing only what the service
/// commits (no auto-commit) and starting from the earliest offset when the group has none.
///
/// `instance` makes it a static member of the group (`group.instance.id`, KIP-345): a
/// restarted process with the same instance id takes its predecessor's place (and
/// partitions) at once, even when the predecessor died without leaving (`kill -9`, OOM,
/// power loss). Without it the restarted process joins as a new member, and the tansu broker
/// can then settle the group with no partition assigned to anyone, for good (see the
/// README's "Crashes"); a real Kafka waits out the dead member's session timeout instead.
/// Static members do not leave the group on a clean stop either, so their partitions wait
/// up to the session timeout for them to come back; the timeout is kept short for that.
pub fn consumer(
    brokers: &str,
    group: &str,
    instance: Option<&str>,
    client_id: &str,
    topic: &str,
) -> Result<StreamConsumer, Error> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("client.id", client_id)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000");
    if let Some(instance) = instance.filter(|i| !i.is_empty()) {
        config.set("group.instance.id", instance);
    }
    let consumer: StreamConsumer = config.create().map_err(Error::kafka("create a consumer"))?;
    consumer.subscribe(&[topic]).map_err(Error::kafka("subscribe"))?;
    Ok(consumer)
}

/// The default static-membership id of a service's consumer: `<group>@<host name>`, unique
/// as long as one instance of a group runs per host (each container has its own host name);
/// instances sharing a host need `--group-instance-id` each. `None` when the host name is
/// unknown: the consumer is then a dynamic member.
pub fn default_instance_id(group: &str) -> Option<String> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())?;
    Some(format!("{group}@{host}"))
}

/// A PRODUCER span named `name`, child of the current span, with the messaging attributes.
pub fn producer_span(name: &'static str, topic: &str, key: Option<&str>) -> Span {
    let span = kafka::producer_span(topic, key.map(str::as_bytes));
    // Renaming works until the span starts, which `Span::context` or entering it does.
    span.record("otel.name", name);
    span
}

/// A CONSUMER span named `name` for `message`, child of the producer whose context the
/// headers carry, with the messaging attributes. The key (the symbol) is recorded as
/// `symbol`; [`record_symbol`] corrects it once the payload is read.
pub fn consumer_span(name: &'static str, message: &OwnedMessage) -> Span {
    let span = kafka::consumer_span(message);
    span.record("otel.name", name);
    if let Some(key) = key_of(message) {
        span.set_attribute("symbol", key.to_owned());
    }
    span
}

/// Records the payload's `symbol` on the CONSUMER `span` of `message`, unless the key
/// already said the same.
pub fn record_symbol(span: &Span, message: &OwnedMessage, symbol: &str) {
    if key_of(message) != Some(symbol) {
        span.set_attribute("symbol", symbol.to_owned());
    }
}

fn key_of(message: &OwnedMessage) -> Option<&str> {
    message.key().and_then(|k| std::str::from_utf8(k).ok())
}

/// Record headers carrying `span`'s trace context, for a record sent after the span ended.
pub fn context_headers(span: &Span) -> OwnedHeaders {
    kafka::inject_into(&span.context(), OwnedHeaders::new())
}

/// Records a delivery on the PRODUCER `span`: the partition and offset it landed at.
pub fn record_delivered(span: &Span, partition: i32, offset: i64) {
    span.record("messaging.destination.partition.id", partition.to_string());
    span.record("messaging.kafka.offset", offset);
}

/// Marks the PRODUCER `span` as failed: `error.type` and an exception event.
pub fn record_failure(span: &Span, error: &KafkaError) {
    span.record("error.type", kafka_error_type(error));
    spindle_sdk::record_error(span, error);
}

fn kafka_error_type(error: &KafkaError) -> String {
    error.rdkafka_error_code().map_or_else(|| "kafka_error".to_owned(), |code| format!("{code:?}"))
}

/// What to produce: the PRODUCER span it is sent under supplies the trace context.
pub struct Outgoing<'a> {
    pub topic: &'a str,
    pub key: Option<&'a str>,
    pub payload: &'a [u8],
    /// Application headers; the trace context is added to them.
    pub headers: OwnedHeaders,
}

/// Produces `out` under the PRODUCER `span`, retrying with backoff until the broker
/// acknowledges it. Gives up only when `stop` is cancelled, returning the last error: the
/// caller then does not commit the input, which is redelivered after a restart.
pub async fn deliver(
    producer: &FutureProducer,
    span: &Span,
    out: Outgoing<'_>,
    stop: &CancellationToken,
    metrics: &Metrics,
) -> Result<(i32, i64), KafkaError> {
    let headers = kafka::inject_into(&span.context(), out.headers);
    let mut backoff = Backoff::new(Duration::from_millis(100), MAX_BACKOFF);
    loop {
        let mut record = FutureRecord::to(out.topic).payload(out.payload).headers(headers.clone());
        if let Some(key) = out.key {
            record = record.key(key);
        }
        let result = producer.send(record, Timeout::After(MESSAGE_TIMEOUT)).instrument(span.clone()).await;
        match result {
            Ok(delivery) => {
                record_delivered(span, delivery.partition, delivery.offset);
                metrics.message_out(out.topic);
                return Ok((delivery.partition, delivery.offset));
            }
            Err((error, _)) => {
                metrics.error("kafka_delivery");
                span.add_event(
                    "delivery failed",
                    vec![spindle_sdk::opentelemetry::KeyValue::new("exception.message", error.to_string())],
                );
                if stop.is_cancelled() {
                    record_failure(span, &error);
                    return Err(error);
                }
                let wait = backoff.next_delay();
                tracing::warn!(topic = out.topic, %error, retry_in_ms = wait.as_millis() as u64, "delivery failed, retrying");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => {}
                }
            }
        }
    }
}

/// Exponential backoff: `initial`, doubling, capped at `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self { next: initial, max }
    }

    pub fn next_delay(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(self.max);
        now
    }
}

/// Why a message went to the dead-letter topic.
pub struct DeadLetter<'a> {
    pub service: &'a str,
    /// Short kind (`invalid_record`), recorded as `error.type`.
    pub kind: &'a str,
    pub reason: String,
}

/// Sends `message` unchanged (payload, key, headers) to `topic` with headers saying why and
/// where from: `dlq.error`, `dlq.error.type`, `dlq.service`, `dlq.source.topic`,
/// `dlq.source.partition`, `dlq.source.offset`. Runs in a PRODUCER span `dead_letter`, a
/// child of the current span, so the dead letter stays in the message's trace.
pub async fn dead_letter(
    producer: &FutureProducer,
    topic: &str,
    message: &OwnedMessage,
    why: DeadLetter<'_>,
    stop: &CancellationToken,
    metrics: &Metrics,
) -> Result<(), KafkaError> {
    let key = key_of(message);
    let span = producer_span("dead_letter", topic, key);
    let mut headers = OwnedHeaders::new();
    if let Some(original) = message.headers() {
        for h in original.iter() {
            headers = headers.insert(Header { key: h.key, value: h.value });
        }
    }
    let (partition, offset) = (message.partition().to_string(), message.offset().to_string());
    for (k, v) in [
        ("dlq.error", why.reason.as_str()),
        ("dlq.error.type", why.kind),
        ("dlq.service", why.service),
        ("dlq.source.topic", message.topic()),
        ("dlq.source.partition", partition.as_str()),
        ("dlq.source.offset", offset.as_str()),
    ] {
        headers = headers.insert(Header { key: k, value: Some(v) });
    }
    let out = Outgoing { topic, key, payload: message.payload().unwrap_or_default(), headers };
    deliver(producer, &span, out, stop, metrics).await.map(|_| ())
}

/// Waits for the next message, then takes more for up to `linger` or until `max` are in
/// hand. Returns an empty batch when `stop` is cancelled while waiting for the first one.
/// Read errors are counted, logged and followed by a short pause.
pub async fn next_batch(
    consumer: &StreamConsumer,
    max: usize,
    linger: Duration,
    stop: &CancellationToken,
    metrics: &Metrics,
) -> Vec<OwnedMessage> {
    let mut batch = Vec::new();
    let first = tokio::select! {
        received = consumer.recv() => received,
        _ = stop.cancelled() => return batch,
    };
    match first {
        Ok(message) => batch.push(message.detach()),
        Err(error) => {
            metrics.error("kafka_consume");
            tracing::warn!(%error, "kafka read failed");
            tokio::time::sleep(Duration::from_millis(200)).await;
            return batch;
        }
    }
    let deadline = tokio::time::Instant::now() + linger;
    while batch.len() < max {
        tokio::select! {
            received = consumer.recv() => match received {
                Ok(message) => batch.push(message.detach()),
                Err(error) => {
                    metrics.error("kafka_consume");
                    tracing::warn!(%error, "kafka read failed");
                    break;
                }
            },
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    for message in &batch {
        metrics.message_in(message.topic());
    }
    batch
}

/// Handles one batch of consumed messages; `processed[i]` says whether the result of
/// `batch[i]` (forwarded, stored or dead-lettered) is delivered. `false` is only for work cut
/// short by shutdown: that message and the rest of its partition are redelivered later.
pub trait BatchHandler {
    fn handle<'a>(&'a self, batch: &'a [OwnedMessage]) -> impl std::future::Future<Output = Vec<bool>> + 'a;
}

/// How a consumer takes its batches.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Messages per batch at most.
    pub size: usize,
    /// How long a batch waits for more messages after the first.
    pub linger: Duration,
}

/// The consume loop both consumers share: batches from `consumer` to `handler`, offsets
/// committed after each batch (asynchronously) for what was processed, until `stop` is
/// cancelled; then the current batch is finished, the offsets committed synchronously and
/// `producer` flushed. Consumer lag is measured meanwhile.
///
/// Before each commit the batch's spans are exported (`spans`, once per batch): a process
/// killed before the commit has its messages redelivered and traced anew, one killed after
/// it has its spans out already, so every trace stays whole. The flush and commit of a batch
/// run while the next batch is taken and processed (one at a time, in order), so the wait
/// for the export does not hold the consumer up.
pub async fn consume(
    consumer: Arc<StreamConsumer>,
    producer: &FutureProducer,
    batching: Batching,
    spans: &SpanFlush,
    handler: &impl BatchHandler,
    stop: &CancellationToken,
    metrics: &Arc<Metrics>,
) {
    let progress = Progress::default();
    let lag = spawn_lag_monitor(Arc::clone(&consumer), progress.clone(), Arc::clone(metrics), Duration::from_secs(2));
    let mut committing: Option<JoinHandle<()>> = None;
    while !stop.is_cancelled() {
        let batch = next_batch(&consumer, batching.size.max(1), batching.linger, stop, metrics).await;
        if batch.is_empty() {
            continue;
        }
        let processed = handler.handle(&batch).await;
        let done = next_offsets(committable(&batch, &processed));
        // Commits stay in order: the previous batch's is finished before this one's starts.
        if let Some(previous) = committing.take() {
            let _ = previous.await;
        }
        let (spans, progress, consumer, metrics) =
            (spans.clone(), progress.clone(), Arc::clone(&consumer), Arc::clone(metrics));
        committing = Some(tokio::spawn(async move {
            spans.flush().await;
            progress.advance_to(done);
            if let Err(error) = progress.commit(&consumer, CommitMode::Async) {
                metrics.error("kafka_commit");
                tracing::warn!(%error, "offset commit failed, messages will be redelivered");
            }
        }));
        if processed.iter().any(|done| !done) {
            break; // only when stopping: the rest is redelivered after a restart
        }
    }
    if let Some(previous) = committing.take() {
        let _ = previous.await;
    }
    metrics.set_health(Health::Stopping);
    // Every offset in `progress` had its spans flushed before it was added.
    if let Err(error) = progress.commit(&consumer, CommitMode::Sync) {
        tracing::warn!(%error, "final offset commit failed, the last messages will be redelivered");
    }
    if let Err(error) = tokio::task::block_in_place(|| producer.flush(Duration::from_secs(10))) {
        tracing::warn!(%error, "producer flush incomplete");
    }
    lag.abort();
}

/// The next offset to commit per partition: what has been fully processed. Shared with the
/// lag monitor.
#[derive(Debug, Clone, Default)]
pub struct Progress(Arc<Mutex<BTreeMap<(String, i32), i64>>>);

impl Progress {
    /// Marks the messages of `done` as processed (each message's offset + 1 becomes the
    /// partition's next offset, never moving backwards).
    pub fn advance<'a>(&self, done: impl IntoIterator<Item = &'a OwnedMessage>) {
        self.advance_to(next_offsets(done));
    }

    /// Moves each partition's next offset forward to the one given (never backwards).
    pub fn advance_to(&self, offsets: Vec<((String, i32), i64)>) {
        if let Ok(mut map) = self.0.lock() {
            for (partition, offset) in offsets {
                let next = map.entry(partition).or_insert(0);
                *next = (*next).max(offset);
            }
        }
    }

    fn snapshot(&self) -> BTreeMap<(String, i32), i64> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Commits every partition's next offset. `Async` returns at once (a lost commit only
    /// means redelivery, which is at-least-once); `Sync` waits for the broker and is for
    /// shutdown.
    /// Only partitions still assigned are committed: after a rebalance another member owns
    /// the others, and an old offset from here would rewind it.
    pub fn commit(&self, consumer: &StreamConsumer, mode: CommitMode) -> Result<(), KafkaError> {
        let assigned = consumer.assignment()?;
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), next) in self.snapshot() {
            if assigned.find_partition(&topic, partition).is_some() {
                tpl.add_partition_offset(&topic, partition, Offset::Offset(next))?;
            }
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        match mode {
            CommitMode::Sync => tokio::task::block_in_place(|| consumer.commit(&tpl, CommitMode::Sync)),
            CommitMode::Async => consumer.commit(&tpl, CommitMode::Async),
        }
    }
}

/// The next offset per partition after the messages of `done` (each one's offset + 1, the
/// highest per partition).
pub fn next_offsets<'a>(done: impl IntoIterator<Item = &'a OwnedMessage>) -> Vec<((String, i32), i64)> {
    let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for m in done {
        let offset = next.entry((m.topic().to_owned(), m.partition())).or_insert(0);
        *offset = (*offset).max(m.offset() + 1);
    }
    next.into_iter().collect()
}

/// The messages of `batch` that may be committed: per partition, the processed prefix up to
/// the first one that was not (`processed[i]` tells for `batch[i]`).
pub fn committable<'a>(batch: &'a [OwnedMessage], processed: &[bool]) -> Vec<&'a OwnedMessage> {
    let mut blocked: HashMap<(&str, i32), ()> = HashMap::new();
    let mut out = Vec::new();
    for (message, ok) in batch.iter().zip(processed) {
        let partition = (message.topic(), message.partition());
        if blocked.contains_key(&partition) {
            continue;
        }
        if *ok {
            out.push(message);
        } else {
            blocked.insert(partition, ());
        }
    }
    out
}

/// Every `interval`, sets `pipeline_consumer_lag{group,topic,partition}` for the partitions
/// assigned to `consumer` (and drops the series of partitions assigned no longer): high
/// watermark minus the next offset to commit (or the fetch position before anything was
/// processed, or the committed offset before the first fetch).
pub fn spawn_lag_monitor(
    consumer: Arc<StreamConsumer>,
    progress: Progress,
    metrics: Arc<Metrics>,
    interval: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (consumer, progress, metrics) = (Arc::clone(&consumer), progress.clone(), Arc::clone(&metrics));
            let measured = tokio::task::spawn_blocking(move || measure_lag(&consumer, &progress, &metrics)).await;
            if let Ok(Err(error)) = measured {
                tracing::debug!(%error, "consumer lag not measured");
            }
        }
    })
}

fn measure_lag(consumer: &StreamConsumer, progress: &Progress, metrics: &Metrics) -> Result<(), KafkaError> {
    let assignment = consumer.assignment()?;
    let positions = consumer.position()?;
    let done = progress.snapshot();
    let offset = |list: &TopicPartitionList, topic: &str, partition: i32| {
        list.find_partition(topic, partition).and_then(|p| p.offset().to_raw()).filter(|o| *o >= 0)
    };
    // Before the first fetch a partition has no position: its lag counts from the group's
    // committed offset, or from the start (auto.offset.reset=earliest), so that a newly
    // assigned partition is reported at once.
    let committed = if assignment.elements().iter().any(|e| offset(&positions, e.topic(), e.partition()).is_none()) {
        Some(consumer.committed_offsets(assignment.clone(), Duration::from_secs(2))?)
    } else {
        None
    };
    let mut lags = Vec::new();
    for element in assignment.elements() {
        let (topic, partition) = (element.topic(), element.partition());
        let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(2))?;
        let next = done
            .get(&(topic.to_owned(), partition))
            .copied()
            .or_else(|| offset(&positions, topic, partition))
            .or_else(|| committed.as_ref().and_then(|c| offset(c, topic, partition)))
            .unwrap_or(low);
        lags.push((topic.to_owned(), partition, (high - next).max(0)));
    }
    let lags: Vec<_> = lags.iter().map(|(t, p, l)| (t.as_str(), *p, *l)).collect();
    metrics.set_lags(&lags);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use spindle_sdk::rdkafka::Timestamp;

    fn message(partition: i32, offset: i64) -> OwnedMessage {
        OwnedMessage::new(None, None, "t".into(), Timestamp::NotAvailable, partition, offset, None)
    }

    #[test]
    fn only_the_processed_prefix_of_each_partition_is_committable() {
        let batch = [message(0, 10), message(1, 5), message(0, 11), message(1, 6), message(0, 12)];
        let got: Vec<_> = committable(&batch, &[true, false, true, true, false])
            .into_iter()
            .map(|m| (m.partition(), m.offset()))
            .collect();
        assert_eq!(got, vec![(0, 10), (0, 11)], "partition 1 is blocked at offset 5, partition 0 at 12");
    }

    #[test]
    fn next_offsets_are_one_past_the_highest_offset_per_partition() {
        let done = [message(0, 10), message(1, 5), message(0, 12), message(0, 11)];
        assert_eq!(next_offsets(&done), vec![(("t".to_owned(), 0), 13), (("t".to_owned(), 1), 6)]);
    }

    #[test]
    fn progress_never_moves_backwards() {
        let progress = Progress::default();
        progress.advance(&[message(0, 10), message(0, 12)]);
        progress.advance(&[message(0, 11)]);
        assert_eq!(progress.snapshot().get(&("t".to_owned(), 0)), Some(&13));
    }

    #[test]
    fn the_default_instance_id_is_the_group_at_the_host() {
        let id = default_instance_id("storage-service").expect("this machine has a host name");
        let host = id.strip_prefix("storage-service@").expect("group@host");
        assert!(!host.is_empty() && !host.contains(char::is_whitespace), "{id}");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let delays: Vec<_> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 350, 350]);
    }
}
