//! Spans sent with the official OpenTelemetry Rust exporters (gRPC with gzip, HTTP
//! protobuf, HTTP JSON) and read back through every Jaeger v1 and v3 endpoint.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::Spindle;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt, TraceFlags, TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use serde_json::{json, Value};

fn provider(service: &str, exporter: opentelemetry_otlp::SpanExporter) -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder_empty()
                .with_service_name(service.to_string())
                .with_attribute(KeyValue::new("host.name", "test-host"))
                .build(),
        )
        .build()
}

fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("spindle-test").with_version("1.2.3").build()
}

fn tag<'a>(span: &'a Value, key: &str) -> &'a Value {
    span["tags"]
        .as_array()
        .and_then(|tags| tags.iter().find(|t| t["key"] == key))
        .unwrap_or_else(|| panic!("tag {key} missing in {span}"))
}

fn span_named<'a>(trace: &'a Value, name: &str) -> &'a Value {
    trace["spans"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["operationName"] == name))
        .unwrap_or_else(|| panic!("span {name} missing"))
}

fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

struct Sent {
    trace_id: String,
    producer_span_id: String,
    consumer_span_id: String,
    t0: SystemTime,
}

fn send_seed_like_trace(spindle: &Spindle) -> Sent {
    // Microsecond-aligned times, so that µs values read back exactly.
    let now = SystemTime::now() - Duration::from_secs(60);
    let t0 = UNIX_EPOCH + Duration::from_micros(micros(now));
    let at = |ms: u64| t0 + Duration::from_millis(ms);

    // ingestion-service over gRPC with gzip (the exporter needs a runtime for tonic).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let grpc_exporter = rt.block_on(async {
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(format!("http://{}", spindle.grpc))
            .with_compression(opentelemetry_otlp::Compression::Gzip)
            .build()
            .unwrap()
    });
    let ingestion = provider("ingestion-service", grpc_exporter);
    let tracer = ingestion.tracer_with_scope(scope());
    let root = tracer
        .span_builder("fetch_instrument_data")
        .with_kind(SpanKind::Internal)
        .with_start_time(at(0))
        .with_attributes([
            KeyValue::new("symbol", "AAPL"),
            KeyValue::new("count", 42i64),
            KeyValue::new("price", 1.5),
            KeyValue::new("live", true),
        ])
        .start(&tracer);
    let root_cx = Context::new().with_span(root);
    let mut producer = tracer
        .span_builder("send_to_kafka")
        .with_kind(SpanKind::Producer)
        .with_start_time(at(1))
        .with_attributes([
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new("messaging.destination.name", "market-data"),
        ])
        .start_with_context(&tracer, &root_cx);
    producer.add_event_with_timestamp("retry", at(2), vec![KeyValue::new("attempt", 2i64)]);
    producer.set_status(Status::error("broker unavailable"));
    let producer_cx = producer.span_context().clone();
    producer.end_with_timestamp(at(4));
    root_cx.span().end_with_timestamp(at(5));
    ingestion.force_flush().unwrap();

    // processor-service over HTTP protobuf, continuing from the producer's context.
    let http_exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("http://{}/v1/traces", spindle.http))
        .with_protocol(Protocol::HttpBinary)
        .build()
        .unwrap();
    let processor = provider("processor-service", http_exporter);
    let tracer = processor.tracer_with_scope(scope());
    let remote = SpanContext::new(
        producer_cx.trace_id(),
        producer_cx.span_id(),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    let consumer = tracer
        .span_builder("process_message")
        .with_kind(SpanKind::Consumer)
        .with_start_time(at(6))
        .with_attributes([KeyValue::new("messaging.system", "kafka"), KeyValue::new("symbol", "AAPL")])
        .start_with_context(&tracer, &Context::new().with_remote_span_context(remote));
    let consumer_cx = consumer.span_context().clone();
    let consumer_cx_full = Context::new().with_span(consumer);

    // storage-service over HTTP JSON, a child of the consumer in another service.
    let json_exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("http://{}/v1/traces", spindle.http))
        .with_protocol(Protocol::HttpJson)
        .build()
        .unwrap();
    let storage = provider("storage-service", json_exporter);
    let storage_tracer = storage.tracer_with_scope(scope());
    let mut db = storage_tracer
        .span_builder("db_write")
        .with_kind(SpanKind::Client)
        .with_start_time(at(7))
        .with_attributes([KeyValue::new("db.system", "postgresql"), KeyValue::new("db.operation.name", "INSERT")])
        .start_with_context(&storage_tracer, &consumer_cx_full);
    db.end_with_timestamp(at(19));
    consumer_cx_full.span().end_with_timestamp(at(20));
    storage.force_flush().unwrap();
    processor.force_flush().unwrap();
    for p in [ingestion, processor, storage] {
        p.shutdown().unwrap();
    }
    drop(rt);
    Sent {
        trace_id: format!("{}", producer_cx.trace_id()),
        producer_span_id: format!("{}", producer_cx.span_id()),
        consumer_span_id: format!("{}", consumer_cx.span_id()),
        t0,
    }
}

#[test]
fn official_exporters_round_trip_through_every_query_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let spindle = Spindle::start(dir.path());
    let sent = send_seed_like_trace(&spindle);
    let t0 = micros(sent.t0);

    // --- v1: services and operations
    let (status, services) = spindle.get_json("/api/services");
    assert_eq!(status, 200);
    assert_eq!(services["data"], json!(["ingestion-service", "processor-service", "storage-service"]));
    assert_eq!(services["total"], 3);
    assert_eq!(services["errors"], Value::Null);
    let (_, ops) = spindle.get_json("/api/services/ingestion-service/operations");
    assert_eq!(ops["data"], json!(["fetch_instrument_data", "send_to_kafka"]));
    let (_, ops) = spindle.get_json("/api/operations?service=ingestion-service&spanKind=producer");
    assert_eq!(ops["data"], json!([{"name": "send_to_kafka", "spanKind": "producer"}]));

    // --- v1: trace by id
    let (status, body) = spindle.get_json(&format!("/api/traces/{}", sent.trace_id));
    assert_eq!(status, 200);
    let trace = &body["data"][0];
    assert_eq!(trace["traceID"], sent.trace_id);
    assert_eq!(trace["spans"].as_array().unwrap().len(), 4);
    let names: Vec<&str> =
        trace["spans"].as_array().unwrap().iter().map(|s| s["operationName"].as_str().unwrap()).collect();
    assert_eq!(names, ["fetch_instrument_data", "send_to_kafka", "process_message", "db_write"], "ordered by start");

    let root = span_named(trace, "fetch_instrument_data");
    assert_eq!(root["references"], json!([]));
    assert_eq!(root["startTime"], t0);
    assert_eq!(root["duration"], 5000);
    assert_eq!(tag(root, "symbol")["type"], "string");
    assert_eq!(tag(root, "count"), &json!({"key": "count", "type": "int64", "value": 42}));
    assert_eq!(tag(root, "price"), &json!({"key": "price", "type": "float64", "value": 1.5}));
    assert_eq!(tag(root, "live"), &json!({"key": "live", "type": "bool", "value": true}));
    assert_eq!(tag(root, "span.kind")["value"], "internal");
    assert_eq!(tag(root, "otel.scope.name")["value"], "spindle-test");
    assert_eq!(tag(root, "otel.scope.version")["value"], "1.2.3");

    let producer = span_named(trace, "send_to_kafka");
    assert_eq!(producer["spanID"], sent.producer_span_id);
    assert_eq!(producer["references"][0]["refType"], "CHILD_OF");
    assert_eq!(producer["references"][0]["spanID"], root["spanID"]);
    assert_eq!(producer["startTime"], t0 + 1000);
    assert_eq!(producer["duration"], 3000);
    assert_eq!(tag(producer, "span.kind")["value"], "producer");
    assert_eq!(tag(producer, "otel.status_code")["value"], "ERROR");
    assert_eq!(tag(producer, "error"), &json!({"key": "error", "type": "bool", "value": true}));
    assert_eq!(tag(producer, "otel.status_description")["value"], "broker unavailable");
    assert_eq!(
        producer["logs"],
        json!([{"timestamp": t0 + 2000, "fields": [
            {"key": "event", "type": "string", "value": "retry"},
            {"key": "attempt", "type": "int64", "value": 2}]}])
    );

    let consumer = span_named(trace, "process_message");
    assert_eq!(consumer["spanID"], sent.consumer_span_id);
    assert_eq!(
        consumer["references"],
        json!([{"refType": "CHILD_OF", "traceID": sent.trace_id, "spanID": sent.producer_span_id}])
    );
    let db = span_named(trace, "db_write");
    assert_eq!(db["references"][0]["spanID"], sent.consumer_span_id);
    assert_eq!(db["duration"], 12_000);

    let processes = trace["processes"].as_object().unwrap();
    assert_eq!(processes.len(), 3);
    let process = |span: &Value| &processes[span["processID"].as_str().unwrap()];
    assert_eq!(process(root)["serviceName"], "ingestion-service");
    assert_eq!(process(consumer)["serviceName"], "processor-service");
    assert_eq!(process(db)["serviceName"], "storage-service");
    assert!(process(db)["tags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["key"] == "host.name" && t["value"] == "test-host"));

    // --- v1: search; filters match single spans, whole traces come back
    let (_, found) = spindle.get_json("/api/traces?service=storage-service&operation=db_write");
    assert_eq!(found["data"].as_array().unwrap().len(), 1);
    assert_eq!(found["data"][0]["spans"].as_array().unwrap().len(), 4);
    let window = format!("start={}&end={}", t0 - 1_000_000, t0 + 1_000_000);
    for q in [
        format!("/api/traces?service=ingestion-service&tags=%7B%22symbol%22%3A%22AAPL%22%7D&{window}"),
        format!("/api/traces?tag=symbol:AAPL&tag=count:42&{window}"),
        "/api/traces?service=ingestion-service&minDuration=4.5ms&maxDuration=5ms".to_string(),
        "/api/traces?tags=%7B%22error%22%3A%22true%22%7D".to_string(),
        "/api/traces?minDuration=11ms".to_string(),
    ] {
        let (status, found) = spindle.get_json(&q);
        assert_eq!(status, 200, "{q}");
        assert_eq!(found["data"].as_array().unwrap().len(), 1, "{q}");
    }
    for q in [
        // count:42 and symbol:MSFT are on no single span together
        "/api/traces?tag=symbol:MSFT".to_string(),
        "/api/traces?service=ingestion-service&minDuration=6ms".to_string(),
        format!("/api/traces?start={}&end={}", t0 + 60_000_000, t0 + 120_000_000),
        "/api/traces?service=processor-service&operation=db_write".to_string(),
    ] {
        let (status, found) = spindle.get_json(&q);
        assert_eq!(status, 200, "{q}");
        assert_eq!(found["data"], json!([]), "{q}");
    }
    let (_, multi) = spindle.get_json(&format!("/api/traces?traceID={}&traceID=abc", sent.trace_id));
    assert_eq!(multi["data"].as_array().unwrap().len(), 1);
    assert_eq!(multi["errors"][0]["code"], 404);

    // --- v1: dependencies, with the virtual kafka and postgresql nodes
    let (_, deps) = spindle.get_json("/api/dependencies?lookback=3600000");
    let mut edges: Vec<(String, String, u64)> = deps["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["parent"].as_str().unwrap().into(),
                d["child"].as_str().unwrap().into(),
                d["callCount"].as_u64().unwrap(),
            )
        })
        .collect();
    edges.sort();
    assert_eq!(
        edges,
        vec![
            ("ingestion-service".into(), "kafka".into(), 1),
            ("kafka".into(), "processor-service".into(), 1),
            ("processor-service".into(), "storage-service".into(), 1),
            ("storage-service".into(), "postgresql".into(), 1),
        ]
    );
    let (_, old) = spindle.get_json(&format!("/api/dependencies?endTs={}&lookback=1000", t0 / 1000 - 10_000));
    assert_eq!(old["data"], json!([]));

    // --- v3
    let (_, services) = spindle.get_json("/api/v3/services");
    assert_eq!(services, json!({"services": ["ingestion-service", "processor-service", "storage-service"]}));
    let (_, ops) = spindle.get_json("/api/v3/operations?service=storage-service");
    assert_eq!(ops, json!({"operations": [{"name": "db_write", "spanKind": "client"}]}));
    let (status, v3) = spindle.get_json(&format!("/api/v3/traces/{}", sent.trace_id));
    assert_eq!(status, 200);
    let resource_spans = v3["result"]["resourceSpans"].as_array().unwrap();
    assert_eq!(resource_spans.len(), 3);
    let all_spans: Vec<&Value> = resource_spans
        .iter()
        .flat_map(|rs| rs["scopeSpans"].as_array().unwrap().iter())
        .flat_map(|ss| ss["spans"].as_array().unwrap().iter())
        .collect();
    assert_eq!(all_spans.len(), 4);
    let v3_producer = all_spans.iter().find(|s| s["name"] == "send_to_kafka").unwrap();
    assert_eq!(v3_producer["traceId"], sent.trace_id);
    assert_eq!(v3_producer["kind"], 4);
    assert_eq!(v3_producer["status"]["code"], 2);
    assert_eq!(v3_producer["startTimeUnixNano"], ((t0 + 1000) * 1000).to_string());

    let min = rfc3339(sent.t0 - Duration::from_secs(1));
    let max = rfc3339(sent.t0 + Duration::from_secs(2)); // whole seconds: floor(t0 + 2 s) > t0 + 20 ms
    let (status, found) = spindle.get_json(&format!(
        "/api/v3/traces?query.service_name=processor-service&query.start_time_min={min}&query.start_time_max={max}&query.attributes=%7B%22symbol%22%3A%22AAPL%22%7D"
    ));
    assert_eq!(status, 200);
    assert_eq!(found["result"]["resourceSpans"].as_array().unwrap().len(), 3);
    let (status, none) = spindle.get_json("/api/v3/traces?query.serviceName=processor-service&query.durationMin=1h");
    assert_eq!(status, 404);
    assert_eq!(none["error"]["httpCode"], 404);
    let (_, summaries) = spindle.get_json("/api/v3/trace-summaries?query.serviceName=ingestion-service");
    let s = &summaries["summaries"][0];
    assert_eq!(s["traceId"], sent.trace_id);
    assert_eq!(s["rootServiceName"], "ingestion-service");
    assert_eq!(s["rootOperationName"], "fetch_instrument_data");
    assert_eq!(s["spanCount"], 4);
    assert_eq!(s["errorSpanCount"], 1);
    assert_eq!(s["minStartTimeUnixNano"], (t0 * 1000).to_string());
    assert_eq!(s["maxEndTimeUnixNano"], ((t0 + 20_000) * 1000).to_string());
}

fn rfc3339(t: SystemTime) -> String {
    // Civil-from-days (Howard Hinnant), enough for a test helper.
    let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}
