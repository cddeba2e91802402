//! The schema of ADR 018 as versioned migrations. A store runs, at open, every migration
//! not yet recorded in `schema_migrations`, in order. Each statement is idempotent
//! (`IF NOT EXISTS`), so a migration cut short by a crash, or run by two instances opening
//! at once, is simply run again; a version recorded twice is harmless.

use crate::{ClickHouseStore, StoreError};

/// `SELECT version()` of the server, major and minor. Features of later releases (`Map`,
/// `DateTime64`, `TTL`, data-skipping indexes, codecs) are keyed on it; see ADR 018.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ServerVersion {
    pub major: u32,
    pub minor: u32,
}

impl ServerVersion {
    /// `18.16.1` → 18.16; unparsable parts read as 0, the oldest.
    pub fn parse(text: &str) -> Self {
        let mut parts = text.split('.').map(|p| p.trim().parse().unwrap_or(0));
        ServerVersion { major: parts.next().unwrap_or(0), minor: parts.next().unwrap_or(0) }
    }

    /// Whether the server has `TTL`, data-skipping indexes and column codecs (19.6 on).
    pub fn has_ttl_and_skip_indexes(self) -> bool {
        self >= ServerVersion { major: 19, minor: 6 }
    }
}

/// Version, description and statements of each migration, in order. Never edit a released
/// one: add the next.
pub const MIGRATIONS: &[(u32, &str, &[&str])] = &[
    (
        1,
        "spans: typed hot columns, attributes by type, the whole span",
        &["CREATE TABLE IF NOT EXISTS spans (
            day Date,
            start_ns UInt64,
            trace_id FixedString(16),
            span_id UInt64,
            parent_span_id UInt64,
            service String,
            name String,
            kind UInt8,
            duration_ns UInt64,
            status_code UInt8,
            str_keys Array(String),
            str_values Array(String),
            int_keys Array(String),
            int_values Array(Int64),
            bool_keys Array(String),
            bool_values Array(UInt8),
            double_keys Array(String),
            double_values Array(Float64),
            resource_keys Array(String),
            resource_values Array(String),
            span String
        ) ENGINE = MergeTree() PARTITION BY day ORDER BY (service, name, start_ns)"],
    ),
    (
        2,
        "trace_id_ts: trace id to the range of its spans' start times",
        &["CREATE TABLE IF NOT EXISTS trace_id_ts (
            day Date,
            trace_id FixedString(16),
            min_start UInt64,
            max_start UInt64
        ) ENGINE = MergeTree() PARTITION BY day ORDER BY trace_id"],
    ),
    (
        3,
        "operations: service, span name and kind seen",
        &["CREATE TABLE IF NOT EXISTS operations (
            service String,
            name String,
            kind UInt8
        ) ENGINE = ReplacingMergeTree() ORDER BY (service, name, kind)"],
    ),
];

/// The columns [`MIGRATIONS`] gives `spans`, in the order appends write them.
pub(crate) const SPAN_INSERT: &str = "spans (day, start_ns, trace_id, span_id, parent_span_id, service, name, \
     kind, duration_ns, status_code, str_keys, str_values, int_keys, int_values, bool_keys, bool_values, \
     double_keys, double_values, resource_keys, resource_values, span)";

const MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version UInt32,
    description String,
    applied_at DateTime DEFAULT now()
) ENGINE = MergeTree() ORDER BY version";

pub(crate) fn applied(store: &ClickHouseStore) -> Result<Vec<u32>, StoreError> {
    let text = store.text("SELECT DISTINCT version FROM schema_migrations ORDER BY version", true)?;
    text.lines()
        .map(|line| {
            line.trim().parse().map_err(|_| StoreError::DataFormat {
                path: "ClickHouse schema_migrations".into(),
                message: format!("unreadable version {line:?}"),
            })
        })
        .collect()
}

pub(crate) fn migrate(store: &ClickHouseStore) -> Result<(), StoreError> {
    store.execute(MIGRATIONS_TABLE, true)?;
    let done = applied(store)?;
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
        for statement in *statements {
            store.execute(statement, true)?;
        }
        let description = crate::literal(description.as_bytes());
        store.execute(
            &format!("INSERT INTO schema_migrations (version, description) VALUES ({version}, {description})"),
            true,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_order() {
        let v = ServerVersion::parse("18.16.1");
        assert_eq!(v, ServerVersion { major: 18, minor: 16 });
        assert!(!v.has_ttl_and_skip_indexes());
        assert!(ServerVersion::parse("24.8.4.13").has_ttl_and_skip_indexes());
        assert_eq!(ServerVersion::parse("garbage"), ServerVersion::default());
    }

    #[test]
    fn migration_versions_ascend() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
