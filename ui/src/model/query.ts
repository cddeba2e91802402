// The search form's text fields, parsed the way users type them.

export class QueryError extends Error {}

/**
 * Parses `key=value` pairs separated by spaces (logfmt, as Jaeger UI takes them); values
 * with spaces go in double quotes: `http.route="/api/v1 x" error=true`.
 */
export function parseTags(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  const re = /\s*([^\s=]+)=(?:"((?:[^"\\]|\\.)*)"|(\S*))/y;
  let pos = 0;
  const t = text.trim();
  while (pos < t.length) {
    re.lastIndex = pos;
    const m = re.exec(t);
    if (!m) throw new QueryError(`cannot read tags at "${t.slice(pos).trim()}": write key=value, quote values with spaces`);
    out[m[1]] = m[2] !== undefined ? m[2].replace(/\\(.)/g, '$1') : m[3];
    pos = re.lastIndex;
    while (pos < t.length && /\s/.test(t[pos])) pos++;
  }
  return out;
}

export const LOOKBACKS: Record<string, number> = {
  '5m': 5 * 60e6,
  '15m': 15 * 60e6,
  '1h': 3600e6,
  '6h': 6 * 3600e6,
  '12h': 12 * 3600e6,
  '24h': 24 * 3600e6,
  '2d': 48 * 3600e6,
  '7d': 7 * 24 * 3600e6,
};

/** The time range [start, end] in µs epoch of a preset or a custom range. */
export function timeRange(lookback: string, customStart: string | null, customEnd: string | null, nowMs = Date.now()): [number, number] {
  if (lookback === 'custom') {
    const start = Number(customStart);
    const end = Number(customEnd);
    if (!(start > 0) || !(end > start)) throw new QueryError('custom range: pick a start before the end');
    return [start, end];
  }
  const span = LOOKBACKS[lookback] ?? LOOKBACKS['1h'];
  return [nowMs * 1000 - span, nowMs * 1000];
}

export type SortKey = 'recent' | 'longest' | 'spans' | 'errors';

export interface TraceSummary {
  traceID: string;
  start: number;
  duration: number;
  spans: number;
  errors: number;
}

export function sortSummaries<T extends TraceSummary>(list: T[], key: SortKey): T[] {
  const by: Record<SortKey, (a: T, b: T) => number> = {
    recent: (a, b) => b.start - a.start,
    longest: (a, b) => b.duration - a.duration,
    spans: (a, b) => b.spans - a.spans,
    errors: (a, b) => b.errors - a.errors || b.start - a.start,
  };
  return list.slice().sort((a, b) => by[key](a, b) || a.traceID.localeCompare(b.traceID));
}

/** The TraceQL equivalent of a Jaeger-style search (service, operation, tags, durations). */
export function traceqlFromSearch(p: { service?: string | null; operation?: string | null; tags?: Record<string, string>; minDuration?: string | null; maxDuration?: string | null }): string {
  const conds: string[] = [];
  if (p.service) conds.push(`resource.service.name = ${traceqlString(p.service)}`);
  if (p.operation) conds.push(`name = ${traceqlString(p.operation)}`);
  for (const [k, v] of Object.entries(p.tags ?? {})) {
    if (k === 'error' && v === 'true') conds.push('status = error');
    else conds.push(`.${k} = ${/^-?\d+(\.\d+)?$/.test(v) || v === 'true' || v === 'false' ? v : traceqlString(v)}`);
  }
  if (p.minDuration) conds.push(`duration >= ${p.minDuration}`);
  if (p.maxDuration) conds.push(`duration <= ${p.maxDuration}`);
  return conds.length ? `{ ${conds.join(' && ')} }` : '{ }';
}

function traceqlString(s: string): string {
  return `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}
