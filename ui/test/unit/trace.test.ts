import { describe, expect, test } from 'vitest';
import { buildTrace, rootSpan, toJaegerTrace } from '../../src/model/trace';
import { errorTag, jaeger } from './helpers';

describe('buildTrace', () => {
  test('orders spans in tree preorder, children by start time, with depths', () => {
    const t = buildTrace(
      jaeger([
        ['c2', 'r', 'a', 'second', 50, 10],
        ['r', null, 'a', 'root', 0, 100],
        ['c1', 'r', 'b', 'first', 10, 20],
        ['g', 'c1', 'b', 'grandchild', 12, 5, [errorTag]],
      ]),
    );
    expect(t.spans.map((s) => s.spanID)).toEqual(['r', 'c1', 'g', 'c2']);
    expect(t.spans.map((s) => s.depth)).toEqual([0, 1, 2, 1]);
    expect(t.spans.map((s) => s.index)).toEqual([0, 1, 2, 3]);
    expect(t.depth).toBe(3);
    expect(t.services).toEqual(['a', 'b']);
    expect(t.errorCount).toBe(1);
    expect(t.duration).toBe(100);
    expect(rootSpan(t)?.operationName).toBe('root');
  });

  test('a span whose parent is missing becomes an orphan root', () => {
    const t = buildTrace(
      jaeger([
        ['r', null, 'a', 'root', 0, 100],
        ['x', 'gone', 'a', 'late', 120, 10],
      ]),
    );
    expect(t.roots.map((s) => s.spanID)).toEqual(['r', 'x']);
    expect(t.byId.get('x')!.orphan).toBe(true);
    expect(rootSpan(t)?.spanID).toBe('r');
    expect(t.endTime).toBe(130);
  });

  test('a parent cycle is cut so every span appears exactly once', () => {
    const t = buildTrace(
      jaeger([
        ['a', 'b', 's', 'a', 0, 10],
        ['b', 'a', 's', 'b', 1, 5],
        ['r', null, 's', 'root', 0, 20],
      ]),
    );
    expect(t.spans.map((s) => s.spanID).sort()).toEqual(['a', 'b', 'r']);
    expect(new Set(t.spans).size).toBe(3);
  });

  test('a 100k-deep chain builds without overflowing the stack', () => {
    const specs: [string, string | null, string, string, number, number][] = [];
    for (let i = 0; i < 100_000; i++) specs.push([`s${i}`, i ? `s${i - 1}` : null, 'svc', 'op', i, 100_000 - i]);
    const t = buildTrace(jaeger(specs));
    expect(t.depth).toBe(100_000);
  });

  test('toJaegerTrace strips derived fields', () => {
    const raw = jaeger([['r', null, 'a', 'root', 0, 100]]);
    const back = toJaegerTrace(buildTrace(raw));
    expect(Object.keys(back.spans[0]).sort()).toEqual(['duration', 'flags', 'logs', 'operationName', 'processID', 'references', 'spanID', 'startTime', 'tags', 'traceID', 'warnings']);
    expect(back.processes).toEqual(raw.processes);
  });
});
