//! Free loopback ports for test harnesses, shared by path (`#[path]`) between the SDK's,
//! the server's and the apps' tests.

/// A free loopback port below Linux's ephemeral range (32768–60999), so that the outgoing
/// connections of tests running in parallel cannot take it between this check and the
/// server's bind. A port is handed out once per process: two tests of one binary picking
/// ports at the same time (before either server binds) never get the same one.
pub fn pick_loopback_port(udp: bool) -> u16 {
    use std::hash::{BuildHasher, Hasher};
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let port = 20_000 + (h.finish() % 12_000) as u16;
        let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
        if given.contains(&port) {
            continue;
        }
        let free = if udp {
            std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        } else {
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
        };
        if free {
            given.push(port);
            return port;
        }
    }
}
