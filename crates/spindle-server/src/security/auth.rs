//! Credentials and the authentication layers (see the module docs of `crate::security`).
//!
//! The credentials file (`auth_file`, TOML, reloaded when it changes):
//!
//! ```toml
//! [[token]]               # Authorization: Bearer <token>
//! name = "otel-collector"
//! sha256 = "<hex SHA-256 of the token>"
//! write = ["team-a"]      # tenants it may write; "*" for every tenant
//! read = []               # tenants it may read
//! admin = false           # may read /metrics
//! tenant = "team-a"       # tenant of requests that name none (optional)
//!
//! [[user]]                # Authorization: Basic (Grafana's data sources, browsers)
//! name = "grafana"
//! password = "$2y$10$…"  # bcrypt, as `htpasswd -nB` or `spindle hash-password` write it
//! read = ["*"]
//!
//! [[group]]               # OIDC: roles of the groups in the token's groups claim
//! name = "sre"
//! read = ["*"]
//! admin = true
//! ```

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub name: String,
    /// Hex SHA-256 of the token (preferred: the file then holds no secret).
    pub sha256: Option<String>,
    /// The token itself.
    pub token: Option<String>,
    #[serde(default)]
    pub read: Vec<String>,
    #[serde(default)]
    pub write: Vec<String>,
    #[serde(default)]
    pub admin: bool,
    pub tenant: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    pub name: String,
    /// A bcrypt hash (`$2a$`, `$2b$`, `$2y$`).
    pub password: String,
    #[serde(default)]
    pub read: Vec<String>,
    #[serde(default)]
    pub write: Vec<String>,
    #[serde(default)]
    pub admin: bool,
    pub tenant: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupEntry {
    pub name: String,
    #[serde(default)]
    pub read: Vec<String>,
    #[serde(default)]
    pub write: Vec<String>,
    #[serde(default)]
    pub admin: bool,
    pub tenant: Option<String>,
}

/// The credentials file as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsFile {
    #[serde(default)]
    pub token: Vec<TokenEntry>,
    #[serde(default)]
    pub user: Vec<UserEntry>,
    #[serde(default)]
    pub group: Vec<GroupEntry>,
}

/// Why a request was not authenticated. The answer never says more than "unauthorized":
/// the detail goes to the log only.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials")]
    Missing,
    #[error("invalid credentials: {0}")]
    Invalid(String),
    #[error("authentication unavailable: {0}")]
    Unavailable(String),
}
