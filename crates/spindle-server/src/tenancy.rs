//! Tenants: every request acts for one tenant, and each tenant's spans live in a store of
//! their own (docs/SECURITY.md, "Tenants").

use std::collections::BTreeMap;
use std::time::Duration;

use crate::limits::Limits;

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
