//! The schema of ADR 018 as versioned migrations. A store runs, at open, every migration
//! not yet recorded in `schema_migrations`, in order, on every node it writes to (one node,
//! or every shard of a cluster). Each statement is idempotent (`IF NOT EXISTS`), so a
//! migration cut short by a crash, or run by two instances opening at once, is simply run
//! again; a version recorded twice is harmless.
//!
//! One schema serves every server and both modes: a migration's statements are generated
//! from a [`SchemaTarget`] (the server's version, and the cluster if any), so newer servers
//! get codecs, skipping indexes and `LowCardinality`, and a cluster gets `<table>_local`
//! tables under `Distributed` tables of the plain names, which every query reads and writes.

use crate::{ClickHouseStore, StoreError};

/// `SELECT version()` of the server, major and minor. Features of later releases are keyed
/// on it; see ADR 018 for what each needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ServerVersion {
    pub major: u32,
    pub minor: u32,
}

impl ServerVersion {
    pub const fn new(major: u32, minor: u32) -> Self {
        ServerVersion { major, minor }
    }

    /// `18.16.1` → 18.16; unparsable parts read as 0, the oldest.
    pub fn parse(text: &str) -> Self {
        let mut parts = text.split('.').map(|p| p.trim().parse().unwrap_or(0));
        ServerVersion { major: parts.next().unwrap_or(0), minor: parts.next().unwrap_or(0) }
    }

    /// Per-column compression codecs, `Delta` among them (19.1).
    pub fn has_codecs(self) -> bool {
        self >= Self::new(19, 1)
    }

    /// `LowCardinality` without the experimental setting (19.3).
    pub fn has_low_cardinality(self) -> bool {
        self >= Self::new(19, 3)
    }

    /// Table `TTL` and `ALTER TABLE … MODIFY TTL` (19.6).
    pub fn has_ttl(self) -> bool {
        self >= Self::new(19, 6)
    }

    /// `ALTER TABLE … REMOVE TTL` (20.10).
    pub fn has_remove_ttl(self) -> bool {
        self >= Self::new(20, 10)
    }

    /// Data-skipping indexes (`minmax`, `bloom_filter`, `tokenbf_v1`) without the
    /// experimental setting: `bloom_filter` came in 19.5, the setting went in 20.1.
    pub fn has_skip_indexes(self) -> bool {
        self >= Self::new(20, 1)
    }
}

/// What the statements are generated for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaTarget {
    /// The oldest version among the nodes the statements run on.
    pub version: ServerVersion,
    /// `(cluster, database)` in cluster mode: data lives in `<table>_local` on every node,
    /// and `<table>` is a `Distributed` table over them.
    pub cluster: Option<(String, String)>,
}

impl SchemaTarget {
    /// The table that holds the rows on a node: `<table>_local` in cluster mode.
    pub fn local(&self, table: &str) -> String {
        match self.cluster {
            Some(_) => format!("{table}_local"),
            None => table.to_string(),
        }
    }

    /// Tables with rows on each node, which retention acts on.
    pub(crate) fn retained_tables(&self) -> [String; 2] {
        [self.local("spans"), self.local("trace_id_ts")]
    }

    fn text_type(&self) -> &'static str {
        if self.version.has_low_cardinality() {
            "LowCardinality(String)"
        } else {
            "String"
        }
    }

    fn codec(&self, codec: &'static str) -> Option<&'static str> {
        self.version.has_codecs().then_some(codec)
    }

    /// `CREATE TABLE` of `table`'s rows (local in cluster mode), and in cluster mode the
    /// `Distributed` table of the plain name over them, sharded by `sharding_key`.
    fn create(
        &self,
        table: &str,
        columns: &[Column],
        indexes: &[&str],
        engine: &str,
        sharding_key: &str,
    ) -> Vec<String> {
        let local = self.local(table);
        let mut definitions: Vec<String> = columns.iter().map(|c| c.definition(true)).collect();
        if self.version.has_skip_indexes() {
            definitions.extend(indexes.iter().map(|i| format!("INDEX {i}")));
        }
        let mut statements = vec![format!(
            "CREATE TABLE IF NOT EXISTS {local} (\n    {}\n) ENGINE = {engine}",
            definitions.join(",\n    ")
        )];
        if let Some((cluster, database)) = &self.cluster {
            // Plain types only: codecs and indexes belong to the tables that store data.
            let plain: Vec<String> = columns.iter().map(|c| c.definition(false)).collect();
            statements.push(format!(
                "CREATE TABLE IF NOT EXISTS {table} (\n    {}\n) ENGINE = Distributed({cluster}, {database}, {local}, {sharding_key})",
                plain.join(",\n    ")
            ));
        }
        statements
    }
}

struct Column {
    name: &'static str,
    kind: String,
    codec: Option<&'static str>,
}

impl Column {
    fn definition(&self, with_codec: bool) -> String {
        match self.codec.filter(|_| with_codec) {
            Some(codec) => format!("{} {} CODEC({codec})", self.name, self.kind),
            None => format!("{} {}", self.name, self.kind),
        }
    }
}

fn column(name: &'static str, kind: impl Into<String>, codec: Option<&'static str>) -> Column {
    Column { name, kind: kind.into(), codec }
}

/// A trace lives on one shard: trace-by-id, the trace-id index beside it and the per-trace
/// dedupe and dependency reads stay shard-local.
const TRACE_SHARDING: &str = "cityHash64(trace_id)";
const SERVICE_SHARDING: &str = "cityHash64(service)";

fn spans(t: &SchemaTarget) -> Vec<String> {
    let text = t.text_type();
    // Starts are sorted within each (service, name) run of the sort key, so their deltas
    // compress; ids are random-looking and get ZSTD alone, as does the blob.
    let time = t.codec("Delta, ZSTD(1)");
    let zstd = t.codec("ZSTD(1)");
    let keys = format!("Array({text})");
    let columns = [
        column("day", "Date", None),
        column("start_ns", "UInt64", time),
        column("trace_id", "FixedString(16)", zstd),
        column("span_id", "UInt64", zstd),
        column("parent_span_id", "UInt64", zstd),
        column("service", text, None),
        column("name", text, None),
        column("kind", "UInt8", None),
        column("duration_ns", "UInt64", zstd),
        column("status_code", "UInt8", None),
        column("str_keys", keys.clone(), None),
        column("str_values", "Array(String)", None),
        column("int_keys", keys.clone(), None),
        column("int_values", "Array(Int64)", None),
        column("bool_keys", keys.clone(), None),
        column("bool_values", "Array(UInt8)", None),
        column("double_keys", keys.clone(), None),
        column("double_values", "Array(Float64)", None),
        column("resource_keys", keys, None),
        column("resource_values", "Array(String)", None),
        column("span", "String", zstd),
    ];
    let indexes = [
        // Trace-by-id reads spans by id inside the index table's time range.
        "trace_id_bloom trace_id TYPE bloom_filter(0.01) GRANULARITY 1",
        // Duration bounds of a search skip granules of short spans.
        "duration_minmax duration_ns TYPE minmax GRANULARITY 4",
    ];
    // Granules of 1,024 rows rather than 8,192: a trace's spans sit in one granule per
    // (service, name) run, and rebuilding them reads every column of those granules, so
    // trace by id reads an eighth as much; scans read the same bytes (docs/adr/018).
    t.create(
        "spans",
        &columns,
        &indexes,
        "MergeTree() PARTITION BY day ORDER BY (service, name, start_ns) SETTINGS index_granularity = 1024",
        TRACE_SHARDING,
    )
}

fn trace_id_ts(t: &SchemaTarget) -> Vec<String> {
    let zstd = t.codec("ZSTD(1)");
    let columns = [
        column("day", "Date", None),
        column("trace_id", "FixedString(16)", None),
        column("min_start", "UInt64", zstd),
        column("max_start", "UInt64", zstd),
    ];
    t.create("trace_id_ts", &columns, &[], "MergeTree() PARTITION BY day ORDER BY trace_id", TRACE_SHARDING)
}

fn operations(t: &SchemaTarget) -> Vec<String> {
    let text = t.text_type();
    let columns = [column("service", text, None), column("name", text, None), column("kind", "UInt8", None)];
    t.create("operations", &columns, &[], "ReplacingMergeTree() ORDER BY (service, name, kind)", SERVICE_SHARDING)
}

/// The trace-id index and the catalog filled by the server from every insert into the
/// spans table, instead of by two more inserts from each writer: one insert per append, and
/// no window in which spans are stored without their index rows because a writer stopped
/// between inserts. On a cluster the views sit on each node's local tables, so a trace's
/// index rows are written where its spans are. The index row's day is the day of the
/// block's latest start, clamped as `Date` is, as writers computed it before.
fn materialized_views(t: &SchemaTarget) -> Vec<String> {
    let (spans, trace_id_ts, operations) = (t.local("spans"), t.local("trace_id_ts"), t.local("operations"));
    vec![
        format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS trace_id_ts_mv TO {trace_id_ts} AS \
             SELECT CAST(toUInt16(least(intDiv(max(start_ns), 86400000000000), 65535)) AS Date) AS day, \
             trace_id, min(start_ns) AS min_start, max(start_ns) AS max_start FROM {spans} GROUP BY trace_id"
        ),
        format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS operations_mv TO {operations} AS \
             SELECT DISTINCT service, name, kind FROM {spans}"
        ),
    ]
}

/// `typed_only`: 1 when the typed arrays and `event_keys` (the keys of the span's events'
/// attributes) say where every attribute a search or group-by looks for is (see
/// `write_span_row`), so RED statistics read two arrays instead of every attribute column
/// and the blob, and searches test the blob of no row. Rows written before read 0 and take
/// the exact, slower way.
fn typed_only(t: &SchemaTarget) -> Vec<String> {
    let mut tables = vec![t.local("spans")];
    if t.cluster.is_some() {
        tables.push("spans".to_string());
    }
    let keys = format!("Array({})", t.text_type());
    tables
        .into_iter()
        .flat_map(|table| {
            [
                format!("ALTER TABLE {table} ADD COLUMN typed_only UInt8 DEFAULT 0"),
                format!("ALTER TABLE {table} ADD COLUMN event_keys {keys}"),
            ]
        })
        .collect()
}

/// A migration's statements for a target.
pub type Statements = fn(&SchemaTarget) -> Vec<String>;

/// Version, description and statements of each migration, in order. Never change what a
/// released one creates for a server it already ran on: add the next.
pub const MIGRATIONS: &[(u32, &str, Statements)] = &[
    (1, "spans: typed hot columns, attributes by type, the whole span", spans),
    (2, "trace_id_ts: trace id to the range of its spans' start times", trace_id_ts),
    (3, "operations: service, span name and kind seen", operations),
    (4, "materialized views fill trace_id_ts and operations from each insert into spans", materialized_views),
    (5, "spans.typed_only and event_keys: where every attribute a search or group-by reads is", typed_only),
];

/// The columns [`MIGRATIONS`] gives `spans`, in the order appends write them.
pub(crate) const SPAN_INSERT: &str = "spans (day, start_ns, trace_id, span_id, parent_span_id, service, name, \
     kind, duration_ns, status_code, str_keys, str_values, int_keys, int_values, bool_keys, bool_values, \
     double_keys, double_values, resource_keys, resource_values, span, typed_only, event_keys)";

/// Per node, never distributed: each node records what it has run.
const MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version UInt32,
    description String,
    applied_at DateTime DEFAULT now()
) ENGINE = MergeTree() ORDER BY version";

pub(crate) fn applied(store: &ClickHouseStore, node: &str) -> Result<Vec<u32>, StoreError> {
    let text = store.text_on(node, "SELECT DISTINCT version FROM schema_migrations ORDER BY version", true)?;
    text.lines()
        .map(|line| {
            line.trim().parse().map_err(|_| StoreError::DataFormat {
                path: "ClickHouse schema_migrations".into(),
                message: format!("unreadable version {line:?}"),
            })
        })
        .collect()
}

/// Runs on `node` the migrations it has not recorded.
pub(crate) fn migrate(store: &ClickHouseStore, node: &str, target: &SchemaTarget) -> Result<(), StoreError> {
    store.execute_on(node, MIGRATIONS_TABLE, true)?;
    let done = applied(store, node)?;
    let newest = MIGRATIONS.last().map_or(0, |m| m.0);
    if let Some(&unknown) = done.iter().find(|&&v| v > newest) {
        return Err(StoreError::DataFormat {
            path: "ClickHouse schema_migrations".into(),
            message: format!(
                "schema version {unknown} was written by a newer release (this one knows up to {newest}); \
                 upgrade Spindle"
            ),
        });
    }
    for (version, description, statements) in MIGRATIONS.iter().filter(|m| !done.contains(&m.0)) {
        for statement in statements(target) {
            match store.execute_on(node, &statement, true) {
                // 18.16 has no `ADD COLUMN IF NOT EXISTS`: a column added by a migration cut
                // short, or by another instance opening at once, is there already.
                Err(e) if statement.contains(" ADD COLUMN ") && e.to_string().contains("Code: 44,") => {}
                other => other?,
            }
        }
        let description = crate::literal(description.as_bytes());
        store.execute_on(
            node,
            &format!("INSERT INTO schema_migrations (version, description) VALUES ({version}, {description})"),
            true,
        )?;
    }
    Ok(())
}

/// The dedicated column holding attribute `key`'s value when it is a string span
/// attribute: `hot_` and the key's bytes in hex, so any key names a column.
pub(crate) fn hot_column(key: &str) -> String {
    let hex: String = key.bytes().map(|b| format!("{b:02x}")).collect();
    format!("hot_{hex}")
}

/// The column saying where attribute `key` is in a row: 0 nowhere, 1 only as one string
/// span attribute ([`hot_column`] holds it), 2 anywhere else or not known without the
/// blob (a typed non-string or resource attribute, an event's attribute, a row that is not
/// `typed_only`).
pub(crate) fn hot_place_column(key: &str) -> String {
    format!("{}_place", hot_column(key))
}

/// Keys longer than this get no dedicated columns (their names would be unwieldy).
pub const MAX_HOT_KEY_BYTES: usize = 64;

/// Adds the dedicated columns of attribute `key` on `node` (idempotent), with a `DEFAULT`
/// the server computes at each insert from columns every writer sends, and for parts
/// written before from those columns when read: writers need not know them. (Not
/// `MATERIALIZED`: a `Distributed` table would forward the computed column to its shards,
/// which refuse it.)
pub(crate) fn add_hot_columns(store: &ClickHouseStore, node: &str, key: &str) -> Result<(), StoreError> {
    if key.is_empty() || key.len() > MAX_HOT_KEY_BYTES {
        return Err(StoreError::Encode(format!(
            "hot attribute {key:?}: keys of 1 to {MAX_HOT_KEY_BYTES} bytes get dedicated columns"
        )));
    }
    let k = crate::literal(key.as_bytes());
    let columns = [
        format!("{} String DEFAULT str_values[indexOf(str_keys, {k})]", hot_column(key)),
        format!(
            "{} UInt8 DEFAULT multiIf(typed_only = 0 OR has(int_keys, {k}) OR has(bool_keys, {k}) \
             OR has(double_keys, {k}) OR has(resource_keys, {k}) OR has(event_keys, {k}), 2, has(str_keys, {k}), 1, 0)",
            hot_place_column(key)
        ),
    ];
    let target = store.schema_target();
    let mut tables = vec![target.local("spans")];
    if target.cluster.is_some() {
        tables.push("spans".to_string());
    }
    for table in tables {
        for column in &columns {
            match store.execute_on(node, &format!("ALTER TABLE {table} ADD COLUMN {column}"), true) {
                Err(e) if e.to_string().contains("Code: 44,") => {}
                other => other?,
            }
        }
    }
    Ok(())
}

/// The keys with dedicated columns on the spans table the store reads.
pub(crate) fn hot_keys(store: &ClickHouseStore) -> Result<std::collections::BTreeSet<String>, StoreError> {
    let text = store.text(
        &format!(
            "SELECT name FROM system.columns WHERE database = {} AND table = 'spans' AND position(name, 'hot_') = 1",
            crate::literal(store.database_name().as_bytes())
        ),
        false,
    )?;
    Ok(text
        .lines()
        .filter_map(|name| {
            let hex = name.trim().strip_prefix("hot_")?.strip_suffix("_place")?;
            let bytes: Option<Vec<u8>> =
                (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect();
            String::from_utf8(bytes?).ok()
        })
        .collect())
}

/// `ALTER TABLE … MODIFY TTL` (or `REMOVE TTL` for `None`) of the tables retention acts on,
/// for a server that has `TTL`.
pub(crate) fn retention_statements(target: &SchemaTarget, days: Option<u32>) -> Vec<String> {
    target
        .retained_tables()
        .iter()
        .map(|table| match days {
            Some(days) => format!("ALTER TABLE {table} MODIFY TTL day + toIntervalDay({days})"),
            None => format!("ALTER TABLE {table} REMOVE TTL"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: ServerVersion = ServerVersion::new(18, 16);
    const NEW: ServerVersion = ServerVersion::new(24, 8);

    fn all(target: &SchemaTarget) -> String {
        MIGRATIONS.iter().flat_map(|m| (m.2)(target)).collect::<Vec<_>>().join(";\n")
    }

    fn single(version: ServerVersion) -> SchemaTarget {
        SchemaTarget { version, cluster: None }
    }

    fn cluster(version: ServerVersion) -> SchemaTarget {
        SchemaTarget { version, cluster: Some(("spindle".into(), "traces".into())) }
    }

    #[test]
    fn versions_parse_and_order() {
        let v = ServerVersion::parse("18.16.1");
        assert_eq!(v, OLD);
        assert!(!v.has_codecs() && !v.has_low_cardinality() && !v.has_ttl() && !v.has_skip_indexes());
        let new = ServerVersion::parse("24.8.4.13");
        assert!(new.has_codecs() && new.has_low_cardinality() && new.has_ttl() && new.has_skip_indexes());
        assert!(new.has_remove_ttl());
        assert!(ServerVersion::new(19, 6).has_ttl() && !ServerVersion::new(19, 5).has_ttl());
        assert!(!ServerVersion::new(19, 16).has_skip_indexes() && !ServerVersion::new(20, 9).has_remove_ttl());
        assert_eq!(ServerVersion::parse("garbage"), ServerVersion::default());
    }

    #[test]
    fn migration_versions_ascend() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn on_18_16_single_node_tables_are_plain() {
        let ddl = all(&single(OLD));
        for absent in ["CODEC", "INDEX", "LowCardinality", "TTL", "Distributed", "_local"] {
            assert!(!ddl.contains(absent), "{absent} in {ddl}");
        }
        for table in ["spans", "trace_id_ts", "operations"] {
            assert!(ddl.contains(&format!("CREATE TABLE IF NOT EXISTS {table} (")), "{table}");
        }
        assert!(ddl.contains("service String,") && ddl.contains("str_keys Array(String),"));
        assert!(ddl.contains("ENGINE = MergeTree() PARTITION BY day ORDER BY (service, name, start_ns)"));
    }

    #[test]
    fn on_24_8_tables_get_codecs_indexes_and_low_cardinality() {
        let ddl = all(&single(NEW));
        for present in [
            "start_ns UInt64 CODEC(Delta, ZSTD(1))",
            "trace_id FixedString(16) CODEC(ZSTD(1))",
            "span_id UInt64 CODEC(ZSTD(1))",
            "span String CODEC(ZSTD(1))",
            "min_start UInt64 CODEC(ZSTD(1))",
            "service LowCardinality(String)",
            "name LowCardinality(String)",
            "str_keys Array(LowCardinality(String))",
            "INDEX trace_id_bloom trace_id TYPE bloom_filter(0.01) GRANULARITY 1",
            "INDEX duration_minmax duration_ns TYPE minmax",
        ] {
            assert!(ddl.contains(present), "{present} missing from {ddl}");
        }
        // Retention is set apart, by set_retention, never fixed at creation.
        assert!(!ddl.contains("TTL"));
        // Values stay plain strings: high cardinality.
        assert!(ddl.contains("str_values Array(String)") && ddl.contains("resource_values Array(String)"));
    }

    #[test]
    fn a_cluster_gets_local_tables_under_distributed_ones() {
        for version in [OLD, NEW] {
            let target = cluster(version);
            let spans = spans(&target);
            assert_eq!(spans.len(), 2);
            assert!(spans[0].starts_with("CREATE TABLE IF NOT EXISTS spans_local ("));
            assert!(spans[0].contains("ENGINE = MergeTree()"));
            assert!(spans[1].starts_with("CREATE TABLE IF NOT EXISTS spans ("));
            assert!(spans[1].ends_with("ENGINE = Distributed(spindle, traces, spans_local, cityHash64(trace_id))"));
            assert!(!spans[1].contains("CODEC") && !spans[1].contains("INDEX"), "{}", spans[1]);
            assert!(trace_id_ts(&target)[1]
                .ends_with("ENGINE = Distributed(spindle, traces, trace_id_ts_local, cityHash64(trace_id))"));
            assert!(operations(&target)[1]
                .ends_with("ENGINE = Distributed(spindle, traces, operations_local, cityHash64(service))"));
        }
        // Same columns, same types, in both tables.
        let target = cluster(NEW);
        let spans = spans(&target);
        assert!(spans[1].contains("service LowCardinality(String)") && spans[1].contains("start_ns UInt64,"));
    }

    #[test]
    fn retention_alters_the_tables_that_hold_rows() {
        assert_eq!(
            retention_statements(&cluster(NEW), Some(7)),
            vec![
                "ALTER TABLE spans_local MODIFY TTL day + toIntervalDay(7)",
                "ALTER TABLE trace_id_ts_local MODIFY TTL day + toIntervalDay(7)",
            ]
        );
        assert_eq!(
            retention_statements(&single(NEW), None),
            vec!["ALTER TABLE spans REMOVE TTL", "ALTER TABLE trace_id_ts REMOVE TTL"]
        );
    }
}
