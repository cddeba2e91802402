//! The embedded web UI: the files of `ui/dist` (compiled in by `build.rs`), with every
//! other non-API path answered by `index.html` so the UI's own routes (`/search?…`,
//! `/trace/{id}`, `/service/{name}`) work as deep links and on reload.
//!
//! It serves bytes only; the UI reads data through the public `/api` endpoints like any
//! other client.

use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

include!(concat!(env!("OUT_DIR"), "/ui_assets.rs"));

/// Shown when the binary was built without a UI bundle (no `ui/dist` and no npm).
const NO_UI: &str = "<!doctype html><title>Spindle</title><p>Spindle is running, but this binary was built \
without its web UI (ui/dist was missing and npm unavailable). The API is at <code>/api/</code>.</p>";

#[derive(Debug, PartialEq, Eq)]
struct Asset {
    body: &'static [u8],
    content_type: &'static str,
    cache_control: &'static str,
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json" | "map") => "application/json",
        Some("woff2") => "font/woff2",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn index() -> Asset {
    let body = ASSETS.iter().find(|(p, _)| *p == "/index.html").map_or(NO_UI.as_bytes(), |(_, b)| *b);
    // index.html names the current hashed bundles: it must be revalidated on every load.
    Asset { body, content_type: "text/html; charset=utf-8", cache_control: "no-cache" }
}

/// The asset for a request path: the file itself, `index.html` for client routes, or
/// `None` for a missing file (a stale hashed bundle must 404, not turn into HTML).
fn resolve(path: &str) -> Option<Asset> {
    if let Some((p, body)) = ASSETS.iter().find(|(p, _)| *p == path) {
        // Vite puts content hashes in every name under /assets/: they never change.
        let cache_control = if p.starts_with("/assets/") { "public, max-age=31536000, immutable" } else { "no-cache" };
        return Some(Asset { body, content_type: content_type(p), cache_control });
    }
    let last = path.rsplit('/').next().unwrap_or_default();
    if path.starts_with("/assets/") || last.contains('.') {
        return None;
    }
    Some(index())
}

/// The query router's fallback: everything that is not an `/api` route.
pub async fn serve(method: Method, uri: Uri) -> Response {
    let path = uri.path();
    if path == "/api" || path.starts_with("/api/") {
        return (StatusCode::NOT_FOUND, format!("no API at {path}")).into_response();
    }
    if method != Method::GET && method != Method::HEAD {
        return (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, HeaderValue::from_static("GET, HEAD"))])
            .into_response();
    }
    match resolve(path) {
        Some(asset) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, asset.content_type), (header::CACHE_CONTROL, asset.cache_control)],
            asset.body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, format!("no file at {path}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundle_is_embedded() {
        let index = index();
        assert_ne!(index.body, NO_UI.as_bytes(), "ui/dist/index.html must be compiled in");
        let html = String::from_utf8_lossy(index.body);
        assert!(html.contains("<div id=\"app\">"), "{html}");
        assert!(ASSETS.iter().any(|(p, _)| p.starts_with("/assets/") && p.ends_with(".js")));
    }

    #[test]
    fn client_routes_get_index_html() {
        for path in ["/", "/search", "/trace/4bf92f3577b34da6a3ce929d0e0e4736", "/service/ingestion-service", "/map"] {
            assert_eq!(resolve(path), Some(index()), "{path}");
        }
    }

    #[test]
    fn files_get_their_type_and_missing_files_404() {
        let (js, _) = ASSETS.iter().find(|(p, _)| p.ends_with(".js")).expect("a js bundle");
        let asset = resolve(js).expect("embedded file");
        assert_eq!(asset.content_type, "text/javascript; charset=utf-8");
        assert!(asset.cache_control.contains("immutable"));
        assert_eq!(resolve("/assets/index-old.js"), None);
        assert_eq!(resolve("/favicon.ico"), None);
    }
}
