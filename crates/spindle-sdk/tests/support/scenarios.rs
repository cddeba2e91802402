//! The seed applications in miniature, exporting wherever they are pointed: the ClStock API
//! calling its market-data service over HTTP, and the ingestion → processor → storage
//! pipeline over Kafka. The propagation tests read their spans back from an OTLP receiver,
//! the end-to-end tests from a real spindle server.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use spindle_sdk::http::axum::ServerTracingLayer;
use spindle_sdk::http::reqwest::traced_client;
use spindle_sdk::kafka;
use spindle_sdk::reqwest_middleware::ClientWithMiddleware;
use tracing::Instrument;

use super::TestService;

const KAFKA_WAIT: Duration = Duration::from_secs(30);

/// The number of spans one `/recommendations` call produces across both services.
pub const RECOMMENDATIONS_SPANS: usize = 7;
/// The number of spans one message produces across the three pipeline services.
pub const PIPELINE_SPANS: usize = 14;

#[tracing::instrument]
async fn get_stock_data(symbol: String) -> String {
    format!("{{\"symbol\":\"{symbol}\",\"close\":101.5}}")
}

fn market_data_app() -> Router {
    Router::new()
        .route("/stocks/{symbol}", get(|Path(symbol): Path<String>| get_stock_data(symbol)))
        .route("/fail", get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }))
        .layer(ServerTracingLayer::new())
}

fn clstock_app(client: ClientWithMiddleware, market_data: SocketAddr) -> Router {
    let recommendations = {
        let client = client.clone();
        move || async move {
            let fetches = ["7203", "AAPL"].map(|symbol| {
                let (client, url) = (client.clone(), format!("http://{market_data}/stocks/{symbol}"));
                async move { client.get(url).send().await.map(|r| r.status().as_u16()) }
            });
            let statuses = spindle_sdk::join_all_in_current_span(fetches).await;
            if statuses.iter().all(|s| matches!(s, Ok(Ok(200)))) {
                StatusCode::OK
            } else {
                StatusCode::BAD_GATEWAY
            }
        }
    };
    let broken = move || async move {
        match client.get(format!("http://{market_data}/fail")).send().await {
            Ok(r) if r.status().is_success() => StatusCode::OK,
            _ => StatusCode::BAD_GATEWAY,
        }
    };
    Router::new()
        .route("/recommendations", get(recommendations))
        .route("/broken", get(broken))
        .layer(ServerTracingLayer::new())
}

fn serve(svc: &TestService, app: Router) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    listener.set_nonblocking(true).expect("nonblocking");
    svc.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// `clstock-api` (routes `/recommendations`, `/broken`) in front of `market-data-service`
/// (routes `/stocks/{symbol}`, `/fail`), both serving on loopback.
pub struct ClStock {
    pub api_addr: SocketAddr,
}

impl ClStock {
    pub fn start(api: &TestService, market: &TestService) -> Self {
        let market_addr = serve(market, market_data_app());
        let api_addr = serve(api, clstock_app(traced_client(reqwest::Client::new()), market_addr));
        Self { api_addr }
    }

    /// Calls `path` like an untraced client that sends a W3C `traceparent` (a browser, or
    /// another vendor's SDK), and returns the status code.
    pub fn call(&self, path: &str, trace_id: &str, parent_span_id: &str) -> u16 {
        let url = format!("http://{}{path}", self.api_addr);
        let traceparent = format!("00-{trace_id}-{parent_span_id}-01");
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(async move {
                reqwest::Client::new()
                    .get(url)
                    .header("traceparent", traceparent)
                    .send()
                    .await
                    .expect("request succeeds")
                    .status()
                    .as_u16()
            })
        })
        .join()
        .expect("caller thread")
    }
}

fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("message.timeout.ms", "15000")
        .create()
        .expect("producer")
}

fn consumer(bootstrap: &str, group: &str, topic: &str) -> StreamConsumer {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

async fn recv(consumer: &StreamConsumer) -> rdkafka::message::BorrowedMessage<'_> {
    tokio::time::timeout(KAFKA_WAIT, consumer.recv())
        .await
        .expect("a message arrives in time")
        .expect("message is readable")
}

#[tracing::instrument(skip_all)]
async fn fetch_instrument_data(producer: FutureProducer, symbol: &'static str) -> String {
    tracing::info_span!("enrich_context").in_scope(|| {});
    async {
        let headers = OwnedHeaders::new().insert(Header { key: "schema", value: Some("v2") });
        let record = FutureRecord::to("market-data").key(symbol).payload("{\"price\":101.5}").headers(headers);
        kafka::send(&producer, record, Duration::from_secs(15)).await.map_err(|(e, _)| e).expect("delivered");
    }
    .instrument(tracing::info_span!("send_to_kafka"))
    .await;
    spindle_sdk::current_trace_id().expect("sampled")
}

/// Topics the pipeline needs: (name, partitions).
pub const PIPELINE_TOPICS: [(&str, u32); 2] = [("market-data", 2), ("enriched-data", 1)];

/// Sends one message through ingestion → `market-data` → processor → `enriched-data` →
/// storage, whose handler fails; returns the trace id. Each service runs as itself.
pub fn kafka_pipeline(
    bootstrap: &str,
    ingestion: &TestService,
    processor: &TestService,
    storage: &TestService,
) -> String {
    let trace_id = ingestion.run(fetch_instrument_data(producer(bootstrap), "AAPL"));

    let b = bootstrap.to_owned();
    let forwarded_schema = processor.run(async move {
        let consumer = consumer(&b, "processor", "market-data");
        let out = producer(&b);
        let message = recv(&consumer).await;
        let schema = message
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == "schema").and_then(|h| h.value.map(<[u8]>::to_vec)));
        kafka::process(&message, async {
            tracing::info_span!("process_message").in_scope(|| {
                tracing::info_span!("clean_data").in_scope(|| {});
                tracing::info_span!("calculate_bsm").in_scope(|| {});
            });
            let record = FutureRecord::to("enriched-data").key("AAPL").payload("{\"bsm\":3.2}");
            kafka::send(&out, record, Duration::from_secs(15))
                .instrument(tracing::info_span!("send_enriched"))
                .await
                .map(|_| ())
                .map_err(|(e, _)| e)
        })
        .await
        .expect("processing succeeds");
        schema
    });
    assert_eq!(forwarded_schema.as_deref(), Some(&b"v2"[..]), "application headers survive injection");

    let b = bootstrap.to_owned();
    storage.run(async move {
        let consumer = consumer(&b, "storage", "enriched-data");
        let message = recv(&consumer).await;
        let result: Result<(), std::io::Error> = kafka::process(&message, async {
            async {
                tracing::info_span!("prepare_records").in_scope(|| {});
                tracing::info_span!("db_write", db.system = "postgresql").in_scope(|| {});
            }
            .instrument(tracing::info_span!("store_data"))
            .await;
            Err(std::io::Error::other("constraint violation"))
        })
        .await;
        assert!(result.is_err(), "process returns the handler's result unchanged");
    });
    trace_id
}
