//! What `/readyz` checks besides the process itself: the services a role depends on — Kafka
//! for collectors and ingesters, ClickHouse with `storage = clickhouse` — probed every few
//! seconds, so a load balancer takes an instance out while one is unreachable and `/readyz`
//! says which (docs/OPERATIONS.md, "Roles").

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, Producer};
use tokio::sync::watch;

/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

enum Probe {
    ClickHouse { url: String, client: reqwest::Client },
    Kafka { brokers: String, client: Arc<BaseProducer> },
}

impl Probe {
    fn name(&self) -> String {
        match self {
            Probe::ClickHouse { url, .. } => format!("clickhouse at {url}"),
            Probe::Kafka { brokers, .. } => format!("kafka at {brokers}"),
        }
    }

    /// `None` when reachable, else why not.
    async fn check(&self) -> Option<String> {
        match self {
            Probe::ClickHouse { url, client } => match client.get(format!("{url}/ping")).send().await {
                Ok(r) if r.status().is_success() => None,
                Ok(r) => Some(format!("answered {}", r.status())),
                Err(e) => Some(e.to_string()),
            },
            Probe::Kafka { client, .. } => {
                let client = Arc::clone(client);
                let fetched = tokio::task::spawn_blocking(move || {
                    client.client().fetch_metadata(None, PROBE_TIMEOUT).map(|_| ())
                })
                .await;
                match fetched {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(e) => Some(format!("probe failed: {e}")),
                }
            }
        }
    }
}

/// The dependencies of this instance and whether each answered its last probe.
#[derive(Default)]
pub struct Dependencies {
    probes: Vec<Probe>,
    /// Per probe, why it failed last; `None` when it answered (or was not probed yet).
    failures: Mutex<Vec<Option<String>>>,
}

impl Dependencies {
    /// `clickhouse`: its URL and the PEM CA certificates trusted for it (`clickhouse_ca_file`).
    pub fn new(clickhouse: Option<(&str, Option<&[u8]>)>, kafka_brokers: Option<&str>) -> anyhow::Result<Self> {
        let mut probes = Vec::new();
        if let Some((url, ca_pem)) = clickhouse {
            let mut builder = reqwest::Client::builder().timeout(PROBE_TIMEOUT);
            for cert in ca_pem.map(reqwest::Certificate::from_pem_bundle).transpose()?.into_iter().flatten() {
                builder = builder.add_root_certificate(cert);
            }
            let client = builder.build()?;
            probes.push(Probe::ClickHouse { url: url.trim_end_matches('/').to_string(), client });
        }
        if let Some(brokers) = kafka_brokers {
            let client: BaseProducer = ClientConfig::new()
                .set("bootstrap.servers", brokers)
                .set("socket.timeout.ms", "2000")
                .create()
                .map_err(|e| anyhow::anyhow!("kafka client for readiness probes: {e}"))?;
            probes.push(Probe::Kafka { brokers: brokers.to_string(), client: Arc::new(client) });
        }
        let failures = Mutex::new(vec![None; probes.len()]);
        Ok(Dependencies { probes, failures })
    }

    /// Why the instance is not ready for its dependencies, one line per unreachable one;
    /// empty when every one answered its last probe.
    pub fn unreachable(&self) -> Vec<String> {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        self.probes
            .iter()
            .zip(failures.iter())
            .filter_map(|(p, f)| f.as_ref().map(|why| format!("{} unreachable: {why}", p.name())))
            .collect()
    }

    /// Probes every dependency every `every` until `stop` flips.
    pub async fn probe_loop(self: Arc<Self>, every: Duration, mut stop: watch::Receiver<bool>) {
        if self.probes.is_empty() {
            return;
        }
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            for (i, probe) in self.probes.iter().enumerate() {
                let failure = probe.check().await;
                let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
                if failures[i].is_none() != failure.is_none() {
                    match &failure {
                        Some(why) => tracing::warn!(dependency = %probe.name(), error = %why, "dependency unreachable"),
                        None => tracing::info!(dependency = %probe.name(), "dependency reachable again"),
                    }
                }
                failures[i] = failure;
            }
        }
    }
}
