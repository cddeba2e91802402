//! Launchers for the real servers the integration tests talk to: the tansu Kafka broker and
//! the spindle backend. Both run on free loopback ports and are killed on drop. A missing
//! binary fails the test with instructions; it never skips.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, free_udp_port, wait_until, workspace_root};

const TANSU_INSTALL: &str = "cargo install tansu --locked --features dynostore";

/// Where a binary named `name` is: `$VAR` if set, else on `PATH`, else in cargo's bin folder.
fn find_binary(name: &str, var: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(var) {
        return Some(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file());
    on_path.or_else(|| {
        let cargo_home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
        Some(cargo_home.join("bin").join(name)).filter(|p| p.is_file())
    })
}

fn wait_for_port(what: &str, port: u16, child: &mut Child, timeout: Duration) {
    wait_until(&format!("{what} to listen on 127.0.0.1:{port}"), timeout, || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited early with {status}");
        }
        TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
    });
}

/// A tansu broker with in-memory storage.
pub struct Tansu {
    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub bootstrap: String,
    binary: PathBuf,
    child: Child,
}

impl Tansu {
    /// Starts a broker and creates `topics` (name, partitions) on it.
    pub fn start(topics: &[(&str, u32)]) -> Self {
        let binary = find_binary("tansu", "TANSU_BIN").unwrap_or_else(|| {
            panic!(
                "the Kafka-protocol broker `tansu` is required by this test and was not found \
                 (set TANSU_BIN, or put it on PATH); install it with `{TANSU_INSTALL}`"
            )
        });
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let mut child = Command::new(&binary)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        wait_for_port("tansu", port, &mut child, Duration::from_secs(30));
        let tansu = Self { bootstrap: format!("127.0.0.1:{port}"), binary, child };
        for (topic, partitions) in topics {
            tansu.create_topic(topic, *partitions);
        }
        tansu
    }

    fn create_topic(&self, topic: &str, partitions: u32) {
        let broker = format!("tcp://{}", self.bootstrap);
        wait_until(&format!("topic {topic} to be created"), Duration::from_secs(30), || {
            let out = Command::new(&self.binary)
                .args(["topic", "create", topic, "--partitions", &partitions.to_string()])
                .args(["--broker", &broker])
                .output()
                .unwrap_or_else(|e| panic!("cannot run tansu topic create: {e}"));
            out.status.success().then_some(())
        });
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A spindle server with a temporary data directory.
pub struct Spindle {
    pub otlp_grpc: String,
    pub otlp_http: String,
    pub query: String,
    /// `127.0.0.1:PORT` of `/metrics`, `/healthz` and `/readyz`.
    pub admin: String,
    /// `http://127.0.0.1:PORT` of the Zipkin receiver.
    pub zipkin: String,
    child: Child,
    _data: tempfile::TempDir,
}

/// `$SPINDLE_BIN` (relative to the workspace root), else the workspace's debug `spindle`
/// (which `cargo test --workspace` builds before running tests), built here only when it is
/// missing.
pub fn spindle_binary() -> PathBuf {
    let root = workspace_root();
    if let Some(path) = std::env::var_os("SPINDLE_BIN") {
        return root.join(path);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let binary = target.join("debug").join("spindle");
    if binary.is_file() && !sources_newer_than(&root, &binary) {
        return binary;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-p", "spindle-server", "--bin", "spindle"])
        .current_dir(&root)
        .status()
        .expect("cargo runs");
    assert!(
        status.success(),
        "building the spindle server failed (cargo build -p spindle-server --bin spindle); \
         the end-to-end tests need it"
    );
    assert!(binary.is_file(), "no spindle binary at {}", binary.display());
    binary
}

/// Whether a source of the workspace (any `crates/*/src` file, or `Cargo.lock`) changed after
/// `binary` was built, so the binary may be stale.
fn sources_newer_than(root: &Path, binary: &Path) -> bool {
    fn newest(dir: &Path) -> Option<std::time::SystemTime> {
        std::fs::read_dir(dir)
            .ok()?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let path = e.path();
                if path.is_dir() {
                    newest(&path)
                } else {
                    e.metadata().ok()?.modified().ok()
                }
            })
            .max()
    }
    let Ok(built) = std::fs::metadata(binary).and_then(|m| m.modified()) else { return true };
    let lock = std::fs::metadata(root.join("Cargo.lock")).and_then(|m| m.modified()).ok();
    let crates = std::fs::read_dir(root.join("crates"))
        .map(|d| d.filter_map(Result::ok).filter_map(|c| newest(&c.path().join("src"))).max())
        .ok()
        .flatten();
    lock.into_iter().chain(crates).any(|t| t > built)
}

impl Spindle {
    pub fn start() -> Self {
        let binary = spindle_binary();
        let data = tempfile::tempdir().expect("temporary data dir");
        let [grpc, http, query, admin, zipkin] = [free_port(), free_port(), free_port(), free_port(), free_port()];
        let addr = |p: u16| format!("127.0.0.1:{p}");
        let mut child = Command::new(&binary)
            .arg("serve")
            .arg("--data-dir")
            .arg(data.path())
            .args(["--otlp-grpc-addr", &addr(grpc), "--otlp-http-addr", &addr(http)])
            .args(["--query-addr", &addr(query), "--admin-addr", &addr(admin)])
            // The other receivers on free ports too, so parallel tests never collide.
            .args(["--jaeger-http-addr", &addr(free_port()), "--jaeger-grpc-addr", &addr(free_port())])
            .args(["--zipkin-addr", &addr(zipkin), "--sampling-addr", &addr(free_port())])
            .args(["--jaeger-compact-addr", &addr(free_udp_port()), "--jaeger-binary-addr", &addr(free_udp_port())])
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env("SPINDLE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        wait_for_port("spindle admin", admin, &mut child, Duration::from_secs(60));
        let ready = format!("http://{}/readyz", addr(admin));
        wait_until("spindle /readyz", Duration::from_secs(60), || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("spindle exited early with {status}");
            }
            http_get(&ready).filter(|(code, _)| *code == 200).map(|_| ())
        });
        Self {
            otlp_grpc: format!("http://{}", addr(grpc)),
            otlp_http: format!("http://{}", addr(http)),
            query: format!("http://{}", addr(query)),
            admin: addr(admin),
            zipkin: format!("http://{}", addr(zipkin)),
            child,
            _data: data,
        }
    }

    /// `GET /api/traces/{trace_id}` once: the parsed body if the server answered 200.
    pub fn trace(&self, trace_id: &str) -> Option<serde_json::Value> {
        let (code, body) = http_get(&format!("{}/api/traces/{trace_id}", self.query))?;
        (code == 200).then(|| serde_json::from_str(&body).ok()).flatten()
    }
}

impl Drop for Spindle {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking GET with a short timeout: the status code and body, or `None` on a transport
/// error. Runs on its own runtime so callers need none.
pub fn http_get(url: &str) -> Option<(u16, String)> {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
        runtime.block_on(async move {
            let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().ok()?;
            let response = client.get(&url).send().await.ok()?;
            let code = response.status().as_u16();
            Some((code, response.text().await.ok()?))
        })
    })
    .join()
    .ok()
    .flatten()
}
