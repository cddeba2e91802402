//! What the reliability tests share: a `spindle` process that can be SIGKILLed and restarted
//! on the same data directory and ports, OTLP clients (HTTP protobuf and gRPC) that record
//! each request's outcome, reading traces back through the Jaeger API, `/metrics` and RSS.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use spindle_test_support::{free_port, free_udp_port, wait_until};

/// The service name every test span carries.
pub const SERVICE: &str = "reliability";

/// A number from the environment (the longer variants of `scripts/reliability`), else `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a valid number")),
        Err(_) => default,
    }
}

/// Prints one figure line; `scripts/reliability` collects the lines starting with `figure:`.
pub fn figure(test: &str, text: impl std::fmt::Display) {
    println!("figure: {test}: {text}");
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The real `spindle` binary (the one built with this test's profile) on fixed free ports, so
/// a restart on the same data directory is the same server to its clients. Its log goes to a
/// file outside the data directory (which may be a full filesystem).
pub struct Server {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub query: SocketAddr,
    pub admin: SocketAddr,
    others: Vec<(String, String)>,
    extra: Vec<String>,
    log_dir: tempfile::TempDir,
    starts: usize,
}

impl Server {
    /// Starts the server on `data_dir` with default settings plus `extra` flags, and waits
    /// until `/readyz` answers 200.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        let others = [
            ("--jaeger-http-addr", addr(free_port())),
            ("--jaeger-grpc-addr", addr(free_port())),
            ("--zipkin-addr", addr(free_port())),
            ("--sampling-addr", addr(free_port())),
            ("--jaeger-compact-addr", addr(free_udp_port())),
            ("--jaeger-binary-addr", addr(free_udp_port())),
        ];
        let mut server = Server {
            child: None,
            data_dir: data_dir.to_path_buf(),
            http: addr(free_port()),
            grpc: addr(free_port()),
            query: addr(free_port()),
            admin: addr(free_port()),
            others: others.iter().map(|(f, a)| (f.to_string(), a.to_string())).collect(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            log_dir: tempfile::tempdir().expect("log dir"),
            starts: 0,
        };
        server.spawn();
        server
    }

    /// Spawns the process and returns how long it took to answer `/readyz` with 200.
    pub fn spawn(&mut self) -> Duration {
        assert!(self.child.is_none(), "already running");
        self.starts += 1;
        let log = std::fs::File::create(self.log_dir.path().join(format!("spindle-{}.log", self.starts))).unwrap();
        let started = Instant::now();
        let child = Command::new(env!("CARGO_BIN_EXE_spindle"))
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--otlp-http-addr", &self.http.to_string(), "--otlp-grpc-addr", &self.grpc.to_string()])
            .args(["--query-addr", &self.query.to_string(), "--admin-addr", &self.admin.to_string()])
            .args(self.others.iter().flat_map(|(f, a)| [f, a]))
            .args(&self.extra)
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env("SPINDLE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn spindle");
        self.child = Some(child);
        let url = format!("http://{}/readyz", self.admin);
        let client = blocking_client(Duration::from_secs(2));
        wait_until("spindle /readyz", Duration::from_secs(120), || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("spindle exited before it was ready: {status}\n{}", self.log_tail());
            }
            client.get(&url).send().ok().filter(|r| r.status().is_success()).map(|_| ())
        });
        started.elapsed()
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("reap");
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Whether the process is alive (not exited, not killed).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// The last lines of the current run's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let path = self.log_dir.path().join(format!("spindle-{}.log", self.starts));
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!("--- spindle log (last lines) ---\n{}", lines[lines.len().saturating_sub(30)..].join("\n"))
    }

    /// The whole log of every run so far.
    pub fn logs(&self) -> String {
        (1..=self.starts)
            .map(|n| std::fs::read_to_string(self.log_dir.path().join(format!("spindle-{n}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn metrics(&self) -> Metrics {
        let text = blocking_client(Duration::from_secs(30))
            .get(format!("http://{}/metrics", self.admin))
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.text())
            .unwrap_or_else(|e| panic!("GET /metrics: {e}"));
        Metrics(text)
    }

    /// `GET` on the query port: status and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        let r = blocking_client(Duration::from_secs(30))
            .get(format!("http://{}{path}", self.query))
            .send()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = r.status().as_u16();
        (status, r.text().unwrap_or_default())
    }

    /// `/proc/<pid>/status` fields in kB: (VmRSS, VmHWM — the peak RSS the kernel saw).
    pub fn rss_kb(&self) -> (u64, u64) {
        rss_kb(self.pid()).expect("the server's /proc status")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn rss_kb(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

pub fn blocking_client(timeout: Duration) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(timeout).build().expect("client")
}

/// A `/metrics` scrape.
pub struct Metrics(pub String);

impl Metrics {
    /// The sum of every sample of `name` whose labels contain each of `labels` (`key="value"`).
    pub fn sum(&self, name: &str, labels: &[&str]) -> u64 {
        self.samples(name).filter(|(l, _)| labels.iter().all(|want| l.contains(want))).map(|(_, v)| v).sum()
    }

    /// Every sample of `name`: its label text and value.
    pub fn samples<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (&'a str, u64)> + 'a {
        self.0.lines().filter(|l| !l.starts_with('#')).filter_map(move |line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => {
                    let (labels, value) = r.split_once('}')?;
                    (labels, value)
                }
                None if rest.starts_with(' ') => ("", rest),
                None => return None,
            };
            let value: f64 = value.split_whitespace().next()?.parse().ok()?;
            Some((labels, value as u64))
        })
    }

    /// Samples of `name` by label text, for failure messages.
    pub fn by_labels(&self, name: &str) -> HashMap<String, u64> {
        self.samples(name).map(|(l, v)| (l.to_string(), v)).collect()
    }
}

fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// Requests of `traces` traces of `spans` spans each. The protobuf body is encoded once; each
/// batch only writes its trace ids into it, so the client spends its CPU on sending (it
/// shares the machine with the server it overloads).
pub struct Batches {
    pub traces: usize,
    pub spans: usize,
    template: ExportTraceServiceRequest,
    body: Vec<u8>,
    /// Per trace of the batch, where its id sits in `body`.
    offsets: Vec<Vec<usize>>,
}

fn sentinel(k: usize) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&0x5ac3_963c_a569_0ff0u64.to_be_bytes());
    id[8..].copy_from_slice(&(k as u64).to_be_bytes());
    id
}

impl Batches {
    pub fn new(traces: usize, spans: usize) -> Batches {
        let start = now_nanos();
        let kv = |key: &str, value: &str| KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
            key_strindex: 0,
        };
        let spans_of = |k: usize| {
            (1..=spans as u64).map(move |i| Span {
                trace_id: sentinel(k).to_vec(),
                span_id: ((k as u64) << 32 | i).to_be_bytes().to_vec(),
                parent_span_id: if i == 1 { vec![] } else { ((k as u64) << 32 | 1).to_be_bytes().to_vec() },
                name: format!("op-{}", i % 5),
                start_time_unix_nano: start + i * 1000,
                end_time_unix_nano: start + i * 1000 + 500_000,
                attributes: vec![kv("http.route", "/reliability/{id}")],
                ..Default::default()
            })
        };
        let template = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource { attributes: vec![kv("service.name", SERVICE)], ..Default::default() }),
                scope_spans: vec![ScopeSpans { spans: (0..traces).flat_map(spans_of).collect(), ..Default::default() }],
                schema_url: String::new(),
            }],
        };
        let body = template.encode_to_vec();
        let offsets: Vec<Vec<usize>> = (0..traces)
            .map(|k| {
                let needle = sentinel(k);
                let found: Vec<usize> =
                    body.windows(16).enumerate().filter(|(_, w)| *w == needle).map(|(i, _)| i).collect();
                assert_eq!(found.len(), spans, "trace {k}'s id appears once per span");
                found
            })
            .collect();
        Batches { traces, spans, template, body, offsets }
    }

    pub fn spans_per_batch(&self) -> u64 {
        (self.traces * self.spans) as u64
    }

    /// The protobuf body of a batch whose traces have the ids `ids`.
    pub fn body(&self, ids: &[u128]) -> Vec<u8> {
        let mut body = self.body.clone();
        for (offsets, id) in self.offsets.iter().zip(ids) {
            for &at in offsets {
                body[at..at + 16].copy_from_slice(&id.to_be_bytes());
            }
        }
        body
    }

    /// The same batch as a message, for the gRPC client.
    pub fn message(&self, ids: &[u128]) -> ExportTraceServiceRequest {
        let mut message = self.template.clone();
        let spans = &mut message.resource_spans[0].scope_spans[0].spans;
        for (k, chunk) in spans.chunks_mut(self.spans).enumerate() {
            for span in chunk {
                span.trace_id = ids[k].to_be_bytes().to_vec();
            }
        }
        message
    }
}

/// How the server answered one export request.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Stored: HTTP 200 / gRPC OK with no rejected spans.
    Acked,
    /// Backpressure: HTTP 429 or 503 (with whether `Retry-After` was sent), gRPC
    /// RESOURCE_EXHAUSTED or UNAVAILABLE from the server.
    Refused { answer: String, retry_after: bool },
    /// Anything else: a transport error, a timeout, another status.
    Failed(String),
}

/// One OTLP client: HTTP protobuf, or gRPC over one channel.
#[derive(Clone)]
pub enum Client {
    Http { client: reqwest::Client, url: String },
    Grpc(TraceServiceClient<tonic::transport::Channel>),
}

impl Client {
    pub fn http(server: &Server, timeout: Duration) -> Client {
        let client = reqwest::Client::builder().timeout(timeout).build().expect("client");
        Client::Http { client, url: format!("http://{}/v1/traces", server.http) }
    }

    /// A gRPC client whose channel connects lazily (and reconnects after a restart).
    pub fn grpc(server: &Server, timeout: Duration, runtime: &tokio::runtime::Runtime) -> Client {
        // The channel's connection task runs on `runtime`.
        let _runtime = runtime.enter();
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc))
            .unwrap()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .connect_lazy();
        Client::Grpc(TraceServiceClient::new(channel).max_encoding_message_size(64 << 20))
    }

    pub fn protocol(&self) -> &'static str {
        match self {
            Client::Http { .. } => "http",
            Client::Grpc(_) => "grpc",
        }
    }

    pub async fn export(&mut self, batches: &Batches, ids: &[u128]) -> Outcome {
        match self {
            Client::Http { client, url } => {
                let sent = client
                    .post(url.as_str())
                    .header("content-type", "application/x-protobuf")
                    .body(batches.body(ids))
                    .send()
                    .await;
                let response = match sent {
                    Ok(r) => r,
                    Err(e) => {
                        // The causes, not just reqwest's summary line.
                        let mut causes = e.to_string();
                        let mut source = std::error::Error::source(&e);
                        while let Some(cause) = source {
                            causes += &format!(": {cause}");
                            source = cause.source();
                        }
                        return Outcome::Failed(format!("http: {causes}"));
                    }
                };
                let status = response.status().as_u16();
                let retry_after = response.headers().contains_key("retry-after");
                let body = response.bytes().await.unwrap_or_default();
                match status {
                    200 => match ExportTraceServiceResponse::decode(body.as_ref()) {
                        Ok(r) if r.partial_success.as_ref().is_none_or(|p| p.rejected_spans == 0) => Outcome::Acked,
                        Ok(r) => Outcome::Failed(format!("http 200 with partial success {:?}", r.partial_success)),
                        Err(e) => Outcome::Failed(format!("http 200 with an undecodable body: {e}")),
                    },
                    429 | 503 => Outcome::Refused { answer: format!("http {status}"), retry_after },
                    other => Outcome::Failed(format!("http {other}: {}", String::from_utf8_lossy(&body))),
                }
            }
            Client::Grpc(client) => match client.export(batches.message(ids)).await {
                Ok(r) if r.get_ref().partial_success.as_ref().is_none_or(|p| p.rejected_spans == 0) => Outcome::Acked,
                Ok(r) => Outcome::Failed(format!("grpc OK with partial success {:?}", r.get_ref().partial_success)),
                // A status the server sent (not one tonic made up for a broken connection).
                Err(s)
                    if matches!(s.code(), tonic::Code::ResourceExhausted | tonic::Code::Unavailable)
                        && !is_transport_error(&s) =>
                {
                    Outcome::Refused { answer: format!("grpc {:?}", s.code()), retry_after: false }
                }
                Err(s) => Outcome::Failed(format!("grpc {:?}: {}", s.code(), s.message())),
            },
        }
    }
}

/// Whether tonic produced `status` itself because the connection failed.
fn is_transport_error(status: &tonic::Status) -> bool {
    use std::error::Error;
    let mut source = status.source();
    while let Some(e) = source {
        if e.downcast_ref::<tonic::transport::Error>().is_some() || e.downcast_ref::<std::io::Error>().is_some() {
            return true;
        }
        source = e.source();
    }
    status.message().contains("transport error") || status.message().contains("connect")
}

/// Spans of one trace as the Jaeger API serves them: the number of spans and the number of
/// distinct span ids (equal unless a span is visible twice), or `None` when the trace is not
/// found.
pub async fn read_trace(client: &reqwest::Client, query: SocketAddr, id: u128) -> Option<(usize, usize)> {
    let url = format!("http://{query}/api/traces/{id:032x}");
    for attempt in 0.. {
        let response = match client.get(&url).send().await {
            Ok(r) => r,
            Err(e) if attempt < 5 => {
                eprintln!("GET {url}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(e) => panic!("GET {url}: {e}"),
        };
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if status == 404 {
            return None;
        }
        assert_eq!(status, 200, "GET {url}: {body}");
        let spans = body["data"][0]["spans"].as_array()?;
        let mut ids: Vec<&str> = spans.iter().filter_map(|s| s["spanID"].as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        return Some((spans.len(), ids.len()));
    }
    unreachable!()
}

/// Reads every trace of `ids` back (a few at a time) and returns those not stored whole and
/// exactly once: (id, what was found).
pub async fn missing_or_damaged(query: SocketAddr, ids: &[u128], spans: usize) -> Vec<(u128, Option<(usize, usize)>)> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let mut bad = Vec::new();
    for chunk in ids.chunks(16) {
        let reads = chunk.iter().map(|&id| {
            let client = client.clone();
            async move { (id, read_trace(&client, query, id).await) }
        });
        for (id, found) in futures_join_all(reads).await {
            if found != Some((spans, spans)) {
                bad.push((id, found));
            }
        }
    }
    bad
}

/// Awaits every future (a few at once; no extra dependency for `join_all`).
pub async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

/// A small xorshift generator: the random kill intervals, reproducible from the seed the
/// test prints.
pub struct Rng(u64);

impl Rng {
    pub fn from_env_or_clock(var: &str) -> (Rng, u64) {
        let seed = env_or(var, now_nanos() | 1);
        (Rng(seed | 1), seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `[lo, hi)`.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = (hi - lo).as_millis() as u64;
        lo + Duration::from_millis(self.next() % span.max(1))
    }
}

/// A tmpfs mounted for one test, unmounted on drop (also when the test fails).
pub struct Tmpfs {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (mount's syntax, e.g. `64m`), or fails the test naming what
    /// it needs.
    pub fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap_or_else(|e| panic!("the disk-full test needs the `mount` command to make a small filesystem: {e}"));
        assert!(
            out.status.success(),
            "the disk-full test needs to mount a {size} tmpfs (`mount -t tmpfs -o size={size} tmpfs DIR`), which \
             takes root or CAP_SYS_ADMIN; mount said: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs { path: dir.path().to_path_buf(), _dir: dir }
    }

    /// Bytes free to an unprivileged writer.
    pub fn available(&self) -> u64 {
        let path = std::ffi::CString::new(self.path.as_os_str().as_encoded_bytes()).unwrap();
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid C string and a zeroed out-parameter.
        let rc = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
        assert_eq!(rc, 0, "statvfs {}", self.path.display());
        stat.f_bavail as u64 * stat.f_frsize as u64
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let out = Command::new("umount").arg(&self.path).output();
        if !matches!(&out, Ok(o) if o.status.success()) {
            // Still busy (a process holding a file): detach it now, freed when released.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}
