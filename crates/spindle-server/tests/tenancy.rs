//! Tenants that cannot see each other, against the real binary: spans sent as tenant A, as
//! tenant B and with no tenant, then every read API asked as each of them (and with a
//! forged header against a token bound to another tenant), plus the tenant limits.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::Spindle;
use prost::Message;
use spindle_model::{KeyValue, Resource, Span, TraceId};
use spindle_workload::Workload;

const A: &str = "team-a";
const B: &str = "team-b";
/// What the tests call the spans sent without a tenant (the default tenant's).
const NONE: &str = "no-tenant";

fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// Traces whose services are named after `label` (`<label>-<service>`), so any answer
/// holding another tenant's data shows it by name.
fn traces_of(label: &str, seed: u64) -> Vec<Span> {
    let mut spans = Workload::new(seed).batch(20, now_nanos() - 120_000_000_000, 60_000_000_000);
    let mut renamed: HashMap<String, Arc<Resource>> = HashMap::new();
    for span in &mut spans {
        let service = format!("{label}-{}", span.service_name());
        let resource = renamed
            .entry(service.clone())
            .or_insert_with(|| {
                let mut r = (*span.resource).clone();
                r.attributes.retain(|kv| kv.key != "service.name");
                r.attributes.push(KeyValue::string("service.name", service));
                Arc::new(r)
            })
            .clone();
        span.resource = resource;
    }
    spans
}

fn otlp_body(spans: &[Span]) -> Vec<u8> {
    opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
        resource_spans: spindle_codec::otlp::spans_to_resource_spans(spans),
    }
    .encode_to_vec()
}

/// POSTs `spans` over OTLP/HTTP with the given headers; the status.
fn post(spindle: &Spindle, spans: &[Span], headers: &[(&str, &str)]) -> u16 {
    let mut request = reqwest::blocking::Client::new()
        .post(format!("http://{}/v1/traces", spindle.http))
        .header("content-type", "application/x-protobuf")
        .body(otlp_body(spans));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    request.send().unwrap().status().as_u16()
}

fn get(spindle: &Spindle, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut request = reqwest::blocking::Client::new().get(spindle.query_url(path));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let r = request.send().unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

fn first_trace(spans: &[Span]) -> TraceId {
    spans[0].trace_id
}

/// Every read API, with the parameters that make it answer about `label`'s data.
fn read_paths(label: &str, trace: TraceId) -> Vec<String> {
    let id = trace.to_hex();
    let now_us = now_nanos() / 1000;
    let start_us = now_us - 3_600_000_000;
    let svc = format!("{label}-frontend");
    let window = format!("start={start_us}&end={now_us}");
    let seconds = format!("start={}&end={}", start_us / 1_000_000, now_us / 1_000_000 + 1);
    let rfc = |us: u64| chrono_like(us);
    vec![
        "/api/services".to_string(),
        format!("/api/services/{svc}/operations"),
        format!("/api/operations?service={svc}"),
        format!("/api/traces?service={svc}&limit=50&{window}"),
        format!("/api/traces/{id}"),
        format!("/api/dependencies?endTs={}&lookback=3600000", now_us / 1000),
        "/api/v3/services".to_string(),
        format!("/api/v3/operations?service={svc}"),
        format!(
            "/api/v3/traces?query.service_name={svc}&query.start_time_min={}&query.start_time_max={}",
            rfc(start_us),
            rfc(now_us)
        ),
        format!("/api/v3/traces/{id}"),
        format!(
            "/api/v3/trace-summaries?query.service_name={svc}&query.start_time_min={}&query.start_time_max={}",
            rfc(start_us),
            rfc(now_us)
        ),
        format!("/api/metrics/calls?service={svc}&endTs={}&lookback=3600000&step=60000&ratePer=600000", now_us / 1000),
        format!("/api/spindle/stats?{window}"),
        format!("/api/spindle/stats?service={svc}&{window}"),
        format!("/api/spindle/slowest?{window}"),
        format!("/api/spindle/outliers?{window}"),
        format!("/api/spindle/errors?{window}"),
        format!("/api/spindle/traces/{id}/critical-path"),
        format!("/api/spindle/compare?a={id}&b={id}"),
        format!("/api/spindle/kafka-hops?{window}"),
        format!("/api/spindle/graph?{window}"),
        "/api/spindle/alerts".to_string(),
        // Tempo's API (unix seconds).
        format!("/api/search?q=%7B%20%7D&{seconds}"),
        format!("/api/search?q=%7B%20resource.service.name%20%3D%20%22{svc}%22%20%7D%20%3E%3E%20%7B%20%7D&{seconds}"),
        format!("/api/v2/traces/{id}"),
        format!("/tempo/api/traces/{id}"),
        format!("/api/v2/search/tags?{seconds}"),
        format!("/api/v2/search/tag/resource.service.name/values?{seconds}"),
        format!("/api/search/tag/service.name/values?{seconds}"),
        format!("/api/metrics/query_range?q=%7B%7D%20%7C%20rate()%20by%20(resource.service.name)&{seconds}&step=60s"),
    ]
}

/// RFC 3339 of unix microseconds, as the v3 API takes them.
fn chrono_like(us: u64) -> String {
    let secs = us / 1_000_000;
    let days = secs / 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    let rem = secs % 86_400;
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The labels and trace ids of everyone's data, to look for in answers.
struct Sent {
    traces: HashMap<&'static str, TraceId>,
}

impl Sent {
    /// Asserts that `body` (an answer to `who`) mentions nobody else's services or traces.
    fn assert_only(&self, who: &str, path: &str, body: &str) {
        for (label, trace) in &self.traces {
            if *label == who {
                continue;
            }
            assert!(!body.contains(&format!("{label}-")), "{who} read {path} and saw {label}'s services: {body}");
            assert!(!body.contains(&trace.to_hex()), "{who} read {path} and saw {label}'s trace: {body}");
        }
    }
}

fn send_everyone(spindle: &Spindle) -> Sent {
    let mut traces = HashMap::new();
    for (label, seed, headers) in
        [(A, 11, vec![("x-scope-orgid", A)]), (B, 12, vec![("x-scope-orgid", B)]), (NONE, 13, vec![])]
    {
        let spans = traces_of(label, seed);
        assert_eq!(post(spindle, &spans, &headers), 200, "sending as {label}");
        traces.insert(label, first_trace(&spans));
    }
    Sent { traces }
}

/// Asks every read API as each tenant; each sees its own data and nobody else's.
fn assert_isolated(spindle: &Spindle, sent: &Sent, as_header: &dyn Fn(&str) -> Vec<(String, String)>) {
    for who in [A, B, NONE] {
        let headers = as_header(who);
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let trace = sent.traces[who];
        for path in read_paths(who, trace) {
            let (status, body) = get(spindle, &path, &headers);
            assert!(status == 200 || status == 404, "{who} {path}: {status} {body}");
            sent.assert_only(who, &path, &body);
        }
        // And each sees its own, so the checks above could fail.
        let (_, services) = get(spindle, "/api/services", &headers);
        assert!(services.contains(&format!("{who}-frontend")), "{who} does not see its services: {services}");
        let (status, own) = get(spindle, &format!("/api/traces/{}", trace.to_hex()), &headers);
        assert_eq!(status, 200, "{who} reads its own trace: {own}");
        for (label, other) in &sent.traces {
            if *label != who {
                let (status, _) = get(spindle, &format!("/api/traces/{}", other.to_hex()), &headers);
                assert_eq!(status, 404, "{who} must not find {label}'s trace");
            }
        }
    }
}

#[test]
fn tenants_named_by_header_see_only_their_own_spans_in_every_read_api_and_across_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut spindle = Spindle::start(dir.path());
    let sent = send_everyone(&spindle);
    let by_header = |who: &str| {
        if who == NONE {
            vec![]
        } else {
            vec![("x-scope-orgid".to_string(), who.to_string())]
        }
    };
    assert_isolated(&spindle, &sent, &by_header);

    // Span metrics: the tenants' series carry their tenant, the default tenant's none.
    let metrics = reqwest::blocking::get(format!("http://{}/metrics", spindle.admin)).unwrap().text().unwrap();
    let line = |service: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with("traces_span_metrics_calls_total{") && l.contains(&format!("\"{service}\"")))
            .unwrap_or_else(|| panic!("no span metrics of {service}"))
            .to_string()
    };
    assert!(line("team-a-frontend").contains("tenant=\"team-a\""));
    assert!(line("team-b-frontend").contains("tenant=\"team-b\""));
    assert!(!line("no-tenant-frontend").contains("tenant="));

    // The tenants' stores live in their own directories and come back after kill -9.
    assert!(dir.path().join("tenants").join(A).is_dir());
    spindle.restart();
    assert_isolated(&spindle, &sent, &by_header);
}

#[test]
fn a_token_bound_to_a_tenant_cannot_reach_another_with_a_forged_header() {
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("auth.toml");
    std::fs::write(
        &auth,
        format!(
            r#"
[[token]]
name = "a"
token = "token-of-a"
read = ["{A}"]
write = ["{A}"]
tenant = "{A}"

[[token]]
name = "b"
token = "token-of-b"
read = ["{B}"]
write = ["{B}"]
tenant = "{B}"

[[token]]
name = "ops"
token = "token-of-ops"
read = ["*"]
write = ["single-tenant"]
"#
        ),
    )
    .unwrap();
    let spindle = Spindle::start_with(&dir.path().join("data"), &["--auth-file", auth.to_str().unwrap()]);
    let bearer = |t: &str| format!("Bearer token-of-{t}");
    let (ta, tb, tops) = (bearer("a"), bearer("b"), bearer("ops"));

    let spans_a = traces_of(A, 21);
    let spans_b = traces_of(B, 22);
    let spans_none = traces_of(NONE, 23);
    // Without a header each token writes to its own tenant.
    assert_eq!(post(&spindle, &spans_a, &[("authorization", &ta)]), 200);
    assert_eq!(post(&spindle, &spans_b, &[("authorization", &tb)]), 200);
    assert_eq!(post(&spindle, &spans_none, &[("authorization", &tops)]), 200);
    // A forged header does not move a token to another tenant, for writes or reads.
    assert_eq!(post(&spindle, &traces_of(A, 24), &[("authorization", &ta), ("x-scope-orgid", B)]), 403);
    assert_eq!(post(&spindle, &traces_of(A, 25), &[("authorization", &ta), ("x-scope-orgid", "single-tenant")]), 403);
    let sent = Sent {
        traces: [(A, first_trace(&spans_a)), (B, first_trace(&spans_b)), (NONE, first_trace(&spans_none))]
            .into_iter()
            .collect(),
    };
    for path in read_paths(B, sent.traces[B]) {
        let (status, body) = get(&spindle, &path, &[("authorization", &ta), ("x-scope-orgid", B)]);
        assert_eq!(status, 403, "token a, forged header for b, {path}: {body}");
        sent.assert_only(A, &path, &body);
    }
    // With and without the header (naming its own tenant), each token reads its own only.
    let as_token = |who: &str| {
        let token = match who {
            A => ta.clone(),
            B => tb.clone(),
            _ => tops.clone(),
        };
        vec![("authorization".to_string(), token)]
    };
    assert_isolated(&spindle, &sent, &as_token);
    let as_token_and_header = |who: &str| {
        let mut h = as_token(who);
        h.push(("x-scope-orgid".to_string(), if who == NONE { "single-tenant".into() } else { who.to_string() }));
        h
    };
    assert_isolated(&spindle, &sent, &as_token_and_header);
    // The ops token reads every tenant by naming it.
    let (_, services) = get(&spindle, "/api/services", &[("authorization", &tops), ("x-scope-orgid", A)]);
    assert!(services.contains("team-a-frontend"), "{services}");
}

#[test]
fn tenant_limits_refuse_what_is_over_them_and_count_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("spindle.toml");
    std::fs::write(&config, "max_tenants = 3\n\n[tenants.slow]\ningest_rate = 100\n").unwrap();
    let spindle = Spindle::start_with(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);
    let spans = |seed| traces_of("t", seed);
    // Rate: a full bucket lets one batch through, the next at once is over the rate.
    assert_eq!(post(&spindle, &spans(31), &[("x-scope-orgid", "slow")]), 200);
    assert_eq!(post(&spindle, &spans(32), &[("x-scope-orgid", "slow")]), 429);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(post(&spindle, &spans(33), &[("x-scope-orgid", "slow")]), 200);
    // Tenants: the default one and two more.
    assert_eq!(post(&spindle, &spans(34), &[("x-scope-orgid", "second")]), 200);
    assert_eq!(post(&spindle, &spans(35), &[("x-scope-orgid", "third")]), 429);
    assert_eq!(post(&spindle, &spans(36), &[]), 200);
    // An invalid tenant name is a bad request, not a directory.
    assert_eq!(post(&spindle, &spans(37), &[("x-scope-orgid", "../etc")]), 400);
    assert!(!dir.path().join("etc").exists());
    // Reading a tenant without data creates nothing.
    let (status, body) = get(&spindle, "/api/services", &[("x-scope-orgid", "nobody")]);
    assert_eq!(status, 200, "{body}");
    assert!(!dir.path().join("data").join("tenants").join("nobody").exists());
    let metrics = reqwest::blocking::get(format!("http://{}/metrics", spindle.admin)).unwrap().text().unwrap();
    assert!(metrics.contains("spindle_limit_hits_total{limit=\"tenant_ingest_rate\"}"), "{metrics}");
    assert!(metrics.contains("spindle_limit_hits_total{limit=\"tenants\"} 1"), "{metrics}");
}
