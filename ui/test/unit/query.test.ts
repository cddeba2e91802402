import { describe, expect, test } from 'vitest';
import { attributeKeys, spansOf } from '../../src/model/derive';
import { formatDuration, parseDuration } from '../../src/model/format';
import { otlpToJaeger } from '../../src/model/formats';
import { QueryError, parseTags, sortSummaries, timeRange, traceqlFromSearch } from '../../src/model/query';
import { buildTrace } from '../../src/model/trace';
import { pipelineTrace } from '../e2e/fixtures';

describe('search fields', () => {
  test('tags are key=value pairs, quoted values may hold spaces', () => {
    expect(parseTags('error=true  http.route="/a b" x=')).toEqual({ error: 'true', 'http.route': '/a b', x: '' });
    expect(parseTags('')).toEqual({});
    expect(() => parseTags('error')).toThrow(QueryError);
  });
  test('durations parse like Go and format with 3 digits', () => {
    expect([parseDuration('1.5ms'), parseDuration('300us'), parseDuration('1h30m'), parseDuration('2s')]).toEqual([1500, 300, 5400e6, 2e6]);
    expect(parseDuration('10 parsecs')).toBeNull();
    expect([formatDuration(950), formatDuration(12_345), formatDuration(4_560_000), formatDuration(90e6)]).toEqual(['950µs', '12.3ms', '4.56s', '1m30s']);
  });
  test('time ranges', () => {
    expect(timeRange('1h', null, null, 10_000_000)).toEqual([10_000_000_000 - 3600e6, 10_000_000_000]);
    expect(timeRange('custom', '5', '9')).toEqual([5, 9]);
    expect(() => timeRange('custom', '9', '5')).toThrow(QueryError);
  });
  test('sorting results', () => {
    const rows = [
      { traceID: 'a', start: 1, duration: 5, spans: 3, errors: 0 },
      { traceID: 'b', start: 3, duration: 1, spans: 9, errors: 1 },
      { traceID: 'c', start: 2, duration: 9, spans: 1, errors: 0 },
    ];
    expect(sortSummaries(rows, 'recent').map((r) => r.traceID)).toEqual(['b', 'c', 'a']);
    expect(sortSummaries(rows, 'longest').map((r) => r.traceID)).toEqual(['c', 'a', 'b']);
    expect(sortSummaries(rows, 'spans').map((r) => r.traceID)).toEqual(['b', 'a', 'c']);
    expect(sortSummaries(rows, 'errors').map((r) => r.traceID)).toEqual(['b', 'c', 'a']);
  });
});

describe('attribute keys for group-by', () => {
  test('span attributes of the service, most common first, OTLP-derived fields left out', () => {
    const traces = [0, 1, 2, 3].map((i) => buildTrace(otlpToJaeger(pipelineTrace(i, 1_000_000 + i * 1_000_000, { failure: i === 3 ? 'db' : 'none' }).data)[0]));
    const keys = attributeKeys(spansOf(traces, 'storage-service'));
    expect(keys[0]).toBe('symbol');
    expect(keys).toContain('db.system');
    expect(keys.some((k) => k.startsWith('otel.') || k === 'error' || k === 'span.kind')).toBe(false);
    expect(spansOf(traces, 'storage-service', 'db_write')).toHaveLength(4);
  });
});

describe('the form as TraceQL', () => {
  test('service, operation, tags and durations become one spanset', () => {
    expect(traceqlFromSearch({ service: 'storage-service', operation: 'db_write', tags: { error: 'true', 'db.system': 'postgresql', 'http.response.status_code': '500' }, minDuration: '1ms' })).toBe(
      '{ resource.service.name = "storage-service" && name = "db_write" && status = error && .db.system = "postgresql" && .http.response.status_code = 500 && duration >= 1ms }',
    );
    expect(traceqlFromSearch({})).toBe('{ }');
    expect(traceqlFromSearch({ service: 'say "hi"\\' })).toBe('{ resource.service.name = "say \\"hi\\"\\\\" }');
  });
});
