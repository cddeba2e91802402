//! The protocol-neutral span model every wire format maps onto.
//!
//! This crate owns the shape of a span as Spindle stores and queries it. It does no IO and
//! knows no wire format: codecs translate into and out of these types, the store persists
//! them, the query layer reads them.
//!
//! Architecture Invariant: nothing here panics on values that came from outside; parsing
//! functions return [`IdError`].

mod dependencies;
mod ids;
pub mod semconv;
mod span;

pub use dependencies::{
    dependency_edges, for_each_edge, for_each_edge_named, links_from_edges, BrokerNodes, DependencyLink,
};
pub use ids::{IdError, SpanId, TraceId};
pub use span::{
    find_attribute, AttributeValue, Event, KeyValue, Link, Resource, Scope, ServiceNames, Span, SpanKind, Status,
    StatusCode, Text,
};
