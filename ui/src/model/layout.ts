// Timeline geometry: which rows are visible given the collapsed spans, where a span's bar
// sits, and the time axis ticks. Pure so it is unit-tested and cheap enough to rerun on
// every collapse of a 100k-span trace.

import type { Span, Trace } from './trace';

/** Rows in tree order, skipping the descendants of collapsed spans. O(visible + collapsed). */
export function visibleRows(trace: Trace, collapsed: ReadonlySet<string>): Span[] {
  if (collapsed.size === 0) return trace.spans;
  const rows: Span[] = [];
  const spans = trace.spans;
  let i = 0;
  while (i < spans.length) {
    const s = spans[i];
    rows.push(s);
    i++;
    if (collapsed.has(s.spanID) && s.children.length) {
      // Preorder puts a subtree right after its root: skip past it.
      while (i < spans.length && isDescendant(spans[i], s)) i++;
    }
  }
  return rows;
}

function isDescendant(span: Span, ancestor: Span): boolean {
  if (span.depth <= ancestor.depth) return false;
  let p = span.parent;
  while (p && p.depth > ancestor.depth) p = p.parent;
  return p === ancestor;
}

/** Span ids of every span with children, deeper than `depth`: for "collapse to depth". */
export function collapseBelow(trace: Trace, depth: number): Set<string> {
  const out = new Set<string>();
  for (const s of trace.spans) if (s.depth >= depth && s.children.length) out.add(s.spanID);
  return out;
}

/** Removes the ancestors of `span` from `collapsed` so the span becomes visible. */
export function revealSpan(collapsed: ReadonlySet<string>, span: Span): Set<string> {
  const out = new Set(collapsed);
  for (let p = span.parent; p; p = p.parent) out.delete(p.spanID);
  return out;
}

export interface Bar {
  /** Fraction of the view width, 0..1, may fall outside when zoomed. */
  left: number;
  width: number;
}

/** Where a time interval (µs epoch) sits within the view [viewStart, viewEnd]. */
export function barGeometry(start: number, duration: number, viewStart: number, viewEnd: number): Bar {
  const span = Math.max(viewEnd - viewStart, 1);
  return { left: (start - viewStart) / span, width: duration / span };
}

/** Nice tick offsets (µs from the view start) on a 1-2-5 ladder, about `target` of them. */
export function timeTicks(duration: number, target = 6): number[] {
  if (!(duration > 0)) return [0];
  const raw = duration / target;
  const pow = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * pow).find((s) => s >= raw) ?? 10 * pow;
  const ticks: number[] = [];
  for (let t = 0; t <= duration + step * 1e-9; t += step) ticks.push(t);
  return ticks;
}

/**
 * Spans matching a find-in-trace query, in tree order. Every whitespace-separated term
 * must occur (case-insensitively) in the service, operation, span id, or a tag/resource
 * `key=value`; so `db_write postgresql` finds the database writes.
 */
export function findSpans(trace: Trace, text: string): Span[] {
  const terms = text.toLowerCase().split(/\s+/).filter(Boolean);
  if (!terms.length) return [];
  return trace.spans.filter((s) => {
    const hay = [s.service, s.operationName, s.spanID, ...s.tags.map((t) => `${t.key}=${t.value}`), ...s.process.tags.map((t) => `${t.key}=${t.value}`)]
      .join('\n')
      .toLowerCase();
    return terms.every((t) => hay.includes(t));
  });
}

/** Span ids compared as Tempo and Jaeger may write them: lower case, leading zeros optional. */
function normalSpanId(id: string): string {
  return id.trim().toLowerCase().replace(/^0+(?=.)/, '');
}

/**
 * The spans a `highlight=<id>,<id>` parameter names (the spans a TraceQL query matched),
 * in timeline order.
 */
export function highlightedSpans(trace: Trace, ids: string | null): Span[] {
  if (!ids) return [];
  const want = new Set(ids.split(',').filter((x) => x.trim()).map(normalSpanId));
  if (!want.size) return [];
  return trace.spans.filter((s) => want.has(normalSpanId(s.spanID)));
}
