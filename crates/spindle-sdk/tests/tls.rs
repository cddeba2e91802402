//! The SDK against a secured backend: a TLS OTLP receiver started here (tests/support/
//! tls_sink.rs, certificates made with rcgen) that records every request's headers, client
//! certificate and spans. Over gRPC, HTTP/protobuf and HTTP/JSON the SDK
//! - exports to an `https://` endpoint whose CA it trusts through the CA file;
//! - fails cleanly (spans counted as failed, no panic, no hang) against one it does not trust;
//! - presents its client certificate to a receiver that requires one;
//! - sends the configured headers and `X-Scope-OrgID` with every request;
//!
//! and a TLS file that cannot be used is an init error naming it.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use spindle_sdk::{InitError, Protocol, SamplerConfig, SpindleBuilder};
use support::tls_sink::{Pki, TlsSink};
use support::{within, TestService};

const PROTOCOLS: [Protocol; 3] = [Protocol::Grpc, Protocol::HttpProtobuf, Protocol::HttpJson];

fn endpoint(sink: &TlsSink, protocol: Protocol) -> &str {
    match protocol {
        Protocol::Grpc => &sink.grpc_endpoint,
        Protocol::HttpProtobuf | Protocol::HttpJson => &sink.http_endpoint,
    }
}

fn builder(name: &str, endpoint: &str, protocol: Protocol) -> SpindleBuilder {
    spindle_sdk::builder(name)
        .endpoint(endpoint)
        .protocol(protocol)
        .sampler(SamplerConfig::AlwaysOn)
        .scheduled_delay(Duration::from_millis(50))
        .export_timeout(Duration::from_secs(5))
}

/// Ends one span, `checkout`, as service `svc`.
fn emit(svc: &TestService) {
    svc.run(async {
        tracing::info_span!("checkout", order = 7_i64).in_scope(|| tracing::info!("paid"));
    });
}

fn name(prefix: &str, protocol: Protocol) -> String {
    format!("{prefix}-{}", format!("{protocol:?}").to_lowercase())
}

#[test]
fn exports_to_an_https_endpoint_trusting_the_ca_file() {
    let pki = Pki::new();
    let sink = TlsSink::start(&pki, None);
    for protocol in PROTOCOLS {
        let service = name("trusted", protocol);
        let svc = TestService::with_builder(
            &service,
            builder(&service, endpoint(&sink, protocol), protocol).ca_certificate(&pki.ca),
        );
        emit(&svc);
        svc.guard.flush().unwrap_or_else(|e| panic!("{protocol:?}: flush over tls: {e}"));
        assert!(sink.spans().contains(&(service.clone(), "checkout".to_owned())), "{protocol:?}: {:?}", sink.spans());
        let stats = svc.guard.stats();
        assert_eq!((stats.exported, stats.failed), (1, 0), "{protocol:?}: {stats:?}");
    }
    assert!(sink.failed_handshakes().is_empty(), "{:?}", sink.failed_handshakes());
    let protocols: Vec<_> = sink.requests().iter().map(|r| r.protocol).collect();
    for protocol in ["grpc", "http/protobuf", "http/json"] {
        assert!(protocols.contains(&protocol), "{protocol} reached the receiver: {protocols:?}");
    }
}

#[test]
fn an_untrusted_server_fails_exports_cleanly() {
    let pki = Pki::new();
    let sink = TlsSink::start(&pki, None);
    for protocol in PROTOCOLS {
        let service = name("untrusted", protocol);
        // Trusts the system's roots and a CA that did not sign the receiver's certificate.
        // No timed export: the flush below is the export that must fail (one the timer made
        // first would have failed and been counted before the flush, which then succeeds).
        let svc = TestService::with_builder(
            &service,
            builder(&service, endpoint(&sink, protocol), protocol)
                .ca_certificate(&pki.other_ca)
                .scheduled_delay(Duration::from_secs(3600)),
        );
        let started = Instant::now();
        for _ in 0..3 {
            emit(&svc);
        }
        let guard = &svc.guard;
        let flushed = guard.flush_with_timeout(Duration::from_secs(10));
        assert!(flushed.is_err(), "{protocol:?}: export to an untrusted server must fail: {flushed:?}");
        assert!(started.elapsed() < Duration::from_secs(10), "{protocol:?}: no hang: {:?}", started.elapsed());
        let stats = guard.stats();
        assert_eq!(stats.exported, 0, "{protocol:?}: {stats:?}");
        assert!(stats.failed >= 1 && stats.failed_exports >= 1, "{protocol:?}: failures are counted: {stats:?}");
    }
    assert!(sink.requests().is_empty(), "no request got through: {:?}", sink.requests());
    let handshakes = sink.failed_handshakes();
    assert!(handshakes.len() >= PROTOCOLS.len(), "the receiver saw the refused handshakes: {handshakes:?}");
    assert!(handshakes.iter().all(|h| h.contains("UnknownCA")), "refused for the CA: {handshakes:?}");
}

#[test]
fn presents_the_client_certificate_to_a_receiver_that_requires_one() {
    let pki = Pki::new();
    let sink = TlsSink::start(&pki, Some(&pki.client_ca));
    for protocol in PROTOCOLS {
        let with_cert = name("mtls", protocol);
        let svc = TestService::with_builder(
            &with_cert,
            builder(&with_cert, endpoint(&sink, protocol), protocol)
                .ca_certificate(&pki.ca)
                .client_certificate(&pki.client.cert)
                .client_key(&pki.client.key),
        );
        emit(&svc);
        svc.guard.flush().unwrap_or_else(|e| panic!("{protocol:?}: flush with a client certificate: {e}"));
        let requests = sink.requests();
        let mine: Vec<_> =
            requests.iter().filter(|r| r.spans.iter().any(|(service, _)| *service == with_cert)).collect();
        assert!(!mine.is_empty(), "{protocol:?}: {requests:?}");
        for request in mine {
            assert_eq!(
                request.client_cert.as_deref(),
                Some(pki.client.der.as_slice()),
                "{protocol:?}: our certificate"
            );
        }

        // Without one, or with one the receiver's CA did not sign, the receiver refuses.
        for (case, stranger) in [("none", None), ("stranger", Some(&pki.stranger))] {
            let service = format!("{}-{case}", name("mtls", protocol));
            let mut b = builder(&service, endpoint(&sink, protocol), protocol).ca_certificate(&pki.ca);
            if let Some(pair) = stranger {
                b = b.client_certificate(&pair.cert).client_key(&pair.key);
            }
            let svc = TestService::with_builder(&service, b);
            emit(&svc);
            assert!(svc.guard.flush_with_timeout(Duration::from_secs(10)).is_err(), "{protocol:?} {case}");
            assert_eq!(svc.guard.stats().exported, 0, "{protocol:?} {case}");
            assert!(!sink.spans().iter().any(|(s, _)| *s == service), "{protocol:?} {case}: nothing got through");
        }
    }
    assert!(!sink.failed_handshakes().is_empty(), "the refusals were TLS refusals");
}

#[test]
fn sends_the_configured_headers_and_tenant_with_every_request() {
    let pki = Pki::new();
    let sink = TlsSink::start(&pki, None);
    for protocol in PROTOCOLS {
        let service = name("headers", protocol);
        let svc = TestService::with_builder(
            &service,
            builder(&service, endpoint(&sink, protocol), protocol)
                .ca_certificate(&pki.ca)
                .header("Authorization", "Bearer t0ken-for-spindle")
                .header("x-team", "payments")
                .tenant("team-a")
                .max_export_batch_size(1),
        );
        for _ in 0..3 {
            emit(&svc);
        }
        svc.guard.flush().unwrap_or_else(|e| panic!("{protocol:?}: flush: {e}"));
        let mine: Vec<_> = sink.requests().into_iter().filter(|r| r.spans.iter().any(|(s, _)| *s == service)).collect();
        assert!(mine.len() >= 2, "{protocol:?}: several requests, one span each: {mine:?}");
        for request in mine {
            let header = |name: &str| request.headers.get(name).map(String::as_str);
            assert_eq!(header("authorization"), Some("Bearer t0ken-for-spindle"), "{protocol:?}: {request:?}");
            assert_eq!(header("x-team"), Some("payments"), "{protocol:?}");
            assert_eq!(header("x-scope-orgid"), Some("team-a"), "{protocol:?}");
        }
    }
}

fn init_error(builder: SpindleBuilder) -> InitError {
    // Bounded: a bad file must fail init at once, not after a connection attempt.
    within("init with a bad tls file", Duration::from_secs(10), move || match builder
        .into_layer::<spindle_sdk::tracing_subscriber::Registry>(
    ) {
        Ok(_) => panic!("init succeeded"),
        Err(e) => e,
    })
}

#[test]
fn unusable_tls_files_are_init_errors_naming_the_file() {
    let pki = Pki::new();
    let garbage = pki.file("garbage.pem", b"this is not PEM\n");
    let missing = pki.dir.path().join("missing.pem");
    let https = "https://127.0.0.1:1";
    let cases: Vec<(&str, SpindleBuilder, &Path, &str)> = vec![
        ("missing CA", builder("e", https, Protocol::Grpc).ca_certificate(&missing), &missing, "CA certificate"),
        ("garbage CA", builder("e", https, Protocol::HttpProtobuf).ca_certificate(&garbage), &garbage, "no PEM"),
        (
            "missing client certificate",
            builder("e", https, Protocol::Grpc).client_certificate(&missing).client_key(&pki.client.key),
            &missing,
            "client certificate",
        ),
        (
            "garbage key",
            builder("e", https, Protocol::HttpJson).client_certificate(&pki.client.cert).client_key(&garbage),
            &garbage,
            "private key",
        ),
        (
            "key of another certificate",
            builder("e", https, Protocol::Grpc).client_certificate(&pki.client.cert).client_key(&pki.stranger.key),
            &pki.stranger.key,
            "client key",
        ),
    ];
    for (case, b, path, expect) in cases {
        let error = init_error(b);
        assert!(matches!(error, InitError::TlsFile { .. }), "{case}: {error:?}");
        let text = error.to_string();
        assert!(text.contains(&path.display().to_string()) && text.contains(expect), "{case}: {text}");
    }
    let error = init_error(builder("e", https, Protocol::Grpc).client_certificate(&pki.client.cert));
    assert!(error.to_string().contains("client_certificate"), "{error}");
}
