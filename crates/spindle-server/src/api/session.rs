//! `GET /api/spindle/whoami`: who the request's principal is and what it may do, for the
//! UI's tenant picker and its login and logout buttons.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use serde_json::{json, Value};

use super::json_response;
use crate::security::oidc::{tenant_list, Oidc, LOGIN_PATH, LOGOUT_PATH};
use crate::security::{Principal, TenantSet};

/// `{"name", "authenticated", "read", "write", "admin", "tenant", "login", "logout"}`: `read`
/// and `write` are `"*"` or a list of tenants; `login` and `logout` are the paths to offer,
/// or null where the UI login (OpenID Connect with a client id) is off, or for the one
/// that does not apply.
pub(crate) async fn whoami(
    principal: Option<Extension<Principal>>,
    oidc: Option<Extension<Option<Arc<Oidc>>>>,
) -> Response {
    let principal = principal.map(|Extension(p)| p).unwrap_or_else(Principal::anonymous);
    let oidc_on = matches!(oidc, Some(Extension(Some(o))) if o.ui_login());
    let body = json!({
        "name": principal.name,
        "authenticated": principal.authenticated,
        "read": tenants(&principal.read),
        "write": tenants(&principal.write),
        "admin": principal.admin,
        "tenant": principal.tenant,
        "login": (oidc_on && !principal.authenticated).then_some(LOGIN_PATH),
        "logout": (oidc_on && principal.authenticated).then_some(LOGOUT_PATH),
    });
    json_response(StatusCode::OK, &body)
}

fn tenants(set: &TenantSet) -> Value {
    match set {
        TenantSet::All => json!("*"),
        TenantSet::Only(_) => json!(tenant_list(set)),
    }
}
