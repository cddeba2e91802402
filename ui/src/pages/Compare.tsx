// Two traces side by side: which call paths differ, and which operations got slower.
//
// When both traces are stored, the counts and times are the server's
// (`/api/spindle/compare`); a trace opened from a file exists only in the browser, so
// then the comparison is computed here (`model/diff`). Self time, which the API does not
// give, is computed here in both cases.

import type { ComponentChildren } from 'preact';
import { useMemo, useState } from 'preact/hooks';
import * as analytics from '../api/analytics';
import * as api from '../api/client';
import { Empty, ErrorState, Link, Loading, useAsync } from '../components/common';
import { localTrace } from '../local-traces';
import { type LatencyDelta, type PathRow, latencyDeltas, structureDiff } from '../model/diff';
import { formatDuration, formatPercent, serviceColor } from '../model/format';
import { pathRows } from '../model/monitor';
import { opKey } from '../model/stats';
import { type Span, type Trace, buildTrace, rootSpan } from '../model/trace';
import { href, navigate } from '../router';

async function load(id: string, signal: AbortSignal): Promise<Trace> {
  return buildTrace(localTrace(id) ?? (await api.getTrace(id, signal)));
}

/** The first span at each call path, in the compare API's path notation (`svc:op > svc:op`). */
function spansByPath(t: Trace): Map<string, Span> {
  const pathOf = new Map<Span, string>();
  const out = new Map<string, Span>();
  // Spans are in tree preorder: a parent's path is known before its children's.
  for (const s of t.spans) {
    const step = `${s.service}:${s.operationName}`;
    const path = s.parent && pathOf.has(s.parent) ? `${pathOf.get(s.parent)} > ${step}` : step;
    pathOf.set(s, path);
    if (!out.has(path)) out.set(path, s);
  }
  return out;
}

export function ComparePage(props: { query: URLSearchParams; ids: string[] }) {
  const a = props.query.get('a') ?? props.ids[0] ?? '';
  const b = props.query.get('b') ?? props.ids[1] ?? '';
  return (
    <div class="compare-page">
      <ComparePicker a={a} b={b} />
      {a && b ? (
        <CompareView key={`${a}/${b}`} a={a} b={b} />
      ) : (
        <Empty title="Pick two traces to compare">Paste two trace ids above, or tick two results on the search page and press “Compare”.</Empty>
      )}
    </div>
  );
}

function ComparePicker(props: { a: string; b: string }) {
  const [a, setA] = useState(props.a);
  const [b, setB] = useState(props.b);
  return (
    <form
      class="card compare-picker"
      onSubmit={(e) => {
        e.preventDefault();
        navigate(href('/compare', { a: a.trim(), b: b.trim() }));
      }}
    >
      <label>
        Trace A (baseline)
        <input name="a" value={a} onInput={(e) => setA((e.target as HTMLInputElement).value)} placeholder="trace id" />
      </label>
      <label>
        Trace B
        <input name="b" value={b} onInput={(e) => setB((e.target as HTMLInputElement).value)} placeholder="trace id" />
      </label>
      <button type="submit" class="primary">
        Compare
      </button>
    </form>
  );
}

function CompareView(props: { a: string; b: string }) {
  const [pair, reload] = useAsync(async (signal) => {
    const stored = !localTrace(props.a) && !localTrace(props.b);
    const [ta, tb, server] = await Promise.all([load(props.a, signal), load(props.b, signal), stored ? analytics.compare(props.a, props.b, signal) : null]);
    return { ta, tb, server };
  }, [props.a, props.b]);
  if (pair.state === 'loading') return <Loading what="both traces" />;
  if (pair.state === 'error') return <ErrorState error={pair.error} retry={reload} hint="Check both trace ids; each must be a trace Spindle still holds." />;
  const { ta, tb, server } = pair.value;
  return (
    <>
      <div class="compare-heads">
        <TraceCard label="A" trace={ta} />
        <TraceCard label="B" trace={tb} other={ta} />
      </div>
      <div class="source-note" data-testid="compare-source">
        {server ? (
          <>
            Counts and times from <code>/api/spindle/compare</code>; self time (an operation's own work, children excluded) computed in the browser.
          </>
        ) : (
          'A trace opened from a file is not on the server: compared in the browser.'
        )}
      </div>
      {server ? <ServerComparison ta={ta} tb={tb} c={server} /> : <LocalComparison ta={ta} tb={tb} />}
    </>
  );
}

function LocalComparison(props: { ta: Trace; tb: Trace }) {
  const { ta, tb } = props;
  const { diff, deltas } = useMemo(() => ({ diff: structureDiff(ta, tb), deltas: latencyDeltas(ta, tb) }), [ta, tb]);
  const changed = diff.filter((d) => d.status !== 'same').length;
  return (
    <>
      <StructureTable changed={changed} columns={['Time A', 'Time B', 'Δ time']}>
        {diff.map((d) => {
          const ex = d.exampleB ? { id: tb.traceID, span: d.exampleB } : { id: ta.traceID, span: d.exampleA! };
          return (
            <StructureRow row={d} example={ex}>
              <td class="num">{d.countA ? formatDuration(d.durationA) : '–'}</td>
              <td class="num">{d.countB ? formatDuration(d.durationB) : '–'}</td>
              <Delta us={d.durationB - d.durationA} />
            </StructureRow>
          );
        })}
      </StructureTable>
      <LatencyTable columns={['Avg A', 'Avg B', 'Self A', 'Self B']}>
        {deltas.map((r) => (
          <LatencyRow op={r} selfDelta={r.selfDelta} delta={r.delta} ratio={r.ratio}>
            <td class="num">{formatDuration(r.avgA)}</td>
            <td class="num">{formatDuration(r.avgB)}</td>
            <td class="num">{formatDuration(r.selfA)}</td>
            <td class="num">{formatDuration(r.selfB)}</td>
          </LatencyRow>
        ))}
      </LatencyTable>
    </>
  );
}

function ServerComparison(props: { ta: Trace; tb: Trace; c: analytics.Comparison }) {
  const { ta, tb, c } = props;
  const [pathsA, pathsB] = useMemo(() => [spansByPath(ta), spansByPath(tb)], [ta, tb]);
  // Siblings in the order they ran, relative to each trace's start.
  const rows = useMemo(() => {
    const at = (t: Trace, s: Span | undefined) => (s ? s.startTime - t.startTime : undefined);
    return pathRows(c.structure, (p) => at(tb, pathsB.get(p)) ?? at(ta, pathsA.get(p)));
  }, [c, ta, tb, pathsA, pathsB]);
  // Self time per operation, which the API does not report, from the loaded traces.
  const self = useMemo(() => new Map<string, LatencyDelta>(latencyDeltas(ta, tb).map((d) => [opKey(d.service, d.operation), d])), [ta, tb]);
  const ops = useMemo(
    () =>
      c.operations
        .map((o) => ({ ...o, self: self.get(opKey(o.service, o.operation)) }))
        .sort((x, y) => Math.abs(y.self?.selfDelta ?? 0) - Math.abs(x.self?.selfDelta ?? 0) || Math.abs(y.deltaMs) - Math.abs(x.deltaMs)),
    [c, self],
  );
  const changed = rows.filter((r) => r.status !== 'same').length;
  return (
    <>
      <StructureTable changed={changed} columns={['Δ count']}>
        {rows.map((r) => {
          const d = r.countB - r.countA;
          const ex = pathsB.has(r.path) ? { id: tb.traceID, span: pathsB.get(r.path)! } : pathsA.has(r.path) ? { id: ta.traceID, span: pathsA.get(r.path)! } : null;
          return (
            <StructureRow row={r} example={ex} path={r.path}>
              <td class={`num ${d > 0 ? 'worse' : d < 0 ? 'better' : ''}`}>{d ? `${d > 0 ? '+' : ''}${d}` : ''}</td>
            </StructureRow>
          );
        })}
      </StructureTable>
      <LatencyTable columns={['Total A', 'Total B', 'Avg A', 'Avg B']}>
        {ops.map((o) => {
          const avgA = o.countA ? (o.totalMsA * 1000) / o.countA : NaN;
          const avgB = o.countB ? (o.totalMsB * 1000) / o.countB : NaN;
          return (
            <LatencyRow
              op={o}
              dataOp={`${o.service}/${o.operation}`}
              selfDelta={o.self?.selfDelta}
              delta={o.deltaMs * 1000}
              ratio={o.countA && o.countB && avgA > 0 ? avgB / avgA - 1 : NaN}
            >
              <td class="num">{o.countA ? formatDuration(o.totalMsA * 1000) : '–'}</td>
              <td class="num">{o.countB ? formatDuration(o.totalMsB * 1000) : '–'}</td>
              <td class="num">{formatDuration(avgA)}</td>
              <td class="num">{formatDuration(avgB)}</td>
            </LatencyRow>
          );
        })}
      </LatencyTable>
    </>
  );
}

/** One row per call path (`StructureRow`), in tree order; `columns` follow Call path, Count A and Count B. */
function StructureTable(props: { changed: number; columns: string[]; children: ComponentChildren }) {
  return (
    <section class="card">
      <StructureHeading changed={props.changed} />
      <table class="grid diff-tree" data-testid="structure-diff">
        <TableHead columns={['Call path']} numeric={['Count A', 'Count B', ...props.columns]} />
        <tbody>{props.children}</tbody>
      </table>
    </section>
  );
}

function StructureHeading(props: { changed: number }) {
  const { changed } = props;
  return (
    <>
      <h2>
        Structure <span class="muted">({changed ? `${changed} call path${changed === 1 ? ' differs' : 's differ'}` : 'identical call paths'})</span>
      </h2>
      <div class="legend">
        <span class="diff-added">only in B</span> <span class="diff-removed">only in A</span> <span class="diff-changed">count differs</span>
      </div>
    </>
  );
}

/** A call path, indented by depth, linking to an example span when there is one; its counts in A and B, then `children`. */
function StructureRow(props: { row: PathRow; example: { id: string; span: Span } | null; path?: string; children: ComponentChildren }) {
  const { row: r, example } = props;
  return (
    <tr class={`diff-${r.status}`} data-status={r.status} data-path={props.path}>
      <td style={{ paddingLeft: `${Math.min(r.depth, 24) * 14 + 6}px` }}>
        <i class="dot" style={{ background: serviceColor(r.service) }} /> <span class="muted">{r.service}</span>{' '}
        {example ? <Link href={href(`/trace/${example.id}`, { span: example.span.spanID })}>{r.operation}</Link> : r.operation}
      </td>
      <td class="num">{r.countA}</td>
      <td class="num">{r.countB}</td>
      {props.children}
    </tr>
  );
}

/** One row per operation (`LatencyRow`); `columns` stand between Count A → B and the deltas. */
function LatencyTable(props: { columns: string[]; children: ComponentChildren }) {
  return (
    <section class="card">
      <h2>Latency per operation</h2>
      <table class="grid" data-testid="latency-deltas">
        <TableHead columns={['Service', 'Operation']} numeric={['Count A → B', ...props.columns, 'Δ self', 'Δ total', 'Δ avg']} />
        <tbody>{props.children}</tbody>
      </table>
    </section>
  );
}

/** An operation and its counts, `children`, then the changes of self time (– when unknown), total time and average. */
function LatencyRow(props: {
  op: { service: string; operation: string; countA: number; countB: number };
  dataOp?: string;
  selfDelta: number | undefined;
  delta: number;
  ratio: number;
  children: ComponentChildren;
}) {
  const { op } = props;
  return (
    <tr data-op={props.dataOp}>
      <td>
        <i class="dot" style={{ background: serviceColor(op.service) }} /> {op.service}
      </td>
      <td>{op.operation}</td>
      <td class="num">
        {op.countA} → {op.countB}
      </td>
      {props.children}
      {props.selfDelta === undefined ? <td class="num">–</td> : <Delta us={props.selfDelta} />}
      <Delta us={props.delta} />
      <Ratio ratio={props.ratio} />
    </tr>
  );
}

function TableHead(props: { columns: string[]; numeric: string[] }) {
  return (
    <thead>
      <tr>
        {props.columns.map((c) => (
          <th>{c}</th>
        ))}
        {props.numeric.map((c) => (
          <th class="num">{c}</th>
        ))}
      </tr>
    </thead>
  );
}

function Ratio(props: { ratio: number }) {
  const r = props.ratio;
  return <td class={`num ${r > 0 ? 'worse' : r < 0 ? 'better' : ''}`}>{Number.isFinite(r) ? `${r > 0 ? '+' : ''}${formatPercent(r)}` : '–'}</td>;
}

function TraceCard(props: { label: string; trace: Trace; other?: Trace }) {
  const { trace: t, other } = props;
  const root = rootSpan(t);
  const delta = other ? t.duration - other.duration : 0;
  return (
    <div class="card trace-card">
      <div class="muted">Trace {props.label}</div>
      <Link href={`/trace/${t.traceID}`} class="result-title">
        {root ? `${root.service}: ${root.operationName}` : t.traceID}
      </Link>
      <div class="mono muted">{t.traceID}</div>
      <div class="result-meta">
        <b>{formatDuration(t.duration)}</b>
        {other && delta !== 0 && (
          <span class={delta > 0 ? 'worse' : 'better'}>
            ({delta > 0 ? '+' : ''}
            {formatDuration(delta)} vs A)
          </span>
        )}
        <span>{t.spans.length} spans</span>
        <span class={t.errorCount ? 'error-text' : undefined}>{t.errorCount} errors</span>
      </div>
    </div>
  );
}

function Delta(props: { us: number }) {
  const { us } = props;
  return (
    <td class={`num ${us > 0 ? 'worse' : us < 0 ? 'better' : ''}`}>
      {us > 0 ? '+' : ''}
      {formatDuration(us)}
    </td>
  );
}
