import { describe, expect, test } from 'vitest';
import { criticalPath } from '../../src/model/critical-path';
import { buildTrace } from '../../src/model/trace';
import { type SpanSpec, jaeger } from './helpers';

const path = (specs: SpanSpec[]) =>
  criticalPath(buildTrace(jaeger(specs))).segments.map((s) => [s.span.spanID, s.start, s.end]);

describe('criticalPath', () => {
  test('sequential children: the path alternates between parent and children', () => {
    expect(
      path([
        ['r', null, 's', 'root', 0, 100],
        ['a', 'r', 's', 'a', 10, 30],
        ['b', 'r', 's', 'b', 50, 40],
      ]),
    ).toEqual([
      ['r', 0, 10],
      ['a', 10, 40],
      ['r', 40, 50],
      ['b', 50, 90],
      ['r', 90, 100],
    ]);
  });

  test('parallel children: only the one that finished last is waited for', () => {
    const p = path([
      ['r', null, 's', 'root', 0, 100],
      ['fast', 'r', 's', 'fast', 10, 20],
      ['slow', 'r', 's', 'slow', 10, 80],
    ]);
    expect(p).toEqual([
      ['r', 0, 10],
      ['slow', 10, 90],
      ['r', 90, 100],
    ]);
  });

  test('overlapping children: the earlier one counts until the later one started', () => {
    expect(
      path([
        ['r', null, 's', 'root', 0, 100],
        ['a', 'r', 's', 'a', 0, 60],
        ['b', 'r', 's', 'b', 40, 60],
      ]),
    ).toEqual([
      ['a', 0, 40],
      ['b', 40, 100],
    ]);
  });

  test('async consumer after the producer ended is on the path (Kafka)', () => {
    const p = path([
      ['root', null, 'ingestion', 'fetch', 0, 30],
      ['prod', 'root', 'ingestion', 'send_to_kafka', 10, 10],
      ['cons', 'prod', 'processor', 'process_message', 50, 100],
      ['calc', 'cons', 'processor', 'calculate_bsm', 60, 80],
    ]);
    expect(p).toEqual([
      ['root', 0, 10],
      // The producer's work and then the wait in Kafka (drawn only on the producer's bar).
      ['prod', 10, 50],
      ['cons', 50, 60],
      ['calc', 60, 140],
      ['cons', 140, 150],
    ]);
  });

  test('segments tile the trace from start to end without overlap', () => {
    const specs: SpanSpec[] = [['r', null, 's', 'root', 0, 1000]];
    let seed = 1;
    const rand = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
    for (let i = 1; i < 300; i++) {
      const parent = specs[Math.floor(rand() * specs.length)];
      const start = parent[4] + rand() * parent[5];
      specs.push([`s${i}`, parent[0], 's', 'op', start, rand() * (parent[4] + parent[5] - start) * 1.2]);
    }
    const t = buildTrace(jaeger(specs));
    const segs = criticalPath(t).segments;
    expect(segs[0].start).toBe(t.startTime);
    for (let i = 1; i < segs.length; i++) expect(segs[i].start).toBeCloseTo(segs[i - 1].end, 6);
    expect(segs[segs.length - 1].end).toBeCloseTo(t.endTime, 6);
  });

  test('a 100k-deep chain does not overflow the stack', () => {
    const specs: SpanSpec[] = [];
    for (let i = 0; i < 100_000; i++) specs.push([`s${i}`, i ? `s${i - 1}` : null, 's', 'op', i, 200_000 - 2 * i]);
    expect(criticalPath(buildTrace(jaeger(specs))).spanIds.size).toBe(100_000);
  });
});
