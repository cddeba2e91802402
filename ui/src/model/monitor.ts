// Pure helpers that turn the analytics API's answers (`/api/spindle/*`) into what the
// service page, system map, compare and alerts views draw: regular time axes, call-path
// trees, edge labels, alert filters. No IO here; the fetching is in `api/analytics.ts`.

import type { Alert, Comparison, Graph, GraphEdge, StatsPoint } from '../api/analytics';
import { type PathRow, diffStatus } from './diff';
import { formatDuration, formatPercent } from './format';

/** Steps a chart can use, in seconds, with the Go duration the API takes. */
const STEPS: [number, string][] = [
  [1, '1s'],
  [5, '5s'],
  [10, '10s'],
  [15, '15s'],
  [30, '30s'],
  [60, '1m'],
  [120, '2m'],
  [300, '5m'],
  [600, '10m'],
  [900, '15m'],
  [1800, '30m'],
  [3600, '1h'],
  [7200, '2h'],
  [21600, '6h'],
  [43200, '12h'],
  [86400, '24h'],
];

/** The smallest round step that splits `rangeUs` into at most `points` steps. */
export function stepFor(rangeUs: number, points: number): { step: string; stepUs: number } {
  const want = rangeUs / 1e6 / Math.max(points, 1);
  const [s, go] = STEPS.find(([sec]) => sec >= want) ?? STEPS[STEPS.length - 1];
  return { step: go, stepUs: s * 1e6 };
}

export interface AlignedSeries {
  /** Step starts, seconds epoch (what uPlot takes). */
  t: number[];
  rate: (number | null)[];
  /** 0..1 */
  errors: (number | null)[];
  /** µs */
  p50: (number | null)[];
  p90: (number | null)[];
  p99: (number | null)[];
}

/**
 * Lays a series of the stats API onto every step of [start, end] (µs). The API leaves
 * steps without spans out: there the rate is 0 and ratios and percentiles are unknown
 * (null, drawn as gaps). Steps are aligned to the epoch, as the server buckets them.
 */
export function alignSeries(points: readonly StatsPoint[], start: number, end: number, stepUs: number): AlignedSeries {
  const by = new Map(points.map((p) => [p.time, p]));
  const out: AlignedSeries = { t: [], rate: [], errors: [], p50: [], p90: [], p99: [] };
  const us = (ms: number | null) => (ms === null ? null : ms * 1000);
  for (let t = Math.floor(start / stepUs) * stepUs; t <= end; t += stepUs) {
    const p = by.get(t);
    out.t.push(t / 1e6);
    out.rate.push(p ? p.ratePerSec : 0);
    out.errors.push(p && p.calls ? p.errorRatio : null);
    out.p50.push(us(p?.p50Ms ?? null));
    out.p90.push(us(p?.p90Ms ?? null));
    out.p99.push(us(p?.p99Ms ?? null));
  }
  return out;
}

/** One value per step of [start, end] (µs), NaN where the series has no point: for sparklines. */
export function sparkValues<P extends { time: number }>(points: readonly P[], value: (p: P) => number | null, start: number, end: number, stepUs: number): number[] {
  const by = new Map(points.map((p) => [p.time, p]));
  const out: number[] = [];
  for (let t = Math.floor(start / stepUs) * stepUs; t <= end; t += stepUs) {
    const p = by.get(t);
    const v = p ? value(p) : null;
    out.push(v ?? NaN);
  }
  return out;
}

/* ---------- compare ---------- */

const PATH_SEP = ' > ';

/**
 * The compare API's call paths (`svc:op > svc:op`) as a tree in depth-first order:
 * children after their parent, siblings in the order they ran (`startOf`, µs, when the
 * traces are at hand; the API lists paths by name), else by name. Service names carry no
 * `:`, operation names may, so a step splits at its first `:`.
 */
export function pathRows(structure: Comparison['structure'], startOf: (path: string) => number | undefined = () => undefined): PathRow[] {
  const rows = new Map<string, PathRow>();
  const children = new Map<string, string[]>();
  for (const s of structure) {
    const steps = s.path.split(PATH_SEP);
    const last = steps[steps.length - 1];
    const colon = last.indexOf(':');
    rows.set(s.path, {
      path: s.path,
      service: colon < 0 ? '' : last.slice(0, colon),
      operation: colon < 0 ? last : last.slice(colon + 1),
      depth: steps.length - 1,
      countA: s.countA,
      countB: s.countB,
      status: diffStatus(s.countA, s.countB),
    });
    const parent = steps.slice(0, -1).join(PATH_SEP);
    const list = children.get(parent) ?? [];
    list.push(s.path);
    children.set(parent, list);
  }
  const start = (p: string) => startOf(p) ?? Infinity;
  const order = (list: string[]) => list.sort((x, y) => start(x) - start(y) || (x < y ? -1 : x > y ? 1 : 0));
  // Roots: paths whose parent path is not listed (normally the one root path).
  const roots = order([...rows.keys()].filter((p) => !rows.has(p.split(PATH_SEP).slice(0, -1).join(PATH_SEP))));
  const out: PathRow[] = [];
  const stack = roots.reverse();
  while (stack.length) {
    const p = stack.pop()!;
    out.push(rows.get(p)!);
    const kids = order(children.get(p) ?? []);
    for (let k = kids.length - 1; k >= 0; k--) stack.push(kids[k]);
  }
  return out;
}

/* ---------- system map ---------- */

export function edgeLabel(e: Pick<GraphEdge, 'callCount' | 'errorCount' | 'p99Ms'>): string {
  const parts = [`${e.callCount} call${e.callCount === 1 ? '' : 's'}`, `${formatPercent(e.callCount ? e.errorCount / e.callCount : 0)} err`];
  if (e.p99Ms !== null) parts.push(`p99 ${formatDuration(e.p99Ms * 1000)}`);
  return parts.join(' · ');
}

const DATABASES = new Set(['postgresql', 'mysql', 'mariadb', 'mssql', 'oracle', 'db2', 'sqlite', 'redis', 'mongodb', 'cassandra', 'elasticsearch', 'opensearch', 'memcached', 'couchdb', 'couchbase', 'dynamodb', 'clickhouse', 'cockroachdb', 'spanner', 'neo4j', 'hbase', 'h2', 'derby', 'hive', 'trino', 'other_sql']);

/**
 * The search tag that finds the spans naming a virtual peer: a topic node by its
 * destination (`messaging.destination.name`), a broker by `messaging.system`, a known
 * database name by `db.system`, anything else by `peer.service`.
 */
export function peerTag(id: string, g: Graph): string {
  const node = g.nodes.find((n) => n.id === id);
  if (node?.kind === 'topic' && node.topic) return `messaging.destination.name=${node.topic}`;
  if (node?.kind === 'broker' || g.edges.some((e) => e.parent === id)) return `messaging.system=${node?.system ?? id}`;
  if (DATABASES.has(id)) return `db.system=${id}`;
  return `peer.service=${id}`;
}

/* ---------- alerts ---------- */

const STATE_ORDER: Record<string, number> = { firing: 0, pending: 1, inactive: 2 };

/** Firing first, then pending, then the rest, by name. */
export function sortAlerts(list: readonly Alert[]): Alert[] {
  return list.slice().sort((a, b) => (STATE_ORDER[a.state] ?? 3) - (STATE_ORDER[b.state] ?? 3) || a.name.localeCompare(b.name));
}

/** The rules about `service`: its filter names the service, or its labels do. */
export function alertsOf(list: readonly Alert[], service: string): Alert[] {
  return sortAlerts(list.filter((a) => a.service === service || a.labels?.service === service));
}
