// The critical path: the chain of work that decided when the trace ended. Walking back
// from the end, at each span the child that finished last is what was being waited for;
// before that child started, the span's own work (or the next earlier child) was.
//
// Unlike Jaeger UI, children are not clipped to the parent's end: with Kafka the consumer
// span runs after the producer span finished, and it is exactly that work users need to
// see on the path. A subtree therefore reaches to its latest descendant's end.

import type { Span, Trace } from './trace';

export interface PathSegment {
  span: Span;
  /** µs epoch; may extend past the span's own end when it waits on async children. */
  start: number;
  end: number;
}

export interface CriticalPath {
  segments: PathSegment[];
  spanIds: Set<string>;
}

/** End of each span's subtree, by span index. */
function subtreeEnds(trace: Trace): Float64Array {
  const ends = new Float64Array(trace.spans.length);
  // Reverse preorder visits children before parents.
  for (let i = trace.spans.length - 1; i >= 0; i--) {
    const s = trace.spans[i];
    let e = s.startTime + s.duration;
    for (const c of s.children) e = Math.max(e, ends[c.index]);
    ends[i] = e;
  }
  return ends;
}

export function criticalPath(trace: Trace): CriticalPath {
  const segments: PathSegment[] = [];
  if (!trace.spans.length) return { segments, spanIds: new Set() };
  const ends = subtreeEnds(trace);
  // The path starts at the root whose subtree ends last.
  let root = trace.roots[0];
  for (const r of trace.roots) if (ends[r.index] > ends[root.index]) root = r;

  // Explicit stack: a chain 100k spans deep must not overflow the JS call stack.
  const stack: [Span, number][] = [[root, ends[root.index]]];
  while (stack.length) {
    const [span, bound] = stack.pop()!;
    let cursor = bound;
    const children = span.children.slice().sort((a, b) => ends[b.index] - ends[a.index]);
    for (const c of children) {
      if (cursor <= span.startTime) break;
      // A child that started after the cursor ran while a later sibling was the bottleneck.
      if (c.startTime >= cursor) continue;
      const childEnd = Math.min(ends[c.index], cursor);
      if (childEnd < cursor) segments.push({ span, start: childEnd, end: cursor });
      stack.push([c, childEnd]);
      cursor = Math.max(c.startTime, span.startTime);
    }
    if (cursor > span.startTime) segments.push({ span, start: span.startTime, end: cursor });
  }
  segments.sort((a, b) => a.start - b.start || a.span.depth - b.span.depth);
  return { segments, spanIds: new Set(segments.map((s) => s.span.spanID)) };
}

/** Segments per span id, for drawing the highlighted part of each bar. */
export function segmentsBySpan(path: CriticalPath): Map<string, PathSegment[]> {
  const out = new Map<string, PathSegment[]>();
  for (const seg of path.segments) {
    const list = out.get(seg.span.spanID) ?? [];
    list.push(seg);
    out.set(seg.span.spanID, list);
  }
  return out;
}
