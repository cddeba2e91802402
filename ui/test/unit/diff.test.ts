import { describe, expect, test } from 'vitest';
import { latencyDeltas, structureDiff } from '../../src/model/diff';
import { selfTime, operationStats, percentile } from '../../src/model/stats';
import { buildTrace } from '../../src/model/trace';
import { type SpanSpec, jaeger } from './helpers';

const A: SpanSpec[] = [
  ['r', null, 'proc', 'process_message', 0, 100],
  ['c', 'r', 'proc', 'clean_data', 0, 10],
  ['b', 'r', 'proc', 'calculate_bsm', 10, 60],
  ['s', 'r', 'store', 'db_write', 70, 20],
];
const B: SpanSpec[] = [
  ['r', null, 'proc', 'process_message', 0, 300],
  ['b', 'r', 'proc', 'calculate_bsm', 10, 240],
  ['s1', 'r', 'store', 'db_write', 250, 20],
  ['s2', 'r', 'store', 'db_write', 270, 20],
  ['x', 's2', 'store', 'retry_backoff', 275, 5],
];

describe('structureDiff', () => {
  test('merges call paths in tree order with their status', () => {
    const d = structureDiff(buildTrace(jaeger(A)), buildTrace(jaeger(B)));
    expect(d.map((n) => [n.operation, n.depth, n.countA, n.countB, n.status])).toEqual([
      ['process_message', 0, 1, 1, 'same'],
      ['clean_data', 1, 1, 0, 'removed'],
      ['calculate_bsm', 1, 1, 1, 'same'],
      ['db_write', 1, 1, 2, 'changed'],
      ['retry_backoff', 2, 0, 1, 'added'],
    ]);
    expect(d[3].durationA).toBe(20);
    expect(d[3].durationB).toBe(40);
    expect(d[4].exampleB?.spanID).toBe('x');
  });
  test('identical traces differ nowhere', () => {
    expect(structureDiff(buildTrace(jaeger(A)), buildTrace(jaeger(A))).every((n) => n.status === 'same')).toBe(true);
  });
});

describe('latencyDeltas', () => {
  test('ranks by change of self time, so the slow leaf beats its parent', () => {
    const d = latencyDeltas(buildTrace(jaeger(A)), buildTrace(jaeger(B)));
    expect(d[0].operation).toBe('calculate_bsm');
    expect(d[0].selfDelta).toBe(180);
    expect(d[0].ratio).toBeCloseTo(3);
    const parent = d.find((r) => r.operation === 'process_message')!;
    expect(parent.delta).toBe(200);
    expect(parent.selfDelta).toBe(20 - 10); // A: 100 - 90 covered; B: 300 - 280 covered
    const gone = d.find((r) => r.operation === 'clean_data')!;
    expect([gone.countA, gone.countB, Number.isNaN(gone.ratio)]).toEqual([1, 0, true]);
  });
});

describe('stats', () => {
  test('self time subtracts the union of children, clipped to the span', () => {
    const t = buildTrace(
      jaeger([
        ['r', null, 's', 'root', 0, 100],
        ['a', 'r', 's', 'a', 10, 30],
        ['b', 'r', 's', 'b', 20, 30], // overlaps a: union 10..50
        ['c', 'r', 's', 'c', 90, 50], // runs past the parent: counts to 100 only
      ]),
    );
    expect(selfTime(t.byId.get('r')!)).toBe(100 - 40 - 10);
  });
  test('per operation aggregates', () => {
    const [db] = operationStats(buildTrace(jaeger(B))).filter((s) => s.operation === 'db_write');
    expect(db).toMatchObject({ service: 'store', count: 2, total: 40, min: 20, max: 20, avg: 20, self: 35 });
  });
  test('nearest-rank percentiles', () => {
    const xs = Array.from({ length: 100 }, (_, i) => i + 1);
    expect([percentile(xs, 50), percentile(xs, 99), percentile(xs, 100), percentile([7], 99)]).toEqual([50, 99, 100, 7]);
    expect(percentile([], 50)).toBeNaN();
  });
});
