// The service page, Spindle's monitor: rate, errors and latency percentiles over time per
// operation, latency grouped by any attribute, top error groups, slowest spans and
// outliers, Kafka hop latency of the topics it uses, and its alerts.
//
// Every figure comes from the analytics API (`/api/spindle/*`), which the server computes
// over every stored span; nothing here is derived from a sample of traces, except the
// list of attribute keys offered for "group by", which the API does not list.

import { useMemo, useState } from 'preact/hooks';
import type uPlot from 'uplot';
import * as analytics from '../api/analytics';
import * as api from '../api/client';
import { Chart, axes, cssVar } from '../components/Chart';
import { Empty, ErrorState, Link, Loading, LookbackSelect, ServiceBadge, useAsync } from '../components/common';
import { AlertState } from './Alerts';
import { attributeKeys, spansOf } from '../model/derive';
import { formatAgo, formatDuration, formatPercent, formatTime } from '../model/format';
import { alertsOf, alignSeries, sparkValues, stepFor } from '../model/monitor';
import { LOOKBACKS } from '../model/query';
import { buildTrace } from '../model/trace';
import { href, setQuery } from '../router';

/** Points per chart, and per sparkline. */
const CHART_POINTS = 60;
const SPARK_POINTS = 20;
/** A step longer than any range: the API then answers one point, the range's total. */
const WHOLE_RANGE = '876000h';
const DEFAULT_GROUP_BY = 'symbol';

const ms = (v: number | null) => (v === null ? NaN : v * 1000);
const fmtMs = (v: number | null) => formatDuration(ms(v));

interface Range {
  start: number;
  end: number;
}

export function ServicePage(props: { service: string; query: URLSearchParams }) {
  const q = props.query;
  const lookback = q.get('lookback') ?? '1h';
  const operation = q.get('op') ?? '';
  const groupBy = q.get('groupBy') || DEFAULT_GROUP_BY;
  const [nonce, setNonce] = useState(0);
  // One window for every request of the page, so all its numbers describe the same spans.
  const range = useMemo<Range>(() => {
    const end = Date.now() * 1000;
    return { start: end - (LOOKBACKS[lookback] ?? LOOKBACKS['1h']), end };
  }, [lookback, nonce]);
  const service = props.service;

  const [overview, reload] = useAsync(
    async (signal) => {
      const { step } = stepFor(range.end - range.start, CHART_POINTS);
      const f: analytics.Filter = { service, ...range };
      const [all, byOp, alerts] = await Promise.all([
        analytics.stats(f, { step }, signal),
        analytics.stats(f, { step, groupBy: 'span.name' }, signal),
        // Alerts failing to load must not hide the metrics.
        analytics.alerts(signal).then(
          (list) => alertsOf(list, service),
          (e: Error) => e,
        ),
      ]);
      return { all: all.groups[0] ?? null, ops: byOp.groups.slice().sort((a, b) => b.total.calls - a.total.calls), stepMs: all.stepMs, alerts };
    },
    [service, range],
  );

  return (
    <div class="service-page">
      <div class="card toolbar">
        <h1>
          <ServiceBadge service={service} />
        </h1>
        <Link href={href('/search', { service })}>Search its traces</Link>
        <div class="spacer" />
        <LookbackSelect value={lookback} />
        <button type="button" onClick={() => setNonce((n) => n + 1)} title="Recompute for the range ending now">
          Refresh
        </button>
      </div>
      {overview.state === 'loading' && <Loading what={`${service}'s metrics`} />}
      {overview.state === 'error' && <ErrorState error={overview.error} retry={reload} />}
      {overview.state === 'done' &&
        (overview.value.all === null ? (
          <Empty title={`No spans of ${service} in this time range`}>
            Pick a longer time range, or check that {service} still sends spans. <Link href="/map">See the system map</Link>.
          </Empty>
        ) : (
          <>
            <ServiceAlerts service={service} alerts={overview.value.alerts} />
            <div class="source-note" data-testid="metrics-source">
              Computed by Spindle over every span {service} stored from {formatTime(range.start)} to {formatTime(range.end)} (<code>/api/spindle/stats</code>); percentiles within
              2%.
            </div>
            <Operations all={overview.value.all} ops={overview.value.ops} operation={operation} />
            <Charts series={alignSeries((operation ? overview.value.ops.find((o) => o.group === operation) : overview.value.all)?.series ?? [], range.start, range.end, overview.value.stepMs * 1000)} operation={operation} />
            <GroupBy service={service} operation={operation} groupBy={groupBy} range={range} />
            <div class="two-col">
              <ErrorGroups service={service} operation={operation} range={range} />
              <Slowest service={service} operation={operation} range={range} />
            </div>
            <div class="two-col">
              <KafkaHops service={service} range={range} />
              <Outliers service={service} operation={operation} range={range} />
            </div>
          </>
        ))}
    </div>
  );
}

function ServiceAlerts(props: { service: string; alerts: analytics.Alert[] | Error }) {
  if (props.alerts instanceof Error)
    return (
      <section class="card" data-testid="service-alerts">
        <h2>Alerts</h2>
        <p class="error-text">Cannot read the alert state: {props.alerts.message}</p>
      </section>
    );
  const alerts = props.alerts;
  const active = alerts.filter((a) => a.state !== 'inactive');
  return (
    <section class={`card alerts-card${active.some((a) => a.state === 'firing') ? ' firing' : ''}`} data-testid="service-alerts">
      <div class="toolbar inner">
        <h2>Alerts</h2>
        <span class="muted">
          {alerts.length
            ? `${active.length} of ${alerts.length} rule${alerts.length === 1 ? '' : 's'} on ${props.service} active`
            : `no alert rule names ${props.service}`}
        </span>
        <div class="spacer" />
        <Link href="/alerts">All rules</Link>
      </div>
      {alerts.length > 0 && (
        <ul class="alert-list">
          {alerts.map((a) => (
            <li data-alert={a.name}>
              <AlertState state={a.state} /> <b>{a.name}</b>
              {a.operation && <span class="muted"> · {a.operation}</span>}
              {a.value !== null && <span class="muted"> · value {Number(a.value.toPrecision(4))}</span>}
              {a.activeSince && <span class="muted"> · since {formatAgo(Date.parse(a.activeSince) * 1000)}</span>}
              {a.annotations?.summary && <span> — {a.annotations.summary}</span>}
              {a.exampleTraceIDs.map((id) => (
                <Link href={`/trace/${id}`} class="mono small-link">
                  {' '}
                  {id.slice(0, 8)}
                </Link>
              ))}
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}

function Operations(props: { all: analytics.StatsGroup; ops: analytics.StatsGroup[]; operation: string }) {
  const row = (label: string, t: analytics.Stats, selected: boolean, op: string | undefined, strong = false) => (
    <tr class={selected ? 'selected' : ''} onClick={() => setQuery({ op })} data-op={op ?? ''}>
      <td>{strong ? <b>{label}</b> : label}</td>
      <td class="num">{t.calls}</td>
      <td class="num">{t.ratePerSec.toPrecision(2)}</td>
      <td class={`num${t.errors ? ' error-text' : ''}`}>{formatPercent(t.errorRatio)}</td>
      <td class="num">{fmtMs(t.p50Ms)}</td>
      <td class="num">{fmtMs(t.p90Ms)}</td>
      <td class="num">{fmtMs(t.p99Ms)}</td>
    </tr>
  );
  return (
    <section class="card">
      <h2>
        Operations <span class="muted">— click one to chart it alone</span>
      </h2>
      <table class="grid" data-testid="operations-table">
        <thead>
          <tr>
            <th>Operation</th>
            <th class="num">Calls</th>
            <th class="num">Calls/s</th>
            <th class="num">Error %</th>
            <th class="num">p50</th>
            <th class="num">p90</th>
            <th class="num">p99</th>
          </tr>
        </thead>
        <tbody>
          {row('All operations', props.all.total, !props.operation, undefined, true)}
          {props.ops.map((o) => row(o.group ?? '', o.total, props.operation === o.group, o.group ?? undefined))}
        </tbody>
      </table>
    </section>
  );
}

function Charts(props: { series: ReturnType<typeof alignSeries>; operation: string }) {
  const s = props.series;
  return (
    <section class="charts" data-testid="charts">
      <MiniChart title={`Rate${props.operation ? ` of ${props.operation}` : ''} (calls/s)`} t={s.t} lines={[['rate', s.rate, '--accent']]} fmt={(v) => Number(v.toPrecision(2)).toString()} />
      <MiniChart title="Error %" t={s.t} lines={[['errors', s.errors.map((v) => (v === null ? null : v * 100)), '--error']]} fmt={(v) => `${v.toFixed(0)}%`} />
      <MiniChart
        title="Latency"
        t={s.t}
        lines={[
          ['p50', s.p50, '--accent'],
          ['p90', s.p90, '--warn'],
          ['p99', s.p99, '--error'],
        ]}
        fmt={formatDuration}
      />
    </section>
  );
}

function GroupBy(props: { service: string; operation: string; groupBy: string; range: Range }) {
  const { service, operation, groupBy, range } = props;
  const spark = stepFor(range.end - range.start, SPARK_POINTS);
  const [groups, reload] = useAsync(
    (signal) => analytics.stats({ service, operation, ...range }, { groupBy, step: spark.step }, signal).then((r) => r.groups.slice().sort((a, b) => (b.total.p99Ms ?? 0) - (a.total.p99Ms ?? 0) || String(a.group).localeCompare(String(b.group)))),
    [service, operation, groupBy, range],
  );
  // The API has no list of attribute keys: offer those of a few recent traces.
  const [keys] = useAsync(
    async (signal) => {
      const traces = await api.searchTraces({ service, start: range.start, end: range.end, limit: 20 }, signal);
      return attributeKeys(spansOf(traces.map(buildTrace), service));
    },
    [service, range],
  );
  const suggestions = keys.state === 'done' ? keys.value : [];
  return (
    <section class="card">
      <div class="toolbar inner">
        <h2>Group by attribute</h2>
        <form
          onSubmit={(e) => {
            e.preventDefault();
            const v = (new FormData(e.currentTarget).get('groupBy') as string).trim();
            setQuery({ groupBy: v === DEFAULT_GROUP_BY ? undefined : v });
          }}
        >
          <input name="groupBy" list="attribute-keys" defaultValue={groupBy} key={groupBy} aria-label="Attribute to group by" placeholder="attribute key" onChange={(e) => (e.currentTarget as HTMLInputElement).form?.requestSubmit()} />
          <datalist id="attribute-keys">
            {suggestions.map((k) => (
              <option value={k} />
            ))}
          </datalist>
        </form>
        <span class="muted">{operation || 'all operations'}</span>
      </div>
      {groups.state === 'loading' && <Loading what={`${groupBy} groups`} />}
      {groups.state === 'error' && <ErrorState error={groups.error} retry={reload} />}
      {groups.state === 'done' &&
        (groups.value.length ? (
          <table class="grid" data-testid="group-by-table">
            <thead>
              <tr>
                <th>{groupBy}</th>
                <th class="num">Calls</th>
                <th class="num">Error %</th>
                <th class="num">p50</th>
                <th class="num">p90</th>
                <th class="num">p99</th>
                <th>p99 over time</th>
              </tr>
            </thead>
            <tbody>
              {groups.value.slice(0, 50).map((g) => {
                const v = g.group ?? '';
                return (
                  <tr data-group={v}>
                    <td>
                      <Link href={href('/search', { service, operation, tags: `${groupBy}=${/[\s"]/.test(v) ? JSON.stringify(v) : v}` })}>{v}</Link>
                    </td>
                    <td class="num">{g.total.calls}</td>
                    <td class={`num${g.total.errors ? ' error-text' : ''}`}>{formatPercent(g.total.errorRatio)}</td>
                    <td class="num">{fmtMs(g.total.p50Ms)}</td>
                    <td class="num">{fmtMs(g.total.p90Ms)}</td>
                    <td class="num">{fmtMs(g.total.p99Ms)}</td>
                    <td>
                      <Sparkline values={sparkValues(g.series, (p) => p.p99Ms, range.start, range.end, spark.stepUs)} />
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        ) : (
          <p class="muted" data-testid="group-by-empty">
            No span of {service}
            {operation && ` (${operation})`} carries <code>{groupBy}</code> in this range.
            {suggestions.length > 0 && (
              <>
                {' '}
                Its spans carry:{' '}
                {suggestions.slice(0, 12).map((k) => (
                  <button type="button" class="linklike chip" onClick={() => setQuery({ groupBy: k })}>
                    {k}
                  </button>
                ))}
              </>
            )}
          </p>
        ))}
    </section>
  );
}

function ErrorGroups(props: { service: string; operation: string; range: Range }) {
  const { service, operation, range } = props;
  const [groups, reload] = useAsync((signal) => analytics.errorGroups({ service, operation, ...range }, signal), [service, operation, range]);
  return (
    <section class="card">
      <h2>Top error groups</h2>
      {groups.state === 'loading' && <Loading what="error groups" />}
      {groups.state === 'error' && <ErrorState error={groups.error} retry={reload} />}
      {groups.state === 'done' &&
        (groups.value.length ? (
          <table class="grid" data-testid="error-groups">
            <thead>
              <tr>
                <th>Operation</th>
                <th>Error</th>
                <th class="num">Count</th>
                <th>Last seen</th>
                <th>Examples</th>
              </tr>
            </thead>
            <tbody>
              {groups.value.slice(0, 10).map((g) => (
                <tr>
                  <td>{g.operation}</td>
                  <td class="wrap">
                    <Link href={href('/search', { service, operation: g.operation, tags: 'error=true' })} class="error-text">
                      <b>{g.errorType || 'error'}</b>
                    </Link>
                  </td>
                  <td class="num">{g.count}</td>
                  <td title={formatTime(g.lastSeen)}>{formatAgo(g.lastSeen)}</td>
                  <td class="wrap">
                    {g.exampleTraceIDs.map((id) => (
                      <Link href={`/trace/${id}`} class="mono small-link">
                        {id.slice(0, 8)}
                      </Link>
                    ))}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        ) : (
          <p class="muted">No error spans in this range. 🎉</p>
        ))}
    </section>
  );
}

function SpanList(props: { spans: analytics.SpanRef[]; testid: string }) {
  return (
    <ol class="slowest" data-testid={props.testid}>
      {props.spans.map((s) => (
        <li>
          <Link href={href(`/trace/${s.traceID}`, { span: s.spanID })}>{s.operation}</Link> <b>{fmtMs(s.durationMs)}</b>{' '}
          <span class="muted" title={formatTime(s.startTime)}>
            {formatAgo(s.startTime)}
          </span>
          {s.error && <span class="error-badge">error</span>}
        </li>
      ))}
    </ol>
  );
}

function Slowest(props: { service: string; operation: string; range: Range }) {
  const { service, operation, range } = props;
  const [spans, reload] = useAsync((signal) => analytics.slowest({ service, operation, ...range }, 10, signal), [service, operation, range]);
  return (
    <section class="card">
      <h2>Slowest spans</h2>
      {spans.state === 'loading' && <Loading what="the slowest spans" />}
      {spans.state === 'error' && <ErrorState error={spans.error} retry={reload} />}
      {spans.state === 'done' && <SpanList spans={spans.value} testid="slowest" />}
    </section>
  );
}

function Outliers(props: { service: string; operation: string; range: Range }) {
  const { service, operation, range } = props;
  const [out, reload] = useAsync((signal) => analytics.outliers({ service, operation, ...range }, 0.99, 10, signal), [service, operation, range]);
  return (
    <section class="card">
      <h2>
        Outliers{' '}
        {out.state === 'done' && (
          <span class="muted">
            — slower than the p99 of {operation || 'all operations'}, {fmtMs(out.value.thresholdMs)}
          </span>
        )}
      </h2>
      {out.state === 'loading' && <Loading what="outliers" />}
      {out.state === 'error' && <ErrorState error={out.error} retry={reload} />}
      {out.state === 'done' && (out.value.spans.length ? <SpanList spans={out.value.spans} testid="outliers" /> : <p class="muted">No span above the p99.</p>)}
    </section>
  );
}

type Role = 'produces' | 'consumes' | 'produces, consumes';

function KafkaHops(props: { service: string; range: Range }) {
  const { service, range } = props;
  const spark = stepFor(range.end - range.start, SPARK_POINTS);
  const [hops, reload] = useAsync(
    async (signal) => {
      // kafka-hops has no service filter: the service's topics are the destinations of
      // its producer and consumer spans.
      const topicsOf = (spanKind: 'producer' | 'consumer') =>
        analytics.stats({ service, spanKind, tags: { 'messaging.system': 'kafka' }, ...range }, { groupBy: 'messaging.destination.name', step: WHOLE_RANGE }, signal).then((r) => new Set(r.groups.map((g) => g.group ?? '')));
      const [produced, consumed, series, totals] = await Promise.all([topicsOf('producer'), topicsOf('consumer'), analytics.kafkaHops(range, spark.step, signal), analytics.kafkaHops(range, WHOLE_RANGE, signal)]);
      const total = new Map(totals.map((t) => [t.topic, t.series[0]]));
      return series
        .filter((t) => produced.has(t.topic) || consumed.has(t.topic))
        .map((t) => ({
          ...t,
          role: [produced.has(t.topic) && 'produces', consumed.has(t.topic) && 'consumes'].filter(Boolean).join(', ') as Role,
          total: total.get(t.topic),
        }));
    },
    [service, range],
  );
  return (
    <section class="card">
      <h2>
        Kafka hops <span class="muted">— producer end → consumer start</span>
      </h2>
      {hops.state === 'loading' && <Loading what="Kafka hop latency" />}
      {hops.state === 'error' && <ErrorState error={hops.error} retry={reload} />}
      {hops.state === 'done' &&
        (hops.value.length ? (
          <table class="grid" data-testid="kafka-hops">
            <thead>
              <tr>
                <th>Topic</th>
                <th>{service}</th>
                <th class="num">Hops</th>
                <th class="num">p50</th>
                <th class="num">p99</th>
                <th class="num">Max</th>
                <th>p99 over time</th>
              </tr>
            </thead>
            <tbody>
              {hops.value.map((t) => (
                <tr data-topic={t.topic}>
                  <td>
                    <Link href={href('/search', { tags: `messaging.destination.name=${t.topic}` })}>{t.topic}</Link>
                  </td>
                  <td class="muted">{t.role}</td>
                  <td class="num">{t.total?.count ?? 0}</td>
                  <td class="num">{fmtMs(t.total?.p50Ms ?? null)}</td>
                  <td class="num">{fmtMs(t.total?.p99Ms ?? null)}</td>
                  <td class="num">{fmtMs(t.total?.maxMs ?? null)}</td>
                  <td>
                    <Sparkline values={sparkValues(t.series, (p) => p.p99Ms, range.start, range.end, spark.stepUs)} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        ) : (
          <p class="muted">{service} neither produced to nor consumed from a Kafka topic in this range.</p>
        ))}
    </section>
  );
}

function MiniChart(props: { title: string; t: number[]; lines: [string, (number | null)[], string][]; fmt: (v: number) => string }) {
  const data = useMemo<uPlot.AlignedData>(() => [props.t, ...props.lines.map((l) => l[1])], [props.t, props.lines]);
  return (
    <div class="card mini-chart">
      <h3>{props.title}</h3>
      <Chart
        height={160}
        data={data}
        label={props.title}
        options={() => ({
          legend: { show: props.lines.length > 1, live: false },
          scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.1 : 1] } },
          axes: axes('', props.fmt),
          series: [{}, ...props.lines.map(([label, , color]) => ({ label, stroke: cssVar(color), width: 1.5, spanGaps: true, points: { show: true, size: 4 }, value: (_u: uPlot, v: number | null) => (v === null ? '–' : props.fmt(v)) }))],
        })}
      />
    </div>
  );
}

/** A p99 sparkline: small enough for a table cell, so plain SVG rather than a chart. */
function Sparkline(props: { values: number[] }) {
  const w = 120;
  const h = 24;
  const max = Math.max(...props.values.filter(Number.isFinite), 1);
  const step = w / Math.max(props.values.length - 1, 1);
  // Steps without spans are gaps: the line bridges them and dots mark real values.
  const pts = props.values.flatMap((v, i) => (Number.isFinite(v) ? [[i * step, h - 3 - (v / max) * (h - 6)]] : []));
  const d = pts.map(([x, y], i) => `${i ? 'L' : 'M'}${x.toFixed(1)},${y.toFixed(1)}`).join('');
  return (
    <svg class="sparkline" width={w} height={h} viewBox={`0 0 ${w} ${h}`} aria-hidden="true">
      <path d={d} />
      {pts.map(([x, y]) => (
        <circle cx={x} cy={y} r={1.8} />
      ))}
    </svg>
  );
}
