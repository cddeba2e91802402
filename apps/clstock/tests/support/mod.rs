//! End-to-end harness: a real `spindle` server and the two ClStock binaries as child
//! processes on free loopback ports, and a reader of Spindle's Jaeger JSON traces.
//!
//! Spindle is started by `spindle-test-support` (its binary is `$SPINDLE_BIN`, else the
//! workspace's `target/debug/spindle`, built when missing or stale). Children are killed on
//! drop, so a failing test leaves no process behind.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::BTreeMap;
use std::ops::Deref;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use spindle_test_support::free_port;
pub use spindle_test_support::wait_until;

/// How long spans may take to become readable in Spindle.
pub const TRACE_WAIT: Duration = Duration::from_secs(30);

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().expect("http client")
}

/// A child process that is killed when dropped.
pub struct Process {
    name: String,
    child: Child,
}

impl Process {
    fn spawn(name: &str, command: &mut Command) -> Self {
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self { name: name.to_owned(), child }
    }

    /// Waits until `url` answers 200, failing if the process exits first.
    fn wait_healthy(&mut self, url: &str) {
        let http = client();
        wait_until(&format!("{} at {url}", self.name), Duration::from_secs(60), || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited early with {status}", self.name);
            }
            http.get(url).send().ok().filter(|r| r.status().is_success()).map(|_| ())
        });
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One span of a trace read back from Spindle.
#[derive(Debug, Clone)]
pub struct TraceSpan {
    pub span_id: String,
    /// `references[0].spanID`: the parent, `None` for a root.
    pub parent: Option<String>,
    pub operation: String,
    pub service: String,
    /// Microseconds since the epoch.
    pub start: u64,
    pub duration: u64,
    pub tags: BTreeMap<String, String>,
    /// Each log (span event) as its fields.
    pub logs: Vec<BTreeMap<String, String>>,
}

impl TraceSpan {
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }

    pub fn is_error(&self) -> bool {
        self.tag("error") == Some("true")
    }

    /// The log whose `event` field is `name`.
    pub fn event(&self, name: &str) -> Option<&BTreeMap<String, String>> {
        self.logs.iter().find(|l| l.get("event").map(String::as_str) == Some(name))
    }
}

fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

fn fields(list: &Value) -> BTreeMap<String, String> {
    list.as_array()
        .map(|items| items.iter().map(|t| (text(&t["key"]), text(&t["value"]))).collect())
        .unwrap_or_default()
}

/// Every span of the first trace of a Jaeger JSON `/api/traces/{id}` answer.
pub fn parse_trace(body: &Value) -> Vec<TraceSpan> {
    let trace = &body["data"][0];
    let Some(spans) = trace["spans"].as_array() else {
        return Vec::new();
    };
    spans
        .iter()
        .map(|s| TraceSpan {
            span_id: text(&s["spanID"]),
            parent: s["references"].get(0).map(|r| text(&r["spanID"])),
            operation: text(&s["operationName"]),
            service: text(&trace["processes"][text(&s["processID"])]["serviceName"]),
            start: s["startTime"].as_u64().unwrap_or_default(),
            duration: s["duration"].as_u64().unwrap_or_default(),
            tags: fields(&s["tags"]),
            logs: s["logs"]
                .as_array()
                .map(|logs| logs.iter().map(|l| fields(&l["fields"])).collect())
                .unwrap_or_default(),
        })
        .collect()
}

/// A trace's spans with lookups by name and by parentage.
#[derive(Debug)]
pub struct Trace(pub Vec<TraceSpan>);

impl Trace {
    pub fn named<'a>(&'a self, service: &'a str, operation: &'a str) -> impl Iterator<Item = &'a TraceSpan> + 'a {
        self.0.iter().filter(move |s| s.service == service && s.operation == operation)
    }

    /// The only span `operation` of `service`.
    pub fn one(&self, service: &str, operation: &str) -> &TraceSpan {
        let found: Vec<&TraceSpan> =
            self.0.iter().filter(|s| s.service == service && s.operation == operation).collect();
        assert_eq!(found.len(), 1, "exactly one {operation:?} of {service}, in {:#?}", self.summary());
        found[0]
    }

    pub fn parent_of(&self, span: &TraceSpan) -> Option<&TraceSpan> {
        let parent = span.parent.as_ref()?;
        self.0.iter().find(|s| &s.span_id == parent)
    }

    pub fn children_of<'a>(&'a self, span: &'a TraceSpan) -> impl Iterator<Item = &'a TraceSpan> + 'a {
        self.0.iter().filter(move |s| s.parent.as_deref() == Some(span.span_id.as_str()))
    }

    /// `span` and its ancestors up to the root, as `operation@service`. A parent missing from
    /// the trace ends the chain with `?`.
    pub fn ancestry(&self, span: &TraceSpan) -> Vec<String> {
        let mut chain = vec![format!("{}@{}", span.operation, span.service)];
        let mut current = span;
        while current.parent.is_some() {
            match self.parent_of(current) {
                Some(parent) => {
                    chain.push(format!("{}@{}", parent.operation, parent.service));
                    current = parent;
                }
                None => {
                    chain.push("?".to_owned());
                    break;
                }
            }
        }
        chain
    }

    /// One line per span, for failure messages.
    pub fn summary(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|s| {
                format!("{} {}@{} parent={:?} error={}", s.span_id, s.operation, s.service, s.parent, s.is_error())
            })
            .collect()
    }
}

/// A spindle server (the shared launcher's) and readers of its traces.
pub struct Spindle(spindle_test_support::Spindle);

impl Deref for Spindle {
    type Target = spindle_test_support::Spindle;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Spindle {
    pub fn start() -> Self {
        Self(spindle_test_support::Spindle::start())
    }

    /// Polls trace `trace_id` until `complete` holds for its spans.
    pub fn wait_for_trace(&self, trace_id: &str, what: &str, complete: impl Fn(&Trace) -> bool) -> Trace {
        let http = client();
        let url = format!("{}/api/traces/{trace_id}", self.query);
        let mut last = Trace(Vec::new());
        let deadline = Instant::now() + TRACE_WAIT;
        loop {
            if let Ok(response) = http.get(&url).send() {
                if let Ok(body) = response.json::<Value>() {
                    last = Trace(parse_trace(&body));
                    if complete(&last) {
                        return last;
                    }
                }
            }
            assert!(Instant::now() < deadline, "trace {trace_id} never had {what}; last read: {:#?}", last.summary());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls trace `trace_id` until it holds at least `count` spans.
    pub fn wait_for_spans(&self, trace_id: &str, count: usize) -> Trace {
        self.wait_for_trace(trace_id, &format!("{count} spans"), |t| t.0.len() >= count)
    }
}

/// A running ClStock binary.
pub struct Service {
    pub url: String,
    _process: Process,
}

fn clstock_command(binary: &str, spindle: &Spindle, grpc: bool) -> Command {
    let mut command = Command::new(binary);
    // Spans leave every 100 ms; the market-data service exports over OTLP/HTTP and the API
    // over gRPC, so both transports are exercised.
    let (protocol, endpoint) = if grpc { ("grpc", &spindle.otlp_grpc) } else { ("http/protobuf", &spindle.otlp_http) };
    command
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_RESOURCE_ATTRIBUTES")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("RUST_LOG", "error");
    command
}

impl Service {
    /// `market-data-service` with `settings` (`MARKET_DATA_*` variable, value) on top of
    /// fast, failure-free defaults.
    pub fn market_data(spindle: &Spindle, settings: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut command = clstock_command(env!("CARGO_BIN_EXE_market-data-service"), spindle, false);
        command
            .env("MARKET_DATA_LISTEN", format!("127.0.0.1:{port}"))
            .env("MARKET_DATA_LATENCY_MS", "2")
            .env("MARKET_DATA_ERROR_RATE", "0")
            .env("MARKET_DATA_EMPTY_RATE", "0")
            .envs(settings.iter().copied());
        Self::start("market-data-service", port, &mut command)
    }

    /// `clstock-api` calling `market_data`, saving its model at `model_path`.
    pub fn api(spindle: &Spindle, market_data: &Service, model_path: &Path) -> Self {
        let port = free_port();
        let mut command = clstock_command(env!("CARGO_BIN_EXE_clstock-api"), spindle, true);
        command
            .env("CLSTOCK_LISTEN", format!("127.0.0.1:{port}"))
            .env("CLSTOCK_MARKET_DATA_URL", &market_data.url)
            .env("CLSTOCK_MODEL_PATH", model_path);
        Self::start("clstock-api", port, &mut command)
    }

    fn start(name: &str, port: u16, command: &mut Command) -> Self {
        let url = format!("http://127.0.0.1:{port}");
        let mut process = Process::spawn(name, command);
        process.wait_healthy(&format!("{url}/healthz"));
        Self { url, _process: process }
    }

    pub fn get(&self, path: &str) -> Reply {
        Reply::from(client().get(format!("{}{path}", self.url)).send().expect("request is answered"))
    }

    pub fn post(&self, path: &str, body: &str) -> Reply {
        let request = client().post(format!("{}{path}", self.url)).header("content-type", "application/json");
        Reply::from(request.body(body.to_owned()).send().expect("request is answered"))
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// The `x-trace-id` header: the trace of this request.
    pub trace_id: Option<String>,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not json ({e}): {}", self.body))
    }

    pub fn trace_id(&self) -> &str {
        self.trace_id.as_deref().unwrap_or_else(|| panic!("no x-trace-id header: {self:?}"))
    }
}

impl From<reqwest::blocking::Response> for Reply {
    fn from(response: reqwest::blocking::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let trace_id = headers.get("x-trace-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = response.text().unwrap_or_default();
        Self { status, trace_id, headers, body }
    }
}
