//! OpenID Connect against a real OpenID provider: panva's `oidc-provider` (tests/oidc), run
//! by Node. API requests with its JWT access tokens, key rotation at the issuer, and the
//! UI's login (authorization code with PKCE) end to end with an HTTP client.
//!
//! Needs `node` and `npm` (the harness runs `npm ci` in tests/oidc when its node_modules is
//! missing); without them the tests fail, saying so.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::blocking::{Client, Response};
use reqwest::header::{HeaderMap, AUTHORIZATION, COOKIE, LOCATION, SET_COOKIE};
use serde_json::{json, Value};
use spindle_test_support::{free_port, free_udp_port, wait_until, workspace_root};

const UI_CLIENT: &str = "spindle-ui";
const UI_SECRET: &str = "ui-secret";
const ROBOT: &str = "spindle-robot";
const ROBOT_SECRET: &str = "robot-secret";

const SESSION_KEY: &str = "a session key of the OIDC tests, 32 bytes or more";

const AUTH_FILE: &str = r#"
[[group]]
name = "sre"
read = ["*"]
write = ["*"]
admin = true

[[group]]
name = "team-a-readers"
read = ["team-a"]
tenant = "team-a"
"#;

/// reqwest is built here without a crypto provider of its own (the server's features):
/// ring, as in spindle.
fn install_crypto_provider() {
    #[allow(deprecated)]
    let provider = rustls::crypto::ring::default_provider();
    let _ = provider.install_default();
}

fn issuer_dir() -> PathBuf {
    workspace_root().join("tests/oidc")
}

/// `npm ci` once per test binary when the issuer's packages are missing.
fn install_issuer() {
    static INSTALLED: Mutex<bool> = Mutex::new(false);
    let mut installed = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
    if *installed {
        return;
    }
    let dir = issuer_dir();
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        other => panic!("the OIDC tests need Node.js (`node` on PATH) to run the test issuer: {other:?}"),
    }
    if !dir.join("node_modules/oidc-provider/package.json").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .unwrap_or_else(|e| panic!("the OIDC tests need npm to install the test issuer: {e}"));
        assert!(status.success(), "`npm ci` in {} failed ({status}): the test issuer cannot run", dir.display());
    }
    *installed = true;
}

/// A fresh ECDSA P-256 key (PKCS#8 PEM) for the issuer to sign with.
fn new_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let pem = rcgen::KeyPair::generate().expect("key").serialize_pem();
    let path = dir.join(format!("{name}.pem"));
    std::fs::write(&path, &pem).expect("write key");
    (path, pem)
}

/// The Node issuer on a fixed port (so that it can be restarted with another key).
struct Issuer {
    child: Child,
    port: u16,
}

impl Issuer {
    fn start(port: u16, key: &Path, kid: &str, spindle_url: &str) -> Issuer {
        install_issuer();
        let mut child = Command::new("node")
            .arg("issuer.js")
            .current_dir(issuer_dir())
            .env("ISSUER_PORT", port.to_string())
            .env("ISSUER_KEY_FILE", key)
            .env("ISSUER_KEY_ID", kid)
            .env("ISSUER_REDIRECT_URI", format!("{spindle_url}/auth/callback"))
            .env("ISSUER_POST_LOGOUT_URI", format!("{spindle_url}/"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting the test issuer (node issuer.js) failed: {e}"));
        let stdout = child.stdout.take().expect("issuer stdout");
        let mut lines = BufReader::new(stdout).lines();
        match lines.next() {
            Some(Ok(line)) if line.starts_with("issuer ready") => {}
            other => {
                let status = child.wait();
                panic!("the test issuer did not start: {other:?}, {status:?}");
            }
        }
        // Keep reading so that the issuer never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Issuer { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A client_credentials access token for `resource`.
    fn robot_token(&self, resource: &str) -> String {
        let response = Client::new()
            .post(format!("{}/token", self.url()))
            .basic_auth(ROBOT, Some(ROBOT_SECRET))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("grant_type=client_credentials&resource={resource}"))
            .send()
            .expect("token request");
        let status = response.status();
        let body: Value = response.json().expect("token JSON");
        assert_eq!(status, 200, "client_credentials: {body}");
        body["access_token"].as_str().expect("access_token").to_string()
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// spindle with the issuer and an auth file with `[[group]]` roles.
struct Spindle {
    child: Child,
    query: SocketAddr,
    dir: tempfile::TempDir,
}

fn loopback(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

impl Spindle {
    fn start(query_port: u16, issuer_url: &str) -> Spindle {
        let dir = tempfile::tempdir().expect("tempdir");
        let auth_file = dir.path().join("auth.toml");
        std::fs::write(&auth_file, AUTH_FILE).expect("auth file");
        let secret_file = dir.path().join("client-secret");
        std::fs::write(&secret_file, format!("{UI_SECRET}\n")).expect("secret file");
        let session_key_file = dir.path().join("session-key");
        std::fs::write(&session_key_file, SESSION_KEY).expect("session key file");
        let query = SocketAddr::from(([127, 0, 0, 1], query_port));
        let admin = loopback(free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_spindle"))
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--query-addr", &query.to_string()])
            .args(["--admin-addr", &admin])
            .args(["--otlp-grpc-addr", &loopback(free_port())])
            .args(["--otlp-http-addr", &loopback(free_port())])
            .args(["--jaeger-http-addr", &loopback(free_port())])
            .args(["--jaeger-grpc-addr", &loopback(free_port())])
            .args(["--zipkin-addr", &loopback(free_port())])
            .args(["--sampling-addr", &loopback(free_port())])
            .args(["--jaeger-compact-addr", &loopback(free_udp_port())])
            .args(["--jaeger-binary-addr", &loopback(free_udp_port())])
            .args(["--public-url", &format!("http://{query}")])
            .arg("--auth-file")
            .arg(&auth_file)
            .args(["--oidc-issuer", issuer_url])
            .args(["--oidc-client-id", UI_CLIENT])
            .arg("--oidc-client-secret-file")
            .arg(&secret_file)
            .args(["--oidc-audience", "spindle"])
            .arg("--session-key-file")
            .arg(&session_key_file)
            .env("SPINDLE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn spindle");
        // Owned before the wait, so that a failed start still stops the process.
        let mut spindle = Spindle { child, query, dir };
        let client = Client::new();
        wait_until("spindle /readyz", Duration::from_secs(30), || {
            if let Ok(Some(status)) = spindle.child.try_wait() {
                panic!("spindle exited before it was ready: {status}");
            }
            client.get(format!("http://{admin}/readyz")).send().ok().filter(|r| r.status().is_success()).map(|_| ())
        });
        spindle
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.query)
    }

    fn get_with_token(&self, path: &str, token: &str) -> u16 {
        Client::new()
            .get(self.url(path))
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .send()
            .expect("GET")
            .status()
            .as_u16()
    }

    fn whoami(&self, headers: HeaderMap) -> (u16, Value) {
        let r = Client::new().get(self.url("/api/spindle/whoami")).headers(headers).send().expect("whoami");
        let status = r.status().as_u16();
        let text = r.text().expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Spindle {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

/// A token signed with the issuer's own key: claims the issuer would not put in one.
fn forge(pem: &str, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_pem(pem.as_bytes()).expect("EC key")).expect("sign")
}

fn bearer(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, format!("Bearer {token}").parse().expect("header"));
    headers
}

#[test]
fn api_requests_with_the_issuers_access_tokens() {
    install_crypto_provider();
    let keys = tempfile::tempdir().expect("tempdir");
    let (key, pem) = new_key(keys.path(), "k1");
    let (issuer_port, query_port) = (free_port(), free_port());
    let issuer_url = format!("http://127.0.0.1:{issuer_port}");
    // spindle first: it must start while the issuer is down, and refuse tokens meanwhile.
    let mut spindle = Spindle::start(query_port, &issuer_url);
    let good_claims = |iss: &str, aud: &str, exp: u64| json!({"iss": iss, "aud": aud, "sub": "forged-robot", "groups": ["sre"], "iat": now(), "exp": exp});
    let forged_good = forge(&pem, "k1", &good_claims(&issuer_url, "spindle", now() + 300));
    let down = spindle.get_with_token("/api/services", &forged_good);
    assert!(down == 401 || down == 503, "issuer down: {down}");
    assert!(spindle.is_running(), "spindle survives an unreachable issuer");

    let issuer = Issuer::start(issuer_port, &key, "k1", &spindle.url(""));
    // A token from the issuer itself, once spindle gets to its keys (it waits a few seconds
    // after a failed fetch before asking again).
    let token = issuer.robot_token("urn:spindle");
    wait_until("spindle accepts the issuer's token", Duration::from_secs(15), || {
        (spindle.get_with_token("/api/services", &token) == 200).then_some(())
    });
    let (status, me) = spindle.whoami(bearer(&token));
    assert_eq!(status, 200);
    assert_eq!(me["name"], ROBOT, "{me}");
    assert_eq!(me["authenticated"], true);
    assert_eq!(me["read"], "*", "the sre group's roles: {me}");
    assert_eq!(me["admin"], true);
    assert_eq!(me["login"], Value::Null);
    assert_eq!(me["logout"], "/auth/logout");
    // The groups' roles follow the credentials file as it changes.
    std::fs::write(spindle.dir.path().join("auth.toml"), AUTH_FILE.replace("read = [\"*\"]", "read = [\"team-b\"]"))
        .expect("rewrite auth file");
    wait_until("the sre group's new roles", Duration::from_secs(10), || {
        (spindle.whoami(bearer(&token)).1["read"] == json!(["team-b"])).then_some(())
    });
    std::fs::write(spindle.dir.path().join("auth.toml"), AUTH_FILE).expect("restore auth file");
    wait_until("the sre group's roles restored", Duration::from_secs(10), || {
        (spindle.whoami(bearer(&token)).1["read"] == "*").then_some(())
    });
    // The forged token is well formed and signed with the issuer's key: what refuses the
    // variants below is the claim each one gets wrong.
    assert_eq!(spindle.get_with_token("/api/services", &forged_good), 200);

    let no_token = Client::new().get(spindle.url("/api/services")).send().expect("GET").status().as_u16();
    assert_eq!(no_token, 401, "no token");
    let other_audience = issuer.robot_token("urn:other");
    let expired = forge(&pem, "k1", &good_claims(&issuer_url, "spindle", now() - 600));
    let not_yet = forge(
        &pem,
        "k1",
        &json!({"iss": issuer_url, "aud": "spindle", "sub": "x", "groups": ["sre"], "nbf": now() + 600, "exp": now() + 900}),
    );
    let wrong_issuer = forge(&pem, "k1", &good_claims("http://127.0.0.1:1", "spindle", now() + 300));
    let wrong_audience = forge(&pem, "k1", &good_claims(&issuer_url, "grafana", now() + 300));
    // The issuer's own token with its groups changed (the signature no longer matches).
    let tampered = {
        let parts: Vec<&str> = token.split('.').collect();
        let mut payload: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        payload["sub"] = json!("someone-else");
        format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(payload.to_string()), parts[2])
    };
    let unsigned = {
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
        let payload = URL_SAFE_NO_PAD.encode(good_claims(&issuer_url, "spindle", now() + 300).to_string());
        format!("{header}.{payload}.")
    };
    // HMAC keyed with the issuer's public key, the classic algorithm confusion.
    let hmac = {
        let jwks: Value = Client::new().get(format!("{}/jwks", issuer.url())).send().unwrap().json().unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(
            &header,
            &good_claims(&issuer_url, "spindle", now() + 300),
            &EncodingKey::from_secret(jwks["keys"][0].to_string().as_bytes()),
        )
        .unwrap()
    };
    let unknown_key = {
        let (_, other_pem) = new_key(keys.path(), "stranger");
        forge(&other_pem, "k1", &good_claims(&issuer_url, "spindle", now() + 300))
    };
    for (what, token) in [
        ("another resource's audience", &other_audience),
        ("expired", &expired),
        ("not yet valid", &not_yet),
        ("wrong issuer", &wrong_issuer),
        ("wrong audience", &wrong_audience),
        ("tampered", &tampered),
        ("alg none", &unsigned),
        ("HS256", &hmac),
        ("signed by another key", &unknown_key),
        ("not a JWT", &"not-a-jwt".to_string()),
    ] {
        assert_eq!(spindle.get_with_token("/api/services", token), 401, "{what}");
    }
    issuer.stop();
}

#[test]
fn a_key_rotated_at_the_issuer_is_accepted_without_a_restart() {
    install_crypto_provider();
    let keys = tempfile::tempdir().expect("tempdir");
    let (key1, _) = new_key(keys.path(), "k1");
    let (key2, pem2) = new_key(keys.path(), "k2");
    let (issuer_port, query_port) = (free_port(), free_port());
    let issuer_url = format!("http://127.0.0.1:{issuer_port}");
    let spindle = Spindle::start(query_port, &issuer_url);

    let issuer = Issuer::start(issuer_port, &key1, "k1", &spindle.url(""));
    let old_token = issuer.robot_token("urn:spindle");
    assert_eq!(spindle.get_with_token("/api/services", &old_token), 200);
    issuer.stop();

    // The issuer now signs with another key under another id: spindle has only k1 cached,
    // so the first k2 token makes it fetch the JWKS again.
    let issuer = Issuer::start(issuer_port, &key2, "k2", &spindle.url(""));
    let new_token = issuer.robot_token("urn:spindle");
    assert!(new_token.starts_with(&URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","typ":"at+jwt","kid":"k2"}"#)));
    assert_eq!(spindle.get_with_token("/api/services", &new_token), 200, "token signed with the rotated key");
    // The JWKS spindle holds is the new one: k1 is gone from it.
    assert_eq!(spindle.get_with_token("/api/services", &old_token), 401, "token of the retired key");

    // With the issuer down the cached keys still check tokens.
    issuer.stop();
    assert_eq!(spindle.get_with_token("/api/services", &new_token), 200, "cached keys, issuer down");
    let forged = forge(
        &pem2,
        "k2",
        &json!({"iss": issuer_url, "aud": "spindle", "sub": "x", "groups": ["sre"], "exp": now() + 300}),
    );
    assert_eq!(spindle.get_with_token("/api/services", &forged), 200, "any k2 signature, issuer down");
}

/// A cookie jar of one host: what a browser would keep and send.
#[derive(Default)]
struct Jar {
    /// name -> (path, value)
    cookies: BTreeMap<(String, String), (String, String)>,
}

impl Jar {
    fn store(&mut self, host: &str, response: &Response) {
        for value in response.headers().get_all(SET_COOKIE) {
            let text = value.to_str().expect("set-cookie text");
            let mut attributes = text.split(';').map(str::trim);
            let (name, value) = attributes.next().and_then(|kv| kv.split_once('=')).expect("name=value");
            let mut path = "/".to_string();
            let mut expired = false;
            for attribute in attributes {
                let (k, v) = attribute.split_once('=').unwrap_or((attribute, ""));
                if k.eq_ignore_ascii_case("path") {
                    path = v.to_string();
                } else if (k.eq_ignore_ascii_case("max-age") && v.parse::<i64>().is_ok_and(|s| s <= 0))
                    || (k.eq_ignore_ascii_case("expires") && v.contains("1970"))
                {
                    expired = true;
                }
            }
            let key = (host.to_string(), name.to_string());
            if expired || value.is_empty() {
                self.cookies.remove(&key);
            } else {
                self.cookies.insert(key, (path, value.to_string()));
            }
        }
    }

    fn header(&self, host: &str, path: &str) -> Option<String> {
        let pairs: Vec<String> = self
            .cookies
            .iter()
            .filter(|((h, _), (p, _))| h == host && path.starts_with(p.as_str()))
            .map(|((_, name), (_, value))| format!("{name}={value}"))
            .collect();
        (!pairs.is_empty()).then(|| pairs.join("; "))
    }

    fn get(&self, host: &str, name: &str) -> Option<String> {
        self.cookies.get(&(host.to_string(), name.to_string())).map(|(_, v)| v.clone())
    }

    fn set(&mut self, host: &str, name: &str, value: &str) {
        self.cookies.insert((host.to_string(), name.to_string()), ("/".to_string(), value.to_string()));
    }
}

/// A browser-like walk: GET `url`, follow redirects with the jar's cookies; the final
/// response and every URL visited.
fn browse(client: &Client, jar: &mut Jar, url: &str) -> (Response, Vec<String>) {
    let mut url = reqwest::Url::parse(url).expect("url");
    let mut visited = vec![url.to_string()];
    for _ in 0..20 {
        let host = format!("{}:{}", url.host_str().unwrap_or(""), url.port_or_known_default().unwrap_or(0));
        let mut request = client.get(url.clone()).header("accept", "text/html");
        if let Some(cookies) = jar.header(&host, url.path()) {
            request = request.header(COOKIE, cookies);
        }
        let response = request.send().unwrap_or_else(|e| panic!("GET {url}: {e}"));
        jar.store(&host, &response);
        if !response.status().is_redirection() {
            return (response, visited);
        }
        let location = response.headers().get(LOCATION).expect("location").to_str().expect("location text");
        url = url.join(location).expect("redirect target");
        visited.push(url.to_string());
    }
    panic!("too many redirects: {visited:?}");
}

#[test]
fn people_log_in_to_the_ui_with_the_code_flow() {
    install_crypto_provider();
    let keys = tempfile::tempdir().expect("tempdir");
    let (key, _) = new_key(keys.path(), "k1");
    let (issuer_port, query_port) = (free_port(), free_port());
    let issuer_url = format!("http://127.0.0.1:{issuer_port}");
    let spindle = Spindle::start(query_port, &issuer_url);
    let _issuer = Issuer::start(issuer_port, &key, "k1", &spindle.url(""));
    let host = spindle.query.to_string();
    let client = Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");

    // No session: the API is refused; whoami (open with a UI login) says where to sign in.
    assert_eq!(Client::new().get(spindle.url("/api/services")).send().unwrap().status(), 401);
    let (status, me) = spindle.whoami(HeaderMap::new());
    assert_eq!((status, me["authenticated"].as_bool(), me["login"].as_str()), (200, Some(false), Some("/auth/login")));

    let mut jar = Jar::default();
    let (landing, visited) = browse(&client, &mut jar, &spindle.url("/auth/login?return_to=/api/spindle/whoami"));
    assert!(visited[1].starts_with(&format!("{issuer_url}/auth?")), "to the issuer: {visited:?}");
    assert!(visited[1].contains("code_challenge_method=S256") && visited[1].contains("nonce="), "{visited:?}");
    assert!(visited.iter().any(|u| u.starts_with(&spindle.url("/auth/callback?code="))), "{visited:?}");
    assert_eq!(visited.last().unwrap(), &spindle.url("/api/spindle/whoami"), "back where the login began");
    assert_eq!(landing.status(), 200);
    let me: Value = landing.json().expect("whoami JSON");
    assert_eq!(me["name"], "alice", "{me}");
    assert_eq!(me["authenticated"], true);
    assert_eq!(me["read"], "*", "roles of the sre group: {me}");
    assert_eq!(me["write"], "*");
    assert_eq!(me["admin"], true);
    assert_eq!(me["logout"], "/auth/logout");
    assert_eq!(me["login"], Value::Null);
    assert!(jar.get(&host, "spindle_login").is_none(), "the login cookie is cleared");

    let session = jar.get(&host, "spindle_session").expect("session cookie");
    let with_cookie = |value: &str| {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, format!("spindle_session={value}").parse().unwrap());
        headers
    };
    let refused = |value: &str| {
        let services = Client::new().get(spindle.url("/api/services")).headers(with_cookie(value)).send().unwrap();
        let me = spindle.whoami(with_cookie(value)).1;
        services.status() == 401 && me["authenticated"] == false && me["name"] == "anonymous"
    };
    assert_eq!(spindle.whoami(with_cookie(&session)).1["authenticated"], true);
    assert_eq!(
        Client::new().get(spindle.url("/api/services")).headers(with_cookie(&session)).send().unwrap().status(),
        200,
        "the session reads the API"
    );

    // A session cookie whose content is changed, or made up, is refused.
    let (payload, tag) = session.split_once('.').expect("payload.tag");
    let mut claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(claims["name"], "alice");
    claims["name"] = json!("mallory");
    let tampered = format!("{}.{tag}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    assert!(refused(&tampered), "tampered session");
    let forged = format!("{}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()), URL_SAFE_NO_PAD.encode([0u8; 32]));
    assert!(refused(&forged), "forged session");
    // The same claims signed with the session_key_file's key pass: that file holds the key.
    let resigned = {
        use hmac::{KeyInit, Mac};
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(SESSION_KEY.as_bytes()).unwrap();
        mac.update(format!("spindle_session.{payload}").as_bytes());
        format!("{payload}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    };
    let (status, me) = spindle.whoami(with_cookie(&resigned));
    assert_eq!((status, me["name"].as_str()), (200, Some("mallory")), "{me}");
    let mut flipped = session.clone().into_bytes();
    let last = flipped.len() - 2;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    assert!(refused(&String::from_utf8(flipped).unwrap()), "one bit of the tag");

    // Logout clears the cookie and ends the session at the issuer too.
    let response = client
        .get(spindle.url("/auth/logout"))
        .header(COOKIE, format!("spindle_session={session}"))
        .send()
        .expect("logout");
    assert!(response.status().is_redirection());
    let location = response.headers().get(LOCATION).unwrap().to_str().unwrap().to_string();
    assert!(location.starts_with(&format!("{issuer_url}/session/end?")), "{location}");
    assert!(location.contains("post_logout_redirect_uri="), "{location}");
    jar.store(&host, &response);
    assert!(jar.get(&host, "spindle_session").is_none(), "logout clears the session cookie");
    let mut headers = HeaderMap::new();
    if let Some(cookies) = jar.header(&host, "/api/spindle/whoami") {
        headers.insert(COOKIE, cookies.parse().unwrap());
    }
    assert_eq!(spindle.whoami(headers).1["authenticated"], false, "no session after logout");

    // A browser that opens a page without a session is sent through the login and back.
    let mut browser = Jar::default();
    let (page, visited) = browse(&client, &mut browser, &spindle.url("/search?service=a"));
    assert_eq!(visited[1], spindle.url("/auth/login?return_to=%2Fsearch%3Fservice%3Da"), "{visited:?}");
    assert!(visited[2].starts_with(&format!("{issuer_url}/auth?")), "{visited:?}");
    assert_eq!(visited.last().unwrap(), &spindle.url("/search?service=a"), "{visited:?}");
    assert_eq!(page.status(), 200, "the UI's page");
    assert!(browser.get(&host, "spindle_session").is_some());

    // A callback without a login in progress, or with another state, starts no session.
    let mut stranger = Jar::default();
    stranger.set(&host, "spindle_login", "e30.AAAA");
    let (refused, _) = browse(&client, &mut stranger, &spindle.url("/auth/callback?code=x&state=y"));
    assert_eq!(refused.status(), 400);
    assert!(stranger.get(&host, "spindle_session").is_none());
}
