//! Span metrics, the SPM and analytics APIs, a real Prometheus scraping Spindle, and a
//! real Alertmanager receiving an alert and its resolution.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::Spindle;
use serde_json::{json, Value};
use spindle_model::Span;
use spindle_query::sketch::{exact_quantile, RELATIVE_ERROR};
use spindle_test_support::{free_port, wait_until};
use spindle_workload::Workload;

fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// `/metrics` as a client sending `accept` (none: as curl asks) gets it: OpenMetrics always.
fn metrics_text(spindle: &Spindle, accept: Option<&str>) -> String {
    let mut req = reqwest::blocking::Client::new().get(format!("http://{}/metrics", spindle.admin));
    if let Some(accept) = accept {
        req = req.header("accept", accept);
    }
    let r = req.send().unwrap();
    assert_eq!(r.headers()["content-type"], "application/openmetrics-text; version=1.0.0; charset=utf-8");
    r.text().unwrap()
}

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(program: &str, args: &[String]) -> Process {
    Process(
        Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{program} is needed by this test (apt-get install prometheus prometheus-alertmanager; scripts/test installs them): {e}")),
    )
}

#[test]
fn span_metrics_spm_analytics_and_a_real_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let mut spindle = Spindle::start(dir.path());
    // Spans of the last ten minutes, so they fall in SPM's default 1 h lookback.
    let spans = Workload::new(3).batch(300, now_nanos() - 600_000_000_000, 540_000_000_000);
    spindle.send(&spans);
    let pricing: Vec<&Span> =
        spans.iter().filter(|s| s.service_name() == "pricing" && s.name == "calculate_bsm").collect();
    let errors = pricing.iter().filter(|s| s.is_error()).count();

    // /metrics: exact call counts under the spanmetrics connector's names.
    let text = metrics_text(&spindle, None);
    let unset_calls = pricing.len() - errors;
    let line = format!(
        "traces_span_metrics_calls_total{{service_name=\"pricing\",span_name=\"calculate_bsm\",span_kind=\"SPAN_KIND_INTERNAL\",status_code=\"STATUS_CODE_UNSET\"}} {unset_calls}"
    );
    assert!(text.contains(&line), "missing {line}");
    assert!(text.contains("traces_span_metrics_duration_seconds_bucket{"));
    assert!(text.contains(&format!("spindle_spans_accepted_total{{protocol=\"otlp_http_protobuf\"}} {}", spans.len())));
    assert!(text.ends_with("\n# EOF\n"), "OpenMetrics ends with # EOF");
    assert!(text.contains("# {trace_id=\""), "OpenMetrics carries trace-id exemplars");
    // A client asking for the text format gets the same OpenMetrics (the helper checks it).
    assert!(metrics_text(&spindle, Some("text/plain; version=0.0.4")).ends_with("\n# EOF\n"));

    // Jaeger SPM: calls and latencies of the service, per operation.
    let (status, calls) = spindle.get_json(
        "/api/metrics/calls?service=pricing&spanKind=internal&groupByOperation=true&step=60000&ratePer=3600000",
    );
    assert_eq!(status, 200);
    assert_eq!(calls["name"], "service_call_rate");
    let series = calls["metrics"].as_array().unwrap();
    let bsm = series
        .iter()
        .find(|m| {
            m["labels"].as_array().unwrap().iter().any(|l| l["name"] == "operation" && l["value"] == "calculate_bsm")
        })
        .expect("calculate_bsm series");
    let last = bsm["metricPoints"].as_array().unwrap().last().unwrap();
    let rate = last["gaugeValue"]["doubleValue"].as_f64().unwrap();
    assert!((rate * 3600.0 - pricing.len() as f64).abs() < 0.5, "rate {rate}/s over an hour ≈ {} calls", pricing.len());
    let (_, latencies) =
        spindle.get_json("/api/metrics/latencies?service=pricing&spanKind=internal&quantile=0.95&ratePer=3600000");
    assert_eq!(latencies["name"], "service_latencies");
    assert!(latencies["metrics"][0]["metricPoints"][0]["gaugeValue"]["doubleValue"].as_f64().unwrap() > 0.0);
    let (status, _) = spindle.get_json("/api/metrics/latencies?service=pricing");
    assert_eq!(status, 400, "quantile is required");

    // Analytics: p99 of calculate_bsm per symbol equals brute force within the sketch error.
    let (status, stats) = spindle.get_json("/api/spindle/stats?operation=calculate_bsm&groupBy=symbol&step=10m");
    assert_eq!(status, 200);
    let groups = stats["groups"].as_array().unwrap();
    let mut by_symbol: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for s in &pricing {
        let symbol = s.attribute("symbol").unwrap().to_display_string();
        by_symbol.entry(symbol).or_default().push(s.duration_nanos());
    }
    assert_eq!(groups.len(), by_symbol.len());
    for g in groups {
        let durations = by_symbol.get_mut(g["group"].as_str().unwrap()).unwrap();
        durations.sort_unstable();
        assert_eq!(g["total"]["calls"], durations.len());
        let exact = exact_quantile(durations, 0.99).unwrap() as f64 / 1e6;
        let got = g["total"]["p99Ms"].as_f64().unwrap();
        assert!((got - exact).abs() <= RELATIVE_ERROR * exact + 0.001, "{got} vs {exact}");
    }
    let (_, graph) = spindle.get_json("/api/spindle/graph");
    let edges = graph["edges"].as_array().unwrap();
    // One node per topic in Spindle's graph; Jaeger's dependencies keep one `kafka` node.
    assert!(edges.iter().any(|e| e["parent"] == "quote-api" && e["child"] == "kafka/ledger-events"));
    assert!(edges
        .iter()
        .any(|e| e["parent"] == "kafka/ledger-events" && e["child"] == "ledger" && e["callCount"] == 300));
    let topic =
        graph["nodes"].as_array().unwrap().iter().find(|n| n["id"] == "kafka/ledger-events").expect("topic node");
    assert_eq!(
        (&topic["virtual"], &topic["kind"], &topic["system"], &topic["topic"]),
        (&json!(true), &json!("topic"), &json!("kafka"), &json!("ledger-events"))
    );
    let (_, deps) = spindle.get_json(&format!(
        "/api/dependencies?endTs={}&lookback=86400000",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
    ));
    assert!(
        deps["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["parent"] == "kafka" && d["child"] == "ledger" && d["callCount"] == 300),
        "{deps}"
    );
    let (_, hops) = spindle.get_json("/api/spindle/kafka-hops?step=1h");
    assert_eq!(hops["topics"][0]["topic"], "ledger-events");
    let hop_count: u64 =
        hops["topics"][0]["series"].as_array().unwrap().iter().map(|p| p["count"].as_u64().unwrap()).sum();
    assert_eq!(hop_count, 300);
    let (_, errs) = spindle.get_json("/api/spindle/errors");
    let total_errors: u64 = errs["groups"].as_array().unwrap().iter().map(|g| g["count"].as_u64().unwrap()).sum();
    assert_eq!(total_errors, spans.iter().filter(|s| s.is_error()).count() as u64);
    let (_, slow) = spindle.get_json("/api/spindle/slowest?service=pricing&limit=3");
    let slowest = slow["spans"].as_array().unwrap();
    assert_eq!(slowest.len(), 3);
    let trace = slowest[0]["traceID"].as_str().unwrap().to_string();
    let (_, path) = spindle.get_json(&format!("/api/spindle/traces/{trace}/critical-path"));
    assert!(!path["segments"].as_array().unwrap().is_empty());
    let other = slowest[1]["traceID"].as_str().unwrap();
    let (status, cmp) = spindle.get_json(&format!("/api/spindle/compare?a={trace}&b={other}"));
    assert_eq!(status, 200);
    assert_eq!(cmp["operations"].as_array().unwrap().len(), 10);

    // A real Prometheus scrapes /metrics; PromQL returns the call count.
    let prom_dir = tempfile::tempdir().unwrap();
    let prom_port = free_port();
    let config = prom_dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: spindle\n    static_configs:\n      - targets: ['{}']\n", spindle.admin),
    )
    .unwrap();
    let _prometheus = spawn(
        "prometheus",
        &[
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", prom_dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
        ],
    );
    let client = reqwest::blocking::Client::new();
    let query = "sum(traces_span_metrics_calls_total{service_name=\"pricing\",span_name=\"calculate_bsm\"})";
    let value = wait_until("prometheus to scrape spindle", Duration::from_secs(60), || {
        let r: Value = client
            .get(format!("http://127.0.0.1:{prom_port}/api/v1/query"))
            .query(&[("query", query)])
            .send()
            .ok()?
            .json()
            .ok()?;
        r["data"]["result"][0]["value"][1].as_str().map(str::to_string)
    });
    assert_eq!(value, pricing.len().to_string());

    // Prometheus read the whole exposition: the scrape has no error and every family has
    // the type the exposition declares (what `promtool check metrics` checked when the
    // exposition was the text format; promtool reads no OpenMetrics).
    let targets: Value =
        client.get(format!("http://127.0.0.1:{prom_port}/api/v1/targets")).send().unwrap().json().unwrap();
    let target = &targets["data"]["activeTargets"][0];
    assert_eq!((&target["health"], &target["lastError"]), (&json!("up"), &json!("")), "{targets}");
    let families: Vec<(&str, &str)> =
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split_once(' ')).collect();
    assert!(families.len() >= 10, "{families:?}");
    let metadata: Value = client
        .get(format!("http://127.0.0.1:{prom_port}/api/v1/targets/metadata"))
        .query(&[("match_target", "{job=\"spindle\"}")])
        .send()
        .unwrap()
        .json()
        .unwrap();
    let parsed: std::collections::BTreeMap<&str, &str> = metadata["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["metric"].as_str().unwrap(), m["type"].as_str().unwrap()))
        .collect();
    for (name, kind) in &families {
        assert_eq!(parsed.get(name), Some(kind), "{name} as Prometheus parsed it: {metadata}");
    }

    // Every dashboard query parses in this Prometheus and names only metrics Spindle
    // exports (or the pipeline services' own metrics).
    // Exercise the drop and failure paths so those families have samples too.
    let mut bad = Workload::new(4).trace(now_nanos());
    bad[0].trace_id = spindle_model::TraceId(0);
    spindle.send(&bad);
    let garbage = client
        .post(format!("http://{}/v1/traces", spindle.http))
        .header("content-type", "application/x-protobuf")
        .body(vec![0xff; 8])
        .send()
        .unwrap();
    assert_eq!(garbage.status().as_u16(), 400);
    let text = metrics_text(&spindle, None);
    assert!(
        text.contains("spindle_spans_dropped_total{protocol=\"otlp_http_protobuf\",reason=\"invalid\"} 1"),
        "{text}"
    );
    let exported: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    let dashboards = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/dashboards");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dashboards).unwrap() {
        let path = entry.unwrap().path();
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let Some(expr) = target["expr"].as_str() else { continue };
                let r = client
                    .get(format!("http://127.0.0.1:{prom_port}/api/v1/query"))
                    .query(&[("query", expr)])
                    .send()
                    .unwrap();
                assert_eq!(
                    r.status().as_u16(),
                    200,
                    "{}: {expr} does not parse: {}",
                    path.display(),
                    r.text().unwrap()
                );
                for name in metric_names(expr) {
                    // The seed pipeline's own metrics (`pipeline_*`) are checked against the
                    // running pipeline by apps/pipeline/tests/infrastructure.rs.
                    let known = exported.iter().any(|m| name == *m || name.starts_with(&format!("{m}_")))
                        || name == "up"
                        || name.starts_with("pipeline_");
                    assert!(known, "{}: {expr} uses {name}, which nothing exports", path.display());
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 10, "only {checked} dashboard queries");

    // Span metrics survive a clean restart.
    assert!(spindle.terminate().success());
    spindle.restart();
    let (_, calls) = spindle.get_json("/api/metrics/calls?service=pricing&spanKind=internal&ratePer=3600000");
    assert!(!calls["metrics"].as_array().unwrap().is_empty(), "span metrics gone after restart");
}

/// Metric names in a PromQL expression: identifiers outside strings, label matchers and
/// label lists (`by (…)`, `without (…)`, `on (…)`, …) that are not function calls or
/// keywords and contain an underscore (all of Spindle's do).
fn metric_names(expr: &str) -> Vec<String> {
    const LABEL_LISTS: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '"' => {
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    i += 1;
                }
                i += 1;
            }
            '{' => {
                while i < chars.len() && chars[i] != '}' {
                    i += 1;
                }
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut j = i;
                while j < chars.len() && chars[j] == ' ' {
                    j += 1;
                }
                let call = j < chars.len() && chars[j] == '(';
                if call && LABEL_LISTS.contains(&word.as_str()) {
                    while j < chars.len() && chars[j] != ')' {
                        j += 1;
                    }
                    i = j + 1;
                } else if !call && word.contains('_') && !LABEL_LISTS.contains(&word.as_str()) {
                    out.push(word);
                }
            }
            _ => i += 1,
        }
    }
    out
}

#[test]
fn promql_metric_names_are_found() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.9, sum by (le, service_name) (rate(a_b_bucket{x="y_z"}[5m]))) / on (q_r) c_d"#
        ),
        vec!["a_b_bucket", "c_d"]
    );
}

/// A real Alertmanager on a free port, ready; its port and the process (killed on drop).
fn alertmanager(dir: &std::path::Path) -> (u16, Process) {
    let am_port = free_port();
    let am_config = dir.join("alertmanager.yml");
    std::fs::write(&am_config, "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n").unwrap();
    let process = spawn(
        "prometheus-alertmanager",
        &[
            format!("--config.file={}", am_config.display()),
            format!("--storage.path={}", dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{am_port}"),
            "--cluster.listen-address=".to_string(),
        ],
    );
    let client = reqwest::blocking::Client::new();
    wait_until("alertmanager to start", Duration::from_secs(30), || {
        client.get(format!("http://127.0.0.1:{am_port}/-/ready")).send().ok().filter(|r| r.status().is_success())
    });
    (am_port, process)
}

const PRICING_ERRORS_RULE: &str = "evaluation_interval: 300ms\nrules:\n  - name: PricingErrors\n    service: pricing\n    window: 4s\n    condition: {type: error_trace}\n    labels: {severity: page}\n    annotations: {summary: pricing failed}\n";

/// One trace of the reference workload, now, whose pricing span failed; and that trace's id.
fn failing_pricing_trace(seed: u64) -> (Vec<Span>, spindle_model::TraceId) {
    let mut spans = Workload::new(seed).trace(now_nanos());
    let failing = spans.iter_mut().find(|s| s.service_name() == "pricing").unwrap();
    failing.status = spindle_model::Status { code: spindle_model::StatusCode::Error, message: "boom".into() };
    let id = failing.trace_id;
    (spans, id)
}

#[test]
fn alerts_fire_and_resolve_in_a_real_alertmanager() {
    let am_dir = tempfile::tempdir().unwrap();
    let (am_port, _alertmanager) = alertmanager(am_dir.path());
    let client = reqwest::blocking::Client::new();

    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, PRICING_ERRORS_RULE).unwrap();
    let data = dir.path().join("data");
    let spindle = Spindle::start_with(
        &data,
        &["--alert-rules", rules.to_str().unwrap(), "--alertmanager-url", &format!("http://127.0.0.1:{am_port}")],
    );
    let (_, state) = spindle.get_json("/api/spindle/alerts");
    assert_eq!(state["alerts"][0]["name"], "PricingErrors");

    // One error span in pricing, now.
    let (spans, failing_trace) = failing_pricing_trace(5);
    spindle.send(&spans);

    let alert = wait_until("the alert to reach alertmanager", Duration::from_secs(30), || {
        let alerts: Value = client.get(format!("http://127.0.0.1:{am_port}/api/v2/alerts")).send().ok()?.json().ok()?;
        alerts.as_array()?.iter().find(|a| a["labels"]["alertname"] == "PricingErrors").cloned()
    });
    assert_eq!(alert["status"]["state"], "active");
    assert_eq!(alert["labels"]["severity"], "page");
    assert_eq!(alert["labels"]["service"], "pricing");
    assert!(alert["annotations"]["example_traces"].as_str().unwrap().contains(&failing_trace.to_jaeger_hex()));
    let (_, state) = spindle.get_json("/api/spindle/alerts");
    assert_eq!(state["alerts"][0]["state"], "firing");

    // No more errors: once the window passes, the alert resolves.
    wait_until("the alert to resolve", Duration::from_secs(30), || {
        let alerts: Value =
            client.get(format!("http://127.0.0.1:{am_port}/api/v2/alerts?active=true")).send().ok()?.json().ok()?;
        let still = alerts.as_array()?.iter().any(|a| a["labels"]["alertname"] == "PricingErrors");
        (!still).then_some(())
    });
    let (_, state) = spindle.get_json("/api/spindle/alerts");
    assert_eq!(state["alerts"][0]["state"], "inactive");
}

/// Alert state across instances (docs/adr/020): two query instances over one ClickHouse run
/// the same rules against the same Alertmanager; spans taken by a third instance make both
/// fire, and Alertmanager holds the alert once.
#[test]
fn instances_over_clickhouse_fire_the_same_alert_once() {
    let am_dir = tempfile::tempdir().unwrap();
    let (am_port, _alertmanager) = alertmanager(am_dir.path());
    let clickhouse = spindle_test_support::ClickHouse::start();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, PRICING_ERRORS_RULE).unwrap();
    let am_url = format!("http://127.0.0.1:{am_port}");
    let on_clickhouse = |name: &str, args: &[&str]| {
        let mut all = vec!["--storage", "clickhouse", "--clickhouse-url", &clickhouse.http_url];
        all.extend_from_slice(args);
        Spindle::start_with(&dir.path().join(name), &all)
    };
    let writer = on_clickhouse("writer", &[]);
    let query_args = ["--target", "query", "--alert-rules", rules.to_str().unwrap(), "--alertmanager-url", &am_url];
    let watchers = [on_clickhouse("query-1", &query_args), on_clickhouse("query-2", &query_args)];

    let (spans, failing_trace) = failing_pricing_trace(6);
    writer.send(&spans);
    for watcher in &watchers {
        wait_until("each query instance to fire", Duration::from_secs(30), || {
            let (_, state) = watcher.get_json("/api/spindle/alerts");
            (state["alerts"][0]["state"] == "firing").then_some(())
        });
    }
    let client = reqwest::blocking::Client::new();
    let alerts: Value = client.get(format!("{am_url}/api/v2/alerts?active=true")).send().unwrap().json().unwrap();
    let firing: Vec<&Value> =
        alerts.as_array().unwrap().iter().filter(|a| a["labels"]["alertname"] == "PricingErrors").collect();
    assert_eq!(firing.len(), 1, "Alertmanager deduplicates what both instances send: {alerts}");
    assert!(firing[0]["annotations"]["example_traces"].as_str().unwrap().contains(&failing_trace.to_jaeger_hex()));
}
