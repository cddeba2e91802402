//! A TLS OTLP receiver (gRPC and HTTP) that records, for every export request, the headers it
//! came with, the client certificate of its connection and the spans it held; and the test
//! certificates (rcgen) it and the SDK are configured with.
//!
//! Handshakes are done here (tokio-rustls), not by tonic or axum, so that the receiver also
//! records the handshakes that failed: proof that a refused connection was refused by TLS.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::tokio_stream::StreamExt as _;

/// A certificate and its key, as PEM files in a temporary directory.
pub struct PemPair {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: Vec<u8>,
}

/// Test certificates: a CA for the servers, one for the clients, and a CA nobody trusts.
pub struct Pki {
    /// The server CA's certificate (trust this to reach the sink).
    pub ca: PathBuf,
    /// 127.0.0.1 and localhost, signed by `ca`.
    pub server: PemPair,
    /// The CA that signs client certificates (the sink requires them when given it).
    pub client_ca: PathBuf,
    /// A client certificate signed by `client_ca`.
    pub client: PemPair,
    /// A CA that signed nothing here: trusting it alone, no server is trusted.
    pub other_ca: PathBuf,
    /// A client certificate signed by `other_ca`.
    pub stranger: PemPair,
    pub dir: tempfile::TempDir,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("ca key")).expect("ca certificate")
}

fn leaf(
    dir: &Path,
    name: &str,
    sans: &[&str],
    usage: ExtendedKeyUsagePurpose,
    issuer: &CertifiedIssuer<'static, KeyPair>,
) -> PemPair {
    let mut params = CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, issuer).expect("signed certificate");
    let (cert_path, key_path) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    std::fs::write(&cert_path, cert.pem()).expect("write certificate");
    std::fs::write(&key_path, key.serialize_pem()).expect("write key");
    PemPair { cert: cert_path, key: key_path, der: cert.der().to_vec() }
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let write = |name: &str, issuer: &CertifiedIssuer<'static, KeyPair>| {
            let path = dir.path().join(name);
            std::fs::write(&path, issuer.pem()).expect("write ca");
            path
        };
        let (server_ca, client_ca, other_ca) = (ca("server ca"), ca("client ca"), ca("other ca"));
        Self {
            ca: write("ca.pem", &server_ca),
            server: leaf(
                dir.path(),
                "server",
                &["127.0.0.1", "localhost"],
                ExtendedKeyUsagePurpose::ServerAuth,
                &server_ca,
            ),
            client_ca: write("client-ca.pem", &client_ca),
            client: leaf(dir.path(), "client", &["client"], ExtendedKeyUsagePurpose::ClientAuth, &client_ca),
            other_ca: write("other-ca.pem", &other_ca),
            stranger: leaf(dir.path(), "stranger", &["stranger"], ExtendedKeyUsagePurpose::ClientAuth, &other_ca),
            dir,
        }
    }

    /// A file in the PKI's directory holding `contents`.
    pub fn file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).expect("write file");
        path
    }
}

/// One export request as the sink received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// `grpc`, `http/protobuf` or `http/json`.
    pub protocol: &'static str,
    /// Lowercase names; gRPC metadata or HTTP headers.
    pub headers: BTreeMap<String, String>,
    /// The first certificate the client presented on this request's connection (DER).
    pub client_cert: Option<Vec<u8>>,
    /// `(service.name, span name)` of every span.
    pub spans: Vec<(String, String)>,
}

#[derive(Default)]
struct Log {
    requests: Mutex<Vec<Received>>,
    failed_handshakes: Mutex<Vec<String>>,
}

/// A running TLS receiver; dropped, it stops.
pub struct TlsSink {
    /// `https://127.0.0.1:PORT` for OTLP/gRPC.
    pub grpc_endpoint: String,
    /// `https://127.0.0.1:PORT` for OTLP/HTTP (`/v1/traces`).
    pub http_endpoint: String,
    log: Arc<Log>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

#[allow(deprecated)] // ring, the workspace's one provider
fn server_config(pki: &Pki, require_client_ca: Option<&Path>, alpn: &[u8]) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = vec![CertificateDer::from_pem_file(&pki.server.cert).expect("server certificate")];
    let key = PrivateKeyDer::from_pem_file(&pki.server.key).expect("server key");
    let builder =
        ServerConfig::builder_with_provider(Arc::clone(&provider)).with_safe_default_protocol_versions().expect("tls");
    let builder = match require_client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).expect("client ca") {
                roots.add(cert.expect("client ca certificate")).expect("client ca added");
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).expect("server certificate and key");
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

/// Accepts TCP connections and hands on those whose handshake succeeds, each handshake in a
/// task of its own with a deadline; failed handshakes are logged.
fn accept_tls(
    listener: tokio::net::TcpListener,
    config: Arc<ServerConfig>,
    log: Arc<Log>,
) -> mpsc::Receiver<TlsStream<TcpStream>> {
    let (tx, rx) = mpsc::channel(16);
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, tx, log) = (acceptor.clone(), tx.clone(), Arc::clone(&log));
            tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(5), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(tls).await;
                    }
                    Ok(Err(e)) => log.failed_handshakes.lock().expect("log").push(e.to_string()),
                    Err(_) => log.failed_handshakes.lock().expect("log").push("handshake timed out".to_owned()),
                }
            });
        }
    });
    rx
}

/// axum over the connections [`accept_tls`] hands on.
struct TlsListener {
    connections: mpsc::Receiver<TlsStream<TcpStream>>,
    local: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            if let Some(tls) = self.connections.recv().await {
                let peer = tls.get_ref().0.peer_addr().unwrap_or(self.local);
                return (tls, peer);
            }
            // The acceptor is gone: the sink is stopping.
            std::future::pending::<()>().await;
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// The client certificate of an HTTP request's connection.
#[derive(Clone)]
struct PeerCert(Option<Vec<u8>>);

impl Connected<axum::serve::IncomingStream<'_, TlsListener>> for PeerCert {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        let (_, connection) = stream.io().get_ref();
        PeerCert(connection.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()))
    }
}

impl TlsSink {
    /// A receiver serving the PKI's server certificate; with `client_ca`, it refuses
    /// connections without a client certificate signed by that CA.
    pub fn start(pki: &Pki, client_ca: Option<&Path>) -> Self {
        let grpc_config = server_config(pki, client_ca, b"h2");
        let http_config = server_config(pki, client_ca, b"http/1.1");
        let grpc = std::net::TcpListener::bind("127.0.0.1:0").expect("bind grpc");
        let http = std::net::TcpListener::bind("127.0.0.1:0").expect("bind http");
        let grpc_endpoint = format!("https://{}", grpc.local_addr().expect("addr"));
        let http_endpoint = format!("https://{}", http.local_addr().expect("addr"));
        grpc.set_nonblocking(true).expect("nonblocking");
        http.set_nonblocking(true).expect("nonblocking");
        let log = Arc::new(Log::default());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server_log = Arc::clone(&log);
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("sink runtime");
            runtime.block_on(async move {
                let grpc = tokio::net::TcpListener::from_std(grpc).expect("grpc listener");
                let http = tokio::net::TcpListener::from_std(http).expect("http listener");
                let local = http.local_addr().expect("addr");
                let grpc_incoming = ReceiverStream::new(accept_tls(grpc, grpc_config, Arc::clone(&server_log)))
                    .map(Ok::<_, std::io::Error>);
                let grpc_server = tonic::transport::Server::builder()
                    .add_service(TraceServiceServer::new(Receiver(Arc::clone(&server_log))))
                    .serve_with_incoming(grpc_incoming);
                let listener =
                    TlsListener { connections: accept_tls(http, http_config, Arc::clone(&server_log)), local };
                let app = axum::Router::new().route("/v1/traces", post(http_export)).with_state(Receiver(server_log));
                let http_server = axum::serve(listener, app.into_make_service_with_connect_info::<PeerCert>());
                tokio::select! {
                    _ = grpc_server => {}
                    _ = http_server => {}
                    _ = stop_rx => {}
                }
            });
        });
        Self { grpc_endpoint, http_endpoint, log, stop: Some(stop_tx) }
    }

    /// Every export request received so far.
    pub fn requests(&self) -> Vec<Received> {
        self.log.requests.lock().expect("log").clone()
    }

    /// Spans received so far, as `(service, name)`.
    pub fn spans(&self) -> Vec<(String, String)> {
        self.requests().into_iter().flat_map(|r| r.spans).collect()
    }

    /// Why handshakes failed, one entry per failed connection.
    pub fn failed_handshakes(&self) -> Vec<String> {
        self.log.failed_handshakes.lock().expect("log").clone()
    }
}

impl Drop for TlsSink {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[derive(Clone)]
struct Receiver(Arc<Log>);

impl Receiver {
    fn record(
        &self,
        protocol: &'static str,
        headers: &HeaderMap,
        client_cert: Option<Vec<u8>>,
        request: ExportTraceServiceRequest,
    ) {
        let headers = headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let mut spans = Vec::new();
        for resource_spans in request.resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(Value::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                spans.extend(scope.spans.into_iter().map(|s| (service.clone(), s.name)));
            }
        }
        self.0.requests.lock().expect("log").push(Received { protocol, headers, client_cert, spans });
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let client_cert = request.peer_certs().and_then(|certs| certs.first().map(|c| c.to_vec()));
        let headers = request.metadata().clone().into_headers();
        self.record("grpc", &headers, client_cert, request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

async fn http_export(
    State(receiver): State<Receiver>,
    ConnectInfo(PeerCert(client_cert)): ConnectInfo<PeerCert>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    match super::otlp_sink::decode_http_export(&headers, body) {
        Ok((request, json)) => {
            receiver.record(if json { "http/json" } else { "http/protobuf" }, &headers, client_cert, request);
            StatusCode::OK
        }
        Err(error) => {
            eprintln!("tls sink: undecodable http export: {error}");
            StatusCode::BAD_REQUEST
        }
    }
}
