//! The dashboards and the alert rules in `deploy/` against the running pipeline: a real
//! Prometheus scrapes the three services and Spindle, every panel's expression of every
//! dashboard in `deploy/grafana/dashboards/` returns data through Prometheus's HTTP API, and
//! the rules of `deploy/prometheus/alerts.yml` reach a real Alertmanager (run with
//! `deploy/prometheus/alertmanager.yml`). `promtool` checks the rules and runs their unit
//! tests (`alerts.test.yml`).
//!
//! The one liberty taken: the rules are loaded with every `for:` set to 0s, so that an alert
//! fires within the test's minutes rather than the rules' own. Their logic over time is what
//! the promtool unit tests cover.
//!
//! Needs `tansu`, `redis-server`, PostgreSQL, `prometheus`, `promtool` and
//! `prometheus-alertmanager` (Debian packages; `scripts/test` installs them).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::TracedPeers;

const WAIT: Duration = Duration::from_secs(180);

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// A peer process killed on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(program: &str, args: &[String], log: &Path) -> Process {
    let log = std::fs::File::create(log).expect("log file");
    let child = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{program} is needed by this test (apt-get install prometheus prometheus-alertmanager; scripts/test installs them): {e}")
        });
    Process(child)
}

fn get_json(client: &reqwest::blocking::Client, url: &str, query: &[(&str, &str)]) -> Option<Value> {
    client.get(url).query(query).send().ok()?.json().ok()
}

/// The expression of every target of every panel of every dashboard: (dashboard file, panel
/// title, expression), dashboard variables replaced by "all" (`$service` → `.*`).
fn panel_expressions() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let dir = deploy().join("grafana/dashboards");
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(&dir).expect("dashboards").map(|e| e.expect("entry").path()).collect();
    files.sort();
    for path in files {
        let file = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard")).expect("json");
        for panel in dashboard["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let Some(expr) = target["expr"].as_str() else { continue };
                let title = panel["title"].as_str().unwrap_or_default().to_owned();
                out.push((file.clone(), title, expr.replace("$service", ".*")));
            }
        }
    }
    out
}

#[test]
fn the_shipped_alert_rules_pass_promtool_and_their_unit_tests() {
    let rules = deploy().join("prometheus/alerts.yml");
    let out = Command::new("promtool").arg("check").arg("rules").arg(&rules).output().expect("promtool runs");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let tests = deploy().join("prometheus/alerts.test.yml");
    let out = Command::new("promtool").arg("test").arg("rules").arg(&tests).output().expect("promtool runs");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let config = deploy().join("prometheus/prometheus.yml");
    let out = Command::new("promtool").arg("check").arg("config").arg(&config).output().expect("promtool runs");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

#[test]
fn every_dashboard_panel_has_data_and_the_alert_rules_reach_alertmanager() {
    let stack = TracedPeers::start();
    let (peers, api) = (stack.peers(), stack.api());
    let storage = peers.storage(&[]);
    let processor = peers.processor(&[]);
    let ingestion = peers.ingestion(&["--rate", "20"]);
    let client = reqwest::blocking::Client::new();
    // A record that is not JSON: dead-lettered, and an error trace in processor-service.
    let malformed = || support::produce_raw(&stack.tansu.bootstrap, "market-data", Some("AAPL"), b"{not json", &[]);
    malformed();

    // Spindle's own failure paths, so that their panels have data: a request that does not
    // decode, and a span that is refused (trace id 0).
    let refused =
        client.post(format!("{}/api/v2/spans", stack.spindle.zipkin)).body("[{").send().expect("zipkin answers");
    assert_eq!(refused.status().as_u16(), 400);
    let invalid = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"probe"}}]},"scopeSpans":[{"spans":[{"traceId":"00000000000000000000000000000000","spanId":"0000000000000001","name":"probe","kind":1,"startTimeUnixNano":"1000","endTimeUnixNano":"2000"}]}]}]}"#;
    client
        .post(format!("{}/v1/traces", stack.spindle.otlp_http))
        .header("content-type", "application/json")
        .body(invalid)
        .send()
        .expect("otlp http answers");

    // Alertmanager with the shipped configuration.
    let dir = tempfile::tempdir().expect("temporary directory");
    let am_port = support::free_port();
    let _alertmanager = spawn(
        "prometheus-alertmanager",
        &[
            format!("--config.file={}", deploy().join("prometheus/alertmanager.yml").display()),
            format!("--storage.path={}", dir.path().join("alertmanager").display()),
            format!("--web.listen-address=127.0.0.1:{am_port}"),
            "--cluster.listen-address=".to_owned(),
        ],
        &dir.path().join("alertmanager.log"),
    );
    let am = format!("http://127.0.0.1:{am_port}");
    support::wait_until("alertmanager to be ready", Duration::from_secs(60), || {
        client.get(format!("{am}/-/ready")).send().ok().filter(|r| r.status().is_success())
    });

    // Prometheus scraping the services and Spindle every second, with the shipped rules.
    let shipped = std::fs::read_to_string(deploy().join("prometheus/alerts.yml")).expect("alerts.yml");
    let rules: String = shipped
        .lines()
        .map(|line| match line.split_once("for: ") {
            Some((indent, _)) if indent.trim().is_empty() => format!("{indent}for: 0s\n"),
            _ => format!("{line}\n"),
        })
        .collect();
    assert!(rules.matches("for: 0s").count() >= 4, "the rules' `for:` lines were found");
    std::fs::write(dir.path().join("alerts.yml"), rules).expect("rules written");
    let targets = [&ingestion, &processor, &storage].map(|s| format!("'{}'", s.metrics_addr)).join(", ");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - alerts.yml\n\
         alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{am_port}']\n\
         scrape_configs:\n  - job_name: spindle\n    static_configs:\n      - targets: ['{}']\n  \
         - job_name: pipeline\n    static_configs:\n      - targets: [{targets}]\n",
        stack.spindle.admin
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).expect("config written");
    let prom_port = support::free_port();
    let _prometheus = spawn(
        "prometheus",
        &[
            format!("--config.file={}", dir.path().join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", dir.path().join("prometheus").display()),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
        ],
        &dir.path().join("prometheus.log"),
    );
    let prom = format!("http://127.0.0.1:{prom_port}");
    support::wait_until("prometheus to scrape the four targets", Duration::from_secs(60), || {
        let up = get_json(&client, &format!("{prom}/api/v1/query"), &[("query", "sum(up)")])?;
        (up["data"]["result"][0]["value"][1].as_str() == Some("4")).then_some(())
    });
    // Once Prometheus holds the error series, a second malformed record: the alerts look at
    // increases, and a series' first sample is none (alerts.yml says so).
    let errors = r#"traces_span_metrics_calls_total{service_name="processor-service",status_code="STATUS_CODE_ERROR"}"#;
    support::wait_until("prometheus to hold processor-service's error spans", WAIT, || {
        let result = get_json(&client, &format!("{prom}/api/v1/query"), &[("query", errors)])?;
        (!result["data"]["result"].as_array()?.is_empty()).then_some(())
    });
    malformed();
    // Queries to Spindle, for its query-latency panel.
    api.search_by_tag("ingestion-service", "symbol", "AAPL");

    // Every panel's expression returns data: polled, as rates need a few scrapes.
    let expressions = panel_expressions();
    assert!(expressions.len() >= 25, "the dashboards' expressions: {expressions:?}");
    let mut empty = Vec::new();
    let deadline = std::time::Instant::now() + WAIT;
    for (file, title, expr) in &expressions {
        let series = loop {
            let result = get_json(&client, &format!("{prom}/api/v1/query"), &[("query", expr)]);
            if let Some(result) = &result {
                assert_eq!(result["status"], "success", "{file} \"{title}\": {expr} fails: {result}");
            }
            let series = result.and_then(|r| r["data"]["result"].as_array().map(Vec::len)).unwrap_or(0);
            if series > 0 || std::time::Instant::now() > deadline {
                break series;
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        eprintln!("{file} \"{title}\": {series} series  {expr}");
        if series == 0 {
            empty.push(format!("{file} \"{title}\": {expr}"));
        }
    }
    assert!(empty.is_empty(), "panels without data: {empty:#?}");
    // The infrastructure the seed lists, by name, is among what returned data.
    let infrastructure: Vec<&str> = expressions
        .iter()
        .filter(|(file, _, _)| file == "infrastructure.json")
        .map(|(_, _, expr)| expr.as_str())
        .collect();
    for metric in [
        "pipeline_consumer_lag",
        "pipeline_db_pool_connections_in_use",
        "pipeline_db_pool_waiting",
        "pipeline_db_write_duration_seconds_bucket",
        "pipeline_cache_requests_total{result=\"hit\"}",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "pipeline_messages_in_total",
        "pipeline_messages_out_total",
        "destination=\"dead-letter\"",
    ] {
        assert!(infrastructure.iter().any(|e| e.contains(metric)), "the Infrastructure dashboard charts {metric}");
    }
    // Every process is charted: the three services and Spindle.
    let memory = get_json(&client, &format!("{prom}/api/v1/query"), &[("query", "process_resident_memory_bytes")])
        .expect("prometheus answers");
    let jobs: Vec<String> = memory["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            format!("{}/{}", s["metric"]["job"].as_str().unwrap_or(""), s["metric"]["service"].as_str().unwrap_or(""))
        })
        .collect();
    for job in ["spindle/", "pipeline/ingestion-service", "pipeline/processor-service", "pipeline/storage-service"] {
        assert!(jobs.iter().any(|j| j == job), "memory of {job} in {jobs:?}");
    }

    // The error trace and the dead-lettered record fire their alerts, which reach
    // Alertmanager with their labels and annotations.
    let deadline = std::time::Instant::now() + WAIT;
    let alerts = loop {
        let list = get_json(&client, &format!("{am}/api/v2/alerts"), &[("active", "true")])
            .and_then(|a| a.as_array().cloned())
            .unwrap_or_default();
        let has = |name: &str, key: &str| {
            list.iter().any(|a| a["labels"]["alertname"] == name && a["labels"][key] == "processor-service")
        };
        if has("TraceErrors", "service_name") && has("RecordsDeadLettered", "service") {
            break list;
        }
        let rules = get_json(&client, &format!("{prom}/api/v1/alerts"), &[]);
        assert!(
            std::time::Instant::now() < deadline,
            "TraceErrors and RecordsDeadLettered not at alertmanager: {list:#?}\nprometheus: {rules:#?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let errors = alerts.iter().find(|a| a["labels"]["alertname"] == "TraceErrors").expect("TraceErrors");
    assert_eq!(errors["labels"]["severity"], "warning");
    assert!(
        errors["annotations"]["summary"].as_str().unwrap_or_default().starts_with("processor-service: "),
        "{errors}"
    );
    // A flowing pipeline is not stalled; no lag piles up.
    let firing = get_json(&client, &format!("{prom}/api/v1/alerts"), &[]).expect("prometheus answers");
    let names: Vec<&str> = firing["data"]["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["labels"]["alertname"].as_str())
        .collect();
    for quiet in ["PipelineStalled", "ConsumerLagGrowing", "ReferenceCacheUnavailable"] {
        assert!(!names.contains(&quiet), "{quiet} fires on a healthy pipeline: {firing}");
    }
}
