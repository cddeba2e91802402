//! The admin port (:14269): `/healthz` (the process is up), `/readyz` (the store is open
//! and every listener is bound) and `/metrics` (Prometheus).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::telemetry::Telemetry;

#[derive(Clone)]
struct AdminState {
    ready: Arc<AtomicBool>,
    telemetry: Arc<Telemetry>,
    data_dir: PathBuf,
    store: StoreSlot,
}

/// The store, once open: the admin port serves `/healthz` before it is.
pub type StoreSlot = Arc<OnceLock<Arc<spindle_store::EmbeddedStore>>>;

pub fn router(ready: Arc<AtomicBool>, telemetry: Arc<Telemetry>, data_dir: PathBuf, store: StoreSlot) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(AdminState { ready, telemetry, data_dir, store })
}

async fn readyz(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

async fn metrics(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let telemetry = Arc::clone(&state.telemetry);
    let dir = state.data_dir.clone();
    let store = state.store.get().cloned();
    let body = tokio::task::spawn_blocking(move || {
        telemetry.storage_bytes.set(spindle_store::EmbeddedStore::data_dir_size(&dir) as i64);
        if let Some(store) = store {
            telemetry.store.set(&store.stats());
        }
        telemetry.encode(openmetrics)
    })
    .await
    .unwrap_or_default();
    let content_type = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}
