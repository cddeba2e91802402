//! TLS for the TCP listeners (see the module docs of `crate::security`).
//!
//! One certificate and key (`tls_cert`, `tls_key`) serve every listener whose group is not
//! in `tls_plaintext`. They are held by a [`ReloadingCert`] that polls both files and swaps
//! in a new pair once it loads cleanly, so a renewal needs no restart and a broken file
//! never takes the listeners down. With `tls_client_ca`, the ingest group's listeners ask
//! for a client certificate and refuse connections without one signed by that CA.
//!
//! Handshakes run in tasks of their own, with a deadline, and finished connections are
//! handed to the accept loop through a channel: a slow or silent client never holds up
//! the connections behind it. The connection cap of a receiver still counts every
//! connection, handshaking or not: its slot travels inside the wrapped stream.

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::security::{Group, SecuritySettings};
use crate::telemetry::Telemetry;

/// How long a client has to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress per listener; past it the listener stops accepting until one
/// ends (the query and admin listeners have no connection cap of their own).
const MAX_PENDING_HANDSHAKES: usize = 1024;

/// Makes ring the process's crypto provider, for every rustls client of the process (the
/// listeners name theirs explicitly); called once at start. Installing it twice is harmless.
pub fn install_crypto_provider() {
    let _ = Arc::unwrap_or_clone(provider()).install_default();
}

/// ring, the one crypto provider of the build (rustls deprecates it for its lack of
/// post-quantum key exchange, which would take aws-lc-rs and its C build).
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What a listener speaks over TLS, announced with ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// gRPC: HTTP/2 only.
    H2,
    /// The axum servers, built with HTTP/1.1 only.
    Http1,
}

impl Alpn {
    fn protocols(self) -> Vec<Vec<u8>> {
        match self {
            Alpn::H2 => vec![b"h2".to_vec()],
            Alpn::Http1 => vec![b"http/1.1".to_vec()],
        }
    }
}

/// Reads a PEM certificate chain and its private key.
pub fn load_certified_key(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading the TLS certificate {}", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "the TLS certificate file {} holds no certificate", cert.display());
    let private_key =
        PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading the TLS private key {}", key.display()))?;
    CertifiedKey::from_der(chain, private_key, &provider()).with_context(|| {
        format!("the TLS private key {} does not go with the certificate {}", key.display(), cert.display())
    })
}

/// What tells a file changed: its modification time and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp { modified: meta.modified().ok(), len: meta.len() })
}

/// The server certificate, reloaded when its files change.
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' stamps when last read, loaded or not: a broken pair is tried again only
    /// once one of them changes again, so it is logged once, not at every poll.
    seen: Mutex<(Option<Stamp>, Option<Stamp>)>,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert").field("cert", &self.cert_path).field("key", &self.key_path).finish()
    }
}

impl ReloadingCert {
    /// Loads the pair; an error here stops the server from starting.
    pub fn load(cert_path: &Path, key_path: &Path) -> anyhow::Result<Self> {
        let seen = (stamp(cert_path), stamp(key_path));
        let key = load_certified_key(cert_path, key_path)?;
        Ok(ReloadingCert {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: RwLock::new(Arc::new(key)),
            seen: Mutex::new(seen),
        })
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Reloads the pair if either file changed; returns whether a new key is now in use.
    /// A pair that fails to load is logged and the previous key stays in use.
    pub fn reload_if_changed(&self) -> bool {
        let now = (stamp(&self.cert_path), stamp(&self.key_path));
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if *seen == now {
                return false;
            }
            *seen = now;
        }
        match load_certified_key(&self.cert_path, &self.key_path) {
            Ok(key) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
                tracing::info!(cert = %self.cert_path.display(), key = %self.key_path.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                // Also seen while a renewal has written one file and not yet the other: the
                // next change of either file is tried again.
                tracing::error!(
                    cert = %self.cert_path.display(),
                    key = %self.key_path.display(),
                    "TLS certificate not reloaded, the previous one stays in use: {e:#}"
                );
                false
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The TLS side of the listeners: which groups serve TLS, with which certificate, and
/// which verify client certificates.
pub struct Transport {
    cert: Option<Arc<ReloadingCert>>,
    plaintext: BTreeSet<Group>,
    client_verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    telemetry: Arc<Telemetry>,
}

impl Transport {
    /// Loads the certificate, key and client CA named in `settings`; plain text everywhere
    /// when no certificate is set.
    pub fn new(settings: &SecuritySettings, telemetry: Arc<Telemetry>) -> anyhow::Result<Self> {
        let cert = match (&settings.tls_cert, &settings.tls_key) {
            (Some(cert), Some(key)) => Some(Arc::new(ReloadingCert::load(cert, key)?)),
            _ => None,
        };
        // Client certificates are asked for on the ingest group only: a CA with that group in
        // plain text would protect nothing.
        anyhow::ensure!(
            settings.tls_client_ca.is_none() || !settings.tls_plaintext.contains(&Group::Ingest),
            "tls_client_ca needs TLS on the ingest group, which tls_plaintext keeps in plain text"
        );
        let client_verifier = match &settings.tls_client_ca {
            Some(path) if cert.is_some() => Some(client_verifier(path)?),
            _ => None,
        };
        Ok(Transport { cert, plaintext: settings.tls_plaintext.clone(), client_verifier, telemetry })
    }

    /// Whether `group`'s listeners serve TLS.
    pub fn tls(&self, group: Group) -> bool {
        self.cert.is_some() && !self.plaintext.contains(&group)
    }

    /// `inner`, serving TLS when its group does. With TLS, a task of its own accepts from
    /// `inner` from now on (call from within the runtime).
    pub fn wrap<L>(&self, group: Group, listener: &'static str, alpn: Alpn, inner: L) -> Listener<L>
    where
        L: axum::serve::Listener,
        L::Addr: Clone + 'static,
    {
        let Some(cert) = self.cert.as_ref().filter(|_| self.tls(group)) else {
            return Listener(Kind::Plain(inner));
        };
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions");
        let builder = match &self.client_verifier {
            Some(verifier) if group == Group::Ingest => builder.with_client_cert_verifier(Arc::clone(verifier)),
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::clone(cert) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = alpn.protocols();
        // The series exists from the start, so that alert rules see it before a failure.
        self.telemetry.server.count_tls_handshake_failures(listener, 0);
        let local_addr = inner.local_addr().map_err(|e| (e.kind(), e.to_string()));
        let (done_tx, done) = mpsc::channel(64);
        tokio::spawn(accept_loop(
            inner,
            Handshakes {
                listener,
                acceptor: TlsAcceptor::from(Arc::new(config)),
                telemetry: Arc::clone(&self.telemetry),
            },
            done_tx,
        ));
        Listener(Kind::Tls { done, local_addr })
    }

    /// Reloads the certificate every `every` when its files changed, until `stop`.
    pub fn reload_loop(
        &self,
        every: Duration,
        mut stop: watch::Receiver<bool>,
    ) -> impl std::future::Future<Output = ()> {
        let cert = self.cert.clone();
        async move {
            let Some(cert) = cert else { return };
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                let c = Arc::clone(&cert);
                let _ = tokio::task::spawn_blocking(move || c.reload_if_changed()).await;
            }
        }
    }
}

fn client_verifier(path: &Path) -> anyhow::Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading the TLS client CA {}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "the TLS client CA file {} holds no certificate", path.display());
    for cert in certs {
        roots
            .add(cert)
            .with_context(|| format!("the TLS client CA {} holds an unusable certificate", path.display()))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .with_context(|| format!("building the client certificate verifier from {}", path.display()))
}

/// Warns, once per listener, about listeners reachable from other machines that serve
/// reads without authentication, or that carry credentials in plain text.
pub fn warn_exposed_listeners(settings: &SecuritySettings, listeners: &[(&str, Group, SocketAddr)]) {
    for &(listener, group, addr) in listeners {
        let problems = exposure(settings, group, addr);
        if !problems.is_empty() {
            tracing::warn!(%addr, group = group.name(), "{listener} listener: {}", problems.join("; "));
        }
    }
}

/// What is wrong with serving `group` on `addr`; nothing on a loopback address.
fn exposure(settings: &SecuritySettings, group: Group, addr: SocketAddr) -> Vec<&'static str> {
    let mut problems = Vec::new();
    if addr.ip().is_loopback() {
        return problems;
    }
    if !settings.requires_auth(group) {
        match group {
            Group::Query => problems.push(
                "anyone who reaches it reads the traces without authentication (set auth_file or oidc_issuer, and auth)",
            ),
            Group::Admin => problems.push(
                "anyone who reaches it reads /metrics without authentication (set auth_file or oidc_issuer, and auth)",
            ),
            Group::Ingest => {}
        }
    }
    let has_credentials = settings.auth_file.is_some() || settings.oidc.is_some();
    if has_credentials && !settings.tls(group) {
        problems.push(
            "it serves plain text while credentials are configured: tokens and passwords cross the network in clear (set tls_cert and tls_key)",
        );
    }
    problems
}

// ---- listeners ----

/// A listener serving plain text or TLS.
pub struct Listener<L: axum::serve::Listener>(Kind<L>);

enum Kind<L: axum::serve::Listener> {
    Plain(L),
    /// Connections whose handshake finished, from [`accept_loop`].
    Tls {
        done: mpsc::Receiver<(TlsStream<L::Io>, L::Addr)>,
        local_addr: Result<L::Addr, (io::ErrorKind, String)>,
    },
}

struct Handshakes {
    listener: &'static str,
    acceptor: TlsAcceptor,
    telemetry: Arc<Telemetry>,
}

/// Accepts connections from `inner` and hands each to a handshake task of its own, until
/// the [`Listener`] is dropped. `inner`'s accept is never cancelled midway, so a receiver's
/// connection cap waits and counts its hits as it does in plain text.
async fn accept_loop<L>(mut inner: L, handshakes: Handshakes, done: mpsc::Sender<(TlsStream<L::Io>, L::Addr)>)
where
    L: axum::serve::Listener,
    L::Addr: 'static,
{
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&pending).acquire_owned() => permit,
            _ = done.closed() => return,
        };
        let (io, addr) = tokio::select! {
            accepted = inner.accept() => accepted,
            _ = done.closed() => return,
        };
        let accept = handshakes.acceptor.accept(io);
        let (done, telemetry, listener) = (done.clone(), Arc::clone(&handshakes.telemetry), handshakes.listener);
        tokio::spawn(async move {
            let result = tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await;
            drop(permit);
            match result {
                Ok(Ok(stream)) => {
                    // Fails only when the server no longer accepts: the connection closes.
                    let _ = done.send((stream, addr)).await;
                }
                Ok(Err(e)) => {
                    telemetry.server.count_tls_handshake_failures(listener, 1);
                    tracing::debug!(listener, error = %e, "TLS handshake failed");
                }
                Err(_) => {
                    telemetry.server.count_tls_handshake_failures(listener, 1);
                    tracing::debug!(listener, "TLS handshake not finished within {HANDSHAKE_TIMEOUT:?}");
                }
            }
        });
    }
}

impl<L> axum::serve::Listener for Listener<L>
where
    L: axum::serve::Listener,
    L::Addr: Clone + 'static,
{
    type Io = Io<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match &mut self.0 {
            Kind::Plain(inner) => {
                let (io, addr) = inner.accept().await;
                (Io::Plain(io), addr)
            }
            Kind::Tls { done, .. } => match done.recv().await {
                Some((stream, addr)) => (Io::Tls(Box::new(stream)), addr),
                // The accept loop ended (it runs as long as this listener): nothing more
                // comes.
                None => std::future::pending().await,
            },
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        match &self.0 {
            Kind::Plain(inner) => inner.local_addr(),
            Kind::Tls { local_addr, .. } => local_addr.clone().map_err(|(kind, e)| io::Error::new(kind, e)),
        }
    }
}

/// A connection, in plain text or TLS.
pub enum Io<T> {
    Plain(T),
    Tls(Box<TlsStream<T>>),
}

impl<T: tonic::transport::server::Connected> tonic::transport::server::Connected for Io<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        match self {
            Io::Plain(io) => io.connect_info(),
            Io::Tls(stream) => stream.get_ref().0.connect_info(),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Io<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Io<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(io) => io.is_write_vectored(),
            Io::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(io) => Pin::new(io).poll_flush(cx),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap().self_signed(&key).unwrap();
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    fn leaf(cert: &ReloadingCert) -> Vec<u8> {
        cert.current().cert[0].to_vec()
    }

    #[test]
    fn exposure_names_open_reads_and_plain_text_credentials_off_loopback_only() {
        let loopback: SocketAddr = "127.0.0.1:16686".parse().unwrap();
        let anywhere: SocketAddr = "0.0.0.0:16686".parse().unwrap();
        let open = SecuritySettings::default();
        assert!(exposure(&open, Group::Query, loopback).is_empty());
        assert_eq!(exposure(&open, Group::Query, anywhere).len(), 1);
        assert!(exposure(&open, Group::Admin, anywhere)[0].contains("/metrics"));
        assert!(exposure(&open, Group::Ingest, anywhere).is_empty(), "writes are not reads");

        let with_auth = SecuritySettings {
            auth_file: Some("creds.toml".into()),
            auth: Group::ALL.into_iter().collect(),
            ..SecuritySettings::default()
        };
        let plain = exposure(&with_auth, Group::Ingest, anywhere);
        assert_eq!(plain.len(), 1);
        assert!(plain[0].contains("plain text"));
        let tls = SecuritySettings { tls_cert: Some("c".into()), tls_key: Some("k".into()), ..with_auth };
        assert!(exposure(&tls, Group::Query, anywhere).is_empty());
        assert!(exposure(&tls, Group::Ingest, loopback).is_empty());
    }

    #[test]
    fn a_missing_or_broken_pair_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = load_certified_key(&dir.path().join("nope.pem"), &dir.path().join("nope.key")).unwrap_err();
        assert!(format!("{missing:#}").contains("reading the TLS certificate"), "{missing:#}");
        let (cert, key) = write_pair(dir.path(), "a.example");
        std::fs::write(&key, "not a key").unwrap();
        let broken = load_certified_key(&cert, &key).unwrap_err();
        assert!(format!("{broken:#}").contains("reading the TLS private key"), "{broken:#}");
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let (cert_a, _) = write_pair(a.path(), "a.example");
        let (_, key_b) = write_pair(b.path(), "b.example");
        let err = load_certified_key(&cert_a, &key_b).unwrap_err();
        assert!(format!("{err:#}").contains("does not go with"), "{err:#}");
    }

    #[test]
    fn reload_swaps_a_good_pair_and_keeps_the_old_one_on_a_broken_file() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_path, key_path) = write_pair(dir.path(), "a.example");
        let cert = ReloadingCert::load(&cert_path, &key_path).unwrap();
        let first = leaf(&cert);
        assert!(!cert.reload_if_changed(), "nothing changed");

        std::fs::write(&cert_path, "-----BEGIN CERTIFICATE-----\ngarbage\n").unwrap();
        assert!(!cert.reload_if_changed());
        assert_eq!(leaf(&cert), first, "a broken file leaves the previous certificate in use");

        write_pair(dir.path(), "b.example");
        assert!(cert.reload_if_changed());
        assert_ne!(leaf(&cert), first);
    }
}
