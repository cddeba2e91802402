//! `spindle loadgen` against a real server: the summary line tells the truth.

mod common;

use std::process::Command;

use common::Spindle;

fn field(summary: &str, name: &str) -> f64 {
    summary
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing in {summary:?}"))
}

#[test]
fn loadgen_sends_the_reference_workload_over_both_protocols() {
    let dir = tempfile::tempdir().unwrap();
    let spindle = Spindle::start(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_spindle"))
        .args(["loadgen", "--protocol", "both", "--connections", "2", "--spans", "4000", "--batch-spans", "500"])
        .args(["--grpc-endpoint", &format!("http://{}", spindle.grpc)])
        .args(["--http-endpoint", &format!("http://{}", spindle.http)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary = String::from_utf8(out.stdout).unwrap();
    assert!(summary.starts_with("sent="), "{summary}");
    assert_eq!(field(&summary, "sent"), 4000.0);
    assert_eq!(field(&summary, "acked"), 4000.0);
    assert_eq!(field(&summary, "rejected"), 0.0);
    assert!(field(&summary, "spans_per_sec") > 0.0);
    assert!(field(&summary, "p99_ack_ms") > 0.0);

    let (_, services) = spindle.get_json("/api/services");
    assert_eq!(services["data"], serde_json::json!(["frontend", "ledger", "pricing", "quote-api", "risk-engine"]));
    let (_, traces) = spindle.get_json("/api/traces?service=pricing&limit=1000");
    assert_eq!(traces["data"].as_array().unwrap().len(), 400, "4000 spans are 400 traces");
    assert!(traces["data"].as_array().unwrap().iter().all(|t| t["spans"].as_array().unwrap().len() == 10));
}
