//! Transport security and authentication for every TCP listener (docs/SECURITY.md).
//!
//! Listeners come in three groups, each with its own TLS and authentication setting:
//! - [`Group::Ingest`]: OTLP gRPC and HTTP, Jaeger HTTP and gRPC, Zipkin, sampling;
//! - [`Group::Query`]: the query APIs and the web UI;
//! - [`Group::Admin`]: `/metrics` (`/healthz` and `/readyz` stay open for probes).
//!
//! - [`tls`]: rustls server configs from certificate and key files, reloaded when they
//!   change; optional client-certificate verification for the receivers;
//! - [`auth`]: the credentials file (bearer tokens, basic-auth users with hashed passwords,
//!   roles), the axum and tonic layers that turn a request's credentials into a
//!   [`Principal`] or refuse it with 401;
//! - [`oidc`]: OpenID Connect — JWTs checked against the issuer's discovery document and
//!   JWKS, and the UI's login (authorization code with PKCE, a signed session cookie).
//!
//! What a principal may do with tenants is decided in `crate::tenancy`.

pub mod auth;
pub mod oidc;
pub mod routes;
pub mod tls;

use std::collections::BTreeSet;
use std::path::PathBuf;

/// A listener group: TLS and authentication are set per group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    Ingest,
    Query,
    Admin,
}

impl Group {
    pub const ALL: [Group; 3] = [Group::Ingest, Group::Query, Group::Admin];

    pub fn name(self) -> &'static str {
        match self {
            Group::Ingest => "ingest",
            Group::Query => "query",
            Group::Admin => "admin",
        }
    }

    /// Parses a comma-separated list of group names (`none` or empty for no group).
    pub fn parse_list(setting: &str, text: &str) -> anyhow::Result<BTreeSet<Group>> {
        let mut groups = BTreeSet::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty() && *p != "none") {
            let group = Group::ALL
                .into_iter()
                .find(|g| g.name() == part)
                .ok_or_else(|| anyhow::anyhow!("invalid {setting} {part:?}: expected ingest, query, admin or none"))?;
            groups.insert(group);
        }
        Ok(groups)
    }
}

/// Tenants a principal may read or write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantSet {
    All,
    Only(BTreeSet<String>),
}

impl TenantSet {
    pub fn none() -> Self {
        TenantSet::Only(BTreeSet::new())
    }

    pub fn contains(&self, tenant: &str) -> bool {
        match self {
            TenantSet::All => true,
            TenantSet::Only(set) => set.contains(tenant),
        }
    }

    /// From a role's list: `"*"` means every tenant.
    pub fn from_list<I: IntoIterator<Item = S>, S: Into<String>>(items: I) -> Self {
        let set: BTreeSet<String> = items.into_iter().map(Into::into).collect();
        if set.contains("*") {
            TenantSet::All
        } else {
            TenantSet::Only(set)
        }
    }

    pub fn union(&mut self, other: &TenantSet) {
        match (&mut *self, other) {
            (TenantSet::All, _) => {}
            (_, TenantSet::All) => *self = TenantSet::All,
            (TenantSet::Only(a), TenantSet::Only(b)) => a.extend(b.iter().cloned()),
        }
    }
}

/// Who a request comes from, and what it may do; put in the request's extensions by the
/// authentication layer of its listener group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's, user's or subject's name; `anonymous` where authentication is off.
    pub name: String,
    /// Whether the request proved who it is (false where the group needs no authentication).
    pub authenticated: bool,
    pub read: TenantSet,
    pub write: TenantSet,
    /// May read the admin group (`/metrics`).
    pub admin: bool,
    /// The tenant of requests that name none (`X-Scope-OrgID`).
    pub tenant: Option<String>,
}

impl Principal {
    /// The principal of a request to a group without authentication: everything allowed;
    /// the tenant header is trusted as sent.
    pub fn anonymous() -> Self {
        Principal {
            name: "anonymous".to_string(),
            authenticated: false,
            read: TenantSet::All,
            write: TenantSet::All,
            admin: true,
            tenant: None,
        }
    }
}

/// OpenID Connect settings; see [`oidc`].
#[derive(Debug, Clone, PartialEq)]
pub struct OidcSettings {
    pub issuer: String,
    pub client_id: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    /// Accepted `aud` values of API tokens.
    pub audiences: Vec<String>,
    pub groups_claim: String,
}

/// The security settings in effect.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SecuritySettings {
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
    /// Groups served in plain text even with a certificate.
    pub tls_plaintext: BTreeSet<Group>,
    pub auth_file: Option<PathBuf>,
    /// Groups that require authentication.
    pub auth: BTreeSet<Group>,
    pub oidc: Option<OidcSettings>,
    pub session_key_file: Option<PathBuf>,
    /// Where people reach the UI (the OIDC redirect URI is built from it).
    pub public_url: String,
}

impl SecuritySettings {
    /// Whether `group`'s listeners serve TLS.
    pub fn tls(&self, group: Group) -> bool {
        self.tls_cert.is_some() && !self.tls_plaintext.contains(&group)
    }

    pub fn requires_auth(&self, group: Group) -> bool {
        self.auth.contains(&group)
    }
}
