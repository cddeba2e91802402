//! Roles over the Kafka ingest buffer, against the real binary and the tansu broker: a
//! `--target collector` process takes OTLP/HTTP and OTLP/gRPC and writes to Kafka; a
//! `--target ingester` process consumes, stores and serves the query API. Every span a
//! client was answered 200/OK for is read back exactly once, with its tenant, also after
//! the ingester is killed with SIGKILL mid-stream, and with two ingesters sharing a topic's
//! partitions; each compression codec round-trips; an ingester appends many small messages
//! at once and commits after; with the broker gone the collector answers unavailable,
//! never 200.

mod common;
mod roles;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::Spindle;
use roles::{
    assert_exactly_once, by_trace, client, committed, ends, export_grpc, metric, post, produce, send_each_way,
    span_ids, spans, with_kafka, Sent, Stream, TOPIC,
};
use spindle_test_support::{wait_until, Tansu};

const TENANT: &str = "team-a";

fn collector(tansu: &Tansu, dir: &std::path::Path, args: &[&str]) -> Spindle {
    Spindle::start_with(dir, &with_kafka(&tansu.bootstrap, "collector", args))
}

fn ingester(tansu: &Tansu, dir: &std::path::Path, args: &[&str]) -> Spindle {
    Spindle::start_with(dir, &with_kafka(&tansu.bootstrap, "ingester", args))
}

#[test]
fn collector_kafka_ingester_store_every_acknowledged_span_once_across_an_ingester_crash() {
    let tansu = Tansu::start(&[(TOPIC, 2)]);
    let (c_dir, i_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let collector = collector(&tansu, c_dir.path(), &[]);
    let mut ingester = ingester(&tansu, i_dir.path(), &[]);
    let client = client();

    // OTLP/HTTP (default tenant and team-a) and OTLP/gRPC (default tenant), each tenant kept.
    let Sent { http, tenant, .. } = send_each_way(&client, &collector, &ingester, TENANT);
    // A batch delivered twice (as after a crash between the append and the offset commit)
    // reads once: the same message again, then a marker batch behind it in its partition
    // (one trace, so the collector keys it by that trace id, the duplicate's key here);
    // once the marker is stored, so is the duplicate.
    let marker = spans(4, 1);
    produce(&tansu.bootstrap, "single-tenant", &http, &marker[0].trace_id.to_bytes());
    assert_eq!(post(&client, &collector, &marker, None), 200);
    assert_exactly_once(&client, &ingester, &marker, None);
    assert_exactly_once(&client, &ingester, &http, None);
    // The collector holds no store and serves no queries.
    assert!(client.get(collector.query_url("/api/services")).send().is_err(), "collector serves the query API");

    // SIGKILL the ingester while batches stream in; every acknowledged one is there once
    // after its restart.
    let stream = Stream::start(&collector, 100, 4, Duration::ZERO);
    std::thread::sleep(Duration::from_millis(1500));
    ingester.kill9();
    std::thread::sleep(Duration::from_millis(500));
    ingester.restart();
    std::thread::sleep(Duration::from_millis(1000));
    let (acknowledged, _) = stream.stop();
    assert!(acknowledged.len() > 100, "only {} spans were acknowledged while streaming", acknowledged.len());
    assert_exactly_once(&client, &ingester, &acknowledged, None);
    // And the batches from before the crash, once each still.
    assert_exactly_once(&client, &ingester, &http, None);
    assert_exactly_once(&client, &ingester, &tenant, Some(TENANT));
}

#[test]
fn two_ingesters_with_disjoint_partitions_read_every_span_once_between_them() {
    let tansu = Tansu::start(&[(TOPIC, 4)]);
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let collector = collector(&tansu, dirs[0].path(), &[]);
    // Partition 7 does not exist: named in the log, not an error.
    let ingesters = [
        ingester(&tansu, dirs[1].path(), &["--kafka-partitions", "0-1"]),
        ingester(&tansu, dirs[2].path(), &["--kafka-partitions", "2-3,7"]),
    ];
    let client = client();

    // Many batches of every tenant: keyed by trace, not by tenant, they spread over the
    // partitions, so over both ingesters.
    let mut sent = Vec::new();
    for seed in 0..40 {
        let batch = spans(1000 + seed, 1);
        assert_eq!(post(&client, &collector, &batch, None), 200);
        sent.extend(batch);
    }
    // Each trace reads from one ingester exactly once, and from the other not at all.
    for (trace, ids) in &by_trace(&sent) {
        let (reader, got) = wait_until(&format!("trace {trace} on an ingester"), Duration::from_secs(30), || {
            ingesters.iter().enumerate().find_map(|(i, ingester)| {
                let got = span_ids(&client, ingester, *trace, None);
                (got.len() >= ids.len()).then_some((i, got))
            })
        });
        let unique: HashSet<String> = got.iter().cloned().collect();
        assert_eq!(got.len(), unique.len(), "trace {trace}: a span is shown twice: {got:?}");
        assert_eq!(&unique, ids, "trace {trace}: other spans than sent");
        assert!(span_ids(&client, &ingesters[1 - reader], *trace, None).is_empty(), "trace {trace} read by both");
    }
    // Both took a share, and together every span once.
    let stored: Vec<f64> = ingesters.iter().map(|i| metric(&client, i, "spindle_spans_accepted_total")).collect();
    assert!(stored.iter().all(|n| *n > 0.0), "an ingester stored nothing: {stored:?}");
    assert_eq!(stored.iter().sum::<f64>() as usize, sent.len(), "{stored:?}");
    // Each committed its own partitions, to their ends.
    let partitions = [0, 1, 2, 3];
    wait_until("every partition committed to its end", Duration::from_secs(15), || {
        (committed(&tansu.bootstrap, &partitions) == ends(&tansu.bootstrap, &partitions)).then_some(())
    });
}

#[test]
fn every_compression_codec_round_trips_through_the_broker_and_zstd_is_refused() {
    let tansu = Tansu::start(&[(TOPIC, 1)]);
    let dir = tempfile::tempdir().unwrap();
    let ingester = ingester(&tansu, dir.path(), &[]);
    let client = client();
    for (seed, codec) in ["none", "gzip", "snappy", "lz4"].into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let collector = collector(&tansu, dir.path(), &["--kafka-compression", codec, "--kafka-linger", "20ms"]);
        let batch = spans(2000 + seed as u64, 20);
        assert_eq!(post(&client, &collector, &batch, None), 200, "{codec}");
        assert_exactly_once(&client, &ingester, &batch, None);
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spindle"))
        .args(["serve", "--target", "collector", "--kafka-brokers", &tansu.bootstrap, "--kafka-compression", "zstd"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid kafka_compression \"zstd\""));
}

#[test]
fn an_ingester_appends_many_small_messages_at_once_and_commits_them_after() {
    let tansu = Tansu::start(&[(TOPIC, 1)]);
    let (c_dir, i_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let collector = collector(&tansu, c_dir.path(), &[]);
    let client = client();
    // 60 small messages waiting in Kafka before the ingester starts.
    let mut sent = Vec::new();
    for seed in 0..60 {
        let batch = spans(3000 + seed, 1);
        assert_eq!(post(&client, &collector, &batch, None), 200);
        sent.extend(batch);
    }
    assert_eq!(ends(&tansu.bootstrap, &[0]), vec![60]);
    let started = Instant::now();
    let batcher = ingester(&tansu, i_dir.path(), &["--ingester-batch-wait", "5s", "--ingester-batch-spans", "1000000"]);
    // Gathering: nothing appended, nothing committed yet.
    assert_eq!(metric(&client, &batcher, "spindle_ingester_appends_total"), 0.0);
    assert_eq!(committed(&tansu.bootstrap, &[0]), vec![-1]);
    assert!(started.elapsed() < Duration::from_secs(4), "too slow to see the gathering: {:?}", started.elapsed());
    assert_exactly_once(&client, &batcher, &sent, None);
    // One append of every span, then the commit of all 60 offsets.
    wait_until("the append counted", Duration::from_secs(5), || {
        (metric(&client, &batcher, "spindle_ingester_appends_total") > 0.0).then_some(())
    });
    assert_eq!(metric(&client, &batcher, "spindle_ingester_appends_total"), 1.0);
    assert_eq!(metric(&client, &batcher, "spindle_ingester_append_spans_count"), 1.0);
    assert_eq!(metric(&client, &batcher, "spindle_ingester_append_spans_sum") as usize, sent.len());
    wait_until("the batch's offsets committed", Duration::from_secs(15), || {
        (committed(&tansu.bootstrap, &[0]) == vec![60]).then_some(())
    });
    // A batch ends at ingester_batch_spans too: with a bound of one span, one append per message.
    let (i2_dir, more) = (tempfile::tempdir().unwrap(), spans(3100, 3));
    assert_eq!(post(&client, &collector, &more, None), 200);
    let small = ingester(
        &tansu,
        i2_dir.path(),
        &["--ingester-batch-wait", "5s", "--ingester-batch-spans", "1", "--kafka-group", "another-group"],
    );
    assert_exactly_once(&client, &small, &more, None);
    wait_until("61 appends of one message each", Duration::from_secs(5), || {
        (metric(&client, &small, "spindle_ingester_appends_total") == 61.0).then_some(())
    });
}

/// A tansu broker on a given port, killed on drop: `Tansu::start` picks a port of its own,
/// and this test brings a broker back at the same address.
struct Broker(std::process::Child);

impl Broker {
    fn start(port: u16) -> Broker {
        let binary = std::env::var_os("TANSU_BIN")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                let path = std::env::var_os("PATH")?;
                std::env::split_paths(&path).map(|d| d.join("tansu")).find(|p| p.is_file())
            })
            .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cargo/bin/tansu")))
            .expect("tansu is required: cargo install tansu --locked --features dynostore");
        let url = format!("tcp://127.0.0.1:{port}");
        let child = std::process::Command::new(&binary)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start tansu");
        let broker = Broker(child);
        wait_until("the topic to be created", Duration::from_secs(30), || {
            let out = std::process::Command::new(&binary)
                .args(["topic", "create", TOPIC, "--partitions", "1", "--broker", &url])
                .output()
                .expect("tansu topic create");
            out.status.success().then_some(())
        });
        broker
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_collector_without_its_broker_answers_unavailable_never_ok_and_recovers_when_it_is_back() {
    let port = spindle_test_support::free_port();
    let broker = Broker::start(port);
    let dir = tempfile::tempdir().unwrap();
    let bootstrap = format!("127.0.0.1:{port}");
    let collector = Spindle::start_with(
        dir.path(),
        &["--target", "collector", "--kafka-brokers", &bootstrap, "--kafka-topic", TOPIC],
    );
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    assert_eq!(post(&client, &collector, &spans(1, 2), None), 200);

    let readyz = format!("http://{}/readyz", collector.admin);
    let ready_text = |client: &reqwest::blocking::Client| {
        client.get(&readyz).send().ok().map(|r| (r.status().as_u16(), r.text().unwrap_or_default()))
    };
    assert_eq!(ready_text(&client).map(|(s, _)| s), Some(200));

    drop(broker);
    // /readyz says the broker is missing...
    wait_until("/readyz to name kafka", Duration::from_secs(15), || {
        ready_text(&client).filter(|(s, b)| *s == 503 && b.contains("kafka at")).map(|_| ())
    });
    let started = Instant::now();
    let status = post(&client, &collector, &spans(2, 2), None);
    assert!(status == 503 || status == 429, "OTLP/HTTP without the broker answered {status}");
    assert!(started.elapsed() < Duration::from_secs(20), "the answer took {:?}", started.elapsed());
    let code = export_grpc(&collector, &spans(3, 2));
    assert!(
        code == tonic::Code::Unavailable || code == tonic::Code::ResourceExhausted,
        "OTLP/gRPC without the broker answered {code:?}"
    );

    // The broker back (a new one at the same address): the collector produces again by itself.
    let _broker = Broker::start(port);
    let mut seed = 10;
    wait_until("the collector to accept again", Duration::from_secs(40), || {
        seed += 1;
        (post(&client, &collector, &spans(seed, 2), None) == 200).then_some(())
    });
    // ...and ready again once it is back.
    wait_until("/readyz ready again", Duration::from_secs(15), || {
        ready_text(&client).filter(|(s, _)| *s == 200).map(|_| ())
    });
}
