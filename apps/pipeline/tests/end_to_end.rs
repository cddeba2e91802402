//! The pipeline end to end against real peers: tansu, PostgreSQL, Redis and a spindle
//! server, all started here, with the service binaries exporting to spindle over OTLP gRPC;
//! two processors and two storage services share their consumer groups.
//!
//! N instruments go in; then, through spindle's API, every trace is the seed's expected
//! trace (names, services, kinds, parentage across both Kafka hops) with the cache's Redis
//! `GET` (and `SET` after each miss), `/api/dependencies` is the seed's graph plus the
//! `redis` node, PostgreSQL holds exactly N rows, each instance holds one partition,
//! `symbol` finds exactly the traces of that symbol, the services' metrics add up; then one
//! processor and one storage service stop, the others take their partitions over and M more
//! instruments arrive whole and once; a replay through a second consumer group adds no rows,
//! and SIGTERM stops every service cleanly.
//!
//! Needs `tansu` (`cargo install tansu --locked --features dynostore`), `redis-server` and
//! PostgreSQL on 127.0.0.1:5432 (or `PIPELINE_TEST_DATABASE_URL`); fails without them.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use support::{ServiceProcess, SpanView, TracedPeers};

const N: u64 = 24;
/// Instruments after one processor and one storage service stopped.
const M: u64 = 12;
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

/// Asserts the seed's trace and the cache's spans; returns whether the snapshot missed the
/// cache (a `SET` follows the `GET`).
fn assert_seed_trace(trace_id: &str, symbol: &str, spans: &[SpanView]) -> bool {
    let missed = spans.iter().any(|s| s.name == "SET");
    let cache_spans: &[&str] = if missed { &["GET", "SET"] } else { &["GET"] };
    assert_eq!(spans.len(), EXPECTED.len() + cache_spans.len(), "trace {trace_id}: {spans:#?}");
    for name in cache_spans {
        let span = by_name(spans, name);
        assert_eq!(span.service, "ingestion-service", "{span:?}");
        assert_eq!(span.tag("span.kind"), Some("client"), "{span:?}");
        assert_eq!(
            span.parent.as_ref(),
            Some(&by_name(spans, "enrich_context").span_id),
            "{name} is under enrich_context"
        );
        assert_eq!(span.tag("db.system"), Some("redis"), "{span:?}");
        assert_eq!(span.tag("db.operation.name"), Some(*name), "{span:?}");
        assert_eq!(span.tag("server.address"), Some("127.0.0.1"), "{span:?}");
        assert!(!span.is_error(), "{span:?}");
    }
    let enrich = by_name(spans, "enrich_context");
    assert_eq!(enrich.tag("reference.cache"), Some(if missed { "miss" } else { "hit" }), "{enrich:?}");
    let exchange = if symbol.ends_with(".T") { "XTKS" } else { "XNAS" };
    assert_eq!(enrich.tag("instrument.exchange"), Some(exchange), "reference data added: {enrich:?}");
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
    missed
}

/// Trace `trace_id` once it holds the seed's spans and its cache spans (a `GET`, and a
/// `SET` when it missed).
fn whole_trace(api: &support::SpindleApi<'_>, trace_id: &str) -> Vec<SpanView> {
    support::wait_until(&format!("trace {trace_id} whole in spindle"), WAIT, || {
        let spans = api.trace(trace_id);
        let cache = 1 + usize::from(spans.iter().any(|s| s.name == "SET"));
        (spans.len() >= EXPECTED.len() + cache).then_some(spans)
    })
}

/// The partitions of `service`'s `pipeline_consumer_lag` series: those assigned to it.
fn assigned(service: &ServiceProcess) -> BTreeSet<String> {
    let Some((_, body)) = support::http_get(&format!("http://{}/metrics", service.metrics_addr)) else {
        return BTreeSet::new();
    };
    body.lines()
        .filter(|l| l.starts_with("pipeline_consumer_lag{"))
        .filter_map(|l| l.split("partition=\"").nth(1)?.split('"').next().map(str::to_owned))
        .collect()
}

/// The sum of a metric over instances.
fn total(services: &[&ServiceProcess], prefix: &str) -> f64 {
    services.iter().map(|s| s.metric(prefix)).sum()
}

/// The seed's dependency graph with `n` calls per edge, plus `redis` under ingestion with
/// `cache_calls`.
fn seed_graph(n: u64, cache_calls: u64) -> BTreeMap<(String, String), u64> {
    [
        ("ingestion-service", "kafka", n),
        ("kafka", "processor-service", n),
        ("processor-service", "kafka", n),
        ("kafka", "storage-service", n),
        ("storage-service", "postgresql", n),
        ("ingestion-service", "redis", cache_calls),
    ]
    .into_iter()
    .map(|(p, c, calls)| ((p.to_owned(), c.to_owned()), calls))
    .collect()
}

#[test]
fn n_instruments_through_two_instances_per_consumer_become_n_seed_traces_n_rows_and_the_seed_graph() {
    let stack = TracedPeers::start();
    let (db, peers, api) = (&stack.db, stack.peers(), stack.api());

    // Two instances of each consumer, dynamic members of their groups: a clean stop then
    // leaves the group, and the broker hands the partitions to the other instance at once.
    // (A static member keeps its partitions for its return: until the session timeout on
    // Kafka, and on tansu 0.6 until it comes back; see the README, "Several instances".)
    let dynamic = ["--group-instance-id", ""];
    let storages = [peers.storage(&dynamic), peers.storage(&dynamic)];
    let processors = [peers.processor(&dynamic), peers.processor(&dynamic)];
    // The group settles before data flows (a rebalance mid-stream would redeliver, which the
    // traces would show as second processing branches): each instance holds one partition.
    for group in [&processors, &storages] {
        support::wait_until("one partition per instance", WAIT, || {
            let [a, b] = [assigned(&group[0]), assigned(&group[1])];
            (a.len() == 1 && b.len() == 1 && a != b).then_some(())
        });
    }
    let count = N.to_string();
    let symbols = SYMBOLS.join(",");
    let mut ingestion = peers.ingestion(&["--count", &count, "--rate", "40", "--symbols", &symbols]);
    assert!(ingestion.wait_exit(WAIT).success(), "ingestion exits 0 after --count snapshots");

    support::wait_until(&format!("{N} rows in PostgreSQL"), WAIT, || (db.count() >= N).then_some(()));
    std::thread::sleep(Duration::from_secs(1)); // would-be extra rows arrive
    assert_eq!(db.count(), N, "exactly one row per instrument");

    // Every row's trace is the seed's trace; the first snapshot of each symbol missed the
    // (empty) cache, every other one hit it.
    let rows = db.query("SELECT trace_id, symbol FROM option_analytics ORDER BY sequence");
    let mut traces_by_symbol: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut misses = BTreeMap::new();
    for row in &rows {
        let (trace_id, symbol) = (&row[0], &row[1]);
        assert_eq!(trace_id.len(), 32, "row carries its trace id: {row:?}");
        let spans = whole_trace(&api, trace_id);
        if assert_seed_trace(trace_id, symbol, &spans) {
            *misses.entry(symbol.clone()).or_insert(0) += 1;
        }
        traces_by_symbol.entry(symbol.clone()).or_default().insert(trace_id.clone());
    }
    assert_eq!(traces_by_symbol.len(), SYMBOLS.len(), "round-robin over the universe");
    assert_eq!(misses, SYMBOLS.iter().map(|s| (s.to_string(), 1)).collect(), "one miss per symbol");
    let cached = stack.redis.command("EXISTS pipeline:reference:AAPL").expect("redis answers");
    assert!(cached.starts_with(":1"), "the reference data is in Redis: {cached}");
    // (The hit, miss and error counters are checked in tests/cache.rs, against a running
    // ingestion; this one has exited.)

    // The dependency graph: services, the virtual kafka and postgresql nodes, and redis
    // (one call per GET and SET).
    let expected = seed_graph(N, N + SYMBOLS.len() as u64);
    let links = support::wait_until("the dependency graph", WAIT, || {
        let links = api.dependencies();
        (links == expected).then_some(links)
    });
    assert_eq!(links, expected);

    // `symbol` is a searchable tag: each symbol finds exactly its own traces.
    for (symbol, expected) in &traces_by_symbol {
        for service in ["ingestion-service", "processor-service", "storage-service"] {
            let found: BTreeSet<String> = api.search_by_tag(service, "symbol", symbol).into_iter().collect();
            assert_eq!(&found, expected, "traces of {service} tagged symbol={symbol}");
        }
    }

    // Metrics add up over the instances; lag drains to zero; health is ok.
    let all: Vec<&ServiceProcess> = processors.iter().chain(&storages).collect();
    support::wait_until("consumer lag to reach 0", WAIT, || {
        let lags: Vec<_> = all.iter().map(|s| s.metric_if_present("pipeline_consumer_lag{")).collect();
        lags.iter().all(|l| *l == Some(0.0)).then_some(())
    });
    let [p, s] = [[&processors[0], &processors[1]], [&storages[0], &storages[1]]];
    assert_eq!(total(&p, "pipeline_messages_in_total{"), N as f64);
    assert_eq!(
        total(&p, r#"pipeline_messages_out_total{service="processor-service",destination="enriched-data"}"#),
        N as f64
    );
    assert_eq!(total(&s, "pipeline_messages_in_total{"), N as f64);
    assert_eq!(
        total(&s, r#"pipeline_messages_out_total{service="storage-service",destination="postgresql"}"#),
        N as f64
    );
    assert_eq!(total(&all, "pipeline_errors_total{"), 0.0);
    assert_eq!(total(&s, "pipeline_processing_duration_seconds_count{"), N as f64);
    for service in &all {
        assert_eq!(service.healthz().map(|(code, _)| code), Some(200), "{} /healthz", service.name);
    }

    // One instance of each stops (SIGTERM: it commits, then leaves its group): the other
    // takes its partition over, and the next instruments arrive whole, once.
    let [processor, mut processor_2] = processors;
    let [storage, mut storage_2] = storages;
    for stopped in [&mut processor_2, &mut storage_2] {
        assert!(stopped.terminate(Duration::from_secs(30)).success(), "{} stops cleanly", stopped.name);
    }
    drop((processor_2, storage_2));
    for survivor in [&processor, &storage] {
        support::wait_until(&format!("{} to take both partitions", survivor.name), WAIT, || {
            (assigned(survivor).len() == 2).then_some(())
        });
    }
    let count = M.to_string();
    let mut ingestion = peers.ingestion(&["--count", &count, "--rate", "40", "--symbols", &symbols]);
    assert!(ingestion.wait_exit(WAIT).success());
    support::wait_until(&format!("{} rows", N + M), WAIT, || (db.count() >= N + M).then_some(()));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(db.count(), N + M, "every instrument once after the rebalance");
    let later = db.query(&format!("SELECT trace_id, symbol FROM option_analytics ORDER BY ingested_at DESC LIMIT {M}"));
    for row in &later {
        let spans = whole_trace(&api, &row[0]);
        assert!(!assert_seed_trace(&row[0], &row[1], &spans), "the cache still holds every symbol");
    }
    let expected = seed_graph(N + M, N + M + SYMBOLS.len() as u64);
    let links = support::wait_until("the dependency graph after the rebalance", WAIT, || {
        let links = api.dependencies();
        (links == expected).then_some(links)
    });
    assert_eq!(links, expected, "still the seed's graph");

    // At-least-once replay: a second storage group reads every record again; no new row.
    let mut replay = peers.storage(&["--group-id", "storage-replay"]);
    support::wait_until("the replay to read every record", WAIT, || {
        (replay.metric("pipeline_messages_in_total{") >= (N + M) as f64).then_some(())
    });
    support::wait_until("the replay to write", WAIT, || {
        (replay.metric(r#"pipeline_messages_out_total{service="storage-service",destination="postgresql"}"#)
            >= (N + M) as f64)
            .then_some(())
    });
    assert_eq!(db.count(), N + M, "replayed records are not stored twice");

    // Graceful shutdown: every service exits 0 on SIGTERM, committing what it processed.
    let (mut storage, mut processor) = (storage, processor);
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
        whole_trace(&api, &row[0]);
    }
    std::thread::sleep(Duration::from_secs(1)); // a second processing would show by now
    for row in &rows {
        // One read: a trace once returned whole stays whole, even across a head cut.
        let spans = api.trace(&row[0]);
        assert_seed_trace(&row[0], &row[1], &spans);
    }
}
