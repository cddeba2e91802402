//! `spindle loadgen`: drives a running Spindle with the reference workload over OTLP gRPC
//! and/or HTTP, at a target rate or as fast as it will take, and reports what was
//! acknowledged and how fast.
//!
//! Every connection is its own task with its own client and its own seeded workload, so
//! a run is reproducible for a given seed and connection count. A connection encodes a pool
//! of [`POOL_BATCHES`] batches once and re-sends them with new trace ids, request ids and
//! times ([`template`]), so loadgen's own CPU stays a small fraction of the server's.

mod template;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::BufMut;
use clap::{Args, ValueEnum};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use spindle_workload::{Rng, Workload, SERVICES, SPANS_PER_TRACE};
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};

use self::template::{NameCycle, Template};

/// Batches each connection generates and encodes before it starts sending.
pub const POOL_BATCHES: usize = 16;

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    Grpc,
    Http,
    /// Half the connections over gRPC, half over HTTP.
    Both,
}

#[derive(Debug, Clone, Args)]
pub struct LoadgenArgs {
    /// OTLP gRPC endpoint
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    pub grpc_endpoint: String,
    /// OTLP HTTP endpoint (the base; /v1/traces is appended)
    #[arg(long, default_value = "http://127.0.0.1:4318")]
    pub http_endpoint: String,
    #[arg(long, value_enum, default_value = "grpc")]
    pub protocol: Protocol,
    /// Target spans per second over all connections; 0 sends as fast as possible
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// How long to run, e.g. 60s, 2m (ignored when --spans is given)
    #[arg(long, default_value = "10s")]
    pub duration: String,
    /// Stop after this many spans instead of after --duration
    #[arg(long)]
    pub spans: Option<u64>,
    /// Concurrent connections, each with its own request in flight (with the default sync
    /// policy an acknowledgement waits for an fsync, so a few connections cannot fill the
    /// server; 16 do on two cores)
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Spans per request (rounded to whole traces of 10 spans)
    #[arg(long, default_value_t = 1000)]
    pub batch_spans: usize,
    /// Workload seed; connection i uses seed + i
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Send every span from one service (frontend) named `GET /users/<n>`, n cycling
    /// through this many distinct names (zero-padded): the classic id-in-the-span-name
    /// instrumentation bug, to measure what high span-name cardinality costs. 1 gives the
    /// same spans with one name, the baseline to compare with
    #[arg(long, value_name = "N")]
    pub distinct_names: Option<u64>,
    /// PEM CA certificate to trust for `https://` endpoints (a TLS-serving Spindle)
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Header sent with every request, `name=value` (e.g. `authorization=Bearer …`,
    /// `x-scope-orgid=team-a`); repeatable
    #[arg(long = "header", value_name = "NAME=VALUE")]
    pub headers: Vec<String>,
}

/// The prefix of `--distinct-names` span names.
pub const DISTINCT_NAME_PREFIX: &str = "GET /users/";

#[derive(Default)]
struct Totals {
    sent: AtomicU64,
    acked: AtomicU64,
    rejected: AtomicU64,
    failed_requests: AtomicU64,
    ack_micros: Mutex<Vec<u64>>,
}

enum Client {
    Grpc(tonic::client::Grpc<tonic::transport::Channel>, Box<tonic::metadata::MetadataMap>),
    Http(reqwest::Client, String),
}

/// gRPC codec sending an already encoded `ExportTraceServiceRequest`.
#[derive(Clone, Copy, Default)]
struct EncodedRequestCodec;

struct EncodedRequestEncoder;

impl Encoder for EncodedRequestEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Codec for EncodedRequestCodec {
    type Encode = Vec<u8>;
    type Decode = ExportTraceServiceResponse;
    type Encoder = EncodedRequestEncoder;
    type Decoder = tonic_prost::ProstDecoder<ExportTraceServiceResponse>;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedRequestEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::new(BufferSettings::default())
    }
}

enum Outcome {
    /// Accepted, with this many spans rejected by partial success.
    Acked(u64),
    /// Refused as a whole (backpressure or an error).
    Refused(String),
}

impl Client {
    /// Sends one encoded `ExportTraceServiceRequest`.
    async fn send(&mut self, request: Vec<u8>) -> Outcome {
        match self {
            Client::Grpc(client, metadata) => {
                if let Err(e) = client.ready().await {
                    return Outcome::Refused(format!("grpc: {e}"));
                }
                let path = tonic::codegen::http::uri::PathAndQuery::from_static(EXPORT_PATH);
                let mut request = tonic::Request::new(request);
                *request.metadata_mut() = (**metadata).clone();
                match client.unary(request, path, EncodedRequestCodec).await {
                    Ok(r) => {
                        Outcome::Acked(r.into_inner().partial_success.map_or(0, |p| p.rejected_spans.max(0) as u64))
                    }
                    Err(status) => Outcome::Refused(format!("grpc {:?}: {}", status.code(), status.message())),
                }
            }
            Client::Http(client, url) => {
                let sent = client
                    .post(url.as_str())
                    .header("content-type", "application/x-protobuf")
                    .body(request)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => {
                        let body = r.bytes().await.unwrap_or_default();
                        let rejected = ExportTraceServiceResponse::decode(body.as_ref())
                            .ok()
                            .and_then(|r| r.partial_success)
                            .map_or(0, |p| p.rejected_spans.max(0) as u64);
                        Outcome::Acked(rejected)
                    }
                    Ok(r) => Outcome::Refused(format!("http {}", r.status())),
                    Err(e) => Outcome::Refused(format!("http: {e}")),
                }
            }
        }
    }
}

fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

pub async fn run(args: LoadgenArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.connections > 0, "--connections must be at least 1");
    let traces_per_batch = (args.batch_spans / SPANS_PER_TRACE).max(1);
    let batch_spans = (traces_per_batch * SPANS_PER_TRACE) as u64;
    let duration = crate::api::params::parse_go_duration(&args.duration)
        .map(Duration::from_nanos)
        .with_context(|| format!("invalid --duration {:?}: expected e.g. 60s or 2m", args.duration))?;
    let budget = args.spans.map(|n| Arc::new(AtomicU64::new(n.div_ceil(batch_spans))));
    let totals = Arc::new(Totals::default());
    let stop = Arc::new(AtomicBool::new(false));
    // Every connection connects and encodes its pool first; the clock starts when all send.
    let (go, ready) = tokio::sync::watch::channel(false);

    let ca = match &args.ca_file {
        Some(path) => Some(std::fs::read(path).with_context(|| format!("reading --ca-file {}", path.display()))?),
        None => None,
    };
    let mut headers = Vec::new();
    for h in &args.headers {
        let (name, value) =
            h.split_once('=').with_context(|| format!("invalid --header {h:?}: expected name=value"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut metadata = tonic::metadata::MetadataMap::new();
    let mut http_headers = reqwest::header::HeaderMap::new();
    for (name, value) in &headers {
        let key = tonic::metadata::MetadataKey::from_bytes(name.as_bytes())
            .with_context(|| format!("invalid header name {name:?}"))?;
        metadata.insert(key, value.parse().with_context(|| format!("invalid header value of {name}"))?);
        http_headers.insert(
            reqwest::header::HeaderName::from_bytes(name.as_bytes())?,
            reqwest::header::HeaderValue::from_str(value)?,
        );
    }
    let mut tasks = Vec::new();
    for i in 0..args.connections {
        let use_grpc = match args.protocol {
            Protocol::Grpc => true,
            Protocol::Http => false,
            Protocol::Both => i % 2 == 0,
        };
        let mut client = if use_grpc {
            let mut endpoint = tonic::transport::Endpoint::from_shared(args.grpc_endpoint.clone())
                .context("invalid --grpc-endpoint")?;
            if let Some(ca) = &ca {
                let tls = tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(ca));
                endpoint = endpoint.tls_config(tls).context("--ca-file")?;
            }
            let channel = endpoint.connect().await.with_context(|| format!("connecting to {}", args.grpc_endpoint))?;
            Client::Grpc(
                tonic::client::Grpc::new(channel).max_decoding_message_size(64 << 20),
                Box::new(metadata.clone()),
            )
        } else {
            let url = format!("{}/v1/traces", args.http_endpoint.trim_end_matches('/'));
            let mut client = reqwest::Client::builder().default_headers(http_headers.clone());
            if let Some(ca) = &ca {
                client = client.add_root_certificate(reqwest::Certificate::from_pem(ca).context("--ca-file")?);
            }
            Client::Http(client.build().context("building the http client")?, url)
        };
        let totals = Arc::clone(&totals);
        let stop = Arc::clone(&stop);
        let budget = budget.clone();
        let seed = args.seed.wrapping_add(i as u64);
        // Each connection paces itself at its share of the target rate.
        let interval = (args.rate > 0)
            .then(|| Duration::from_secs_f64(batch_spans as f64 * args.connections as f64 / args.rate as f64));
        // With --distinct-names, connection i starts at its share of the names, so together
        // the connections cover them all early in a run.
        let mut names = args.distinct_names.map(|n| {
            let share = n.max(1).div_ceil(args.connections as u64);
            NameCycle::new(n, share.saturating_mul(i as u64))
        });
        let pool: Vec<Template> = {
            let mut workload = Workload::new(seed);
            let base = now_nanos();
            (0..POOL_BATCHES)
                .map(|b| {
                    let mut batch = workload.batch(traces_per_batch, base + b as u64 * 1_000_000, 1_000_000);
                    match &names {
                        Some(names) => {
                            let first = &batch[0];
                            let one = batch.iter().find(|s| s.service_name() == SERVICES[0]).unwrap_or(first);
                            let frontend = Arc::clone(&one.resource);
                            for span in &mut batch {
                                span.resource = Arc::clone(&frontend);
                                span.name = names.name(DISTINCT_NAME_PREFIX, 0).as_str().into();
                            }
                            Template::with_names(&batch, names.digits())
                        }
                        None => Template::new(&batch),
                    }
                })
                .collect()
        };
        let mut ready = ready.clone();
        tasks.push(tokio::spawn(async move {
            if ready.wait_for(|go| *go).await.is_err() {
                return;
            }
            let mut ids = Rng::new(seed ^ 0x9e37_79b9_7f4a_7c15);
            let mut next = Instant::now();
            let mut batches = pool.iter().cycle();
            let mut logged_error = false;
            while !stop.load(Ordering::Relaxed) {
                if let Some(budget) = &budget {
                    if budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1)).is_err() {
                        break;
                    }
                }
                if let Some(interval) = interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += interval;
                }
                let Some(batch) = batches.next() else { break };
                let request = batch.render(&mut ids, now_nanos(), names.as_mut());
                totals.sent.fetch_add(batch_spans, Ordering::Relaxed);
                let t = Instant::now();
                match client.send(request).await {
                    Outcome::Acked(rejected) => {
                        totals.acked.fetch_add(batch_spans - rejected.min(batch_spans), Ordering::Relaxed);
                        totals.rejected.fetch_add(rejected, Ordering::Relaxed);
                        let micros = t.elapsed().as_micros() as u64;
                        totals.ack_micros.lock().unwrap_or_else(|p| p.into_inner()).push(micros);
                    }
                    Outcome::Refused(reason) => {
                        totals.rejected.fetch_add(batch_spans, Ordering::Relaxed);
                        totals.failed_requests.fetch_add(1, Ordering::Relaxed);
                        if !logged_error {
                            eprintln!("connection {i}: request refused: {reason}");
                            logged_error = true;
                        }
                    }
                }
            }
        }));
    }

    let started = Instant::now();
    // Cannot fail: `ready` is still held here.
    let _ = go.send(true);

    let progress = {
        let totals = Arc::clone(&totals);
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut last = 0;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let acked = totals.acked.load(Ordering::Relaxed);
                eprintln!(
                    "t={:>4}s acked={acked} rejected={} rate={}/s",
                    started.elapsed().as_secs(),
                    totals.rejected.load(Ordering::Relaxed),
                    acked - last
                );
                last = acked;
                if stop.load(Ordering::Relaxed) {
                    break;
                }
            }
        })
    };
    if budget.is_none() {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            stop.store(true, Ordering::Relaxed);
        });
    }
    for task in tasks {
        task.await.context("load task failed")?;
    }
    stop.store(true, Ordering::Relaxed);
    progress.abort();
    let elapsed = started.elapsed().as_secs_f64();
    let mut acks = std::mem::take(&mut *totals.ack_micros.lock().unwrap_or_else(|p| p.into_inner()));
    acks.sort_unstable();
    let p99 = acks.get((acks.len() * 99 / 100).min(acks.len().saturating_sub(1))).copied().unwrap_or(0);
    let acked = totals.acked.load(Ordering::Relaxed);
    println!(
        "sent={} acked={} rejected={} spans_per_sec={} p99_ack_ms={:.1}",
        totals.sent.load(Ordering::Relaxed),
        acked,
        totals.rejected.load(Ordering::Relaxed),
        (acked as f64 / elapsed) as u64,
        p99 as f64 / 1000.0
    );
    Ok(())
}
