//! A ClickHouse server for tests: Debian's `clickhouse-server` with a minimal config in a
//! temporary directory, on free loopback ports, killed on drop. A missing binary fails the
//! test with instructions; it never skips.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, http_get, wait_until};

const CLICKHOUSE_INSTALL: &str = "apt-get install clickhouse-server clickhouse-client";

/// Only what the server needs to start: one passwordless `default` user reachable from
/// loopback. Ports, paths and the listen address come from the command line, which
/// overrides the config (`--key=value` after `--`).
const CONFIG: &str = r#"<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><console>true</console></logger>
    <mark_cache_size>5368709120</mark_cache_size>
    <max_concurrent_queries>100</max_concurrent_queries>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <profiles><default></default></profiles>
    <quotas><default></default></quotas>
</yandex>
"#;

/// `$CLICKHOUSE_SERVER_BIN` if set, else `clickhouse-server` on `PATH`, else where Debian's
/// package puts it (`/usr/sbin`, which is not on every user's `PATH`).
fn clickhouse_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CLICKHOUSE_SERVER_BIN") {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("clickhouse-server"))
        .find(|candidate| candidate.is_file())
}

/// A running ClickHouse server with its data in a temporary directory.
pub struct ClickHouse {
    /// `http://127.0.0.1:PORT`, the HTTP interface.
    pub http_url: String,
    /// The native-protocol port, for `clickhouse-client --port`.
    pub tcp_port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl ClickHouse {
    /// Starts a server and waits until `GET /ping` answers `Ok.`.
    pub fn start() -> Self {
        let binary = clickhouse_binary().unwrap_or_else(|| {
            panic!(
                "`clickhouse-server` is required by this test and was not found (set \
                 CLICKHOUSE_SERVER_BIN, or put it on PATH); install it with `{CLICKHOUSE_INSTALL}`"
            )
        });
        let dir = tempfile::tempdir().expect("temporary directory for ClickHouse");
        let config = dir.path().join("config.xml");
        std::fs::write(&config, CONFIG).expect("write the ClickHouse config");
        let data = dir.path().join("data");
        let (http_port, tcp_port, interserver_port) = (free_port(), free_port(), free_port());
        let mut child = Command::new(&binary)
            .arg(format!("--config-file={}", config.display()))
            .arg("--")
            .arg(format!("--path={}/", data.display()))
            .arg(format!("--tmp_path={}/tmp/", data.display()))
            .arg(format!("--tcp_port={tcp_port}"))
            .arg(format!("--http_port={http_port}"))
            .arg(format!("--interserver_http_port={interserver_port}"))
            .arg("--listen_host=127.0.0.1")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let http_url = format!("http://127.0.0.1:{http_port}");
        let ping = format!("{http_url}/ping");
        wait_until("ClickHouse to answer /ping", Duration::from_secs(60), || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("clickhouse-server exited early with {status}");
            }
            http_get(&ping).filter(|(code, body)| *code == 200 && body.trim() == "Ok.").map(|_| ())
        });
        Self { http_url, tcp_port, child, _dir: dir }
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_started_server_answers_queries_over_http() {
        let server = ClickHouse::start();
        let (code, body) = http_get(&format!("{}/?query=SELECT%201%2B1", server.http_url)).expect("query");
        assert_eq!((code, body.trim()), (200, "2"));
    }
}
