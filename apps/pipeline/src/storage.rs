//! `storage-service`: consumes `enriched-data` and writes each record to PostgreSQL.
//!
//! Spans per message, continuing the trace from the record headers:
//! `store_data` (CONSUMER, child of `send_enriched`, `symbol`) → `prepare_records`,
//! `db_write` (CLIENT, `db.system=postgresql`, `db.operation.name=INSERT`, the table, the
//! database and the server — what makes Spindle draw the `postgresql` node).
//!
//! Messages are taken in batches and written with one statement per batch; every record's
//! trace gets its own `db_write` span for that statement (`db.operation.batch.size` says how
//! many rows it carried), so each trace ends in the write that stored it. The insert is
//! idempotent on the natural key, so a redelivered message is harmless.
//!
//! When PostgreSQL is unreachable the batch is retried with exponential backoff — the
//! consumer waits, nothing is committed, `/healthz` reports the outage — until the write
//! succeeds; offsets are committed only after it (and after the batch's spans are exported,
//! so that a crash leaves no trace incomplete). A row PostgreSQL refuses outright is
//! isolated by writing the batch row by row and dead-lettered with an error span. On
//! shutdown the current batch is finished (unless the database is still down, in which case
//! it is left uncommitted for redelivery), offsets are committed and the producer flushed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use spindle_sdk::opentelemetry::trace::TraceContextExt;
use spindle_sdk::opentelemetry::KeyValue;
use spindle_sdk::rdkafka::message::{Message, OwnedMessage};
use spindle_sdk::rdkafka::producer::FutureProducer;
use spindle_sdk::SpanExt;
use tokio_util::sync::CancellationToken;
use tracing::field::Empty;
use tracing::Span;

use crate::db::{Database, DbError, Row, TABLE};
use crate::error::Error;
use crate::flush::SpanFlush;
use crate::messaging::{self, Backoff, BatchHandler, Batching, DeadLetter};
use crate::metrics::{Health, Metrics};
use crate::processor::mark_failed;
use crate::record::{decode, EnrichedRecord, RecordError};

/// The service name spans and metrics carry.
pub const SERVICE: &str = "storage-service";

/// Settings of `storage-service` (flags and environment variables).
#[derive(Debug, Clone, clap::Args)]
pub struct StorageConfig {
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Topic of enriched records.
    #[arg(long, env = "PIPELINE_ENRICHED_TOPIC", default_value = "enriched-data")]
    pub input_topic: String,
    /// Topic of records that cannot be stored.
    #[arg(long, env = "PIPELINE_DEAD_LETTER_TOPIC", default_value = "dead-letter")]
    pub dead_letter_topic: String,
    /// Consumer group.
    #[arg(long, env = "STORAGE_GROUP_ID", default_value = SERVICE)]
    pub group_id: String,
    /// Static member id in the group (`group.instance.id`): a restart with the same id gets
    /// its partitions back at once, also after a crash. Default `<group-id>@<host name>`;
    /// every running instance of a group needs its own; empty for a dynamic member.
    #[arg(long, env = "STORAGE_GROUP_INSTANCE_ID")]
    pub group_instance_id: Option<String>,
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub database_url: String,
    /// Connections in the pool at most.
    #[arg(long, default_value_t = 4)]
    pub pool_size: usize,
    /// Rows per insert at most.
    #[arg(long, default_value_t = 200)]
    pub batch_size: usize,
    /// How long a batch waits for more messages after the first, in milliseconds.
    #[arg(long, default_value_t = 50)]
    pub batch_linger_ms: u64,
    /// Longest wait between two attempts while PostgreSQL is unreachable, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub max_retry_backoff_ms: u64,
    /// Address of /metrics and /healthz.
    #[arg(long, env = "STORAGE_METRICS_ADDR", default_value = "0.0.0.0:9103")]
    pub metrics_addr: SocketAddr,
}

/// Creates the schema, then consumes and stores until `stop` is cancelled.
pub async fn run(
    config: &StorageConfig,
    stop: CancellationToken,
    metrics: Arc<Metrics>,
    spans: SpanFlush,
) -> Result<(), Error> {
    let db = Database::new(&config.database_url, config.pool_size)?;
    metrics.watch_db_pool(db.pool());
    let writer = Writer {
        db: &db,
        stop: &stop,
        metrics: &metrics,
        max_backoff: Duration::from_millis(config.max_retry_backoff_ms.max(1)),
    };
    match writer.retrying("create the schema", || db.ensure_schema()).await {
        Some(Ok(())) => {}
        Some(Err(reason)) => return Err(Error::Schema(reason)),
        None => {
            tracing::warn!("stopped before the schema could be created");
            return Ok(());
        }
    }
    tracing::info!(table = TABLE, database = %db.namespace, "schema ready");

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
    let store = Store { writer: &writer, producer: &producer, config };
    tracing::info!(input = %config.input_topic, group = %config.group_id, instance = instance.as_deref().unwrap_or(""), "storage started");
    messaging::consume(consumer, &producer, batching, &spans, &store, &stop, &metrics).await;
    tracing::info!("storage stopped");
    Ok(())
}

struct Store<'a> {
    writer: &'a Writer<'a>,
    producer: &'a FutureProducer,
    config: &'a StorageConfig,
}

impl BatchHandler for Store<'_> {
    fn handle<'a>(&'a self, batch: &'a [OwnedMessage]) -> impl std::future::Future<Output = Vec<bool>> + 'a {
        store_batch(batch, self.writer, self.producer, self.config)
    }
}

/// One message on its way into the table.
struct Pending<'a> {
    message: &'a OwnedMessage,
    /// `store_data`.
    span: Span,
    started: Instant,
    row: Row,
}

/// Stores a batch; `processed[i]` says whether `batch[i]` is stored or dead-lettered.
async fn store_batch(
    batch: &[OwnedMessage],
    writer: &Writer<'_>,
    producer: &FutureProducer,
    config: &StorageConfig,
) -> Vec<bool> {
    let mut processed = vec![false; batch.len()];
    let mut pending = Vec::with_capacity(batch.len());
    let mut index = Vec::with_capacity(batch.len());
    for (i, message) in batch.iter().enumerate() {
        let started = Instant::now();
        let span = messaging::consumer_span("store_data", message);
        match span.in_scope(|| prepare_records(message, &span)) {
            Ok(row) => {
                pending.push(Pending { message, span, started, row });
                index.push(i);
            }
            Err(error) => {
                let why = (error.kind(), error.to_string());
                processed[i] = reject(message, &span, why, producer, config, writer).await;
            }
        }
    }

    let outcomes = writer.write(&pending).await;
    for ((p, outcome), i) in pending.iter().zip(outcomes).zip(index) {
        processed[i] = match outcome {
            Written::Stored => {
                writer.metrics.processed(p.started.elapsed());
                true
            }
            Written::Refused(reason) => {
                reject(p.message, &p.span, ("rejected_by_database", reason), producer, config, writer).await
            }
            Written::Stopped => false,
        };
    }
    processed
}

/// The `prepare_records` step: decodes the enriched record into a row, tagged with the
/// trace it travels in.
fn prepare_records(message: &OwnedMessage, store_span: &Span) -> Result<Row, RecordError> {
    let span = tracing::info_span!("prepare_records", error.type = Empty);
    let _entered = span.enter();
    let record: EnrichedRecord = decode(message.payload()).inspect_err(|e| mark_failed(&span, e.kind(), e))?;
    record.instrument.snapshot.validate().inspect_err(|e| mark_failed(&span, e.kind(), e))?;
    messaging::record_symbol(store_span, message, &record.instrument.snapshot.symbol);
    let context = store_span.context();
    let span_context = context.span().span_context().clone();
    let trace_id = span_context.is_valid().then(|| span_context.trace_id().to_string());
    Ok(Row { record, trace_id })
}

/// Dead-letters `message` and marks its `store_data` span as failed.
async fn reject(
    message: &OwnedMessage,
    span: &Span,
    (kind, reason): (&str, String),
    producer: &FutureProducer,
    config: &StorageConfig,
    writer: &Writer<'_>,
) -> bool {
    use tracing::Instrument;
    mark_failed(span, kind, &reason);
    writer.metrics.error(kind);
    tracing::warn!(topic = message.topic(), partition = message.partition(), offset = message.offset(), %reason, "record dead-lettered");
    let why = DeadLetter { service: SERVICE, kind, reason };
    messaging::dead_letter(producer, &config.dead_letter_topic, message, why, writer.stop, writer.metrics)
        .instrument(span.clone())
        .await
        .is_ok()
}

/// The outcome of writing one row.
enum Written {
    Stored,
    /// PostgreSQL refuses this row; the reason.
    Refused(String),
    /// Shutdown came while the database was unreachable.
    Stopped,
}

struct Writer<'a> {
    db: &'a Database,
    stop: &'a CancellationToken,
    metrics: &'a Metrics,
    max_backoff: Duration,
}

impl Writer<'_> {
    /// The `db_write` step for every pending row: one CLIENT span per row (child of its
    /// `store_data`), one insert for all; a permanent failure is narrowed down row by row.
    async fn write(&self, pending: &[Pending<'_>]) -> Vec<Written> {
        if pending.is_empty() {
            return Vec::new();
        }
        let spans: Vec<Span> = pending.iter().map(|p| self.db_write_span(&p.span, pending.len())).collect();
        let rows: Vec<Row> = pending.iter().map(|p| p.row.clone()).collect();
        let outcomes = match self.insert(&rows, &spans).await {
            Ok(()) => rows.iter().map(|_| Written::Stored).collect(),
            Err(None) => rows.iter().map(|_| Written::Stopped).collect(),
            Err(Some(reason)) if rows.len() == 1 => vec![Written::Refused(reason)],
            Err(Some(reason)) => {
                tracing::warn!(%reason, rows = rows.len(), "batch refused, writing row by row to isolate the bad rows");
                let mut outcomes = Vec::with_capacity(rows.len());
                for (row, span) in rows.iter().zip(&spans) {
                    outcomes.push(self.insert_one(row, span).await);
                }
                outcomes
            }
        };
        for (span, outcome) in spans.iter().zip(&outcomes) {
            if let Written::Refused(reason) = outcome {
                mark_failed(span, "rejected_by_database", reason);
            }
        }
        let stored = outcomes.iter().filter(|o| matches!(o, Written::Stored)).count() as u64;
        self.metrics.messages_out("postgresql", stored);
        outcomes
    }

    async fn insert_one(&self, row: &Row, span: &Span) -> Written {
        match self.insert(std::slice::from_ref(row), std::slice::from_ref(span)).await {
            Ok(()) => Written::Stored,
            Err(None) => Written::Stopped,
            Err(Some(reason)) => Written::Refused(reason),
        }
    }

    /// Inserts `rows`, retrying transient failures. `Err(None)`: stopped while retrying;
    /// `Err(Some(reason))`: refused (an event on each span says so).
    async fn insert(&self, rows: &[Row], spans: &[Span]) -> Result<(), Option<String>> {
        let timed = || async {
            let started = Instant::now();
            let result = self.db.insert(rows).await;
            self.metrics.db_write(started.elapsed());
            result
        };
        match self.retrying("write", timed).await {
            None => Err(None),
            Some(Ok(_)) => Ok(()),
            Some(Err(reason)) => {
                for span in spans {
                    span.add_event("write refused", vec![KeyValue::new("exception.message", reason.clone())]);
                }
                Err(Some(reason))
            }
        }
    }

    /// Runs `attempt` until it succeeds or fails permanently (`Some`), retrying transient
    /// failures with exponential backoff while reporting the outage on `/healthz`; `None`
    /// when `stop` is cancelled first.
    async fn retrying<T, F, Fut>(&self, what: &str, mut attempt: F) -> Option<Result<T, String>>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, DbError>>,
    {
        let mut backoff = Backoff::new(Duration::from_millis(100), self.max_backoff);
        let mut failures = 0u32;
        loop {
            match attempt().await {
                Ok(value) => {
                    if failures > 0 {
                        tracing::info!(what, failures, "postgresql reachable again");
                        self.metrics.set_health(Health::Ok);
                    }
                    return Some(Ok(value));
                }
                Err(DbError::Permanent(reason)) => {
                    self.metrics.error("db_refused");
                    return Some(Err(reason));
                }
                Err(DbError::Transient(reason)) => {
                    failures += 1;
                    self.metrics.error("db_unavailable");
                    self.metrics.db_retry();
                    self.metrics.set_health(Health::Degraded(format!("postgresql unreachable: {reason}")));
                    let wait = backoff.next_delay();
                    tracing::warn!(what, failures, %reason, retry_in_ms = wait.as_millis() as u64, "postgresql unavailable, retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.stop.cancelled() => return None,
                    }
                }
            }
        }
    }

    fn db_write_span(&self, parent: &Span, batch_size: usize) -> Span {
        tracing::info_span!(
            parent: parent,
            "db_write",
            otel.kind = "client",
            otel.status_code = Empty,
            db.system = "postgresql",
            db.operation.name = "INSERT",
            db.collection.name = TABLE,
            db.namespace = %self.db.namespace,
            db.query.summary = %format_args!("INSERT {TABLE}"),
            db.operation.batch.size = batch_size,
            server.address = %self.db.server_address,
            server.port = self.db.server_port,
            error.type = Empty,
        )
    }
}
