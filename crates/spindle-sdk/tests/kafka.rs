//! Kafka propagation through a real Kafka-protocol broker (tansu, started here): the seed's
//! ingestion → processor → storage pipeline, each service with its own tracing pipeline, read
//! back from an OTLP receiver as one trace.
//!
//! Needs `tansu` (`cargo install tansu --locked --features dynostore`); fails without it.

mod support;

use std::time::Duration;

use spindle_sdk::Protocol;
use support::scenarios::{kafka_pipeline, PIPELINE_SPANS, PIPELINE_TOPICS};
use support::Tansu;
use support::{OtlpSink, SinkSpan, TestService};

const WAIT: Duration = Duration::from_secs(30);
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;

fn by_name<'a>(spans: &'a [SinkSpan], service: &str, name: &str) -> &'a SinkSpan {
    spans
        .iter()
        .find(|s| s.service == service && s.name == name)
        .unwrap_or_else(|| panic!("no span {name:?} of {service}: {spans:#?}"))
}

#[test]
fn context_crosses_two_kafka_hops_and_spans_carry_messaging_attributes() {
    let tansu = Tansu::start(&PIPELINE_TOPICS);
    let sink = OtlpSink::start();
    let ingestion = TestService::new("ingestion-service", &sink.grpc_endpoint, Protocol::Grpc);
    let processor = TestService::new("processor-service", &sink.grpc_endpoint, Protocol::Grpc);
    let storage = TestService::new("storage-service", &sink.http_endpoint, Protocol::HttpJson);
    let trace_id = kafka_pipeline(&tansu.bootstrap, &ingestion, &processor, &storage);
    for svc in [&ingestion, &processor, &storage] {
        svc.guard.flush().expect("flush");
    }
    let spans = sink.wait_for_trace(&trace_id, PIPELINE_SPANS, WAIT);

    let send_market = by_name(&spans, "ingestion-service", "send market-data");
    assert_eq!(send_market.kind, PRODUCER);
    assert_eq!(send_market.parent_span_id, by_name(&spans, "ingestion-service", "send_to_kafka").span_id);
    assert_eq!(send_market.attr("messaging.system"), Some("kafka"));
    assert_eq!(send_market.attr("messaging.destination.name"), Some("market-data"));
    assert_eq!(send_market.attr("messaging.kafka.message.key"), Some("AAPL"));
    let partition = send_market.attr("messaging.destination.partition.id").expect("partition recorded");
    assert!(partition == "0" || partition == "1", "{partition}");
    assert!(send_market.attr("messaging.kafka.offset").is_some(), "offset recorded: {send_market:?}");

    let process_market = by_name(&spans, "processor-service", "process market-data");
    assert_eq!(process_market.kind, CONSUMER);
    assert_eq!(process_market.parent_span_id, send_market.span_id, "parent extracted from headers");
    assert_eq!(process_market.attr("messaging.destination.name"), Some("market-data"));
    assert_eq!(process_market.attr("messaging.destination.partition.id"), Some(partition));
    assert_eq!(process_market.attr("messaging.kafka.offset"), send_market.attr("messaging.kafka.offset"));
    assert_eq!(process_market.attr("messaging.kafka.message.key"), Some("AAPL"));
    let process_message = by_name(&spans, "processor-service", "process_message");
    assert_eq!(process_message.parent_span_id, process_market.span_id);
    for child in ["clean_data", "calculate_bsm"] {
        assert_eq!(by_name(&spans, "processor-service", child).parent_span_id, process_message.span_id);
    }
    let send_enriched = by_name(&spans, "processor-service", "send enriched-data");
    assert_eq!(send_enriched.kind, PRODUCER);
    assert_eq!(send_enriched.parent_span_id, by_name(&spans, "processor-service", "send_enriched").span_id);

    let process_enriched = by_name(&spans, "storage-service", "process enriched-data");
    assert_eq!(process_enriched.parent_span_id, send_enriched.span_id);
    assert_eq!(process_enriched.status_code, 2, "a failed handler marks the consumer span");
    assert!(process_enriched
        .events
        .iter()
        .any(|(_, a)| a.get("exception.message").is_some_and(|m| m.contains("constraint violation"))));
    let store = by_name(&spans, "storage-service", "store_data");
    assert_eq!(store.parent_span_id, process_enriched.span_id);
    let db_write = by_name(&spans, "storage-service", "db_write");
    assert_eq!(db_write.parent_span_id, store.span_id);
    assert_eq!(db_write.attr("db.system"), Some("postgresql"));
}
