//! End to end against a real spindle serving TLS on every listener, requiring client
//! certificates on its receivers and bearer tokens on every group (docs/SECURITY.md).
//!
//! - A service configured the seed apps' way — `spindle_sdk::init` and nothing but the
//!   standard variables (`OTEL_EXPORTER_OTLP_CERTIFICATE`, `…_CLIENT_CERTIFICATE`,
//!   `…_CLIENT_KEY`, `OTEL_EXPORTER_OTLP_HEADERS`, `SPINDLE_TENANT`) — exports, and its
//!   trace is read back from its tenant only.
//! - Services configured with the builder export over gRPC, HTTP/protobuf and HTTP/JSON.
//! - Without the token, or without the client certificate, exports fail cleanly: counted,
//!   flushes answer an error at once, nothing is stored.
//!
//! One test: it sets process environment variables. Needs the `spindle` binary (built from
//! this workspace on first use, or `SPINDLE_BIN`).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use spindle_sdk::{Protocol, SamplerConfig, SpindleBuilder};
use support::tls_sink::Pki;
use support::{free_port, free_udp_port, wait_until, TestService};

const WRITER_TOKEN: &str = "sdk-writer-7c1f9e2a";
const READER_TOKEN: &str = "sdk-reader-0b44d1c3";

/// spindle with TLS, client certificates on the receivers and tokens on every group.
struct SecuredSpindle {
    otlp_grpc: String,
    otlp_http: String,
    query: String,
    child: Child,
    log: PathBuf,
    _data: tempfile::TempDir,
}

impl SecuredSpindle {
    fn start(pki: &Pki) -> Self {
        let data = tempfile::tempdir().expect("data dir");
        let auth = data.path().join("credentials.toml");
        std::fs::write(
            &auth,
            format!(
                "[[token]]\nname = \"sdk\"\ntoken = \"{WRITER_TOKEN}\"\nwrite = [\"team-a\"]\n\n\
                 [[token]]\nname = \"reader\"\ntoken = \"{READER_TOKEN}\"\nread = [\"*\"]\n"
            ),
        )
        .expect("credentials file");
        let log = data.path().join("spindle.log");
        let addr = |port: u16| format!("127.0.0.1:{port}");
        let [grpc, http, query, admin] = [free_port(), free_port(), free_port(), free_port()];
        let child = Command::new(spindle_test_support::spindle_binary())
            .arg("serve")
            .arg("--data-dir")
            .arg(data.path().join("data"))
            .args(["--otlp-grpc-addr", &addr(grpc), "--otlp-http-addr", &addr(http)])
            .args(["--query-addr", &addr(query), "--admin-addr", &addr(admin)])
            .args(["--jaeger-http-addr", &addr(free_port()), "--jaeger-grpc-addr", &addr(free_port())])
            .args(["--zipkin-addr", &addr(free_port()), "--sampling-addr", &addr(free_port())])
            .args(["--jaeger-compact-addr", &addr(free_udp_port()), "--jaeger-binary-addr", &addr(free_udp_port())])
            .arg("--tls-cert")
            .arg(&pki.server.cert)
            .arg("--tls-key")
            .arg(&pki.server.key)
            .arg("--tls-client-ca")
            .arg(&pki.client_ca)
            .arg("--auth-file")
            .arg(&auth)
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env("SPINDLE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start spindle");
        let mut spindle = Self {
            otlp_grpc: format!("https://{}", addr(grpc)),
            otlp_http: format!("https://{}", addr(http)),
            query: format!("https://{}", addr(query)),
            child,
            log,
            _data: data,
        };
        let client = reader(&pki.ca);
        let ready = format!("https://{}/readyz", addr(admin));
        wait_until("secured spindle /readyz", Duration::from_secs(60), || {
            if let Ok(Some(status)) = spindle.child.try_wait() {
                panic!(
                    "spindle exited early with {status}: {}",
                    std::fs::read_to_string(&spindle.log).unwrap_or_default()
                );
            }
            client.get(&ready).send().ok().filter(|r| r.status() == 200).map(|_| ())
        });
        spindle
    }

    /// Operation names of trace `trace_id` as `tenant` sees them (empty when it sees none).
    fn trace(&self, client: &reqwest::blocking::Client, tenant: &str, trace_id: &str) -> Vec<String> {
        let response = client
            .get(format!("{}/api/traces/{trace_id}", self.query))
            .bearer_auth(READER_TOKEN)
            .header("X-Scope-OrgID", tenant)
            .send()
            .expect("query over tls");
        if response.status() == 404 {
            return Vec::new();
        }
        assert_eq!(response.status(), 200, "reading {trace_id} as {tenant}");
        let body: serde_json::Value = response.json().expect("jaeger json");
        body["data"][0]["spans"]
            .as_array()
            .map(|spans| spans.iter().filter_map(|s| s["operationName"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    }

    fn wait_for(&self, client: &reqwest::blocking::Client, tenant: &str, trace_id: &str, operation: &str) {
        wait_until(&format!("{operation} of {trace_id} in {tenant}"), Duration::from_secs(30), || {
            self.trace(client, tenant, trace_id).iter().any(|o| o == operation).then_some(())
        });
    }
}

impl Drop for SecuredSpindle {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client of the query API trusting `ca`.
fn reader(ca: &Path) -> reqwest::blocking::Client {
    let pem = std::fs::read(ca).expect("ca file");
    reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("ca certificate"))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("query client")
}

fn builder(name: &str, endpoint: &str, protocol: Protocol, pki: &Pki) -> SpindleBuilder {
    spindle_sdk::builder(name)
        .endpoint(endpoint)
        .protocol(protocol)
        .sampler(SamplerConfig::AlwaysOn)
        .scheduled_delay(Duration::from_millis(50))
        .export_timeout(Duration::from_secs(5))
        .ca_certificate(&pki.ca)
}

/// Ends a `checkout` span as `svc`; its trace id.
fn checkout(svc: &TestService) -> String {
    svc.run(async { tracing::info_span!("checkout").in_scope(|| spindle_sdk::current_trace_id().expect("sampled")) })
}

#[test]
fn the_sdk_exports_to_a_spindle_with_tls_client_certificates_tokens_and_tenants() {
    let pki = Pki::new();
    let spindle = SecuredSpindle::start(&pki);
    let client = reader(&pki.ca);

    // The seed apps' way: `init` and the standard variables only.
    let vars = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", spindle.otlp_grpc.clone()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_owned()),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", pki.ca.display().to_string()),
        ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", pki.client.cert.display().to_string()),
        ("OTEL_EXPORTER_OTLP_CLIENT_KEY", pki.client.key.display().to_string()),
        ("OTEL_EXPORTER_OTLP_HEADERS", format!("Authorization=Bearer%20{WRITER_TOKEN}")),
        ("SPINDLE_TENANT", "team-a".to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "50".to_owned()),
    ];
    for (name, value) in &vars {
        std::env::set_var(name, value);
    }
    let guard = spindle_sdk::init("env-configured");
    for (name, _) in &vars {
        std::env::remove_var(name);
    }
    assert!(guard.is_exporting(), "init with the variables succeeded");
    let trace_id =
        tracing::info_span!("from-env").in_scope(|| spindle_sdk::current_trace_id().expect("a sampled span"));
    guard.flush().expect("flush over mutual TLS with a token");
    spindle.wait_for(&client, "team-a", &trace_id, "from-env");
    assert!(spindle.trace(&client, "single-tenant", &trace_id).is_empty(), "stored for team-a only");
    assert!(spindle.trace(&client, "team-b", &trace_id).is_empty(), "stored for team-a only");

    // The builder's way, over every protocol.
    for (protocol, endpoint) in [
        (Protocol::Grpc, &spindle.otlp_grpc),
        (Protocol::HttpProtobuf, &spindle.otlp_http),
        (Protocol::HttpJson, &spindle.otlp_http),
    ] {
        let name = format!("builder-{protocol:?}");
        let svc = TestService::with_builder(
            &name,
            builder(&name, endpoint, protocol, &pki)
                .client_certificate(&pki.client.cert)
                .client_key(&pki.client.key)
                .header("authorization", format!("Bearer {WRITER_TOKEN}"))
                .tenant("team-a"),
        );
        let trace_id = checkout(&svc);
        svc.guard.flush().unwrap_or_else(|e| panic!("{protocol:?}: flush: {e}"));
        spindle.wait_for(&client, "team-a", &trace_id, "checkout");

        // No token: spindle answers 401 / UNAUTHENTICATED; the export fails, counted.
        let name = format!("no-token-{protocol:?}");
        let svc = TestService::with_builder(
            &name,
            builder(&name, endpoint, protocol, &pki)
                .client_certificate(&pki.client.cert)
                .client_key(&pki.client.key)
                .tenant("team-a"),
        );
        let refused = checkout(&svc);
        let flushed = svc.guard.flush_with_timeout(Duration::from_secs(10));
        assert!(flushed.is_err(), "{protocol:?}: without a token: {flushed:?}");
        let stats = svc.guard.stats();
        assert!(stats.exported == 0 && stats.failed >= 1, "{protocol:?}: {stats:?}");

        // No client certificate: the handshake is refused.
        let name = format!("no-cert-{protocol:?}");
        let svc = TestService::with_builder(
            &name,
            builder(&name, endpoint, protocol, &pki)
                .header("authorization", format!("Bearer {WRITER_TOKEN}"))
                .tenant("team-a"),
        );
        let no_cert = checkout(&svc);
        assert!(svc.guard.flush_with_timeout(Duration::from_secs(10)).is_err(), "{protocol:?}: without a certificate");
        assert_eq!(svc.guard.stats().exported, 0, "{protocol:?}");

        for id in [refused, no_cert] {
            assert!(spindle.trace(&client, "team-a", &id).is_empty(), "{protocol:?}: nothing of {id} stored");
        }
    }
}
