//! The admin port (:14269): `/healthz` (the process is up), `/readyz` (the store is open
//! and every listener is bound) and `/metrics` (OpenMetrics text, which Prometheus scrapes).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::dependencies::Dependencies;
use crate::security::routes::{Route, Routes};
use crate::telemetry::{self, Telemetry};

#[derive(Clone)]
struct AdminState {
    ready: Arc<AtomicBool>,
    telemetry: Arc<Telemetry>,
    data_dir: PathBuf,
    store: StoreSlot,
    dependencies: Arc<Dependencies>,
}

/// The tenants' stores, once open: the admin port serves `/healthz` before they are.
pub type StoreSlot = Arc<OnceLock<Arc<crate::tenancy::Tenants>>>;

/// The admin port's routes, for [`router`] and the route table (`crate::security::routes`).
fn routes() -> Routes<AdminState> {
    Routes::new().get("/healthz", || async { "ok\n" }).get("/readyz", readyz).get("/metrics", metrics)
}

pub fn route_table() -> Vec<Route> {
    routes().table()
}

pub fn router(
    ready: Arc<AtomicBool>,
    telemetry: Arc<Telemetry>,
    data_dir: PathBuf,
    store: StoreSlot,
    dependencies: Arc<Dependencies>,
) -> Router {
    routes().into_router().with_state(AdminState { ready, telemetry, data_dir, store, dependencies })
}

async fn readyz(State(state): State<AdminState>) -> (StatusCode, String) {
    if !state.ready.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting\n".to_string());
    }
    let unreachable = state.dependencies.unreachable();
    if unreachable.is_empty() {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}\n", unreachable.join("; ")))
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let telemetry = Arc::clone(&state.telemetry);
    let dir = state.data_dir.clone();
    let store = state.store.get().cloned();
    let body = tokio::task::spawn_blocking(move || {
        telemetry.server.storage_bytes.set(spindle_store::EmbeddedStore::data_dir_size(&dir) as i64);
        if let Some(tenants) = store {
            let (operations, services) = telemetry.server.store.set(&tenants.stats());
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
