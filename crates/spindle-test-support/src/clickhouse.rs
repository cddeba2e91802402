//! A ClickHouse server for tests: Debian's `clickhouse-server` with a minimal config in a
//! temporary directory, on free loopback ports, killed on drop. A missing binary fails the
//! test with instructions; it never skips.
//!
//! Tests of failure handling can kill the server and start it again on the same ports and
//! data ([`ClickHouse::stop`], [`ClickHouse::restart`]) or freeze it so that connections
//! hang ([`ClickHouse::pause`], [`ClickHouse::resume`]). [`ClickHouse::start_cluster`]
//! starts several servers that know each other as the shards of one cluster.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, http_get, wait_until};

const CLICKHOUSE_INSTALL: &str = "apt-get install clickhouse-server clickhouse-client";

/// Only what the server needs to start: one passwordless `default` user reachable from
/// loopback. Ports, paths and the listen address come from the command line, which
/// overrides the config (`--key=value` after `--`). `{REMOTE_SERVERS}` is empty for a lone
/// server and the cluster definition for the nodes of [`ClickHouse::start_cluster`].
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
        <spindle>
            <password>spindle-test</password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </spindle>
    </users>
    <profiles><default></default></profiles>
    <quotas><default></default></quotas>
{REMOTE_SERVERS}</yandex>
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

fn required_binary() -> PathBuf {
    clickhouse_binary().unwrap_or_else(|| {
        panic!(
            "`clickhouse-server` is required by this test and was not found (set \
             CLICKHOUSE_SERVER_BIN, or put it on PATH); install it with `{CLICKHOUSE_INSTALL}`"
        )
    })
}

/// The `remote_servers` section naming one cluster with one single-replica shard per
/// native-protocol port, in order.
fn remote_servers(cluster_name: &str, tcp_ports: &[u16]) -> String {
    let shards: String = tcp_ports
        .iter()
        .map(|port| {
            format!("            <shard><replica><host>127.0.0.1</host><port>{port}</port></replica></shard>\n")
        })
        .collect();
    format!(
        "    <remote_servers>\n        <{cluster_name}>\n{shards}        </{cluster_name}>\n    </remote_servers>\n"
    )
}

/// A running ClickHouse server with its data in a temporary directory.
pub struct ClickHouse {
    /// `http://127.0.0.1:PORT`, the HTTP interface.
    pub http_url: String,
    /// The native-protocol port, for `clickhouse-client --port`.
    pub tcp_port: u16,
    http_port: u16,
    interserver_port: u16,
    binary: PathBuf,
    /// `None` between [`ClickHouse::stop`] and [`ClickHouse::restart`].
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl ClickHouse {
    /// A user every test server has besides `default`, with this password, for tests of
    /// authenticated access.
    pub const USER: &'static str = "spindle";
    pub const PASSWORD: &'static str = "spindle-test";

    /// Starts a server and waits until `GET /ping` answers `Ok.`.
    pub fn start() -> Self {
        let (http_port, tcp_port, interserver_port) = (free_port(), free_port(), free_port());
        Self::launch(http_port, tcp_port, interserver_port, "")
    }

    /// Starts `shards` servers forming the cluster `cluster_name` (as `system.clusters` and
    /// `Distributed` tables see it): one shard per server, in the order returned, each shard a
    /// single replica at 127.0.0.1 on that server's native port. The servers share no state
    /// besides knowing each other; `ON CLUSTER` DDL is unavailable (no ZooKeeper).
    pub fn start_cluster(shards: usize, cluster_name: &str) -> Vec<Self> {
        assert!(shards > 0, "a cluster needs at least one shard");
        assert!(
            !cluster_name.is_empty()
                && cluster_name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !cluster_name.starts_with(|c: char| c.is_ascii_digit()),
            "cluster name {cluster_name:?} must be an XML element name: letters, digits, underscores"
        );
        // Every node's config names every node, so all ports are chosen before any starts.
        let ports: Vec<(u16, u16, u16)> = (0..shards).map(|_| (free_port(), free_port(), free_port())).collect();
        let tcp_ports: Vec<u16> = ports.iter().map(|&(_, tcp, _)| tcp).collect();
        let section = remote_servers(cluster_name, &tcp_ports);
        // Launch in parallel: each server takes a few seconds to come up.
        let handles: Vec<_> = ports
            .into_iter()
            .map(|(http, tcp, interserver)| {
                let section = section.clone();
                std::thread::spawn(move || Self::launch(http, tcp, interserver, &section))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
    }

    fn launch(http_port: u16, tcp_port: u16, interserver_port: u16, remote_servers: &str) -> Self {
        let binary = required_binary();
        let dir = tempfile::tempdir().expect("temporary directory for ClickHouse");
        std::fs::write(dir.path().join("config.xml"), CONFIG.replace("{REMOTE_SERVERS}", remote_servers))
            .expect("write the ClickHouse config");
        let mut server = Self {
            http_url: format!("http://127.0.0.1:{http_port}"),
            tcp_port,
            http_port,
            interserver_port,
            binary,
            child: None,
            dir,
        };
        server.spawn_and_wait();
        server
    }

    fn spawn_and_wait(&mut self) {
        let dir: &Path = self.dir.path();
        let data = dir.join("data");
        let mut child = Command::new(&self.binary)
            .arg(format!("--config-file={}", dir.join("config.xml").display()))
            .arg("--")
            .arg(format!("--path={}/", data.display()))
            .arg(format!("--tmp_path={}/tmp/", data.display()))
            .arg(format!("--tcp_port={}", self.tcp_port))
            .arg(format!("--http_port={}", self.http_port))
            .arg(format!("--interserver_http_port={}", self.interserver_port))
            .arg("--listen_host=127.0.0.1")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        let ping = format!("{}/ping", self.http_url);
        // A restart can find the old ports still closing; the server retries nothing, so a
        // bind failure shows as an early exit and is reported as such.
        wait_until("ClickHouse to answer /ping", Duration::from_secs(60), || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("clickhouse-server exited early with {status}");
            }
            http_get(&ping).filter(|(code, body)| *code == 200 && body.trim() == "Ok.").map(|_| ())
        });
        self.child = Some(child);
    }

    /// Kills the server with SIGKILL (no clean shutdown, as in a crash), keeping its data
    /// directory and ports for [`ClickHouse::restart`]. Does nothing if already stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A paused process still dies of SIGKILL.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same ports and data directory (stopping it first if
    /// it runs) and waits until `GET /ping` answers `Ok.`.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn_and_wait();
    }

    /// Freezes the server (SIGSTOP): connections are accepted by the kernel but nothing
    /// answers, as with a hung server. Undo with [`ClickHouse::resume`].
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a server frozen by [`ClickHouse::pause`] run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// The server's process id, `None` while stopped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn signal(&self, signal: &str) {
        let pid = self.pid().expect("the ClickHouse server is stopped; restart it first");
        let status = Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status()
            .unwrap_or_else(|e| panic!("cannot run `kill {signal} {pid}`: {e}"));
        assert!(status.success(), "`kill {signal} {pid}` failed with {status}");
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // SIGKILL works on a stopped process too, but resume first so nothing lingers.
            let _ = Command::new("kill").arg("-CONT").arg(child.id().to_string()).status();
        }
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(server: &ClickHouse, sql: &str) -> (u16, String) {
        let encoded: String = sql
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect();
        let url = format!("{}/?query={encoded}", server.http_url);
        http_get(&url).expect("query")
    }

    /// Statements that change things must be POSTed (GET is read-only in ClickHouse).
    fn post(server: &ClickHouse, sql: &str) -> (u16, String) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let response = reqwest::Client::new()
                .post(format!("{}/", server.http_url))
                .body(sql.to_owned())
                .send()
                .await
                .expect("POST to ClickHouse");
            (response.status().as_u16(), response.text().await.expect("body"))
        })
    }

    #[test]
    fn a_started_server_answers_queries_over_http() {
        let server = ClickHouse::start();
        let (code, body) = query(&server, "SELECT 1+1");
        assert_eq!((code, body.trim()), (200, "2"));
    }

    #[test]
    fn a_stopped_server_restarts_on_its_ports_with_its_data() {
        let mut server = ClickHouse::start();
        assert_eq!(post(&server, "CREATE TABLE kept (x UInt8) ENGINE = TinyLog").0, 200);
        assert_eq!(post(&server, "INSERT INTO kept VALUES (7)").0, 200);
        let pid = server.pid();
        server.stop();
        assert!(server.pid().is_none());
        assert!(http_get(&format!("{}/ping", server.http_url)).is_none(), "a stopped server answers nothing");
        server.restart();
        assert_ne!(server.pid(), pid);
        assert_eq!(query(&server, "SELECT x FROM kept").1.trim(), "7");
    }

    #[test]
    fn a_paused_server_answers_again_once_resumed() {
        let server = ClickHouse::start();
        server.pause();
        // http_get's own timeout is what ends the request: nothing answers while frozen.
        let frozen = std::thread::spawn({
            let url = format!("{}/ping", server.http_url);
            move || http_get(&url)
        });
        std::thread::sleep(Duration::from_millis(500));
        assert!(!frozen.is_finished(), "a paused server must not answer");
        server.resume();
        let answer = frozen.join().expect("ping thread");
        assert_eq!(answer.map(|(code, _)| code), Some(200), "the ping waiting on the frozen server completes");
    }

    #[test]
    fn a_cluster_of_servers_knows_its_shards() {
        let nodes = ClickHouse::start_cluster(2, "two_shards");
        for node in &nodes {
            let (code, body) = query(
                node,
                "SELECT shard_num, host_address, port FROM system.clusters WHERE cluster = 'two_shards' ORDER BY shard_num",
            );
            assert_eq!(code, 200, "{body}");
            let expected = format!("1\t127.0.0.1\t{}\n2\t127.0.0.1\t{}\n", nodes[0].tcp_port, nodes[1].tcp_port);
            assert_eq!(body, expected);
        }
        // One node reaches the other over the native protocol, as Distributed tables do.
        let sql = format!("SELECT count() FROM remote('127.0.0.1:{}', system.one)", nodes[1].tcp_port);
        let (code, body) = query(&nodes[0], &sql);
        assert_eq!((code, body.trim()), (200, "1"));
    }
}
