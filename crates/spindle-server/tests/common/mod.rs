//! Test harness: runs the real `spindle` binary as a child process on free loopback ports
//! with a temporary data directory.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use spindle_test_support::{free_port, free_udp_port, wait_until};

pub struct Spindle {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub query: SocketAddr,
    pub admin: SocketAddr,
    pub jaeger_compact: SocketAddr,
    pub jaeger_binary: SocketAddr,
    pub jaeger_http: SocketAddr,
    pub jaeger_grpc: SocketAddr,
    pub zipkin: SocketAddr,
    pub sampling: SocketAddr,
    extra_args: Vec<String>,
}

fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

fn free_udp_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_udp_port()))
}

impl Spindle {
    pub fn start(data_dir: &Path) -> Spindle {
        Self::start_with(data_dir, &[])
    }

    pub fn start_with(data_dir: &Path, extra_args: &[&str]) -> Spindle {
        let mut s = Spindle {
            child: None,
            data_dir: data_dir.to_path_buf(),
            grpc: free_addr(),
            http: free_addr(),
            query: free_addr(),
            admin: free_addr(),
            jaeger_compact: free_udp_addr(),
            jaeger_binary: free_udp_addr(),
            jaeger_http: free_addr(),
            jaeger_grpc: free_addr(),
            zipkin: free_addr(),
            sampling: free_addr(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_spindle"))
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--otlp-grpc-addr", &self.grpc.to_string()])
            .args(["--otlp-http-addr", &self.http.to_string()])
            .args(["--query-addr", &self.query.to_string()])
            .args(["--admin-addr", &self.admin.to_string()])
            .args(["--jaeger-compact-addr", &self.jaeger_compact.to_string()])
            .args(["--jaeger-binary-addr", &self.jaeger_binary.to_string()])
            .args(["--jaeger-http-addr", &self.jaeger_http.to_string()])
            .args(["--jaeger-grpc-addr", &self.jaeger_grpc.to_string()])
            .args(["--zipkin-addr", &self.zipkin.to_string()])
            .args(["--sampling-addr", &self.sampling.to_string()])
            .args(&self.extra_args)
            .env("SPINDLE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn spindle");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let client = reqwest::blocking::Client::new();
        let url = format!("http://{}/readyz", self.admin);
        wait_until("spindle /readyz", Duration::from_secs(30), || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("spindle exited before it was ready: {status}");
            }
            client.get(&url).send().ok().filter(|r| r.status().is_success()).map(|_| ())
        });
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("reap");
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().expect("kill -TERM");
        assert!(status.success());
        child.wait().expect("reap")
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Sends `spans` over OTLP/HTTP protobuf in requests of 500, each answered 200.
    pub fn send(&self, spans: &[spindle_model::Span]) {
        use prost::Message;
        let client = reqwest::blocking::Client::new();
        for chunk in spans.chunks(500) {
            let body = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
                resource_spans: spindle_codec::otlp::spans_to_resource_spans(chunk),
            }
            .encode_to_vec();
            let r = client
                .post(format!("http://{}/v1/traces", self.http))
                .header("content-type", "application/x-protobuf")
                .body(body)
                .send()
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
        }
    }

    /// Posts `tests/fixtures/otlp_request.json` (one trace, two spans) over OTLP JSON; the
    /// receiver's answer.
    pub fn post_otlp_fixture(&self) -> reqwest::blocking::Response {
        let body = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/otlp_request.json"))
            .expect("fixture");
        reqwest::blocking::Client::new()
            .post(format!("http://{}/v1/traces", self.http))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .expect("POST")
    }

    pub fn query_url(&self, path: &str) -> String {
        format!("http://{}{}", self.query, path)
    }

    pub fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let r = reqwest::blocking::get(self.query_url(path)).expect("GET");
        let status = r.status().as_u16();
        let body = r.text().expect("body");
        let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"));
        (status, json)
    }
}

impl Drop for Spindle {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Bytes captured from a real client library (`crates/spindle-codec/tests/fixtures`).
pub fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../spindle-codec/tests/fixtures").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn post_fixture(url: String, content_type: &str, encoding: Option<&str>, body: Vec<u8>) -> u16 {
    let mut r = reqwest::blocking::Client::new().post(url).header("content-type", content_type);
    if let Some(encoding) = encoding {
        r = r.header("content-encoding", encoding);
    }
    r.body(body).send().unwrap().status().as_u16()
}

/// Sends every client capture but OTLP's to its receiver on `spindle` — Jaeger thrift over
/// both UDP ports and HTTP, Jaeger gRPC, Zipkin v1 JSON (gzipped), v2 JSON and v2 protobuf —
/// checking each was accepted; returns what each decodes to, to compare with what reads back.
pub fn send_client_fixtures(spindle: &Spindle) -> Vec<(&'static str, spindle_codec::Decoded)> {
    use spindle_codec::{jaeger_proto, jaeger_thrift, zipkin};
    let mut sent = Vec::new();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for name in ["jaeger_compact_otel_python.bin", "jaeger_compact_py_jaeger_client.bin"] {
        let bytes = fixture(name);
        udp.send_to(&bytes, spindle.jaeger_compact).unwrap();
        sent.push((name, jaeger_thrift::decode_emit_batch_compact(&bytes).unwrap()));
    }
    let name = "jaeger_binary_udp_node_jaeger_client.bin";
    let bytes = fixture(name);
    udp.send_to(&bytes, spindle.jaeger_binary).unwrap();
    sent.push((name, jaeger_thrift::decode_emit_batch_binary(&bytes).unwrap()));
    for (name, content_type) in [
        ("jaeger_binary_http_otel_python.bin", "application/x-thrift"),
        ("jaeger_binary_http_node_jaeger_client.bin", "application/vnd.apache.thrift.binary; charset=utf-8"),
    ] {
        let bytes = fixture(name);
        let status =
            post_fixture(format!("http://{}/api/traces", spindle.jaeger_http), content_type, None, bytes.clone());
        assert_eq!(status, 202, "{name}");
        sent.push((name, jaeger_thrift::decode_batch_binary(&bytes).unwrap()));
    }
    let zipkin_v2 = format!("http://{}/api/v2/spans", spindle.zipkin);
    let name = "zipkin_v2_json_otel_python.json";
    let bytes = fixture(name);
    assert_eq!(post_fixture(zipkin_v2.clone(), "application/json", None, bytes.clone()), 202, "{name}");
    sent.push((name, zipkin::decode_v2_json(&bytes).unwrap()));
    let name = "zipkin_v2_proto_otel_python.bin";
    let bytes = fixture(name);
    assert_eq!(post_fixture(zipkin_v2, "application/x-protobuf", None, bytes.clone()), 202, "{name}");
    sent.push((name, zipkin::decode_v2_proto(&bytes).unwrap()));
    let name = "zipkin_v1_json_otel_python.json";
    let bytes = fixture(name);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &bytes).unwrap();
    let url = format!("http://{}/api/v1/spans", spindle.zipkin);
    assert_eq!(post_fixture(url, "application/json", Some("gzip"), gz.finish().unwrap()), 202, "{name}");
    sent.push((name, zipkin::decode_v1_json(&bytes).unwrap()));

    // Jaeger gRPC: the captured PostSpansRequest, sent with a plain tonic client.
    let name = "jaeger_proto_grpc_otel_python.bin";
    let bytes = fixture(name);
    let request: jaeger_proto::PostSpansRequest = prost::Message::decode(bytes.as_slice()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", spindle.jaeger_grpc))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = tonic::client::Grpc::new(channel);
        client.ready().await.unwrap();
        let path = tonic::codegen::http::uri::PathAndQuery::from_static("/jaeger.api_v2.CollectorService/PostSpans");
        let codec: tonic_prost::ProstCodec<jaeger_proto::PostSpansRequest, jaeger_proto::PostSpansResponse> =
            tonic_prost::ProstCodec::default();
        client.unary(tonic::Request::new(request), path, codec).await.unwrap();
    });
    sent.push((name, jaeger_proto::decode_post_spans_request(&bytes).unwrap()));
    sent
}

/// Waits until `reader`'s traces hold every span `decoded` holds (sent as `name`), with the
/// same names, start times, parents and service, and the service is listed.
pub fn assert_arrived(reader: &Spindle, decoded: &spindle_codec::Decoded, name: &str) {
    let service = decoded.spans[0].service_name().to_string();
    let trace_id = decoded.spans[0].trace_id.to_jaeger_hex();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let trace = loop {
        let (status, body) = reader.get_json(&format!("/api/traces/{trace_id}"));
        if status == 200 && body["data"][0]["spans"].as_array().map(Vec::len) == Some(decoded.spans.len()) {
            break body["data"][0].clone();
        }
        assert!(std::time::Instant::now() < deadline, "{name} ({service}): trace {trace_id} incomplete: {body}");
        std::thread::sleep(Duration::from_millis(100));
    };
    for span in &decoded.spans {
        let got = trace["spans"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["spanID"] == span.span_id.to_hex())
            .unwrap_or_else(|| panic!("{name}: span {} missing", span.name));
        assert_eq!(got["operationName"], span.name.as_str(), "{name}");
        assert_eq!(got["startTime"], span.start_time_unix_nano / 1000, "{name}");
        let parent = got["references"].as_array().unwrap().iter().find(|r| r["refType"] == "CHILD_OF");
        assert_eq!(
            parent.map(|r| r["spanID"].as_str().unwrap().to_string()),
            span.parent_span_id.is_valid().then(|| span.parent_span_id.to_hex()),
            "{name}"
        );
        let process = &trace["processes"][got["processID"].as_str().unwrap()];
        assert_eq!(process["serviceName"], service.as_str(), "{name}");
    }
    let (_, services) = reader.get_json("/api/services");
    assert!(services["data"].as_array().unwrap().iter().any(|s| s == service.as_str()), "{name}: {services}");
}

/// Compares `actual` with the committed fixture `tests/fixtures/<name>`; `UPDATE_GOLDEN=1`
/// rewrites the fixture after an intended change.
pub fn check_golden(name: &str, actual: &serde_json::Value) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    let pretty = serde_json::to_string_pretty(actual).unwrap() + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &pretty).unwrap();
    }
    let expected: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(actual, &expected, "{name} differs; actual:\n{pretty}");
}
