// Typed client of Spindle's analytics API (`/api/spindle/*`, docs/API.md and
// docs/openapi.yaml). Every figure it returns is computed by the server over every stored
// span, not a sample: durations in milliseconds, times in µs since the epoch, percentiles
// within the sketches' 1.96% relative error.

import { getJson } from './client';

/** The span filter every analytics endpoint takes (the `/api/traces` parameters). */
export interface Filter {
  service?: string;
  operation?: string;
  spanKind?: 'server' | 'client' | 'producer' | 'consumer' | 'internal';
  /** key → value, each matched against one span's attributes. */
  tags?: Record<string, string>;
  /** µs epoch */
  start: number;
  end: number;
}

function params(f: Partial<Filter>, extra: Record<string, string | number | undefined> = {}): URLSearchParams {
  const p = new URLSearchParams();
  if (f.service) p.set('service', f.service);
  if (f.operation) p.set('operation', f.operation);
  if (f.spanKind) p.set('spanKind', f.spanKind);
  if (f.tags && Object.keys(f.tags).length) p.set('tags', JSON.stringify(f.tags));
  if (f.start !== undefined) p.set('start', String(Math.floor(f.start)));
  if (f.end !== undefined) p.set('end', String(Math.ceil(f.end)));
  for (const [k, v] of Object.entries(extra)) if (v !== undefined && v !== '') p.set(k, String(v));
  return p;
}

export interface Stats {
  calls: number;
  errors: number;
  errorRatio: number;
  ratePerSec: number;
  /** null when there were no calls */
  p50Ms: number | null;
  p90Ms: number | null;
  p95Ms: number | null;
  p99Ms: number | null;
}

export interface StatsPoint extends Stats {
  /** Start of the step, µs epoch. Steps without spans are absent. */
  time: number;
}

export interface StatsGroup {
  /** The `groupBy` value; null when not grouped. */
  group: string | null;
  total: Stats;
  series: StatsPoint[];
}

export interface StatsAnswer {
  groups: StatsGroup[];
  stepMs: number;
}

/** Rate, errors and percentiles per value of `groupBy` (spans without it left out), or in total. */
export function stats(f: Filter, opts: { groupBy?: string; step: string }, signal?: AbortSignal): Promise<StatsAnswer> {
  return getJson<StatsAnswer>(`/api/spindle/stats?${params(f, { groupBy: opts.groupBy, step: opts.step })}`, signal);
}

export interface SpanRef {
  traceID: string;
  spanID: string;
  service: string;
  operation: string;
  /** µs epoch */
  startTime: number;
  durationMs: number;
  error: boolean;
}

export function slowest(f: Filter, limit: number, signal?: AbortSignal): Promise<SpanRef[]> {
  return getJson<{ spans: SpanRef[] }>(`/api/spindle/slowest?${params(f, { limit })}`, signal).then((r) => r.spans);
}

export interface Outliers {
  quantile: number;
  thresholdMs: number;
  spans: SpanRef[];
}

export function outliers(f: Filter, quantile: number, limit: number, signal?: AbortSignal): Promise<Outliers> {
  return getJson<Outliers>(`/api/spindle/outliers?${params(f, { quantile, limit })}`, signal);
}

export interface ErrorGroup {
  service: string;
  operation: string;
  /** An event's `exception.type`, else `error.type`, else the status message. */
  errorType: string;
  count: number;
  exampleTraceIDs: string[];
  /** µs epoch */
  lastSeen: number;
}

export function errorGroups(f: Filter, signal?: AbortSignal): Promise<ErrorGroup[]> {
  return getJson<{ groups: ErrorGroup[] }>(`/api/spindle/errors?${params(f)}`, signal).then((r) => r.groups);
}

export interface PathSegment {
  spanID: string;
  start: number;
  end: number;
}

export function criticalPath(traceId: string, signal?: AbortSignal): Promise<PathSegment[]> {
  return getJson<{ segments: PathSegment[] }>(`/api/spindle/traces/${encodeURIComponent(traceId)}/critical-path`, signal).then((r) => r.segments);
}

export interface Comparison {
  a: string;
  b: string;
  /** Every call path (`service:operation` from the root down, joined by ` > `) of either trace. */
  structure: { path: string; countA: number; countB: number }[];
  operations: { service: string; operation: string; countA: number; countB: number; totalMsA: number; totalMsB: number; deltaMs: number }[];
}

export function compare(a: string, b: string, signal?: AbortSignal): Promise<Comparison> {
  return getJson<Comparison>(`/api/spindle/compare?${new URLSearchParams({ a, b })}`, signal);
}

export interface HopPoint {
  time: number;
  count: number;
  p50Ms: number | null;
  p90Ms: number | null;
  p95Ms: number | null;
  p99Ms: number | null;
  maxMs: number;
}

export interface KafkaTopic {
  topic: string;
  series: HopPoint[];
}

/** Producer end → consumer start per Kafka topic, for consumers that started in [start, end]. */
export function kafkaHops(range: { start: number; end: number }, step: string, signal?: AbortSignal): Promise<KafkaTopic[]> {
  return getJson<{ topics: KafkaTopic[] }>(`/api/spindle/kafka-hops?${params(range, { step })}`, signal).then((r) => r.topics);
}

export interface GraphNode {
  id: string;
  /** `topic`: one destination of a broker (`kafka/market-data-raw`); `broker`: a broker
   * whose spans name no destination; `peer`: a database or another callee. */
  kind: 'service' | 'topic' | 'broker' | 'peer';
  /** A peer that spans name but that sends no spans itself (a Kafka topic, a database). */
  virtual: boolean;
  /** For topics and brokers: the messaging system, e.g. `kafka`. */
  system?: string;
  /** For topics: the destination name. */
  topic?: string;
}

export interface GraphEdge {
  parent: string;
  child: string;
  callCount: number;
  errorCount: number;
  p99Ms: number | null;
}

export interface Graph {
  nodes: GraphNode[];
  edges: GraphEdge[];
}

/** The service graph of traces that started in [start, end]. */
export function graph(range: { start: number; end: number }, signal?: AbortSignal): Promise<Graph> {
  return getJson<Graph>(`/api/spindle/graph?${params(range)}`, signal);
}

export interface Alert {
  name: string;
  state: 'inactive' | 'pending' | 'firing';
  /** The rule's last measured value (a quantile in ms, a ratio, a rate or an error count). */
  value: number | null;
  /** RFC 3339, while pending or firing */
  activeSince: string | null;
  lastEvaluation: string | null;
  service: string | null;
  operation: string | null;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  exampleTraceIDs: string[];
}

/** Every alert rule and its state; empty when Spindle runs without `--alert-rules`. */
export function alerts(signal?: AbortSignal): Promise<Alert[]> {
  return getJson<{ alerts: Alert[] }>('/api/spindle/alerts', signal).then((r) => r.alerts ?? []);
}
