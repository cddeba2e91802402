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
