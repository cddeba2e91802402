import { describe, expect, test } from 'vitest';
import type { Alert, StatsPoint } from '../../src/api/analytics';
import { alertsOf, alignSeries, edgeLabel, pathRows, peerTag, sortAlerts, sparkValues, stepFor } from '../../src/model/monitor';

const point = (time: number, calls: number, errors: number, p50Ms: number | null): StatsPoint => ({
  time,
  calls,
  errors,
  errorRatio: calls ? errors / calls : 0,
  ratePerSec: calls / 60,
  p50Ms,
  p90Ms: p50Ms,
  p95Ms: p50Ms,
  p99Ms: p50Ms,
});

describe('time steps and series', () => {
  test('the smallest round step giving at most the wanted points', () => {
    expect(stepFor(3600e6, 60)).toEqual({ step: '1m', stepUs: 60e6 });
    expect(stepFor(3600e6, 20)).toEqual({ step: '5m', stepUs: 300e6 });
    expect(stepFor(5 * 60e6, 60)).toEqual({ step: '5s', stepUs: 5e6 });
    expect(stepFor(1e6, 60)).toEqual({ step: '1s', stepUs: 1e6 });
    expect(stepFor(365 * 86400e6, 10).step).toBe('24h');
  });

  test('alignSeries fills every epoch-aligned step; missing ones are 0 calls/s and gaps', () => {
    const step = 60e6;
    // Range 10:00:30 → 10:03:10: steps start at 10:00, 10:01, 10:02, 10:03.
    const t0 = 1_700_000_040e6; // a multiple of 60 s
    const s = alignSeries([point(t0, 6, 3, 2), point(t0 + 2 * step, 12, 0, 4)], t0 + 30e6, t0 + 190e6, step);
    expect(s.t).toEqual([t0, t0 + step, t0 + 2 * step, t0 + 3 * step].map((t) => t / 1e6));
    expect(s.rate).toEqual([0.1, 0, 0.2, 0]);
    expect(s.errors).toEqual([0.5, null, 0, null]);
    expect(s.p50).toEqual([2000, null, 4000, null]); // ms → µs
    expect(s.p99).toEqual([2000, null, 4000, null]);
  });

  test('sparkValues: NaN where a step has no point', () => {
    const v = sparkValues([{ time: 0, p99Ms: 5 }, { time: 20, p99Ms: null }], (p) => p.p99Ms, 0, 30, 10);
    expect(v.slice(0, 1)).toEqual([5]);
    expect(v.slice(1).every(Number.isNaN)).toBe(true);
    expect(v).toHaveLength(4);
  });
});

describe('compare API paths', () => {
  test('paths become a depth-first tree with status per path', () => {
    const rows = pathRows([
      { path: 'api:GET /x > db:query', countA: 1, countB: 3 },
      { path: 'api:GET /x', countA: 1, countB: 1 },
      { path: 'api:GET /x > cache:get', countA: 0, countB: 1 },
      { path: 'api:GET /x > db:query > db:fsync', countA: 2, countB: 0 },
      { path: 'api:GET /x > auth:check:token', countA: 1, countB: 1 },
    ]);
    expect(rows.map((r) => [r.depth, r.service, r.operation, r.status])).toEqual([
      [0, 'api', 'GET /x', 'same'],
      [1, 'auth', 'check:token', 'same'],
      [1, 'cache', 'get', 'added'],
      [1, 'db', 'query', 'changed'],
      [2, 'db', 'fsync', 'removed'],
    ]);
  });

  test('a child sorts right after its parent even when a sibling name extends the parent name', () => {
    const rows = pathRows([
      { path: 'a:x > b:y2', countA: 1, countB: 1 },
      { path: 'a:x > b:y > c:z', countA: 1, countB: 1 },
      { path: 'a:x > b:y', countA: 1, countB: 1 },
      { path: 'a:x', countA: 1, countB: 1 },
    ]);
    expect(rows.map((r) => r.path)).toEqual(['a:x', 'a:x > b:y', 'a:x > b:y > c:z', 'a:x > b:y2']);
  });

  test('siblings in the order they ran when start times are known', () => {
    const structure = ['r:root', 'r:root > s:zeta', 'r:root > s:alpha', 'r:root > s:alpha > s:inner', 'r:root > s:mid'].map((path) => ({ path, countA: 1, countB: 1 }));
    const starts: Record<string, number> = { 'r:root': 0, 'r:root > s:zeta': 10, 'r:root > s:alpha': 30, 'r:root > s:alpha > s:inner': 31 };
    // `mid` has no known start: after the timed siblings.
    expect(pathRows(structure, (p) => starts[p]).map((r) => r.operation)).toEqual(['root', 'zeta', 'alpha', 'inner', 'mid']);
  });
});

describe('system map', () => {
  test('edge labels: calls, error % and p99 when known', () => {
    expect(edgeLabel({ callCount: 40, errorCount: 4, p99Ms: 12.3456 })).toBe('40 calls · 10.0% err · p99 12.3ms');
    expect(edgeLabel({ callCount: 1, errorCount: 0, p99Ms: null })).toBe('1 call · 0.0% err');
  });

  test('the search that opens a virtual peer', () => {
    const g = {
      nodes: [],
      edges: [
        { parent: 'a', child: 'kafka', callCount: 1, errorCount: 0, p99Ms: 1 },
        { parent: 'kafka', child: 'b', callCount: 1, errorCount: 0, p99Ms: 1 },
        { parent: 'b', child: 'postgresql', callCount: 1, errorCount: 0, p99Ms: 1 },
        { parent: 'b', child: 'billing-api', callCount: 1, errorCount: 0, p99Ms: 1 },
      ],
    };
    expect(peerTag('kafka', g)).toBe('messaging.system=kafka');
    const topics = {
      nodes: [{ id: 'kafka/market-data-raw', kind: 'topic' as const, virtual: true, system: 'kafka', topic: 'market-data-raw' }],
      edges: [{ parent: 'kafka/market-data-raw', child: 'b', callCount: 1, errorCount: 0, p99Ms: 1 }],
    };
    expect(peerTag('kafka/market-data-raw', topics)).toBe('messaging.destination.name=market-data-raw');
    expect(peerTag('postgresql', g)).toBe('db.system=postgresql');
    expect(peerTag('billing-api', g)).toBe('peer.service=billing-api');
  });
});

describe('alerts', () => {
  const alert = (name: string, state: Alert['state'], service: string | null, labels: Record<string, string> = {}): Alert => ({
    name,
    state,
    value: null,
    activeSince: null,
    lastEvaluation: null,
    service,
    operation: null,
    labels,
    annotations: {},
    exampleTraceIDs: [],
  });

  test('firing first, then pending, then inactive, by name', () => {
    const list = [alert('b', 'inactive', null), alert('z', 'pending', null), alert('c', 'firing', null), alert('a', 'firing', null)];
    expect(sortAlerts(list).map((a) => a.name)).toEqual(['a', 'c', 'z', 'b']);
  });

  test("a service's rules: by the rule's service filter or a service label", () => {
    const list = [alert('x', 'inactive', 'storage'), alert('y', 'firing', null, { service: 'storage' }), alert('z', 'firing', 'other')];
    expect(alertsOf(list, 'storage').map((a) => a.name)).toEqual(['y', 'x']);
  });
});
