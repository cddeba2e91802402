// The Tempo API client against Tempo's answer shapes: the URLs it asks, int64s sent as
// strings, absent fields, the plain-text 400 of a bad query, series on one time axis.
// fetch is a stand-in recording the URLs.

import { afterEach, beforeEach, describe, expect, test, vi } from 'vitest';
import { ApiError } from '../../src/api/client';
import { resetSession } from '../../src/api/session';
import * as tempo from '../../src/api/tempo';

let urls: string[];

/** Answers every request with `body` (JSON unless a string) and `status`. */
function serve(body: unknown, status = 200) {
  urls = [];
  vi.stubGlobal(
    'fetch',
    vi.fn(async (url: string) => {
      urls.push(url);
      return new Response(typeof body === 'string' ? body : JSON.stringify(body), { status, headers: { 'content-type': typeof body === 'string' ? 'text/plain' : 'application/json' } });
    }),
  );
}

beforeEach(() => resetSession());
afterEach(() => vi.unstubAllGlobals());

const T0 = 1733390000_000_000; // µs

describe('search', () => {
  test('asks /api/search with the query, unix seconds, limit and spans per set', async () => {
    serve({ traces: [] });
    await tempo.search({ q: '{ span.symbol = "TK042" }', start: T0 - 3600e6 + 0.5e6, end: T0 + 0.5e6, limit: 20, spss: 3 });
    const u = new URL(urls[0], 'http://x');
    expect(u.pathname).toBe('/api/search');
    expect(Object.fromEntries(u.searchParams)).toEqual({ q: '{ span.symbol = "TK042" }', start: '1733386400', end: '1733390001', limit: '20', spss: '3' });
  });

  test("Tempo's answer in the UI's units: µs, root names, matched spans with their service", async () => {
    serve({
      traces: [
        {
          traceID: '4bf92f3577b34da6a3ce929d0e0e4736',
          rootServiceName: 'pricing',
          rootTraceName: 'GET /quote',
          startTimeUnixNano: '1733390000000000000',
          durationMs: 12,
          spanSets: [
            {
              spans: [
                {
                  spanID: '00f067aa0ba902b7',
                  name: 'db_write',
                  startTimeUnixNano: '1733390000001000000',
                  durationNanos: '5000000',
                  attributes: [
                    { key: 'service.name', value: { stringValue: 'storage' } },
                    { key: 'retries', value: { intValue: '2' } },
                  ],
                },
              ],
              matched: 1,
            },
          ],
          spanSet: { spans: [], matched: 1 },
        },
      ],
      metrics: { inspectedTraces: 10, inspectedBytes: '2048' },
    });
    const a = await tempo.search({ q: '{}', start: 0, end: 1, limit: 1, spss: 3 });
    expect(a.inspectedTraces).toBe(10);
    expect(a.inspectedBytes).toBe(2048);
    expect(a.traces).toEqual([
      {
        traceID: '4bf92f3577b34da6a3ce929d0e0e4736',
        rootService: 'pricing',
        rootName: 'GET /quote',
        start: 1733390000000000,
        duration: 12000,
        spanSets: [
          {
            matched: 1,
            spans: [
              {
                spanID: '00f067aa0ba902b7',
                name: 'db_write',
                service: 'storage',
                start: 1733390000001000,
                duration: 5000,
                attributes: [
                  ['service.name', 'storage'],
                  ['retries', '2'],
                ],
              },
            ],
          },
        ],
      },
    ]);
  });

  test('absent fields: durationMs 0, spanSets from spanSet or none, no root yet, no metrics', async () => {
    serve({
      traces: [
        { traceID: 'a1', startTimeUnixNano: '1733390000000000123', spanSet: { spans: [{ spanID: 'b2', durationNanos: '1500' }], matched: 4 } },
        { traceID: 'c3', rootServiceName: 'api', startTimeUnixNano: '1733390000000000000' },
      ],
    });
    const a = await tempo.search({ q: '{}', start: 0, end: 1, limit: 2, spss: 3 });
    expect(a.inspectedTraces).toBeNull();
    expect(a.traces[0]).toMatchObject({ rootService: null, rootName: null, duration: 0, start: 1733390000000000.123 });
    expect(a.traces[0].spanSets).toEqual([{ matched: 4, spans: [{ spanID: 'b2', name: '', service: null, start: 0, duration: 1.5, attributes: [] }] }]);
    expect(a.traces[1].spanSets).toEqual([]);
  });

  test('no traces: an empty list, for `traces` absent or null', async () => {
    serve({ metrics: {} });
    expect((await tempo.search({ q: '{}', start: 0, end: 1, limit: 1, spss: 1 })).traces).toEqual([]);
    serve({ traces: null });
    expect((await tempo.search({ q: '{}', start: 0, end: 1, limit: 1, spss: 1 })).traces).toEqual([]);
  });

  test("a bad query's plain-text 400 is the error's message, recognised as the query's fault", async () => {
    const msg = "parse error at line 1, column 14: expected a value after '=', found '}'";
    serve(msg, 400);
    const err = await tempo.search({ q: '{ span.foo = }', start: 0, end: 1, limit: 1, spss: 1 }).catch((e) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err.message).toBe(msg);
    expect(tempo.isQueryError(err)).toBe(true);
    serve('storage unavailable', 503);
    expect(tempo.isQueryError(await tempo.search({ q: '{}', start: 0, end: 1, limit: 1, spss: 1 }).catch((e) => e))).toBe(false);
  });
});

describe('tags and values', () => {
  const answer = {
    scopes: [
      { name: 'span', tags: ['symbol', 'http.route', 'symbol'] },
      { name: 'resource', tags: ['service.name'] },
      { name: 'intrinsic', tags: ['duration', 'kind', 'name', 'status'] },
    ],
  };

  test('the names of one scope, sorted, once each', async () => {
    serve(answer);
    expect(await tempo.tags('span')).toEqual(['http.route', 'symbol']);
    expect(urls).toEqual(['/api/v2/search/tags?scope=span']);
    expect(await tempo.tags('resource')).toEqual(['service.name']);
    expect(await tempo.tags('event')).toEqual([]);
    serve({ scopes: [{ name: 'span', tags: null }] });
    expect(await tempo.tags('span')).toEqual([]);
  });

  test('values of a tag, narrowed by the query so far; `{}` sends no filter', async () => {
    serve({
      tagValues: [
        { type: 'string', value: 'TK042' },
        { type: 'int', value: '3' },
      ],
    });
    expect(await tempo.tagValues('span.symbol', '{resource.service.name="x"}')).toEqual([
      { type: 'string', value: 'TK042' },
      { type: 'int', value: '3' },
    ]);
    expect(urls[0]).toBe('/api/v2/search/tag/span.symbol/values?q=%7Bresource.service.name%3D%22x%22%7D');
    await tempo.tagValues('span:name', '{}');
    expect(urls[1]).toBe('/api/v2/search/tag/span%3Aname/values');
    serve({});
    expect(await tempo.tagValues('resource.service.name', '')).toEqual([]);
  });
});

describe('metrics', () => {
  test('asks query_range with unix seconds and a step in seconds', async () => {
    serve({ series: [] });
    await tempo.queryRange({ q: '{ } | rate() by (resource.service.name)', start: T0 - 3600e6, end: T0, stepSec: 30 });
    const u = new URL(urls[0], 'http://x');
    expect(u.pathname).toBe('/api/metrics/query_range');
    expect(Object.fromEntries(u.searchParams)).toEqual({ q: '{ } | rate() by (resource.service.name)', start: '1733386400', end: '1733390000', step: '30s' });
  });

  test('series with their labels and samples in time order; no labels is the whole query', async () => {
    serve({
      series: [
        {
          labels: [{ key: 'span.symbol', value: { stringValue: 'TK042' } }],
          promLabels: '{span.symbol="TK042"}',
          samples: [
            { timestampMs: '1733390100000', value: 0.5 },
            { timestampMs: '1733390040000', value: 0.25 },
          ],
        },
        { labels: [{ key: 'span.retries', value: { intValue: '3' } }], samples: [{ timestampMs: '1733390040000', value: 1 }] },
        { samples: [] },
      ],
    });
    const s = await tempo.queryRange({ q: 'x', start: 0, end: 1, stepSec: 60 });
    expect(s.partial).toBeNull();
    expect(s.series).toEqual([
      { label: '{span.retries="3"}', labels: [['span.retries', '3']], points: [[1733390040, 1]] },
      {
        label: '{span.symbol="TK042"}',
        labels: [['span.symbol', 'TK042']],
        points: [
          [1733390040, 0.25],
          [1733390100, 0.5],
        ],
      },
      { label: '{}', labels: [], points: [] },
    ].sort((a, b) => a.label.localeCompare(b.label)));
  });

  test('a partial answer says why; the `__name__` label of a query without by() is kept', async () => {
    serve({ series: [{ labels: [{ key: '__name__', value: { stringValue: 'rate' } }], samples: [{ timestampMs: '1700000060000', value: 'NaN' }, { timestampMs: '1700000120000', value: 2 }] }], status: 'PARTIAL', message: 'series limit reached' });
    const s = await tempo.queryRange({ q: '{ } | rate()', start: 0, end: 1, stepSec: 60 });
    expect(s.partial).toBe('series limit reached');
    expect(s.series[0].label).toBe('{__name__="rate"}');
    // The legend names it by the query; other labels keep their series apart.
    expect(tempo.legendLabel(s.series[0])).toBeNull();
    expect(tempo.legendLabel({ label: '{}', labels: [], points: [] })).toBeNull();
    expect(tempo.legendLabel({ label: '', labels: [['__name__', 'quantile_over_time'], ['p', '0.99']], points: [] })).toBe('{p="0.99"}');
    expect(tempo.legendLabel({ label: '{a="b"}', labels: [], points: [] })).toBe('{a="b"}');
    expect(tempo.alignSeries(s.series)).toEqual([[1700000060, 1700000120], [null, 2]]);
  });

  test('aligned on one time axis, null where a series has no sample', () => {
    const a = { label: 'a', labels: [], points: [[60, 1] as [number, number], [180, 3] as [number, number]] };
    const b = { label: 'b', labels: [], points: [[120, 2] as [number, number]] };
    expect(tempo.alignSeries([a, b])).toEqual([
      [60, 120, 180],
      [1, null, 3],
      [null, 2, null],
    ]);
    expect(tempo.alignSeries([])).toEqual([[]]);
  });
});

describe('units', () => {
  test('int64 nanoseconds beyond 2^53 keep µs precision', () => {
    expect(tempo.nanosToMicros('1733390000001234567')).toBe(1733390000001234.5);
    expect(tempo.nanosToMicros('5000000')).toBe(5000);
    expect(tempo.nanosToMicros(2500)).toBe(2.5);
    expect(tempo.nanosToMicros(undefined)).toBe(0);
    expect(tempo.nanosToMicros('')).toBe(0);
  });
});
