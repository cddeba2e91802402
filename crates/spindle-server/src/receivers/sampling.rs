//! Jaeger remote sampling: `GET /sampling?service=` on :5778 (any path, as Jaeger v2's
//! handler on `/`) and `GET /api/sampling?service=` on :14268, from a strategies file in
//! Jaeger's format that is reloaded when it changes. Responses use string enums, as
//! current Jaeger sends them.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use spindle_codec::sampling::SamplingStrategies;
use tokio::sync::watch;

use crate::api::params::Params;
use crate::security::routes::{Route, Routes};

pub struct Strategies {
    path: Option<PathBuf>,
    default_probability: f64,
    current: RwLock<(SamplingStrategies, Option<SystemTime>)>,
}

impl Strategies {
    /// Loads the file, if any; a file that does not parse is an error at start.
    pub fn load(path: Option<PathBuf>, default_probability: f64) -> anyhow::Result<Self> {
        use anyhow::Context;
        let (strategies, modified) = match &path {
            None => (SamplingStrategies::with_default_probability(default_probability), None),
            Some(p) => {
                let bytes = std::fs::read(p).with_context(|| format!("reading sampling strategies {}", p.display()))?;
                let parsed = SamplingStrategies::parse(&bytes, default_probability)
                    .with_context(|| format!("parsing sampling strategies {}", p.display()))?;
                (parsed, std::fs::metadata(p).and_then(|m| m.modified()).ok())
            }
        };
        Ok(Strategies { path, default_probability, current: RwLock::new((strategies, modified)) })
    }

    /// Re-reads the file when its modification time changed; keeps the last good
    /// strategies when the new file does not parse.
    pub fn reload_if_changed(&self) {
        let Some(path) = &self.path else { return };
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        if modified == self.current.read().unwrap_or_else(|p| p.into_inner()).1 {
            return;
        }
        match std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| SamplingStrategies::parse(&bytes, self.default_probability).map_err(|e| e.to_string()))
        {
            Ok(parsed) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = (parsed, modified);
                tracing::info!(path = %path.display(), "sampling strategies reloaded");
            }
            Err(e) => {
                // Remember the time so a broken file is reported once, not every poll.
                self.current.write().unwrap_or_else(|p| p.into_inner()).1 = modified;
                tracing::warn!(path = %path.display(), error = %e, "sampling strategies not reloaded, keeping the previous ones");
            }
        }
    }

    pub fn response_json(&self, service: &str) -> String {
        self.current.read().unwrap_or_else(|p| p.into_inner()).0.strategy_for(service).to_json()
    }
}

pub async fn reload_loop(strategies: Arc<Strategies>, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let s = Arc::clone(&strategies);
        let _ = tokio::task::spawn_blocking(move || s.reload_if_changed()).await;
    }
}

pub async fn handler(State(strategies): State<Arc<Strategies>>, RawQuery(raw): RawQuery) -> Response {
    let params = Params::parse(raw.as_deref());
    let services: Vec<&str> = params.all("service").collect();
    if services.len() != 1 {
        return (StatusCode::BAD_REQUEST, "'service' parameter must be provided once\n").into_response();
    }
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], strategies.response_json(services[0]))
        .into_response()
}

/// The :5778 server: every path answers, as Jaeger v2's handler on `/` does.
pub fn router(strategies: Arc<Strategies>) -> Router {
    routes().into_router().with_state(strategies)
}

/// The routes, for [`router`] and the route table (`crate::security::routes`).
fn routes() -> Routes<Arc<Strategies>> {
    Routes::new().other(handler)
}

pub fn route_table() -> Vec<Route> {
    routes().table()
}
