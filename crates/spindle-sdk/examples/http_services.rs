//! Two HTTP services with one trace between them: `clstock-api` (axum, traced by
//! `ServerTracingLayer`) calls `market-data-service` through a reqwest client with
//! `ClientTracingMiddleware`, which injects the W3C context the other side extracts.
//!
//! ```sh
//! spindle serve &
//! cargo run -p spindle-sdk --example http_services -- market-data &   # :8081
//! cargo run -p spindle-sdk --example http_services -- api &           # :8080
//! curl localhost:8080/recommendations
//! ```

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use spindle_sdk::http::axum::ServerTracingLayer;
use spindle_sdk::http::reqwest::traced_client;
use spindle_sdk::reqwest_middleware::{self, ClientWithMiddleware};
use tracing::instrument;

#[instrument]
async fn get_stock_data(Path(symbol): Path<String>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "symbol": symbol, "close": 2841.5 }))
}

#[instrument(skip(client), err(Debug))]
async fn http_get(client: &ClientWithMiddleware, url: String) -> Result<serde_json::Value, reqwest_middleware::Error> {
    Ok(client.get(url).send().await?.json().await?)
}

async fn get_recommendations(
    State(client): State<ClientWithMiddleware>,
) -> Result<Json<Vec<serde_json::Value>>, StatusCode> {
    let fetches = ["7203", "6758"].map(|symbol| {
        let client = client.clone();
        async move { http_get(&client, format!("http://127.0.0.1:8081/stocks/{symbol}")).await }
    });
    let mut out = Vec::new();
    for result in spindle_sdk::join_all_in_current_span(fetches).await {
        out.push(result.map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?.map_err(|_| StatusCode::BAD_GATEWAY)?);
    }
    Ok(Json(out))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let role = std::env::args().nth(1).unwrap_or_else(|| "api".to_owned());
    let (service, port, app) = match role.as_str() {
        "market-data" => ("market-data-service", 8081, Router::new().route("/stocks/{symbol}", get(get_stock_data))),
        _ => (
            "clstock-api",
            8080,
            Router::new()
                .route("/recommendations", get(get_recommendations))
                .with_state(traced_client(reqwest::Client::new())),
        ),
    };
    let _guard = spindle_sdk::init(service);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    tracing::info!(service, port, "listening");
    axum::serve(listener, app.layer(ServerTracingLayer::new()))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
