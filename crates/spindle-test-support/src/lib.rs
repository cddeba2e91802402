//! Test harness shared by the integration tests of the SDK, the server and the seed apps:
//! free loopback ports, polling with a deadline, and launchers for the real servers tests
//! talk to (the tansu Kafka broker and the spindle backend).
//!
//! Only test targets depend on this crate (as a dev-dependency). Launchers fail the test
//! loudly when their binary is missing; they never skip.

mod clickhouse;
mod ports;
mod processes;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use clickhouse::ClickHouse;
pub use ports::{free_port, free_udp_port};
pub use processes::{http_get, spindle_binary, Spindle, Tansu};

/// Polls `probe` every 50 ms until it returns `Some`, or panics naming `what` after `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The workspace's root directory (this crate sits two levels below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .expect("crates/spindle-test-support sits two levels below the workspace root")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_root_holds_the_workspace_manifest() {
        let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml")).expect("root Cargo.toml");
        assert!(manifest.contains("[workspace]"));
    }

    #[test]
    fn wait_until_returns_the_first_value_the_probe_gives() {
        let mut calls = 0;
        let value = wait_until("the third call", Duration::from_secs(5), || {
            calls += 1;
            (calls == 3).then_some(calls * 10)
        });
        assert_eq!((value, calls), (30, 3));
    }

    #[test]
    #[should_panic(expected = "timed out after 100ms waiting for nothing")]
    fn wait_until_panics_naming_what_it_waited_for() {
        wait_until("nothing", Duration::from_millis(100), || None::<()>);
    }
}
