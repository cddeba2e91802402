//! TLS on spindle's listeners (docs/SECURITY.md, "TLS"), driven with real clients: curl
//! for the HTTP listeners and the OpenTelemetry Python OTLP exporters (gRPC and HTTP),
//! against certificates made with rcgen in a temporary directory.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use spindle_test_support::{free_port, free_udp_port, wait_until};

// ---- certificates ----

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate, as clients are given it.
    file: PathBuf,
}

fn make_ca(dir: &Path, name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, format!("spindle test {name}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let file = dir.join(format!("{name}.pem"));
    std::fs::write(&file, issuer.pem()).unwrap();
    Ca { issuer, file }
}

/// A leaf certificate and key signed by `ca`, as PEM.
fn leaf(ca: &Ca, client: bool) -> (String, String) {
    let sans = if client { vec!["test-client".to_string()] } else { vec!["127.0.0.1".into(), "localhost".into()] };
    let mut params = CertificateParams::new(sans).unwrap();
    params.distinguished_name.push(DnType::CommonName, if client { "test-client" } else { "spindle" });
    params.extended_key_usages =
        vec![if client { ExtendedKeyUsagePurpose::ClientAuth } else { ExtendedKeyUsagePurpose::ServerAuth }];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Writes a leaf of `ca` to `NAME.crt` and `NAME.key` in `dir`.
fn write_leaf(dir: &Path, name: &str, ca: &Ca, client: bool) -> (PathBuf, PathBuf) {
    let (cert, key) = leaf(ca, client);
    let (cert_path, key_path) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    std::fs::write(&key_path, key).unwrap();
    std::fs::write(&cert_path, cert).unwrap();
    (cert_path, key_path)
}

// ---- the server ----

struct Server {
    child: Child,
    grpc: SocketAddr,
    http: SocketAddr,
    query: SocketAddr,
    admin: SocketAddr,
    log: PathBuf,
}

fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

impl Server {
    /// Starts spindle with `args` and waits for `/readyz` (over TLS, trusting `ca`, unless
    /// the admin group is in plain text).
    fn start(dir: &Path, ca: &Path, admin_tls: bool, args: &[&str]) -> Server {
        let (grpc, http, query, admin) = (free_addr(), free_addr(), free_addr(), free_addr());
        let log = dir.join("spindle.log");
        let udp = |_| SocketAddr::from(([127, 0, 0, 1], free_udp_port())).to_string();
        let child = Command::new(env!("CARGO_BIN_EXE_spindle"))
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--otlp-grpc-addr", &grpc.to_string()])
            .args(["--otlp-http-addr", &http.to_string()])
            .args(["--query-addr", &query.to_string()])
            .args(["--admin-addr", &admin.to_string()])
            .args(["--jaeger-compact-addr", &udp(0)])
            .args(["--jaeger-binary-addr", &udp(1)])
            .args(["--jaeger-http-addr", &free_addr().to_string()])
            .args(["--jaeger-grpc-addr", &free_addr().to_string()])
            .args(["--zipkin-addr", &free_addr().to_string()])
            .args(["--sampling-addr", &free_addr().to_string()])
            .args(args)
            .env("SPINDLE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("spawn spindle");
        let mut server = Server { child, grpc, http, query, admin, log };
        let ready = if admin_tls {
            Curl::new().cacert(ca).url(&format!("https://{admin}/readyz"))
        } else {
            Curl::new().url(&format!("http://{admin}/readyz"))
        };
        wait_until("spindle /readyz", Duration::from_secs(30), || {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("spindle exited before it was ready ({status}): {}", server.log_text());
            }
            (ready.run().status == Some(200)).then_some(())
        });
        server
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- clients ----

/// One curl invocation.
#[derive(Clone, Default)]
struct Curl {
    args: Vec<String>,
}

struct CurlResult {
    /// curl's exit code: 0 for a completed exchange, 60 for an untrusted certificate...
    exit: i32,
    /// The HTTP status, when an answer came.
    status: Option<u16>,
    body: String,
    stderr: String,
}

impl Curl {
    fn new() -> Self {
        Curl::default()
    }

    fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    fn cacert(self, ca: &Path) -> Self {
        self.arg("--cacert").arg(ca.display().to_string())
    }

    fn client_cert(self, (cert, key): &(PathBuf, PathBuf)) -> Self {
        self.arg("--cert").arg(cert.display().to_string()).arg("--key").arg(key.display().to_string())
    }

    fn url(self, url: &str) -> Self {
        self.arg(url)
    }

    fn post_json(self, body: &str) -> Self {
        self.arg("-H").arg("content-type: application/json").arg("--data-binary").arg(body)
    }

    fn run(&self) -> CurlResult {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
            .args(&self.args)
            .output()
            .expect("curl runs (it is part of the test machine)");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
        CurlResult {
            exit: out.status.code().unwrap_or(-1),
            status: code.trim().parse().ok().filter(|c| *c != 0),
            body: body.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// An OTLP/JSON request of one span of `service`; returns it and its trace id.
fn otlp_json(service: &str) -> (String, String) {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let trace_id = format!("{:032x}", nanos ^ 0x5eed_0000_0000_0000_0000_0000_0000_0001);
    let body = format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"{service}"}}}}]}},
        "scopeSpans":[{{"spans":[{{"traceId":"{trace_id}","spanId":"00f067aa0ba902b7","name":"tls-op","kind":2,
        "startTimeUnixNano":"{start}","endTimeUnixNano":"{end}"}}]}}]}}]}}"#,
        start = nanos - 5_000_000,
        end = nanos,
    );
    (body, trace_id)
}

/// Waits until the query API, over TLS, serves the trace `trace_id` with a span of `service`.
fn assert_trace_readable(server: &Server, ca: &Path, trace_id: &str, service: &str) {
    let get = Curl::new().cacert(ca).url(&format!("https://{}/api/traces/{trace_id}", server.query));
    wait_until(&format!("trace {trace_id} of {service} over https"), Duration::from_secs(10), || {
        let r = get.run();
        (r.status == Some(200) && r.body.contains(trace_id) && r.body.contains(service)).then_some(())
    });
}

/// The Python venv of tests/clients/setup.sh with the OpenTelemetry SDK and its OTLP
/// exporters, made the same way when it is not there yet.
fn python_otel() -> PathBuf {
    static SETUP: Mutex<()> = Mutex::new(());
    let _once = SETUP.lock().unwrap_or_else(|e| e.into_inner());
    let scratch =
        std::env::var_os("SCRATCH").map(PathBuf::from).unwrap_or_else(|| std::env::temp_dir().join("spindle-clients"));
    let venv = scratch.join("otel");
    if !venv.join(".installed").exists() {
        std::fs::create_dir_all(&scratch).unwrap();
        let ok = Command::new("python3").arg("-m").arg("venv").arg(&venv).status().expect("python3 runs");
        assert!(ok.success(), "python3 -m venv {}", venv.display());
        let ok = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args([
                "opentelemetry-sdk",
                "opentelemetry-exporter-otlp-proto-http",
                "opentelemetry-exporter-otlp-proto-grpc",
                "opentelemetry-exporter-zipkin-json",
                "grpcio",
            ])
            .status()
            .expect("pip runs");
        assert!(ok.success(), "pip install of the OpenTelemetry Python SDK into {}", venv.display());
        File::create(venv.join(".installed")).unwrap();
    }
    venv.join("bin/python")
}

/// Exports one span of `service` with the Python OTLP exporter over `transport` (`grpc` or
/// `http`) trusting `ca`, with a client certificate when given; returns its trace id.
fn python_export(
    transport: &str,
    endpoint: &str,
    service: &str,
    ca: &Path,
    client: Option<&(PathBuf, PathBuf)>,
) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls_clients/export_otlp.py");
    let mut cmd = Command::new(python_otel());
    cmd.arg(script).args([transport, endpoint, service, "python-op"]).env("OTEL_EXPORTER_OTLP_CERTIFICATE", ca);
    // requests lets these replace the CA the exporter sets on its session; machines that
    // point them at the system bundle would otherwise hide OTEL_EXPORTER_OTLP_CERTIFICATE.
    cmd.env_remove("REQUESTS_CA_BUNDLE").env_remove("CURL_CA_BUNDLE");
    if let Some((cert, key)) = client {
        cmd.env("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", cert).env("OTEL_EXPORTER_OTLP_CLIENT_KEY", key);
    }
    let out = cmd.output().expect("the Python exporter runs");
    assert!(
        out.status.success(),
        "the Python {transport} exporter to {endpoint} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn handshake_failures(metrics: &str, listener: &str) -> u64 {
    let series = format!("spindle_tls_handshake_failures_total{{listener=\"{listener}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics:\n{metrics}"))
}

// ---- tests ----

#[test]
fn every_listener_serves_tls_to_curl_and_the_python_exporters() {
    let dir = tempfile::tempdir().unwrap();
    let ca = make_ca(dir.path(), "ca");
    let other_ca = make_ca(dir.path(), "other-ca");
    let (cert, key) = write_leaf(dir.path(), "server", &ca, false);
    let server = Server::start(
        dir.path(),
        &ca.file,
        true,
        &["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()],
    );

    // (a) OTLP/HTTP over https, then read back over https.
    let (body, trace_id) = otlp_json("curl-tls");
    let r = Curl::new().cacert(&ca.file).url(&format!("https://{}/v1/traces", server.http)).post_json(&body).run();
    assert_eq!((r.exit, r.status), (0, Some(200)), "{} {}", r.body, r.stderr);
    assert_trace_readable(&server, &ca.file, &trace_id, "curl-tls");

    // ALPN: HTTP/1.1 on the HTTP listeners, h2 on the gRPC ones.
    let http_alpn = Curl::new().arg("-v").cacert(&ca.file).url(&format!("https://{}/api/services", server.query)).run();
    assert!(http_alpn.stderr.contains("ALPN: server accepted http/1.1"), "{}", http_alpn.stderr);
    let grpc_alpn =
        Curl::new().arg("-v").arg("--http2").cacert(&ca.file).url(&format!("https://{}/", server.grpc)).run();
    assert!(grpc_alpn.stderr.contains("ALPN: server accepted h2"), "{}", grpc_alpn.stderr);

    // (b) The OpenTelemetry Python exporters, trusting the CA through their environment.
    let grpc_trace = python_export("grpc", &format!("https://{}", server.grpc), "py-grpc-tls", &ca.file, None);
    let http_trace =
        python_export("http", &format!("https://{}/v1/traces", server.http), "py-http-tls", &ca.file, None);
    assert_trace_readable(&server, &ca.file, &grpc_trace, "py-grpc-tls");
    assert_trace_readable(&server, &ca.file, &http_trace, "py-http-tls");

    // (c) Plain text to a TLS port gets no HTTP answer, and a client that does not trust
    // the server's CA refuses it.
    let plain = Curl::new().url(&format!("http://{}/v1/traces", server.http)).post_json(&body).run();
    assert_ne!(plain.exit, 0, "plain text to the TLS port answered {:?}: {}", plain.status, plain.body);
    assert_eq!(plain.status, None);
    let plain_query = Curl::new().url(&format!("http://{}/api/services", server.query)).run();
    assert_ne!(plain_query.exit, 0);
    let untrusted = Curl::new().cacert(&other_ca.file).url(&format!("https://{}/api/services", server.query)).run();
    assert_eq!(untrusted.exit, 60, "curl: peer certificate not trusted; got {}", untrusted.stderr);
    // Both failed handshakes show on /metrics (served over TLS too).
    let metrics = Curl::new().cacert(&ca.file).url(&format!("https://{}/metrics", server.admin)).run();
    assert_eq!(metrics.status, Some(200));
    assert!(handshake_failures(&metrics.body, "otlp http") >= 1, "{}", metrics.body);
    assert!(handshake_failures(&metrics.body, "query") >= 1, "{}", metrics.body);
    assert_eq!(handshake_failures(&metrics.body, "otlp grpc"), 0);
}

#[test]
fn a_renewed_certificate_is_served_without_restart_and_a_broken_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let first_ca = make_ca(dir.path(), "first-ca");
    let second_ca = make_ca(dir.path(), "second-ca");
    let (cert, key) = write_leaf(dir.path(), "server", &first_ca, false);
    let server = Server::start(
        dir.path(),
        &first_ca.file,
        true,
        &["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()],
    );
    let services = |ca: &Ca| Curl::new().cacert(&ca.file).url(&format!("https://{}/api/services", server.query)).run();
    assert_eq!(services(&first_ca).status, Some(200));
    assert_eq!(services(&second_ca).exit, 60);

    // A broken certificate file is logged and the previous certificate stays in use.
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n").unwrap();
    wait_until("the reload failure in the log", Duration::from_secs(10), || {
        server.log_text().contains("TLS certificate not reloaded, the previous one stays in use").then_some(())
    });
    assert_eq!(services(&first_ca).status, Some(200), "the previous certificate still serves");

    // A new pair signed by another CA replaces it once both files are written.
    write_leaf(dir.path(), "server", &second_ca, false);
    wait_until("the certificate of the second CA", Duration::from_secs(10), || {
        (services(&second_ca).status == Some(200)).then_some(())
    });
    assert_eq!(services(&first_ca).exit, 60, "the old certificate is no longer served");
}

#[test]
fn a_client_ca_requires_client_certificates_on_the_receivers_only() {
    let dir = tempfile::tempdir().unwrap();
    let ca = make_ca(dir.path(), "ca");
    let client_ca = make_ca(dir.path(), "client-ca");
    let stranger_ca = make_ca(dir.path(), "stranger-ca");
    let (cert, key) = write_leaf(dir.path(), "server", &ca, false);
    let client = write_leaf(dir.path(), "client", &client_ca, true);
    let stranger = write_leaf(dir.path(), "stranger", &stranger_ca, true);
    let server = Server::start(
        dir.path(),
        &ca.file,
        true,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--tls-client-ca",
            client_ca.file.to_str().unwrap(),
        ],
    );
    let post =
        |body: &str| Curl::new().cacert(&ca.file).url(&format!("https://{}/v1/traces", server.http)).post_json(body);

    let (body, _) = otlp_json("mtls-refused");
    let anonymous = post(&body).run();
    assert_ne!(anonymous.exit, 0, "no client certificate, yet answered {:?}", anonymous.status);
    assert_eq!(anonymous.status, None);
    let wrong = post(&body).client_cert(&stranger).run();
    assert_eq!(wrong.status, None, "a client certificate of another CA is refused");

    let (body, trace_id) = otlp_json("mtls-curl");
    let r = post(&body).client_cert(&client).run();
    assert_eq!((r.exit, r.status), (0, Some(200)), "{} {}", r.body, r.stderr);
    // The query port asks for no client certificate.
    assert_trace_readable(&server, &ca.file, &trace_id, "mtls-curl");

    let grpc_trace =
        python_export("grpc", &format!("https://{}", server.grpc), "py-grpc-mtls", &ca.file, Some(&client));
    let http_trace =
        python_export("http", &format!("https://{}/v1/traces", server.http), "py-http-mtls", &ca.file, Some(&client));
    assert_trace_readable(&server, &ca.file, &grpc_trace, "py-grpc-mtls");
    assert_trace_readable(&server, &ca.file, &http_trace, "py-http-mtls");
}

#[test]
fn tls_plaintext_admin_leaves_metrics_in_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let ca = make_ca(dir.path(), "ca");
    let (cert, key) = write_leaf(dir.path(), "server", &ca, false);
    let server = Server::start(
        dir.path(),
        &ca.file,
        false,
        &["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap(), "--tls-plaintext", "admin"],
    );
    let metrics = Curl::new().url(&format!("http://{}/metrics", server.admin)).run();
    assert_eq!(metrics.status, Some(200), "{}", metrics.stderr);
    assert_eq!(handshake_failures(&metrics.body, "query"), 0, "the query listener serves TLS");
    assert!(!metrics.body.contains(r#"listener="admin""#), "the admin listener serves no TLS: {}", metrics.body);
    let tls_admin = Curl::new().cacert(&ca.file).url(&format!("https://{}/metrics", server.admin)).run();
    assert_ne!(tls_admin.exit, 0, "the admin port speaks plain text only");
    // The other groups still serve TLS.
    let query = Curl::new().cacert(&ca.file).url(&format!("https://{}/api/services", server.query)).run();
    assert_eq!(query.status, Some(200), "{}", query.stderr);
}

#[test]
fn handshakes_do_not_hold_up_the_accept_loop_and_count_against_the_connection_cap() {
    let dir = tempfile::tempdir().unwrap();
    let ca = make_ca(dir.path(), "ca");
    let (cert, key) = write_leaf(dir.path(), "server", &ca, false);
    let server = Server::start(
        dir.path(),
        &ca.file,
        true,
        &["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap(), "--max-connections", "2"],
    );
    let post = |service: &str| {
        let (body, _) = otlp_json(service);
        Curl::new()
            .cacert(&ca.file)
            .url(&format!("https://{}/v1/traces", server.http))
            .post_json(&body)
            .arg("--max-time")
            .arg("3")
            .run()
    };
    // A client that connects and never starts its handshake does not hold up the next one.
    let mut silent = vec![std::net::TcpStream::connect(server.http).unwrap()];
    let r = post("behind-a-silent-client");
    assert_eq!((r.exit, r.status), (0, Some(200)), "{}", r.stderr);

    // But it holds its connection slot while it handshakes: with two silent clients the
    // cap is reached and a third connection waits to be accepted.
    silent.push(std::net::TcpStream::connect(server.http).unwrap());
    let waiting = post("over-the-cap");
    assert_eq!(waiting.exit, 28, "curl timed out, not accepted while two connections are open: {}", waiting.stderr);
    let metrics = || Curl::new().cacert(&ca.file).url(&format!("https://{}/metrics", server.admin)).run().body;
    assert!(metrics().contains(r#"spindle_limit_hits_total{limit="connections"} "#));

    // The handshake deadline closes the silent ones, counted as failures, and frees the cap.
    wait_until("a connection after the silent ones timed out", Duration::from_secs(30), || {
        (post("after-the-deadline").status == Some(200)).then_some(())
    });
    for stream in &mut silent {
        use std::io::Read;
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let read = stream.read(&mut [0u8; 16]);
        assert!(
            matches!(&read, Ok(0)) || matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "closed by the server, got {read:?}"
        );
    }
    assert!(handshake_failures(&metrics(), "otlp http") >= 2);
}
