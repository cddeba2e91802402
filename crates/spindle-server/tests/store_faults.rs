//! The whole binary over a damaged data directory: a block whose meta is garbled is set
//! aside and counted in /metrics while the rest is served; a directory marked by a newer
//! release is refused at start with a message naming the marker file. The store's unit
//! tests cover each damage in detail (docs/STORAGE.md, "Damaged files").

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::Spindle;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use spindle_test_support::wait_until;

fn one_span_trace(trace: u128) -> Vec<u8> {
    let start = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue { value: Some(any_value::Value::StringValue("faults".into())) }),
                    key_strindex: 0,
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: trace.to_be_bytes().to_vec(),
                    span_id: 1u64.to_be_bytes().to_vec(),
                    name: "op".into(),
                    start_time_unix_nano: start,
                    end_time_unix_nano: start + 1_000_000,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

fn metrics(spindle: &Spindle) -> String {
    reqwest::blocking::get(format!("http://{}/metrics", spindle.admin)).unwrap().text().unwrap()
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn meta_files(dir: &Path) -> Vec<PathBuf> {
    let mut metas: Vec<PathBuf> = std::fs::read_dir(dir.join("blocks"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".meta.json"))
        .collect();
    metas.sort();
    metas
}

#[test]
fn a_garbled_block_meta_is_set_aside_and_a_newer_directory_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut spindle = Spindle::start(&data);
    let client = reqwest::blocking::Client::new();
    // Two blocks: the head is cut every 5 s.
    for trace in [1u128, 2] {
        let status = client
            .post(format!("http://{}/v1/traces", spindle.http))
            .header("content-type", "application/x-protobuf")
            .body(one_span_trace(trace))
            .send()
            .unwrap()
            .status();
        assert!(status.is_success(), "{status}");
        let blocks = trace as f64;
        wait_until("a block with the trace", Duration::from_secs(30), || {
            (metric(&metrics(&spindle), "spindle_store_blocks") >= Some(blocks)).then_some(())
        });
    }
    assert!(spindle.terminate().success());

    let metas = meta_files(&data);
    assert_eq!(metas.len(), 2);
    std::fs::write(&metas[1], b"{ garbled").unwrap();
    spindle.restart();
    let text = metrics(&spindle);
    assert_eq!(metric(&text, "spindle_store_recovered_total{event=\"block_set_aside\"}"), Some(1.0), "{text}");
    assert_eq!(metric(&text, "spindle_store_blocks"), Some(1.0));
    let aside = data.join("blocks/aside").join(metas[1].file_name().unwrap());
    assert_eq!(std::fs::read(&aside).unwrap(), b"{ garbled", "kept as found");
    let (status, _) = spindle.get_json(&format!("/api/traces/{:032x}", 1));
    assert_eq!(status, 200, "the readable block is served");
    assert!(spindle.terminate().success());

    let marker = data.join("spindle-data.json");
    std::fs::write(&marker, "{\"format\":99}").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_spindle"))
        .arg("serve")
        .arg("--data-dir")
        .arg(&data)
        .args(["--otlp-grpc-addr", "127.0.0.1:0", "--otlp-http-addr", "127.0.0.1:0"])
        .args(["--query-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
        .args(["--jaeger-compact-addr", "127.0.0.1:0", "--jaeger-binary-addr", "127.0.0.1:0"])
        .args(["--jaeger-http-addr", "127.0.0.1:0", "--jaeger-grpc-addr", "127.0.0.1:0"])
        .args(["--zipkin-addr", "127.0.0.1:0", "--sampling-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "refused: {stderr}");
    assert!(stderr.contains(&marker.display().to_string()), "names the file: {stderr}");
    assert!(stderr.contains("newer Spindle"), "says why: {stderr}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "{\"format\":99}", "left as found");
}
