// Realistic traces for the browser tests, as OTLP JSON: the seed pipeline
// (ingestion-service → Kafka → processor-service → Kafka → storage-service → PostgreSQL,
// with the seed's span names), plus big synthetic traces for the render benchmark.
// A seeded PRNG keeps every run identical.

import type { OtlpKeyValue, OtlpSpan, OtlpTracesData } from '../../src/model/formats';

export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const hex = (r: () => number, bytes: number) => Array.from({ length: bytes }, () => Math.floor(r() * 256).toString(16).padStart(2, '0')).join('');

const s = (key: string, value: string): OtlpKeyValue => ({ key, value: { stringValue: value } });
const i = (key: string, value: number): OtlpKeyValue => ({ key, value: { intValue: String(value) } });
const d = (key: string, value: number): OtlpKeyValue => ({ key, value: { doubleValue: value } });

const KIND = { internal: 1, server: 2, client: 3, producer: 4, consumer: 5 } as const;
const SERVICES = ['ingestion-service', 'processor-service', 'storage-service'] as const;
const SYMBOLS = ['AAPL', 'MSFT', 'GOOG', 'TSLA', 'NVDA'];

type Service = (typeof SERVICES)[number] | BatchService;
type BatchService = 'batch-scheduler' | 'batch-worker';

interface Builder {
  traceId: string;
  spans: Map<Service, OtlpSpan[]>;
  r: () => number;
}

/** Adds a span; times in µs epoch. */
function span(b: Builder, service: Service, name: string, parent: OtlpSpan | null, start: number, durUs: number, kind: number, attrs: OtlpKeyValue[] = []): OtlpSpan {
  const sp: OtlpSpan = {
    traceId: b.traceId,
    spanId: hex(b.r, 8),
    name,
    kind,
    startTimeUnixNano: `${Math.round(start)}000`,
    endTimeUnixNano: `${Math.round(start + durUs)}000`,
    attributes: attrs,
  };
  if (parent) sp.parentSpanId = parent.spanId;
  const list = b.spans.get(service) ?? [];
  list.push(sp);
  b.spans.set(service, list);
  return sp;
}

function fail(sp: OtlpSpan, type: string, message: string, at: number) {
  sp.status = { code: 2, message };
  sp.events = [{ timeUnixNano: `${Math.round(at)}000`, name: 'exception', attributes: [s('exception.type', type), s('exception.message', message)] }];
}

function toOtlp(b: Builder): OtlpTracesData {
  return {
    resourceSpans: [...b.spans].map(([service, spans]) => ({
      resource: { attributes: [s('service.name', service), s('service.version', '1.4.2'), s('host.name', `${service.split('-')[0]}-0`), s('deployment.environment', 'test')] },
      scopeSpans: [{ scope: { name: 'spindle-sdk', version: '0.1.0' }, spans }],
    })),
  };
}

export type Failure = 'none' | 'db' | 'bsm';

export interface PipelineTrace {
  traceId: string;
  rootSpanId: string;
  symbol: string;
  failure: Failure;
  data: OtlpTracesData;
  spanCount: number;
}

/**
 * One market-data message through the seed pipeline. `slow` stretches calculate_bsm
 * (for comparisons), `failure` makes db_write or calculate_bsm fail like the seed's
 * PostgreSQL outage or a bad quote.
 */
export function pipelineTrace(
  seed: number,
  startUs: number,
  opts: { failure?: Failure; slow?: number; retries?: number; linkTo?: { traceId: string; spanId: string } } = {},
): PipelineTrace {
  const r = rng(seed);
  const b: Builder = { traceId: hex(r, 16), spans: new Map(), r };
  const symbol = SYMBOLS[seed % SYMBOLS.length];
  const failure = opts.failure ?? 'none';
  const jitter = (base: number) => base * (0.8 + r() * 0.4);
  let t = startUs;

  const fetchDur = jitter(3000);
  const root = span(b, 'ingestion-service', 'fetch_instrument_data', null, t, 0, KIND.server, [
    s('symbol', symbol),
    s('http.request.method', 'GET'),
    s('http.route', '/instruments/{symbol}'),
    i('http.response.status_code', 200),
  ]);
  const enrich = span(b, 'ingestion-service', 'enrich_context', root, t + 200, jitter(900), KIND.internal, [s('symbol', symbol), i('fields.added', 4)]);
  const sendStart = t + 200 + 1200;
  const send = span(b, 'ingestion-service', 'send_to_kafka', root, sendStart, jitter(1500), KIND.producer, [
    s('messaging.system', 'kafka'),
    s('messaging.destination.name', 'market-data-raw'),
    s('messaging.operation.type', 'publish'),
    s('symbol', symbol),
  ]);
  root.endTimeUnixNano = `${Math.round(Math.max(sendStart + 1800, t + fetchDur))}000`;
  // A replayed message links to the trace of its first delivery, as OTel messaging does.
  if (opts.linkTo) root.links = [{ ...opts.linkTo, attributes: [s('link.reason', 'replay')] }];
  void enrich;

  // Kafka hop: the consumer starts after the producer finished.
  t = sendStart + jitter(4000);
  const bsm = jitter(6000) * (opts.slow ?? 1);
  const procDur = 600 + jitter(1500) + bsm + jitter(1500) + 600;
  const proc = span(b, 'processor-service', 'process_message', send, t, procDur, KIND.consumer, [
    s('messaging.system', 'kafka'),
    s('messaging.destination.name', 'market-data-raw'),
    s('messaging.operation.type', 'process'),
    s('symbol', symbol),
    i('messaging.kafka.offset', seed * 7),
  ]);
  const clean = span(b, 'processor-service', 'clean_data', proc, t + 300, jitter(1500), KIND.internal, [s('symbol', symbol), i('rows.dropped', Math.floor(r() * 3))]);
  void clean;
  const calc = span(b, 'processor-service', 'calculate_bsm', proc, t + 2200, bsm, KIND.internal, [s('symbol', symbol), d('bsm.volatility', Number((0.2 + r() * 0.3).toFixed(4))), s('model', 'black-scholes-merton')]);
  if (failure === 'bsm') {
    fail(calc, 'ValueError', `negative time to expiry for ${symbol}`, t + 2200 + bsm / 2);
    proc.status = { code: 2, message: 'calculate_bsm failed' };
    return { traceId: b.traceId, rootSpanId: root.spanId, symbol, failure, data: toOtlp(b), spanCount: [...b.spans.values()].flat().length };
  }
  const enrichedStart = t + 2300 + bsm;
  const sendEnriched = span(b, 'processor-service', 'send_enriched', proc, enrichedStart, jitter(1200), KIND.producer, [
    s('messaging.system', 'kafka'),
    s('messaging.destination.name', 'market-data-enriched'),
    s('messaging.operation.type', 'publish'),
    s('symbol', symbol),
  ]);

  t = enrichedStart + jitter(5000);
  const retries = opts.retries ?? 1;
  const dbDur = jitter(4000);
  const store = span(b, 'storage-service', 'store_data', sendEnriched, t, 500 + jitter(800) + retries * (dbDur + 200), KIND.consumer, [
    s('messaging.system', 'kafka'),
    s('messaging.destination.name', 'market-data-enriched'),
    s('symbol', symbol),
  ]);
  span(b, 'storage-service', 'prepare_records', store, t + 200, jitter(700), KIND.internal, [s('symbol', symbol), i('records', 12)]);
  for (let k = 0; k < retries; k++) {
    const at = t + 1100 + k * (dbDur + 200);
    const db = span(b, 'storage-service', 'db_write', store, at, dbDur, KIND.client, [
      s('db.system', 'postgresql'),
      s('db.namespace', 'marketdata'),
      s('db.operation.name', 'INSERT'),
      s('db.query.text', 'INSERT INTO quotes (symbol, ts, price, bsm) VALUES ($1, $2, $3, $4)'),
      s('server.address', 'postgres'),
      i('server.port', 5432),
    ]);
    if (failure === 'db') fail(db, 'psycopg.OperationalError', 'connection to server at "postgres" (5432) failed: timeout expired', at + dbDur);
  }
  if (failure === 'db') store.status = { code: 2, message: 'db_write failed' };
  return { traceId: b.traceId, rootSpanId: root.spanId, symbol, failure, data: toOtlp(b), spanCount: [...b.spans.values()].flat().length };
}

/** A seed-pipeline workload: `n` traces spread over the last `windowMin` minutes, ~15% failing. */
export function pipelineWorkload(n: number, nowUs: number, windowMin = 30): PipelineTrace[] {
  const r = rng(42);
  return Array.from({ length: n }, (_, k) => {
    const roll = r();
    const failure: Failure = roll < 0.1 ? 'db' : roll < 0.15 ? 'bsm' : 'none';
    return pipelineTrace(1000 + k, nowUs - r() * windowMin * 60e6, { failure, slow: r() < 0.1 ? 4 : 1, retries: failure === 'db' ? 3 : 1 });
  });
}

/**
 * A synthetic trace of `n` spans: a backfill job of a scheduler and its workers, nesting
 * up to ~12 levels, PostgreSQL writes and ~1% errors. It uses its own services so the
 * seed pipeline's system map stays as the seed draws it. Its OTLP JSON
 * comes in parts of at most `partSpans` spans so each POST stays under the body limit.
 */
export function bigTrace(n: number, startUs: number, seed = 7, partSpans = 20000): { traceId: string; parts: OtlpTracesData[] } {
  const r = rng(seed);
  const b: Builder = { traceId: hex(r, 16), spans: new Map(), r };
  const total = n * 20; // µs: the trace lasts ~20 µs per span
  const all: { sp: OtlpSpan; start: number; end: number; depth: number }[] = [];
  const root = span(b, 'batch-scheduler', 'backfill_batch', null, startUs, total, KIND.server, [s('batch.id', `b-${seed}`)]);
  all.push({ sp: root, start: startUs, end: startUs + total, depth: 0 });
  const names: Record<BatchService, string[]> = {
    'batch-scheduler': ['plan_window', 'fetch_instrument_data', 'dispatch_chunk'],
    'batch-worker': ['process_chunk', 'clean_data', 'calculate_bsm', 'prepare_records', 'db_write'],
  };
  while (all.length < n) {
    // Prefer recent spans as parents: deep, realistic call chains rather than a flat fan.
    const pi = all.length - 1 - Math.floor(r() ** 3 * all.length);
    const p = all[Math.max(0, pi)];
    if (p.depth > 12 || p.end - p.start < 4) continue;
    const start = p.start + r() * (p.end - p.start) * 0.5;
    const end = start + (p.end - start) * (0.2 + r() * 0.7);
    // Shallow levels plan, deeper ones work: calls cross services in one direction only.
    const service: BatchService = p.depth < 2 ? 'batch-scheduler' : 'batch-worker';
    const list = names[service];
    const name = list[Math.floor(r() * list.length)];
    const isDb = name === 'db_write';
    const sp = span(b, service, name, p.sp, start, end - start, isDb ? KIND.client : KIND.internal, isDb ? [s('db.system', 'postgresql'), s('symbol', SYMBOLS[all.length % 5])] : [s('symbol', SYMBOLS[all.length % 5])]);
    if (r() < 0.01) fail(sp, 'TimeoutError', 'deadline exceeded', end);
    all.push({ sp, start, end, depth: p.depth + 1 });
  }
  const parts: OtlpTracesData[] = [];
  const flat = [...b.spans].flatMap(([service, spans]) => spans.map((sp) => [service, sp] as const));
  for (let k = 0; k < flat.length; k += partSpans) {
    const part: Builder = { traceId: b.traceId, spans: new Map(), r };
    for (const [service, sp] of flat.slice(k, k + partSpans)) {
      const list = part.spans.get(service) ?? [];
      list.push(sp);
      part.spans.set(service, list);
    }
    parts.push(toOtlp(part));
  }
  return { traceId: b.traceId, parts };
}
