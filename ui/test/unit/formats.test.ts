import { describe, expect, test } from 'vitest';
import { TraceFileError, jaegerToOtlp, otlpToJaeger, parseTraceFile } from '../../src/model/formats';
import { pipelineTrace } from '../e2e/fixtures';

const seed = pipelineTrace(5, 1_700_000_000_000_000, { failure: 'db', retries: 2 });

describe('OTLP JSON <-> Jaeger JSON', () => {
  test('maps kind, status, scope, events and parents as the server does', () => {
    const [t] = otlpToJaeger(seed.data);
    expect(t.traceID).toBe(seed.traceId);
    expect(t.spans).toHaveLength(seed.spanCount);
    const db = t.spans.find((s) => s.operationName === 'db_write')!;
    const tags = Object.fromEntries(db.tags.map((x) => [x.key, x.value]));
    expect(tags).toMatchObject({ 'span.kind': 'client', 'otel.status_code': 'ERROR', error: true, 'db.system': 'postgresql', 'server.port': 5432, 'otel.scope.name': 'spindle-sdk' });
    expect(db.logs[0].fields[0]).toEqual({ key: 'event', type: 'string', value: 'exception' });
    expect(db.references[0].refType).toBe('CHILD_OF');
    expect(t.processes[db.processID].serviceName).toBe('storage-service');
    expect(t.processes[db.processID].tags.map((x) => x.key)).toContain('host.name');
  });

  test('OTLP -> Jaeger -> OTLP -> Jaeger is stable', () => {
    const [once] = otlpToJaeger(seed.data);
    const [twice] = otlpToJaeger(jaegerToOtlp(once));
    expect(twice).toEqual(once);
  });

  test('times keep microsecond precision beyond 2^53 nanoseconds', () => {
    const [t] = otlpToJaeger({
      resourceSpans: [{ scopeSpans: [{ spans: [{ traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331', name: 'x', startTimeUnixNano: '1700000000123456789', endTimeUnixNano: '1700000000123459789' }] }] }],
    });
    expect(t.spans[0].startTime).toBe(1700000000123456);
    expect(t.spans[0].duration).toBe(3);
    expect(jaegerToOtlp(t).resourceSpans[0].scopeSpans![0].spans![0].startTimeUnixNano).toBe('1700000000123456000');
  });

  test('base64 ids (protobuf JSON default) are read as hex; a zero high half gives a 16-digit id', () => {
    const [t] = otlpToJaeger({
      resourceSpans: [{ scopeSpans: [{ spans: [{ traceId: 'AAAAAAAAAAAAAAAAAAAAAQ==', spanId: 'AAAAAAAAAAI=', name: 'x', startTimeUnixNano: 1000, endTimeUnixNano: 2000 }] }] }],
    });
    expect(t.traceID).toBe('0000000000000001');
    expect(t.spans[0].spanID).toBe('0000000000000002');
  });
});

describe('parseTraceFile', () => {
  const jaegerTrace = otlpToJaeger(seed.data)[0];
  test.each([
    ['Jaeger envelope', { data: [jaegerTrace] }],
    ['bare Jaeger trace', jaegerTrace],
    ['array of traces', [jaegerTrace]],
    ['OTLP TracesData', seed.data],
    ['v3 result', { result: seed.data }],
  ])('reads a %s', (_, body) => {
    expect(parseTraceFile(JSON.stringify(body))[0].traceID).toBe(seed.traceId);
  });
  test('explains what it expected', () => {
    expect(() => parseTraceFile('{"foo": 1}')).toThrow(TraceFileError);
    expect(() => parseTraceFile('not json')).toThrow(/not JSON/);
    expect(() => parseTraceFile('{"data": []}')).toThrow(/no spans/);
  });
});
