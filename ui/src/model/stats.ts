// Statistics over spans: self time, per service/operation aggregates, percentiles.

import type { Span, Trace } from './trace';

/** Duration minus the time covered by children (clipped to the span): the span's own work. */
export function selfTime(span: Span): number {
  const start = span.startTime;
  const end = start + span.duration;
  const intervals = span.children
    .map((c) => [Math.max(c.startTime, start), Math.min(c.startTime + c.duration, end)] as const)
    .filter(([a, b]) => b > a)
    .sort((x, y) => x[0] - y[0]);
  let covered = 0;
  let curStart = -Infinity;
  let curEnd = -Infinity;
  for (const [a, b] of intervals) {
    if (a > curEnd) {
      if (curEnd > curStart) covered += curEnd - curStart;
      curStart = a;
      curEnd = b;
    } else curEnd = Math.max(curEnd, b);
  }
  if (curEnd > curStart) covered += curEnd - curStart;
  return span.duration - covered;
}

export interface OperationStats {
  service: string;
  operation: string;
  count: number;
  errors: number;
  total: number;
  self: number;
  avg: number;
  min: number;
  max: number;
}

export const opKey = (service: string, operation: string) => `${service}\u0000${operation}`;

/** Per service/operation aggregates of one trace, sorted by total time, largest first. */
export function operationStats(trace: Trace): OperationStats[] {
  const groups = new Map<string, OperationStats>();
  for (const s of trace.spans) {
    const key = opKey(s.service, s.operationName);
    let g = groups.get(key);
    if (!g) {
      g = { service: s.service, operation: s.operationName, count: 0, errors: 0, total: 0, self: 0, avg: 0, min: Infinity, max: -Infinity };
      groups.set(key, g);
    }
    g.count++;
    if (s.error) g.errors++;
    g.total += s.duration;
    g.self += selfTime(s);
    g.min = Math.min(g.min, s.duration);
    g.max = Math.max(g.max, s.duration);
  }
  const out = [...groups.values()];
  for (const g of out) g.avg = g.total / g.count;
  return out.sort((a, b) => b.total - a.total);
}

/** Nearest-rank percentile of ascending-sorted values; NaN for none. */
export function percentile(sorted: readonly number[], p: number): number {
  if (!sorted.length) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}
