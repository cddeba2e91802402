//! The consumer-group crash that stalled `storage-service`, reduced to plain rdkafka
//! consumers: a member of a group is killed with SIGKILL (it never leaves the group) and a
//! new process of the same group starts at once; how long until it is assigned the
//! partitions?
//!
//! On tansu 0.6, with dynamic membership (no `group.instance.id`), the answer is often
//! *never*: the new member joins while the dead one, the group's leader, is still within its
//! session timeout, so tansu keeps the dead member as the leader of the new generation and
//! answers the new member's SyncGroup with REBALANCE_IN_PROGRESS. When the dead leader's
//! session finally expires, tansu notices it during one of those SyncGroup requests, drops
//! the leader and completes the generation with the follower's (empty) assignment list: the
//! group is "stable", heartbeats succeed, and no partition is assigned to anyone, for good.
//! A real Kafka instead removes the expired member in the join phase and makes the survivor
//! the leader. With static membership (`group.instance.id`, what the services use) the
//! restarted process takes the dead member's place, is the leader, and assigns at once.
//!
//! `PIPELINE_REPRO_DYNAMIC=1 cargo test -p spindle-pipeline --test group_rejoin -- --nocapture`
//! runs the same scenario with dynamic members and prints what happens instead of asserting
//! (the outcome depends on where the dead leader's expiry falls, so it is no CI test).

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use spindle_sdk::rdkafka::config::ClientConfig;
use spindle_sdk::rdkafka::consumer::{BaseConsumer, Consumer};
use support::Tansu;

const MEMBER_ENV: &str = "PIPELINE_TEST_GROUP_MEMBER";

/// Not a test: the body of the member processes the tests start (this test binary run again
/// with `PIPELINE_TEST_GROUP_MEMBER` set). Without it set it returns at once.
#[test]
fn group_member_process() {
    let Ok(spec) = std::env::var(MEMBER_ENV) else { return };
    let mut parts = spec.split(' ');
    let (brokers, group, topic) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    for kv in parts {
        let (k, v) = kv.split_once('=').unwrap();
        config.set(k, v);
    }
    let consumer: BaseConsumer = config.create().expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut last = usize::MAX;
    loop {
        let _ = consumer.poll(Duration::from_millis(100));
        let now = consumer.assignment().map(|a| a.count()).unwrap_or(0);
        if now != last {
            last = now;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "assigned {now}");
            let _ = out.flush();
        }
    }
}

struct Member {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Member {
    fn start(brokers: &str, group: &str, topic: &str, extra: &[&str]) -> Self {
        let spec = [&[brokers, group, topic][..], extra].concat().join(" ");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["group_member_process", "--exact", "--nocapture", "--test-threads", "1"])
            .env(MEMBER_ENV, spec)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    fn wait_assigned(&self, partitions: usize, timeout: Duration) -> Option<Duration> {
        let start = Instant::now();
        let want = format!("assigned {partitions}");
        while start.elapsed() < timeout {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) if line.ends_with(&want) => return Some(start.elapsed()),
                _ => {}
            }
        }
        None
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a member, lets it heartbeat for a while as the group's leader, kills it with
/// SIGKILL, starts another with the same settings and returns how long that one took to be
/// assigned both partitions (`None`: not within `patience`).
fn restart_after_kill(extra: &[&str], patience: Duration) -> Option<Duration> {
    let tansu = Tansu::start(&[("t", 2)]);
    let first = Member::start(&tansu.bootstrap, "g", "t", extra);
    first.wait_assigned(2, Duration::from_secs(60)).expect("the first member is assigned both partitions");
    // A few heartbeats: the dead member's session then ends mid-rebalance, the case that
    // strands a dynamic group.
    std::thread::sleep(Duration::from_secs(4));
    drop(first); // SIGKILL: no LeaveGroup
    let second = Member::start(&tansu.bootstrap, "g", "t", extra);
    second.wait_assigned(2, patience)
}

/// The session timeout the services use.
const SESSION: &str = "session.timeout.ms=10000";

#[test]
fn a_static_member_restarted_after_sigkill_gets_its_partitions_back() {
    if std::env::var_os("PIPELINE_REPRO_DYNAMIC").is_some() {
        let took = restart_after_kill(&[SESSION], Duration::from_secs(90));
        eprintln!("dynamic member restarted after SIGKILL: assigned after {took:?} (None: not within 90 s)");
        return;
    }
    let took = restart_after_kill(&[SESSION, "group.instance.id=g-1"], Duration::from_secs(60))
        .expect("the restarted static member is assigned both partitions within 60 s");
    eprintln!("static member restarted after SIGKILL: assigned after {took:?}");
}
