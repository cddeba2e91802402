//! End to end against a real spindle server started here: the seed applications instrumented
//! with the SDK export over OTLP gRPC and HTTP, and their traces are read back through
//! spindle's Jaeger query API as single traces spanning every service.
//!
//! Needs the `spindle` binary (built from this workspace on first use, or `SPINDLE_BIN`) and,
//! for Kafka, `tansu` (`cargo install tansu --locked --features dynostore`).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use spindle_sdk::Protocol;
use support::scenarios::{kafka_pipeline, ClStock, PIPELINE_SPANS, PIPELINE_TOPICS, RECOMMENDATIONS_SPANS};
use support::{wait_until, TestService};
use support::{Spindle, Tansu};

const WAIT: Duration = Duration::from_secs(30);

/// One span of a Jaeger JSON trace, flattened.
#[derive(Debug)]
struct JaegerSpan {
    span_id: String,
    operation: String,
    service: String,
    parent: Option<String>,
    tags: BTreeMap<String, String>,
}

fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

fn jaeger_spans(body: &Value) -> Vec<JaegerSpan> {
    let trace = &body["data"][0];
    let processes = &trace["processes"];
    trace["spans"]
        .as_array()
        .map(|spans| {
            spans
                .iter()
                .map(|s| JaegerSpan {
                    span_id: text(&s["spanID"]),
                    operation: text(&s["operationName"]),
                    service: text(&processes[text(&s["processID"])]["serviceName"]),
                    parent: s["references"]
                        .as_array()
                        .and_then(|refs| refs.iter().find(|r| r["refType"] == "CHILD_OF").map(|r| text(&r["spanID"]))),
                    tags: s["tags"]
                        .as_array()
                        .map(|tags| tags.iter().map(|t| (text(&t["key"]), text(&t["value"]))).collect())
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Polls spindle until trace `trace_id` holds at least `count` spans.
fn read_back(spindle: &Spindle, trace_id: &str, count: usize) -> Vec<JaegerSpan> {
    wait_until(&format!("{count} spans of trace {trace_id} in spindle"), WAIT, || {
        let spans = jaeger_spans(&spindle.trace(trace_id)?);
        (spans.len() >= count).then_some(spans)
    })
}

fn find<'a>(spans: &'a [JaegerSpan], service: &str, operation: &str) -> &'a JaegerSpan {
    spans
        .iter()
        .find(|s| s.service == service && s.operation == operation)
        .unwrap_or_else(|| panic!("no {operation:?} of {service} in {spans:#?}"))
}

fn assert_child(spans: &[JaegerSpan], child: &JaegerSpan, parent: (&str, &str)) {
    let parent = find(spans, parent.0, parent.1);
    assert_eq!(
        child.parent.as_deref(),
        Some(parent.span_id.as_str()),
        "{} of {} should be a child of {} of {}",
        child.operation,
        child.service,
        parent.operation,
        parent.service
    );
}

#[test]
fn http_between_two_services_is_one_trace_in_spindle() {
    let spindle = Spindle::start();
    let api = TestService::new("clstock-api", &spindle.otlp_http, Protocol::HttpProtobuf);
    let market = TestService::new("market-data-service", &spindle.otlp_grpc, Protocol::Grpc);
    let clstock = ClStock::start(&api, &market);
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    assert_eq!(clstock.call("/recommendations", trace_id, "00f067aa0ba902b7"), 200);
    api.guard.flush().expect("flush api");
    market.guard.flush().expect("flush market data");

    let spans = read_back(&spindle, trace_id, RECOMMENDATIONS_SPANS);
    let server = find(&spans, "clstock-api", "GET /recommendations");
    assert_eq!(server.parent.as_deref(), Some("00f067aa0ba902b7"));
    assert_eq!(server.tags.get("span.kind").map(String::as_str), Some("server"));
    assert_eq!(server.tags.get("http.route").map(String::as_str), Some("/recommendations"));
    let backends: Vec<_> = spans.iter().filter(|s| s.operation == "GET /stocks/{symbol}").collect();
    assert_eq!(backends.len(), 2, "{spans:#?}");
    for backend in backends {
        assert_eq!(backend.service, "market-data-service");
        let client = spans
            .iter()
            .find(|c| Some(&c.span_id) == backend.parent.as_ref())
            .unwrap_or_else(|| panic!("the parent of {backend:?} is in the trace"));
        assert_eq!(client.service, "clstock-api");
        assert_eq!(client.tags.get("span.kind").map(String::as_str), Some("client"));
        assert_eq!(client.parent.as_deref(), Some(server.span_id.as_str()));
    }
}

#[test]
fn kafka_pipeline_is_one_trace_in_spindle() {
    let spindle = Spindle::start();
    let tansu = Tansu::start(&PIPELINE_TOPICS);
    let ingestion = TestService::new("ingestion-service", &spindle.otlp_grpc, Protocol::Grpc);
    let processor = TestService::new("processor-service", &spindle.otlp_http, Protocol::HttpJson);
    let storage = TestService::new("storage-service", &spindle.otlp_grpc, Protocol::Grpc);
    let trace_id = kafka_pipeline(&tansu.bootstrap, &ingestion, &processor, &storage);
    for svc in [&ingestion, &processor, &storage] {
        svc.guard.flush().expect("flush");
    }

    let spans = read_back(&spindle, &trace_id, PIPELINE_SPANS);
    // The seed's expected trace, hop by hop.
    for (child, parent) in [
        (("ingestion-service", "enrich_context"), ("ingestion-service", "fetch_instrument_data")),
        (("ingestion-service", "send_to_kafka"), ("ingestion-service", "fetch_instrument_data")),
        (("ingestion-service", "send market-data"), ("ingestion-service", "send_to_kafka")),
        (("processor-service", "process market-data"), ("ingestion-service", "send market-data")),
        (("processor-service", "process_message"), ("processor-service", "process market-data")),
        (("processor-service", "calculate_bsm"), ("processor-service", "process_message")),
        (("processor-service", "send enriched-data"), ("processor-service", "send_enriched")),
        (("storage-service", "process enriched-data"), ("processor-service", "send enriched-data")),
        (("storage-service", "store_data"), ("storage-service", "process enriched-data")),
        (("storage-service", "db_write"), ("storage-service", "store_data")),
    ] {
        assert_child(&spans, find(&spans, child.0, child.1), parent);
    }
    for (service, operation, kind) in [
        ("ingestion-service", "send market-data", "producer"),
        ("processor-service", "process market-data", "consumer"),
        ("processor-service", "send enriched-data", "producer"),
        ("storage-service", "process enriched-data", "consumer"),
    ] {
        let span = find(&spans, service, operation);
        assert_eq!(span.tags.get("span.kind").map(String::as_str), Some(kind), "{span:?}");
        assert_eq!(span.tags.get("messaging.system").map(String::as_str), Some("kafka"));
        assert!(span.tags.contains_key("messaging.destination.partition.id"), "{span:?}");
        assert!(span.tags.contains_key("messaging.kafka.offset"), "{span:?}");
    }
    let failed = find(&spans, "storage-service", "process enriched-data");
    assert_eq!(failed.tags.get("error").map(String::as_str), Some("true"), "{failed:?}");
}
