//! OpenID Connect (see the module docs of `crate::security`).

use axum::http::HeaderMap;

use super::auth::AuthError;
use super::{OidcSettings, Principal};

/// The issuer's keys and the UI login.
pub struct Oidc {
    pub settings: OidcSettings,
}

impl Oidc {
    /// The principal of an API request's bearer JWT.
    pub async fn principal_from_bearer(&self, _token: &str) -> Result<Principal, AuthError> {
        Err(AuthError::Unavailable("OpenID Connect is not implemented yet".into()))
    }

    /// The principal of a UI session cookie, if the request carries a valid one.
    pub fn principal_from_session(&self, _headers: &HeaderMap) -> Option<Principal> {
        None
    }
}
