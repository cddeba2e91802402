// The UI's trace model: Jaeger's query JSON (what `/api/traces` answers) plus the links
// the views need — parent, children, depth, service, kind, error — built once per trace.
// Everything here is pure and O(spans) so a 100k-span trace stays fast.

export type TagType = 'string' | 'bool' | 'int64' | 'float64' | 'binary';

export interface Tag {
  key: string;
  type: TagType;
  value: string | number | boolean;
}

export interface Log {
  timestamp: number; // µs epoch
  fields: Tag[];
}

export interface Reference {
  refType: 'CHILD_OF' | 'FOLLOWS_FROM';
  traceID: string;
  spanID: string;
}

export interface Process {
  serviceName: string;
  tags: Tag[];
}

/** A span exactly as Jaeger's query API serialises it. */
export interface JaegerSpan {
  traceID: string;
  spanID: string;
  flags?: number;
  operationName: string;
  references: Reference[];
  startTime: number; // µs epoch
  duration: number; // µs
  tags: Tag[];
  logs: Log[];
  processID: string;
  warnings?: string[] | null;
}

export interface JaegerTrace {
  traceID: string;
  spans: JaegerSpan[];
  processes: Record<string, Process>;
  warnings?: string[] | null;
}

export interface Span extends JaegerSpan {
  process: Process;
  service: string;
  /** `server`, `client`, `producer`, `consumer`, `internal` or '' when unset. */
  kind: string;
  error: boolean;
  parent: Span | null;
  children: Span[];
  depth: number;
  /** Position in the trace's preorder (tree order), used as a stable row key. */
  index: number;
  /** True when the span names a parent that is not in the trace. */
  orphan: boolean;
}

export interface Trace {
  traceID: string;
  /** Every span in tree preorder: roots by start time, children by start time. */
  spans: Span[];
  roots: Span[];
  byId: Map<string, Span>;
  processes: Record<string, Process>;
  startTime: number;
  endTime: number;
  duration: number;
  services: string[];
  depth: number;
  errorCount: number;
  warnings: string[];
}

export function tagValue(tags: Tag[], key: string): Tag['value'] | undefined {
  for (const t of tags) if (t.key === key) return t.value;
  return undefined;
}

function isErrorSpan(tags: Tag[]): boolean {
  for (const t of tags) {
    if (t.key === 'error' && (t.value === true || t.value === 'true')) return true;
    if (t.key === 'otel.status_code' && t.value === 'ERROR') return true;
  }
  return false;
}

/** The parent a span names: the first CHILD_OF reference, else the first reference. */
function parentRef(span: JaegerSpan): string | null {
  const refs = span.references ?? [];
  const child = refs.find((r) => r.refType === 'CHILD_OF') ?? refs.find((r) => r.traceID === span.traceID);
  return child ? child.spanID : null;
}

const byStart = (a: Span, b: Span) => a.startTime - b.startTime || a.spanID.localeCompare(b.spanID);

/**
 * Builds the tree. Spans whose parent is missing become roots (marked `orphan`), and a
 * parent cycle — which bad clients do send — is broken at the span met first, so every
 * span appears exactly once.
 */
export function buildTrace(raw: JaegerTrace): Trace {
  const processes = raw.processes ?? {};
  // Explicit fields rather than `{...s}`: one object shape for every span keeps V8 on its
  // fast path, which matters at 100k spans.
  const spans: Span[] = raw.spans.map((s) => {
    const process = processes[s.processID] ?? { serviceName: 'unknown', tags: [] };
    const tags = s.tags ?? [];
    const kind = tagValue(tags, 'span.kind');
    return {
      traceID: s.traceID,
      spanID: s.spanID,
      flags: s.flags,
      operationName: s.operationName,
      references: s.references ?? [],
      startTime: s.startTime,
      duration: s.duration,
      tags,
      logs: s.logs ?? [],
      processID: s.processID,
      warnings: s.warnings,
      process,
      service: process.serviceName,
      kind: typeof kind === 'string' ? kind : '',
      error: isErrorSpan(tags),
      parent: null,
      children: [],
      depth: 0,
      index: 0,
      orphan: false,
    };
  });
  const byId = new Map<string, Span>();
  for (const s of spans) if (!byId.has(s.spanID)) byId.set(s.spanID, s);

  const roots: Span[] = [];
  for (const s of spans) {
    const pid = parentRef(s);
    const parent = pid !== null ? byId.get(pid) : undefined;
    if (parent && parent !== s) {
      s.parent = parent;
      parent.children.push(s);
    } else {
      s.orphan = pid !== null;
      roots.push(s);
    }
  }
  roots.sort(byStart);

  const ordered: Span[] = [];
  const visited = new Set<Span>();
  const walk = (root: Span) => {
    const stack: Span[] = [root];
    root.depth = 0;
    while (stack.length) {
      const s = stack.pop()!;
      if (visited.has(s)) continue;
      visited.add(s);
      s.index = ordered.length;
      ordered.push(s);
      s.children.sort(byStart);
      for (let i = s.children.length - 1; i >= 0; i--) {
        const c = s.children[i];
        c.depth = s.depth + 1;
        stack.push(c);
      }
    }
  };
  for (const r of roots) walk(r);
  // Spans never reached sit on a parent cycle: cut each cycle at one span.
  if (ordered.length < spans.length) {
    for (const s of spans) {
      if (visited.has(s)) continue;
      if (s.parent) s.parent.children = s.parent.children.filter((c) => c !== s);
      s.parent = null;
      s.orphan = true;
      roots.push(s);
      walk(s);
    }
  }

  let start = Infinity;
  let end = -Infinity;
  let depth = 0;
  let errors = 0;
  const services = new Set<string>();
  for (const s of ordered) {
    start = Math.min(start, s.startTime);
    end = Math.max(end, s.startTime + s.duration);
    depth = Math.max(depth, s.depth + 1);
    if (s.error) errors++;
    services.add(s.service);
  }
  if (!ordered.length) start = end = 0;
  return {
    traceID: raw.traceID,
    spans: ordered,
    roots,
    byId,
    processes,
    startTime: start,
    endTime: end,
    duration: end - start,
    services: [...services].sort(),
    depth,
    errorCount: errors,
    warnings: raw.warnings ?? [],
  };
}

/** The span that names the trace: the earliest root that is not an orphan, else the first. */
export function rootSpan(trace: Trace): Span | undefined {
  return trace.roots.find((r) => !r.orphan) ?? trace.roots[0];
}

/** Strips the derived fields: what Jaeger's API would answer for this trace. */
export function toJaegerTrace(trace: Trace): JaegerTrace {
  return {
    traceID: trace.traceID,
    spans: trace.spans.map((s) => ({
      traceID: s.traceID,
      spanID: s.spanID,
      flags: s.flags ?? 1,
      operationName: s.operationName,
      references: s.references,
      startTime: s.startTime,
      duration: s.duration,
      tags: s.tags,
      logs: s.logs,
      processID: s.processID,
      warnings: s.warnings ?? null,
    })),
    processes: trace.processes,
    warnings: trace.warnings.length ? trace.warnings : null,
  };
}
