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

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::watch;

use super::oidc::Oidc;
use super::{Group, Principal, SecuritySettings, TenantSet};
use crate::telemetry::Telemetry;

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

impl AuthError {
    /// The `reason` label of `spindle_auth_failures_total`.
    fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Invalid(_) => "invalid",
            AuthError::Unavailable(_) => "unavailable",
        }
    }
}

impl CredentialsFile {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        Ok(toml::from_str(text)?)
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the credentials file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid credentials file {}", path.display()))
    }
}

/// An entry's roles, as the principal it makes.
fn role(name: &str, read: &[String], write: &[String], admin: bool, tenant: &Option<String>) -> Principal {
    Principal {
        name: name.to_string(),
        authenticated: true,
        read: TenantSet::from_list(read.iter().cloned()),
        write: TenantSet::from_list(write.iter().cloned()),
        admin,
        tenant: tenant.clone(),
    }
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        // Length-prefixed, so that ("ab", "c") and ("a", "bc") differ.
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn parse_hex_digest(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The credentials file, checked and ready to compare against.
struct Credentials {
    tokens: Vec<([u8; 32], Principal)>,
    users: HashMap<String, (String, Principal)>,
}

impl Credentials {
    fn empty() -> Self {
        Credentials { tokens: Vec::new(), users: HashMap::new() }
    }

    fn compile(file: CredentialsFile) -> anyhow::Result<Self> {
        let mut tokens = Vec::new();
        for t in &file.token {
            let digest = match (&t.sha256, &t.token) {
                (Some(hex), None) => parse_hex_digest(hex)
                    .ok_or_else(|| anyhow::anyhow!("token {:?}: sha256 must be 64 hex digits", t.name))?,
                (None, Some(token)) if !token.is_empty() => token_digest(token),
                (None, Some(_)) => anyhow::bail!("token {:?}: the token is empty", t.name),
                _ => anyhow::bail!("token {:?}: set exactly one of sha256 and token", t.name),
            };
            tokens.push((digest, role(&t.name, &t.read, &t.write, t.admin, &t.tenant)));
        }
        let mut users = HashMap::new();
        for u in &file.user {
            anyhow::ensure!(!u.name.is_empty() && !u.name.contains(':'), "user {:?}: invalid name", u.name);
            anyhow::ensure!(
                ["$2a$", "$2b$", "$2y$"].iter().any(|p| u.password.starts_with(p))
                    && u.password.parse::<bcrypt::HashParts>().is_ok(),
                "user {:?}: password must be a bcrypt hash (spindle hash-password or htpasswd -nB writes one)",
                u.name
            );
            let principal = role(&u.name, &u.read, &u.write, u.admin, &u.tenant);
            anyhow::ensure!(
                users.insert(u.name.clone(), (u.password.clone(), principal)).is_none(),
                "user {:?} appears twice",
                u.name
            );
        }
        // `[[group]]` entries are OIDC's (`super::oidc` reads them).
        Ok(Credentials { tokens, users })
    }
}

/// A bcrypt hash checked against unknown users, so that they take as long as known ones.
static DUMMY_HASH: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| bcrypt::hash("spindle", 10).unwrap_or_default());

/// Successful basic-auth checks kept: bcrypt is slow on purpose, and exporters and Grafana
/// send the same credentials on every request.
const BASIC_CACHE_ENTRIES: usize = 1024;

struct BasicCache {
    /// Bumped at each reload; a check that started before one is not cached.
    generation: u64,
    entries: HashMap<[u8; 32], Principal>,
}

/// The credentials of the process, shared by every listener group.
pub struct Authenticator {
    settings: SecuritySettings,
    credentials: RwLock<Arc<Credentials>>,
    cache: Mutex<BasicCache>,
    oidc: Option<Arc<Oidc>>,
    telemetry: Arc<Telemetry>,
    /// The credentials file's stamp when it was last read.
    loaded: FileStamp,
}

/// When the credentials file was last read: a change of either means read it again.
type FileStamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> FileStamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl Authenticator {
    /// Loads the credentials file (a broken one stops the start: nothing could log in).
    pub fn new(
        settings: &SecuritySettings,
        oidc: Option<Arc<Oidc>>,
        telemetry: Arc<Telemetry>,
    ) -> anyhow::Result<Arc<Self>> {
        let loaded = settings.auth_file.as_deref().and_then(stamp);
        let credentials = match &settings.auth_file {
            Some(path) => Credentials::compile(CredentialsFile::load(path)?)
                .with_context(|| format!("invalid credentials file {}", path.display()))?,
            None => Credentials::empty(),
        };
        Ok(Arc::new(Authenticator {
            settings: settings.clone(),
            credentials: RwLock::new(Arc::new(credentials)),
            cache: Mutex::new(BasicCache { generation: 0, entries: HashMap::new() }),
            oidc,
            telemetry,
            loaded,
        }))
    }

    fn credentials(&self) -> Arc<Credentials> {
        Arc::clone(&self.credentials.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn replace(&self, credentials: Credentials) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        *self.credentials.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(credentials);
        cache.generation += 1;
        cache.entries.clear();
    }

    /// Reads the credentials file again whenever it changes; a broken file is logged and the
    /// credentials in force stay.
    pub async fn reload_loop(self: Arc<Self>, every: Duration, mut stop: watch::Receiver<bool>) {
        let Some(path) = self.settings.auth_file.clone() else { return };
        let mut seen = self.loaded;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let now = stamp(&path);
            if now == seen {
                continue;
            }
            seen = now;
            let file = path.clone();
            let loaded = tokio::task::spawn_blocking(move || {
                Credentials::compile(CredentialsFile::load(&file)?)
                    .with_context(|| format!("invalid credentials file {}", file.display()))
            })
            .await;
            match loaded {
                Ok(Ok(credentials)) => {
                    tracing::info!(
                        path = %path.display(),
                        tokens = credentials.tokens.len(),
                        users = credentials.users.len(),
                        "credentials file reloaded"
                    );
                    self.replace(credentials);
                }
                Ok(Err(e)) => {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "credentials file not reloaded; the previous credentials stay"
                    )
                }
                Err(e) => tracing::warn!(error = %e, "credentials reload task failed"),
            }
        }
    }

    /// The principal of a request's credentials: `Authorization: Bearer` or `Basic`, else
    /// the UI's session cookie.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, AuthError> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return match self.oidc.as_ref().and_then(|o| o.principal_from_session(headers)) {
                Some(principal) => Ok(principal),
                None => Err(AuthError::Missing),
            };
        };
        let value = value.to_str().map_err(|_| AuthError::Invalid("authorization header is not text".into()))?;
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            self.bearer(rest.trim()).await
        } else if scheme.eq_ignore_ascii_case("basic") {
            self.basic(rest.trim()).await
        } else {
            Err(AuthError::Invalid(format!("unsupported authorization scheme {scheme:?}")))
        }
    }

    async fn bearer(&self, token: &str) -> Result<Principal, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Invalid("empty bearer token".into()));
        }
        let digest = token_digest(token);
        let credentials = self.credentials();
        // Every entry is compared, whichever matches: the time taken says nothing.
        let mut found = None;
        for (entry, principal) in &credentials.tokens {
            if bool::from(entry.ct_eq(&digest)) {
                found = Some(principal);
            }
        }
        if let Some(principal) = found {
            return Ok(principal.clone());
        }
        match &self.oidc {
            Some(oidc) => oidc.principal_from_bearer(token).await,
            None => Err(AuthError::Invalid("unknown bearer token".into())),
        }
    }

    async fn basic(&self, encoded: &str) -> Result<Principal, AuthError> {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| AuthError::Invalid("basic credentials are not base64 of UTF-8 text".into()))?;
        let (user, password) =
            decoded.split_once(':').ok_or_else(|| AuthError::Invalid("basic credentials without ':'".into()))?;
        // bcrypt ends a password at a NUL and repeats it: "pw\0pw" would pass as "pw".
        if password.contains('\0') {
            return Err(AuthError::Invalid("the password holds a NUL byte".into()));
        }
        let credentials = self.credentials();
        let Some((hash, principal)) = credentials.users.get(user) else {
            // As slow as a known user's check, so that the answer's time does not tell
            // which users exist.
            let password = password.to_string();
            let _ = tokio::task::spawn_blocking(move || bcrypt::verify(password, &DUMMY_HASH)).await;
            return Err(AuthError::Invalid(format!("unknown user {user:?}")));
        };
        let key = sha256(&[user.as_bytes(), password.as_bytes(), hash.as_bytes()]);
        let generation = {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(principal) = cache.entries.get(&key) {
                return Ok(principal.clone());
            }
            cache.generation
        };
        let (password, stored) = (password.to_string(), hash.clone());
        let verified = tokio::task::spawn_blocking(move || bcrypt::verify(password, &stored))
            .await
            .map_err(|e| AuthError::Unavailable(format!("password check failed: {e}")))?;
        match verified {
            Ok(true) => {
                let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                if cache.generation == generation {
                    if cache.entries.len() >= BASIC_CACHE_ENTRIES {
                        // Any one goes: the map's order is random, and a dropped entry only
                        // costs its next request one bcrypt check.
                        if let Some(old) = cache.entries.keys().next().copied() {
                            cache.entries.remove(&old);
                        }
                    }
                    cache.entries.insert(key, principal.clone());
                }
                Ok(principal.clone())
            }
            Ok(false) => Err(AuthError::Invalid(format!("wrong password for user {user:?}"))),
            Err(e) => Err(AuthError::Invalid(format!("password check for user {user:?} failed: {e}"))),
        }
    }

    /// The state of a group's layer ([`http_layer`], [`grpc_layer`]).
    pub fn group(self: &Arc<Self>, group: Group) -> GroupAuth {
        GroupAuth { auth: Arc::clone(self), group, required: self.settings.requires_auth(group) }
    }

    /// The principal of a request to `group`, or why it is refused.
    async fn admit(&self, group: Group, headers: &HeaderMap, path: &str) -> Result<Principal, Refusal> {
        if !self.settings.requires_auth(group) {
            return Ok(Principal::anonymous());
        }
        if open_path(group, path) && (group != Group::Query || self.oidc.is_some()) {
            // Served to anyone; on the query port a request that carries valid credentials
            // is still known by them (whoami then names the signed-in user). Probes of the
            // admin port are not made to pay for a password check.
            if group == Group::Query {
                if let Ok(principal) = self.authenticate(headers).await {
                    return Ok(principal);
                }
            }
            return Ok(Principal {
                name: "anonymous".to_string(),
                authenticated: false,
                read: TenantSet::none(),
                write: TenantSet::none(),
                admin: false,
                tenant: None,
            });
        }
        let principal = match self.authenticate(headers).await {
            Ok(principal) => principal,
            Err(e) => {
                self.telemetry.server.auth_failure(group.name(), e.reason());
                match e {
                    AuthError::Missing => tracing::debug!(group = group.name(), path, "refused: no credentials"),
                    e => tracing::info!(group = group.name(), path, error = %e, "refused: bad credentials"),
                }
                return Err(Refusal::Unauthenticated);
            }
        };
        let allowed = match group {
            Group::Ingest => principal.write != TenantSet::none(),
            Group::Query => principal.read != TenantSet::none(),
            Group::Admin => principal.admin,
        };
        if !allowed {
            self.telemetry.server.auth_failure(group.name(), "forbidden");
            let needs = match group {
                Group::Ingest => "a write role",
                Group::Query => "a read role",
                Group::Admin => "admin",
            };
            tracing::info!(group = group.name(), path, principal = %principal.name, "refused: needs {needs}");
            return Err(Refusal::Forbidden);
        }
        Ok(principal)
    }
}

/// Admin paths that stay open for probes whatever the settings.
pub const ADMIN_OPEN_PATHS: [&str; 2] = ["/healthz", "/readyz"];

/// `GET /api/spindle/whoami`: open with a UI login, so that the UI learns where to sign in.
pub const WHOAMI_PATH: &str = "/api/spindle/whoami";

/// Whether `path` of `group` is served without credentials: the admin probes, and the
/// UI's OpenID Connect login and whoami (when an issuer is configured). Requests to them get a
/// principal that may do nothing.
pub fn open_path(group: Group, path: &str) -> bool {
    match group {
        Group::Admin => ADMIN_OPEN_PATHS.contains(&path),
        Group::Query => super::oidc::PUBLIC_PATHS.contains(&path) || path == WHOAMI_PATH,
        Group::Ingest => false,
    }
}

/// The body of every 401 answer: what was wrong goes to the log only.
pub const UNAUTHORIZED_BODY: &str = "unauthorized\n";
pub const FORBIDDEN_BODY: &str = "forbidden\n";

enum Refusal {
    Unauthenticated,
    Forbidden,
}

/// A listener group's authentication layer state.
#[derive(Clone)]
pub struct GroupAuth {
    auth: Arc<Authenticator>,
    group: Group,
    required: bool,
}

/// Puts `group`'s authentication in front of every route of `router`, its fallback too.
pub fn protect(router: Router, auth: GroupAuth) -> Router {
    router.layer(axum::middleware::from_fn_with_state(auth, http_layer))
}

/// The HTTP layer: 401 without valid credentials, 403 for a principal without the group's
/// role; the principal goes into the request's extensions.
pub async fn http_layer(State(g): State<GroupAuth>, mut request: Request, next: Next) -> Response {
    if !g.required {
        request.extensions_mut().insert(Principal::anonymous());
        return next.run(request).await;
    }
    match g.auth.admit(g.group, request.headers(), request.uri().path()).await {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(Refusal::Unauthenticated) => {
            // With a UI login, a browser asking for a page is sent to it rather than shown a 401.
            if g.group == Group::Query
                && g.auth.oidc.as_ref().is_some_and(|o| o.settings.client_id.is_some())
                && super::oidc::is_page_request(request.method(), request.headers())
            {
                return super::oidc::login_redirect(request.uri());
            }
            let mut response = (StatusCode::UNAUTHORIZED, UNAUTHORIZED_BODY).into_response();
            let headers = response.headers_mut();
            headers.append(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"spindle\""));
            // Browsers and Grafana prompt for a user and password on a Basic challenge; the
            // UI's own requests (X-Requested-With) get none, so that the UI sees the 401
            // instead of the browser stopping the request to prompt.
            if g.group == Group::Query && !request.headers().contains_key("x-requested-with") {
                headers.append(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"spindle\""));
            }
            response
        }
        Err(Refusal::Forbidden) => (StatusCode::FORBIDDEN, FORBIDDEN_BODY).into_response(),
    }
}

/// Puts `group`'s authentication in front of a gRPC server's services.
pub fn protect_grpc(routes: tonic::service::Routes, auth: GroupAuth) -> tonic::service::Routes {
    routes.into_axum_router().layer(axum::middleware::from_fn_with_state(auth, grpc_layer)).into()
}

/// The gRPC layer: status UNAUTHENTICATED or PERMISSION_DENIED; the principal goes into the
/// request's extensions, where tonic handlers read it (`tonic::Request::extensions`).
async fn grpc_layer(State(g): State<GroupAuth>, mut request: Request, next: Next) -> Response {
    if !g.required {
        request.extensions_mut().insert(Principal::anonymous());
        return next.run(request).await;
    }
    match g.auth.admit(g.group, request.headers(), request.uri().path()).await {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(Refusal::Unauthenticated) => {
            tonic::Status::unauthenticated("unauthorized").into_http::<axum::body::Body>().into_response()
        }
        Err(Refusal::Forbidden) => {
            tonic::Status::permission_denied("forbidden").into_http::<axum::body::Body>().into_response()
        }
    }
}

/// `spindle hash-password`: a bcrypt hash (cost 10) of the password on standard input.
pub fn hash_password_command() -> anyhow::Result<()> {
    let mut password = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut password).context("reading the password from stdin")?;
    let password = password.strip_suffix('\n').unwrap_or(&password);
    let password = password.strip_suffix('\r').unwrap_or(password);
    anyhow::ensure!(!password.is_empty(), "no password on standard input");
    anyhow::ensure!(!password.contains('\0'), "the password holds a NUL byte: logins refuse those");
    anyhow::ensure!(password.len() <= 72, "bcrypt reads only the first 72 bytes of a password: use a shorter one");
    println!("{}", bcrypt::hash(password, 10).context("hashing the password")?);
    Ok(())
}

/// Whether a UDP receiver may serve: when the ingest group requires authentication, only
/// on a loopback address (datagrams carry no credentials).
pub fn udp_allowed(settings: &SecuritySettings, addr: std::net::SocketAddr) -> bool {
    !settings.requires_auth(Group::Ingest) || addr.ip().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_checked_at_load() {
        let ok = CredentialsFile::parse(
            "[[token]]\nname = \"a\"\ntoken = \"t\"\nwrite = [\"*\"]\n\
             [[token]]\nname = \"b\"\nsha256 = \"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\"\n",
        )
        .unwrap();
        let compiled = Credentials::compile(ok).unwrap();
        assert_eq!(compiled.tokens[0].0, token_digest("t"));
        assert_eq!(compiled.tokens[0].1.write, TenantSet::All);
        assert_eq!(compiled.tokens[1].0, token_digest(""));
        for bad in [
            "[[token]]\nname = \"a\"\n",
            "[[token]]\nname = \"a\"\ntoken = \"t\"\nsha256 = \"00\"\n",
            "[[token]]\nname = \"a\"\nsha256 = \"zz\"\n",
            "[[user]]\nname = \"u\"\npassword = \"plain\"\n",
            "[[token]]\nname = \"a\"\ntoken = \"t\"\nextra = 1\n",
        ] {
            let result = CredentialsFile::parse(bad).and_then(Credentials::compile);
            assert!(result.is_err(), "{bad}");
        }
    }
}

/// Whatever bytes a client sends as credentials, `authenticate` answers an error unless they
/// are exactly a configured token or user and password, and never panics.
#[cfg(test)]
pub(crate) mod robustness {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    const TOKEN: &str = "tok-0123456789abcdef";
    const USER: &str = "grafana";
    const PASSWORD: &str = "correct horse";

    struct Fixture {
        // Holds the credentials file until the test ends.
        _dir: tempfile::TempDir,
        auth: Arc<Authenticator>,
        rt: tokio::runtime::Runtime,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            // Cost 4, the lowest bcrypt allows: the properties check hundreds of passwords.
            let hash = bcrypt::hash(PASSWORD, 4).unwrap();
            let file = dir.path().join("credentials.toml");
            std::fs::write(
                &file,
                format!(
                    "[[token]]\nname = \"collector\"\nsha256 = \"{}\"\nwrite = [\"*\"]\n\
                     [[user]]\nname = \"{USER}\"\npassword = \"{hash}\"\nread = [\"*\"]\n",
                    hex(&token_digest(TOKEN))
                ),
            )
            .unwrap();
            let settings = SecuritySettings {
                auth_file: Some(file),
                auth: Group::ALL.into_iter().collect(),
                ..SecuritySettings::default()
            };
            let telemetry = Arc::new(Telemetry::new(dir.path(), &crate::limits::Limits::default()));
            let auth = Authenticator::new(&settings, None, telemetry).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            Fixture { _dir: dir, auth, rt }
        }

        fn authenticate(&self, authorization: Option<&[u8]>, cookie: Option<&[u8]>) -> Result<Principal, AuthError> {
            let mut headers = HeaderMap::new();
            if let Some(value) = authorization {
                headers.insert(header::AUTHORIZATION, HeaderValue::from_bytes(value).unwrap());
            }
            if let Some(value) = cookie {
                headers.insert(header::COOKIE, HeaderValue::from_bytes(value).unwrap());
            }
            self.rt.block_on(self.auth.authenticate(&headers))
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether `value` names the test's token or user, worked out independently of the code
    /// under test's parsing.
    fn names_valid_credentials(value: &[u8]) -> bool {
        let Ok(text) = std::str::from_utf8(value) else { return false };
        let text = text.trim_matches(|c: char| c == ' ' || c == '\t');
        let Some((scheme, rest)) = text.split_once(' ') else { return false };
        let rest = rest.trim_matches(|c: char| c == ' ' || c == '\t');
        (scheme.eq_ignore_ascii_case("bearer") && rest == TOKEN)
            || (scheme.eq_ignore_ascii_case("basic")
                && STANDARD.decode(rest).is_ok_and(|d| d == format!("{USER}:{PASSWORD}").as_bytes()))
    }

    /// Bytes a header value may hold (HeaderValue::from_bytes accepts them all).
    pub(crate) fn header_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(prop_oneof![Just(b'\t'), 0x20u8..0x7f, 0x80u8..=0xff], 0..max)
    }

    fn runner(cases: u32) -> TestRunner {
        // No regression files in the source tree: a failure prints its input.
        TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() })
    }

    /// Fails the test with proptest's report (input minimised) if the property does not hold.
    pub(crate) fn check<S: Strategy>(cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
    where
        S::Value: std::fmt::Debug,
    {
        if let Err(e) = runner(cases).run(&strategy, test) {
            panic!("{e}");
        }
    }

    /// The property: refused, as invalid or missing credentials (an `Unavailable` would mean a
    /// password check panicked), unless the value is exactly the right credentials.
    fn refused_unless_valid(f: &Fixture, authorization: &[u8], cookie: Option<&[u8]>) -> Result<(), TestCaseError> {
        let result = f.authenticate(Some(authorization), cookie);
        if names_valid_credentials(authorization) {
            prop_assert!(result.is_ok(), "valid credentials refused: {result:?}");
        } else {
            prop_assert!(
                matches!(result, Err(AuthError::Invalid(_) | AuthError::Missing)),
                "{:?} answered {result:?}",
                String::from_utf8_lossy(authorization)
            );
        }
        Ok(())
    }

    /// A few bytes of `base` changed, cut off or added to: near misses of a right value.
    fn near_miss(base: &'static str) -> impl Strategy<Value = Vec<u8>> {
        let len = base.len();
        prop_oneof![
            (0..len, any::<u8>()).prop_map(move |(i, b)| {
                let mut v = base.as_bytes().to_vec();
                v[i] = b;
                v
            }),
            (0..len).prop_map(move |n| base.as_bytes()[..n].to_vec()),
            proptest::collection::vec(any::<u8>(), 1..4).prop_map(move |tail| [base.as_bytes(), &tail].concat()),
            Just(base.to_uppercase().into_bytes()),
        ]
    }

    #[test]
    fn right_credentials_authenticate() {
        let f = Fixture::new();
        let basic = STANDARD.encode(format!("{USER}:{PASSWORD}"));
        for value in
            [format!("Bearer {TOKEN}"), format!("bearer  {TOKEN} "), format!("Basic {basic}"), format!("BASIC {basic}")]
        {
            let principal = f.authenticate(Some(value.as_bytes()), None).unwrap_or_else(|e| panic!("{value}: {e}"));
            assert!(principal.authenticated);
            assert!(names_valid_credentials(value.as_bytes()), "{value}");
        }
        assert_eq!(f.authenticate(Some(format!("Bearer {TOKEN}").as_bytes()), None).unwrap().name, "collector");
        // Twice: the second answer comes from the cache of checked passwords.
        for _ in 0..2 {
            assert_eq!(f.authenticate(Some(format!("Basic {basic}").as_bytes()), None).unwrap().name, USER);
        }
        let wrong = STANDARD.encode(format!("{USER}:{PASSWORD}!"));
        assert!(matches!(f.authenticate(Some(format!("Basic {wrong}").as_bytes()), None), Err(AuthError::Invalid(_))));
        assert!(matches!(f.authenticate(None, Some(b"spindle_session=x")), Err(AuthError::Missing)));
    }

    #[test]
    fn arbitrary_authorization_bytes_are_refused() {
        let f = Fixture::new();
        let value = prop_oneof![
            header_bytes(96),
            ("(?i)(bearer|basic)[ \t]{0,3}", header_bytes(96))
                .prop_map(|(scheme, rest)| [scheme.as_bytes(), &rest].concat()),
        ];
        check(400, value, |value| refused_unless_valid(&f, &value, None));
    }

    #[test]
    fn arbitrary_bearer_tokens_are_refused() {
        let f = Fixture::new();
        let token = prop_oneof![
            header_bytes(64),
            "[A-Za-z0-9._~+/=-]{0,64}".prop_map(String::into_bytes),
            near_miss(TOKEN).prop_filter("a header value", |v| HeaderValue::from_bytes(v).is_ok()),
        ];
        check(400, token, |token| refused_unless_valid(&f, &[b"Bearer ", &token[..]].concat(), None));
    }

    #[test]
    fn arbitrary_basic_credentials_are_refused() {
        let f = Fixture::new();
        // The known user with any password bytes (UTF-8 or not), and bytes that are not
        // UTF-8 or hold no ':' (refused before any password check). Unknown users cost a
        // full-strength bcrypt check each: `unknown_users_are_refused` has a few of those.
        let decoded = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..80).prop_map(|pw| [format!("{USER}:").as_bytes(), &pw].concat()),
            near_miss(PASSWORD).prop_map(|pw| [format!("{USER}:").as_bytes(), &pw].concat()),
            "\\PC{0,40}".prop_map(|pw| format!("{USER}:{pw}").into_bytes()),
            // bcrypt reads a password as a NUL-terminated key repeated to 72 bytes: these
            // are the right one's key, but not the right password.
            (1..7usize, proptest::collection::vec(any::<u8>(), 0..8)).prop_map(|(repeats, tail)| {
                let cycle = format!("{PASSWORD}\0").repeat(repeats) + PASSWORD;
                [format!("{USER}:{cycle}").as_bytes(), &tail].concat()
            }),
            proptest::collection::vec(any::<u8>().prop_filter("no colon", |b| *b != b':'), 0..80),
            (proptest::collection::vec(any::<u8>(), 0..40), proptest::collection::vec(any::<u8>(), 0..40))
                .prop_map(|(user, pw)| [&user[..], b"\xff:", &pw].concat()),
        ];
        let encoded = (decoded, 0..3u8).prop_map(|(bytes, form)| match form {
            0 => STANDARD.encode(bytes),
            1 => base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes),
            _ => base64::engine::general_purpose::URL_SAFE.encode(bytes),
        });
        check(400, encoded, |encoded| refused_unless_valid(&f, format!("Basic {encoded}").as_bytes(), None));
    }

    #[test]
    fn unknown_users_are_refused() {
        let f = Fixture::new();
        let decoded = ("\\PC{0,12}", "\\PC{0,20}")
            .prop_filter("an unknown user", |(user, _)| user != USER && !user.contains(':'))
            .prop_map(|(user, pw)| format!("{user}:{pw}"));
        check(6, decoded, |decoded| {
            refused_unless_valid(&f, format!("Basic {}", STANDARD.encode(decoded)).as_bytes(), None)
        });
    }

    #[test]
    fn cookies_do_not_authenticate_without_oidc() {
        let f = Fixture::new();
        check(200, (header_bytes(128), proptest::option::of(header_bytes(64))), |(cookie, authorization)| {
            match authorization {
                Some(authorization) => refused_unless_valid(&f, &authorization, Some(&cookie)),
                None => {
                    let result = f.authenticate(None, Some(&cookie));
                    prop_assert!(matches!(result, Err(AuthError::Missing)), "{result:?}");
                    Ok(())
                }
            }
        });
    }

    #[test]
    fn tenant_names_are_checked() {
        let allowed = |name: &str| {
            (1..=64).contains(&name.len())
                && name != "."
                && name != ".."
                && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        };
        let name = prop_oneof![
            any::<String>(),
            "[A-Za-z0-9._-]{0,70}",
            "[A-Za-z0-9._\\-/\\\\: \u{0}\u{e9}]{0,70}",
            Just(".".to_string()),
            Just("..".to_string()),
        ];
        check(500, name, |name| {
            let result = crate::tenancy::check_name(&name);
            prop_assert_eq!(result.is_ok(), allowed(&name), "{:?}: {:?}", name, result);
            Ok(())
        });
        for name in ["a", "team-a", "A.b_c-9", "...", &"x".repeat(64)] {
            assert!(crate::tenancy::check_name(name).is_ok(), "{name}");
        }
        for name in ["", ".", "..", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(crate::tenancy::check_name(name).is_err(), "{name}");
        }
    }
}
