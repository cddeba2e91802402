//! OpenID Connect (see the module docs of `crate::security` and docs/SECURITY.md, "OpenID
//! Connect").
//!
//! Owns the issuer's discovery document and keys, the checks of its JWTs, the UI login
//! (`/auth/login`, `/auth/callback`, `/auth/logout`: authorization code with PKCE) and the
//! signed session cookie it sets. It decides who a token or cookie names and which roles
//! that principal has; it never refuses a request itself: the authentication layer
//! (`super::auth`) does, with [`Oidc::principal_from_bearer`] and
//! [`Oidc::principal_from_session`].
//!
//! Keys: the discovery document and JWKS are fetched on first use and again every 10
//! minutes; a token naming a key id the cached JWKS lacks makes it fetch them at once, at
//! most once per 30 s, so a key rotated at the issuer is accepted without a restart.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::auth::{AuthError, CredentialsFile, GroupEntry};
use super::routes::{Route, Routes};
use super::{OidcSettings, Principal, SecuritySettings, TenantSet};

/// Paths the authentication layer lets through without credentials: the login itself.
pub const PUBLIC_PATHS: &[&str] = &[LOGIN_PATH, CALLBACK_PATH, LOGOUT_PATH];

pub const LOGIN_PATH: &str = "/auth/login";
pub const CALLBACK_PATH: &str = "/auth/callback";
pub const LOGOUT_PATH: &str = "/auth/logout";

/// The UI session cookie.
pub const SESSION_COOKIE: &str = "spindle_session";
/// State, nonce and PKCE verifier between `/auth/login` and `/auth/callback`.
const LOGIN_COOKIE: &str = "spindle_login";

const SESSION_MAX: Duration = Duration::from_secs(12 * 3600);
const LOGIN_MAX: Duration = Duration::from_secs(600);
const KEYS_MAX_AGE: Duration = Duration::from_secs(600);
const UNKNOWN_KID_REFETCH_EVERY: Duration = Duration::from_secs(30);
/// After a failed fetch, requests answer "unavailable" at once for this long instead of each
/// waiting on the issuer again.
const FETCH_RETRY_AFTER: Duration = Duration::from_secs(5);
const LEEWAY_SECS: u64 = 60;
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a changed credentials file is looked for.
const GROUPS_CHECK_EVERY: Duration = Duration::from_secs(2);
const SCOPES: &str = "openid profile email";

type HmacSha256 = Hmac<Sha256>;

/// The issuer's keys and the UI login.
pub struct Oidc {
    pub settings: OidcSettings,
    /// Where people reach the UI, without a trailing slash.
    public_url: String,
    client_secret: Option<String>,
    session_key: Vec<u8>,
    http: reqwest::Client,
    auth_file: Option<PathBuf>,
    groups: RwLock<Groups>,
    issuer: RwLock<Option<Arc<IssuerState>>>,
    /// Held while fetching, so concurrent requests wait for one fetch instead of each
    /// starting their own.
    fetching: tokio::sync::Mutex<FetchHistory>,
}

/// The `[[group]]` entries of the credentials file, and when the file was read.
struct Groups {
    entries: Vec<GroupEntry>,
    modified: Option<SystemTime>,
    checked: Instant,
}

#[derive(Default)]
struct FetchHistory {
    last_unknown_kid_fetch: Option<Instant>,
    last_failure: Option<(Instant, String)>,
}

/// What discovery says, and the keys.
struct IssuerState {
    /// The issuer as the discovery document spells it: tokens' `iss` must equal it.
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    end_session_endpoint: Option<String>,
    keys: Vec<Jwk>,
    fetched: Instant,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    end_session_endpoint: Option<String>,
}

/// A JWKS with each key kept as JSON: a key of a type this build cannot use is skipped
/// instead of failing the whole set.
#[derive(Deserialize)]
struct RawJwkSet {
    keys: Vec<Value>,
}

/// What the session cookie holds.
#[derive(Serialize, Deserialize)]
struct SessionClaims {
    name: String,
    /// Tenant lists; `"*"` for every tenant.
    read: Vec<String>,
    write: Vec<String>,
    admin: bool,
    tenant: Option<String>,
    /// Seconds since the Unix epoch.
    exp: u64,
}

/// What the login cookie holds between `/auth/login` and `/auth/callback`.
#[derive(Serialize, Deserialize)]
struct LoginState {
    state: String,
    nonce: String,
    verifier: String,
    return_to: String,
    exp: u64,
}

#[derive(Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
}

impl Oidc {
    /// The OIDC state of `security`, if an issuer is configured. Reads the client secret,
    /// the session key and the credentials file's groups; talks to no one: the issuer is
    /// contacted on first use, so spindle starts while it is down.
    pub fn from_settings(security: &SecuritySettings) -> anyhow::Result<Option<Arc<Oidc>>> {
        let Some(settings) = security.oidc.clone() else {
            return Ok(None);
        };
        let client_secret = match &settings.client_secret_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading oidc_client_secret_file {}", path.display()))?;
                let secret = text.trim().to_string();
                anyhow::ensure!(!secret.is_empty(), "oidc_client_secret_file {} is empty", path.display());
                Some(secret)
            }
            None => None,
        };
        let session_key = match &security.session_key_file {
            Some(path) => {
                let key =
                    std::fs::read(path).with_context(|| format!("reading session_key_file {}", path.display()))?;
                anyhow::ensure!(
                    key.len() >= 32,
                    "session_key_file {} holds {} bytes: 32 or more are needed",
                    path.display(),
                    key.len()
                );
                key
            }
            None => random_bytes::<32>().context("drawing a session key")?.to_vec(),
        };
        let (entries, modified) = match &security.auth_file {
            Some(path) => read_groups(path)?,
            None => (Vec::new(), None),
        };
        // reqwest is built without a crypto provider of its own: ring is the build's one.
        super::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .connect_timeout(HTTP_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("building the OpenID Connect http client")?;
        Ok(Some(Arc::new(Oidc {
            settings,
            public_url: security.public_url.trim_end_matches('/').to_string(),
            client_secret,
            session_key,
            http,
            auth_file: security.auth_file.clone(),
            groups: RwLock::new(Groups { entries, modified, checked: Instant::now() }),
            issuer: RwLock::new(None),
            fetching: tokio::sync::Mutex::new(FetchHistory::default()),
        })))
    }

    /// The principal of an API request's bearer JWT.
    pub async fn principal_from_bearer(&self, token: &str) -> Result<Principal, AuthError> {
        let claims = self.verify(token, &self.settings.audiences).await?;
        Ok(self.principal_from_claims(&claims))
    }

    /// The principal of a UI session cookie, if the request carries a valid one.
    pub fn principal_from_session(&self, headers: &HeaderMap) -> Option<Principal> {
        let session: SessionClaims =
            cookies(headers, SESSION_COOKIE).find_map(|value| open_signed(&self.session_key, SESSION_COOKIE, value))?;
        if session.exp <= unix_now() {
            return None;
        }
        Some(Principal {
            name: session.name,
            authenticated: true,
            read: TenantSet::from_list(session.read),
            write: TenantSet::from_list(session.write),
            admin: session.admin,
            tenant: session.tenant,
        })
    }

    /// Checks a JWT's signature against the issuer's keys, its `iss`, `aud` (one of
    /// `audiences`), `exp` and `nbf`; answers its claims.
    async fn verify(&self, token: &str, audiences: &[String]) -> Result<Map<String, Value>, AuthError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(format!("not a signed JWT: {e}")))?;
        // Never `none` (decode_header refuses it) and never HMAC: an HMAC "key" taken from
        // a public JWKS would let anyone sign.
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::PS256 | Algorithm::ES256) {
            return Err(AuthError::Invalid(format!("algorithm {:?} is not accepted", header.alg)));
        }
        let mut issuer = self.current().await?;
        let jwk = match find_key(&issuer.keys, header.kid.as_deref()) {
            Some(jwk) => jwk.clone(),
            None => {
                let kid = header.kid.as_deref().ok_or_else(|| {
                    AuthError::Invalid("the token names no key (kid) and the issuer has several".into())
                })?;
                issuer = self.refetch_for_kid(kid).await?;
                find_key(&issuer.keys, Some(kid))
                    .cloned()
                    .ok_or_else(|| AuthError::Invalid(format!("the issuer has no key {kid:?}")))?
            }
        };
        check_key_fits(&jwk, header.alg)?;
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| AuthError::Invalid(format!("unusable issuer key: {e}")))?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&issuer.issuer]);
        validation.set_audience(audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|e| AuthError::Invalid(format!("token refused: {e}")))?;
        Ok(data.claims)
    }

    /// A principal's name and roles from a verified token's claims.
    fn principal_from_claims(&self, claims: &Map<String, Value>) -> Principal {
        let name = ["preferred_username", "email", "sub"]
            .iter()
            .find_map(|c| claims.get(*c).and_then(Value::as_str).filter(|s| !s.is_empty()))
            .unwrap_or("unnamed")
            .to_string();
        let member_of: Vec<&str> = match claims.get(&self.settings.groups_claim) {
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            Some(Value::String(one)) => vec![one.as_str()],
            _ => Vec::new(),
        };
        let mut principal = Principal {
            name,
            authenticated: true,
            read: TenantSet::none(),
            write: TenantSet::none(),
            admin: false,
            tenant: None,
        };
        for group in self.groups().iter().filter(|g| member_of.contains(&g.name.as_str())) {
            principal.read.union(&TenantSet::from_list(group.read.iter().cloned()));
            principal.write.union(&TenantSet::from_list(group.write.iter().cloned()));
            principal.admin |= group.admin;
            if principal.tenant.is_none() {
                principal.tenant.clone_from(&group.tenant);
            }
        }
        principal
    }

    /// The `[[group]]` entries, read again when the credentials file changed.
    fn groups(&self) -> Vec<GroupEntry> {
        let Some(path) = &self.auth_file else {
            return Vec::new();
        };
        {
            let groups = self.groups.read().unwrap_or_else(|p| p.into_inner());
            if groups.checked.elapsed() < GROUPS_CHECK_EVERY {
                return groups.entries.clone();
            }
        }
        let mut groups = self.groups.write().unwrap_or_else(|p| p.into_inner());
        if groups.checked.elapsed() >= GROUPS_CHECK_EVERY {
            groups.checked = Instant::now();
            let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
            if modified != groups.modified {
                match read_groups(path) {
                    Ok((entries, modified)) => {
                        tracing::info!(file = %path.display(), groups = entries.len(), "oidc groups reloaded");
                        groups.entries = entries;
                        groups.modified = modified;
                    }
                    Err(e) => {
                        // Keep the last good groups; try again when the file changes again.
                        groups.modified = modified;
                        tracing::warn!(error = format!("{e:#}"), "oidc groups not reloaded");
                    }
                }
            }
        }
        groups.entries.clone()
    }

    fn cached(&self) -> Option<Arc<IssuerState>> {
        self.issuer.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The discovery document and keys, fetched when missing or older than 10 minutes. When
    /// a refresh fails the old ones stay in use.
    async fn current(&self) -> Result<Arc<IssuerState>, AuthError> {
        if let Some(state) = self.cached().filter(|s| s.fetched.elapsed() < KEYS_MAX_AGE) {
            return Ok(state);
        }
        let mut history = self.fetching.lock().await;
        let cached = self.cached();
        if let Some(state) = cached.clone().filter(|s| s.fetched.elapsed() < KEYS_MAX_AGE) {
            return Ok(state);
        }
        if let Some((at, error)) = &history.last_failure {
            if at.elapsed() < FETCH_RETRY_AFTER {
                return match cached {
                    Some(stale) => Ok(stale),
                    None => Err(AuthError::Unavailable(error.clone())),
                };
            }
        }
        self.fetch_into_cache(&mut history, cached).await
    }

    /// Fetches again for a key id the cached JWKS lacks, unless that was done less than
    /// 30 s ago: random key ids must not make spindle hammer the issuer.
    async fn refetch_for_kid(&self, kid: &str) -> Result<Arc<IssuerState>, AuthError> {
        let mut history = self.fetching.lock().await;
        let cached = self.cached();
        if let Some(state) = cached.clone().filter(|s| find_key(&s.keys, Some(kid)).is_some()) {
            return Ok(state);
        }
        if history.last_unknown_kid_fetch.is_some_and(|at| at.elapsed() < UNKNOWN_KID_REFETCH_EVERY) {
            return Err(AuthError::Invalid(format!("the issuer has no key {kid:?}")));
        }
        history.last_unknown_kid_fetch = Some(Instant::now());
        tracing::info!(kid, "token names an unknown key: fetching the issuer's keys again");
        self.fetch_into_cache(&mut history, cached).await
    }

    async fn fetch_into_cache(
        &self,
        history: &mut FetchHistory,
        cached: Option<Arc<IssuerState>>,
    ) -> Result<Arc<IssuerState>, AuthError> {
        match self.fetch().await {
            Ok(state) => {
                let state = Arc::new(state);
                *self.issuer.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&state));
                history.last_failure = None;
                Ok(state)
            }
            Err(e) => {
                let error = format!("{e:#}");
                tracing::warn!(issuer = %self.settings.issuer, error, "fetching the OpenID provider's keys failed");
                history.last_failure = Some((Instant::now(), error.clone()));
                match cached {
                    Some(stale) => Ok(stale),
                    None => Err(AuthError::Unavailable(error)),
                }
            }
        }
    }

    async fn fetch(&self) -> anyhow::Result<IssuerState> {
        let url = format!("{}/.well-known/openid-configuration", self.settings.issuer);
        let discovery: Discovery = self.get_json(&url).await?;
        // OIDC Discovery: the document's issuer must be the one configured (a trailing slash
        // aside, which the settings trim).
        anyhow::ensure!(
            discovery.issuer.trim_end_matches('/') == self.settings.issuer,
            "{url} names issuer {:?}, not {:?}",
            discovery.issuer,
            self.settings.issuer
        );
        let jwks: RawJwkSet = self.get_json(&discovery.jwks_uri).await?;
        let keys: Vec<Jwk> = jwks.keys.into_iter().filter_map(|k| serde_json::from_value(k).ok()).collect();
        anyhow::ensure!(!keys.is_empty(), "{} holds no usable key", discovery.jwks_uri);
        tracing::info!(issuer = %discovery.issuer, keys = keys.len(), "OpenID provider keys fetched");
        Ok(IssuerState {
            issuer: discovery.issuer,
            authorization_endpoint: discovery.authorization_endpoint,
            token_endpoint: discovery.token_endpoint,
            end_session_endpoint: discovery.end_session_endpoint,
            keys,
            fetched: Instant::now(),
        })
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> anyhow::Result<T> {
        let response = self.http.get(url).send().await.with_context(|| format!("GET {url}"))?;
        let status = response.status();
        anyhow::ensure!(status.is_success(), "GET {url} answered {status}");
        response.json().await.with_context(|| format!("GET {url}: not the expected JSON"))
    }

    /// The absolute redirect URI registered at the provider.
    fn redirect_uri(&self) -> String {
        format!("{}{CALLBACK_PATH}", self.public_url)
    }

    fn secure_cookies(&self) -> bool {
        self.public_url.starts_with("https://")
    }

    fn cookie(&self, name: &str, value: &str, path: &str, max_age: u64) -> HeaderValue {
        let secure = if self.secure_cookies() { "; Secure" } else { "" };
        let text = format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}");
        // Values are base64url and the names constants: always a valid header.
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// Exchanges an authorization code at the token endpoint; answers the ID token.
    async fn exchange_code(&self, issuer: &IssuerState, code: &str, verifier: &str) -> anyhow::Result<String> {
        let client_id = self.settings.client_id.as_deref().context("oidc_client_id is not set")?;
        let redirect_uri = self.redirect_uri();
        let mut request = self.http.post(&issuer.token_endpoint);
        // The form is finished before any await: its serializer is not Send.
        let body = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "authorization_code")
                .append_pair("code", code)
                .append_pair("redirect_uri", &redirect_uri)
                .append_pair("code_verifier", verifier);
            match &self.client_secret {
                // client_secret_basic: both parts form-encoded first (RFC 6749, 2.3.1).
                Some(secret) => {
                    let user: String = form_urlencoded::byte_serialize(client_id.as_bytes()).collect();
                    let password: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
                    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                    request = request.header(header::AUTHORIZATION, format!("Basic {basic}"));
                }
                None => {
                    form.append_pair("client_id", client_id);
                }
            }
            form.finish()
        };
        let response = request
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .with_context(|| format!("POST {}", issuer.token_endpoint))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            anyhow::bail!("the token endpoint answered {status}: {}", body.chars().take(300).collect::<String>());
        }
        let tokens: TokenResponse = response.json().await.context("the token endpoint's answer is not JSON")?;
        tokens.id_token.context("the token endpoint's answer holds no id_token")
    }

    /// Whether people can log in to the UI (an OAuth client is configured).
    pub fn ui_login(&self) -> bool {
        self.settings.client_id.is_some()
    }

    fn seal<T: Serialize>(&self, purpose: &str, value: &T) -> String {
        seal(&self.session_key, purpose, value)
    }
}

/// The key a token's `kid` names; without a kid, the issuer's only key.
fn find_key<'a>(keys: &'a [Jwk], kid: Option<&str>) -> Option<&'a Jwk> {
    match kid {
        Some(kid) => keys.iter().find(|k| k.common.key_id.as_deref() == Some(kid)),
        None if keys.len() == 1 => keys.first(),
        None => None,
    }
}

/// RS256 and PS256 with RSA keys, ES256 with P-256 keys; the JWK's own `alg` and `use`,
/// where it states them, must agree.
fn check_key_fits(jwk: &Jwk, alg: Algorithm) -> Result<(), AuthError> {
    let fits = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => matches!(alg, Algorithm::RS256 | Algorithm::PS256),
        AlgorithmParameters::EllipticCurve(p) => p.curve == EllipticCurve::P256 && alg == Algorithm::ES256,
        _ => false,
    };
    let stated = match jwk.common.key_algorithm {
        None => true,
        Some(KeyAlgorithm::RS256) => alg == Algorithm::RS256,
        Some(KeyAlgorithm::PS256) => alg == Algorithm::PS256,
        Some(KeyAlgorithm::ES256) => alg == Algorithm::ES256,
        Some(_) => false,
    };
    let signing = !matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption));
    if fits && stated && signing {
        Ok(())
    } else {
        Err(AuthError::Invalid(format!("the issuer's key does not sign {alg:?}")))
    }
}

fn read_groups(path: &std::path::Path) -> anyhow::Result<(Vec<GroupEntry>, Option<SystemTime>)> {
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let text = std::fs::read_to_string(path).with_context(|| format!("reading auth_file {}", path.display()))?;
    let file: CredentialsFile =
        toml::from_str(&text).with_context(|| format!("parsing auth_file {}", path.display()))?;
    Ok((file.group, modified))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn random_bytes<const N: usize>() -> anyhow::Result<[u8; N]> {
    super::tls::install_crypto_provider();
    let provider = rustls::crypto::CryptoProvider::get_default().context("no rustls crypto provider")?;
    let mut bytes = [0u8; N];
    provider.secure_random.fill(&mut bytes).map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
    Ok(bytes)
}

fn random_token() -> anyhow::Result<String> {
    Ok(URL_SAFE_NO_PAD.encode(random_bytes::<32>()?))
}

fn mac(key: &[u8], purpose: &str, payload: &str) -> Option<HmacSha256> {
    // HMAC takes keys of any length: this never fails.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).ok()?;
    // The purpose keeps a login cookie from passing as a session cookie.
    mac.update(purpose.as_bytes());
    mac.update(b".");
    mac.update(payload.as_bytes());
    Some(mac)
}

/// `base64url(JSON).base64url(HMAC-SHA256(purpose "." payload))`.
fn seal<T: Serialize>(key: &[u8], purpose: &str, value: &T) -> String {
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap_or_default());
    let tag =
        mac(key, purpose, &payload).map(|m| URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())).unwrap_or_default();
    format!("{payload}.{tag}")
}

/// The value `seal` made, if its tag checks (in constant time).
fn open_signed<T: serde::de::DeserializeOwned>(key: &[u8], purpose: &str, sealed: &str) -> Option<T> {
    let (payload, tag) = sealed.split_once('.')?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    mac(key, purpose, payload)?.verify_slice(&tag).ok()?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

/// Every value of cookie `name` in the request.
fn cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).filter_map(
        move |pair| {
            let (n, value) = pair.trim().split_once('=')?;
            (n == name).then_some(value)
        },
    )
}

/// Where a login may send the browser back to: a path on this server, never another site.
fn safe_return_to(candidate: Option<&str>) -> String {
    match candidate {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') && !p.starts_with(LOGIN_PATH) => {
            p.to_string()
        }
        _ => "/".to_string(),
    }
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    form_urlencoded::parse(uri.query()?.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

fn redirect(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(location) => (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "invalid redirect location").into_response(),
    }
}

fn login_failed(status: StatusCode, why: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("login failed: {why}\n\nTry again: {LOGIN_PATH}\n"),
    )
        .into_response()
}

/// The answer to a browser's unauthenticated page request when OIDC is configured: a
/// redirect to the login, which brings it back to `uri` afterwards.
pub fn login_redirect(uri: &Uri) -> Response {
    let back = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let back: String = form_urlencoded::byte_serialize(safe_return_to(Some(back)).as_bytes()).collect();
    redirect(&format!("{LOGIN_PATH}?return_to={back}"))
}

/// Whether a request is a browser navigating to a page (a GET that accepts HTML): those
/// get [`login_redirect`] instead of a bare 401.
pub fn is_page_request(method: &axum::http::Method, headers: &HeaderMap) -> bool {
    method == axum::http::Method::GET
        && headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|accept| accept.contains("text/html"))
}

/// Adds the login routes and makes the [`Oidc`] state (or its absence) reachable by handlers
/// such as `/api/spindle/whoami` through `Extension<Option<Arc<Oidc>>>`.
pub fn mount(router: Router, oidc: Option<Arc<Oidc>>) -> Router {
    let router = match &oidc {
        Some(oidc) => router.merge(login_routes().into_router().with_state(Arc::clone(oidc))),
        None => router,
    };
    router.layer(Extension(oidc))
}

fn login_routes() -> Routes<Arc<Oidc>> {
    Routes::new().get(LOGIN_PATH, login).get(CALLBACK_PATH, callback).get(LOGOUT_PATH, logout)
}

/// The login routes, on the query port when an issuer is configured.
pub fn route_table() -> Vec<Route> {
    login_routes().table()
}

/// `GET /auth/login?return_to=/path`: to the provider's authorization endpoint.
async fn login(State(oidc): State<Arc<Oidc>>, uri: Uri) -> Response {
    let Some(client_id) = oidc.settings.client_id.clone() else {
        return login_failed(StatusCode::NOT_FOUND, "no UI login: oidc_client_id is not set");
    };
    let issuer = match oidc.current().await {
        Ok(issuer) => issuer,
        Err(e) => {
            tracing::warn!(error = %e, "login: the OpenID provider is unavailable");
            return login_failed(StatusCode::SERVICE_UNAVAILABLE, "the OpenID provider is unavailable");
        }
    };
    let (state, nonce, verifier) = match (random_token(), random_token(), random_token()) {
        (Ok(s), Ok(n), Ok(v)) => (s, n, v),
        _ => return login_failed(StatusCode::INTERNAL_SERVER_ERROR, "no randomness"),
    };
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let login = LoginState {
        state: state.clone(),
        nonce: nonce.clone(),
        verifier,
        return_to: safe_return_to(query_param(&uri, "return_to").as_deref()),
        exp: unix_now() + LOGIN_MAX.as_secs(),
    };
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", &client_id)
        .append_pair("redirect_uri", &oidc.redirect_uri())
        .append_pair("scope", SCOPES)
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .finish();
    let separator = if issuer.authorization_endpoint.contains('?') { '&' } else { '?' };
    let mut response = redirect(&format!("{}{separator}{query}", issuer.authorization_endpoint));
    let cookie = oidc.cookie(LOGIN_COOKIE, &oidc.seal(LOGIN_COOKIE, &login), "/auth", LOGIN_MAX.as_secs());
    response.headers_mut().append(header::SET_COOKIE, cookie);
    response
}

/// `GET /auth/callback?code&state`: the code for an ID token, the ID token for a session.
async fn callback(State(oidc): State<Arc<Oidc>>, uri: Uri, headers: HeaderMap) -> Response {
    if let Some(error) = query_param(&uri, "error") {
        let detail = query_param(&uri, "error_description").unwrap_or_default();
        tracing::warn!(error, detail, "login: the OpenID provider refused");
        return login_failed(StatusCode::UNAUTHORIZED, "the OpenID provider refused the login");
    }
    let Some(login) = cookies(&headers, LOGIN_COOKIE)
        .find_map(|v| open_signed::<LoginState>(&oidc.session_key, LOGIN_COOKIE, v))
        .filter(|l| l.exp > unix_now())
    else {
        return login_failed(StatusCode::BAD_REQUEST, "no login in progress (or it took over 10 minutes)");
    };
    let state = query_param(&uri, "state").unwrap_or_default();
    if !bool::from(state.as_bytes().ct_eq(login.state.as_bytes())) {
        return login_failed(StatusCode::BAD_REQUEST, "the state does not match the login in progress");
    }
    let Some(code) = query_param(&uri, "code") else {
        return login_failed(StatusCode::BAD_REQUEST, "no authorization code");
    };
    let issuer = match oidc.current().await {
        Ok(issuer) => issuer,
        Err(_) => return login_failed(StatusCode::SERVICE_UNAVAILABLE, "the OpenID provider is unavailable"),
    };
    let id_token = match oidc.exchange_code(&issuer, &code, &login.verifier).await {
        Ok(token) => token,
        Err(e) => {
            tracing::warn!(error = format!("{e:#}"), "login: exchanging the code failed");
            return login_failed(StatusCode::BAD_GATEWAY, "exchanging the code at the OpenID provider failed");
        }
    };
    let client_id = oidc.settings.client_id.clone().unwrap_or_default();
    let claims = match oidc.verify(&id_token, &[client_id]).await {
        Ok(claims) => claims,
        Err(e) => {
            tracing::warn!(error = %e, "login: ID token refused");
            return login_failed(StatusCode::UNAUTHORIZED, "the ID token was refused");
        }
    };
    // OIDC Core 3.1.3.7: an ID token for several audiences names the client it was issued to.
    if claims.get("aud").and_then(Value::as_array).is_some_and(|a| a.len() > 1)
        && claims.get("azp").and_then(Value::as_str) != oidc.settings.client_id.as_deref()
    {
        return login_failed(StatusCode::UNAUTHORIZED, "the ID token was issued to another client");
    }
    let nonce = claims.get("nonce").and_then(Value::as_str).unwrap_or("");
    if !bool::from(nonce.as_bytes().ct_eq(login.nonce.as_bytes())) {
        return login_failed(StatusCode::UNAUTHORIZED, "the ID token's nonce does not match");
    }
    let principal = oidc.principal_from_claims(&claims);
    let now = unix_now();
    let token_exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(now);
    let exp = token_exp.min(now + SESSION_MAX.as_secs());
    if exp <= now {
        return login_failed(StatusCode::UNAUTHORIZED, "the ID token has expired");
    }
    tracing::info!(name = %principal.name, "login");
    let session = SessionClaims {
        name: principal.name,
        read: tenant_list(&principal.read),
        write: tenant_list(&principal.write),
        admin: principal.admin,
        tenant: principal.tenant,
        exp,
    };
    let mut response = redirect(&login.return_to);
    let cookies = response.headers_mut();
    cookies
        .append(header::SET_COOKIE, oidc.cookie(SESSION_COOKIE, &oidc.seal(SESSION_COOKIE, &session), "/", exp - now));
    cookies.append(header::SET_COOKIE, oidc.cookie(LOGIN_COOKIE, "", "/auth", 0));
    response
}

/// `GET /auth/logout`: ends the session here, then at the provider when it offers that.
async fn logout(State(oidc): State<Arc<Oidc>>) -> Response {
    let end_session = oidc.current().await.ok().and_then(|i| i.end_session_endpoint.clone());
    let location = match end_session {
        Some(endpoint) => {
            let mut query = form_urlencoded::Serializer::new(String::new());
            query.append_pair("post_logout_redirect_uri", &format!("{}/", oidc.public_url));
            if let Some(client_id) = &oidc.settings.client_id {
                query.append_pair("client_id", client_id);
            }
            let separator = if endpoint.contains('?') { '&' } else { '?' };
            format!("{endpoint}{separator}{}", query.finish())
        }
        None => "/".to_string(),
    };
    let mut response = redirect(&location);
    response.headers_mut().append(header::SET_COOKIE, oidc.cookie(SESSION_COOKIE, "", "/", 0));
    response
}

/// A tenant set as the session cookie and `/api/spindle/whoami` write it.
pub fn tenant_list(set: &TenantSet) -> Vec<String> {
    match set {
        TenantSet::All => vec!["*".to_string()],
        TenantSet::Only(tenants) => tenants.iter().cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_purpose() {
        let key = b"0123456789abcdef0123456789abcdef";
        let sealed = seal(key, SESSION_COOKIE, &("alice", 7));
        assert_eq!(open_signed::<(String, u32)>(key, SESSION_COOKIE, &sealed), Some(("alice".into(), 7)));
        assert_eq!(open_signed::<(String, u32)>(key, LOGIN_COOKIE, &sealed), None);
        assert_eq!(open_signed::<(String, u32)>(b"another key of thirty-two bytes!", SESSION_COOKIE, &sealed), None);
        let (payload, tag) = sealed.split_once('.').unwrap();
        let forged = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&("mallory", 7)).unwrap());
        assert_eq!(open_signed::<(String, u32)>(key, SESSION_COOKIE, &format!("{forged}.{tag}")), None);
        assert_eq!(open_signed::<(String, u32)>(key, SESSION_COOKIE, payload), None);
    }

    #[test]
    fn return_to_stays_on_this_server() {
        assert_eq!(safe_return_to(Some("/search?service=a")), "/search?service=a");
        for bad in ["https://evil.example/", "//evil.example/", "/\\evil.example", "evil", "/auth/login?x"] {
            assert_eq!(safe_return_to(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_return_to(None), "/");
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; spindle_session=xyz; b=2"));
        assert_eq!(cookies(&headers, SESSION_COOKIE).collect::<Vec<_>>(), vec!["xyz"]);
        assert_eq!(cookies(&headers, "spindle").count(), 0);
    }
}

/// Against an issuer that cannot be reached, no bearer string is a principal, and no cookie
/// value but the exact one this server signed is a session; nothing panics or waits long.
#[cfg(test)]
mod robustness {
    use super::*;
    use crate::security::auth::robustness::{check, header_bytes};
    use crate::security::auth::Authenticator;
    use crate::security::Group;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    use proptest::prelude::*;

    const KEY: &[u8; 32] = b"robustness-session-key-32-bytes!";

    struct Fixture {
        // Holds the session key file until the test ends.
        _dir: tempfile::TempDir,
        oidc: Arc<Oidc>,
        auth: Arc<Authenticator>,
        rt: tokio::runtime::Runtime,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let key_file = dir.path().join("session.key");
            std::fs::write(&key_file, KEY).unwrap();
            let settings = SecuritySettings {
                auth: Group::ALL.into_iter().collect(),
                // Port 1 on loopback: connections are refused at once.
                oidc: Some(OidcSettings {
                    issuer: "http://127.0.0.1:1".to_string(),
                    client_id: Some("spindle".to_string()),
                    client_secret_file: None,
                    audiences: vec!["spindle".to_string()],
                    groups_claim: "groups".to_string(),
                }),
                session_key_file: Some(key_file),
                public_url: "http://localhost:16686".to_string(),
                ..SecuritySettings::default()
            };
            let oidc = Oidc::from_settings(&settings).unwrap().expect("an issuer is configured");
            let telemetry = Arc::new(crate::telemetry::Telemetry::new(dir.path(), &crate::limits::Limits::default()));
            let auth = Authenticator::new(&settings, Some(Arc::clone(&oidc)), telemetry).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            Fixture { _dir: dir, oidc, auth, rt }
        }

        /// The bearer check, bounded in time: an unreachable issuer must not hold requests.
        fn bearer(&self, token: &str) -> Result<Principal, AuthError> {
            self.rt
                .block_on(async {
                    tokio::time::timeout(Duration::from_secs(20), self.oidc.principal_from_bearer(token)).await
                })
                .expect("the bearer check waited on the unreachable issuer for 20 s")
        }

        fn session(&self, cookie: &[u8]) -> Option<Principal> {
            let mut headers = HeaderMap::new();
            headers.insert(header::COOKIE, HeaderValue::from_bytes(cookie).unwrap());
            self.oidc.principal_from_session(&headers)
        }

        fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, AuthError> {
            self.rt
                .block_on(async {
                    tokio::time::timeout(Duration::from_secs(20), self.auth.authenticate(headers)).await
                })
                .expect("authentication waited on the unreachable issuer for 20 s")
        }
    }

    fn session_claims(name: &str, exp: u64) -> SessionClaims {
        SessionClaims {
            name: name.to_string(),
            read: vec!["team-a".to_string()],
            write: Vec::new(),
            admin: false,
            tenant: Some("team-a".to_string()),
            exp,
        }
    }

    fn json_scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,12}".prop_map(Value::String),
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        json_scalar().prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(".{0,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A JOSE header: a real or unknown `alg`, maybe a `kid`, maybe other members.
    fn jwt_header() -> impl Strategy<Value = Vec<u8>> {
        let alg = prop_oneof![
            prop::sample::select(vec![
                "none", "None", "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                "ES256", "ES384", "EdDSA", "",
            ])
            .prop_map(|a| Value::String(a.to_string())),
            json_value(),
        ];
        let structured = (
            alg,
            proptest::option::of(prop_oneof![".{0,16}".prop_map(Value::String), json_value()]),
            proptest::option::of(json_value()),
            proptest::collection::btree_map(
                prop::sample::select(vec!["typ", "jku", "jwk", "x5u", "crit", "cty", "b64"]),
                json_value(),
                0..3,
            ),
        )
            .prop_map(|(alg, kid, typ, extra)| {
                let mut header = Map::new();
                header.insert("alg".to_string(), alg);
                if let Some(kid) = kid {
                    header.insert("kid".to_string(), kid);
                }
                if let Some(typ) = typ {
                    header.insert("typ".to_string(), typ);
                }
                for (k, v) in extra {
                    header.insert(k.to_string(), v);
                }
                serde_json::to_vec(&Value::Object(header)).unwrap()
            });
        prop_oneof![
            4 => structured,
            1 => json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
            1 => proptest::collection::vec(any::<u8>(), 0..48),
        ]
    }

    /// Claims that would pass every check but the signature, or arbitrary JSON, or bytes.
    fn jwt_payload() -> impl Strategy<Value = Vec<u8>> {
        let plausible = (any::<bool>(), json_value()).prop_map(|(aud_list, groups)| {
            let aud = if aud_list { serde_json::json!(["spindle", "other"]) } else { serde_json::json!("spindle") };
            serde_json::to_vec(&serde_json::json!({
                "iss": "http://127.0.0.1:1", "aud": aud, "sub": "mallory",
                "exp": unix_now() + 3600, "nbf": 0, "groups": groups,
            }))
            .unwrap()
        });
        prop_oneof![
            plausible,
            json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
            proptest::collection::vec(any::<u8>(), 0..64),
        ]
    }

    fn encode_part(bytes: &[u8], form: u8) -> String {
        match form {
            0 | 1 => URL_SAFE_NO_PAD.encode(bytes),
            2 => URL_SAFE.encode(bytes),
            _ => STANDARD.encode(bytes),
        }
    }

    fn jwt_like() -> impl Strategy<Value = String> {
        (jwt_header(), jwt_payload(), proptest::collection::vec(any::<u8>(), 0..80), 0..4u8, 0..8u8).prop_map(
            |(header, payload, signature, form, shape)| {
                let (h, p, s) =
                    (encode_part(&header, form), encode_part(&payload, form), encode_part(&signature, form));
                match shape {
                    // Unsigned, and with too few or too many parts.
                    0 => format!("{h}.{p}."),
                    1 => format!("{h}.{p}"),
                    2 => format!("{h}.{p}.{s}.{s}"),
                    _ => format!("{h}.{p}.{s}"),
                }
            },
        )
    }

    #[test]
    fn bearer_strings_are_refused() {
        let f = Fixture::new();
        let token = prop_oneof![any::<String>(), "[A-Za-z0-9_.=-]{0,120}", jwt_like()];
        check(300, token, |token| {
            let result = f.bearer(&token);
            prop_assert!(
                matches!(result, Err(AuthError::Invalid(_) | AuthError::Unavailable(_))),
                "{token:?} answered {result:?}"
            );
            Ok(())
        });
        // The cases above reach the issuer: a well-formed RS256 token fails closed there,
        // while `none` and HMAC tokens are refused before it.
        let jwt = |alg: &str| {
            let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
            let claims = URL_SAFE_NO_PAD.encode(r#"{"iss":"http://127.0.0.1:1","aud":"spindle","exp":9999999999}"#);
            format!("{header}.{claims}.{}", URL_SAFE_NO_PAD.encode([7u8; 32]))
        };
        assert!(matches!(f.bearer(&jwt("RS256")), Err(AuthError::Unavailable(_))));
        for alg in ["none", "HS256"] {
            assert!(matches!(f.bearer(&jwt(alg)), Err(AuthError::Invalid(_))), "{alg}");
        }
    }

    #[test]
    fn bearer_headers_are_refused_through_the_authenticator() {
        let f = Fixture::new();
        check(150, (jwt_like(), header_bytes(96)), |(token, cookie)| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
            headers.insert(header::COOKIE, HeaderValue::from_bytes(&cookie).unwrap());
            let result = f.authenticate(&headers);
            prop_assert!(result.is_err(), "{token:?} answered {result:?}");
            Ok(())
        });
    }

    #[test]
    fn a_signed_session_cookie_opens() {
        let f = Fixture::new();
        let sealed = seal(KEY, SESSION_COOKIE, &session_claims("alice", unix_now() + 600));
        let principal = f.session(format!("a=1; {SESSION_COOKIE}={sealed}; b=2").as_bytes()).expect("a valid session");
        assert_eq!(principal.name, "alice");
        assert!(principal.authenticated);
        assert_eq!(principal.read, TenantSet::from_list(["team-a"]));
        assert_eq!(principal.write, TenantSet::none());
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_str(&format!("{SESSION_COOKIE}={sealed}")).unwrap());
        assert_eq!(f.authenticate(&headers).unwrap().name, "alice");
        // Expired, sealed for the login cookie, or with another key: no session.
        let expired = seal(KEY, SESSION_COOKIE, &session_claims("alice", unix_now() - 1));
        let as_login = seal(KEY, LOGIN_COOKIE, &session_claims("alice", unix_now() + 600));
        let other_key =
            seal(b"another-session-key-of-32-bytes!", SESSION_COOKIE, &session_claims("a", unix_now() + 600));
        for value in [expired, as_login, other_key] {
            assert!(f.session(format!("{SESSION_COOKIE}={value}").as_bytes()).is_none(), "{value}");
        }
    }

    #[test]
    fn arbitrary_cookies_are_no_session() {
        let f = Fixture::new();
        let cookie = prop_oneof![
            header_bytes(160),
            "[ -~]{0,120}".prop_map(|v| format!("{SESSION_COOKIE}={v}").into_bytes()),
            ("[A-Za-z0-9_-]{0,80}", "[A-Za-z0-9_-]{0,60}")
                .prop_map(|(p, t)| format!("x=y; {SESSION_COOKIE}={p}.{t}; z").into_bytes()),
        ];
        check(400, cookie, |cookie| {
            let session = f.session(&cookie);
            prop_assert!(session.is_none(), "{:?} opened {session:?}", String::from_utf8_lossy(&cookie));
            let mut headers = HeaderMap::new();
            headers.insert(header::COOKIE, HeaderValue::from_bytes(&cookie).unwrap());
            prop_assert!(matches!(f.authenticate(&headers), Err(AuthError::Missing)));
            Ok(())
        });
    }

    #[test]
    fn tampered_session_cookies_are_no_session() {
        let f = Fixture::new();
        let sealed = seal(KEY, SESSION_COOKIE, &session_claims("alice", unix_now() + 3600));
        let len = sealed.len();
        let edit = prop_oneof![
            (0..len, header_bytes(4)).prop_map(|(i, b)| (i, i + 1, b)),
            (0..len, 0..len).prop_map(|(a, b)| (a.min(b), a.max(b), Vec::new())),
            (0..=len, header_bytes(6)).prop_map(|(i, b)| (i, i, b)),
        ];
        let cookie = (edit, "[ -~&&[^;]]{0,20}", proptest::option::of("[a-z]{1,8}=[a-z]{0,8}; ")).prop_map(
            move |((from, to, insert), suffix, before)| {
                let value = [&sealed.as_bytes()[..from], &insert, &sealed.as_bytes()[to..]].concat();
                let cookie = [before.unwrap_or_default().as_bytes(), SESSION_COOKIE.as_bytes(), b"=", &value].concat();
                // Sometimes more after the value, not a separate cookie (no ';').
                if suffix.is_empty() {
                    cookie
                } else {
                    [&cookie[..], suffix.as_bytes()].concat()
                }
            },
        );
        let sealed = seal(KEY, SESSION_COOKIE, &session_claims("alice", unix_now() + 3600));
        check(400, cookie, |cookie| {
            // Valid exactly when one `;`-separated piece still is the signed cookie, which
            // cookie parsing (whitespace around pieces aside) must keep.
            let expected = std::str::from_utf8(&cookie)
                .is_ok_and(|c| c.split(';').any(|p| p.trim() == format!("{SESSION_COOKIE}={sealed}")));
            let session = f.session(&cookie);
            prop_assert_eq!(session.is_some(), expected, "{:?}", String::from_utf8_lossy(&cookie));
            Ok(())
        });
    }

    #[test]
    fn signed_payloads_that_are_not_a_session_are_no_session() {
        let f = Fixture::new();
        let payload = prop_oneof![
            json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
            proptest::collection::vec(any::<u8>(), 0..80),
        ];
        check(300, payload, |payload| {
            prop_assume!(serde_json::from_slice::<SessionClaims>(&payload).is_err());
            // Signed with the right key and purpose, as `seal` signs.
            let encoded = URL_SAFE_NO_PAD.encode(&payload);
            let tag = URL_SAFE_NO_PAD.encode(mac(KEY, SESSION_COOKIE, &encoded).unwrap().finalize().into_bytes());
            let cookie = format!("{SESSION_COOKIE}={encoded}.{tag}");
            prop_assert!(f.session(cookie.as_bytes()).is_none(), "{}", cookie);
            Ok(())
        });
    }
}
