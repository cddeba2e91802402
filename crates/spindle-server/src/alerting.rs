//! Alerting: rules from a YAML file, evaluated on an interval over stored spans, firing
//! and resolving to Alertmanager's v2 API and to generic webhooks.
//!
//! A rule is a span filter, a window and a condition (a latency quantile above a
//! threshold, an error ratio above a threshold, a span rate below a threshold, or any
//! error span at all). Like Prometheus, a rule is `pending` until its condition has held
//! for `for`, then `firing`; while firing it is re-sent every evaluation with an `endsAt`
//! a few intervals ahead, and once the condition clears it is sent once more with
//! `endsAt` = now, which resolves it in Alertmanager.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use serde_json::{json, Value};
use spindle_model::{SpanKind, TraceId};
use spindle_query::QueryService;

use crate::tenancy::Tenants;
use spindle_store::TraceQuery;

use crate::api::params::{format_rfc3339_millis, now_unix_nano, parse_go_duration};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    evaluation_interval: Option<String>,
    rules: Vec<RuleSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    name: String,
    /// The tenant whose spans the rule watches; the default tenant when unset.
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    operation: Option<String>,
    #[serde(default)]
    span_kind: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default = "default_window")]
    window: String,
    #[serde(default, rename = "for")]
    for_: Option<String>,
    condition: Condition,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

fn default_window() -> String {
    "5m".into()
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    /// The `quantile` of matching span durations is above `threshold_ms`.
    LatencyAbove { quantile: f64, threshold_ms: f64 },
    /// Errors / calls of matching spans is above `threshold` (0..1).
    ErrorRatioAbove { threshold: f64 },
    /// Matching spans per second are below `per_second`.
    RateBelow { per_second: f64 },
    /// Any matching span has error status.
    ErrorTrace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Inactive,
    Pending,
    Firing,
}

struct Rule {
    spec: RuleSpec,
    query: TraceQuery,
    window: u64,
    hold: u64,
}

#[derive(Debug, Clone)]
struct RuleState {
    state: State,
    active_since: u64,
    value: Option<f64>,
    examples: Vec<TraceId>,
    last_evaluation: u64,
}

pub struct Alerting {
    rules: Vec<Rule>,
    states: Mutex<Vec<RuleState>>,
    pub interval: Duration,
    alertmanagers: Vec<String>,
    webhooks: Vec<String>,
    public_url: String,
    client: reqwest::Client,
}

fn duration(name: &str, text: &str) -> anyhow::Result<u64> {
    parse_go_duration(text).with_context(|| format!("invalid {name} {text:?}: expected a duration such as 30s or 5m"))
}

impl Alerting {
    pub fn load(
        path: &Path,
        alertmanagers: Vec<String>,
        webhooks: Vec<String>,
        public_url: String,
    ) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading alert rules {}", path.display()))?;
        let file: RulesFile =
            serde_yaml_ng::from_str(&text).with_context(|| format!("parsing alert rules {}", path.display()))?;
        let interval = Duration::from_nanos(
            duration("evaluation_interval", file.evaluation_interval.as_deref().unwrap_or("15s"))?.max(100_000_000),
        );
        let mut rules = Vec::new();
        for spec in file.rules {
            let ctx = || format!("alert rule {:?}", spec.name);
            let span_kind = match &spec.span_kind {
                None => None,
                Some(k) => {
                    Some(SpanKind::from_jaeger_str(k).with_context(|| format!("{}: invalid span_kind {k:?}", ctx()))?)
                }
            };
            if let Condition::LatencyAbove { quantile, .. } = spec.condition {
                anyhow::ensure!(quantile > 0.0 && quantile <= 1.0, "{}: quantile must be in (0, 1]", ctx());
            }
            if let Some(tenant) = &spec.tenant {
                crate::tenancy::check_name(tenant).with_context(ctx)?;
            }
            let window = duration("window", &spec.window).with_context(ctx)?;
            anyhow::ensure!(window > 0, "{}: window must be positive", ctx());
            let hold = duration("for", spec.for_.as_deref().unwrap_or("0s")).with_context(ctx)?;
            let query = TraceQuery {
                service: spec.service.clone(),
                operation: spec.operation.clone(),
                span_kind,
                attributes: spec.tags.clone().into_iter().collect(),
                limit: usize::MAX,
                ..TraceQuery::default()
            };
            rules.push(Rule { spec, query, window, hold });
        }
        let states = rules
            .iter()
            .map(|_| RuleState {
                state: State::Inactive,
                active_since: 0,
                value: None,
                examples: Vec::new(),
                last_evaluation: 0,
            })
            .collect();
        Ok(Alerting {
            rules,
            states: Mutex::new(states),
            interval,
            alertmanagers,
            webhooks,
            public_url: public_url.trim_end_matches('/').to_string(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .context("building the alert http client")?,
        })
    }

    /// Evaluates every rule once at `now` over the spans of its tenant (`query_of` gives the
    /// queries of a tenant: `None` for the default one); returns the alerts to send.
    pub fn evaluate(&self, query_of: &dyn Fn(Option<&str>) -> QueryService, now: u64) -> Vec<Value> {
        let mut outgoing = Vec::new();
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        for (rule, state) in self.rules.iter().zip(states.iter_mut()) {
            let window = TraceQuery {
                start_time_min_unix_nano: now.saturating_sub(rule.window),
                start_time_max_unix_nano: now,
                ..rule.query.clone()
            };
            let query = query_of(rule.spec.tenant.as_deref());
            let (active, value, examples) = match check(rule, &window, &query) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(rule = %rule.spec.name, error = %e, "alert rule evaluation failed");
                    continue;
                }
            };
            state.value = value;
            state.last_evaluation = now;
            let previous = state.state;
            if active {
                if previous == State::Inactive {
                    state.active_since = now;
                }
                state.examples = examples;
                state.state =
                    if now.saturating_sub(state.active_since) >= rule.hold { State::Firing } else { State::Pending };
                if state.state == State::Firing {
                    let ends = now + 4 * self.interval.as_nanos() as u64;
                    outgoing.push(self.alert_json(rule, state, ends, "firing"));
                }
            } else {
                state.state = State::Inactive;
                if previous == State::Firing {
                    outgoing.push(self.alert_json(rule, state, now, "resolved"));
                }
            }
            if previous != state.state {
                tracing::info!(rule = %rule.spec.name, from = ?previous, to = ?state.state, value = ?state.value, "alert state changed");
            }
        }
        outgoing
    }

    fn alert_json(&self, rule: &Rule, state: &RuleState, ends_at: u64, status: &str) -> Value {
        let mut labels = rule.spec.labels.clone();
        labels.insert("alertname".into(), rule.spec.name.clone());
        if let Some(t) = &rule.spec.tenant {
            labels.entry("tenant".into()).or_insert_with(|| t.clone());
        }
        if let Some(s) = &rule.spec.service {
            labels.entry("service".into()).or_insert_with(|| s.clone());
        }
        let mut annotations = rule.spec.annotations.clone();
        if let Some(v) = state.value {
            annotations.insert("value".into(), format!("{v}"));
        }
        if !state.examples.is_empty() {
            let links: Vec<String> =
                state.examples.iter().map(|t| format!("{}/trace/{}", self.public_url, t.to_jaeger_hex())).collect();
            annotations.insert("example_traces".into(), links.join(" "));
        }
        let mut search = format!("{}/search?lookback=custom", self.public_url);
        if let Some(s) = &rule.spec.service {
            search.push_str(&format!("&service={s}"));
        }
        json!({
            "status": status,
            "labels": labels,
            "annotations": annotations,
            "startsAt": format_rfc3339_millis(state.active_since),
            "endsAt": format_rfc3339_millis(ends_at),
            "generatorURL": search,
        })
    }

    /// Sends alerts to every Alertmanager (`POST /api/v2/alerts`) and webhook.
    pub async fn notify(&self, alerts: &[Value]) {
        if alerts.is_empty() {
            return;
        }
        let for_am: Vec<Value> = alerts
            .iter()
            .map(|a| {
                let mut a = a.clone();
                if let Some(o) = a.as_object_mut() {
                    o.remove("status");
                }
                a
            })
            .collect();
        for am in &self.alertmanagers {
            let url = format!("{}/api/v2/alerts", am.trim_end_matches('/'));
            match self.client.post(&url).json(&for_am).send().await {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => tracing::warn!(%url, status = %r.status(), "alertmanager refused alerts"),
                Err(e) => tracing::warn!(%url, error = %e, "alertmanager unreachable"),
            }
        }
        for hook in &self.webhooks {
            let firing = alerts.iter().any(|a| a["status"] == "firing");
            let body = json!({"status": if firing { "firing" } else { "resolved" }, "alerts": alerts});
            if let Err(e) = self.client.post(hook).json(&body).send().await {
                tracing::warn!(url = %hook, error = %e, "alert webhook unreachable");
            }
        }
    }

    /// The rules of `tenant` (`default_tenant` holds the rules that name none) and their state.
    pub fn state_json(&self, tenant: &str, default_tenant: &str) -> Value {
        let states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        Value::Array(
            self.rules
                .iter()
                .zip(states.iter())
                .filter(|(rule, _)| rule.spec.tenant.as_deref().unwrap_or(default_tenant) == tenant)
                .map(|(rule, s)| {
                    json!({
                        "name": rule.spec.name,
                        "state": match s.state { State::Inactive => "inactive", State::Pending => "pending", State::Firing => "firing" },
                        "value": s.value,
                        "activeSince": (s.state != State::Inactive).then(|| format_rfc3339_millis(s.active_since)),
                        "lastEvaluation": (s.last_evaluation > 0).then(|| format_rfc3339_millis(s.last_evaluation)),
                        "service": rule.spec.service,
                        "operation": rule.spec.operation,
                        "condition": rule.spec.condition,
                        "window": rule.spec.window,
                        "for": rule.spec.for_.as_deref().unwrap_or("0s"),
                        "labels": rule.spec.labels,
                        "annotations": rule.spec.annotations,
                        "exampleTraceIDs": s.examples.iter().map(|t| t.to_jaeger_hex()).collect::<Vec<_>>(),
                    })
                })
                .collect(),
        )
    }
}

/// Whether the rule's condition holds over `window`, its value, and example traces.
fn check(rule: &Rule, window: &TraceQuery, query: &QueryService) -> anyhow::Result<(bool, Option<f64>, Vec<TraceId>)> {
    let seconds = rule.window as f64 / 1e9;
    let totals = query.red(window, None, rule.window)?.into_iter().next().map(|g| g.total);
    let calls = totals.as_ref().map_or(0, |t| t.calls);
    Ok(match &rule.spec.condition {
        Condition::LatencyAbove { quantile, threshold_ms } => {
            let value = totals.as_ref().and_then(|t| t.latency.quantile(*quantile)).map(|ns| ns / 1e6);
            let active = value.is_some_and(|v| v > *threshold_ms);
            let examples =
                if active { query.slowest(window, 3)?.into_iter().map(|s| s.trace_id).collect() } else { Vec::new() };
            (active, value, examples)
        }
        Condition::ErrorRatioAbove { threshold } => {
            let value = totals.as_ref().filter(|_| calls > 0).map(|t| t.error_ratio());
            let active = value.is_some_and(|v| v > *threshold);
            (active, value, if active { error_examples(query, window)? } else { Vec::new() })
        }
        Condition::RateBelow { per_second } => {
            let value = calls as f64 / seconds;
            (value < *per_second, Some(value), Vec::new())
        }
        Condition::ErrorTrace => {
            let errors = totals.as_ref().map_or(0, |t| t.errors);
            let active = errors > 0;
            (active, Some(errors as f64), if active { error_examples(query, window)? } else { Vec::new() })
        }
    })
}

fn error_examples(query: &QueryService, window: &TraceQuery) -> anyhow::Result<Vec<TraceId>> {
    let mut out = Vec::new();
    for group in query.error_groups(window, 3)? {
        for t in group.example_traces {
            if out.len() < 3 && !out.contains(&t) {
                out.push(t);
            }
        }
    }
    Ok(out)
}

/// Evaluates and notifies every interval until `stop` flips.
pub async fn run(alerting: Arc<Alerting>, tenants: Arc<Tenants>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(alerting.interval);
    // An evaluation slower than the interval delays the next one instead of queueing a
    // burst of catch-up evaluations that would hog the blocking pool.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let a = Arc::clone(&alerting);
        let t = Arc::clone(&tenants);
        let alerts = tokio::task::spawn_blocking(move || {
            let query_of = |tenant: Option<&str>| match tenant {
                None => t.default_tenant().query.clone(),
                Some(name) => t.reader(name).query.clone(),
            };
            a.evaluate(&query_of, now_unix_nano())
        })
        .await
        .unwrap_or_default();
        alerting.notify(&alerts).await;
    }
}
