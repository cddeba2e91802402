//! The admin port (:14269): `/healthz` (the process is up), `/readyz` (the store is open
//! and every listener is bound) and `/metrics` (OpenMetrics text, which Prometheus scrapes).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::telemetry::{self, Telemetry};

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

async fn metrics(State(state): State<AdminState>) -> Response {
    let telemetry = Arc::clone(&state.telemetry);
    let dir = state.data_dir.clone();
    let store = state.store.get().cloned();
    let body = tokio::task::spawn_blocking(move || {
        telemetry.server.storage_bytes.set(spindle_store::EmbeddedStore::data_dir_size(&dir) as i64);
        if let Some(store) = store {
            let (operations, services) = telemetry.server.store.set(&store.stats());
            telemetry.limits.hit(
                crate::limits::Limit::OperationsPerService,
                operations,
                &"operation names beyond max_operations_per_service are stored and searchable but not listed",
            );
            telemetry.limits.hit(
                crate::limits::Limit::Services,
                services,
                &"services beyond max_services are stored and searchable but not listed by /api/services",
            );
        }
        telemetry.encode()
    })
    .await;
    match body {
        Ok(Ok(body)) => ([(header::CONTENT_TYPE, telemetry::CONTENT_TYPE)], body).into_response(),
        Ok(Err(e)) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the metrics failed: {e}\n")).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the metrics failed: {e}\n")).into_response(),
    }
}
