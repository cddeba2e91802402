//! Tenants' stores on ClickHouse (`storage = clickhouse`; docs/adr/019, "Query instances"):
//! one database per tenant, opened lazily on a blocking thread and kept for the life of
//! the process, so collectors → Kafka → ingesters write where query instances read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::ClickHouseSettings;
use crate::group_commit::GroupCommit;

use spindle_clickhouse::{ClickHouseOptions, ClickHouseStore};
use spindle_model::{DependencyLink, Span, SpanKind, TraceId};
use spindle_store::{
    MinuteBucket, Operation, RedBucket, RowFields, SpanFields, SpanRow, StoreError, TraceQuery, TraceStore,
};

/// The database of tenant `name`: `<prefix>_` then the name with `_` written `__`, `.`
/// written `_d` and `-` written `_h`. The mapping is one to one (each `_` of the result
/// starts a two-character escape), so two tenants never share a database, and no tenant's
/// database is the default tenant's (`<prefix>` itself).
pub fn database_of(prefix: &str, name: &str) -> String {
    let mut out = format!("{prefix}_");
    for c in name.chars() {
        match c {
            '_' => out.push_str("__"),
            '.' => out.push_str("_d"),
            '-' => out.push_str("_h"),
            c => out.push(c),
        }
    }
    out
}

/// The tenant whose database is `database`, if it is one of `prefix`'s.
pub fn tenant_of(prefix: &str, database: &str) -> Option<String> {
    let encoded = database.strip_prefix(prefix)?.strip_prefix('_')?;
    let mut name = String::new();
    let mut chars = encoded.chars();
    while let Some(c) = chars.next() {
        if c != '_' {
            name.push(c);
            continue;
        }
        name.push(match chars.next()? {
            '_' => '_',
            'd' => '.',
            'h' => '-',
            _ => return None,
        });
    }
    crate::tenancy::check_name(&name).ok().map(|()| name)
}

/// The databases of one ClickHouse server, each opened once.
pub struct Databases {
    url: String,
    prefix: String,
    /// How every store connects: URL, cluster, credentials, CA.
    options: ClickHouseOptions,
    /// Joined appends (spans, wait) for writers that do not batch themselves.
    group_commit: Option<(usize, Duration)>,
    client: reqwest::blocking::Client,
    open: Mutex<HashMap<String, Arc<ClickHouseStore>>>,
}

impl Databases {
    /// Call on a blocking thread: the client is a blocking one.
    pub fn new(settings: &ClickHouseSettings, group_commit: bool) -> anyhow::Result<Self> {
        let options = ClickHouseOptions {
            cluster: settings.cluster.clone(),
            credentials: settings.credentials.clone(),
            ca_pem: settings.ca_pem.clone(),
            hot_attributes: settings.hot_attributes.clone(),
            ..ClickHouseOptions::new(&settings.url, &settings.database)
        };
        Ok(Databases {
            url: settings.url.trim_end_matches('/').to_string(),
            prefix: settings.database.clone(),
            client: options.client(Duration::from_secs(10))?,
            options,
            group_commit: group_commit.then_some((settings.batch_spans, settings.batch_wait)),
            open: Mutex::default(),
        })
    }

    /// The store tenants write `database` through: opened at first use, with concurrent
    /// appends joined into large inserts unless the writer batches itself (an ingester).
    pub fn writer(self: &Arc<Self>, database: &str) -> Arc<dyn TraceStore> {
        let store = self.store(database, true);
        match self.group_commit {
            Some((spans, wait)) => Arc::new(GroupCommit::new(store, spans, wait)),
            None => Arc::new(store),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A store over `database`, opened at its first use; with `create` false, a missing
    /// database reads as empty and is not created.
    pub fn store(self: &Arc<Self>, database: &str, create: bool) -> LazyStore {
        LazyStore { databases: Arc::clone(self), database: database.to_string(), create }
    }

    /// The store of `database`, opening (creating, migrating) it when this process has not;
    /// `None` when it does not exist and `create` is false.
    pub fn open(&self, database: &str, create: bool) -> Result<Option<Arc<ClickHouseStore>>, StoreError> {
        if let Some(store) = self.open.lock().unwrap_or_else(|e| e.into_inner()).get(database) {
            return Ok(Some(Arc::clone(store)));
        }
        if !create && !self.exists(database)? {
            return Ok(None);
        }
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(store) = open.get(database) {
            return Ok(Some(Arc::clone(store)));
        }
        let options = ClickHouseOptions { database: database.to_string(), ..self.options.clone() };
        let store = Arc::new(ClickHouseStore::open(options)?);
        open.insert(database.to_string(), Arc::clone(&store));
        Ok(Some(store))
    }

    fn exists(&self, database: &str) -> Result<bool, StoreError> {
        let sql = format!("SELECT count() FROM system.databases WHERE name = '{database}'");
        Ok(self.text(&sql)?.trim() != "0")
    }

    /// Every tenant with a database of this prefix.
    pub fn tenants(&self) -> Result<Vec<String>, StoreError> {
        let mut names: Vec<String> = self
            .text("SELECT name FROM system.databases")?
            .lines()
            .filter_map(|db| tenant_of(&self.prefix, db))
            .collect();
        names.sort();
        Ok(names)
    }

    fn text(&self, sql: &str) -> Result<String, StoreError> {
        let error = |message: String| StoreError::Io {
            path: format!("ClickHouse at {}", self.url),
            source: std::io::Error::other(message),
        };
        let response = self
            .options
            .authorize(self.client.post(&self.url))
            .body(sql.to_string())
            .send()
            .map_err(|e| error(e.without_url().to_string()))?;
        let status = response.status();
        let text = response.text().map_err(|e| error(e.without_url().to_string()))?;
        if !status.is_success() {
            return Err(error(format!("{status}: {}", text.trim())));
        }
        Ok(text)
    }
}

/// A tenant's store on ClickHouse: its database, opened on first use (every store call
/// runs on a blocking thread).
pub struct LazyStore {
    databases: Arc<Databases>,
    database: String,
    create: bool,
}

impl LazyStore {
    fn store(&self) -> Result<Option<Arc<ClickHouseStore>>, StoreError> {
        self.databases.open(&self.database, self.create)
    }
}

impl TraceStore for LazyStore {
    fn append(&self, spans: Vec<Span>) -> Result<(), StoreError> {
        match self.store()? {
            Some(store) => store.append(spans),
            None => Err(StoreError::Closed),
        }
    }

    fn get_trace(&self, trace_id: TraceId) -> Result<Vec<Span>, StoreError> {
        self.store()?.map_or(Ok(Vec::new()), |s| s.get_trace(trace_id))
    }

    fn find_trace_ids(&self, query: &TraceQuery) -> Result<Vec<TraceId>, StoreError> {
        self.store()?.map_or(Ok(Vec::new()), |s| s.find_trace_ids(query))
    }

    fn get_traces(&self, trace_ids: &[TraceId]) -> Result<Vec<Vec<Span>>, StoreError> {
        self.store()?.map_or_else(|| Ok(vec![Vec::new(); trace_ids.len()]), |s| s.get_traces(trace_ids))
    }

    fn services(&self) -> Result<Vec<String>, StoreError> {
        self.store()?.map_or(Ok(Vec::new()), |s| s.services())
    }

    fn operations(&self, service: &str, kind: Option<SpanKind>) -> Result<Vec<Operation>, StoreError> {
        self.store()?.map_or(Ok(Vec::new()), |s| s.operations(service, kind))
    }

    fn dependencies(&self, start_unix_nano: u64, end_unix_nano: u64) -> Result<Vec<DependencyLink>, StoreError> {
        self.store()?.map_or(Ok(Vec::new()), |s| s.dependencies(start_unix_nano, end_unix_nano))
    }

    fn sync(&self) -> Result<(), StoreError> {
        // Inserts are acknowledged once ClickHouse has written them; nothing to flush.
        Ok(())
    }

    fn scan_spans(&self, query: &TraceQuery, visit: &mut dyn FnMut(&Span)) -> Result<(), StoreError> {
        self.store()?.map_or(Ok(()), |s| s.scan_spans(query, visit))
    }

    fn scan_rows(
        &self,
        query: &TraceQuery,
        fields: &RowFields,
        visit: &mut dyn FnMut(&SpanRow),
    ) -> Result<(), StoreError> {
        self.store()?.map_or(Ok(()), |s| s.scan_rows(query, fields, visit))
    }

    fn scan_traces(
        &self,
        start_unix_nano: u64,
        end_unix_nano: u64,
        fields: &SpanFields,
        visit: &mut dyn FnMut(&[Span]),
    ) -> Result<(), StoreError> {
        self.store()?.map_or(Ok(()), |s| s.scan_traces(start_unix_nano, end_unix_nano, fields, visit))
    }

    fn red_buckets(
        &self,
        query: &TraceQuery,
        group_by: Option<&str>,
        step_nanos: u64,
        visit: &mut dyn FnMut(&RedBucket),
    ) -> Result<bool, StoreError> {
        self.store()?.map_or(Ok(true), |s| s.red_buckets(query, group_by, step_nanos, visit))
    }

    fn minute_buckets(
        &self,
        start_unix_nano: u64,
        end_unix_nano: u64,
        services: &[String],
        kinds: &[SpanKind],
    ) -> Result<Option<Vec<MinuteBucket>>, StoreError> {
        // A tenant without a database has no spans: empty statistics, not the process's own.
        match self.store()? {
            Some(s) => s.minute_buckets(start_unix_nano, end_unix_nano, services, kinds),
            None => Ok(Some(Vec::new())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_databases_are_one_to_one_and_never_the_default_tenants() {
        let names = ["a", "team-a", "team_a", "team.a", "team__a", "a_h", "a-", "_", "..x", "-x"];
        let mut seen = std::collections::HashSet::new();
        for name in names {
            let db = database_of("spindle", name);
            assert!(db.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'), "{db}");
            assert!(seen.insert(db.clone()), "{name} collides: {db}");
            assert_eq!(tenant_of("spindle", &db).as_deref(), Some(name), "{db}");
        }
        assert_eq!(database_of("spindle", "team-a"), "spindle_team_ha");
        assert_eq!(tenant_of("spindle", "spindle"), None);
        assert_eq!(tenant_of("spindle", "spindle_x_z"), None);
        assert_eq!(tenant_of("spindle", "other_a"), None);
    }
}
