//! Faults, against real peers started here: malformed and invalid records go to the
//! dead-letter topic with an error span while the pipeline goes on, and a PostgreSQL outage
//! is retried with backoff and loses nothing.
//!
//! The outage is a TCP proxy between storage-service and PostgreSQL that the test stops
//! (closing the listener and every open connection, as a partition or a server restart
//! would) and starts again on the same port.
//!
//! Needs `tansu` and PostgreSQL (see `end_to_end.rs`); fails without them.

mod support;

use std::time::Duration;

use spindle_pipeline::market::{SimulatedMarket, SimulatorSettings};
use spindle_pipeline::record::{encode, InstrumentMessage};
use support::{Peers, Redis, Tansu, TcpProxy, TestDatabase, TracedPeers, Tracing, TOPICS};

const WAIT: Duration = Duration::from_secs(120);

/// A message that is valid JSON with every field, but a negative strike.
fn invalid_instrument() -> Vec<u8> {
    let mut market = SimulatedMarket::new(SimulatorSettings::default());
    let mut snapshot = market.next_snapshot("AAPL").expect("snapshot");
    snapshot.strike = -5.0;
    encode(&InstrumentMessage {
        contract: snapshot.contract_id(),
        snapshot,
        source: "test".into(),
        sequence: 0,
        ingested_at_ms: 0,
        reference: None,
    })
}

#[test]
fn bad_records_go_to_the_dead_letter_topic_with_an_error_span_and_the_pipeline_goes_on() {
    let stack = TracedPeers::start();
    let (tansu, db, peers, api) = (&stack.tansu, &stack.db, stack.peers(), stack.api());
    let _storage = peers.storage(&[]);
    let processor = peers.processor(&[]);

    // Each bad record arrives in a trace of its own, as any traced producer would send it.
    let bad: [(&[u8], &str, &str); 3] = [
        (b"{not json", "malformed_record", "11111111111111111111111111111111"),
        (br#"{"symbol":"AAPL","strike":100}"#, "malformed_record", "22222222222222222222222222222222"),
        (&invalid_instrument(), "invalid_record", "33333333333333333333333333333333"),
    ];
    let parent_span = "00f067aa0ba902b7";
    let n: u64 = 10;
    let count = n.to_string();
    let mut ingestion = peers.ingestion(&["--count", &count, "--rate", "20"]);
    for (payload, _, trace_id) in &bad {
        let traceparent = format!("00-{trace_id}-{parent_span}-01");
        support::produce_raw(&tansu.bootstrap, "market-data", Some("AAPL"), payload, &[("traceparent", &traceparent)]);
    }
    assert!(ingestion.wait_exit(WAIT).success());

    // The good records all arrive: the bad ones did not stop anything.
    support::wait_until(&format!("{n} rows"), WAIT, || (db.count() >= n).then_some(()));
    assert_eq!(db.count(), n);

    // Every bad record is on the dead-letter topic, unchanged, with why and where from.
    let dead = support::consume(&tansu.bootstrap, "dead-letter", bad.len(), WAIT);
    assert_eq!(dead.len(), bad.len(), "nothing else is dead-lettered");
    for (payload, kind, trace_id) in &bad {
        let letter = dead
            .iter()
            .find(|m| spindle_sdk::rdkafka::Message::payload(*m) == Some(*payload))
            .unwrap_or_else(|| panic!("{} is on the dead-letter topic", String::from_utf8_lossy(payload)));
        let headers = support::headers_of(letter);
        assert_eq!(headers.get("dlq.error.type").map(String::as_str), Some(*kind), "{headers:?}");
        assert_eq!(headers.get("dlq.service").map(String::as_str), Some("processor-service"));
        assert_eq!(headers.get("dlq.source.topic").map(String::as_str), Some("market-data"));
        assert!(headers.get("dlq.error").is_some_and(|e| !e.is_empty()), "{headers:?}");
        let traceparent = headers.get("traceparent").expect("the dead letter carries its trace");
        assert!(traceparent.contains(trace_id), "{traceparent} continues trace {trace_id}");

        // ...and its trace shows where it failed.
        let spans = api.wait_for_trace(trace_id, 3, WAIT);
        let find = |name: &str| spans.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("{name} in {spans:#?}"));
        let process = find("process_message");
        assert_eq!(process.service, "processor-service");
        assert_eq!(process.parent.as_deref(), Some(parent_span), "continued from the producer's context");
        assert!(process.is_error(), "{process:?}");
        assert_eq!(process.tag("error.type"), Some(*kind));
        let clean = find("clean_data");
        assert!(clean.is_error(), "{clean:?}");
        assert_eq!(clean.parent.as_ref(), Some(&process.span_id));
        let letter_span = find("dead_letter");
        assert_eq!(letter_span.tag("span.kind"), Some("producer"));
        assert_eq!(letter_span.tag("messaging.destination.name"), Some("dead-letter"));
        assert_eq!(letter_span.parent.as_ref(), Some(&process.span_id));
        assert!(spans.iter().all(|s| s.name != "calculate_bsm" && s.name != "send_enriched"), "{spans:#?}");
    }
    assert_eq!(processor.metric(r#"pipeline_errors_total{service="processor-service",kind="malformed_record"}"#), 2.0);
    assert_eq!(processor.metric(r#"pipeline_errors_total{service="processor-service",kind="invalid_record"}"#), 1.0);
    assert_eq!(
        processor.metric(r#"pipeline_messages_out_total{service="processor-service",destination="dead-letter"}"#),
        3.0
    );
}

#[test]
fn a_postgresql_outage_is_retried_with_backoff_and_loses_nothing() {
    let tansu = Tansu::start(&TOPICS);
    let db = TestDatabase::create();
    let mut proxy = TcpProxy::new(db.server());
    let through_proxy = db.url_through(&format!("127.0.0.1:{}", proxy.port));
    let redis = Redis::start();
    let peers =
        Peers { brokers: &tansu.bootstrap, database_url: &through_proxy, redis_url: &redis.url, tracing: Tracing::Off };
    let storage = peers.storage(&["--max-retry-backoff-ms", "400"]);
    let _processor = peers.processor(&[]);
    let n: u64 = 60;
    let count = n.to_string();
    let mut ingestion = peers.ingestion(&["--count", &count, "--rate", "15"]);

    support::wait_until("the first rows", WAIT, || (db.count() >= 5).then_some(()));
    proxy.stop();
    let (code, body) = support::wait_until("storage to report the outage", WAIT, || {
        storage.healthz().filter(|(code, _)| *code == 503)
    });
    assert_eq!(code, 503);
    assert!(body.contains("postgresql unreachable"), "{body}");
    support::wait_until("retries with backoff", WAIT, || {
        (storage.metric("pipeline_db_retries_total{") >= 3.0).then_some(())
    });
    let during = db.count();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(db.count(), during, "nothing reaches PostgreSQL while it is cut off");
    assert!(during < n, "the outage happened mid-run ({during} of {n} rows already stored)");

    proxy.start();
    assert!(ingestion.wait_exit(WAIT).success());
    support::wait_until(&format!("all {n} rows after the outage"), WAIT, || (db.count() >= n).then_some(()));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(db.count(), n, "nothing lost, nothing doubled");
    support::wait_until("storage healthy again", WAIT, || storage.healthz().filter(|(code, _)| *code == 200));
    let log = storage.log_text();
    assert!(log.contains("postgresql unavailable, retrying"), "retries are logged");
    assert!(log.contains("postgresql reachable again"), "recovery is logged");
}
