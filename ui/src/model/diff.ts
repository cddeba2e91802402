// Comparing two traces: the structure (which call paths exist in each, and how often)
// and the latency of each operation. Jaeger UI compares structure only (jaeger-ui #296);
// the latency deltas are what tell a user why B is slower than A.

import { opKey, selfTime } from './stats';
import type { Span, Trace } from './trace';

export type DiffStatus = 'same' | 'added' | 'removed' | 'changed';

/** A call path of trace A and/or B, and how many spans each has at it. */
export interface PathRow {
  /** The call path: service/operation of every ancestor and of the node. */
  path: string;
  service: string;
  operation: string;
  depth: number;
  countA: number;
  countB: number;
  status: DiffStatus;
}

/** Only in B, only in A, in both a different number of times, or the same. */
export function diffStatus(countA: number, countB: number): DiffStatus {
  return countA === 0 ? 'added' : countB === 0 ? 'removed' : countA !== countB ? 'changed' : 'same';
}

export interface DiffNode extends PathRow {
  /** Summed durations (µs) of the spans at this path. */
  durationA: number;
  durationB: number;
  /** A span of trace A (else B) at this path, to link to. */
  exampleA?: Span;
  exampleB?: Span;
}

const SEP = '\u0001';

interface PathAgg {
  service: string;
  operation: string;
  depth: number;
  count: number;
  duration: number;
  example: Span;
  parentPath: string;
}

function pathsOf(trace: Trace): Map<string, PathAgg> {
  const pathOf = new Map<Span, string>();
  const out = new Map<string, PathAgg>();
  for (const s of trace.spans) {
    const parentPath = s.parent ? pathOf.get(s.parent) ?? '' : '';
    const path = parentPath + SEP + opKey(s.service, s.operationName);
    pathOf.set(s, path);
    const agg = out.get(path);
    if (agg) {
      agg.count++;
      agg.duration += s.duration;
    } else out.set(path, { service: s.service, operation: s.operationName, depth: s.depth, count: 1, duration: s.duration, example: s, parentPath });
  }
  return out;
}

/**
 * Merges the call trees of A and B by path, in tree order: children follow their parent,
 * paths present in A first (in A's order), then those only in B.
 */
export function structureDiff(a: Trace, b: Trace): DiffNode[] {
  const pa = pathsOf(a);
  const pb = pathsOf(b);
  const children = new Map<string, string[]>();
  const addChild = (path: string, parent: string) => {
    const list = children.get(parent) ?? [];
    if (!list.includes(path)) list.push(path);
    children.set(parent, list);
  };
  for (const [path, agg] of pa) addChild(path, agg.parentPath);
  for (const [path, agg] of pb) addChild(path, agg.parentPath);

  const out: DiffNode[] = [];
  const stack = [...(children.get('') ?? [])].reverse();
  while (stack.length) {
    const path = stack.pop()!;
    const x = pa.get(path);
    const y = pb.get(path);
    const any = (x ?? y)!;
    const countA = x?.count ?? 0;
    const countB = y?.count ?? 0;
    out.push({
      path,
      service: any.service,
      operation: any.operation,
      depth: any.depth,
      countA,
      countB,
      durationA: x?.duration ?? 0,
      durationB: y?.duration ?? 0,
      status: diffStatus(countA, countB),
      exampleA: x?.example,
      exampleB: y?.example,
    });
    const kids = children.get(path) ?? [];
    for (let i = kids.length - 1; i >= 0; i--) stack.push(kids[i]);
  }
  return out;
}

export interface LatencyDelta {
  service: string;
  operation: string;
  countA: number;
  countB: number;
  totalA: number;
  totalB: number;
  avgA: number;
  avgB: number;
  selfA: number;
  selfB: number;
  /** totalB − totalA, µs: how much more time B spent in this operation. */
  delta: number;
  /** selfB − selfA, µs: the change in the operation's own work, children excluded. */
  selfDelta: number;
  /** avgB / avgA − 1; NaN when the operation is missing on one side. */
  ratio: number;
}

/**
 * Per-operation latency of A and B, largest change of self time first: a slow leaf also
 * makes every ancestor's total slower, but only the leaf's own work changed.
 */
export function latencyDeltas(a: Trace, b: Trace): LatencyDelta[] {
  const rows = new Map<string, LatencyDelta>();
  const add = (t: Trace, side: 'A' | 'B') => {
    for (const s of t.spans) {
      const key = opKey(s.service, s.operationName);
      let r = rows.get(key);
      if (!r) {
        r = { service: s.service, operation: s.operationName, countA: 0, countB: 0, totalA: 0, totalB: 0, avgA: NaN, avgB: NaN, selfA: 0, selfB: 0, delta: 0, selfDelta: 0, ratio: NaN };
        rows.set(key, r);
      }
      r[`count${side}`]++;
      r[`total${side}`] += s.duration;
      r[`self${side}`] += selfTime(s);
    }
  };
  add(a, 'A');
  add(b, 'B');
  const out = [...rows.values()];
  for (const r of out) {
    r.avgA = r.countA ? r.totalA / r.countA : NaN;
    r.avgB = r.countB ? r.totalB / r.countB : NaN;
    r.delta = r.totalB - r.totalA;
    r.selfDelta = r.selfB - r.selfA;
    r.ratio = r.countA && r.countB && r.avgA > 0 ? r.avgB / r.avgA - 1 : NaN;
  }
  return out.sort((x, y) => Math.abs(y.selfDelta) - Math.abs(x.selfDelta) || Math.abs(y.delta) - Math.abs(x.delta));
}
