// What the UI still derives from traces themselves rather than from the analytics API:
// the attribute keys a service's spans carry, offered as "group by" choices (the API
// groups by any key but does not list them).

import { type Span, type Trace } from './trace';

export function spansOf(traces: readonly Trace[], service: string, operation?: string): Span[] {
  const out: Span[] = [];
  for (const t of traces) for (const s of t.spans) if (s.service === service && (!operation || s.operationName === operation)) out.push(s);
  return out;
}

/** Attribute keys present on the spans, most common first; OTLP-derived fields left out. */
export function attributeKeys(spans: readonly Span[]): string[] {
  const counts = new Map<string, number>();
  for (const s of spans) for (const t of s.tags) if (!t.key.startsWith('otel.') && t.key !== 'span.kind' && t.key !== 'error') counts.set(t.key, (counts.get(t.key) ?? 0) + 1);
  return [...counts].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).map(([k]) => k);
}
