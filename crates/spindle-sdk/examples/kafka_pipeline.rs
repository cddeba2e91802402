//! The seed's Kafka pipeline with trace context in record headers:
//! `ingestion` produces to `market-data`, `processor` consumes it and produces to
//! `enriched-data`, `storage` consumes that. In spindle the three services form one trace
//! and the dependency graph `ingestion → kafka → processor → kafka → storage → postgresql`.
//!
//! ```sh
//! spindle serve &
//! tansu broker --listener-url tcp://127.0.0.1:9092 --advertised-listener-url tcp://127.0.0.1:9092 &
//! tansu topic create market-data --broker tcp://127.0.0.1:9092
//! tansu topic create enriched-data --broker tcp://127.0.0.1:9092
//! cargo run -p spindle-sdk --example kafka_pipeline -- storage &
//! cargo run -p spindle-sdk --example kafka_pipeline -- processor &
//! cargo run -p spindle-sdk --example kafka_pipeline -- ingestion
//! ```
//! `KAFKA_BROKERS` overrides the broker address.

use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use spindle_sdk::{kafka, rdkafka};
use tracing::{info, info_span, instrument, Instrument};

fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.timeout.ms", "10000")
        .create()
        .expect("valid producer configuration")
}

fn consumer(brokers: &str, group: &str, topic: &str) -> StreamConsumer {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("valid consumer configuration");
    consumer.subscribe(&[topic]).expect("subscription");
    consumer
}

#[instrument(skip(producer))]
async fn fetch_instrument_data(producer: &FutureProducer, symbol: &str) {
    let payload = info_span!("enrich_context").in_scope(|| format!("{{\"symbol\":\"{symbol}\"}}"));
    let record = FutureRecord::to("market-data").key(symbol).payload(&payload);
    // A PRODUCER span `send market-data`, its context written into the record's headers.
    let delivery = kafka::send(producer, record, Duration::from_secs(5)).instrument(info_span!("send_to_kafka")).await;
    if let Err((error, _)) = delivery {
        tracing::error!(%error, "delivery failed");
    }
}

async fn processor(brokers: &str) {
    let (input, output) = (consumer(brokers, "processor", "market-data"), producer(brokers));
    loop {
        let Ok(message) = input.recv().await else { continue };
        let key = message.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default();
        // A CONSUMER span `process market-data`, child of the producer's span.
        let result = kafka::process(&message, async {
            let value = info_span!("process_message", symbol = %key).in_scope(|| {
                info_span!("clean_data").in_scope(|| {});
                info_span!("calculate_bsm").in_scope(|| 3.2_f64)
            });
            let payload = format!("{{\"bsm\":{value}}}");
            let record = FutureRecord::to("enriched-data").key(&key).payload(&payload);
            kafka::send(&output, record, Duration::from_secs(5))
                .instrument(info_span!("send_enriched"))
                .await
                .map(|_| ())
                .map_err(|(error, _)| error)
        })
        .await;
        if let Err(error) = result {
            tracing::error!(%error, "processing failed");
        }
    }
}

async fn storage(brokers: &str) {
    let input = consumer(brokers, "storage", "enriched-data");
    loop {
        let Ok(message) = input.recv().await else { continue };
        let _ = kafka::process(&message, async {
            async {
                info_span!("prepare_records").in_scope(|| {});
                info_span!("db_write", db.system = "postgresql", db.operation.name = "INSERT").in_scope(|| {});
            }
            .instrument(info_span!("store_data"))
            .await;
            info!("stored");
            Ok::<(), std::io::Error>(())
        })
        .await;
    }
}

#[tokio::main]
async fn main() {
    let role = std::env::args().nth(1).unwrap_or_else(|| "ingestion".to_owned());
    let brokers = std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned());
    let _guard = spindle_sdk::init(&format!("{role}-service"));
    match role.as_str() {
        "processor" => processor(&brokers).await,
        "storage" => storage(&brokers).await,
        _ => {
            let producer = producer(&brokers);
            for symbol in ["7203", "6758", "9984"] {
                fetch_instrument_data(&producer, symbol).await;
            }
        }
    }
}
