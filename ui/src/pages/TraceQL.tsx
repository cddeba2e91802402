// TraceQL search: the editor and its settings write the URL
// (`/search?mode=traceql&q=…&lookback=1h&limit=20`), the URL runs the query, so every
// query is a link and back/forward rerun it. A query with a metrics pipeline
// (`| rate()`, …) is charted from `/api/metrics/query_range`; any other lists the
// matching traces from `/api/search` with their matched spans, which the trace view then
// highlights (`?highlight=<span ids>`).

import { useMemo, useState } from 'preact/hooks';
import type uPlot from 'uplot';
import { withTenant } from '../api/session';
import * as tempo from '../api/tempo';
import { Chart, axes } from '../components/Chart';
import { Empty, ErrorState, Link, Loading, ServiceBadge, useAsync } from '../components/common';
import { Scatter } from '../components/Scatter';
import { TimeRangeFields, useTimeRange } from '../components/TimeRangeFields';
import { TraceQLEditor } from '../components/TraceQLEditor';
import { PALETTE, formatAgo, formatDuration, formatTime, serviceColor } from '../model/format';
import { stepFor } from '../model/monitor';
import { timeRange } from '../model/query';
import { errorPosition, isMetricsQuery } from '../model/traceql';
import { href, navigate } from '../router';

const DEFAULT_LIMIT = 20;
const DEFAULT_SPSS = 3;
/** Points a metrics chart aims for: the step is the smallest round one giving at most this many. */
const CHART_POINTS = 120;
const MAX_SERIES = 50;

const EXAMPLES: [string, string][] = [
  ['{ status = error }', 'spans that failed'],
  ['{ duration > 500ms }', 'slow spans'],
  ['{ span.http.response.status_code >= 500 }', 'server errors by attribute'],
  ['{ kind = consumer } >> { kind = client }', 'clients called while consuming a message'],
  ['{ } | rate() by (resource.service.name)', 'spans per second, per service'],
  ['{ status = error } | count_over_time() by (resource.service.name)', 'errors per step, per service'],
  ['{ kind = server } | quantile_over_time(duration, .5, .99) by (resource.service.name)', 'p50 and p99 of server spans'],
];

/** The URL parameters that make a run: a change of any reruns the query. */
function runKey(q: URLSearchParams): string {
  const p = new URLSearchParams();
  for (const k of ['q', 'lookback', 'start', 'end', 'limit', 'spss']) if (q.get(k) !== null) p.set(k, q.get(k)!);
  return p.toString();
}

type Answer = { kind: 'traces'; search: tempo.SearchAnswer } | { kind: 'metrics'; answer: tempo.QueryRangeAnswer; stepSec: number };

export function TraceQLSearch(props: { query: URLSearchParams }) {
  const q = props.query;
  const key = runKey(q);
  const text = (q.get('q') ?? '').trim();
  const [result, reload] = useAsync<Answer | null>(
    async (signal) => {
      if (!text) return null;
      const [start, end] = timeRange(q.get('lookback') ?? '1h', q.get('start'), q.get('end'));
      if (isMetricsQuery(text)) {
        const stepSec = stepFor(end - start, CHART_POINTS).stepUs / 1e6;
        return { kind: 'metrics', answer: await tempo.queryRange({ q: text, start, end, stepSec }, signal), stepSec };
      }
      const limit = Number(q.get('limit')) || DEFAULT_LIMIT;
      const spss = Number(q.get('spss')) || DEFAULT_SPSS;
      return { kind: 'traces', search: await tempo.search({ q: text, start, end, limit, spss }, signal) };
    },
    [key],
  );
  const queryError = result.state === 'error' && tempo.isQueryError(result.error) ? result.error.message : null;
  let body;
  if (!text) body = <Examples query={q} />;
  else if (result.state === 'loading') body = <Loading what={isMetricsQuery(text) ? 'series' : 'traces'} />;
  else if (result.state === 'error') body = queryError ? null : <ErrorState error={result.error} retry={reload} hint="Narrow the time range or the query, or try again." />;
  else if (result.value?.kind === 'metrics') body = <MetricsResult series={result.value.answer.series} partial={result.value.answer.partial} stepSec={result.value.stepSec} query={text} />;
  else if (result.value?.kind === 'traces') body = <TraceResults answer={result.value.search} />;
  return (
    <div class="traceql-page">
      {/* Keyed by the URL so back/forward refill the editor with that query. */}
      <TraceQLForm key={key} query={q} error={queryError} onRerun={reload} />
      <section class="results">{body}</section>
    </div>
  );
}

function TraceQLForm(props: { query: URLSearchParams; error: string | null; onRerun: () => void }) {
  const q = props.query;
  const ran = q.get('q') ?? '';
  const [text, setText] = useState(ran);
  const range = useTimeRange(q);
  const [limit, setLimit] = useState(q.get('limit') ?? String(DEFAULT_LIMIT));
  const [spss, setSpss] = useState(q.get('spss') ?? String(DEFAULT_SPSS));
  const [problem, setProblem] = useState<string | null>(null);
  const [focusAt, setFocusAt] = useState<{ offset: number } | null>(null);
  const metrics = isMetricsQuery(text);

  const submit = () => {
    try {
      if (!text.trim()) throw new Error('write a query first, e.g. { status = error }');
      const url = href('/search', { mode: 'traceql', q: text.trim(), ...range.params(), limit, spss: spss === String(DEFAULT_SPSS) ? undefined : spss });
      setProblem(null);
      // The same query again (a relative range has moved on): run it, the URL stays.
      if (withTenant(url) === location.pathname + location.search) props.onRerun();
      else navigate(url);
    } catch (err) {
      setProblem((err as Error).message);
    }
  };

  return (
    <form
      class="traceql-form card"
      aria-label="TraceQL search"
      onSubmit={(e) => {
        e.preventDefault();
        submit();
      }}
    >
      <TraceQLEditor value={text} onInput={setText} onRun={submit} invalid={!!props.error} focusAt={focusAt} />
      {props.error && <QueryError message={props.error} query={ran} onShow={(offset) => setFocusAt({ offset })} />}
      {problem && (
        <div class="form-error" role="alert">
          {problem}
        </div>
      )}
      <div class="traceql-controls">
        <TimeRangeFields range={range} />
        <label title={metrics ? 'Metrics queries return series, not traces' : undefined}>
          Limit
          <input name="limit" type="number" min="1" max="1500" value={limit} disabled={metrics} onInput={(e) => setLimit((e.target as HTMLInputElement).value)} />
        </label>
        <label title="How many matched spans each trace lists">
          Spans per trace
          <input name="spss" type="number" min="1" max="100" value={spss} disabled={metrics} onInput={(e) => setSpss((e.target as HTMLInputElement).value)} />
        </label>
        <div class="spacer" />
        <span class="muted keys">Ctrl+Space complete · Enter run · Shift+Enter new line</span>
        <button type="submit" class="primary">
          {metrics ? 'Chart query' : 'Run query'}
        </button>
      </div>
    </form>
  );
}

/** The server's parse error, with a caret under the column it names. */
function QueryError(props: { message: string; query: string; onShow: (offset: number) => void }) {
  const pos = errorPosition(props.message, props.query);
  const line = pos ? (props.query.split('\n')[pos.line - 1] ?? '') : '';
  return (
    <div class="traceql-error" role="alert" data-testid="traceql-error">
      <div class="message">{props.message}</div>
      {pos && (
        <pre class="mono caret-line" data-testid="error-caret" data-column={pos.column} title="Click to put the cursor there" onClick={() => props.onShow(pos.offset)}>
          {line}
          {'\n'}
          {Array.from(line)
            .slice(0, pos.column - 1)
            .map((c) => (c === '\t' ? c : ' '))
            .join('')}
          <span class="caret">^</span>
        </pre>
      )}
    </div>
  );
}

function Examples(props: { query: URLSearchParams }) {
  const keep = { lookback: props.query.get('lookback'), start: props.query.get('start'), end: props.query.get('end'), limit: props.query.get('limit') };
  return (
    <Empty title="Write a TraceQL query">
      Select spans with conditions in braces, combine spansets, or add a metrics pipeline to chart them. For example:
      <ul class="examples">
        {EXAMPLES.map(([example, what]) => (
          <li>
            <Link href={href('/search', { mode: 'traceql', q: example, ...keep })} class="mono">
              {example}
            </Link>{' '}
            <span class="muted">{what}</span>
          </li>
        ))}
      </ul>
    </Empty>
  );
}

interface Row {
  trace: tempo.MatchedTrace;
  spans: tempo.MatchedSpan[];
  matched: number;
}

/** The trace page with the matched spans highlighted (and one of them selected). */
function traceHref(r: Row, span?: string): string {
  return href(`/trace/${r.trace.traceID}`, { highlight: r.spans.map((s) => s.spanID).join(','), span });
}

function TraceResults(props: { answer: tempo.SearchAnswer }) {
  const rows = useMemo<Row[]>(
    () =>
      props.answer.traces.map((trace) => {
        // A span can be in several spansets: listed once.
        const byId = new Map<string, tempo.MatchedSpan>();
        for (const set of trace.spanSets) for (const s of set.spans) if (!byId.has(s.spanID)) byId.set(s.spanID, s);
        return { trace, spans: [...byId.values()].sort((a, b) => a.start - b.start), matched: trace.spanSets.reduce((n, set) => n + set.matched, 0) };
      }),
    [props.answer],
  );
  const points = useMemo(() => rows.map((r) => ({ traceID: r.trace.traceID, start: r.trace.start, duration: r.trace.duration, error: false })), [rows]);
  if (!rows.length)
    return (
      <Empty title="No traces match">
        Widen the time range or loosen the conditions. Attribute names are scoped: <code>span.</code>, <code>resource.</code>, or <code>.</code> for either.
      </Empty>
    );
  const longest = Math.max(...rows.map((r) => r.trace.duration), 1);
  const open = (id: string) => {
    const r = rows.find((x) => x.trace.traceID === id);
    if (r) navigate(traceHref(r));
  };
  const inspected = props.answer.inspectedTraces;
  return (
    <>
      <div class="card">
        <Scatter points={points} onOpen={open} />
      </div>
      <div class="results-bar">
        <strong data-testid="traceql-result-count">
          {rows.length} trace{rows.length === 1 ? '' : 's'}
        </strong>
        {inspected !== null && <span class="muted">{inspected.toLocaleString()} traces inspected</span>}
      </div>
      <ul class="result-list">
        {rows.map((r) => (
          <TraceResult row={r} longest={longest} key={r.trace.traceID} />
        ))}
      </ul>
    </>
  );
}

function TraceResult({ row: r, longest }: { row: Row; longest: number }) {
  const t = r.trace;
  const title = t.rootService || t.rootName ? `${t.rootService ?? '?'}: ${t.rootName ?? '?'}` : '<root span not yet received>';
  const more = r.matched - r.spans.length;
  return (
    <li class="result card traceql-result" data-testid="traceql-result" data-trace-id={t.traceID}>
      <div class="result-main">
        <div class="result-head">
          <Link href={traceHref(r)} class="result-title">
            <i class="dot" style={{ background: serviceColor(t.rootService ?? '') }} />
            {title}
          </Link>
          <span class="mono muted">{t.traceID.slice(0, 8)}</span>
          <div class="spacer" />
          <span class="duration">{formatDuration(t.duration)}</span>
        </div>
        <div class="result-bar" aria-hidden="true">
          <div style={{ width: `${Math.max((t.duration / longest) * 100, 0.5)}%`, background: 'var(--accent)' }} />
        </div>
        <div class="result-meta">
          <span data-testid="matched-count">
            {r.matched} matched span{r.matched === 1 ? '' : 's'}
          </span>
          <div class="spacer" />
          <span class="muted" title={formatTime(t.start)}>
            {formatAgo(t.start)} · {formatTime(t.start)}
          </span>
        </div>
        {r.spans.length > 0 && (
          <ul class="matched-spans">
            {r.spans.map((s) => (
              <li class="matched-span" data-span-id={s.spanID} data-matched="true">
                <Link href={traceHref(r, s.spanID)} title={`Open the trace at ${s.name || s.spanID}`}>
                  <span class="op-name">{s.name || <span class="muted">(no name)</span>}</span>
                  {s.service && <ServiceBadge service={s.service} />}
                  {s.attributes
                    .filter(([k]) => k !== 'service.name')
                    .slice(0, 4)
                    .map(([k, v]) => (
                      <span class="attr-chip mono">
                        {k}={v}
                      </span>
                    ))}
                  <span class="mono muted">{s.spanID}</span>
                  <span class="spacer" />
                  <span class="duration">{formatDuration(s.duration)}</span>
                </Link>
              </li>
            ))}
            {more > 0 && <li class="muted more">and {more} more matched (raise “Spans per trace” to list them)</li>}
          </ul>
        )}
      </div>
    </li>
  );
}

function formatValue(v: number): string {
  if (!Number.isFinite(v)) return '–';
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(2);
  return String(Number(v.toPrecision(3)));
}

function MetricsResult(props: { series: tempo.Series[]; partial: string | null; stepSec: number; query: string }) {
  const shown = props.series.slice(0, MAX_SERIES);
  const data = useMemo(() => tempo.alignSeries(shown) as uPlot.AlignedData, [props.series]);
  const color = (k: number) => PALETTE[k % PALETTE.length];
  if (!shown.some((s) => s.points.length))
    return (
      <Empty title="No data in this range">
        No span matched the query in the time range. Widen it, or check the filter with a search first (remove the <code>| …</code> part).
      </Empty>
    );
  return (
    <div class="card traceql-metrics" data-testid="metrics-result">
      <h2>
        <span class="mono">{props.query}</span> <span class="muted">· step {formatDuration(props.stepSec * 1e6)}</span>
      </h2>
      <Chart
        class="metrics-chart"
        label={`Series of ${props.query}`}
        height={300}
        data={data}
        options={() => ({
          legend: { show: false },
          scales: { x: { time: true } },
          axes: axes('', formatValue),
          series: [
            {},
            ...shown.map((s, k) => ({
              label: s.label,
              stroke: color(k),
              width: 1.5,
              // A lone sample has no line: show points where they are sparse.
              points: { show: s.points.length < 3, size: 5 },
              value: (_u: uPlot, v: number | null) => (v === null ? '–' : formatValue(v)),
            })),
          ],
        })}
      />
      <ul class="series-legend" data-testid="series-legend">
        {shown.map((s, k) => {
          const last = s.points[s.points.length - 1];
          return (
            <li data-series={s.label}>
              <i class="swatch" style={{ background: color(k) }} />
              <span class="mono">{tempo.legendLabel(s) ?? props.query}</span>
              <span class="muted">
                {s.points.length} point{s.points.length === 1 ? '' : 's'}
                {last ? ` · last ${formatValue(last[1])}` : ''}
              </span>
            </li>
          );
        })}
      </ul>
      {props.partial && (
        <div class="warn-text" data-testid="metrics-partial">
          Incomplete: {props.partial}
        </div>
      )}
      {props.series.length > MAX_SERIES && (
        <div class="muted">
          Showing {MAX_SERIES} of {props.series.length} series; add <code>| topk({MAX_SERIES})</code> or group by fewer attributes.
        </div>
      )}
    </div>
  );
}
