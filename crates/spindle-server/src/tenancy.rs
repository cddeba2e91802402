//! Tenants: every request acts for one tenant, and each tenant's spans live in a store of
//! their own (docs/SECURITY.md, "Tenants").

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use spindle_model::{DependencyLink, Span, SpanKind, TraceId};
use spindle_query::QueryService;
use spindle_store::{
    EmbeddedStore, Operation, StoreError, StoreOptions, StoreStats, SyncPolicy, TraceQuery, TraceStore,
};

use crate::limits::{Limit, Limits};
use crate::security::Principal;
use crate::telemetry::{Telemetry, TenantMetrics};

/// The longest tenant name: tenant names become directory names.
pub const MAX_TENANT_NAME: usize = 64;

/// Checks a tenant name: 1 to 64 of `A-Z a-z 0-9 - _ .`, not `.` or `..` (it names a
/// directory of the data directory).
pub fn check_name(name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !name.is_empty()
            && name.len() <= MAX_TENANT_NAME
            && name != "."
            && name != ".."
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')),
        "invalid tenant {name:?}: 1 to {MAX_TENANT_NAME} of A-Z a-z 0-9 - _ ."
    );
    Ok(())
}

/// What one tenant may use.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantLimits {
    /// Spans per second (token bucket, one second's burst); 0 is unlimited.
    pub ingest_rate: u64,
    pub retention: Option<Duration>,
    pub max_disk_bytes: Option<u64>,
    /// The cardinality and query limits (the ingest admission ones are global).
    pub limits: Limits,
}

/// The tenancy settings in effect.
#[derive(Debug, Clone, PartialEq)]
pub struct TenancySettings {
    pub default_tenant: String,
    pub header_required: bool,
    pub max_tenants: usize,
    /// Limits of tenants without overrides.
    pub global: TenantLimits,
    pub overrides: BTreeMap<String, TenantLimits>,
}

impl TenancySettings {
    pub fn limits(&self, tenant: &str) -> &TenantLimits {
        self.overrides.get(tenant).unwrap_or(&self.global)
    }
}

/// The header that names a request's tenant: Tempo's, so Grafana's data sources and the
/// OpenTelemetry Collector's `headers` setting work as they do with Tempo.
pub const TENANT_HEADER: &str = "x-scope-orgid";

/// What a request wants to do with its tenant's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// Why a request gets no tenant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantError {
    #[error("no tenant: send the X-Scope-OrgID header")]
    Missing,
    #[error("{0}")]
    Invalid(String),
    #[error("not allowed to {access} tenant {tenant:?}")]
    Forbidden { tenant: String, access: &'static str },
    #[error("{max} tenants hold data (max_tenants): tenant {tenant:?} cannot be created")]
    TooMany { tenant: String, max: usize },
    #[error("tenant {tenant:?} sends more than its {rate} spans per second")]
    RateLimited { tenant: String, rate: u64 },
    #[error("opening the store of tenant {tenant:?} failed: {message}")]
    Store { tenant: String, message: String },
}

impl TenantError {
    /// The HTTP status of the refusal.
    pub fn status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            TenantError::Missing => StatusCode::UNAUTHORIZED,
            TenantError::Invalid(_) => StatusCode::BAD_REQUEST,
            TenantError::Forbidden { .. } => StatusCode::FORBIDDEN,
            TenantError::TooMany { .. } | TenantError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            TenantError::Store { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn grpc_status(&self) -> tonic::Status {
        match self {
            TenantError::Missing => tonic::Status::unauthenticated(self.to_string()),
            TenantError::Invalid(_) => tonic::Status::invalid_argument(self.to_string()),
            TenantError::Forbidden { .. } => tonic::Status::permission_denied(self.to_string()),
            TenantError::TooMany { .. } => tonic::Status::resource_exhausted(self.to_string()),
            TenantError::RateLimited { .. } => crate::receivers::admission::resource_exhausted(self.to_string()),
            TenantError::Store { .. } => tonic::Status::unavailable(self.to_string()),
        }
    }
}

/// Who sends a request and which tenant it names, as its listener's layers left them.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// The `X-Scope-OrgID` header, if any.
    pub org_id: Option<String>,
}

impl Caller {
    pub fn from_parts(extensions: &axum::http::Extensions, headers: &axum::http::HeaderMap) -> Self {
        Caller {
            principal: extensions.get::<Principal>().cloned().unwrap_or_else(Principal::anonymous),
            org_id: headers.get(TENANT_HEADER).map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string()),
        }
    }

    /// The caller of a request through no layer: anonymous, no tenant named.
    pub fn anonymous() -> Self {
        Caller { principal: Principal::anonymous(), org_id: None }
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Caller::from_parts(&parts.extensions, &parts.headers))
    }
}

/// One tenant: its store, queries over it, span metrics and limits.
pub struct Tenant {
    pub name: Arc<str>,
    pub store: Arc<dyn TraceStore>,
    /// The embedded store behind `store`; `None` for the empty stand-in of a tenant
    /// without data.
    pub embedded: Option<Arc<EmbeddedStore>>,
    pub query: QueryService,
    pub metrics: Arc<TenantMetrics>,
    pub limits: Arc<TenantLimits>,
    bucket: Option<Mutex<TokenBucket>>,
}

impl Tenant {
    /// Takes `spans` from the tenant's ingest rate, or says it is over it.
    pub fn take(&self, spans: u64) -> Result<(), TenantError> {
        let Some(bucket) = &self.bucket else { return Ok(()) };
        let mut bucket = bucket.lock().unwrap_or_else(|e| e.into_inner());
        if bucket.take(spans, Instant::now()) {
            Ok(())
        } else {
            Err(TenantError::RateLimited { tenant: self.name.to_string(), rate: self.limits.ingest_rate })
        }
    }
}

/// A token bucket of spans: `rate` per second, at most one second's worth saved up. A batch
/// larger than a second's worth passes when the bucket is full, so no batch is refused for
/// ever.
struct TokenBucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(rate: u64) -> Self {
        TokenBucket { rate: rate as f64, tokens: rate as f64, at: Instant::now() }
    }

    fn take(&mut self, n: u64, now: Instant) -> bool {
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.rate);
        self.at = now;
        let n = (n as f64).min(self.rate);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// Every tenant with data, opened at start (each from its directory) or at its first write.
///
/// The default tenant lives in the data directory itself, as a single-tenant Spindle
/// always kept it; any other tenant in `tenants/<name>/` of it, a store of its own. Reads
/// of a tenant without data see an empty store and create nothing.
pub struct Tenants {
    settings: TenancySettings,
    data_dir: PathBuf,
    sync: SyncPolicy,
    telemetry: Arc<Telemetry>,
    default: Arc<Tenant>,
    others: RwLock<HashMap<Arc<str>, Arc<Tenant>>>,
    /// Serialises opening stores, so a tenant's is opened once.
    opening: Mutex<()>,
    empty_store: Arc<dyn TraceStore>,
    /// A collector's: tenants are resolved and rate-limited, but hold no store here.
    stateless: bool,
    /// `storage = clickhouse`: every tenant's store is a ClickHouse database.
    clickhouse: Option<Arc<crate::clickhouse::Databases>>,
}

/// The directory of the non-default tenants, under the data directory.
pub const TENANTS_DIR: &str = "tenants";

impl Tenants {
    /// Opens the default tenant's store and every other tenant's found on disk.
    pub fn open(
        settings: TenancySettings,
        data_dir: PathBuf,
        sync: SyncPolicy,
        telemetry: Arc<Telemetry>,
    ) -> anyhow::Result<Self> {
        let default_name: Arc<str> = Arc::from(settings.default_tenant.as_str());
        let limits = settings.limits(&default_name).clone();
        let store = Arc::new(
            EmbeddedStore::open(store_options(&data_dir, sync, &limits))
                .with_context(|| format!("opening the store in {}", data_dir.display()))?,
        );
        let default = Arc::new(tenant(default_name, store, telemetry.default_metrics(), limits));
        let tenants = Tenants {
            data_dir,
            sync,
            default,
            others: RwLock::default(),
            opening: Mutex::default(),
            empty_store: Arc::new(EmptyStore),
            telemetry,
            settings,
            stateless: false,
            clickhouse: None,
        };
        let dir = tenants.data_dir.join(TENANTS_DIR);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            let mut names: Vec<String> = entries
                .flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            for name in names {
                if check_name(&name).is_err() || name == tenants.settings.default_tenant {
                    tracing::warn!(dir = %dir.join(&name).display(), "not a tenant's directory, left alone");
                    continue;
                }
                tenants.open_tenant(&name).map_err(|e| anyhow::anyhow!("{e}"))?;
            }
        }
        Ok(tenants)
    }

    /// Tenants over ClickHouse (`storage = clickhouse`, docs/adr/019, "Query instances"):
    /// the default tenant's store is database `<database>`, any other tenant's
    /// `<database>_<encoded name>` ([`crate::clickhouse::database_of`]). The default
    /// tenant's database is opened (created, migrated) now, so an unreachable ClickHouse
    /// stops the start; every other tenant's database found now is listed as a tenant.
    pub fn open_clickhouse(
        settings: TenancySettings,
        data_dir: PathBuf,
        clickhouse: &crate::config::ClickHouseSettings,
        group_commit: bool,
        telemetry: Arc<Telemetry>,
    ) -> anyhow::Result<Self> {
        let (url, database) = (clickhouse.url.as_str(), clickhouse.database.as_str());
        let databases = Arc::new(crate::clickhouse::Databases::new(clickhouse, group_commit)?);
        let default_name: Arc<str> = Arc::from(settings.default_tenant.as_str());
        databases.open(database, true).with_context(|| format!("opening ClickHouse database {database} at {url}"))?;
        let found = databases.tenants().with_context(|| format!("listing the tenants' databases at {url}"))?;
        let limits = settings.limits(&default_name).clone();
        let store = databases.writer(database);
        let default = Arc::new(store_tenant(default_name, store, telemetry.default_metrics(), limits));
        let empty_store: Arc<dyn TraceStore> = Arc::new(EmptyStore);
        let tenants = Tenants {
            data_dir,
            sync: SyncPolicy::Always,
            default,
            others: RwLock::default(),
            opening: Mutex::default(),
            empty_store,
            telemetry,
            settings,
            stateless: false,
            clickhouse: Some(databases),
        };
        for name in found {
            if name == tenants.settings.default_tenant {
                continue;
            }
            tenants.open_tenant(&name).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        Ok(tenants)
    }

    /// Tenants without stores, for a collector (docs/OPERATIONS.md, "Roles"): names,
    /// permissions, `max_tenants` and ingest rates apply as with stores; nothing is opened
    /// or written under `data_dir`.
    pub fn without_stores(settings: TenancySettings, data_dir: PathBuf, telemetry: Arc<Telemetry>) -> Self {
        let empty_store: Arc<dyn TraceStore> = Arc::new(EmptyStore);
        let mut tenants = Tenants {
            default: Arc::new(Tenant {
                name: Arc::from(settings.default_tenant.as_str()),
                store: Arc::clone(&empty_store),
                embedded: None,
                query: QueryService::new(Arc::clone(&empty_store)),
                metrics: telemetry.default_metrics(),
                limits: Arc::new(settings.limits(&settings.default_tenant).clone()),
                bucket: None,
            }),
            data_dir,
            sync: SyncPolicy::Always,
            others: RwLock::default(),
            opening: Mutex::default(),
            empty_store,
            telemetry,
            settings,
            stateless: true,
            clickhouse: None,
        };
        let default = tenants.stateless_tenant(&tenants.settings.default_tenant.clone());
        tenants.default = Arc::new(default);
        tenants
    }

    fn stateless_tenant(&self, name: &str) -> Tenant {
        let mut tenant = self.empty(name);
        let rate = tenant.limits.ingest_rate;
        tenant.bucket = (rate > 0).then(|| Mutex::new(TokenBucket::new(rate)));
        tenant
    }

    pub fn default_tenant(&self) -> &Arc<Tenant> {
        &self.default
    }

    /// The default tenant and every tenant with data.
    pub fn all(&self) -> Vec<Arc<Tenant>> {
        let others = self.others.read().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<Arc<Tenant>> = others.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all.insert(0, Arc::clone(&self.default));
        all
    }

    /// The tenant `caller` acts for, checked against what its principal may do.
    pub fn resolve(&self, caller: &Caller, access: Access) -> Result<Arc<Tenant>, TenantError> {
        let name = self.name_for(caller, access)?;
        if *name == *self.default.name {
            return Ok(Arc::clone(&self.default));
        }
        if let Some(t) = self.others.read().unwrap_or_else(|e| e.into_inner()).get(name.as_str()) {
            return Ok(Arc::clone(t));
        }
        match access {
            Access::Write => self.open_tenant(&name),
            // Over ClickHouse, another instance (an ingester) may have created the tenant's
            // database since: the read looks for it, and reads nothing when it is missing.
            Access::Read if self.clickhouse.is_some() && !self.stateless => Ok(Arc::new(self.clickhouse_reader(&name))),
            // A tenant without data reads as empty; nothing is created for a read.
            Access::Read => Ok(Arc::new(self.empty(&name))),
        }
    }

    /// Tenant `name` for a reader trusted by the server itself (alert rules): its data, or
    /// nothing when it has none.
    pub fn reader(&self, name: &str) -> Arc<Tenant> {
        let caller = Caller { principal: Principal::anonymous(), org_id: Some(name.to_string()) };
        self.resolve(&caller, Access::Read).unwrap_or_else(|_| Arc::new(self.empty(name)))
    }

    pub fn settings(&self) -> &TenancySettings {
        &self.settings
    }

    fn name_for(&self, caller: &Caller, access: Access) -> Result<String, TenantError> {
        let principal = &caller.principal;
        let name = match caller.org_id.as_deref().filter(|s| !s.is_empty()) {
            Some(named) => {
                check_name(named).map_err(|e| TenantError::Invalid(e.to_string()))?;
                named.to_string()
            }
            None => match &principal.tenant {
                Some(bound) => bound.clone(),
                None if self.settings.header_required => return Err(TenantError::Missing),
                None => self.settings.default_tenant.clone(),
            },
        };
        let (allowed, verb) = match access {
            Access::Read => (&principal.read, "read"),
            Access::Write => (&principal.write, "write"),
        };
        if !allowed.contains(&name) {
            return Err(TenantError::Forbidden { tenant: name, access: verb });
        }
        Ok(name)
    }

    fn open_tenant(&self, name: &str) -> Result<Arc<Tenant>, TenantError> {
        let _opening = self.opening.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = self.others.read().unwrap_or_else(|e| e.into_inner()).get(name) {
            return Ok(Arc::clone(t));
        }
        // The default tenant counts as one.
        let others = self.others.read().unwrap_or_else(|e| e.into_inner()).len();
        if others + 2 > self.settings.max_tenants {
            self.telemetry.limits.hit(
                Limit::Tenants,
                1,
                &format_args!("tenant {name:?} refused: {} tenants hold data", self.settings.max_tenants),
            );
            return Err(TenantError::TooMany { tenant: name.to_string(), max: self.settings.max_tenants });
        }
        if self.stateless {
            let tenant = Arc::new(self.stateless_tenant(name));
            self.others.write().unwrap_or_else(|e| e.into_inner()).insert(Arc::from(name), Arc::clone(&tenant));
            return Ok(tenant);
        }
        let dir = self.data_dir.join(TENANTS_DIR).join(name);
        let limits = self.settings.limits(name).clone();
        if let Some(databases) = &self.clickhouse {
            // Opened (database created, migrated) at its first use, on a blocking thread.
            let database = crate::clickhouse::database_of(databases.prefix(), name);
            let store = databases.writer(&database);
            let name: Arc<str> = Arc::from(name);
            let metrics = Arc::new(self.telemetry.tenant_metrics(&name, &dir, &limits.limits));
            let tenant = Arc::new(store_tenant(Arc::clone(&name), store, metrics, limits));
            tracing::info!(tenant = %name, %database, "tenant on ClickHouse");
            self.others.write().unwrap_or_else(|e| e.into_inner()).insert(name, Arc::clone(&tenant));
            return Ok(tenant);
        }
        let store = EmbeddedStore::open(store_options(&dir, self.sync, &limits))
            .map_err(|e| TenantError::Store { tenant: name.to_string(), message: e.to_string() })?;
        let name: Arc<str> = Arc::from(name);
        let metrics = Arc::new(self.telemetry.tenant_metrics(&name, &dir, &limits.limits));
        let tenant = Arc::new(tenant(Arc::clone(&name), Arc::new(store), metrics, limits));
        tracing::info!(tenant = %name, dir = %dir.display(), "tenant store open");
        self.others.write().unwrap_or_else(|e| e.into_inner()).insert(name, Arc::clone(&tenant));
        Ok(tenant)
    }

    /// The stand-in of a tenant without data.
    fn empty(&self, name: &str) -> Tenant {
        let limits = Arc::new(self.settings.limits(name).clone());
        Tenant {
            name: Arc::from(name),
            store: Arc::clone(&self.empty_store),
            embedded: None,
            query: QueryService::new(Arc::clone(&self.empty_store))
                .with_max_trace_spans(limits.limits.query_max_trace_spans),
            metrics: Arc::new(self.telemetry.empty_metrics(&limits.limits)),
            limits,
            bucket: None,
        }
    }

    /// A ClickHouse tenant this instance has not seen written: its database if one exists.
    fn clickhouse_reader(&self, name: &str) -> Tenant {
        let mut tenant = self.empty(name);
        if let Some(databases) = &self.clickhouse {
            let database = crate::clickhouse::database_of(databases.prefix(), name);
            let store: Arc<dyn TraceStore> = Arc::new(databases.store(&database, false));
            tenant.query =
                QueryService::new(Arc::clone(&store)).with_max_trace_spans(tenant.limits.limits.query_max_trace_spans);
            tenant.store = store;
        }
        tenant
    }

    /// What every tenant's store holds, summed (for `/metrics`).
    pub fn stats(&self) -> StoreStats {
        let mut sum = StoreStats::default();
        for s in self.all().iter().filter_map(|t| t.embedded.as_ref().map(|e| e.stats())) {
            sum.blocks += s.blocks;
            sum.block_spans += s.block_spans;
            sum.block_bytes += s.block_bytes;
            sum.head_spans += s.head_spans;
            sum.wal_bytes += s.wal_bytes;
            sum.blocks_set_aside += s.blocks_set_aside;
            sum.wal_records_skipped += s.wal_records_skipped;
            sum.wal_bytes_set_aside += s.wal_bytes_set_aside;
            sum.wal_records_undecodable += s.wal_records_undecodable;
            sum.catalog_rebuilds += s.catalog_rebuilds;
            sum.operations_unlisted += s.operations_unlisted;
            sum.services_unlisted += s.services_unlisted;
        }
        sum
    }

    /// Syncs every tenant's store (at shutdown).
    pub fn sync(&self) -> Result<(), spindle_store::StoreError> {
        for tenant in self.all() {
            tenant.store.sync()?;
        }
        Ok(())
    }
}

fn store_options(dir: &Path, sync: SyncPolicy, limits: &TenantLimits) -> StoreOptions {
    StoreOptions {
        sync,
        retention: limits.retention,
        max_disk_bytes: limits.max_disk_bytes,
        max_operations_per_service: limits.limits.max_operations_per_service,
        max_services: limits.limits.max_services,
        ..StoreOptions::new(dir.to_path_buf())
    }
}

fn tenant(name: Arc<str>, store: Arc<EmbeddedStore>, metrics: Arc<TenantMetrics>, limits: TenantLimits) -> Tenant {
    let dyn_store: Arc<dyn TraceStore> = store.clone();
    Tenant { embedded: Some(store), ..store_tenant(name, dyn_store, metrics, limits) }
}

/// A tenant over any store; `embedded` is left `None` (no store stats, no local retention).
fn store_tenant(
    name: Arc<str>,
    store: Arc<dyn TraceStore>,
    metrics: Arc<TenantMetrics>,
    limits: TenantLimits,
) -> Tenant {
    Tenant {
        name,
        query: QueryService::new(Arc::clone(&store)).with_max_trace_spans(limits.limits.query_max_trace_spans),
        store,
        embedded: None,
        metrics,
        bucket: (limits.ingest_rate > 0).then(|| Mutex::new(TokenBucket::new(limits.ingest_rate))),
        limits: Arc::new(limits),
    }
}

/// The store of a tenant without data: every read answers nothing, writes are refused.
struct EmptyStore;

impl TraceStore for EmptyStore {
    fn append(&self, _: Vec<Span>) -> Result<(), StoreError> {
        Err(StoreError::Closed)
    }

    fn get_trace(&self, _: TraceId) -> Result<Vec<Span>, StoreError> {
        Ok(Vec::new())
    }

    fn find_trace_ids(&self, _: &TraceQuery) -> Result<Vec<TraceId>, StoreError> {
        Ok(Vec::new())
    }

    fn services(&self) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }

    fn operations(&self, _: &str, _: Option<SpanKind>) -> Result<Vec<Operation>, StoreError> {
        Ok(Vec::new())
    }

    fn dependencies(&self, _: u64, _: u64) -> Result<Vec<DependencyLink>, StoreError> {
        Ok(Vec::new())
    }

    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Snapshots every tenant's span metrics every `every` until `stop` flips, then once more;
/// minutes older than the tenant's retention (7 days without one) are trimmed first.
pub async fn snapshot_loop(tenants: Arc<Tenants>, every: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
    const WITHOUT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let all = tenants.all();
        // The server's clock, never a span's: retention is measured from now.
        let now = crate::api::params::now_unix_nano();
        let _ = tokio::task::spawn_blocking(move || {
            for tenant in all {
                let retention = tenant.limits.retention.unwrap_or(WITHOUT_RETENTION);
                tenant.metrics.trim(now.saturating_sub(retention.as_nanos() as u64), now);
                if let Err(e) = tenant.metrics.snapshot() {
                    tracing::warn!(error = %e, tenant = %tenant.name, "span metrics snapshot failed");
                }
            }
        })
        .await;
    }
    let all = tenants.all();
    let _ = tokio::task::spawn_blocking(move || {
        for tenant in all {
            let _ = tenant.metrics.snapshot();
        }
    })
    .await;
}

/// Retention on ClickHouse (docs/OPERATIONS.md, "Scale-out"), run by the instances that
/// write (`all`, ingesters) every `every` from their start: each tenant with a retention keeps
/// it by `TTL` where the server has one (set again each pass, so a changed setting takes
/// effect), else its whole days that ended before now − retention are dropped. Days are the
/// unit, so a retention is kept rounded up to whole days. Several instances doing it at once
/// only repeat the same drops.
pub async fn clickhouse_retention_loop(
    tenants: Arc<Tenants>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let Some(databases) = tenants.clickhouse.clone() else { return };
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let all = tenants.all();
        let default_name = Arc::clone(&tenants.default.name);
        let databases = Arc::clone(&databases);
        let now = crate::api::params::now_unix_nano();
        let _ = tokio::task::spawn_blocking(move || {
            for tenant in all {
                let Some(retention) = tenant.limits.retention else { continue };
                let database = if tenant.name == default_name {
                    databases.prefix().to_string()
                } else {
                    crate::clickhouse::database_of(databases.prefix(), &tenant.name)
                };
                let days = retention.as_secs().div_ceil(86_400).max(1);
                let result = databases.open(&database, false).and_then(|store| match store {
                    None => Ok(0),
                    Some(store) => match store.set_retention(Some(u32::try_from(days).unwrap_or(u32::MAX)))? {
                        true => Ok(0),
                        false => store.drop_days_before(now.saturating_sub(days * 86_400_000_000_000)),
                    },
                });
                match result {
                    Ok(0) => {}
                    Ok(dropped) => tracing::info!(tenant = %tenant.name, %database, dropped, "retention dropped days"),
                    Err(e) => tracing::warn!(tenant = %tenant.name, %database, error = %e, "retention pass failed"),
                }
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::TenantSet;

    fn settings(header_required: bool) -> TenancySettings {
        let global = TenantLimits { ingest_rate: 0, retention: None, max_disk_bytes: None, limits: Limits::default() };
        TenancySettings {
            default_tenant: "single-tenant".into(),
            header_required,
            max_tenants: 3,
            global,
            overrides: BTreeMap::new(),
        }
    }

    fn open(dir: &Path, header_required: bool) -> Tenants {
        let telemetry = Arc::new(Telemetry::new(dir, &Limits::default()));
        Tenants::open(settings(header_required), dir.to_path_buf(), SyncPolicy::Always, telemetry).unwrap()
    }

    fn bound(tenant: &str) -> Principal {
        Principal {
            name: tenant.into(),
            authenticated: true,
            read: TenantSet::from_list([tenant]),
            write: TenantSet::from_list([tenant]),
            admin: false,
            tenant: Some(tenant.into()),
        }
    }

    fn caller(principal: Principal, org_id: Option<&str>) -> Caller {
        Caller { principal, org_id: org_id.map(str::to_string) }
    }

    #[test]
    fn names_are_checked_as_directory_names() {
        for good in ["a", "team-a", "A_1.b", &"x".repeat(64)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "../x", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_tenant_is_the_header_else_the_credential_else_the_default_and_must_be_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let tenants = open(dir.path(), false);
        let anon = Principal::anonymous;
        let name = |c: &Caller, a: Access| tenants.resolve(c, a).map(|t| t.name.to_string());
        assert_eq!(name(&caller(anon(), None), Access::Read).unwrap(), "single-tenant");
        assert_eq!(name(&caller(anon(), Some("x")), Access::Read).unwrap(), "x");
        assert_eq!(name(&caller(bound("a"), None), Access::Write).unwrap(), "a");
        assert_eq!(name(&caller(bound("a"), Some("a")), Access::Read).unwrap(), "a");
        assert!(matches!(
            tenants.resolve(&caller(bound("a"), Some("b")), Access::Read),
            Err(TenantError::Forbidden { .. })
        ));
        assert!(matches!(
            tenants.resolve(&caller(bound("a"), Some("single-tenant")), Access::Write),
            Err(TenantError::Forbidden { .. })
        ));
        assert!(matches!(tenants.resolve(&caller(anon(), Some("../a")), Access::Read), Err(TenantError::Invalid(_))));
        // Reads create nothing; writes open a store of the tenant's own.
        assert!(!dir.path().join(TENANTS_DIR).join("x").exists());
        assert_eq!(name(&caller(anon(), Some("x")), Access::Write).unwrap(), "x");
        assert!(dir.path().join(TENANTS_DIR).join("x").is_dir());
        let required = tempfile::tempdir().unwrap();
        let strict = open(required.path(), true);
        assert_eq!(strict.resolve(&caller(anon(), None), Access::Read).err(), Some(TenantError::Missing));
        assert!(strict.resolve(&caller(bound("a"), None), Access::Read).is_ok());
    }

    #[test]
    fn the_bucket_refills_at_its_rate_and_passes_a_batch_larger_than_a_second_when_full() {
        let mut bucket = TokenBucket::new(100);
        let t0 = bucket.at;
        assert!(bucket.take(1000, t0));
        assert!(!bucket.take(1, t0));
        assert!(!bucket.take(60, t0 + Duration::from_millis(500)));
        assert!(bucket.take(50, t0 + Duration::from_millis(1000)));
    }
}
