//! The interoperability scenarios of `interop.rs` again, on the SDK's own subscriber
//! (`SpindleBuilder::into_dispatch`) instead of the registry with the SDK's layer.

#[path = "interop.rs"]
mod interop;
