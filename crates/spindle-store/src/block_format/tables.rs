//! A block's shared-resource tables: each distinct resource and scope stored once in the
//! footer, rows referring to them by index, and the address index that makes interning a
//! batch's shared `Arc` one hash lookup.

use std::collections::HashMap;
use std::sync::Arc;

use spindle_model::{Resource, Scope};

use super::FormatError;

/// Shared-resource tables of a block: rows hold indexes into them.
#[derive(Debug, Default)]
pub(crate) struct SharedTables {
    pub(crate) resources: Vec<Arc<Resource>>,
    pub(crate) scopes: Vec<Arc<Scope>>,
    resource_ptrs: PointerIndex<Resource>,
    scope_ptrs: PointerIndex<Scope>,
}

/// Hashes an address: the allocator aligns them, so the low bits say nothing and SipHash
/// (the standard map's) was a visible cost of every span written.
#[derive(Default, Clone, Copy)]
struct AddressHasher(u64);

impl std::hash::Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn write_usize(&mut self, n: usize) {
        let h = (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = h ^ (h >> 29);
    }
}

/// Table index by `Arc` address. Spans of one batch share their resource's `Arc`, so most
/// lookups end here instead of comparing resources by value (once the block writer's top
/// cost). The `Arc` is kept so that its address cannot be reused by another value.
type PointerIndex<T> = HashMap<usize, (Arc<T>, i32), std::hash::BuildHasherDefault<AddressHasher>>;

impl SharedTables {
    pub(crate) fn new(resources: Vec<Arc<Resource>>, scopes: Vec<Arc<Scope>>) -> Self {
        SharedTables { resources, scopes, ..Default::default() }
    }

    /// The index of `resource` in the table, adding it when new.
    pub(super) fn intern_resource(&mut self, resource: &Arc<Resource>) -> i32 {
        Self::intern(&mut self.resources, &mut self.resource_ptrs, resource)
    }

    /// The index of `scope` in the table, adding it when new.
    pub(super) fn intern_scope(&mut self, scope: &Arc<Scope>) -> i32 {
        Self::intern(&mut self.scopes, &mut self.scope_ptrs, scope)
    }

    /// The resource a row refers to by `index`.
    pub(super) fn resource(&self, index: i32) -> Result<Arc<Resource>, FormatError> {
        Self::entry(&self.resources, index, "resource")
    }

    /// The scope a row refers to by `index`.
    pub(super) fn scope(&self, index: i32) -> Result<Arc<Scope>, FormatError> {
        Self::entry(&self.scopes, index, "scope")
    }

    fn entry<T>(table: &[Arc<T>], index: i32, what: &'static str) -> Result<Arc<T>, FormatError> {
        let entry = usize::try_from(index).ok().and_then(|i| table.get(i));
        entry.map(Arc::clone).ok_or(FormatError::BadReference { what, index, len: table.len() })
    }

    fn intern<T: PartialEq>(table: &mut Vec<Arc<T>>, ptrs: &mut PointerIndex<T>, item: &Arc<T>) -> i32 {
        let address = Arc::as_ptr(item) as usize;
        if let Some((_, index)) = ptrs.get(&address) {
            return *index;
        }
        let index = match table.iter().position(|t| **t == **item) {
            Some(i) => i as i32,
            None => {
                table.push(Arc::clone(item));
                (table.len() - 1) as i32
            }
        };
        ptrs.insert(address, (Arc::clone(item), index));
        index
    }
}
