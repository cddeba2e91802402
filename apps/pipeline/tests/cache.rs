//! The reference-data cache against a real Redis that the test stops and starts again, and
//! against a server that accepts connections and never answers (a hung Redis). While Redis
//! is down or hung ingestion keeps publishing at its rate, reading the source (the miss
//! path) with its `GET` spans marked as errors and the errors counted; once Redis is back the
//! lookups hit again. A Redis URL that does not parse stops the service with a clear error.
//!
//! Needs `tansu`, `redis-server` and PostgreSQL (the shared harness creates a database).

mod support;

use std::process::Command;
use std::time::Duration;

use spindle_pipeline::record::InstrumentMessage;
use support::{Peers, TracedPeers, Tracing};

const WAIT: Duration = Duration::from_secs(120);
const HIT: &str = r#"pipeline_cache_requests_total{service="ingestion-service",cache="reference",result="hit"}"#;
const MISS: &str = r#"pipeline_cache_requests_total{service="ingestion-service",cache="reference",result="miss"}"#;
const ERROR: &str = r#"pipeline_cache_requests_total{service="ingestion-service",cache="reference",result="error"}"#;
const PUBLISHED: &str = r#"pipeline_messages_out_total{service="ingestion-service",destination="market-data"}"#;

#[test]
fn redis_down_degrades_to_the_source_with_error_spans_and_never_stops_ingestion() {
    let TracedPeers { spindle, tansu, db, mut redis } = TracedPeers::start();
    let redis_url = redis.url.clone();
    let tracing = Tracing::To(spindle.otlp_grpc.clone());
    let peers = Peers { brokers: &tansu.bootstrap, database_url: &db.url, redis_url: &redis_url, tracing };
    let api = support::SpindleApi(&spindle.query);
    // Redis retried after 300 ms: the test sees several reconnection attempts.
    let mut ingestion = peers.ingestion(&["--rate", "20", "--symbols", "AAPL,MSFT", "--redis-retry-ms", "300"]);
    support::wait_until("cache hits", WAIT, || (ingestion.metric(HIT) >= 10.0).then_some(()));
    assert_eq!(ingestion.metric(MISS), 2.0, "one miss per symbol");
    assert_eq!(ingestion.metric(ERROR), 0.0);

    // Redis dies: lookups fail, the source answers, publishing goes on.
    redis.stop();
    let before = ingestion.metric(PUBLISHED);
    support::wait_until("errors while redis is down", WAIT, || (ingestion.metric(ERROR) >= 20.0).then_some(()));
    let during = ingestion.metric(PUBLISHED) - before;
    assert!(during >= 15.0, "ingestion kept publishing while redis was down ({during} snapshots)");
    assert_eq!(ingestion.healthz().map(|(code, _)| code), Some(200), "a down cache does not make ingestion unhealthy");

    // Redis is back, empty: a miss per symbol refills it, then hits again.
    redis.start_again();
    let hits = ingestion.metric(HIT);
    support::wait_until("hits after redis is back", WAIT, || (ingestion.metric(HIT) >= hits + 10.0).then_some(()));
    assert!(ingestion.metric(MISS) >= 4.0, "the restarted, empty redis was refilled after misses");
    assert!(ingestion.terminate(Duration::from_secs(30)).success(), "ingestion stops cleanly");

    // Every snapshot published carries its reference data, from Redis or from the source.
    let published = ingestion.metric(PUBLISHED) as usize;
    let records = support::consume(&tansu.bootstrap, "market-data", published, WAIT);
    for record in &records {
        use spindle_sdk::rdkafka::Message;
        let message: InstrumentMessage =
            serde_json::from_slice(record.payload().expect("a payload")).expect("an instrument message");
        let reference = message.reference.as_ref().unwrap_or_else(|| panic!("reference data on {message:?}"));
        assert_eq!((reference.exchange.as_str(), reference.currency.as_str()), ("XNAS", "USD"));
    }

    // The traces of the outage: `GET` failed and says why, the snapshot went on to Kafka.
    let traces = support::wait_until("traces that took the error path", WAIT, || {
        let found = api.search_by_tag("ingestion-service", "reference.cache", "error");
        (!found.is_empty()).then_some(found)
    });
    let spans = api.trace(&traces[0]);
    let get = spans.iter().find(|s| s.name == "GET").unwrap_or_else(|| panic!("a GET span in {spans:#?}"));
    assert!(get.is_error(), "the failed GET is an error span: {get:?}");
    assert_eq!(get.tag("error.type"), Some("redis_unavailable"), "{get:?}");
    assert_eq!(get.tag("db.system"), Some("redis"));
    assert_eq!(get.tag("span.kind"), Some("client"));
    assert!(!spans.iter().any(|s| s.name == "SET"), "nothing is written to a down redis");
    for name in ["fetch_instrument_data", "enrich_context", "send_to_kafka"] {
        let span = spans.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("{name} in {spans:#?}"));
        assert!(!span.is_error(), "the snapshot itself succeeded: {span:?}");
    }
}

#[test]
fn a_hung_redis_times_out_and_ingestion_keeps_its_rate() {
    // A server that accepts connections and never answers: a hung Redis.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let url = format!("redis://{}", silent.local_addr().expect("bound"));
    std::thread::spawn(move || silent.incoming().map_while(Result::ok).take(100).collect::<Vec<_>>());
    let TracedPeers { spindle, tansu, db, redis: _redis } = TracedPeers::start();
    let tracing = Tracing::To(spindle.otlp_grpc.clone());
    let peers = Peers { brokers: &tansu.bootstrap, database_url: &db.url, redis_url: &url, tracing };
    let api = support::SpindleApi(&spindle.query);
    // 200 ms per attempt, one attempt a second after a failure: at most a fifth of the time
    // goes to waiting for Redis.
    let ingestion = peers.ingestion(&["--rate", "20", "--redis-timeout-ms", "200", "--redis-retry-ms", "1000"]);
    support::wait_until("the first snapshots", WAIT, || (ingestion.metric(PUBLISHED) >= 10.0).then_some(()));
    let (before, started) = (ingestion.metric(PUBLISHED), std::time::Instant::now());
    std::thread::sleep(Duration::from_secs(5));
    let rate = (ingestion.metric(PUBLISHED) - before) / started.elapsed().as_secs_f64();
    eprintln!("publishing at {rate:.1} snapshots/s of 20 with redis hanging");
    // Generous: the bound is 16 a second, a loaded machine may fall short of it.
    assert!(rate >= 10.0, "ingestion published {rate:.1} snapshots/s with redis hanging");
    assert_eq!(ingestion.metric(HIT) + ingestion.metric(MISS), 0.0, "nothing came from the hung redis");
    // A snapshot's lookup is counted before it is published, and ingestion runs on between
    // the two reads: the later read may be a snapshot or two ahead.
    let published = ingestion.metric(PUBLISHED);
    let errors = ingestion.metric(ERROR);
    assert!(
        errors >= published && errors <= published + 2.0,
        "every lookup counted as an error: {errors} errors, {published} published"
    );
    // One lookup a second waits out the timeout; the others skip Redis. Both are error spans.
    let traces = api.search_by_tag("ingestion-service", "reference.cache", "error");
    let kinds: Vec<String> = traces
        .iter()
        .filter_map(|id| api.trace(id).into_iter().find(|s| s.name == "GET"))
        .inspect(|get| assert!(get.is_error(), "{get:?}"))
        .filter_map(|get| get.tag("error.type").map(str::to_owned))
        .collect();
    assert!(kinds.iter().any(|k| k == "timeout"), "a GET timed out: {kinds:?}");
    assert!(kinds.iter().any(|k| k == "redis_unavailable"), "GETs skipped redis meanwhile: {kinds:?}");
}

#[test]
fn an_invalid_redis_url_stops_ingestion_with_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_ingestion-service"))
        .args(["--redis-url", "not a url", "--brokers", "127.0.0.1:1", "--count", "1"])
        .args(["--metrics-addr", &format!("127.0.0.1:{}", support::free_port())])
        .env("OTEL_SDK_DISABLED", "true")
        .env("RUST_LOG", "error")
        .output()
        .expect("ingestion-service runs");
    assert!(!out.status.success(), "a bad --redis-url is refused");
    let log = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("invalid setting redis-url: not a url"), "{log}");
}
