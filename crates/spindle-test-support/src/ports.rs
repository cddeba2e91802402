//! Free loopback ports for servers started by tests.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A TCP loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    pick_loopback_port(false)
}

/// A free UDP loopback port, below the ephemeral range like [`free_port`].
pub fn free_udp_port() -> u16 {
    pick_loopback_port(true)
}

/// A free loopback port below Linux's ephemeral range (32768–60999), so that the outgoing
/// connections of tests running in parallel cannot take it between this check and the
/// server's bind. A port is handed out once per process: two tests of one binary picking
/// ports at the same time (before either server binds) never get the same one.
fn pick_loopback_port(udp: bool) -> u16 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(NEXT.fetch_add(1, Ordering::Relaxed));
        let port = 20_000 + (h.finish() % 12_000) as u16;
        let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
        if given.contains(&port) {
            continue;
        }
        let free = if udp {
            UdpSocket::bind(("127.0.0.1", port)).is_ok()
        } else {
            TcpListener::bind(("127.0.0.1", port)).is_ok()
        };
        if free {
            given.push(port);
            return port;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_bindable_below_the_ephemeral_range_and_never_handed_out_twice() {
        let tcp: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let udp: Vec<u16> = (0..50).map(|_| free_udp_port()).collect();
        let mut all: Vec<u16> = tcp.iter().chain(&udp).copied().collect();
        assert!(all.iter().all(|p| (20_000..32_000).contains(p)), "{all:?}");
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 100, "a port is handed out once per process");
        assert!(TcpListener::bind(("127.0.0.1", tcp[0])).is_ok());
        assert!(UdpSocket::bind(("127.0.0.1", udp[0])).is_ok());
    }
}
