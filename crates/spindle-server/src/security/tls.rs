//! TLS for the TCP listeners (see the module docs of `crate::security`).
