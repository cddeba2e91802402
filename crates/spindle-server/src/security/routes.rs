//! The route table: every HTTP router is built through [`Routes`], which records each
//! route's method and path as it adds it, so that [`all`] lists what the listeners really
//! serve (`spindle routes` prints it; tests/auth.rs checks every entry refuses requests
//! without credentials). A unit test below fails if a router adds a route around it.

use axum::handler::Handler;
use axum::Router;

use super::Group;

/// One route: `method` is `GET`, `POST` or `ANY` (a fallback, `path` `*`: any other path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
}

/// An axum router under construction and the routes added to it.
pub struct Routes<S> {
    router: Router<S>,
    table: Vec<Route>,
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Routes { router: Router::new(), table: Vec::new() }
    }
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get<H: Handler<T, S>, T: 'static>(mut self, path: &'static str, handler: H) -> Self {
        self.router = self.router.route(path, axum::routing::get(handler));
        self.table.push(Route { method: "GET", path });
        self
    }

    pub fn post<H: Handler<T, S>, T: 'static>(mut self, path: &'static str, handler: H) -> Self {
        self.router = self.router.route(path, axum::routing::post(handler));
        self.table.push(Route { method: "POST", path });
        self
    }

    /// Every path and method no route takes (axum's fallback).
    pub fn other<H: Handler<T, S>, T: 'static>(mut self, handler: H) -> Self {
        self.router = self.router.fallback(handler);
        self.table.push(Route { method: "ANY", path: "*" });
        self
    }

    pub fn table(&self) -> Vec<Route> {
        self.table.clone()
    }

    pub fn into_router(self) -> Router<S> {
        self.router
    }
}

/// A route of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerRoute {
    /// The listener's name as the logs and `--*-addr` settings say it (`otlp http`, `query`…).
    pub listener: &'static str,
    pub group: Group,
    pub route: Route,
}

/// Every route of every HTTP listener, from the builders the routers are made of. The gRPC
/// listeners (OTLP, Jaeger) are not axum routers and are not listed.
pub fn all() -> Vec<ListenerRoute> {
    let listeners: [(&'static str, Group, Vec<Route>); 7] = [
        ("otlp http", Group::Ingest, crate::otlp_http::route_table()),
        ("jaeger http", Group::Ingest, crate::receivers::jaeger_http::route_table()),
        ("zipkin", Group::Ingest, crate::receivers::zipkin::route_table()),
        ("sampling", Group::Ingest, crate::receivers::sampling::route_table()),
        ("query", Group::Query, crate::api::route_table()),
        ("admin", Group::Admin, crate::admin::route_table()),
        // Served only when an OpenID Connect issuer is configured.
        ("query", Group::Query, super::oidc::route_table()),
    ];
    listeners
        .into_iter()
        .flat_map(|(listener, group, routes)| {
            routes.into_iter().map(move |route| ListenerRoute { listener, group, route })
        })
        .collect()
}

/// [`all`] as JSON, for `spindle routes`.
pub fn json() -> String {
    let routes: Vec<serde_json::Value> = all()
        .into_iter()
        .map(|r| {
            serde_json::json!({
                "listener": r.listener,
                "group": r.group.name(),
                "method": r.route.method,
                "path": r.route.path,
                "open": super::auth::open_path(r.group, r.route.path),
            })
        })
        .collect();
    serde_json::to_string_pretty(&routes).unwrap_or_else(|_| "[]".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Routers add routes through [`Routes`] only: a route added straight on an axum
    /// `Router` would be missing from the table, and from the test that every route
    /// refuses requests without credentials.
    #[test]
    fn routers_add_routes_through_the_table_only() {
        let sources = [
            ("api/mod.rs", include_str!("../api/mod.rs")),
            ("admin.rs", include_str!("../admin.rs")),
            ("otlp_http.rs", include_str!("../otlp_http.rs")),
            ("receivers/jaeger_http.rs", include_str!("../receivers/jaeger_http.rs")),
            ("receivers/zipkin.rs", include_str!("../receivers/zipkin.rs")),
            ("receivers/sampling.rs", include_str!("../receivers/sampling.rs")),
            ("ui.rs", include_str!("../ui.rs")),
            ("server.rs", include_str!("../server.rs")),
            ("security/oidc.rs", include_str!("oidc.rs")),
        ];
        for (file, source) in sources {
            for call in [".route(", ".route_service(", ".nest(", ".nest_service(", ".fallback(", ".fallback_service("] {
                for (n, line) in source.lines().enumerate() {
                    let code = line.split("//").next().unwrap_or_default();
                    assert!(
                        !code.contains(call),
                        "{file}:{}: {call} on an axum Router bypasses security::routes::Routes: {line}",
                        n + 1
                    );
                }
            }
        }
    }

    #[test]
    fn every_listener_has_routes_and_paths_are_unique_per_listener() {
        let routes = all();
        for listener in ["otlp http", "jaeger http", "zipkin", "sampling", "query", "admin"] {
            assert!(routes.iter().any(|r| r.listener == listener), "{listener}");
        }
        let mut seen = std::collections::BTreeSet::new();
        for r in &routes {
            assert!(seen.insert((r.listener, r.route.method, r.route.path)), "{r:?} twice");
        }
        assert!(routes.contains(&ListenerRoute {
            listener: "query",
            group: Group::Query,
            route: Route { method: "ANY", path: "*" },
        }));
    }
}
