//! The pipeline end to end against real peers: tansu, PostgreSQL and a spindle server, all
//! started here, with the three service binaries exporting to spindle over OTLP gRPC.
//!
//! N instruments go in; then, through spindle's API, every trace is the seed's expected
//! trace (names, services, kinds, parentage across both Kafka hops), `/api/dependencies` is
//! the seed's graph with N calls per edge, PostgreSQL holds exactly N rows, `symbol` finds
//! exactly the traces of that symbol, the services' metrics add up, a replay through a
//! second consumer group adds no rows, and SIGTERM stops every service cleanly.
//!
//! Needs `tansu` (`cargo install tansu --locked --features dynostore`) and PostgreSQL on
//! 127.0.0.1:5432 (or `PIPELINE_TEST_DATABASE_URL`); fails without them.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use support::{SpanView, TracedPeers};

const N: u64 = 24;
const SYMBOLS: [&str; 3] = ["AAPL", "MSFT", "7203.T"];
const WAIT: Duration = Duration::from_secs(120);

/// The seed's expected trace: (service, span, kind, parent span or `None` for the root).
const EXPECTED: [(&str, &str, &str, Option<&str>); 10] = [
    ("ingestion-service", "fetch_instrument_data", "internal", None),
    ("ingestion-service", "enrich_context", "internal", Some("fetch_instrument_data")),
    ("ingestion-service", "send_to_kafka", "producer", Some("fetch_instrument_data")),
    ("processor-service", "process_message", "consumer", Some("send_to_kafka")),
    ("processor-service", "clean_data", "internal", Some("process_message")),
    ("processor-service", "calculate_bsm", "internal", Some("process_message")),
    ("processor-service", "send_enriched", "producer", Some("process_message")),
    ("storage-service", "store_data", "consumer", Some("send_enriched")),
    ("storage-service", "prepare_records", "internal", Some("store_data")),
    ("storage-service", "db_write", "client", Some("store_data")),
];

fn by_name<'a>(spans: &'a [SpanView], name: &str) -> &'a SpanView {
    let found: Vec<_> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "exactly one {name} expected in {spans:#?}");
    found[0]
}

fn assert_seed_trace(trace_id: &str, symbol: &str, spans: &[SpanView]) {
    assert_eq!(spans.len(), EXPECTED.len(), "trace {trace_id}: {spans:#?}");
    for (service, name, kind, parent) in EXPECTED {
        let span = by_name(spans, name);
        assert_eq!(span.service, service, "{name} of trace {trace_id}");
        assert_eq!(span.tag("span.kind").unwrap_or("internal"), kind, "kind of {name}: {span:?}");
        assert!(!span.is_error(), "{name} failed: {span:?}");
        match parent {
            None => assert_eq!(span.parent, None, "{name} is the root: {span:?}"),
            Some(parent) => {
                assert_eq!(span.parent.as_ref(), Some(&by_name(spans, parent).span_id), "{name} is a child of {parent}")
            }
        }
    }
    for name in ["fetch_instrument_data", "process_message", "store_data"] {
        assert_eq!(by_name(spans, name).tag("symbol"), Some(symbol), "symbol on {name}");
    }
    // `send_to_kafka` ends (and is exported) before its record reaches the broker, so that a
    // crash never leaves a trace without its root: it has no offset.
    for (name, topic, offset) in [
        ("send_to_kafka", "market-data", false),
        ("process_message", "market-data", true),
        ("send_enriched", "enriched-data", true),
        ("store_data", "enriched-data", true),
    ] {
        let span = by_name(spans, name);
        assert_eq!(span.tag("messaging.system"), Some("kafka"), "{span:?}");
        assert_eq!(span.tag("messaging.destination.name"), Some(topic), "{span:?}");
        assert_eq!(span.tag("messaging.kafka.offset").is_some(), offset, "{span:?}");
    }
    let db_write = by_name(spans, "db_write");
    assert_eq!(db_write.tag("db.system"), Some("postgresql"));
    assert_eq!(db_write.tag("db.operation.name"), Some("INSERT"));
    assert_eq!(db_write.tag("db.collection.name"), Some("option_analytics"));
    let calculate = by_name(spans, "calculate_bsm");
    let iv: f64 =
        calculate.tag("bsm.implied_volatility").and_then(|v| v.parse().ok()).expect("implied volatility recorded");
    assert!(iv > 0.0 && iv < 5.0, "{calculate:?}");
}

#[test]
fn n_instruments_become_n_seed_traces_n_rows_and_the_seed_dependency_graph() {
    let stack = TracedPeers::start();
    let (db, peers, api) = (&stack.db, stack.peers(), stack.api());

    let mut storage = peers.storage(&[]);
    let mut processor = peers.processor(&[]);
    let count = N.to_string();
    let symbols = SYMBOLS.join(",");
    let mut ingestion = peers.ingestion(&["--count", &count, "--rate", "40", "--symbols", &symbols]);
    assert!(ingestion.wait_exit(WAIT).success(), "ingestion exits 0 after --count snapshots");

    support::wait_until(&format!("{N} rows in PostgreSQL"), WAIT, || (db.count() >= N).then_some(()));
    std::thread::sleep(Duration::from_secs(1)); // would-be extra rows arrive
    assert_eq!(db.count(), N, "exactly one row per instrument");

    // Every row's trace is the seed's trace.
    let rows = db.query("SELECT trace_id, symbol FROM option_analytics ORDER BY sequence");
    let mut traces_by_symbol: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for row in &rows {
        let (trace_id, symbol) = (&row[0], &row[1]);
        assert_eq!(trace_id.len(), 32, "row carries its trace id: {row:?}");
        let spans = api.wait_for_trace(trace_id, EXPECTED.len(), WAIT);
        assert_seed_trace(trace_id, symbol, &spans);
        traces_by_symbol.entry(symbol.clone()).or_default().insert(trace_id.clone());
    }
    assert_eq!(traces_by_symbol.len(), SYMBOLS.len(), "round-robin over the universe");

    // The dependency graph: services and the virtual kafka and postgresql nodes.
    let expected_links: BTreeMap<(String, String), u64> = [
        ("ingestion-service", "kafka"),
        ("kafka", "processor-service"),
        ("processor-service", "kafka"),
        ("kafka", "storage-service"),
        ("storage-service", "postgresql"),
    ]
    .into_iter()
    .map(|(p, c)| ((p.to_owned(), c.to_owned()), N))
    .collect();
    let links = support::wait_until("the dependency graph", WAIT, || {
        let links = api.dependencies();
        (links == expected_links).then_some(links)
    });
    assert_eq!(links, expected_links);

    // `symbol` is a searchable tag: each symbol finds exactly its own traces.
    for (symbol, expected) in &traces_by_symbol {
        for service in ["ingestion-service", "processor-service", "storage-service"] {
            let found: BTreeSet<String> = api.search_by_tag(service, "symbol", symbol).into_iter().collect();
            assert_eq!(&found, expected, "traces of {service} tagged symbol={symbol}");
        }
    }

    // Metrics add up; lag drains to zero; health is ok.
    support::wait_until("consumer lag to reach 0", WAIT, || {
        let lags = [&processor, &storage].map(|s| s.metric_if_present("pipeline_consumer_lag{"));
        (lags == [Some(0.0), Some(0.0)]).then_some(())
    });
    assert_eq!(processor.metric("pipeline_messages_in_total{"), N as f64);
    assert_eq!(
        processor.metric(r#"pipeline_messages_out_total{service="processor-service",destination="enriched-data"}"#),
        N as f64
    );
    assert_eq!(storage.metric("pipeline_messages_in_total{"), N as f64);
    assert_eq!(
        storage.metric(r#"pipeline_messages_out_total{service="storage-service",destination="postgresql"}"#),
        N as f64
    );
    assert_eq!(processor.metric("pipeline_errors_total{") + storage.metric("pipeline_errors_total{"), 0.0);
    assert_eq!(storage.metric("pipeline_processing_duration_seconds_count{"), N as f64);
    for service in [&processor, &storage] {
        assert_eq!(service.healthz().map(|(code, _)| code), Some(200), "{} /healthz", service.name);
    }

    // At-least-once replay: a second storage group reads every record again; no new row.
    let mut replay = peers.storage(&["--group-id", "storage-replay"]);
    support::wait_until("the replay to read every record", WAIT, || {
        (replay.metric("pipeline_messages_in_total{") >= N as f64).then_some(())
    });
    support::wait_until("the replay to write", WAIT, || {
        (replay.metric(r#"pipeline_messages_out_total{service="storage-service",destination="postgresql"}"#)
            >= N as f64)
            .then_some(())
    });
    assert_eq!(db.count(), N, "replayed records are not stored twice");

    // Graceful shutdown: every service exits 0 on SIGTERM, committing what it processed.
    for service in [&mut replay, &mut storage, &mut processor] {
        let status = service.terminate(Duration::from_secs(30));
        assert!(status.success(), "{} exits cleanly on SIGTERM: {status}\n{}", service.name, service.log_text());
        assert!(service.log_text().contains("stopped"), "{} logs its shutdown", service.name);
    }
}

#[test]
fn services_restarted_mid_stream_lose_nothing_process_nothing_twice_and_flush_their_spans() {
    let stack = TracedPeers::start();
    let (db, peers, api) = (&stack.db, stack.peers(), stack.api());
    let n: u64 = 80;
    let count = n.to_string();

    let mut storage = peers.storage(&[]);
    let mut processor = peers.processor(&[]);
    let mut ingestion = peers.ingestion(&["--count", &count, "--rate", "20"]);

    support::wait_until("the first rows", WAIT, || (db.count() >= 10).then_some(()));
    assert!(processor.terminate(Duration::from_secs(30)).success(), "processor stops cleanly mid-stream");
    let _processor = peers.processor(&[]);
    let stored = db.count();
    support::wait_until("rows from the restarted processor", WAIT, || (db.count() >= stored + 10).then_some(()));
    assert!(storage.terminate(Duration::from_secs(30)).success(), "storage stops cleanly mid-stream");
    let _storage = peers.storage(&[]);
    assert!(ingestion.wait_exit(WAIT).success());

    support::wait_until(&format!("{n} rows"), WAIT, || (db.count() >= n).then_some(()));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(db.count(), n, "nothing lost across the restarts");
    // Each trace holds each span once: what was processed before a stop was committed (no
    // redelivery), and the stopped services exported their last spans on the way out.
    let rows = db.query("SELECT trace_id, symbol FROM option_analytics");
    for row in &rows {
        api.wait_for_trace(&row[0], EXPECTED.len(), WAIT);
    }
    std::thread::sleep(Duration::from_secs(1)); // a second processing would show by now
    for row in &rows {
        // One read: a trace once returned whole stays whole, even across a head cut.
        let spans = api.trace(&row[0]);
        assert_seed_trace(&row[0], &row[1], &spans);
    }
}
