// Two traces side by side: which call paths differ, and which operations got slower.
//
// When both traces are stored, the counts and times are the server's
// (`/api/spindle/compare`); a trace opened from a file exists only in the browser, so
// then the comparison is computed here (`model/diff`). Self time, which the API does not
// give, is computed here in both cases.

import { useMemo, useState } from 'preact/hooks';
import * as analytics from '../api/analytics';
import * as api from '../api/client';
import { Empty, ErrorState, Link, Loading, useAsync } from '../components/common';
import { localTrace } from '../local-traces';
import { type DiffNode, type LatencyDelta, latencyDeltas, structureDiff } from '../model/diff';
import { formatDuration, formatPercent, serviceColor } from '../model/format';
import { type PathRow, pathRows } from '../model/monitor';
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
      <section class="card">
        <StructureHeading changed={changed} />
        <table class="grid diff-tree" data-testid="structure-diff">
          <thead>
            <tr>
              <th>Call path</th>
              <th class="num">Count A</th>
              <th class="num">Count B</th>
              <th class="num">Time A</th>
              <th class="num">Time B</th>
              <th class="num">Δ time</th>
            </tr>
          </thead>
          <tbody>
            {diff.map((d) => (
              <DiffRow node={d} a={ta.traceID} b={tb.traceID} />
            ))}
          </tbody>
        </table>
      </section>
      <section class="card">
        <h2>Latency per operation</h2>
        <table class="grid" data-testid="latency-deltas">
          <thead>
            <tr>
              <th>Service</th>
              <th>Operation</th>
              <th class="num">Count A → B</th>
              <th class="num">Avg A</th>
              <th class="num">Avg B</th>
              <th class="num">Self A</th>
              <th class="num">Self B</th>
              <th class="num">Δ self</th>
              <th class="num">Δ total</th>
              <th class="num">Δ avg</th>
            </tr>
          </thead>
          <tbody>
            {deltas.map((r) => (
              <tr>
                <td>
                  <i class="dot" style={{ background: serviceColor(r.service) }} /> {r.service}
                </td>
                <td>{r.operation}</td>
                <td class="num">
                  {r.countA} → {r.countB}
                </td>
                <td class="num">{formatDuration(r.avgA)}</td>
                <td class="num">{formatDuration(r.avgB)}</td>
                <td class="num">{formatDuration(r.selfA)}</td>
                <td class="num">{formatDuration(r.selfB)}</td>
                <Delta us={r.selfDelta} />
                <Delta us={r.delta} />
                <Ratio ratio={r.ratio} />
              </tr>
            ))}
          </tbody>
        </table>
      </section>
    </>
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
      <section class="card">
        <StructureHeading changed={changed} />
        <table class="grid diff-tree" data-testid="structure-diff">
          <thead>
            <tr>
              <th>Call path</th>
              <th class="num">Count A</th>
              <th class="num">Count B</th>
              <th class="num">Δ count</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((r) => (
              <PathRowView row={r} example={pathsB.has(r.path) ? { id: tb.traceID, span: pathsB.get(r.path)! } : pathsA.has(r.path) ? { id: ta.traceID, span: pathsA.get(r.path)! } : null} />
            ))}
          </tbody>
        </table>
      </section>
      <section class="card">
        <h2>Latency per operation</h2>
        <table class="grid" data-testid="latency-deltas">
          <thead>
            <tr>
              <th>Service</th>
              <th>Operation</th>
              <th class="num">Count A → B</th>
              <th class="num">Total A</th>
              <th class="num">Total B</th>
              <th class="num">Avg A</th>
              <th class="num">Avg B</th>
              <th class="num">Δ self</th>
              <th class="num">Δ total</th>
              <th class="num">Δ avg</th>
            </tr>
          </thead>
          <tbody>
            {ops.map((o) => {
              const avgA = o.countA ? (o.totalMsA * 1000) / o.countA : NaN;
              const avgB = o.countB ? (o.totalMsB * 1000) / o.countB : NaN;
              return (
                <tr data-op={`${o.service}/${o.operation}`}>
                  <td>
                    <i class="dot" style={{ background: serviceColor(o.service) }} /> {o.service}
                  </td>
                  <td>{o.operation}</td>
                  <td class="num">
                    {o.countA} → {o.countB}
                  </td>
                  <td class="num">{o.countA ? formatDuration(o.totalMsA * 1000) : '–'}</td>
                  <td class="num">{o.countB ? formatDuration(o.totalMsB * 1000) : '–'}</td>
                  <td class="num">{formatDuration(avgA)}</td>
                  <td class="num">{formatDuration(avgB)}</td>
                  {o.self ? <Delta us={o.self.selfDelta} /> : <td class="num">–</td>}
                  <Delta us={o.deltaMs * 1000} />
                  <Ratio ratio={o.countA && o.countB && avgA > 0 ? avgB / avgA - 1 : NaN} />
                </tr>
              );
            })}
          </tbody>
        </table>
      </section>
    </>
  );
}

function PathRowView(props: { row: PathRow; example: { id: string; span: Span } | null }) {
  const r = props.row;
  const d = r.countB - r.countA;
  return (
    <tr class={`diff-${r.status}`} data-status={r.status} data-path={r.path}>
      <td style={{ paddingLeft: `${Math.min(r.depth, 24) * 14 + 6}px` }}>
        <i class="dot" style={{ background: serviceColor(r.service) }} /> <span class="muted">{r.service}</span>{' '}
        {props.example ? <Link href={href(`/trace/${props.example.id}`, { span: props.example.span.spanID })}>{r.operation}</Link> : r.operation}
      </td>
      <td class="num">{r.countA}</td>
      <td class="num">{r.countB}</td>
      <td class={`num ${d > 0 ? 'worse' : d < 0 ? 'better' : ''}`}>{d ? `${d > 0 ? '+' : ''}${d}` : ''}</td>
    </tr>
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

function DiffRow(props: { node: DiffNode; a: string; b: string }) {
  const d = props.node;
  const ex = d.exampleB ? { id: props.b, span: d.exampleB.spanID } : { id: props.a, span: d.exampleA!.spanID };
  const delta = d.durationB - d.durationA;
  return (
    <tr class={`diff-${d.status}`} data-status={d.status}>
      <td style={{ paddingLeft: `${Math.min(d.depth, 24) * 14 + 6}px` }}>
        <i class="dot" style={{ background: serviceColor(d.service) }} /> <span class="muted">{d.service}</span>{' '}
        <Link href={href(`/trace/${ex.id}`, { span: ex.span })}>{d.operation}</Link>
      </td>
      <td class="num">{d.countA}</td>
      <td class="num">{d.countB}</td>
      <td class="num">{d.countA ? formatDuration(d.durationA) : '–'}</td>
      <td class="num">{d.countB ? formatDuration(d.durationB) : '–'}</td>
      <Delta us={delta} />
    </tr>
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
