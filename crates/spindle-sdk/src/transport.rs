//! What it takes to reach a secured backend: TLS for `https://` endpoints (trust, client
//! certificate) and the headers sent with every export request (tokens, `X-Scope-OrgID`).
//!
//! Everything here runs once, at init: files are read and checked then, so a bad file is an
//! [`InitError`] naming it, never a failed export later or a panic. Exports reuse what was
//! built: a rustls client configuration for reqwest and for the gRPC client (ALPN `h2`), and
//! headers already validated for HTTP and gRPC alike.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::InitError;

/// The process's rustls crypto provider, installing ring as the process default when none is.
///
/// A build whose rustls has more than one provider (reqwest brings aws-lc-rs) has no default
/// until one is installed, and `rustls::ClientConfig::builder()` panics without one:
/// installing ring keeps the service's own TLS clients working, and the exporters take
/// it as theirs. A provider the service installed first is kept and used.
pub(crate) fn crypto_provider() -> Arc<CryptoProvider> {
    #[allow(deprecated)] // ring: the provider of every TLS configuration the workspace builds
    let ring = rustls::crypto::ring::default_provider;
    // Refused when a provider is installed already; that one is then the default.
    let _ = ring().install_default();
    CryptoProvider::get_default().cloned().unwrap_or_else(|| Arc::new(ring()))
}

/// Whether `endpoint` is to be reached over TLS.
pub(crate) fn is_https(endpoint: &str) -> bool {
    endpoint.trim_start().get(..8).is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
}

/// Export request headers: lowercase names, decoded values, each name once.
///
/// Its `Debug` shows names only: values are often credentials.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Headers(Vec<(String, String)>);

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(name, _)| format!("{name}: <redacted>"))).finish()
    }
}

impl Headers {
    /// Parses an `OTEL_EXPORTER_OTLP_*HEADERS` value: `key=value` pairs separated by commas,
    /// values percent-decoded, as the OpenTelemetry specification (and W3C baggage) has it.
    /// Errors name the variable and the key, never the value.
    pub(crate) fn parse(variable: &'static str, text: &str) -> Result<Vec<(String, String)>, InitError> {
        let mut pairs = Vec::new();
        for member in text.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            let invalid = |shown: &str, reason: &str| InitError::InvalidSetting {
                name: variable,
                value: shown.to_owned(),
                reason: reason.to_owned(),
            };
            let Some((key, value)) = member.split_once('=') else {
                return Err(invalid("…", "expected key=value pairs separated by commas"));
            };
            let key = key.trim();
            let shown = format!("{key}=…");
            if key.is_empty() {
                return Err(invalid(&shown, "a header needs a name"));
            }
            let value = percent_decode(value.trim())
                .ok_or_else(|| invalid(&shown, "the value has an invalid percent escape (%XX, UTF-8)"))?;
            check_header(variable, key, &value)?;
            pairs.push((key.to_ascii_lowercase(), value));
        }
        Ok(pairs)
    }

    /// Sets `name` to `value`, replacing a header of the same name (names are
    /// case-insensitive).
    pub(crate) fn set(&mut self, name: &str, value: String) {
        let name = name.to_ascii_lowercase();
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    pub(crate) fn extend(&mut self, pairs: impl IntoIterator<Item = (String, String)>) {
        for (name, value) in pairs {
            self.set(&name, value);
        }
    }

    #[cfg(test)]
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The names, for logs.
    pub(crate) fn names(&self) -> Vec<&str> {
        self.0.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// As HTTP headers.
    pub(crate) fn to_header_map(&self) -> Result<reqwest::header::HeaderMap, InitError> {
        let mut map = reqwest::header::HeaderMap::with_capacity(self.0.len());
        for (name, value) in &self.0 {
            let invalid =
                |reason: String| InitError::InvalidSetting { name: "header", value: format!("{name}=…"), reason };
            let header =
                reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|e| invalid(e.to_string()))?;
            let mut value = reqwest::header::HeaderValue::from_str(value).map_err(|e| invalid(e.to_string()))?;
            value.set_sensitive(true);
            map.insert(header, value);
        }
        Ok(map)
    }
}

/// Checks that a header can be sent as HTTP header and gRPC metadata alike.
pub(crate) fn check_header(setting: &'static str, name: &str, value: &str) -> Result<(), InitError> {
    let invalid = |reason: &str| InitError::InvalidSetting {
        name: setting,
        value: format!("{name}=…"),
        reason: reason.to_owned(),
    };
    if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(invalid("not a valid header name"));
    }
    if name.to_ascii_lowercase().ends_with("-bin") {
        return Err(invalid("`-bin` names carry binary gRPC metadata, which headers cannot give"));
    }
    if reqwest::header::HeaderValue::from_str(value).is_err() || !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(invalid("the value must be printable ASCII (percent-encode anything else)"));
    }
    Ok(())
}

/// Decodes `%XX` escapes; `None` for a broken escape or bytes that are not UTF-8.
pub(crate) fn percent_decode(text: &str) -> Option<String> {
    if !text.contains('%') {
        return Some(text.to_owned());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A file setting and where it came from (a variable or a builder method), for errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileSetting {
    pub path: PathBuf,
    pub source: &'static str,
}

/// The TLS files of the exporter; all optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    /// PEM certificates trusted besides the system's roots.
    pub ca: Option<FileSetting>,
    /// PEM certificate chain presented to the backend; with `client_key`.
    pub client_certificate: Option<FileSetting>,
    /// PEM private key of `client_certificate`.
    pub client_key: Option<FileSetting>,
}

impl TlsFiles {
    pub(crate) fn is_empty(&self) -> bool {
        self.ca.is_none() && self.client_certificate.is_none() && self.client_key.is_none()
    }
}

/// TLS material, read and checked: what reqwest and the gRPC client are configured with.
#[derive(Clone)]
pub(crate) struct ClientTls {
    provider: Arc<CryptoProvider>,
    roots: Arc<RootCertStore>,
    identity: Option<Identity>,
}

#[derive(Clone)]
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("roots", &self.roots.len())
            .field("client_certificate", &self.identity.is_some())
            .finish()
    }
}

fn file_error(what: &'static str, file: &FileSetting, reason: impl std::fmt::Display) -> InitError {
    InitError::TlsFile { what, path: file.path.clone(), source_setting: file.source, reason: reason.to_string() }
}

fn read(what: &'static str, file: &FileSetting) -> Result<Vec<u8>, InitError> {
    std::fs::read(&file.path).map_err(|e| file_error(what, file, e))
}

fn certificates(what: &'static str, file: &FileSetting, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, InitError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(what, file, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(what, file, "holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
    }
    Ok(certs)
}

impl ClientTls {
    /// Reads the files and the system's trusted roots for `endpoint` (named in errors).
    pub(crate) fn load(files: &TlsFiles, endpoint: &str) -> Result<Self, InitError> {
        let provider = crypto_provider();
        let mut roots = RootCertStore::empty();
        let system = rustls_native_certs::load_native_certs();
        let (system_added, _) = roots.add_parsable_certificates(system.certs);
        if let Some(ca) = &files.ca {
            const WHAT: &str = "CA certificate file";
            for cert in certificates(WHAT, ca, &read(WHAT, ca)?)? {
                roots.add(cert).map_err(|e| file_error(WHAT, ca, format!("unusable certificate: {e}")))?;
            }
        }
        let identity = match (&files.client_certificate, &files.client_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                const CERT: &str = "client certificate file";
                const KEY: &str = "client key file";
                let cert_pem = read(CERT, cert)?;
                let chain = certificates(CERT, cert, &cert_pem)?;
                let key_pem = read(KEY, key)?;
                let parsed = PrivateKeyDer::from_pem_slice(&key_pem)
                    .map_err(|e| file_error(KEY, key, format!("no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}")))?;
                Some(Identity { chain, key: Arc::new(parsed) })
            }
            (Some(cert), None) => return Err(half_identity(cert, "client key")),
            (None, Some(key)) => return Err(half_identity(key, "client certificate")),
        };
        // Checked after every file, so a bad file is reported as such on any machine.
        if roots.is_empty() {
            let why = system.errors.first().map_or_else(String::new, |e| format!(" ({e})"));
            return Err(InitError::Tls {
                endpoint: endpoint.to_owned(),
                reason: format!(
                    "no certificate to trust: the system has no CA certificates{why} and no CA file is set \
                     (OTEL_EXPORTER_OTLP_CERTIFICATE)"
                ),
            });
        }
        tracing::debug!(system_roots = system_added, ca_file = files.ca.is_some(), "tls trust loaded");
        let tls = Self { provider, roots: Arc::new(roots), identity };
        // Building the configuration once checks that the key fits the certificate.
        tls.rustls_config(&[]).map_err(|e| match (&files.client_key, e) {
            (Some(key), InitError::Tls { reason, .. }) => file_error("client key file", key, reason),
            (_, e) => e,
        })?;
        Ok(tls)
    }

    /// A rustls client configuration announcing `alpn`.
    pub(crate) fn rustls_config(&self, alpn: &[&[u8]]) -> Result<ClientConfig, InitError> {
        let tls_error = |reason: String| InitError::Tls { endpoint: String::new(), reason };
        let builder = ClientConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(e.to_string()))?
            .with_root_certificates(Arc::clone(&self.roots));
        let mut config = match &self.identity {
            None => builder.with_no_client_auth(),
            Some(id) => builder
                .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
                .map_err(|e| tls_error(format!("the key does not go with the client certificate: {e}")))?,
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}

fn half_identity(given: &FileSetting, missing: &str) -> InitError {
    InitError::InvalidSetting {
        name: given.source,
        value: given.path.display().to_string(),
        reason: format!("a client certificate needs its key and the key its certificate: set the {missing} too"),
    }
}

/// A reqwest client for an OTLP/HTTP endpoint: TLS as configured (rustls, never a default
/// that could need a provider the process lacks), the headers on every request.
pub(crate) fn http_client(
    endpoint: &str,
    timeout: Duration,
    tls: Option<&ClientTls>,
    headers: &Headers,
) -> Result<reqwest::Client, InitError> {
    let config = match tls {
        Some(tls) => tls.rustls_config(&[b"http/1.1"])?,
        // A plain endpoint: no roots to load; a redirect to https then fails cleanly.
        None => ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| InitError::Tls { endpoint: endpoint.to_owned(), reason: e.to_string() })?
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth(),
    };
    reqwest::Client::builder()
        .timeout(timeout)
        .default_headers(headers.to_header_map()?)
        .tls_backend_preconfigured(config)
        .build()
        .map_err(InitError::HttpClient)
}

/// Reads the TLS material for `endpoint` when it is `https://`; `None` for a plain one.
pub(crate) fn load_for(endpoint: &str, files: &TlsFiles) -> Result<Option<ClientTls>, InitError> {
    if is_https(endpoint) {
        ClientTls::load(files, endpoint).map(Some)
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lists_parse_and_percent_decode() {
        let pairs = Headers::parse("V", " Authorization=Bearer%20abc%3D , x-a=1,,x-b = two ").expect("parses");
        assert_eq!(
            pairs,
            vec![
                ("authorization".to_owned(), "Bearer abc=".to_owned()),
                ("x-a".to_owned(), "1".to_owned()),
                ("x-b".to_owned(), "two".to_owned()),
            ]
        );
        assert_eq!(Headers::parse("V", "").expect("empty"), vec![]);
        assert_eq!(Headers::parse("V", "k=a=b").expect("= in a value").first().map(|p| p.1.as_str()), Some("a=b"));
    }

    #[test]
    fn bad_header_lists_are_errors_that_hide_the_value() {
        for (text, expect) in [
            ("novalue", "key=value"),
            ("=secret", "needs a name"),
            ("k=sec%2", "percent"),
            ("k=sec%zz", "percent"),
            ("k=%ff%fe", "percent"),
            ("bad name=secret", "header name"),
            ("k=caf%C3%A9", "printable ASCII"),
            ("trace-bin=secret", "-bin"),
        ] {
            let error = Headers::parse("OTEL_EXPORTER_OTLP_HEADERS", text).expect_err(text).to_string();
            assert!(error.contains(expect), "{text}: {error}");
            assert!(error.contains("OTEL_EXPORTER_OTLP_HEADERS"), "{error}");
            assert!(!error.contains("secret") && !error.contains("sec%"), "the value stays out of errors: {error}");
        }
    }

    #[test]
    fn headers_replace_by_name_and_hide_values_in_debug() {
        let mut headers = Headers::default();
        headers.set("Authorization", "Bearer one".to_owned());
        headers.extend([("AUTHORIZATION".to_owned(), "Bearer two".to_owned()), ("x-a".to_owned(), "1".to_owned())]);
        assert_eq!(headers.get("authorization"), Some("Bearer two"));
        assert_eq!(headers.names(), ["authorization", "x-a"]);
        let shown = format!("{headers:?}");
        assert!(!shown.contains("Bearer"), "{shown}");
        assert_eq!(headers.to_header_map().expect("http").len(), 2);
        let http = format!("{:?}", headers.to_header_map().expect("http"));
        assert!(!http.contains("Bearer"), "values are sensitive: {http}");
    }

    #[test]
    fn https_is_recognised_in_any_case() {
        assert!(is_https("https://spindle:4317"));
        assert!(is_https("HTTPS://spindle:4317"));
        assert!(!is_https("http://spindle:4317"));
        assert!(!is_https("spindle:4317"));
    }
    /// The only test of this binary that loads trust: it points rustls-native-certs at an
    /// empty store through the process environment.
    #[test]
    fn with_no_system_roots_a_ca_file_is_needed() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").expect("empty store");
        std::env::remove_var("SSL_CERT_DIR");
        std::env::set_var("SSL_CERT_FILE", &empty);
        let error = ClientTls::load(&TlsFiles::default(), "https://spindle:4317").expect_err("nothing to trust");
        assert!(error.to_string().contains("no certificate to trust"), "{error}");
        assert!(error.to_string().contains("https://spindle:4317"), "{error}");

        let ca = rcgen::generate_simple_self_signed(vec!["spindle".to_owned()]).expect("certificate");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.cert.pem()).expect("ca file");
        let files = TlsFiles {
            ca: Some(FileSetting { path: ca_file, source: "OTEL_EXPORTER_OTLP_CERTIFICATE" }),
            ..TlsFiles::default()
        };
        let tls = ClientTls::load(&files, "https://spindle:4317").expect("the CA file is enough");
        assert_eq!(tls.roots.len(), 1);
        std::env::remove_var("SSL_CERT_FILE");
    }
}
