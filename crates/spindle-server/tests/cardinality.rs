//! Careless clients against the real binary (issue 16): a service with an id in its span
//! names, clocks in 2076 and 1990, and a damaged span-metrics state file.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use common::Spindle;
use spindle_model::{KeyValue, Resource, Span, SpanKind, StatusCode, TraceId};
use spindle_workload::Workload;

const SERVICE: &str = "users-api";
const SKEWED: &str = "skewed-clock";
const LIMIT: usize = 50;
const NAMES: usize = 2_000;
/// 2076-06-20 and 1990-01-01, in unix nanoseconds.
const YEAR_2076: u64 = 3_360_000_000_000_000_000;
const YEAR_1990: u64 = 631_152_000_000_000_000;

fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

fn resource(service: &str) -> Arc<Resource> {
    Arc::new(Resource { attributes: vec![KeyValue::string("service.name", service)], ..Default::default() })
}

/// Spans of `service`, one per name, starting at `start` (server spans without error, so
/// each name is exactly one series).
fn named_spans(service: &str, names: &[String], start: u64) -> Vec<Span> {
    let resource = resource(service);
    let template = Workload::new(5).batch(names.len().div_ceil(10), start, 60_000_000_000);
    names
        .iter()
        .zip(template)
        .map(|(name, mut span)| {
            span.resource = Arc::clone(&resource);
            span.name = name.as_str().into();
            span.kind = SpanKind::Server;
            span.status.code = StatusCode::Unset;
            span
        })
        .collect()
}

/// Whole traces of a service with a skewed clock starting at `start` (`seed` makes their ids).
fn skewed_traces(seed: u64, start: u64) -> Vec<Span> {
    let resource = resource(SKEWED);
    let mut spans = Workload::new(seed).batch(3, start, 1_000_000);
    for span in &mut spans {
        span.resource = Arc::clone(&resource);
    }
    spans
}

fn metrics_text(spindle: &Spindle) -> String {
    reqwest::blocking::get(format!("http://{}/metrics", spindle.admin)).unwrap().text().unwrap()
}

/// The `traces_span_metrics_calls_total` lines of `service`.
fn calls_lines(text: &str, service: &str) -> Vec<String> {
    let prefix = format!("traces_span_metrics_calls_total{{service_name=\"{service}\",");
    text.lines().filter(|l| l.starts_with(&prefix)).map(str::to_string).collect()
}

fn value(line: &str) -> f64 {
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

fn limit_hits(text: &str, limit: &str) -> f64 {
    let prefix = format!("spindle_limit_hits_total{{limit=\"{limit}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0.0, |v| v.parse().unwrap())
}

/// The operations of the SPM API's calls for `service` over the hour before `end_ms`.
fn spm_operations(spindle: &Spindle, service: &str, end_ms: u64) -> Vec<String> {
    let (status, body) = spindle.get_json(&format!(
        "/api/metrics/calls?service={service}&groupByOperation=true&endTs={end_ms}&lookback=3600000&step=60000"
    ));
    assert_eq!(status, 200, "{body}");
    body["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| {
            m["labels"].as_array().unwrap().iter().find(|l| l["name"] == "operation").map(|l| l["value"].to_string())
        })
        .collect()
}

fn trace_span_count(spindle: &Spindle, trace: TraceId) -> usize {
    let (status, body) = spindle.get_json(&format!("/api/traces/{}", trace.to_hex()));
    assert_eq!(status, 200, "trace {} of a skewed clock is stored: {body}", trace.to_hex());
    body["data"][0]["spans"].as_array().map_or(0, Vec::len)
}

#[test]
fn span_names_past_the_limit_overflow_and_skewed_clocks_make_no_minutes() {
    let dir = tempfile::tempdir().unwrap();
    let mut spindle = Spindle::start_with(dir.path(), &["--max-span-metric-series-per-service", &LIMIT.to_string()]);
    let now = now_nanos();
    let names: Vec<String> = (0..NAMES).map(|i| format!("GET /users/{i}")).collect();
    spindle.send(&named_spans(SERVICE, &names, now - 300_000_000_000));
    let future = skewed_traces(9, YEAR_2076);
    let past = skewed_traces(10, YEAR_1990);
    spindle.send(&future);
    spindle.send(&past);

    // /metrics: LIMIT series of their own, the rest in one overflow series, all counted.
    let text = metrics_text(&spindle);
    let lines = calls_lines(&text, SERVICE);
    let (overflow, named): (Vec<_>, Vec<_>) = lines.iter().partition(|l| l.contains("otel_metric_overflow=\"true\""));
    assert_eq!(named.len(), LIMIT, "{lines:#?}");
    assert_eq!(overflow.len(), 1, "{lines:#?}");
    assert!(!overflow[0].contains("span_name="), "{}", overflow[0]);
    assert_eq!(value(overflow[0]), (NAMES - LIMIT) as f64);
    assert_eq!(lines.iter().map(|l| value(l)).sum::<f64>(), NAMES as f64, "every span is counted once");
    assert_eq!(limit_hits(&text, "span_metric_series"), (NAMES - LIMIT) as f64);

    // The skewed spans are stored with their own times but derive no span metrics.
    assert!(calls_lines(&text, SKEWED).is_empty(), "{text}");
    assert_eq!(limit_hits(&text, "span_time_window"), (future.len() + past.len()) as f64);
    for spans in [&future, &past] {
        let trace = spans[0].trace_id;
        let expected = spans.iter().filter(|s| s.trace_id == trace).count();
        assert_eq!(trace_span_count(&spindle, trace), expected);
    }

    // SPM answers, by operation the same LIMIT operations and the overflow.
    let now_ms = now / 1_000_000;
    let ops = spm_operations(&spindle, SERVICE, now_ms);
    assert_eq!(ops.len(), LIMIT + 1, "{ops:?}");
    assert!(ops.contains(&"\"otel.metric.overflow\"".to_string()), "{ops:?}");
    // No minute exists at the client's 2076 or 1990 clock.
    assert!(spm_operations(&spindle, SKEWED, YEAR_2076 / 1_000_000 + 60_000).is_empty());
    assert!(spm_operations(&spindle, SKEWED, YEAR_1990 / 1_000_000 + 60_000).is_empty());

    // Across a restart (the minutes are snapshotted at shutdown) the limit holds: new names
    // still overflow, an admitted name keeps its own series.
    let admitted: Vec<String> =
        named.iter().map(|l| l.split("span_name=\"").nth(1).unwrap().split('"').next().unwrap().to_string()).collect();
    assert!(spindle.terminate().success());
    let mut spindle = Spindle::start_with(dir.path(), &["--max-span-metric-series-per-service", &LIMIT.to_string()]);
    let more: Vec<String> =
        (NAMES..NAMES + 10).map(|i| format!("GET /users/{i}")).chain([admitted[0].clone()]).collect();
    spindle.send(&named_spans(SERVICE, &more, now_nanos() - 60_000_000_000));
    let text = metrics_text(&spindle);
    assert_eq!(limit_hits(&text, "span_metric_series"), 10.0, "{}", calls_lines(&text, SERVICE).join("\n"));
    let lines = calls_lines(&text, SERVICE);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains(&format!("span_name=\"{}\"", admitted[0])) && value(l) == 1.0));
    let ops: HashSet<String> = spm_operations(&spindle, SERVICE, now_nanos() / 1_000_000).into_iter().collect();
    assert_eq!(ops.len(), LIMIT + 1, "{ops:?}");
    spindle.terminate();
}

#[test]
fn an_unreadable_span_metrics_state_is_set_aside_and_the_server_starts() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("spanmetrics");
    std::fs::create_dir_all(&state_dir).unwrap();
    let garbage = b"SPNDLSPM\xff\xff\xff\xffnot a snapshot from this or any release".to_vec();
    std::fs::write(state_dir.join("state.bin"), &garbage).unwrap();

    let mut spindle = Spindle::start(dir.path());
    let aside: Vec<_> = std::fs::read_dir(&state_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("state.bin.unreadable-"))
        .collect();
    assert_eq!(aside.len(), 1, "set aside, not deleted");
    assert_eq!(std::fs::read(&aside[0]).unwrap(), garbage);

    // Span metrics work from empty, and the next snapshot does not touch the file set aside.
    let spans = named_spans("after-restart", &["GET /a".to_string()], now_nanos() - 60_000_000_000);
    spindle.send(&spans);
    let ops = spm_operations(&spindle, "after-restart", now_nanos() / 1_000_000);
    assert_eq!(ops, vec!["\"GET /a\"".to_string()]);
    assert!(spindle.terminate().success());
    assert!(state_dir.join("state.bin").exists());
    assert_eq!(std::fs::read(&aside[0]).unwrap(), garbage);
}

/// One span of `service` in a trace of its own (`seed` makes its ids).
fn service_span(service: &str, seed: u64, start: u64) -> Span {
    let mut span = Workload::new(seed).batch(1, start, 1_000_000).remove(0);
    span.resource = resource(service);
    span.name = "GET /".into();
    span.kind = SpanKind::Server;
    span.status.code = StatusCode::Unset;
    span
}

#[test]
fn services_past_the_limit_share_one_overflow_set_and_are_stored_searchable_but_unlisted() {
    const MAX_SERVICES: usize = 5;
    const SERVICES: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let mut spindle = Spindle::start_with(dir.path(), &["--max-services", &MAX_SERVICES.to_string()]);
    let start = now_nanos() - 60_000_000_000;
    let spans: Vec<Span> =
        (0..SERVICES).map(|i| service_span(&format!("fleet-{i:02}"), 1000 + i as u64, start)).collect();
    spindle.send(&spans);

    // /metrics: MAX_SERVICES services with series of their own, the rest in the overflow set.
    let text = metrics_text(&spindle);
    let calls: Vec<&str> = text.lines().filter(|l| l.starts_with("traces_span_metrics_calls_total{")).collect();
    let services: HashSet<&str> = calls.iter().map(|l| l.split('"').nth(1).unwrap()).collect();
    assert!(services.contains("otel.metric.overflow"), "{calls:#?}");
    assert_eq!(services.len(), MAX_SERVICES + 1, "{calls:#?}");
    let overflow = calls_lines(&text, "otel.metric.overflow");
    assert_eq!(overflow.len(), 1, "{overflow:#?}");
    assert!(overflow[0].contains("otel_metric_overflow=\"true\"") && !overflow[0].contains("span_name="));
    assert_eq!(value(&overflow[0]), (SERVICES - MAX_SERVICES) as f64);
    assert_eq!(calls.iter().map(|l| value(l)).sum::<f64>(), SERVICES as f64, "every span is counted once");
    // Counted by span metrics and, fed at the scrape, by the store's catalog.
    assert!(limit_hits(&text, "services") >= (SERVICES - MAX_SERVICES) as f64, "{text}");

    // The SPM API has the overflow set under its own service name.
    let ops = spm_operations(&spindle, "otel.metric.overflow", now_nanos() / 1_000_000);
    assert_eq!(ops, vec!["\"otel.metric.overflow\"".to_string()]);

    // /api/services lists MAX_SERVICES, the same ones span metrics admitted (first seen).
    let (status, body) = spindle.get_json("/api/services");
    assert_eq!(status, 200, "{body}");
    let listed: Vec<String> =
        body["data"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
    assert_eq!(listed.len(), MAX_SERVICES, "{listed:?}");
    for s in &listed {
        assert!(services.contains(s.as_str()), "{s} listed and with series of its own: {services:?}");
    }

    // An unlisted service's span is stored: found by trace id and by a search naming it.
    let unlisted = spans.iter().find(|s| !listed.iter().any(|l| l == s.service_name())).unwrap();
    let trace = unlisted.trace_id.to_hex();
    let (status, body) = spindle.get_json(&format!("/api/traces/{trace}"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"][0]["spans"].as_array().unwrap().len(), 1, "{body}");
    let found = |spindle: &Spindle| {
        let (status, body) =
            spindle.get_json(&format!("/api/traces?service={}&lookback=1h&limit=20", unlisted.service_name()));
        assert_eq!(status, 200, "{body}");
        body["data"].as_array().unwrap().iter().map(|t| t["traceID"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    assert_eq!(found(&spindle), vec![trace.clone()]);

    // Across a restart the list and the admitted services hold; the span is still found.
    assert!(spindle.terminate().success());
    let mut spindle = Spindle::start_with(dir.path(), &["--max-services", &MAX_SERVICES.to_string()]);
    spindle.send(&[service_span("fleet-new", 2000, now_nanos() - 60_000_000_000)]);
    let (_, body) = spindle.get_json("/api/services");
    let after: Vec<String> = body["data"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
    assert_eq!(after, listed);
    let text = metrics_text(&spindle);
    assert!(calls_lines(&text, "fleet-new").is_empty(), "{text}");
    assert_eq!(value(&calls_lines(&text, "otel.metric.overflow")[0]), 1.0);
    assert!(limit_hits(&text, "services") >= 1.0, "{text}");
    assert_eq!(found(&spindle), vec![trace]);
    spindle.terminate();
}
