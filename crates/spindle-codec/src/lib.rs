//! Pure decoders and encoders of every wire format Spindle speaks.
//!
//! Each module turns outside bytes into [`spindle_model`] spans, or spans into the bytes a
//! client expects. Nothing here does IO or runs async code, so every decoder can be fuzzed
//! and tested on plain byte slices.
//!
//! Architecture Invariant: a decoder never panics on any input; it returns a
//! [`CodecError`] that names what was wrong and where.

use std::sync::Arc;

pub mod jaeger_json;
pub mod jaeger_proto;
pub mod jaeger_thrift;
pub mod otlp;
pub mod otlp_json;
pub mod otlp_wire;
pub mod sampling;
pub mod thrift;
pub mod zipkin;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CodecError {
    #[error("invalid protobuf: {0}")]
    Protobuf(String),
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("invalid {field}: {reason}")]
    Field { field: String, reason: String },
    #[error("invalid thrift {protocol}: {source}")]
    Thrift { protocol: &'static str, source: thrift::ThriftError },
}

/// How many distinct resources or scopes one request shares; beyond that each span gets
/// its own allocation, so a hostile request of all-different processes costs linear time.
const INTERN_POOL_LIMIT: usize = 64;

/// Returns the pooled `Arc` equal to `value`, adding it first if absent and the pool is not
/// full: the spans of one request share their resource and scope allocations.
pub(crate) fn intern<T: PartialEq>(pool: &mut Vec<Arc<T>>, value: T) -> Arc<T> {
    if let Some(existing) = pool.iter().find(|p| ***p == value) {
        return Arc::clone(existing);
    }
    let value = Arc::new(value);
    if pool.len() < INTERN_POOL_LIMIT {
        pool.push(Arc::clone(&value));
    }
    value
}

/// Spans decoded from one request, and what was refused from it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decoded {
    pub spans: Vec<spindle_model::Span>,
    /// Spans left out because they were invalid (e.g. an all-zero trace id).
    pub rejected: u64,
    /// Why, for the first few rejected spans; empty when nothing was rejected.
    pub rejection_reason: String,
}

impl Decoded {
    pub(crate) fn reject(&mut self, reason: String) {
        self.rejected += 1;
        // Keep the message short: the first few reasons tell the client what to fix.
        if self.rejected <= 3 {
            if !self.rejection_reason.is_empty() {
                self.rejection_reason.push_str("; ");
            }
            self.rejection_reason.push_str(&reason);
        }
    }
}
