//! Golden tests: a fixed OTLP JSON request in, the Jaeger JSON (`/api/traces/{id}`) and
//! OTLP JSON (`/api/v3/traces/{id}`) out, compared with committed fixtures. The fixtures
//! were checked by hand against Jaeger's `ui_01.json` shapes and the OTLP JSON encoding
//! rules; `UPDATE_GOLDEN=1` rewrites them after an intended change.

mod common;

use common::Spindle;
use serde_json::Value;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn check(name: &str, actual: &Value) {
    common::check_golden(name, actual);
}

#[test]
fn otlp_json_in_jaeger_and_otlp_json_out() {
    let dir = tempfile::tempdir().unwrap();
    let spindle = Spindle::start(dir.path());
    let reply = spindle.post_otlp_fixture();
    assert_eq!(reply.status().as_u16(), 200);
    assert_eq!(reply.json::<Value>().unwrap(), serde_json::json!({}));

    let (status, jaeger) = spindle.get_json(&format!("/api/traces/{TRACE_ID}"));
    assert_eq!(status, 200);
    check("jaeger_trace.json", &jaeger);
    let (status, otlp) = spindle.get_json(&format!("/api/v3/traces/{TRACE_ID}"));
    assert_eq!(status, 200);
    check("otlp_trace.json", &otlp);
}
