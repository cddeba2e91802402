//! `spindle serve`: opens the store, binds every listener, runs until SIGINT/SIGTERM, then
//! stops accepting, lets in-flight requests finish and syncs the store.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::alerting::{self, Alerting};
use crate::config::{Settings, Storage};
use crate::dependencies::Dependencies;
use crate::ingest::Ingest;
use crate::kafka::{self, KafkaSink, Target};
use crate::receivers::admission::{self, Admission, ByteBudget};
use crate::receivers::sampling::{self, Strategies};
use crate::receivers::{jaeger_grpc, jaeger_http, jaeger_udp, zipkin};
use crate::security::auth::{self, Authenticator};
use crate::security::oidc::{self, Oidc};
use crate::security::tls::{self, Alpn, Transport};
use crate::security::Group;
use crate::telemetry::Telemetry;
use crate::tenancy::{self, Tenants};
use crate::{admin, api, otlp_grpc, otlp_http};

/// The largest HTTP/2 frame the gRPC receivers accept (advertised as
/// `SETTINGS_MAX_FRAME_SIZE`; HTTP/2's default is 16 KiB). An export then arrives in one
/// DATA frame where it would take one per 16 KiB, each its own write and wake on both sides.
const GRPC_MAX_FRAME_BYTES: u32 = 1 << 20;

async fn bind(what: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await.with_context(|| format!("binding {what} listener on {addr}"))?;
    tracing::info!(%addr, "{what} listening");
    Ok(listener)
}

async fn wait_for_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

fn serve_http<L>(
    tasks: &mut JoinSet<anyhow::Result<()>>,
    what: &'static str,
    listener: L,
    router: axum::Router,
    mut stop: watch::Receiver<bool>,
) where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    tasks.spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
            .with_context(|| format!("{what} server failed"))
    });
}

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    // Before anything builds a TLS server or client.
    tls::install_crypto_provider();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();

    // Admin first, so /healthz answers while the store replays its log.
    let ready = Arc::new(AtomicBool::new(false));
    let default_limits = &settings.tenancy.limits(&settings.tenancy.default_tenant).limits;
    let telemetry = Arc::new(Telemetry::new(&settings.data_dir, default_limits));
    // Authentication (docs/SECURITY.md, "Authentication"): one set of credentials for every
    // listener group; a credentials file that does not load stops the start.
    let oidc = Oidc::from_settings(&settings.security)?;
    let auth = Authenticator::new(&settings.security, oidc.clone(), Arc::clone(&telemetry))?;
    tokio::spawn(Arc::clone(&auth).reload_loop(Duration::from_secs(2), stop_rx.clone()));
    // TLS (docs/SECURITY.md, "TLS"): a certificate that does not load stops the start.
    let transport = Transport::new(&settings.security, Arc::clone(&telemetry))?;
    tls::warn_exposed_listeners(
        &settings.security,
        &[
            ("admin", Group::Admin, settings.admin_addr),
            ("query", Group::Query, settings.query_addr),
            ("otlp grpc", Group::Ingest, settings.otlp_grpc_addr),
            ("otlp http", Group::Ingest, settings.otlp_http_addr),
            ("jaeger http", Group::Ingest, settings.jaeger_http_addr),
            ("jaeger grpc", Group::Ingest, settings.jaeger_grpc_addr),
            ("zipkin", Group::Ingest, settings.zipkin_addr),
            ("sampling", Group::Ingest, settings.sampling_addr),
        ],
    );
    tokio::spawn(transport.reload_loop(Duration::from_secs(2), stop_rx.clone()));
    let admin_listener = transport.wrap(Group::Admin, "admin", Alpn::Http1, bind("admin", settings.admin_addr).await?);
    let store_slot: admin::StoreSlot = Arc::default();
    // Readiness also needs the role's dependencies (docs/OPERATIONS.md, "Roles").
    // Every role but a collector holds stores; a collector without Kafka writes ClickHouse.
    let holds_stores = settings.target.stores() || settings.kafka.is_none();
    let clickhouse_url = match &settings.storage {
        Storage::ClickHouse(c) if holds_stores => Some((c.url.as_str(), c.ca_pem.as_deref())),
        _ => None,
    };
    let kafka_brokers = settings.kafka.as_ref().map(|k| k.brokers.as_str());
    let dependencies = Arc::new(Dependencies::new(clickhouse_url, kafka_brokers)?);
    tokio::spawn(Arc::clone(&dependencies).probe_loop(Duration::from_secs(2), stop_rx.clone()));
    let admin = admin::router(
        Arc::clone(&ready),
        Arc::clone(&telemetry),
        settings.data_dir.clone(),
        Arc::clone(&store_slot),
        dependencies,
    );
    let admin = auth::protect(admin, auth.group(Group::Admin));
    serve_http(&mut tasks, "admin", admin_listener, admin, stop_rx.clone());

    // Tenants (docs/SECURITY.md, "Tenants"): the default tenant's store is the data
    // directory's own, every other tenant's a store of its own under `tenants/`.
    let tenancy = settings.tenancy.clone();
    let (data_dir, sync, t) = (settings.data_dir.clone(), settings.sync, Arc::clone(&telemetry));
    // Roles (docs/OPERATIONS.md, "Roles"): a collector resolves tenants but holds no store.
    // With `storage = clickhouse` every tenant is a ClickHouse database (docs/adr/019,
    // "Query instances"); an unreachable ClickHouse stops the start.
    let (storage, target) = (settings.storage.clone(), settings.target);
    let tenants: Arc<Tenants> = Arc::new(if holds_stores {
        tokio::task::spawn_blocking(move || match storage {
            Storage::Embedded => Tenants::open(tenancy, data_dir, sync, t),
            // Receivers' appends are joined into large inserts; an ingester batches itself.
            Storage::ClickHouse(c) => Tenants::open_clickhouse(tenancy, data_dir, &c, target != Target::Ingester, t),
        })
        .await
        .context("store open task failed")??
    } else {
        Tenants::without_stores(tenancy, data_dir, t)
    });
    let _ = store_slot.set(Arc::clone(&tenants));
    let mut ingest = Ingest::new(Arc::clone(&tenants), settings.queue_spans, &settings.limits, Arc::clone(&telemetry));
    if let (Target::Collector | Target::CollectorQuery, Some(kafka)) = (settings.target, &settings.kafka) {
        ingest = ingest.with_kafka(KafkaSink::new(kafka)?);
    }
    let ingest = Arc::new(ingest);
    if settings.target == Target::Ingester {
        let kafka = settings.kafka.clone().context("an ingester needs kafka_brokers")?;
        tasks.spawn(kafka::consume(kafka, Arc::clone(&tenants), Arc::clone(&telemetry), stop_rx.clone()));
    }
    // Receiver admission (docs/OPERATIONS.md, "Limits"): one byte budget for all receivers,
    // connection and request caps per listener.
    let budget = ByteBudget::new(settings.limits.max_inflight_bytes);
    let admission = |listener: &'static str| {
        Admission::new(listener, &settings.limits, Arc::clone(&budget), settings.max_body_bytes, Arc::clone(&telemetry))
    };

    if settings.target.receives() {
        let grpc_listener = bind("otlp grpc", settings.otlp_grpc_addr).await?;
        let http_listener = bind("otlp http", settings.otlp_http_addr).await?;
        let jaeger_http_listener = bind("jaeger http", settings.jaeger_http_addr).await?;
        let jaeger_grpc_listener = bind("jaeger grpc", settings.jaeger_grpc_addr).await?;
        let zipkin_listener = bind("zipkin", settings.zipkin_addr).await?;
        let sampling_listener = bind("sampling", settings.sampling_addr).await?;
        // Datagrams carry no credentials: with authentication on the ingest group, the Jaeger UDP
        // receivers serve on loopback addresses only, for an agent or SDK on the same host.
        let mut udp_sockets = Vec::new();
        for (addr, flavor, setting) in [
            (settings.jaeger_compact_addr, jaeger_udp::Flavor::Compact, "jaeger_compact_addr"),
            (settings.jaeger_binary_addr, jaeger_udp::Flavor::Binary, "jaeger_binary_addr"),
        ] {
            if auth::udp_allowed(&settings.security, addr) {
                udp_sockets.push((jaeger_udp::bind(addr).await?, flavor));
            } else {
                tracing::warn!(
                    %addr,
                    "Jaeger UDP receiver not started: the ingest group requires authentication and UDP datagrams \
                     carry no credentials; set {setting} to a loopback address (127.0.0.1) to serve agents on this host"
                );
            }
        }
        let strategies =
            Arc::new(Strategies::load(settings.sampling_strategies.clone(), settings.sampling_default_probability)?);

        let otlp_grpc_admission = admission("otlp grpc");
        let grpc_incoming = admission::incoming(transport.wrap(
            Group::Ingest,
            "otlp grpc",
            Alpn::H2,
            otlp_grpc_admission.listen(grpc_listener),
        ));
        let grpc = otlp_grpc::service(Arc::clone(&ingest), settings.max_body_bytes, otlp_grpc_admission);
        let grpc_auth = auth.group(Group::Ingest);
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            tonic::transport::Server::builder()
                .max_frame_size(Some(GRPC_MAX_FRAME_BYTES))
                .add_routes(auth::protect_grpc(tonic::service::Routes::new(grpc), grpc_auth))
                .serve_with_incoming_shutdown(grpc_incoming, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
                .context("otlp grpc server failed")
        });
        let jaeger_grpc_admission = admission("jaeger grpc");
        let jaeger_grpc_incoming = admission::incoming(transport.wrap(
            Group::Ingest,
            "jaeger grpc",
            Alpn::H2,
            jaeger_grpc_admission.listen(jaeger_grpc_listener),
        ));
        let jaeger_grpc =
            jaeger_grpc::CollectorService::new(Arc::clone(&ingest), settings.max_body_bytes, jaeger_grpc_admission);
        let jaeger_grpc_auth = auth.group(Group::Ingest);
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            tonic::transport::Server::builder()
                .add_routes(auth::protect_grpc(tonic::service::Routes::new(jaeger_grpc), jaeger_grpc_auth))
                .serve_with_incoming_shutdown(jaeger_grpc_incoming, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
                .context("jaeger grpc server failed")
        });
        for (socket, flavor) in udp_sockets {
            tasks.spawn(jaeger_udp::serve(
                socket,
                flavor,
                Arc::clone(&ingest),
                Arc::clone(&telemetry),
                Arc::clone(&budget),
                stop_rx.clone(),
            ));
        }
        let jaeger_http_admission = admission("jaeger http");
        let jaeger_http_listener = transport.wrap(
            Group::Ingest,
            "jaeger http",
            Alpn::Http1,
            jaeger_http_admission.listen(jaeger_http_listener),
        );
        let jaeger_http = jaeger_http::router(
            Arc::clone(&ingest),
            Arc::clone(&strategies),
            settings.max_body_bytes,
            jaeger_http_admission,
        );
        let jaeger_http = auth::protect(jaeger_http, auth.group(Group::Ingest));
        serve_http(&mut tasks, "jaeger http", jaeger_http_listener, jaeger_http, stop_rx.clone());
        let zipkin_admission = admission("zipkin");
        let zipkin_listener =
            transport.wrap(Group::Ingest, "zipkin", Alpn::Http1, zipkin_admission.listen(zipkin_listener));
        serve_http(
            &mut tasks,
            "zipkin",
            zipkin_listener,
            auth::protect(
                zipkin::router(Arc::clone(&ingest), settings.max_body_bytes, zipkin_admission),
                auth.group(Group::Ingest),
            ),
            stop_rx.clone(),
        );
        let sampling_listener = transport.wrap(Group::Ingest, "sampling", Alpn::Http1, sampling_listener);
        let sampling_router = auth::protect(sampling::router(Arc::clone(&strategies)), auth.group(Group::Ingest));
        serve_http(&mut tasks, "sampling", sampling_listener, sampling_router, stop_rx.clone());
        tokio::spawn(sampling::reload_loop(Arc::clone(&strategies), Duration::from_secs(2), stop_rx.clone()));
        let otlp_http_admission = admission("otlp http");
        let http_listener =
            transport.wrap(Group::Ingest, "otlp http", Alpn::Http1, otlp_http_admission.listen(http_listener));
        serve_http(
            &mut tasks,
            "otlp http",
            http_listener,
            auth::protect(
                otlp_http::router(Arc::clone(&ingest), settings.max_body_bytes, otlp_http_admission),
                auth.group(Group::Ingest),
            ),
            stop_rx.clone(),
        );
    }
    if settings.target.stores() {
        let query_listener = bind("query", settings.query_addr).await?;
        let alerting = match &settings.alert_rules {
            Some(path) => {
                let alerting = Arc::new(Alerting::load(
                    path,
                    settings.alertmanagers.clone(),
                    settings.alert_webhooks.clone(),
                    settings.public_url.clone(),
                )?);
                tokio::spawn(alerting::run(Arc::clone(&alerting), Arc::clone(&tenants), stop_rx.clone()));
                Some(alerting)
            }
            None => None,
        };
        let api_state =
            api::ApiState::new(Arc::clone(&tenants), Arc::clone(&telemetry), alerting, settings.limits.clone());
        let query_listener = transport.wrap(Group::Query, "query", Alpn::Http1, query_listener);
        // The login routes (OIDC) join the query port's routes, behind the same layer.
        let query_router = auth::protect(oidc::mount(api::router(api_state), oidc), auth.group(Group::Query));
        serve_http(&mut tasks, "query", query_listener, query_router, stop_rx.clone());
    }

    let snapshots = tokio::spawn(tenancy::snapshot_loop(Arc::clone(&tenants), Duration::from_secs(5), stop_rx.clone()));
    let writes_store = matches!(settings.target, Target::All | Target::Ingester)
        || (settings.target == Target::Collector && settings.kafka.is_none());
    if writes_store {
        tokio::spawn(tenancy::clickhouse_retention_loop(
            Arc::clone(&tenants),
            Duration::from_secs(600),
            stop_rx.clone(),
        ));
    }
    ready.store(true, Ordering::Release);
    tracing::info!(data_dir = %settings.data_dir.display(), "spindle ready");

    let failed = tokio::select! {
        _ = wait_for_signal() => None,
        Some(result) = tasks.join_next() => Some(result),
    };
    if let Some(result) = &failed {
        tracing::error!(?result, "a server stopped unexpectedly, shutting down");
    } else {
        tracing::info!("shutting down: no new requests, finishing in-flight ones");
    }
    ready.store(false, Ordering::Release);
    let _ = stop_tx.send(true);
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), drain).await.is_err() {
        tracing::warn!("in-flight requests did not finish within 10s");
    }
    let _ = snapshots.await;
    let sync_tenants = Arc::clone(&tenants);
    tokio::task::spawn_blocking(move || sync_tenants.sync())
        .await
        .context("store sync task failed")?
        .context("syncing the store")?;
    tracing::info!("store synced, bye");
    match failed {
        Some(Ok(Err(e))) => Err(e),
        Some(Err(e)) => Err(anyhow::anyhow!("server task panicked: {e}")),
        _ => Ok(()),
    }
}
