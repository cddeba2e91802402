//! Harness of the pipeline's integration tests and benchmark: real peers started here and
//! killed on drop — the tansu broker and the spindle server (`spindle-test-support`'s
//! launchers), a throwaway PostgreSQL database per test, a Redis server per test (stoppable
//! and restartable on its port), the three service binaries, a TCP proxy to cut PostgreSQL
//! off, and readers for Kafka topics and Spindle's query API. A missing peer fails the test
//! with instructions; nothing is skipped.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Deserialize;
use spindle_sdk::rdkafka::config::ClientConfig;
use spindle_sdk::rdkafka::consumer::{BaseConsumer, Consumer};
use spindle_sdk::rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use spindle_sdk::rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use spindle_sdk::rdkafka::Message;
pub use spindle_test_support::{free_port, http_get, wait_until, Spindle, Tansu};

/// The pipeline's topics: (name, partitions).
pub const TOPICS: [(&str, u32); 3] = [("market-data", 2), ("enriched-data", 2), ("dead-letter", 1)];

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("test runtime").block_on(future)
}

fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{}_{}_{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

// ---------------------------------------------------------------------------------------
// PostgreSQL

/// A database created for one test and dropped after it.
pub struct TestDatabase {
    /// The URL services connect with.
    pub url: String,
    pub name: String,
    admin_url: String,
}

impl TestDatabase {
    /// Creates `pipeline_test_<pid>_<n>_<nanos>` on the server of `$PIPELINE_TEST_DATABASE_URL`
    /// (default `postgres://postgres@127.0.0.1:5432/postgres`).
    pub fn create() -> Self {
        let admin_url = std::env::var("PIPELINE_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let name = format!("pipeline_test_{}", unique_suffix());
        let (base, _) = admin_url.rsplit_once('/').expect("a database url ends in /DBNAME");
        let url = format!("{base}/{name}");
        let db = Self { url, name, admin_url };
        db.admin(&format!("CREATE DATABASE {}", db.name));
        db
    }

    fn admin(&self, sql: &str) {
        let (url, sql) = (self.admin_url.clone(), sql.to_owned());
        block_on(async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL is required by this test and is not reachable at {url}: {e}\n\
                     start it (pg_ctlcluster --skip-systemctl-redirect 15 main start) or set PIPELINE_TEST_DATABASE_URL"
                )
            });
            tokio::spawn(connection);
            client.batch_execute(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        });
    }

    /// Runs `sql` in this database; every value as text (NULL as "NULL").
    pub fn query(&self, sql: &str) -> Vec<Vec<String>> {
        let (url, sql) = (self.url.clone(), sql.to_owned());
        block_on(async move {
            let (client, connection) =
                tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect to the test database");
            tokio::spawn(connection);
            let messages = client.simple_query(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
            messages
                .into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(row) => {
                        Some((0..row.len()).map(|i| row.get(i).unwrap_or("NULL").to_owned()).collect())
                    }
                    _ => None,
                })
                .collect()
        })
    }

    /// The URL of this database reached through `host_port` (a proxy) instead.
    pub fn url_through(&self, host_port: &str) -> String {
        let (scheme, rest) = self.url.split_once("://").expect("a url with a scheme");
        let (authority, path) = rest.split_once('/').expect("a url with a path");
        let user = authority.rsplit_once('@').map(|(u, _)| format!("{u}@")).unwrap_or_default();
        format!("{scheme}://{user}{host_port}/{path}")
    }

    /// `host:port` of the server.
    pub fn server(&self) -> SocketAddr {
        let rest = self.url.split_once("://").map_or(self.url.as_str(), |(_, r)| r);
        let authority = rest.split('/').next().unwrap_or_default();
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let host_port = if host_port.contains(':') { host_port.to_owned() } else { format!("{host_port}:5432") };
        let host_port = host_port.replace("localhost", "127.0.0.1");
        host_port.parse().unwrap_or_else(|e| panic!("{host_port} is not an ip:port: {e}"))
    }

    /// Rows in `option_analytics`, or 0 before the table exists.
    pub fn count(&self) -> u64 {
        let exists = self.query("SELECT to_regclass('option_analytics') IS NOT NULL");
        if exists.first().and_then(|r| r.first()).map(String::as_str) != Some("t") {
            return 0;
        }
        self.query("SELECT count(*) FROM option_analytics")[0][0].parse().expect("a count")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let url = self.admin_url.clone();
        // Never panic in drop: a leftover database is harmless.
        let _ = std::thread::spawn(move || {
            block_on(async move {
                if let Ok((client, connection)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                    tokio::spawn(connection);
                    let _ = client.batch_execute(&sql).await;
                }
            })
        })
        .join();
    }
}

// ---------------------------------------------------------------------------------------
// Redis

/// A `redis-server` of one test on a free loopback port, without persistence; killed on
/// drop. [`Redis::stop`] and [`Redis::start_again`] take it down and up on the same port.
pub struct Redis {
    pub port: u16,
    /// `redis://127.0.0.1:PORT`, what ingestion's `--redis-url` takes.
    pub url: String,
    child: Option<Child>,
}

impl Redis {
    pub fn start() -> Self {
        let port = free_port();
        let mut redis = Self { port, url: format!("redis://127.0.0.1:{port}"), child: None };
        redis.start_again();
        redis
    }

    /// Starts the server (again) on its port and waits for its PONG.
    pub fn start_again(&mut self) {
        let binary = std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".to_owned());
        let port = self.port.to_string();
        let child = Command::new(&binary)
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "redis-server is required by this test and cannot be started ({binary}: {e}); \
                     install it (apt-get install redis-server; scripts/test does) or set REDIS_SERVER_BIN"
                )
            });
        self.child = Some(child);
        wait_until(&format!("redis-server on port {port} to answer PING"), Duration::from_secs(30), || {
            self.command("PING").filter(|reply| reply.starts_with("+PONG"))
        });
    }

    /// Kills the server (SIGKILL: connections drop as in a crash) and waits for it to be
    /// gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends one inline command and returns the first line of the reply; `None` when the
    /// server is not reachable.
    pub fn command(&self, command: &str) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
        let mut reply = [0u8; 512];
        let n = stream.read(&mut reply).ok()?;
        Some(String::from_utf8_lossy(&reply[..n]).into_owned())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------
// The service binaries

/// Where the services send spans.
#[derive(Clone, Debug)]
pub enum Tracing {
    /// OTLP gRPC to this endpoint.
    To(String),
    /// `OTEL_SDK_DISABLED=true`.
    Off,
    /// OTLP gRPC to this endpoint, without waiting for span export before acknowledging
    /// work (`PIPELINE_SPAN_FLUSH_TIMEOUT_MS=0`): what the flushes cost.
    ToWithoutFlush(String),
}

/// One of the three service binaries, running; killed on drop (its log printed if the test
/// is failing).
pub struct ServiceProcess {
    pub name: &'static str,
    pub metrics_addr: String,
    child: Option<Child>,
    /// Set when the process was seen to exit.
    exited: Option<ExitStatus>,
    log: PathBuf,
}

fn log_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("spindle-pipeline-tests");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

impl ServiceProcess {
    /// Starts `name` (`ingestion-service`, ...) with `args`, its metrics on a free port.
    pub fn start(name: &'static str, binary: &str, args: &[String], tracing: &Tracing) -> Self {
        let metrics_addr = format!("127.0.0.1:{}", free_port());
        let log = log_dir().join(format!("{name}-{}.log", unique_suffix()));
        let file = std::fs::File::create(&log).expect("service log file");
        let mut command = Command::new(binary);
        command
            .args(args)
            .args(["--metrics-addr", &metrics_addr])
            .env("RUST_LOG", "info,rdkafka=warn")
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .env("OTEL_BSP_MAX_QUEUE_SIZE", "65536")
            .env_remove("OTEL_SERVICE_NAME")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env_remove("PIPELINE_SPAN_FLUSH_TIMEOUT_MS")
            .stdout(file.try_clone().expect("log file handle"))
            .stderr(file);
        match tracing {
            Tracing::To(endpoint) => {
                command.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint).env("OTEL_SDK_DISABLED", "false")
            }
            Tracing::Off => command.env("OTEL_SDK_DISABLED", "true"),
            Tracing::ToWithoutFlush(endpoint) => command
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
                .env("OTEL_SDK_DISABLED", "false")
                .env("PIPELINE_SPAN_FLUSH_TIMEOUT_MS", "0"),
        };
        let child = command.spawn().unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        let mut service = Self { name, metrics_addr, child: Some(child), exited: None, log };
        let health = format!("http://{}/healthz", service.metrics_addr);
        wait_until(&format!("{name} to serve /healthz"), Duration::from_secs(60), || {
            if let Some(status) = service.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                // A short ingestion run may be done before the first probe.
                assert!(status.success(), "{name} exited early with {status}:\n{}", service.log_text());
                service.exited = Some(status);
                return Some(());
            }
            http_get(&health).map(|_| ())
        });
        service
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().filter(|_| self.exited.is_none()).map(Child::id)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(status) = self.exited {
            return status;
        }
        let name = self.name;
        let child = self.child.as_mut().expect("running");
        let status = wait_until(&format!("{name} to exit"), timeout, || child.try_wait().ok().flatten());
        self.exited = Some(status);
        status
    }

    /// SIGTERM, then waits for the graceful exit.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit(timeout)
    }

    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
            unsafe { libc::kill(pid as i32, signal) };
        }
    }

    /// CPU time (user + system) the process has used so far, also readable after it exited
    /// and before it is reaped.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds_of(self.child.as_ref().map(Child::id).expect("started"))
    }

    /// `/healthz`: status code and body.
    pub fn healthz(&self) -> Option<(u16, String)> {
        http_get(&format!("http://{}/healthz", self.metrics_addr))
    }

    /// The samples of `/metrics` whose name and labels start with `prefix`, summed
    /// (`pipeline_messages_in_total{` sums every topic).
    pub fn metric(&self, prefix: &str) -> f64 {
        self.metric_if_present(prefix).unwrap_or(0.0)
    }

    /// Like [`ServiceProcess::metric`], `None` while no sample matches.
    pub fn metric_if_present(&self, prefix: &str) -> Option<f64> {
        let (_, body) = http_get(&format!("http://{}/metrics", self.metrics_addr))?;
        let values: Vec<f64> = body
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- {} log ({}) ----\n{}", self.name, self.log.display(), self.log_text());
        }
    }
}

/// CPU time (user + system) process `pid` has used, from `/proc/PID/stat`.
pub fn cpu_seconds_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_else(|e| panic!("/proc/{pid}/stat: {e}"));
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap_or(0.0) + fields[12].parse::<f64>().unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / per_second
}

/// The pid of the process whose command line contains `arg` (a unique address).
pub fn pid_with_arg(arg: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        cmdline.split(|b| *b == 0).any(|a| a == arg.as_bytes()).then_some(pid)
    })
}

/// What a traced test of the whole pipeline runs against: spindle, tansu holding the
/// pipeline's topics, and a database and a Redis of its own.
pub struct TracedPeers {
    pub spindle: Spindle,
    pub tansu: Tansu,
    pub db: TestDatabase,
    pub redis: Redis,
}

impl TracedPeers {
    pub fn start() -> Self {
        Self {
            spindle: Spindle::start(),
            tansu: Tansu::start(&TOPICS),
            db: TestDatabase::create(),
            redis: Redis::start(),
        }
    }

    /// The services' peers, their spans exported to this spindle over OTLP gRPC.
    pub fn peers(&self) -> Peers<'_> {
        Peers {
            brokers: &self.tansu.bootstrap,
            database_url: &self.db.url,
            redis_url: &self.redis.url,
            tracing: Tracing::To(self.spindle.otlp_grpc.clone()),
        }
    }

    pub fn api(&self) -> SpindleApi<'_> {
        SpindleApi(&self.spindle.query)
    }
}

/// What a test runs the pipeline against.
pub struct Peers<'a> {
    pub brokers: &'a str,
    pub database_url: &'a str,
    /// Ingestion's reference-data cache.
    pub redis_url: &'a str,
    pub tracing: Tracing,
}

impl Peers<'_> {
    pub fn ingestion(&self, extra: &[&str]) -> ServiceProcess {
        // A generous Redis timeout unless the test sets one: on a loaded test machine a debug
        // build's GET can take longer than the default 200 ms, and the tests assert that no
        // lookup failed.
        let timeout: &[&str] =
            if extra.contains(&"--redis-timeout-ms") { &[] } else { &["--redis-timeout-ms", "5000"] };
        let args = [&["--brokers", self.brokers, "--redis-url", self.redis_url][..], timeout, extra].concat();
        self.start("ingestion-service", env!("CARGO_BIN_EXE_ingestion-service"), &args)
    }

    pub fn processor(&self, extra: &[&str]) -> ServiceProcess {
        let args = [&["--brokers", self.brokers][..], extra].concat();
        self.start("processor-service", env!("CARGO_BIN_EXE_processor-service"), &args)
    }

    pub fn storage(&self, extra: &[&str]) -> ServiceProcess {
        let args = [&["--brokers", self.brokers, "--database-url", self.database_url][..], extra].concat();
        self.start("storage-service", env!("CARGO_BIN_EXE_storage-service"), &args)
    }

    fn start(&self, name: &'static str, binary: &str, args: &[&str]) -> ServiceProcess {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        ServiceProcess::start(name, binary, &args, &self.tracing)
    }
}

// ---------------------------------------------------------------------------------------
// Kafka

/// Produces one record as an outside client would, headers as given.
pub fn produce_raw(brokers: &str, topic: &str, key: Option<&str>, payload: &[u8], headers: &[(&str, &str)]) {
    let producer: ThreadedProducer<DefaultProducerContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create().expect("test producer");
    let mut owned = OwnedHeaders::new();
    for (k, v) in headers {
        owned = owned.insert(Header { key: k, value: Some(*v) });
    }
    let mut record = BaseRecord::to(topic).payload(payload).headers(owned);
    if let Some(key) = key {
        record = record.key(key);
    }
    producer.send(record).map_err(|(e, _)| e).expect("record queued");
    producer.flush(Duration::from_secs(15)).expect("record delivered");
}

/// Reads `topic` from the beginning until `expected` records arrived.
pub fn consume(brokers: &str, topic: &str, expected: usize, timeout: Duration) -> Vec<OwnedMessage> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("test-reader-{}", unique_suffix()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("test consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::new();
    wait_until(&format!("{expected} records on {topic}"), timeout, || {
        while let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push(m.detach());
        }
        (out.len() >= expected).then_some(())
    });
    out
}

/// The headers of a record as (key, UTF-8 value) pairs.
pub fn headers_of(message: &OwnedMessage) -> BTreeMap<String, String> {
    use spindle_sdk::rdkafka::message::Headers;
    message
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Spindle's query API (Jaeger JSON)

#[derive(Debug, Deserialize)]
struct JaegerResponse {
    data: Vec<JaegerTrace>,
}

#[derive(Debug, Deserialize)]
struct JaegerTrace {
    #[serde(rename = "traceID")]
    trace_id: String,
    spans: Vec<RawSpan>,
    processes: BTreeMap<String, Process>,
}

#[derive(Debug, Deserialize)]
struct Process {
    #[serde(rename = "serviceName")]
    service_name: String,
}

#[derive(Debug, Deserialize)]
struct RawSpan {
    #[serde(rename = "spanID")]
    span_id: String,
    #[serde(rename = "operationName")]
    operation_name: String,
    #[serde(rename = "processID")]
    process_id: String,
    #[serde(default)]
    references: Vec<Reference>,
    #[serde(default)]
    tags: Vec<Tag>,
}

#[derive(Debug, Deserialize)]
struct Reference {
    #[serde(rename = "refType")]
    ref_type: String,
    #[serde(rename = "spanID")]
    span_id: String,
}

#[derive(Debug, Deserialize)]
struct Tag {
    key: String,
    value: serde_json::Value,
}

/// One span of a trace read back from Spindle.
#[derive(Debug, Clone)]
pub struct SpanView {
    pub span_id: String,
    pub service: String,
    pub name: String,
    pub parent: Option<String>,
    pub tags: BTreeMap<String, String>,
}

impl SpanView {
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }

    pub fn is_error(&self) -> bool {
        self.tag("error") == Some("true") || self.tag("otel.status_code") == Some("ERROR")
    }
}

fn flatten(trace: JaegerTrace) -> (String, Vec<SpanView>) {
    let spans = trace
        .spans
        .into_iter()
        .map(|s| SpanView {
            service: trace.processes.get(&s.process_id).map(|p| p.service_name.clone()).unwrap_or_default(),
            parent: s.references.iter().find(|r| r.ref_type == "CHILD_OF").map(|r| r.span_id.clone()),
            tags: s
                .tags
                .into_iter()
                .map(|t| (t.key, t.value.as_str().map_or_else(|| t.value.to_string(), str::to_owned)))
                .collect(),
            span_id: s.span_id,
            name: s.operation_name,
        })
        .collect();
    (trace.trace_id, spans)
}

/// Spindle's query API at `base` (`http://127.0.0.1:PORT`).
pub struct SpindleApi<'a>(pub &'a str);

impl SpindleApi<'_> {
    fn get(&self, path_and_query: &str) -> Option<serde_json::Value> {
        let (code, body) = http_get(&format!("{}{path_and_query}", self.0))?;
        (code == 200).then(|| serde_json::from_str(&body).ok()).flatten()
    }

    /// The spans of trace `trace_id` stored so far.
    pub fn trace(&self, trace_id: &str) -> Vec<SpanView> {
        self.get(&format!("/api/traces/{trace_id}"))
            .and_then(|v| serde_json::from_value::<JaegerResponse>(v).ok())
            .and_then(|r| r.data.into_iter().next())
            .map(|t| flatten(t).1)
            .unwrap_or_default()
    }

    /// Polls until trace `trace_id` holds `count` spans.
    pub fn wait_for_trace(&self, trace_id: &str, count: usize, timeout: Duration) -> Vec<SpanView> {
        wait_until(&format!("{count} spans of trace {trace_id} in spindle"), timeout, || {
            let spans = self.trace(trace_id);
            (spans.len() >= count).then_some(spans)
        })
    }

    /// Trace ids of `service` whose spans carry tag `key=value`, over the last hour.
    pub fn search_by_tag(&self, service: &str, key: &str, value: &str) -> Vec<String> {
        let tags = format!("{{\"{key}\":\"{value}\"}}");
        let encoded: String = tags.bytes().map(|b| format!("%{b:02X}")).collect();
        self.get(&format!("/api/traces?service={service}&tags={encoded}&limit=10000&lookback=1h"))
            .and_then(|v| serde_json::from_value::<JaegerResponse>(v).ok())
            .map(|r| r.data.into_iter().map(|t| t.trace_id).collect())
            .unwrap_or_default()
    }

    /// `/api/dependencies` over the last hour: (parent, child) → call count.
    pub fn dependencies(&self) -> BTreeMap<(String, String), u64> {
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let body = self.get(&format!("/api/dependencies?endTs={now_ms}&lookback=3600000")).unwrap_or_default();
        body["data"]
            .as_array()
            .map(|links| {
                links
                    .iter()
                    .map(|l| {
                        let text = |k: &str| l[k].as_str().unwrap_or_default().to_owned();
                        ((text("parent"), text("child")), l["callCount"].as_u64().unwrap_or(0))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------
// A TCP proxy that can be cut

/// Forwards 127.0.0.1:`port` to `target` until [`TcpProxy::stop`], which closes the
/// listener and every connection, as a network partition or a database restart would;
/// [`TcpProxy::start`] listens on the same port again.
pub struct TcpProxy {
    pub port: u16,
    target: SocketAddr,
    running: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl TcpProxy {
    pub fn new(target: SocketAddr) -> Self {
        let mut proxy = Self {
            port: free_port(),
            target,
            running: Arc::new(AtomicBool::new(false)),
            connections: Arc::new(Mutex::new(Vec::new())),
            acceptor: None,
        };
        proxy.start();
        proxy
    }

    pub fn start(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).expect("proxy port is free again");
        listener.set_nonblocking(true).expect("nonblocking listener");
        self.running.store(true, Ordering::SeqCst);
        let (running, connections, target) = (Arc::clone(&self.running), Arc::clone(&self.connections), self.target);
        self.acceptor = Some(std::thread::spawn(move || {
            while running.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        let Ok(server) = TcpStream::connect(target) else { continue };
                        if let Ok(mut list) = connections.lock() {
                            list.extend(client.try_clone().ok());
                            list.extend(server.try_clone().ok());
                        }
                        pipe(&client, &server);
                        pipe(&server, &client);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }));
    }

    pub fn stop(&mut self) {
        self.running.store(false, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        if let Ok(mut list) = self.connections.lock() {
            for stream in list.drain(..) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }
}

fn pipe(from: &TcpStream, to: &TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else { return };
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------
// Timed runs (throughput and CPU)

/// One run of `messages` snapshots through a fresh broker and database.
#[derive(Debug, Clone, Copy)]
pub struct RunStats {
    /// From starting ingestion to the last row in PostgreSQL.
    pub elapsed: Duration,
    pub messages: u64,
    /// CPU seconds during the run of ingestion (all of it), processor and storage.
    pub cpu: [f64; 3],
}

impl RunStats {
    pub fn throughput(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }

    pub fn cpu_total(&self) -> f64 {
        self.cpu.iter().sum()
    }

    /// CPU microseconds per message across the three services.
    pub fn cpu_per_message_us(&self) -> f64 {
        self.cpu_total() * 1e6 / self.messages as f64
    }
}

/// Runs `messages` snapshots at `rate` a second (0: flat out) through the three services,
/// tracing as `tracing` says, on a new broker and database; processor and storage are up
/// before the clock starts.
pub fn timed_run(tracing: Tracing, messages: u64, rate: f64) -> RunStats {
    let tansu = Tansu::start(&TOPICS);
    let db = TestDatabase::create();
    let redis = Redis::start();
    let peers = Peers { brokers: &tansu.bootstrap, database_url: &db.url, redis_url: &redis.url, tracing };
    let storage = peers.storage(&[]);
    let processor = peers.processor(&[]);
    // The table exists once storage is consuming: creating it is not part of the run.
    wait_until("the schema", Duration::from_secs(60), || {
        db.query("SELECT to_regclass('option_analytics') IS NOT NULL")[0][0].eq("t").then_some(())
    });
    let (count, rate) = (messages.to_string(), rate.to_string());
    let before = [processor.cpu_seconds(), storage.cpu_seconds()];
    let start = Instant::now();
    let ingestion = peers.ingestion(&["--count", &count, "--rate", &rate]);
    wait_until(&format!("{messages} rows"), Duration::from_secs(600), || (db.count() >= messages).then_some(()));
    let elapsed = start.elapsed();
    let cpu = [ingestion.cpu_seconds(), processor.cpu_seconds() - before[0], storage.cpu_seconds() - before[1]];
    assert_eq!(db.count(), messages, "every snapshot stored exactly once");
    RunStats { elapsed, messages, cpu }
}
