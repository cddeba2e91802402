// Compact trace builders for unit tests: spans as [id, parent, service, op, start, dur].

import type { JaegerTrace, Tag } from '../../src/model/trace';

export type SpanSpec = [id: string, parent: string | null, service: string, op: string, start: number, duration: number, tags?: Tag[]];

export function jaeger(specs: SpanSpec[], traceID = 'abc'): JaegerTrace {
  const services = [...new Set(specs.map((s) => s[2]))];
  return {
    traceID,
    processes: Object.fromEntries(services.map((s, i) => [`p${i + 1}`, { serviceName: s, tags: [] }])),
    spans: specs.map(([id, parent, service, op, start, duration, tags]) => ({
      traceID,
      spanID: id,
      operationName: op,
      references: parent ? [{ refType: 'CHILD_OF', traceID, spanID: parent }] : [],
      startTime: start,
      duration,
      tags: tags ?? [],
      logs: [],
      processID: `p${services.indexOf(service) + 1}`,
    })),
  };
}

export const errorTag: Tag = { key: 'error', type: 'bool', value: true };
