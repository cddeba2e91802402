//! The reference workload of issue 3, as a deterministic span generator.
//!
//! Traces of 10 spans across 5 services; 8 attributes per span, including one
//! high-cardinality id (`request.id`) and a `symbol` from 500 tickers; log-normal durations
//! with a median of 2 ms; 2% of spans in error; 10% of spans with an event. The same seed
//! gives the same spans, so benches, crash tests and `spindle loadgen` measure one thing.
//!
//! It owns no IO and no clock: the caller says where time starts.

use std::sync::Arc;

use spindle_model::{
    AttributeValue, Event, KeyValue, Resource, Scope, Span, SpanId, SpanKind, Status, StatusCode, TraceId,
};

const SERVICES: [&str; 5] = ["frontend", "api-gateway", "quote-service", "pricing-service", "ledger-service"];
const ROUTES: [&str; 6] = ["/api/quote", "/api/order", "/api/portfolio", "/api/price", "/api/history", "/health"];
const METHODS: [&str; 3] = ["GET", "POST", "PUT"];
const TIERS: [&str; 4] = ["free", "basic", "pro", "enterprise"];
const OPERATIONS: [&str; 10] = [
    "GET /api/quote",
    "authenticate",
    "route_request",
    "get_quote",
    "load_instrument",
    "calculate_price",
    "fetch_rates",
    "apply_spread",
    "record_trade",
    "db_write",
];
/// Which service runs the n-th span of a trace; parents follow the same layout.
const SPAN_SERVICE: [usize; 10] = [0, 0, 1, 2, 2, 3, 3, 3, 4, 4];
const SPAN_PARENT: [usize; 10] = [0, 0, 0, 2, 3, 3, 5, 5, 3, 8];
/// Traces start this far apart: 25k traces/s, the rate of the 250k spans/s target.
const TRACE_SPACING_NANOS: u64 = 40_000;

/// A small fast generator (SplitMix64): good enough for synthetic data, no dependency.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Log-normal with the given median; sigma 1 gives a long but realistic tail.
    fn log_normal(&mut self, median: f64) -> f64 {
        let u1 = self.unit().max(f64::MIN_POSITIVE);
        let u2 = self.unit();
        let normal = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        median * normal.exp()
    }
}

/// Generates reference traces one after the other, starting at a given time.
pub struct ReferenceWorkload {
    rng: Rng,
    next_start: u64,
    resources: Vec<Arc<Resource>>,
    scope: Arc<Scope>,
    symbols: Vec<String>,
}

impl ReferenceWorkload {
    pub fn new(seed: u64, start_unix_nano: u64) -> Self {
        let resources = SERVICES
            .iter()
            .enumerate()
            .map(|(i, name)| {
                Arc::new(Resource {
                    attributes: vec![
                        KeyValue::string("service.name", *name),
                        KeyValue::string("service.version", "1.4.2"),
                        KeyValue::string("host.name", format!("node-{}", i % 3)),
                        KeyValue::string("telemetry.sdk.language", "rust"),
                    ],
                    dropped_attributes_count: 0,
                })
            })
            .collect();
        let scope = Arc::new(Scope { name: "spindle-sdk".into(), version: "0.1.0".into(), ..Default::default() });
        let symbols = (0..500).map(|i| format!("T{:03}{}", i, (b'A' + (i % 26) as u8) as char)).collect();
        ReferenceWorkload { rng: Rng(seed), next_start: start_unix_nano, resources, scope, symbols }
    }

    /// The next trace: 10 spans, children inside their parent's time.
    pub fn next_trace(&mut self) -> Vec<Span> {
        let rng = &mut self.rng;
        let trace_id = TraceId((u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64()));
        let trace_start = self.next_start;
        self.next_start += TRACE_SPACING_NANOS;
        let symbol = self.symbols[rng.below(self.symbols.len())].clone();
        let route = ROUTES[rng.below(ROUTES.len())];
        let method = METHODS[rng.below(METHODS.len())];
        let tier = TIERS[rng.below(TIERS.len())];
        let mut spans: Vec<Span> = Vec::with_capacity(10);
        for n in 0..10 {
            let span_id = SpanId(rng.next_u64() | 1);
            let parent = if n == 0 { SpanId::INVALID } else { spans[SPAN_PARENT[n]].span_id };
            let start = if n == 0 { trace_start } else { spans[SPAN_PARENT[n]].start_time_unix_nano + 1_000 * n as u64 };
            let duration = rng.log_normal(2_000_000.0).clamp(1_000.0, 60_000_000_000.0) as u64;
            let error = rng.below(50) == 0;
            let status_code = if error { 500 } else { 200 };
            let mut attributes = vec![
                KeyValue::string("http.request.method", method),
                KeyValue::string("http.route", route),
                KeyValue::new("http.response.status_code", AttributeValue::Int(status_code)),
                KeyValue::string("symbol", symbol.clone()),
                KeyValue::string("request.id", format!("{:016x}", rng.next_u64())),
                KeyValue::string("user.tier", tier),
                KeyValue::new("cache.hit", AttributeValue::Bool(rng.below(3) == 0)),
                KeyValue::new("order.quantity", AttributeValue::Int(1 + rng.below(1000) as i64)),
            ];
            if n == 9 {
                attributes[0] = KeyValue::string("db.system", "postgresql");
            }
            let events = if rng.below(10) == 0 {
                vec![Event {
                    time_unix_nano: start + duration / 2,
                    name: if error { "exception".into() } else { "cache.refresh".into() },
                    attributes: vec![KeyValue::string("exception.type", "TimeoutError")],
                    dropped_attributes_count: 0,
                }]
            } else {
                Vec::new()
            };
            spans.push(Span {
                trace_id,
                span_id,
                parent_span_id: parent,
                name: OPERATIONS[n].into(),
                kind: match n {
                    0 | 2 | 3 | 5 => SpanKind::Server,
                    9 | 4 => SpanKind::Client,
                    _ => SpanKind::Internal,
                },
                start_time_unix_nano: start,
                end_time_unix_nano: start + duration,
                attributes,
                events,
                status: Status {
                    code: if error { StatusCode::Error } else { StatusCode::Unset },
                    message: if error { "upstream timed out".into() } else { String::new() },
                },
                resource: Arc::clone(&self.resources[SPAN_SERVICE[n]]),
                scope: Arc::clone(&self.scope),
                ..Default::default()
            });
        }
        spans
    }

    /// `traces` consecutive traces in one batch.
    pub fn batch(&mut self, traces: usize) -> Vec<Span> {
        (0..traces).flat_map(|_| self.next_trace()).collect()
    }
}
