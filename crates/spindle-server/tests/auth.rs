//! Authentication of the listener groups (docs/SECURITY.md, "Authentication"): the real
//! `spindle` binary with a credentials file, real clients (reqwest, tonic, the OpenTelemetry
//! Python exporters), and every route of the route table refusing requests without
//! credentials.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use sha2::Digest;
use spindle_test_support::{free_port, free_udp_port, wait_until};

const INGEST: &str = "ingest-token-0123456789";
const READER: &str = "reader-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";
const EVERYTHING: &str = "everything-token-0123456789";
const GRAFANA_PASSWORD: &str = "grafana password";

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// The test credentials: the reader's token is stored as its SHA-256 only.
fn credentials(extra: &str) -> String {
    let reader_sha256: String = sha2::Sha256::digest(READER.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    // Cost 4: the server checks it in a blink even in a debug build.
    let grafana = bcrypt::hash(GRAFANA_PASSWORD, 4).unwrap();
    format!(
        r#"
[[token]]
name = "collector"
token = "{INGEST}"
write = ["*"]

[[token]]
name = "reader"
sha256 = "{reader_sha256}"
read = ["*"]

[[token]]
name = "prometheus"
token = "{ADMIN}"
admin = true

[[token]]
name = "everything"
token = "{EVERYTHING}"
read = ["*"]
write = ["*"]
admin = true

[[user]]
name = "grafana"
password = "{grafana}"
read = ["*"]
{extra}"#
    )
}

/// Replaces `path`'s content in one step, as an editor or config management would.
fn write_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

struct Server {
    child: Child,
    dir: tempfile::TempDir,
    auth_file: PathBuf,
    otlp_grpc: SocketAddr,
    otlp_http: SocketAddr,
    query: SocketAddr,
    admin: SocketAddr,
    jaeger_http: SocketAddr,
    jaeger_grpc: SocketAddr,
    zipkin: SocketAddr,
    sampling: SocketAddr,
    jaeger_compact: SocketAddr,
}

impl Server {
    fn start() -> Server {
        Self::start_with(&[])
    }

    /// Spindle with authentication on every group; `udp` replaces the Jaeger UDP addresses.
    fn start_with(udp: &[(&str, SocketAddr)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let auth_file = dir.path().join("credentials.toml");
        write_file(&auth_file, &credentials(""));
        let mut s = Server {
            child: Command::new("true").spawn().unwrap(),
            auth_file,
            otlp_grpc: loopback(),
            otlp_http: loopback(),
            query: loopback(),
            admin: loopback(),
            jaeger_http: loopback(),
            jaeger_grpc: loopback(),
            zipkin: loopback(),
            sampling: loopback(),
            jaeger_compact: SocketAddr::from(([127, 0, 0, 1], free_udp_port())),
            dir,
        };
        let mut binary = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
        for (flag, addr) in udp {
            match *flag {
                "--jaeger-compact-addr" => s.jaeger_compact = *addr,
                "--jaeger-binary-addr" => binary = *addr,
                other => panic!("{other}"),
            }
        }
        let stderr = std::fs::File::create(s.dir.path().join("stderr.log")).unwrap();
        s.child = Command::new(env!("CARGO_BIN_EXE_spindle"))
            .arg("serve")
            .arg("--data-dir")
            .arg(s.dir.path().join("data"))
            .arg("--auth-file")
            .arg(&s.auth_file)
            .args(["--auth", "ingest,query,admin"])
            .args(["--otlp-grpc-addr", &s.otlp_grpc.to_string()])
            .args(["--otlp-http-addr", &s.otlp_http.to_string()])
            .args(["--query-addr", &s.query.to_string()])
            .args(["--admin-addr", &s.admin.to_string()])
            .args(["--jaeger-compact-addr", &s.jaeger_compact.to_string()])
            .args(["--jaeger-binary-addr", &binary.to_string()])
            .args(["--jaeger-http-addr", &s.jaeger_http.to_string()])
            .args(["--jaeger-grpc-addr", &s.jaeger_grpc.to_string()])
            .args(["--zipkin-addr", &s.zipkin.to_string()])
            .args(["--sampling-addr", &s.sampling.to_string()])
            .env("SPINDLE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn spindle");
        let client = client();
        let url = format!("http://{}/readyz", s.admin);
        wait_until("spindle /readyz", Duration::from_secs(30), || {
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("spindle exited before it was ready: {status}\n{}", s.stderr());
            }
            client.get(&url).send().ok().filter(|r| r.status().is_success()).map(|_| ())
        });
        s
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    fn listener(&self, name: &str) -> SocketAddr {
        match name {
            "otlp http" => self.otlp_http,
            "jaeger http" => self.jaeger_http,
            "zipkin" => self.zipkin,
            "sampling" => self.sampling,
            "query" => self.query,
            "admin" => self.admin,
            other => panic!("unknown listener {other:?} in `spindle routes`"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ring is deprecated by rustls for lacking post-quantum key exchange; it is the build's one.
#[allow(deprecated)]
fn client() -> reqwest::blocking::Client {
    // reqwest is built without a crypto provider of its own: ring is the build's one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::new()
}

/// GET `url` with an optional bearer token: status and body.
fn get(url: &str, token: Option<&str>) -> (u16, String) {
    let mut request = client().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let r = request.send().unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

fn empty_otlp() -> Vec<u8> {
    ExportTraceServiceRequest { resource_spans: vec![] }.encode_to_vec()
}

fn post_otlp(server: &Server, token: Option<&str>) -> (u16, String) {
    let mut request = client()
        .post(format!("http://{}/v1/traces", server.otlp_http))
        .header("content-type", "application/x-protobuf")
        .body(empty_otlp());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let r = request.send().unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

/// A request path for a route-table path: sample values for its parameters.
fn sample_path(path: &str) -> String {
    path.replace("{service}", "checkout")
        .replace("{trace_id}", "0af7651916cd43dd8448eb211c80319c")
        .replace("{*rest}", "no/such/api")
}

fn grpc_code(addr: SocketAddr, path: &'static str, token: Option<&str>) -> tonic::Code {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        let mut client = tonic::client::Grpc::new(channel);
        client.ready().await.unwrap();
        let mut request = tonic::Request::new(ExportTraceServiceRequest { resource_spans: vec![] });
        if let Some(token) = token {
            request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        // Both services' requests decode from an empty message.
        let codec: tonic_prost::ProstCodec<ExportTraceServiceRequest, ()> = tonic_prost::ProstCodec::default();
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
        match client.unary(request, path, codec).await {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        }
    })
}

const OTLP_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const JAEGER_POST_SPANS: &str = "/jaeger.api_v2.CollectorService/PostSpans";

#[test]
fn every_route_of_every_listener_refuses_requests_without_credentials() {
    let output = Command::new(env!("CARGO_BIN_EXE_spindle")).arg("routes").output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let routes: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    let paths: Vec<&str> = routes.iter().filter_map(|r| r["path"].as_str()).collect();
    let open: Vec<&str> = routes.iter().filter(|r| r["open"] == true).filter_map(|r| r["path"].as_str()).collect();
    // The login paths and whoami are open only with an OpenID Connect UI login.
    assert_eq!(open, ["/api/spindle/whoami", "/healthz", "/readyz", "/auth/login", "/auth/callback", "/auth/logout"]);
    for expected in ["/v1/traces", "/api/traces", "/api/v2/spans", "/api/services", "/api/v3/traces", "/metrics", "*"] {
        assert!(paths.contains(&expected), "{expected} missing from {paths:?}");
    }

    let server = Server::start();
    let mut checked = 0;
    for route in &routes {
        let (listener, group, method, path) = (
            route["listener"].as_str().unwrap(),
            route["group"].as_str().unwrap(),
            route["method"].as_str().unwrap(),
            route["path"].as_str().unwrap(),
        );
        // Open routes: the admin probes, and the OpenID Connect login, which this server
        // (no issuer configured) does not serve: its paths fall to the protected UI.
        let open = route["open"].as_bool().unwrap() && group == "admin";
        let addr = server.listener(listener);
        // A fallback answers any other path: the UI's pages and files, the sampling handler.
        let samples: Vec<String> = match path {
            "*" => ["/", "/search?service=checkout", "/trace/abc", "/assets/none.js", "/favicon.ico"]
                .map(String::from)
                .to_vec(),
            p => vec![sample_path(p)],
        };
        for sample in samples {
            let url = format!("http://{addr}{sample}");
            for token in [None, Some("not-a-token")] {
                let mut request = match method {
                    "POST" => client().post(&url).header("content-type", "application/json").body("{}"),
                    _ => client().get(&url),
                };
                if let Some(token) = token {
                    request = request.bearer_auth(token);
                }
                let r = request.send().unwrap();
                let status = r.status().as_u16();
                if open {
                    assert_eq!(status, 200, "{listener} {method} {sample}: probes stay open");
                    continue;
                }
                let challenges: Vec<String> =
                    r.headers().get_all("www-authenticate").iter().map(|v| v.to_str().unwrap().to_string()).collect();
                let body = r.text().unwrap();
                assert_eq!(status, 401, "{listener} {method} {sample} (token {token:?}): {body}");
                assert_eq!(body, "unauthorized\n", "{listener} {method} {sample}: the 401 tells nothing more");
                assert!(challenges.contains(&"Bearer realm=\"spindle\"".to_string()), "{sample}: {challenges:?}");
                assert_eq!(
                    challenges.contains(&"Basic realm=\"spindle\"".to_string()),
                    group == "query",
                    "{listener} {sample}: a Basic challenge on the query group only: {challenges:?}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 2 * routes.len(), "{checked} requests for {} routes", routes.len());

    // Both gRPC servers: UNAUTHENTICATED without credentials or with a wrong token,
    // PERMISSION_DENIED for a token that can write nothing.
    for (addr, path) in [(server.otlp_grpc, OTLP_EXPORT), (server.jaeger_grpc, JAEGER_POST_SPANS)] {
        assert_eq!(grpc_code(addr, path, None), tonic::Code::Unauthenticated, "{path}");
        assert_eq!(grpc_code(addr, path, Some("not-a-token")), tonic::Code::Unauthenticated, "{path}");
        assert_eq!(grpc_code(addr, path, Some(READER)), tonic::Code::PermissionDenied, "{path}");
        let code = grpc_code(addr, path, Some(INGEST));
        assert!(
            !matches!(code, tonic::Code::Unauthenticated | tonic::Code::PermissionDenied),
            "{path} with a write token: {code:?}"
        );
    }
    assert_eq!(grpc_code(server.otlp_grpc, OTLP_EXPORT, Some(INGEST)), tonic::Code::Ok);

    // The refusals are counted by group and reason.
    let (status, metrics) = get(&format!("http://{}/metrics", server.admin), Some(ADMIN));
    assert_eq!(status, 200);
    for series in [
        "spindle_auth_failures_total{group=\"query\",reason=\"missing\"}",
        "spindle_auth_failures_total{group=\"query\",reason=\"invalid\"}",
        "spindle_auth_failures_total{group=\"ingest\",reason=\"missing\"}",
        "spindle_auth_failures_total{group=\"ingest\",reason=\"forbidden\"}",
        "spindle_auth_failures_total{group=\"admin\",reason=\"invalid\"}",
    ] {
        assert!(metrics.contains(series), "{series} in\n{metrics}");
    }
}

#[test]
fn tokens_users_and_roles() {
    let server = Server::start();
    let services = format!("http://{}/api/services", server.query);

    // Bearer tokens: right, wrong, missing; a token stored as its SHA-256 only.
    assert_eq!(get(&services, Some(READER)).0, 200);
    assert_eq!(get(&services, Some(EVERYTHING)).0, 200);
    assert_eq!(get(&services, Some("reader-token-012345678")).0, 401);
    assert_eq!(get(&services, None).0, 401);
    let r = client().get(&services).header("authorization", "Token abc").send().unwrap();
    assert_eq!(r.status().as_u16(), 401, "an unknown scheme");

    // The UI's requests get no Basic challenge (browsers would prompt instead of letting
    // the UI see the 401); other clients of the query port do.
    let challenges = |r: &reqwest::blocking::Response| -> Vec<String> {
        r.headers().get_all("www-authenticate").iter().map(|v| v.to_str().unwrap().to_string()).collect()
    };
    let r = client().get(&services).header("x-requested-with", "XMLHttpRequest").send().unwrap();
    assert_eq!((r.status().as_u16(), challenges(&r)), (401, vec!["Bearer realm=\"spindle\"".to_string()]));
    let r = client().get(&services).send().unwrap();
    assert_eq!(challenges(&r), ["Bearer realm=\"spindle\"", "Basic realm=\"spindle\""]);

    // Roles: a write-only token cannot read, a read-only one cannot write; 403, no detail.
    assert_eq!(get(&services, Some(INGEST)), (403, "forbidden\n".to_string()));
    assert_eq!(get(&services, Some(ADMIN)).0, 403, "admin alone reads no tenant");
    assert_eq!(post_otlp(&server, Some(READER)), (403, "forbidden\n".to_string()));
    assert_eq!(post_otlp(&server, Some(INGEST)).0, 200);
    assert_eq!(post_otlp(&server, None).0, 401);
    let zipkin = client()
        .post(format!("http://{}/api/v2/spans", server.zipkin))
        .bearer_auth(INGEST)
        .header("content-type", "application/json")
        .body("[]")
        .send()
        .unwrap();
    assert_eq!(zipkin.status().as_u16(), 202);

    // Basic auth as Grafana's Jaeger data source sends it, on every request (the second and
    // third are answered from the cache of successful checks).
    for _ in 0..3 {
        let r = client().get(&services).basic_auth("grafana", Some(GRAFANA_PASSWORD)).send().unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let body: serde_json::Value = r.json().unwrap();
        assert!(body["data"].is_array(), "{body}");
    }
    let r = client().get(&services).basic_auth("grafana", Some("wrong")).send().unwrap();
    assert_eq!((r.status().as_u16(), r.text().unwrap()), (401, "unauthorized\n".to_string()));
    let r = client().get(&services).basic_auth("nobody", Some(GRAFANA_PASSWORD)).send().unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = client().get(&services).header("authorization", "Basic !!!").send().unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = client().get(&services).basic_auth("grafana", Some(GRAFANA_PASSWORD)).send().unwrap();
    assert_eq!(r.status().as_u16(), 200, "a refused attempt does not lock the user out");

    // Admin: /metrics needs an admin credential, the probes stay open.
    let metrics = format!("http://{}/metrics", server.admin);
    assert_eq!(get(&metrics, None).0, 401);
    assert_eq!(get(&metrics, Some(READER)), (403, "forbidden\n".to_string()));
    let (status, body) = get(&metrics, Some(ADMIN));
    assert_eq!(status, 200);
    assert!(body.contains("spindle_auth_failures_total{group=\"admin\",reason=\"forbidden\"} 1"), "{body}");
    assert_eq!(get(&format!("http://{}/healthz", server.admin), None).0, 200);
    assert_eq!(get(&format!("http://{}/readyz", server.admin), None).0, 200);
}

#[test]
fn the_credentials_file_is_reloaded_when_it_changes() {
    let server = Server::start();
    let services = format!("http://{}/api/services", server.query);
    const NEW: &str = "new-token-0123456789";
    assert_eq!(get(&services, Some(NEW)).0, 401);

    let added = "\n[[token]]\nname = \"new\"\ntoken = \"new-token-0123456789\"\nread = [\"*\"]\n";
    write_file(&server.auth_file, &credentials(added));
    wait_until("the added token to work", Duration::from_secs(10), || {
        (get(&services, Some(NEW)).0 == 200).then_some(())
    });

    // A broken file is logged and changes nothing.
    write_file(&server.auth_file, "[[token]]\nname = \"half-written\n");
    wait_until("the broken file to be logged", Duration::from_secs(10), || {
        server.stderr().contains("credentials file not reloaded").then_some(())
    });
    assert_eq!(get(&services, Some(NEW)).0, 200, "the previous credentials stay");
    assert_eq!(get(&services, Some(READER)).0, 200);

    write_file(&server.auth_file, &credentials(""));
    wait_until("the removed token to stop working", Duration::from_secs(10), || {
        (get(&services, Some(NEW)).0 == 401).then_some(())
    });
    assert_eq!(get(&services, Some(READER)).0, 200);
}

/// The OpenTelemetry Python SDK with its OTLP exporters, in the scratch venv that
/// tests/clients/setup.sh makes (made here the same way when missing).
fn otel_python() -> PathBuf {
    let scratch =
        std::env::var_os("SCRATCH").map(PathBuf::from).unwrap_or_else(|| std::env::temp_dir().join("spindle-clients"));
    let venv = scratch.join("otel");
    let python = venv.join("bin/python");
    let ready = || {
        Command::new(&python)
            .args(["-c", "import opentelemetry.exporter.otlp.proto.grpc.trace_exporter, opentelemetry.exporter.otlp.proto.http.trace_exporter"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ready() {
        let status = Command::new("python3").arg("-m").arg("venv").arg(&venv).status().expect("python3 -m venv");
        assert!(status.success(), "python3 -m venv {}", venv.display());
        let status = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args([
                "opentelemetry-sdk",
                "opentelemetry-exporter-otlp-proto-http",
                "opentelemetry-exporter-otlp-proto-grpc",
            ])
            .args(["opentelemetry-exporter-zipkin-json", "grpcio"])
            .status()
            .expect("pip install");
        assert!(status.success(), "installing the OpenTelemetry Python SDK into {}", venv.display());
        assert!(ready(), "the OpenTelemetry Python exporters do not import from {}", python.display());
        std::fs::File::create(venv.join(".installed")).unwrap();
    }
    python
}

fn python_export(python: &Path, protocol: &str, endpoint: &str, service: &str, token: Option<&str>) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/auth_clients/export.py");
    let mut command = Command::new(python);
    command
        .arg(&script)
        .args([protocol, endpoint, service])
        .env_remove("OTEL_EXPORTER_OTLP_HEADERS")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "10");
    if let Some(token) = token {
        command.env("OTEL_EXPORTER_OTLP_HEADERS", format!("Authorization=Bearer%20{token}"));
    }
    let output = command.output().expect("run export.py");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[test]
fn python_otlp_exporters_authenticate_with_a_bearer_token_from_the_environment() {
    let python = otel_python();
    let server = Server::start();
    let grpc = format!("http://{}", server.otlp_grpc);
    let http = format!("http://{}/v1/traces", server.otlp_http);

    let (ok, out) = python_export(&python, "grpc", &grpc, "auth-py-grpc", Some(INGEST));
    assert!(ok, "gRPC export with the token: {out}");
    let (ok, out) = python_export(&python, "http", &http, "auth-py-http", Some(INGEST));
    assert!(ok, "HTTP export with the token: {out}");
    let (ok, out) = python_export(&python, "grpc", &grpc, "auth-py-refused", None);
    assert!(!ok && out.contains("FAILURE"), "gRPC export without a token: {out}");
    let (ok, out) = python_export(&python, "http", &http, "auth-py-refused", Some("not-a-token"));
    assert!(!ok && out.contains("FAILURE"), "HTTP export with a wrong token: {out}");

    let services = format!("http://{}/api/services", server.query);
    let listed = wait_until("the exported services", Duration::from_secs(10), || {
        let (status, body) = get(&services, Some(READER));
        assert_eq!(status, 200, "{body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        let names: Vec<String> =
            body["data"].as_array().unwrap().iter().filter_map(|s| s.as_str().map(String::from)).collect();
        (names.contains(&"auth-py-grpc".to_string()) && names.contains(&"auth-py-http".to_string())).then_some(names)
    });
    assert!(!listed.contains(&"auth-py-refused".to_string()), "{listed:?}");
}

#[test]
fn jaeger_udp_receivers_serve_only_on_loopback_when_ingest_requires_authentication() {
    let exposed = SocketAddr::from(([0, 0, 0, 0], free_udp_port()));
    let server = Server::start_with(&[("--jaeger-binary-addr", exposed)]);
    let log = server.stderr();
    assert!(
        log.contains("Jaeger UDP receiver not started") && log.contains("jaeger_binary_addr"),
        "a warning names the receiver and why:\n{log}"
    );
    // Nothing listens on the exposed address: the test can take the port itself.
    UdpSocket::bind(exposed).expect("the exposed UDP port is free");

    // The loopback receiver serves.
    let datagram = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../spindle-codec/tests/fixtures/jaeger_compact_py_jaeger_client.bin"),
    )
    .unwrap();
    UdpSocket::bind("127.0.0.1:0").unwrap().send_to(&datagram, server.jaeger_compact).unwrap();
    let metrics = format!("http://{}/metrics", server.admin);
    wait_until("the datagram to be counted", Duration::from_secs(10), || {
        let (_, body) = get(&metrics, Some(ADMIN));
        body.contains("spindle_udp_datagrams_total{protocol=\"jaeger_thrift_compact_udp\",outcome=\"received\"} 1")
            .then_some(())
    });
}

#[test]
fn hash_password_prints_a_bcrypt_hash_the_server_accepts() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_spindle"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"correct horse\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let hash = String::from_utf8(output.stdout).unwrap().trim().to_string();
    assert!(hash.starts_with("$2b$10$"), "{hash}");
    assert!(bcrypt::verify("correct horse", &hash).unwrap());
    assert!(!bcrypt::verify("correct horse\n", &hash).unwrap(), "the newline is not part of the password");

    // The server accepts it in the credentials file.
    let server = Server::start();
    let user = format!("\n[[user]]\nname = \"alice\"\npassword = \"{hash}\"\nread = [\"*\"]\n");
    write_file(&server.auth_file, &credentials(&user));
    let services = format!("http://{}/api/services", server.query);
    wait_until("alice to log in", Duration::from_secs(15), || {
        let r = client().get(&services).basic_auth("alice", Some("correct horse")).send().unwrap();
        (r.status().as_u16() == 200).then_some(())
    });

    let empty = Command::new(env!("CARGO_BIN_EXE_spindle")).arg("hash-password").stdin(Stdio::null()).output().unwrap();
    assert!(!empty.status.success(), "no password, no hash");
}
