//! Golden tests of Grafana Tempo's API shapes (docs/TEMPO_API.md) against the real binary:
//! a fixed OTLP JSON request in, every Tempo endpoint's answer compared with committed
//! fixtures (`tests/fixtures/tempo/`, checked by hand against Tempo's documented shapes;
//! `UPDATE_GOLDEN=1` rewrites them after an intended change). Protobuf answers are decoded.

mod common;

use common::Spindle;
use prost::Message;
use serde_json::Value;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
/// The fixture's spans start at 1700000000 s; the range covers them.
const RANGE: &str = "start=1699999000&end=1700001000";

fn check(name: &str, actual: &Value) {
    common::check_golden(&format!("tempo/{name}"), actual);
}

fn encode(q: &str) -> String {
    form_urlencoded::byte_serialize(q.as_bytes()).collect()
}

fn get(spindle: &Spindle, path: &str, accept: Option<&str>) -> (u16, String, Vec<u8>) {
    let mut request = reqwest::blocking::Client::new().get(spindle.query_url(path));
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let r = request.send().expect("GET");
    let status = r.status().as_u16();
    let content_type = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (status, content_type, r.bytes().unwrap().to_vec())
}

#[test]
fn every_tempo_endpoint_answers_in_tempos_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let spindle = Spindle::start(dir.path());
    let reply = spindle.post_otlp_fixture();
    assert_eq!(reply.status().as_u16(), 200);

    // Liveness and version, as Grafana's data source asks first.
    let (status, _, body) = get(&spindle, "/api/echo", None);
    assert_eq!((status, body.as_slice()), (200, b"echo\n".as_slice()));
    let (status, buildinfo) = spindle.get_json("/tempo/api/status/buildinfo");
    assert_eq!(status, 200);
    assert_eq!(buildinfo["version"], "2.1.0");

    // Search: structural, with a by() pipeline, and in tag mode.
    for (name, q) in [
        ("search_structural.json", "{ resource.service.name = \"clstock-api\" } >> { status = error }"),
        ("search_by.json", "{ } | by(name) | count() > 0 | select(span.symbol)"),
        ("search_tags.json", ""),
    ] {
        let path = if q.is_empty() {
            format!("/api/search?tags={}&{RANGE}", encode("symbol=7203"))
        } else {
            format!("/api/search?q={}&{RANGE}&spss=5", encode(q))
        };
        let (status, found) = spindle.get_json(&path);
        assert_eq!(status, 200, "{path}: {found}");
        check(name, &found);
    }
    // Nothing outside the range.
    let (_, none) = spindle.get_json(&format!("/api/search?q={}&start=1600000000&end=1600001000", encode("{ }")));
    assert_eq!(none["traces"], serde_json::json!([]));

    // Traces by id: v2 JSON and protobuf; v1 JSON under /tempo, protobuf also at /api.
    let (status, v2) = spindle.get_json(&format!("/api/v2/traces/{TRACE_ID}"));
    assert_eq!(status, 200);
    check("trace_v2.json", &v2);
    let (status, content_type, bytes) =
        get(&spindle, &format!("/api/v2/traces/{TRACE_ID}"), Some("application/protobuf"));
    assert_eq!((status, content_type.as_str()), (200, "application/protobuf"));
    // TraceByIDResponse { trace = 1 }: the trace is TracesData-compatible.
    let mut buf = bytes.as_slice();
    let (tag, _) = prost::encoding::decode_key(&mut buf).unwrap();
    assert_eq!(tag, 1);
    let len = prost::encoding::decode_varint(&mut buf).unwrap() as usize;
    let trace = opentelemetry_proto::tonic::trace::v1::TracesData::decode(&buf[..len]).unwrap();
    let spans: usize = trace.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
    assert_eq!(spans, 2);
    let (status, unknown) = spindle.get_json("/api/v2/traces/0000000000000000000000000000abcd");
    assert_eq!((status, &unknown["trace"]), (200, &serde_json::json!({})));

    let (status, v1) = spindle.get_json(&format!("/tempo/api/traces/{TRACE_ID}"));
    assert_eq!(status, 200);
    check("trace_v1.json", &v1);
    let (status, _, bytes) = get(&spindle, &format!("/api/traces/{TRACE_ID}"), Some("application/protobuf"));
    assert_eq!(status, 200);
    let trace = opentelemetry_proto::tonic::trace::v1::TracesData::decode(bytes.as_slice()).unwrap();
    assert_eq!(trace.resource_spans.len(), 1);
    // Without asking for protobuf, /api/traces/{id} stays Jaeger's.
    let (_, jaeger) = spindle.get_json(&format!("/api/traces/{TRACE_ID}"));
    assert_eq!(jaeger["data"][0]["traceID"], TRACE_ID);
    let (status, _, _) = get(&spindle, "/tempo/api/traces/0000000000000000000000000000abcd", None);
    assert_eq!(status, 404);

    // Tags and values.
    for (name, path) in [
        ("tags_v2.json", format!("/api/v2/search/tags?{RANGE}")),
        ("tags_v2_span.json", format!("/api/v2/search/tags?scope=span&{RANGE}")),
        ("tags_v1.json", format!("/api/search/tags?{RANGE}")),
        ("tag_values_v2.json", format!("/api/v2/search/tag/span.symbol/values?{RANGE}")),
        (
            "tag_values_v2_filtered.json",
            format!("/api/v2/search/tag/name/values?q={}&{RANGE}", encode("{ status = error }")),
        ),
        ("tag_values_v2_status.json", "/api/v2/search/tag/status/values".to_string()),
        ("tag_values_v1.json", format!("/api/search/tag/service.name/values?{RANGE}")),
    ] {
        let (status, found) = spindle.get_json(&path);
        assert_eq!(status, 200, "{path}: {found}");
        check(name, &found);
    }

    // Metrics: range and instant.
    for (name, path) in [
        (
            "query_range.json",
            format!(
                "/api/metrics/query_range?q={}&start=1699999800&end=1700000400&step=60s",
                encode("{ } | count_over_time() by (name)")
            ),
        ),
        (
            "query_range_quantile.json",
            format!(
                "/api/metrics/query_range?q={}&start=1699999800&end=1700000400&step=5m",
                encode("{ } | quantile_over_time(duration, .5, .99)")
            ),
        ),
        (
            "query_instant.json",
            format!(
                "/api/metrics/query?q={}&start=1699999800&end=1700000400",
                encode("{ status = error } | count_over_time() by (resource.service.name)")
            ),
        ),
    ] {
        let (status, found) = spindle.get_json(&path);
        assert_eq!(status, 200, "{path}: {found}");
        check(name, &found);
    }

    // Errors are plain text that points at the mistake.
    let (status, content_type, body) = get(&spindle, &format!("/api/search?q={}", encode("{ span.a = }")), None);
    assert_eq!(status, 400);
    assert!(content_type.starts_with("text/plain"));
    let body = String::from_utf8(body).unwrap();
    assert!(body.contains("parse error at line 1, column 12"), "{body}");
    let (status, _, _) = get(&spindle, &format!("/api/metrics/query_range?q={}", encode("{ }")), None);
    assert_eq!(status, 400);
    let (status, _, _) = get(&spindle, "/api/v2/search/tags?scope=nope", None);
    assert_eq!(status, 400);
}

/// `query_max_series`: a metrics query with more series answers the first, `PARTIAL`, and
/// the hit is counted in `/metrics`.
#[test]
fn metrics_beyond_query_max_series_are_partial_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let spindle = Spindle::start_with(dir.path(), &["--query-max-series", "1"]);
    assert_eq!(spindle.post_otlp_fixture().status().as_u16(), 200);
    for q in ["{ } | count_over_time() by (name)", "{ } | rate() by (name) | topk(5)"] {
        let (status, answer) = spindle
            .get_json(&format!("/api/metrics/query_range?q={}&start=1699999800&end=1700000400&step=60s", encode(q)));
        assert_eq!(status, 200);
        assert_eq!(answer["status"], "PARTIAL", "{q}: {answer}");
        assert!(answer["message"].as_str().unwrap().contains("query_max_series"));
        assert_eq!(answer["series"].as_array().unwrap().len(), 1, "{q}: {answer}");
    }
    let metrics = reqwest::blocking::get(format!("http://{}/metrics", spindle.admin)).unwrap().text().unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("spindle_limit_hits_total{") && l.contains("limit=\"query_series\"")),
        "{metrics}"
    );
}
