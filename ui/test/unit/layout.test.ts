import { describe, expect, test } from 'vitest';
import { barGeometry, collapseBelow, findSpans, highlightedSpans, revealSpan, timeTicks, visibleRows } from '../../src/model/layout';
import { buildTrace } from '../../src/model/trace';
import { jaeger } from './helpers';

const trace = buildTrace(
  jaeger([
    ['r', null, 'ingestion-service', 'fetch_instrument_data', 0, 1000],
    ['a', 'r', 'ingestion-service', 'send_to_kafka', 100, 100],
    ['b', 'a', 'processor-service', 'process_message', 300, 500, [{ key: 'symbol', type: 'string', value: 'AAPL' }]],
    ['c', 'b', 'processor-service', 'calculate_bsm', 350, 200],
    ['d', 'r', 'storage-service', 'db_write', 900, 50, [{ key: 'db.system', type: 'string', value: 'postgresql' }]],
  ]),
);
const ids = (spans: { spanID: string }[]) => spans.map((s) => s.spanID);

describe('visibleRows', () => {
  test('everything when nothing is collapsed', () => {
    expect(ids(visibleRows(trace, new Set()))).toEqual(['r', 'a', 'b', 'c', 'd']);
  });
  test('a collapsed span hides its whole subtree and nothing else', () => {
    expect(ids(visibleRows(trace, new Set(['a'])))).toEqual(['r', 'a', 'd']);
    expect(ids(visibleRows(trace, new Set(['b'])))).toEqual(['r', 'a', 'b', 'd']);
    expect(ids(visibleRows(trace, new Set(['r'])))).toEqual(['r']);
  });
  test('collapsing a leaf changes nothing', () => {
    expect(ids(visibleRows(trace, new Set(['c', 'd'])))).toEqual(['r', 'a', 'b', 'c', 'd']);
  });
  test('collapseBelow and revealSpan', () => {
    const collapsed = collapseBelow(trace, 1);
    expect([...collapsed].sort()).toEqual(['a', 'b']);
    expect(ids(visibleRows(trace, collapsed))).toEqual(['r', 'a', 'd']);
    const revealed = revealSpan(collapsed, trace.byId.get('c')!);
    expect(ids(visibleRows(trace, revealed))).toEqual(['r', 'a', 'b', 'c', 'd']);
  });
});

describe('geometry', () => {
  test('bars are fractions of the view', () => {
    expect(barGeometry(250, 500, 0, 1000)).toEqual({ left: 0.25, width: 0.5 });
    expect(barGeometry(5, 0, 5, 5)).toEqual({ left: 0, width: 0 });
  });
  test('ticks follow a 1-2-5 ladder and cover the duration', () => {
    expect(timeTicks(1000, 5)).toEqual([0, 200, 400, 600, 800, 1000]);
    expect(timeTicks(32_800, 6)).toEqual([0, 10_000, 20_000, 30_000]);
    expect(timeTicks(0)).toEqual([0]);
    const t = timeTicks(123_456_789);
    expect(t.length).toBeGreaterThanOrEqual(3);
    expect(t.length).toBeLessThanOrEqual(12);
  });
});

describe('findSpans', () => {
  test('every term must match the name, service, id or a tag', () => {
    expect(ids(findSpans(trace, 'kafka'))).toEqual(['a']);
    expect(ids(findSpans(trace, 'symbol=aapl'))).toEqual(['b']);
    expect(ids(findSpans(trace, 'db_write postgresql'))).toEqual(['d']);
    expect(ids(findSpans(trace, 'processor-service'))).toEqual(['b', 'c']);
    expect(findSpans(trace, '  ')).toEqual([]);
  });
});

describe('highlightedSpans', () => {
  test('the spans a highlight parameter names, in timeline order, ids compared without case or leading zeros', () => {
    const t = buildTrace(
      jaeger([
        ['00f067aa0ba902b7', null, 'api', 'root', 0, 100],
        ['0000000000000abc', '00f067aa0ba902b7', 'api', 'child', 10, 10],
        ['1111111111111111', '00f067aa0ba902b7', 'api', 'other', 20, 10],
      ]),
    );
    expect(ids(highlightedSpans(t, 'abc,F067AA0BA902B7'))).toEqual(['00f067aa0ba902b7', '0000000000000abc']);
    expect(highlightedSpans(t, 'ffff')).toEqual([]);
    expect(highlightedSpans(t, '')).toEqual([]);
    expect(highlightedSpans(t, null)).toEqual([]);
  });
});
