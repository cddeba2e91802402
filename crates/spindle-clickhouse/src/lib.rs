//! ClickHouse storage behind [`spindle_store::TraceStore`]: the schema of ADR 018, created
//! by versioned migrations when a store opens, spoken to over ClickHouse's HTTP interface.
//!
//! Every span is kept in typed columns that queries filter on, plus a blob of what they
//! cannot hold (events, links, attribute order, …), so `get_trace` rebuilds exactly what
//! was appended, and searches push service, time and duration into SQL, then test the
//! candidates with the query's own span matcher: answers equal the embedded store's. Duplicates (a batch appended twice, as an at-least-once
//! writer does) are stored and dropped when read.

mod blob;
mod rowbinary;
mod scan;
mod schema;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use spindle_model::{dependency_edges, links_from_edges, AttributeValue, DependencyLink, Span, SpanKind, TraceId};
use spindle_store::{
    MinuteBucket, Operation, RedBucket, RowFields, SpanFields, SpanRow, StoreError, TraceQuery, TraceStore,
};

use blob::{Decoder, Encoder, Row, SPAN_COLUMNS};
use rowbinary::{Reader, Writer};

pub use schema::{SchemaTarget, ServerVersion, Statements, MAX_HOT_KEY_BYTES, MIGRATIONS};

/// Where a store connects and which database holds its tables.
#[derive(Debug, Clone)]
pub struct ClickHouseOptions {
    /// The HTTP interface this process queries and inserts through, e.g.
    /// `http://127.0.0.1:8123`.
    pub url: String,
    /// Created when missing.
    pub database: String,
    /// Per request; a query running longer fails with an error naming ClickHouse.
    pub timeout: Duration,
    /// Spread the data over the shards of a cluster (`Distributed` tables); `None` keeps
    /// everything on the server at `url`.
    pub cluster: Option<Cluster>,
    /// The ClickHouse user and password, sent with every request (HTTP basic auth); `None`
    /// is ClickHouse's `default` user without a password.
    pub credentials: Option<(String, String)>,
    /// PEM certificates trusted for `https://` URLs besides the system's roots (a private CA).
    pub ca_pem: Option<Vec<u8>>,
    /// Attribute keys given dedicated columns at open (`schema::hot_columns`), which
    /// searches and group-bys by them read instead of the attribute arrays.
    pub hot_attributes: Vec<String>,
}

/// A ClickHouse cluster as its servers' `remote_servers` config names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// The cluster's name in `remote_servers`.
    pub name: String,
    /// The HTTP interface of every node, where the store creates the database and the
    /// local tables at open (there is no `ON CLUSTER` without ZooKeeper) and drops days.
    pub shard_urls: Vec<String>,
}

impl ClickHouseOptions {
    pub fn new(url: impl Into<String>, database: impl Into<String>) -> Self {
        ClickHouseOptions {
            url: url.into(),
            database: database.into(),
            timeout: Duration::from_secs(30),
            cluster: None,
            credentials: None,
            ca_pem: None,
            hot_attributes: Vec::new(),
        }
    }

    /// An HTTP client for these options' servers: their CA trusted, `timeout` per request.
    pub fn client(&self, timeout: Duration) -> Result<reqwest::blocking::Client, StoreError> {
        let mut builder = reqwest::blocking::Client::builder().timeout(timeout);
        if let Some(pem) = &self.ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| http_error(&self.url, format!("CA file: {e}")))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        builder.build().map_err(|e| http_error(&self.url, e.to_string()))
    }

    /// `request` with these options' credentials.
    pub fn authorize(&self, request: reqwest::blocking::RequestBuilder) -> reqwest::blocking::RequestBuilder {
        match &self.credentials {
            Some((user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        }
    }

    /// Cluster mode: queries and inserts through `url`, tables on every shard.
    pub fn with_cluster(mut self, name: impl Into<String>, shard_urls: Vec<String>) -> Self {
        self.cluster = Some(Cluster { name: name.into(), shard_urls });
        self
    }
}

/// A [`TraceStore`] over one ClickHouse database, on one server or spread over a cluster.
pub struct ClickHouseStore {
    client: reqwest::blocking::Client,
    url: String,
    database: String,
    version: ServerVersion,
    target: SchemaTarget,
    /// Every node holding the database's tables: `url` alone, or each shard.
    nodes: Vec<String>,
    /// URL parameters of every request (ClickHouse settings).
    settings: Vec<(&'static str, &'static str)>,
    /// Credentials and CA, as opened with.
    access: ClickHouseOptions,
    /// Attribute keys with dedicated columns, as the spans table had at open (any instance
    /// may have added them).
    hot: BTreeSet<String>,
}

/// Names that go into SQL unquoted (database, cluster): letters, digits, underscores.
fn check_name(what: &str, name: &str) -> Result<(), StoreError> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(StoreError::Encode(format!(
            "ClickHouse {what} name {name:?} must be letters, digits and underscores"
        )));
    }
    Ok(())
}

fn trim_url(url: &str) -> String {
    url.trim_end_matches('/').to_string()
}

/// Dates are days since 1970 in a `UInt16`; later spans share the last day.
fn day_of(unix_nano: u64) -> u16 {
    (unix_nano / 86_400_000_000_000).min(u64::from(u16::MAX)) as u16
}

/// `YYYY-MM-DD` of a day number, for comparisons with `Date` columns (civil-from-days).
fn date_literal(day: u16) -> String {
    let z = i64::from(day) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("'{y:04}-{m:02}-{d:02}'")
}

/// The last day ClickHouse 18.16 parses and compares as a `Date` (2105-12-31); bounds
/// past it are left out, and the `start_ns` bounds beside them decide alone.
const LAST_DATE_DAY: u16 = 49_672;

/// Partition pruning for spans started in `[min, max]` nanoseconds.
fn day_filter(min: u64, max: u64) -> String {
    let (first, last) = (day_of(min).min(LAST_DATE_DAY), day_of(max));
    let mut filter = format!("day >= {}", date_literal(first));
    if last <= LAST_DATE_DAY {
        filter.push_str(&format!(" AND day <= {}", date_literal(last)));
    }
    filter
}

/// Partition and primary-key pruning for spans started in any of `windows` (inclusive
/// `[first, last]` nanoseconds), overlapping ones merged. Each window stays a range of its
/// own: the primary key then reads a few granules per trace, where one range over all of
/// them would read every granule between.
fn start_windows(windows: impl IntoIterator<Item = (u64, u64)>) -> String {
    let mut windows: Vec<(u64, u64)> = windows.into_iter().collect();
    windows.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (first, last) in windows {
        match merged.last_mut() {
            Some(open) if first <= open.1 => open.1 = open.1.max(last),
            _ => merged.push((first, last)),
        }
    }
    let terms: Vec<String> = merged
        .into_iter()
        .map(|(min, max)| format!("({} AND start_ns >= {min} AND start_ns <= {max})", day_filter(min, max)))
        .collect();
    if terms.is_empty() {
        return "0".to_string();
    }
    format!("({})", terms.join(" OR "))
}

/// A ClickHouse string literal of arbitrary bytes.
fn literal(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('\'');
    for &b in bytes {
        match b {
            b'\'' => out.push_str("\\'"),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02X}")),
        }
    }
    out.push('\'');
    out
}

/// Trace ids are stored big-endian, so that byte order is numeric order.
fn trace_literal(id: TraceId) -> String {
    literal(&id.0.to_be_bytes())
}

fn kind_code(kind: SpanKind) -> u8 {
    kind.to_otlp() as u8
}

/// Keeps the first span of each span id: appends repeated by a retrying writer leave
/// identical copies, and a trace has one span per id.
fn dedupe(spans: Vec<Span>) -> Vec<Span> {
    let mut seen = BTreeSet::new();
    spans.into_iter().filter(|s| seen.insert(s.span_id)).collect()
}

impl ClickHouseStore {
    /// Connects, creates the database when missing and runs the migrations it lacks: on
    /// the server at `url`, or in cluster mode on every shard (each node records its own
    /// migrations), then checks that the tables are of the mode asked for.
    pub fn open(options: ClickHouseOptions) -> Result<Self, StoreError> {
        check_name("database", &options.database)?;
        let url = trim_url(&options.url);
        let mut nodes = vec![url.clone()];
        // Reads by a list of trace ids (a search's matches, a page of traces) spell the ids
        // out in the query, which may pass the default 256 KiB.
        let mut settings = vec![("max_query_size", "16777216")];
        if let Some(cluster) = &options.cluster {
            check_name("cluster", &cluster.name)?;
            if cluster.shard_urls.is_empty() {
                return Err(StoreError::Encode(format!("ClickHouse cluster {:?} lists no shard URLs", cluster.name)));
            }
            nodes = cluster.shard_urls.iter().map(|u| trim_url(u)).collect();
            if !nodes.contains(&url) {
                // A node that only queries still needs the Distributed tables.
                nodes.push(url.clone());
            }
            // An insert is acknowledged once every shard has its rows, not when the
            // initiator has queued them for a later send.
            settings.push(("insert_distributed_sync", "1"));
            // Subqueries over Distributed tables read each shard's local table: traces are
            // sharded by id, so a trace and its index rows are always on the same shard.
            settings.push(("distributed_product_mode", "local"));
        }
        let client = options.client(options.timeout)?;
        let access = options.clone();
        let mut store = ClickHouseStore {
            access,
            client,
            url,
            database: options.database,
            version: ServerVersion::default(),
            target: SchemaTarget { version: ServerVersion::default(), cluster: None },
            nodes,
            settings,
            hot: BTreeSet::new(),
        };
        // The schema follows the oldest node: every node must accept every statement.
        let mut version: Option<ServerVersion> = None;
        for node in &store.nodes {
            let v = ServerVersion::parse(store.text_on(node, "SELECT version()", false)?.trim());
            version = Some(version.map_or(v, |old| old.min(v)));
        }
        store.version = version.unwrap_or_default();
        store.target = SchemaTarget {
            version: store.version,
            cluster: options.cluster.as_ref().map(|c| (c.name.clone(), store.database.clone())),
        };
        for node in &store.nodes {
            if let Some(cluster) = &options.cluster {
                let known = store.text_on(
                    node,
                    &format!(
                        "SELECT count() FROM system.clusters WHERE cluster = {}",
                        literal(cluster.name.as_bytes())
                    ),
                    false,
                )?;
                if known.trim() == "0" {
                    return Err(http_error(
                        node,
                        format!("no cluster {:?} in this server's remote_servers configuration", cluster.name),
                    ));
                }
            }
            store.execute_on(node, &format!("CREATE DATABASE IF NOT EXISTS {}", store.database), false)?;
            schema::migrate(&store, node, &store.target)?;
            store.check_mode(node)?;
            for key in &options.hot_attributes {
                schema::add_hot_columns(&store, node, key)?;
            }
        }
        store.hot = schema::hot_keys(&store)?;
        Ok(store)
    }

    /// The attribute keys with dedicated columns this store reads.
    pub fn hot_attributes(&self) -> &BTreeSet<String> {
        &self.hot
    }

    pub(crate) fn schema_target(&self) -> &SchemaTarget {
        &self.target
    }

    pub(crate) fn database_name(&self) -> &str {
        &self.database
    }

    /// `IF NOT EXISTS` leaves a table of the other mode in place: refuse to open a
    /// single-server database as a cluster's, or the reverse, rather than write past it.
    fn check_mode(&self, node: &str) -> Result<(), StoreError> {
        let engine = self.text_on(
            node,
            &format!(
                "SELECT engine FROM system.tables WHERE database = {} AND name = 'spans'",
                literal(self.database.as_bytes())
            ),
            false,
        )?;
        let distributed = engine.trim() == "Distributed";
        if distributed != self.target.cluster.is_some() {
            return Err(StoreError::DataFormat {
                path: format!("ClickHouse at {node}, database {}", self.database),
                message: format!(
                    "its spans table is {}, but the store was opened {}",
                    engine.trim(),
                    if distributed { "without a cluster" } else { "in cluster mode" }
                ),
            });
        }
        Ok(())
    }

    /// The oldest server version among the nodes, as `SELECT version()` gave it at open;
    /// the schema's conditional parts follow it.
    pub fn server_version(&self) -> ServerVersion {
        self.version
    }

    /// Migration versions recorded as applied on the server at `url`, ascending.
    pub fn applied_migrations(&self) -> Result<Vec<u32>, StoreError> {
        schema::applied(self, &self.url)
    }

    /// Migration versions recorded on each node (each shard in cluster mode), ascending.
    pub fn applied_migrations_by_node(&self) -> Result<Vec<(String, Vec<u32>)>, StoreError> {
        self.nodes.iter().map(|node| Ok((node.clone(), schema::applied(self, node)?))).collect()
    }

    /// Keeps `days` days of spans (and their trace-id index rows) by `TTL`, on every node,
    /// or with `None` keeps everything. Returns `false` when the server has no `TTL` (before
    /// 19.6, as Debian's 18.16): the caller must then call [`Self::drop_days_before`]
    /// itself. Removing a TTL needs 20.10.
    pub fn set_retention(&self, days: Option<u32>) -> Result<bool, StoreError> {
        if !self.version.has_ttl() {
            return Ok(false);
        }
        if days.is_none() && !self.version.has_remove_ttl() {
            return Err(http_error(&self.url, "removing a TTL needs ClickHouse 20.10 or later".into()));
        }
        for node in &self.nodes {
            for statement in schema::retention_statements(&self.target, days) {
                self.execute_on(node, &statement, true)?;
            }
        }
        Ok(true)
    }

    /// Drops from `spans` and `trace_id_ts` every day that ended before `cutoff_unix_nano`,
    /// whole partitions at a time: retention on servers without `TTL`. In cluster mode the
    /// partitions of the local tables go, on every node. Returns how many partitions went
    /// (summed over the nodes). A trace's index row goes with the day of its latest span,
    /// so a trace crossing the cutoff stays readable by id with the spans it has left.
    pub fn drop_days_before(&self, cutoff_unix_nano: u64) -> Result<usize, StoreError> {
        let tables = self.target.retained_tables();
        let mut dropped = 0;
        for node in &self.nodes {
            let text = self.text_on(
                node,
                &format!(
                    "SELECT DISTINCT table, partition_id FROM system.parts WHERE database = {} \
                     AND table IN ({}, {}) AND active AND partition < {}",
                    literal(self.database.as_bytes()),
                    literal(tables[0].as_bytes()),
                    literal(tables[1].as_bytes()),
                    date_literal(day_of(cutoff_unix_nano).min(LAST_DATE_DAY))
                ),
                false,
            )?;
            for line in text.lines() {
                let Some((table, id)) = line.split_once('\t') else { continue };
                if !tables.iter().any(|t| t == table) || !id.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(http_error(node, format!("unexpected partition row {line:?}")));
                }
                self.execute_on(node, &format!("ALTER TABLE {table} DROP PARTITION ID '{id}'"), true)?;
                dropped += 1;
            }
        }
        Ok(dropped)
    }

    /// Rows in the spans table, duplicates included: what a retried append costs.
    pub fn stored_span_rows(&self) -> Result<u64, StoreError> {
        let text = self.text("SELECT count() FROM spans", true)?;
        text.trim().parse().map_err(|_| http_error(&self.url, format!("count() answered {text:?}")))
    }

    /// Sends `query` to the server at `url` with `data` (an insert's rows) or, without
    /// data, the query alone as the body: URLs have a length limit that a query's literals
    /// may pass.
    fn post(&self, query: &str, data: Vec<u8>, in_database: bool) -> Result<Vec<u8>, StoreError> {
        self.post_to(&self.url, query, data, in_database)
    }

    /// [`Self::post`] to any node of the store.
    fn post_to(&self, node: &str, query: &str, data: Vec<u8>, in_database: bool) -> Result<Vec<u8>, StoreError> {
        let mut params: Vec<(&str, &str)> = self.settings.clone();
        if in_database {
            params.push(("database", &self.database));
        }
        let body = if data.is_empty() {
            query.as_bytes().to_vec()
        } else {
            params.push(("query", query));
            data
        };
        let response = self
            .access
            .authorize(self.client.post(node))
            .query(&params)
            .body(body)
            .send()
            .map_err(|e| http_error(node, e.without_url().to_string()))?;
        let status = response.status();
        let bytes = response.bytes().map_err(|e| http_error(node, e.without_url().to_string()))?;
        if !status.is_success() {
            let message = String::from_utf8_lossy(&bytes);
            return Err(http_error(node, format!("{status}: {}", message.trim())));
        }
        Ok(bytes.to_vec())
    }

    /// Runs a statement that returns nothing (DDL, `INSERT ... VALUES`) on `node`.
    pub(crate) fn execute_on(&self, node: &str, sql: &str, in_database: bool) -> Result<(), StoreError> {
        self.post_to(node, sql, Vec::new(), in_database).map(|_| ())
    }

    pub(crate) fn text_on(&self, node: &str, sql: &str, in_database: bool) -> Result<String, StoreError> {
        let bytes = self.post_to(node, sql, Vec::new(), in_database)?;
        String::from_utf8(bytes).map_err(|_| http_error(node, "answer is not UTF-8".into()))
    }

    pub(crate) fn text(&self, sql: &str, in_database: bool) -> Result<String, StoreError> {
        self.text_on(&self.url, sql, in_database)
    }

    /// Runs a `SELECT` and returns its rows in `RowBinary`.
    fn rows(&self, sql: &str) -> Result<Vec<u8>, StoreError> {
        self.post(&format!("{sql} FORMAT RowBinary"), Vec::new(), true)
    }

    fn insert(&self, table_and_columns: &str, rows: Writer) -> Result<(), StoreError> {
        self.post(&format!("INSERT INTO {table_and_columns} FORMAT RowBinary"), rows.into_bytes(), true).map(|_| ())
    }

    fn spans_where(&self, filter: &str) -> Result<Vec<Span>, StoreError> {
        self.spans_selected(&format!("WHERE {filter}"))
    }

    /// The spans of `SELECT … FROM spans {clause}`, where `clause` is a `WHERE`, or a
    /// `PREWHERE` on narrow columns that drops most rows before the wide ones (attribute
    /// arrays, blob) are read and tested, then a `WHERE`.
    fn spans_selected(&self, clause: &str) -> Result<Vec<Span>, StoreError> {
        let bytes = self.rows(&format!("SELECT {SPAN_COLUMNS} FROM spans {clause}"))?;
        let mut spans = Vec::new();
        self.read_spans(&bytes, &mut |span| spans.push(span))?;
        Ok(spans)
    }

    /// Rebuilds the spans of an answer to `SELECT` [`SPAN_COLUMNS`].
    fn read_spans(&self, bytes: &[u8], visit: &mut dyn FnMut(Span)) -> Result<(), StoreError> {
        let mut reader = Reader::new(bytes);
        let mut decoder = Decoder::default();
        while !reader.is_empty() {
            let row = Row::read(&mut reader).map_err(|e| self.malformed(e))?;
            visit(decoder.span(row)?);
        }
        Ok(())
    }

    fn malformed(&self, what: &str) -> StoreError {
        http_error(&self.url, format!("malformed RowBinary answer: {what}"))
    }

    /// The earliest and latest span start of each of `trace_ids` that is stored, from the
    /// trace-id index (ordered by id, so a lookup reads a granule per id).
    fn trace_ranges(&self, trace_ids: &[TraceId]) -> Result<HashMap<TraceId, (u64, u64)>, StoreError> {
        let ids: BTreeSet<String> = trace_ids.iter().map(|id| trace_literal(*id)).collect();
        let bytes = self.rows(&format!(
            "SELECT trace_id, min(min_start), max(max_start) FROM trace_id_ts WHERE trace_id IN ({}) GROUP BY trace_id",
            ids.into_iter().collect::<Vec<_>>().join(", ")
        ))?;
        let mut reader = Reader::new(&bytes);
        let mut out = HashMap::new();
        while !reader.is_empty() {
            let id = reader.trace_id().map_err(|e| self.malformed(e))?;
            let first = reader.u64().map_err(|e| self.malformed(e))?;
            let last = reader.u64().map_err(|e| self.malformed(e))?;
            out.insert(id, (first, last));
        }
        Ok(out)
    }

    /// `(trace id, earliest start)` of the traces `trace_filter` selects from `trace_id_ts`.
    fn trace_starts(&self, trace_filter: &str, limit: Option<usize>) -> Result<Vec<(u64, TraceId)>, StoreError> {
        let limit = limit.map(|n| format!(" ORDER BY first DESC, trace_id DESC LIMIT {n}")).unwrap_or_default();
        let bytes = self.rows(&format!(
            "SELECT trace_id, min(min_start) AS first FROM trace_id_ts WHERE {trace_filter} GROUP BY trace_id{limit}"
        ))?;
        let mut reader = Reader::new(&bytes);
        let mut out = Vec::new();
        while !reader.is_empty() {
            let id = reader.trace_id().map_err(|e| self.malformed(e))?;
            let first = reader.u64().map_err(|e| self.malformed(e))?;
            out.push((first, id));
        }
        Ok(out)
    }
}

fn http_error(url: &str, message: String) -> StoreError {
    StoreError::Io { path: format!("ClickHouse at {url}"), source: std::io::Error::other(message) }
}

/// The SQL filter of what a query asks that typed columns answer exactly.
fn span_filter(q: &TraceQuery) -> String {
    let (typed, attributes) = span_filter_parts(q);
    format!("{typed} AND {attributes}")
}

/// [`span_filter`] as `PREWHERE` the typed columns `WHERE` the attribute pre-filter, in
/// parts that together select each row once: with attribute pairs, rows whose typed arrays
/// and `event_keys` hold every key (`typed_only`) are tested on those alone, and only the
/// rest on the blob too, which is then read for the granules of candidates only.
///
/// A pair whose key has dedicated columns ([`schema::hot_column`]) is tested on those
/// first, in one part: they say whether the key is a string span attribute alone (then
/// compared) or may be anywhere else (then the row stays a candidate).
fn span_clauses(q: &TraceQuery, hot: &BTreeSet<String>) -> Vec<String> {
    let (typed, attributes) = span_filter_parts(q);
    let pairs: Vec<(&String, &String)> =
        q.attributes.iter().filter(|(k, _)| !DERIVED_KEYS.contains(&k.as_str())).map(|(k, v)| (k, v)).collect();
    if pairs.is_empty() {
        return vec![format!("PREWHERE {typed} WHERE {attributes}")];
    }
    let hot_pairs: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| hot.contains(k.as_str()))
        .map(|(k, v)| {
            let (value, place) = (schema::hot_column(k), schema::hot_place_column(k));
            format!("(({place} = 1 AND {value} = {}) OR {place} = 2)", literal(v.as_bytes()))
        })
        .collect();
    if !hot_pairs.is_empty() {
        return vec![format!("PREWHERE {typed} AND {} WHERE {attributes}", hot_pairs.join(" AND "))];
    }
    let typed_only: Vec<String> = pairs.iter().map(|(k, v)| attribute_prefilter(k, v, false)).collect();
    vec![
        format!("PREWHERE {typed} AND typed_only = 1 WHERE {}", typed_only.join(" AND ")),
        format!("PREWHERE {typed} AND typed_only = 0 WHERE {attributes}"),
    ]
}

/// The conditions on the typed columns, and the attribute pre-filter (`1` without pairs).
fn span_filter_parts(q: &TraceQuery) -> (String, String) {
    let (min, max) = (q.start_time_min_unix_nano, q.start_time_max_unix_nano);
    let mut filter = format!("{} AND start_ns >= {min} AND start_ns <= {max}", day_filter(min, max));
    if let Some(service) = &q.service {
        filter.push_str(&format!(" AND service = {}", literal(service.as_bytes())));
    }
    if let Some(name) = &q.operation {
        filter.push_str(&format!(" AND name = {}", literal(name.as_bytes())));
    }
    if let Some(kind) = q.span_kind {
        filter.push_str(&format!(" AND kind = {}", kind_code(kind)));
    }
    if let Some(status) = q.status {
        filter.push_str(&format!(" AND status_code = {}", status.to_otlp()));
    }
    if let Some(d) = q.duration_min_nanos {
        filter.push_str(&format!(" AND duration_ns >= {d}"));
    }
    if let Some(d) = q.duration_max_nanos {
        filter.push_str(&format!(" AND duration_ns <= {d}"));
    }
    let mut attributes = String::from("1");
    for (key, value) in q.attributes.iter().filter(|(k, _)| !DERIVED_KEYS.contains(&k.as_str())) {
        attributes.push_str(&format!(" AND {}", attribute_prefilter(key, value, true)));
    }
    (filter, attributes)
}

/// Keys a search matches on the span itself (kind, status, scope, events' names) besides
/// its attributes (`spindle_store`'s derived tags): no column pre-filters them.
const DERIVED_KEYS: [&str; 7] = [
    spindle_model::semconv::JAEGER_SPAN_KIND,
    spindle_model::semconv::JAEGER_ERROR,
    spindle_model::semconv::JAEGER_STATUS_CODE,
    spindle_model::semconv::JAEGER_STATUS_DESCRIPTION,
    spindle_model::semconv::JAEGER_SCOPE_NAME,
    spindle_model::semconv::JAEGER_SCOPE_VERSION,
    spindle_model::semconv::JAEGER_EVENT,
];

/// A condition every span matching `key=value` (not a derived key) meets, so SQL drops
/// most others before their blobs are decoded: a string span attribute key and value both
/// present (cheaper than pairing them, which the span matcher does on what is left), or the
/// key anywhere a string attribute cannot be compared in SQL — a typed non-string
/// attribute, a resource attribute, an event's attribute, and with `blob` the blob (bytes
/// and array values, non-string resource attributes; a version 1 blob holds every key).
/// The span matcher decides on the rest.
fn attribute_prefilter(key: &str, value: &str, blob: bool) -> String {
    let (k, v) = (literal(key.as_bytes()), literal(value.as_bytes()));
    let last = if blob { format!("position(span, {k}) > 0") } else { format!("has(event_keys, {k})") };
    format!(
        "((has(str_keys, {k}) AND has(str_values, {v})) OR has(int_keys, {k}) \
         OR has(bool_keys, {k}) OR has(double_keys, {k}) OR has(resource_keys, {k}) OR {last})"
    )
}

impl TraceStore for ClickHouseStore {
    fn append(&self, spans: Vec<Span>) -> Result<(), StoreError> {
        if spans.is_empty() {
            return Ok(());
        }
        // The trace-id index and the catalog are the server's: materialized views fill
        // them from this insert (migration 4).
        let mut rows = Writer::default();
        let mut blobs = Encoder::default();
        for span in &spans {
            write_span_row(&mut rows, span, &mut blobs)?;
        }
        self.insert(schema::SPAN_INSERT, rows)
    }

    fn get_trace(&self, trace_id: TraceId) -> Result<Vec<Span>, StoreError> {
        // One round trip: the server runs the scalar subqueries on the trace-id index first
        // and prunes the spans' primary key with their answers (an unknown trace gives 0 and
        // reads nothing). On a cluster each shard reads its own index, the trace's shard
        // alone finding a range. No day bound: `day` is the UTC day, and the server's
        // time zone may differ; the start bounds prune every part's index alike.
        let id = trace_literal(trace_id);
        let spans = self.spans_selected(&format!(
            "PREWHERE trace_id = {id} WHERE start_ns >= (SELECT min(min_start) FROM trace_id_ts WHERE trace_id = {id}) \
             AND start_ns <= (SELECT max(max_start) FROM trace_id_ts WHERE trace_id = {id})"
        ))?;
        Ok(dedupe(spans))
    }

    fn get_traces(&self, trace_ids: &[TraceId]) -> Result<Vec<Vec<Span>>, StoreError> {
        if trace_ids.is_empty() {
            return Ok(Vec::new());
        }
        let ranges = self.trace_ranges(trace_ids)?;
        let mut by_id: HashMap<TraceId, Vec<Span>> = HashMap::new();
        if !ranges.is_empty() {
            let ids: Vec<String> = ranges.keys().map(|id| trace_literal(*id)).collect();
            let spans = self.spans_selected(&format!(
                "PREWHERE trace_id IN ({}) WHERE {}",
                ids.join(", "),
                start_windows(ranges.values().copied())
            ))?;
            for span in spans {
                by_id.entry(span.trace_id).or_default().push(span);
            }
        }
        if trace_ids.iter().collect::<HashSet<_>>().len() < trace_ids.len() {
            // An id asked twice gets its spans twice.
            return Ok(trace_ids.iter().map(|id| dedupe(by_id.get(id).cloned().unwrap_or_default())).collect());
        }
        Ok(trace_ids.iter().map(|id| dedupe(by_id.remove(id).unwrap_or_default())).collect())
    }

    fn find_trace_ids(&self, query: &TraceQuery) -> Result<Vec<TraceId>, StoreError> {
        query.check()?;
        if query.limit == 0 || query.start_time_min_unix_nano > query.start_time_max_unix_nano {
            return Ok(Vec::new());
        }
        let filter = span_filter(query);
        let mut found = if query.attributes.is_empty() {
            // The typed columns answer the whole query: ids, order and limit come from SQL.
            self.trace_starts(&format!("trace_id IN (SELECT trace_id FROM spans WHERE {filter})"), Some(query.limit))?
        } else {
            // Attribute pairs match where Jaeger looks (span, resource, events, derived
            // tags): the query's own matcher decides on the candidates' spans.
            let mut candidates = Vec::new();
            for clause in span_clauses(query, &self.hot) {
                candidates.extend(self.spans_selected(&clause)?);
            }
            query.check()?;
            let ids: BTreeSet<TraceId> =
                candidates.iter().filter(|s| query.matches_span(s)).map(|s| s.trace_id).collect();
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let ids: Vec<TraceId> = ids.into_iter().collect();
            self.trace_ranges(&ids)?.into_iter().map(|(id, (first, _))| (first, id)).collect()
        };
        found.sort_unstable_by(|a, b| b.cmp(a));
        found.truncate(query.limit);
        Ok(found.into_iter().map(|(_, id)| id).collect())
    }

    fn services(&self) -> Result<Vec<String>, StoreError> {
        let bytes = self.rows("SELECT DISTINCT service FROM operations")?;
        let mut reader = Reader::new(&bytes);
        let mut services = Vec::new();
        while !reader.is_empty() {
            let s = reader.string().map_err(|e| self.malformed(e))?;
            services.push(String::from_utf8_lossy(s).into_owned());
        }
        services.sort();
        services.dedup();
        Ok(services)
    }

    fn operations(&self, service: &str, kind: Option<SpanKind>) -> Result<Vec<Operation>, StoreError> {
        let kind_filter = kind.map(|k| format!(" AND kind = {}", kind_code(k))).unwrap_or_default();
        let bytes = self.rows(&format!(
            "SELECT DISTINCT name, kind FROM operations WHERE service = {}{kind_filter}",
            literal(service.as_bytes())
        ))?;
        let mut reader = Reader::new(&bytes);
        let mut operations = Vec::new();
        while !reader.is_empty() {
            let name = String::from_utf8_lossy(reader.string().map_err(|e| self.malformed(e))?).into_owned();
            let kind = SpanKind::from_otlp(i32::from(reader.u8().map_err(|e| self.malformed(e))?));
            operations.push(Operation { name, kind });
        }
        operations.sort();
        operations.dedup();
        Ok(operations)
    }

    fn dependencies(&self, start_unix_nano: u64, end_unix_nano: u64) -> Result<Vec<DependencyLink>, StoreError> {
        let mut edges = BTreeMap::new();
        self.scan_whole_traces(start_unix_nano, end_unix_nano, &mut |trace| dependency_edges(trace, &mut edges))?;
        Ok(links_from_edges(edges))
    }

    /// An acknowledged insert is in ClickHouse's parts; there is nothing to flush here.
    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn scan_spans(&self, query: &TraceQuery, visit: &mut dyn FnMut(&Span)) -> Result<(), StoreError> {
        self.scan_matching(query, visit)
    }

    fn scan_rows(
        &self,
        query: &TraceQuery,
        fields: &RowFields,
        visit: &mut dyn FnMut(&SpanRow),
    ) -> Result<(), StoreError> {
        self.scan_span_rows(query, fields, visit)
    }

    fn scan_traces(
        &self,
        start_unix_nano: u64,
        end_unix_nano: u64,
        _fields: &SpanFields,
        visit: &mut dyn FnMut(&[Span]),
    ) -> Result<(), StoreError> {
        self.scan_whole_traces(start_unix_nano, end_unix_nano, visit)
    }

    fn red_buckets(
        &self,
        query: &TraceQuery,
        group_by: Option<&str>,
        step_nanos: u64,
        visit: &mut dyn FnMut(&RedBucket),
    ) -> Result<bool, StoreError> {
        self.red_statistics(query, group_by, step_nanos, visit)
    }

    fn minute_buckets(
        &self,
        start_unix_nano: u64,
        end_unix_nano: u64,
        services: &[String],
        kinds: &[SpanKind],
    ) -> Result<Option<Vec<MinuteBucket>>, StoreError> {
        self.minute_statistics(start_unix_nano, end_unix_nano, services, kinds).map(Some)
    }
}

/// One row of `spans`, in the column order of [`schema::SPAN_INSERT`].
fn write_span_row(rows: &mut Writer, span: &Span, blobs: &mut Encoder) -> Result<(), StoreError> {
    let start = span.start_time_unix_nano;
    rows.u16(day_of(start))
        .u64(start)
        .trace_id(span.trace_id)
        .u64(span.span_id.0)
        .u64(span.parent_span_id.0)
        .string(span.service_name().as_bytes())
        .string(span.name.as_bytes())
        .u8(kind_code(span.kind))
        .u64(span.duration_nanos())
        .u8(span.status.code.to_otlp() as u8);
    write_attribute_columns(rows, span);
    rows.string(&blobs.encode(span)?);
    rows.u8(u8::from(typed_only(span)));
    let mut event_keys: Vec<&[u8]> =
        span.events.iter().flat_map(|e| e.attributes.iter().map(|kv| kv.key.as_bytes())).collect();
    event_keys.sort_unstable();
    event_keys.dedup();
    rows.strings(&event_keys);
    Ok(())
}

/// Whether the typed arrays and `event_keys` say where every attribute a read looks for is:
/// every span attribute a string, int, bool or double, no key twice among them (the first
/// of a key could then be in any array, which `Span::group_text` reads), and every
/// resource attribute a string (`resource_keys` holds only strings). Searches then need not
/// look into the blob, nor group-bys rebuild the span.
fn typed_only(span: &Span) -> bool {
    let typed = |v: &AttributeValue| {
        matches!(
            v,
            AttributeValue::String(_) | AttributeValue::Int(_) | AttributeValue::Bool(_) | AttributeValue::Double(_)
        )
    };
    let attributes = &span.attributes;
    attributes.iter().all(|kv| typed(&kv.value))
        && if attributes.len() <= 16 {
            attributes.iter().enumerate().all(|(i, kv)| attributes[..i].iter().all(|other| other.key != kv.key))
        } else {
            let mut keys: Vec<&str> = attributes.iter().map(|kv| kv.key.as_str()).collect();
            keys.sort_unstable();
            keys.windows(2).all(|pair| pair[0] != pair[1])
        }
        && span.resource.attributes.iter().all(|kv| matches!(kv.value, AttributeValue::String(_)))
}

/// `str_keys` to `resource_values`: the attributes the typed arrays hold; the blob holds
/// the others and the order of all.
fn write_attribute_columns(rows: &mut Writer, span: &Span) {
    let mut strings = (Vec::new(), Vec::new());
    let mut ints = (Vec::new(), Vec::new());
    let mut bools = (Vec::new(), Vec::new());
    let mut doubles = (Vec::new(), Vec::new());
    for kv in &span.attributes {
        match &kv.value {
            AttributeValue::String(s) => {
                strings.0.push(kv.key.as_bytes());
                strings.1.push(s.as_bytes());
            }
            AttributeValue::Int(i) => {
                ints.0.push(kv.key.as_bytes());
                ints.1.push(*i);
            }
            AttributeValue::Bool(b) => {
                bools.0.push(kv.key.as_bytes());
                bools.1.push(u8::from(*b));
            }
            AttributeValue::Double(d) => {
                doubles.0.push(kv.key.as_bytes());
                doubles.1.push(*d);
            }
            // Bytes, arrays and maps go to the blob.
            _ => {}
        }
    }
    rows.strings(&strings.0).strings(&strings.1);
    rows.strings(&ints.0).array_len(ints.1.len());
    for i in ints.1 {
        rows.i64(i);
    }
    rows.strings(&bools.0).array_len(bools.1.len());
    for b in bools.1 {
        rows.u8(b);
    }
    rows.strings(&doubles.0).array_len(doubles.1.len());
    for d in doubles.1 {
        rows.f64(d);
    }
    let resource: Vec<(&[u8], &[u8])> = span
        .resource
        .attributes
        .iter()
        .filter_map(|kv| kv.value.as_str().map(|v| (kv.key.as_bytes(), v.as_bytes())))
        .collect();
    rows.strings(&resource.iter().map(|r| r.0).collect::<Vec<_>>());
    rows.strings(&resource.iter().map(|r| r.1).collect::<Vec<_>>());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_numbers_print_as_dates() {
        assert_eq!(date_literal(0), "'1970-01-01'");
        assert_eq!(date_literal(20_427), "'2025-12-05'");
        assert_eq!(date_literal(u16::MAX), "'2149-06-06'");
        assert_eq!(date_literal(LAST_DATE_DAY), "'2105-12-31'");
        assert_eq!(day_filter(0, u64::MAX), "day >= '1970-01-01'");
    }

    #[test]
    fn literals_escape_quotes_backslashes_and_bytes() {
        assert_eq!(literal(b"a'b\\c"), r"'a\'b\\c'");
        assert_eq!(literal(&[0, 255]), r"'\x00\xFF'");
    }
}
