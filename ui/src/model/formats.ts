// Trace files in and out: Jaeger query JSON and OTLP JSON (TracesData, as `/api/v3`
// answers and OTLP/HTTP takes). The mapping is the one the server documents in
// docs/API.md — span kind, status, scope and trace state become `span.kind`,
// `otel.status_code`, `error`, `otel.status_description`, `otel.scope.*`, `w3c.tracestate`
// tags; events become logs with an `event` field; links become FOLLOWS_FROM references —
// so a trace opened from either format looks the same as one fetched from Spindle.

import type { JaegerSpan, JaegerTrace, Log, Process, Reference, Tag } from './trace';

/* OTLP JSON shapes (only the fields Spindle maps). */
export interface OtlpAnyValue {
  stringValue?: string;
  boolValue?: boolean;
  intValue?: string | number;
  doubleValue?: number;
  bytesValue?: string;
  arrayValue?: { values?: OtlpAnyValue[] };
  kvlistValue?: { values?: OtlpKeyValue[] };
}
export interface OtlpKeyValue {
  key: string;
  value?: OtlpAnyValue;
}
export interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  traceState?: string;
  name: string;
  kind?: number;
  startTimeUnixNano: string | number;
  endTimeUnixNano: string | number;
  attributes?: OtlpKeyValue[];
  events?: { timeUnixNano: string | number; name: string; attributes?: OtlpKeyValue[] }[];
  links?: { traceId: string; spanId: string; attributes?: OtlpKeyValue[] }[];
  status?: { code?: number; message?: string };
  flags?: number;
}
export interface OtlpTracesData {
  resourceSpans: {
    resource?: { attributes?: OtlpKeyValue[] };
    scopeSpans?: { scope?: { name?: string; version?: string }; spans?: OtlpSpan[] }[];
  }[];
}

const KINDS = ['', 'internal', 'server', 'client', 'producer', 'consumer'];
const STATUS = ['', 'OK', 'ERROR'];
/** Tags that stand for OTLP fields rather than attributes; not copied back as attributes. */
const DERIVED_TAGS = new Set([
  'span.kind',
  'otel.status_code',
  'otel.status_description',
  'error',
  'otel.scope.name',
  'otel.scope.version',
  'w3c.tracestate',
]);

export class TraceFileError extends Error {}

/* ---------- ids and times ---------- */

function normaliseId(id: string, bytes: number): string {
  if (/^[0-9a-fA-F]+$/.test(id) && id.length <= bytes * 2) return id.toLowerCase().padStart(bytes * 2, '0');
  // OTLP JSON from some exporters carries base64 ids (the protobuf JSON default).
  try {
    const bin = atob(id);
    let hex = '';
    for (let i = 0; i < bin.length; i++) hex += bin.charCodeAt(i).toString(16).padStart(2, '0');
    if (hex.length === bytes * 2) return hex;
  } catch {
    /* fall through */
  }
  throw new TraceFileError(`invalid id ${JSON.stringify(id)}: expected ${bytes * 2} hex digits`);
}

/** Jaeger prints a trace id with a zero high half as 16 digits. */
function jaegerTraceId(hex32: string): string {
  return hex32.startsWith('0000000000000000') ? hex32.slice(16) : hex32;
}

function nanosToMicros(ns: string | number): bigint {
  return BigInt(typeof ns === 'number' ? Math.round(ns) : ns) / 1000n;
}

/* ---------- values ---------- */

function anyValueToJson(v: OtlpAnyValue | undefined): unknown {
  if (!v) return null;
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.boolValue !== undefined) return v.boolValue;
  if (v.intValue !== undefined) return Number(v.intValue);
  if (v.doubleValue !== undefined) return v.doubleValue;
  if (v.bytesValue !== undefined) return v.bytesValue;
  if (v.arrayValue) return (v.arrayValue.values ?? []).map(anyValueToJson);
  if (v.kvlistValue) return Object.fromEntries((v.kvlistValue.values ?? []).map((kv) => [kv.key, anyValueToJson(kv.value)]));
  return null;
}

function attrToTag(kv: OtlpKeyValue): Tag {
  const v = kv.value ?? {};
  if (v.boolValue !== undefined) return { key: kv.key, type: 'bool', value: v.boolValue };
  if (v.intValue !== undefined) {
    const n = Number(v.intValue);
    // Beyond 2^53 a JSON number loses digits: Jaeger keeps such values as decimal text.
    const value = Number.isSafeInteger(n) ? n : String(v.intValue);
    return { key: kv.key, type: 'int64', value };
  }
  if (v.doubleValue !== undefined) return { key: kv.key, type: 'float64', value: v.doubleValue };
  if (v.bytesValue !== undefined) return { key: kv.key, type: 'binary', value: v.bytesValue };
  if (v.arrayValue || v.kvlistValue) return { key: kv.key, type: 'string', value: JSON.stringify(anyValueToJson(v)) };
  return { key: kv.key, type: 'string', value: v.stringValue ?? '' };
}

function tagToAttr(t: Tag): OtlpKeyValue {
  switch (t.type) {
    case 'bool':
      return { key: t.key, value: { boolValue: t.value === true || t.value === 'true' } };
    case 'int64':
      return { key: t.key, value: { intValue: String(t.value) } };
    case 'float64':
      return { key: t.key, value: { doubleValue: Number(t.value) } };
    case 'binary':
      return { key: t.key, value: { bytesValue: String(t.value) } };
    default:
      return { key: t.key, value: { stringValue: String(t.value) } };
  }
}

const str = (key: string, value: string): Tag => ({ key, type: 'string', value });

/* ---------- OTLP -> Jaeger ---------- */

/** Converts OTLP JSON into one Jaeger trace per trace id, in order of appearance. */
export function otlpToJaeger(data: OtlpTracesData): JaegerTrace[] {
  if (!data || !Array.isArray(data.resourceSpans)) throw new TraceFileError('OTLP JSON needs a "resourceSpans" array');
  const traces = new Map<string, JaegerTrace>();
  // Process ids per trace, by resource: computed once per resource, not once per span.
  const pids = new Map<string, Map<number, string>>();
  data.resourceSpans.forEach((rs, resourceIndex) => {
    const attrs = rs.resource?.attributes ?? [];
    const service = attrs.find((a) => a.key === 'service.name')?.value?.stringValue ?? 'unknown_service';
    const process: Process = { serviceName: service, tags: attrs.filter((a) => a.key !== 'service.name').map(attrToTag) };
    const processKey = JSON.stringify(process);
    for (const ss of rs.scopeSpans ?? []) {
      for (const s of ss.spans ?? []) {
        const traceHex = normaliseId(s.traceId, 16);
        const traceID = jaegerTraceId(traceHex);
        let trace = traces.get(traceID);
        if (!trace) {
          trace = { traceID, spans: [], processes: {}, warnings: null };
          traces.set(traceID, trace);
          pids.set(traceID, new Map());
        }
        const byResource = pids.get(traceID)!;
        let pid = byResource.get(resourceIndex);
        if (!pid) {
          // Equal resources (e.g. one service split over several batches) share a process,
          // numbered like Jaeger's p1, p2.
          const t = trace;
          pid = Object.keys(t.processes).find((k) => JSON.stringify(t.processes[k]) === processKey) ?? `p${Object.keys(t.processes).length + 1}`;
          t.processes[pid] = process;
          byResource.set(resourceIndex, pid);
        }
        trace.spans.push(otlpSpanToJaeger(s, traceID, pid, ss.scope));
      }
    }
  });
  return [...traces.values()];
}

function otlpSpanToJaeger(s: OtlpSpan, traceID: string, processID: string, scope?: { name?: string; version?: string }): JaegerSpan {
  const start = nanosToMicros(s.startTimeUnixNano);
  const end = nanosToMicros(s.endTimeUnixNano);
  const references: Reference[] = [];
  if (s.parentSpanId) references.push({ refType: 'CHILD_OF', traceID, spanID: normaliseId(s.parentSpanId, 8) });
  for (const l of s.links ?? []) {
    references.push({ refType: 'FOLLOWS_FROM', traceID: jaegerTraceId(normaliseId(l.traceId, 16)), spanID: normaliseId(l.spanId, 8) });
  }
  const tags = (s.attributes ?? []).map(attrToTag);
  if (scope?.name) tags.push(str('otel.scope.name', scope.name));
  if (scope?.version) tags.push(str('otel.scope.version', scope.version));
  if (s.kind && KINDS[s.kind]) tags.push(str('span.kind', KINDS[s.kind]));
  const code = s.status?.code ?? 0;
  if (STATUS[code]) tags.push(str('otel.status_code', STATUS[code]));
  if (code === 2) tags.push({ key: 'error', type: 'bool', value: true });
  if (s.status?.message) tags.push(str('otel.status_description', s.status.message));
  if (s.traceState) tags.push(str('w3c.tracestate', s.traceState));
  const logs: Log[] = (s.events ?? []).map((e) => ({
    timestamp: Number(nanosToMicros(e.timeUnixNano)),
    fields: [str('event', e.name), ...(e.attributes ?? []).map(attrToTag)],
  }));
  return {
    traceID,
    spanID: normaliseId(s.spanId, 8),
    flags: s.flags ?? 1,
    operationName: s.name,
    references,
    startTime: Number(start),
    duration: Number(end > start ? end - start : 0n),
    tags,
    logs,
    processID,
    warnings: null,
  };
}

/* ---------- Jaeger -> OTLP ---------- */

export function jaegerToOtlp(trace: JaegerTrace): OtlpTracesData {
  const traceId = trace.traceID.padStart(32, '0');
  const byProcess = new Map<string, Map<string, OtlpSpan[]>>();
  for (const s of trace.spans) {
    const scopeName = String(s.tags.find((t) => t.key === 'otel.scope.name')?.value ?? '');
    const scopeVersion = String(s.tags.find((t) => t.key === 'otel.scope.version')?.value ?? '');
    const scopes = byProcess.get(s.processID) ?? new Map<string, OtlpSpan[]>();
    byProcess.set(s.processID, scopes);
    const scopeKey = JSON.stringify([scopeName, scopeVersion]);
    const list = scopes.get(scopeKey) ?? [];
    scopes.set(scopeKey, list);
    list.push(jaegerSpanToOtlp(s, traceId));
  }
  return {
    resourceSpans: [...byProcess].map(([pid, scopes]) => {
      const p = trace.processes[pid] ?? { serviceName: 'unknown_service', tags: [] };
      return {
        resource: { attributes: [{ key: 'service.name', value: { stringValue: p.serviceName } }, ...p.tags.map(tagToAttr)] },
        scopeSpans: [...scopes].map(([scopeKey, spans]) => {
          const [name, version] = JSON.parse(scopeKey) as [string, string];
          const scope: { name?: string; version?: string } = {};
          if (name) scope.name = name;
          if (version) scope.version = version;
          return { scope, spans };
        }),
      };
    }),
  };
}

function jaegerSpanToOtlp(s: JaegerSpan, traceId: string): OtlpSpan {
  const tag = (key: string) => s.tags.find((t) => t.key === key)?.value;
  const parent = s.references.find((r) => r.refType === 'CHILD_OF');
  const out: OtlpSpan = {
    traceId,
    spanId: s.spanID,
    name: s.operationName,
    startTimeUnixNano: `${s.startTime}000`,
    endTimeUnixNano: `${s.startTime + s.duration}000`,
  };
  if (parent) out.parentSpanId = parent.spanID;
  const state = tag('w3c.tracestate');
  if (state) out.traceState = String(state);
  const kind = KINDS.indexOf(String(tag('span.kind') ?? ''));
  if (kind > 0) out.kind = kind;
  if (s.flags !== undefined && s.flags !== 1) out.flags = s.flags;
  const attributes = s.tags.filter((t) => !DERIVED_TAGS.has(t.key)).map(tagToAttr);
  if (attributes.length) out.attributes = attributes;
  if (s.logs.length) {
    out.events = s.logs.map((l) => {
      const e: NonNullable<OtlpSpan['events']>[number] = {
        timeUnixNano: `${l.timestamp}000`,
        name: String(l.fields.find((f) => f.key === 'event')?.value ?? ''),
      };
      const attrs = l.fields.filter((f) => f.key !== 'event').map(tagToAttr);
      if (attrs.length) e.attributes = attrs;
      return e;
    });
  }
  const links = s.references.filter((r) => r.refType === 'FOLLOWS_FROM');
  if (links.length) out.links = links.map((r) => ({ traceId: r.traceID.padStart(32, '0'), spanId: r.spanID }));
  const statusCode = tag('otel.status_code');
  const isError = statusCode === 'ERROR' || tag('error') === true || tag('error') === 'true';
  const code = isError ? 2 : statusCode === 'OK' ? 1 : 0;
  const message = tag('otel.status_description');
  if (code || message) {
    out.status = {};
    if (code) out.status.code = code;
    if (message) out.status.message = String(message);
  }
  return out;
}

/* ---------- files ---------- */

function isJaegerTrace(v: unknown): v is JaegerTrace {
  return !!v && typeof v === 'object' && Array.isArray((v as JaegerTrace).spans) && typeof (v as JaegerTrace).traceID === 'string';
}

/**
 * Reads a trace file in any shape users have: Jaeger's `{"data": [...]}` envelope, a bare
 * Jaeger trace or array of them, OTLP `TracesData`, or v3's `{"result": TracesData}`.
 */
export function parseTraceFile(text: string): JaegerTrace[] {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new TraceFileError(`not JSON: ${(e as Error).message}`);
  }
  const obj = json as Record<string, unknown>;
  let traces: JaegerTrace[];
  if (Array.isArray(json) && json.every(isJaegerTrace)) traces = json;
  else if (isJaegerTrace(json)) traces = [json];
  else if (obj && Array.isArray(obj.data) && obj.data.every(isJaegerTrace)) traces = obj.data;
  else if (obj && Array.isArray(obj.resourceSpans)) traces = otlpToJaeger(obj as unknown as OtlpTracesData);
  else if (obj && obj.result && Array.isArray((obj.result as OtlpTracesData).resourceSpans)) traces = otlpToJaeger(obj.result as OtlpTracesData);
  else throw new TraceFileError('expected Jaeger JSON ({"data": [trace]}) or OTLP JSON ({"resourceSpans": [...]})');
  if (!traces.length || traces.every((t) => !t.spans.length)) throw new TraceFileError('the file holds no spans');
  return traces;
}
