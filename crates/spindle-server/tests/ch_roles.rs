//! Roles over ClickHouse, against the real binary, the tansu broker and a real ClickHouse:
//! a `--target collector` process writes OTLP/HTTP and OTLP/gRPC batches to Kafka, a
//! `--target ingester --storage clickhouse` process appends them to ClickHouse, and a
//! `--target query --storage clickhouse` process answers the Jaeger API from there, each
//! tenant apart; every acknowledged span reads back exactly once, also after the ingester
//! is killed with SIGKILL mid-stream, and after ClickHouse was killed or hung and came back
//! (meanwhile the collector keeps accepting into Kafka, the ingester holds its offsets and
//! says it is not ready, the query instance answers 503 with the reason). And
//! `--target all --storage clickhouse` round-trips.

mod common;
mod roles;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::Spindle;
use roles::{
    assert_exactly_once, client, committed, ends, get, now_nanos, post, readyz, send_each_way, spans, wait_ready,
    wait_unready, with_kafka, Sent, Stream, TOPIC,
};
use spindle_test_support::{wait_until, ClickHouse, Tansu};

const TENANT: &str = "team-a";

fn on_clickhouse(dir: &std::path::Path, clickhouse: &ClickHouse, args: &[&str]) -> Spindle {
    let mut all = vec!["--storage", "clickhouse", "--clickhouse-url", &clickhouse.http_url];
    all.extend_from_slice(args);
    Spindle::start_with(dir, &all)
}

/// The trace ids a Jaeger search by service answers.
fn search(
    client: &reqwest::blocking::Client,
    spindle: &Spindle,
    service: &str,
    tenant: Option<&str>,
) -> HashSet<String> {
    let body = get(client, spindle, &format!("/api/traces?service={service}&lookback=1h&limit=1500"), tenant);
    body["data"].as_array().into_iter().flatten().filter_map(|t| t["traceID"].as_str().map(str::to_string)).collect()
}

fn services(client: &reqwest::blocking::Client, spindle: &Spindle, tenant: Option<&str>) -> Vec<String> {
    let body = get(client, spindle, "/api/services", tenant);
    body["data"].as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_string)).collect()
}

/// A collector, an ingester and a query instance over `clickhouse`, in `dirs`.
fn pipeline(
    dirs: &[tempfile::TempDir; 3],
    tansu: &Tansu,
    clickhouse: &ClickHouse,
    ingester_args: &[&str],
) -> (Spindle, Spindle, Spindle) {
    let collector = Spindle::start_with(dirs[0].path(), &with_kafka(&tansu.bootstrap, "collector", &[]));
    let ingester = on_clickhouse(dirs[1].path(), clickhouse, &with_kafka(&tansu.bootstrap, "ingester", ingester_args));
    // Started after the ingester, before any tenant but the default has a database.
    let query = on_clickhouse(dirs[2].path(), clickhouse, &["--target", "query"]);
    (collector, ingester, query)
}

#[test]
fn collector_kafka_ingester_clickhouse_query_every_acknowledged_span_once_per_tenant_across_an_ingester_crash() {
    let clickhouse = ClickHouse::start();
    let tansu = Tansu::start(&[(TOPIC, 2)]);
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let (collector, mut ingester, query) = pipeline(&dirs, &tansu, &clickhouse, &[]);
    let client = client();

    // The query instance runs no receivers and no consumer.
    assert!(post(&client, &query, &spans(9, 1), None) == 0, "the query instance serves OTLP/HTTP");

    // Each tenant apart: by id, by service list and by search.
    let Sent { http, tenant, grpc } = send_each_way(&client, &collector, &query, TENANT);
    let default_services = services(&client, &query, None);
    for s in http.iter().chain(&grpc) {
        assert!(default_services.contains(&s.service_name().to_string()), "{} not listed", s.service_name());
    }
    let team_services = services(&client, &query, Some(TENANT));
    let tenant_traces: HashSet<String> = tenant.iter().map(|s| s.trace_id.to_string()).collect();
    let default_traces: HashSet<String> = http.iter().chain(&grpc).map(|s| s.trace_id.to_string()).collect();
    for service in &team_services {
        let found = search(&client, &query, service, Some(TENANT));
        assert!(found.is_subset(&tenant_traces), "team-a's search of {service} found others' traces");
    }
    let service = tenant[0].service_name();
    assert!(team_services.contains(&service.to_string()), "{service} not listed for team-a: {team_services:?}");
    assert!(search(&client, &query, service, Some(TENANT)).contains(&tenant[0].trace_id.to_string()));
    let found = search(&client, &query, http[0].service_name(), None);
    assert!(found.contains(&http[0].trace_id.to_string()), "default search misses its trace");
    assert!(found.is_disjoint(&tenant_traces), "the default tenant's search found team-a's traces");
    assert!(found.is_subset(&default_traces), "the default tenant's search found unknown traces");
    // An unknown tenant reads as empty, and no database is created for the read.
    assert!(services(&client, &query, Some("nobody")).is_empty());
    let databases = client
        .get(format!("{}/?query=SELECT%20name%20FROM%20system.databases", clickhouse.http_url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let databases: HashSet<&str> = databases.lines().collect();
    assert!(databases.contains("spindle") && databases.contains("spindle_team_ha"), "{databases:?}");
    assert!(!databases.contains("spindle_nobody"), "a read created a database");

    // SIGKILL the ingester while batches stream in; every acknowledged span reads once
    // through the query instance after its restart.
    let stream = Stream::start(&collector, 100, 4, Duration::ZERO);
    std::thread::sleep(Duration::from_millis(1500));
    ingester.kill9();
    std::thread::sleep(Duration::from_millis(500));
    ingester.restart();
    std::thread::sleep(Duration::from_millis(1000));
    let (acknowledged, _) = stream.stop();
    assert!(acknowledged.len() > 100, "only {} spans were acknowledged while streaming", acknowledged.len());
    assert_exactly_once(&client, &query, &acknowledged, None);
    assert_exactly_once(&client, &query, &http, None);
    assert_exactly_once(&client, &query, &tenant, Some(TENANT));
}

/// How ClickHouse fails in [`clickhouse_outage`].
#[derive(Clone, Copy, Debug, PartialEq)]
enum Outage {
    /// Killed (SIGKILL), then started again on its data.
    Killed,
    /// Hung (SIGSTOP) for longer than the ingester's ClickHouse request timeout (30 s),
    /// then resumed.
    Hung,
}

/// Streams spans through collector → Kafka → ingester → ClickHouse while ClickHouse fails
/// as `outage` says, and checks what each role does meanwhile and that, once ClickHouse is
/// back, everything recovers by itself and every acknowledged span reads exactly once.
fn clickhouse_outage(outage: Outage) {
    let mut clickhouse = ClickHouse::start();
    let tansu = Tansu::start(&[(TOPIC, 2)]);
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let (collector, ingester, query) = pipeline(&dirs, &tansu, &clickhouse, &[]);
    let client = client();
    let before = spans(1, 5);
    assert_eq!(post(&client, &collector, &before, Some(TENANT)), 200);
    assert_exactly_once(&client, &query, &before, Some(TENANT));

    let stream = Stream::start(&collector, 100, 2, Duration::from_millis(100));
    wait_until("spans flowing", Duration::from_secs(10), || (stream.acknowledged() > 20).then_some(()));
    let outage_started = Instant::now();
    // A query sent as ClickHouse goes: answered 503 with the reason (for a hung server,
    // once the request to ClickHouse timed out), never hanging for good or claiming no data.
    let query_url = query.query_url("/api/services");
    let during = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let r = client.get(query_url).send().expect("the query instance answers");
        (r.status().as_u16(), r.text().unwrap_or_default())
    });
    match outage {
        Outage::Killed => clickhouse.stop(),
        Outage::Hung => clickhouse.pause(),
    }
    // The ingester and the query instance say they are not ready, naming ClickHouse.
    wait_unready(&client, &ingester, "clickhouse at");
    wait_unready(&client, &query, "clickhouse at");
    // Once the ingester's append in flight failed, its offsets stay where they are while the
    // collector keeps accepting into Kafka.
    let partitions = [0, 1];
    std::thread::sleep(Duration::from_secs(2));
    let held = committed(&tansu.bootstrap, &partitions);
    let accepted = stream.acknowledged();
    let outage_lasts = match outage {
        Outage::Killed => Duration::from_secs(6),
        Outage::Hung => Duration::from_secs(33),
    };
    std::thread::sleep(outage_lasts.saturating_sub(outage_started.elapsed()));
    assert!(stream.acknowledged() > accepted, "the collector stopped accepting while ClickHouse was down");
    assert_eq!(committed(&tansu.bootstrap, &partitions), held, "offsets committed while ClickHouse was down");
    let end = ends(&tansu.bootstrap, &partitions);
    assert!(end.iter().sum::<i64>() > held.iter().sum::<i64>(), "nothing waits in Kafka: {end:?} vs {held:?}");
    let (status, body) = during.join().unwrap();
    assert_eq!(status, 503, "a query while ClickHouse was {outage:?} answered {status}: {body}");
    assert!(body.contains("ClickHouse"), "the 503 does not say why: {body}");
    // An answer 503 with ClickHouse's error in the Jaeger API's `errors`, by trace id too.
    if outage == Outage::Killed {
        let r = client.get(query.query_url(&format!("/api/traces/{}", before[0].trace_id))).send().unwrap();
        assert_eq!(r.status().as_u16(), 503);
        let body: serde_json::Value = r.json().unwrap();
        assert!(body["errors"][0]["msg"].as_str().unwrap_or_default().contains("ClickHouse"), "{body}");
    }

    match outage {
        Outage::Killed => clickhouse.restart(),
        Outage::Hung => clickhouse.resume(),
    }
    // Everything recovers by itself.
    wait_ready(&client, &ingester);
    wait_ready(&client, &query);
    std::thread::sleep(Duration::from_millis(500));
    let (acknowledged, refused) = stream.stop();
    assert!(refused.is_empty(), "the collector refused batches: {refused:?}");
    assert_exactly_once(&client, &query, &acknowledged, None);
    assert_exactly_once(&client, &query, &before, Some(TENANT));
    wait_until("every offset committed", Duration::from_secs(15), || {
        (committed(&tansu.bootstrap, &partitions) == ends(&tansu.bootstrap, &partitions)).then_some(())
    });
    assert!(readyz(&client, &collector).is_some_and(|(s, _)| s == 200), "the collector went unready");
}

#[test]
fn clickhouse_killed_and_restarted_nothing_acknowledged_is_lost_or_doubled() {
    clickhouse_outage(Outage::Killed);
}

#[test]
fn clickhouse_hung_past_the_request_timeout_and_resumed_nothing_acknowledged_is_lost_or_doubled() {
    clickhouse_outage(Outage::Hung);
}

#[test]
fn all_on_clickhouse_round_trips_a_span_answers_503_without_it_and_query_needs_it() {
    let clickhouse = ClickHouse::start();
    let dir = tempfile::tempdir().unwrap();
    let all = on_clickhouse(dir.path(), &clickhouse, &["--target", "all"]);
    let client = client();
    let sent = spans(5, 3);
    assert_eq!(post(&client, &all, &sent, None), 200);
    assert_exactly_once(&client, &all, &sent, None);
    // Nothing was written to the data directory's store: the spans are in ClickHouse.
    assert!(!dir.path().join("spindle-data.json").exists(), "the embedded store was opened");
    // The other read APIs answer over ClickHouse too.
    let service = sent[0].service_name();
    let end_ms = now_nanos() / 1_000_000;
    for path in [
        "/api/v3/services".to_string(),
        format!("/api/dependencies?endTs={end_ms}&lookback=3600000"),
        format!("/api/spindle/stats?service={service}&lookback=1h"),
    ] {
        let (status, _) = all.get_json(&path);
        assert_eq!(status, 200, "{path}");
    }
    // ClickHouse gone: a query answers 503 with the reason.
    drop(clickhouse);
    let response = client.get(all.query_url("/api/services")).send().unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert!(response.text().unwrap().contains("ClickHouse"));
    // ...and /readyz says which dependency is missing.
    wait_unready(&client, &all, "clickhouse at");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spindle"))
        .args(["serve", "--target", "query", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("storage = clickhouse"));
}
