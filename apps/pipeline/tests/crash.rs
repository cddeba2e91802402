//! Crashes, not graceful stops: each of the three services is killed with SIGKILL mid-stream
//! and started again with the same settings, in turn (ingestion, storage, processor), while
//! snapshots flow. Asserted:
//!
//! - each restarted service resumes its work (ingestion publishes, processor forwards,
//!   storage writes) within [`RESUME_BOUND`] of the kill; the times are printed;
//! - exactly once: the rows in PostgreSQL are exactly the snapshots on `market-data`, one row
//!   each. A killed ingestion has published some snapshots and not others (it keeps no
//!   state, and its restart starts a new run), so what counts as "every snapshot" is what
//!   the broker holds: each record there is stored once, none is lost, none is doubled, and
//!   nothing that is not there is stored;
//! - every trace is whole: each row's trace holds a complete chain of the seed's spans
//!   (root → … → `db_write`), with the right services and parentage, and nothing but the
//!   seed's spans. The services export their spans before acknowledging work (the
//!   consumers before committing, ingestion before handing a record to the producer), so a
//!   kill loses no span of acknowledged work; a message redelivered after a kill is
//!   processed again, so its trace may hold a second processing branch (at-least-once), and
//!   spans of the first attempt that died with the process leave that branch partial.
//!
//! Needs `tansu` and PostgreSQL like the other tests.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use spindle_pipeline::record::{decode, InstrumentMessage};
use spindle_sdk::rdkafka::config::ClientConfig;
use spindle_sdk::rdkafka::consumer::{BaseConsumer, Consumer};
use spindle_sdk::rdkafka::Message;
use support::{ServiceProcess, SpanView, TracedPeers};

/// How soon a restarted service must be working again. Measured here: 6–10 s, most of it the
/// broker's group protocol (tansu pauses 3 s in each of a static member's JoinGroup and
/// SyncGroup).
const RESUME_BOUND: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(180);

/// The seed's spans: (service, name, parent).
const CHAIN: [(&str, &str, Option<&str>); 10] = [
    ("ingestion-service", "fetch_instrument_data", None),
    ("ingestion-service", "enrich_context", Some("fetch_instrument_data")),
    ("ingestion-service", "send_to_kafka", Some("fetch_instrument_data")),
    ("processor-service", "process_message", Some("send_to_kafka")),
    ("processor-service", "clean_data", Some("process_message")),
    ("processor-service", "calculate_bsm", Some("process_message")),
    ("processor-service", "send_enriched", Some("process_message")),
    ("storage-service", "store_data", Some("send_enriched")),
    ("storage-service", "prepare_records", Some("store_data")),
    ("storage-service", "db_write", Some("store_data")),
];

/// SIGKILL, then waits for the process to be gone (its ports and connections closed).
fn kill9(service: &mut ServiceProcess) -> Instant {
    let at = Instant::now();
    service.signal(libc::SIGKILL);
    let status = service.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "{} was killed: {status}", service.name);
    at
}

/// Waits until `probe` of the restarted service is positive; returns the time since `since`.
fn resumed(service: &ServiceProcess, metric: &str, since: Instant) -> Duration {
    support::wait_until(&format!("{} to resume ({metric} > 0)", service.name), RESUME_BOUND, || {
        (service.metric(metric) > 0.0).then(|| since.elapsed())
    })
}

/// The natural keys (contract, observed_at ms) of every snapshot on `topic`.
fn snapshots_on(brokers: &str, topic: &str) -> (usize, BTreeSet<(String, i64)>) {
    let probe: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers).create().expect("probe");
    let metadata = probe.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
    let partitions = metadata.topics()[0].partitions().len() as i32;
    let records: i64 = (0..partitions)
        .map(|p| {
            let (low, high) = probe.fetch_watermarks(topic, p, Duration::from_secs(10)).expect("watermarks");
            high - low
        })
        .sum();
    let messages = support::consume(brokers, topic, records as usize, WAIT);
    let keys = messages
        .iter()
        .map(|m| {
            let snapshot: InstrumentMessage = decode(m.payload()).expect("a snapshot on market-data");
            (snapshot.contract, snapshot.snapshot.observed_at_ms)
        })
        .collect();
    (messages.len(), keys)
}

/// Whether `spans` hold a complete chain root → … → `db_write` with the seed's services:
/// each span of [`CHAIN`] present, and one `db_write` whose ancestors are the chain's.
fn whole(spans: &[SpanView]) -> bool {
    let by_id: BTreeMap<&str, &SpanView> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let service_of: BTreeMap<&str, &str> = CHAIN.iter().map(|(svc, name, _)| (*name, *svc)).collect();
    let parent_of: BTreeMap<&str, Option<&str>> = CHAIN.iter().map(|(_, name, parent)| (*name, *parent)).collect();
    let present = CHAIN
        .iter()
        .all(|(service, name, _)| spans.iter().any(|s| s.name == *name && s.service == *service && !s.is_error()));
    let chained = |leaf: &SpanView| {
        let mut span = leaf;
        loop {
            if service_of.get(span.name.as_str()) != Some(&span.service.as_str()) {
                return false;
            }
            match (parent_of.get(span.name.as_str()).copied().flatten(), span.parent.as_deref()) {
                (None, None) => return true,
                (Some(expected), Some(parent)) => match by_id.get(parent) {
                    Some(p) if p.name == expected => span = p,
                    _ => return false,
                },
                _ => return false,
            }
        }
    };
    // The siblings (enrich_context, clean_data, ...) hang off spans of the chain.
    let siblings = ["enrich_context", "clean_data", "calculate_bsm", "prepare_records"]
        .iter()
        .all(|name| spans.iter().filter(|s| s.name == *name).any(&chained));
    present && siblings && spans.iter().filter(|s| s.name == "db_write").any(&chained)
}

#[test]
fn each_service_killed_mid_stream_resumes_and_every_snapshot_is_stored_once_with_its_trace() {
    let stack = TracedPeers::start();
    let (db, peers, api) = (&stack.db, stack.peers(), stack.api());
    // 20 a second for 400 snapshots: a stream long enough to kill the three in turn.
    let ingestion_args = ["--count", "400", "--rate", "20"];

    let mut storage = peers.storage(&[]);
    let mut processor = peers.processor(&[]);
    let mut ingestion = peers.ingestion(&ingestion_args);
    support::wait_until("the first rows", WAIT, || (db.count() >= 20).then_some(()));

    // Ingestion: killed mid-run, started again with the same settings (a new run).
    let killed = kill9(&mut ingestion);
    let mut ingestion = peers.ingestion(&ingestion_args);
    let ingestion_took = resumed(&ingestion, "pipeline_messages_out_total{", killed);

    // Storage, while the new run flows.
    support::wait_until("the new run's first rows", WAIT, || (db.count() >= 40).then_some(()));
    let killed = kill9(&mut storage);
    let storage = peers.storage(&[]);
    let storage_took = resumed(&storage, "pipeline_messages_out_total{", killed);

    // Processor, once storage is back.
    let killed = kill9(&mut processor);
    let processor = peers.processor(&[]);
    let processor_took = resumed(&processor, "pipeline_messages_out_total{", killed);
    eprintln!(
        "resumed after SIGKILL: ingestion {ingestion_took:?}, storage {storage_took:?}, processor {processor_took:?}"
    );

    assert!(ingestion.wait_exit(WAIT).success(), "the restarted ingestion completes its run");
    let (records, on_topic) = snapshots_on(peers.brokers, "market-data");
    assert!(on_topic.len() >= 400 + 20, "both runs' snapshots are on market-data: {}", on_topic.len());
    let expected = on_topic.len() as u64;
    support::wait_until(&format!("{expected} rows"), WAIT, || (db.count() >= expected).then_some(()));
    std::thread::sleep(Duration::from_secs(2)); // redeliveries would land by now
    let rows =
        db.query("SELECT contract, (extract(epoch FROM observed_at) * 1000)::bigint, trace_id FROM option_analytics");
    let stored: BTreeSet<(String, i64)> =
        rows.iter().map(|r| (r[0].clone(), r[1].parse().expect("observed_at in ms"))).collect();
    assert_eq!(rows.len(), stored.len(), "no snapshot stored twice");
    assert_eq!(stored, on_topic, "exactly the snapshots on market-data are stored ({records} records)");

    // Traces: every one whole.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut broken: Vec<(String, Vec<SpanView>)> = Vec::new();
    for row in &rows {
        let trace_id = &row[2];
        let spans = loop {
            let spans = api.trace(trace_id);
            if whole(&spans) || Instant::now() > deadline {
                break spans;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        for span in &spans {
            // Besides the chain, ingestion's Redis commands under `enrich_context` (the
            // reference-data cache).
            let cache = span.service == "ingestion-service" && (span.name == "GET" || span.name == "SET");
            assert!(
                cache || CHAIN.iter().any(|(service, name, _)| span.name == *name && span.service == *service),
                "trace {trace_id}: only the seed's spans: {span:?}"
            );
        }
        if !whole(&spans) {
            broken.push((trace_id.clone(), spans));
        }
    }
    // Which services' spans the broken traces lack, for the log and the failure message.
    let mut lacking: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, spans) in &broken {
        for (service, name, _) in CHAIN {
            if !spans.iter().any(|s| s.name == name) {
                *lacking.entry(service).or_default() += 1;
                break;
            }
        }
    }
    eprintln!(
        "{} rows, {} traces whole, {} missing a killed process's last spans (first missing span's service: {lacking:?})",
        rows.len(),
        rows.len() - broken.len(),
        broken.len()
    );
    assert!(
        broken.is_empty(),
        "{} of {} traces are not whole: {:#?}",
        broken.len(),
        rows.len(),
        broken.iter().take(3).collect::<Vec<_>>()
    );
}
