// Search: the form writes the URL, the URL drives the query, so every search is a link.
// Two modes: the Jaeger-style form (service, operation, tags, durations) and TraceQL
// (`mode=traceql`, pages/TraceQL.tsx).

import { useMemo, useState } from 'preact/hooks';
import * as api from '../api/client';
import { Empty, ErrorState, Link, Loading, ServiceBadge, useAsync } from '../components/common';
import { Scatter } from '../components/Scatter';
import { TimeRangeFields, useTimeRange } from '../components/TimeRangeFields';
import { localTraces } from '../local-traces';
import { formatAgo, formatDuration, formatTime, parseDuration, serviceColor } from '../model/format';
import { type SortKey, parseTags, sortSummaries, timeRange, traceqlFromSearch } from '../model/query';
import { type JaegerTrace, buildTrace, rootSpan } from '../model/trace';
import { href, navigate } from '../router';

interface ResultRow {
  traceID: string;
  title: string;
  rootService: string;
  start: number;
  duration: number;
  spans: number;
  errors: number;
  services: [string, number][];
}

function summarise(raw: JaegerTrace): ResultRow {
  const t = buildTrace(raw);
  const root = rootSpan(t);
  const counts = new Map<string, number>();
  for (const s of t.spans) counts.set(s.service, (counts.get(s.service) ?? 0) + 1);
  return {
    traceID: t.traceID,
    title: root ? `${root.service}: ${root.operationName}` : t.traceID,
    rootService: root?.service ?? '',
    start: t.startTime,
    duration: t.duration,
    spans: t.spans.length,
    errors: t.errorCount,
    services: [...counts].sort((a, b) => b[1] - a[1]),
  };
}

const DEFAULT_LIMIT = 20;

export function SearchPage(props: { query: URLSearchParams }) {
  const q = props.query;
  const fromFile = q.get('source') === 'file';
  const traceql = q.get('mode') === 'traceql';
  return (
    <div class="search-shell">
      <ModeTabs query={q} traceql={traceql} />
      {traceql ? (
        <LazyTraceQL query={q} />
      ) : (
        <div class="search-page">
          {/* Keyed by the URL so back/forward refill the form with that search. */}
          <SearchForm key={searchKey(q)} query={q} />
          <section class="results">{fromFile ? <Results load={async () => localTraces()} query={q} fileMode /> : <ServerResults query={q} />}</section>
        </div>
      )}
    </div>
  );
}

/** The TraceQL mode, loaded on first use: the first page stays as small as it was. */
function LazyTraceQL(props: { query: URLSearchParams }) {
  const [mod, retry] = useAsync(() => import('./TraceQL'), []);
  if (mod.state === 'loading') return <Loading what="the TraceQL editor" />;
  if (mod.state === 'error') return <ErrorState error={mod.error} retry={retry} />;
  return <mod.value.TraceQLSearch query={props.query} />;
}

/**
 * The switch between the form and TraceQL. Both keep the time range and limit; going to
 * TraceQL turns the form's search (as in the URL) into the equivalent query.
 */
function ModeTabs(props: { query: URLSearchParams; traceql: boolean }) {
  const q = props.query;
  const keep = { lookback: q.get('lookback'), start: q.get('start'), end: q.get('end'), limit: q.get('limit') };
  const toTraceQL = () => {
    let text: string | undefined;
    try {
      const tags = parseTags(q.get('tags') ?? '');
      const p = { service: q.get('service'), operation: q.get('operation'), tags, minDuration: q.get('minDuration'), maxDuration: q.get('maxDuration') };
      if (p.service || p.operation || Object.keys(tags).length || p.minDuration || p.maxDuration) text = traceqlFromSearch(p);
    } catch {
      /* malformed tags in the URL: start from an empty query */
    }
    navigate(href('/search', { mode: 'traceql', q: text, ...keep }));
  };
  return (
    <div class="tabs search-modes" role="tablist" aria-label="Search mode">
      <button type="button" role="tab" aria-selected={!props.traceql} class={props.traceql ? '' : 'active'} onClick={() => props.traceql && navigate(href('/search', keep))}>
        Search
      </button>
      <button type="button" role="tab" aria-selected={props.traceql} class={props.traceql ? 'active' : ''} onClick={() => !props.traceql && toTraceQL()}>
        TraceQL
      </button>
    </div>
  );
}

/** The URL minus view-only parameters: a change of sort order must not search again. */
function searchKey(q: URLSearchParams): string {
  const p = new URLSearchParams(q);
  p.delete('sort');
  return p.toString();
}

function ServerResults(props: { query: URLSearchParams }) {
  const q = props.query;
  const key = searchKey(q);
  const load = async (signal: AbortSignal) => {
    const [start, end] = timeRange(q.get('lookback') ?? '1h', q.get('start'), q.get('end'));
    const tags = parseTags(q.get('tags') ?? '');
    return api.searchTraces(
      {
        service: q.get('service') ?? undefined,
        operation: q.get('operation') ?? undefined,
        tags,
        minDuration: q.get('minDuration') ?? undefined,
        maxDuration: q.get('maxDuration') ?? undefined,
        start,
        end,
        limit: Number(q.get('limit')) || DEFAULT_LIMIT,
      },
      signal,
    );
  };
  return <Results load={load} query={q} key={key} />;
}

function SearchForm(props: { query: URLSearchParams }) {
  const q = props.query;
  const [service, setService] = useState(q.get('service') ?? '');
  const [operation, setOperation] = useState(q.get('operation') ?? '');
  const [tags, setTags] = useState(q.get('tags') ?? '');
  const [minDuration, setMin] = useState(q.get('minDuration') ?? '');
  const [maxDuration, setMax] = useState(q.get('maxDuration') ?? '');
  const range = useTimeRange(q);
  const [limit, setLimit] = useState(q.get('limit') ?? String(DEFAULT_LIMIT));
  const [problem, setProblem] = useState<string | null>(null);
  const [services] = useAsync((s) => api.services(s), []);
  const [operations] = useAsync((s) => (service ? api.operations(service, s) : Promise.resolve([])), [service]);

  const submit = (e: Event) => {
    e.preventDefault();
    try {
      parseTags(tags);
      for (const [name, v] of [
        ['min duration', minDuration],
        ['max duration', maxDuration],
      ])
        if (v && parseDuration(v) === null) throw new Error(`${name} "${v}": write a number and a unit, e.g. 150ms, 2s, 1m30s`);
      const p: Record<string, string> = { service, operation, tags: tags.trim(), minDuration, maxDuration, ...range.params(), limit, sort: q.get('sort') ?? '' };
      setProblem(null);
      navigate(href('/search', p));
    } catch (err) {
      setProblem((err as Error).message);
    }
  };

  return (
    <form class="search-form card" onSubmit={submit} aria-label="Search traces">
      <label>
        Service
        <select value={service} onChange={(e) => (setService((e.target as HTMLSelectElement).value), setOperation(''))} name="service">
          <option value="">All services</option>
          {services.state === 'done' && services.value.map((s) => <option value={s}>{s}</option>)}
        </select>
      </label>
      <label>
        Operation
        <select value={operation} onChange={(e) => setOperation((e.target as HTMLSelectElement).value)} name="operation" disabled={!service}>
          <option value="">All operations</option>
          {operations.state === 'done' && operations.value.map((o) => <option value={o}>{o}</option>)}
        </select>
      </label>
      <label>
        Tags
        <input name="tags" placeholder="http.response.status_code=500 error=true" value={tags} onInput={(e) => setTags((e.target as HTMLInputElement).value)} />
      </label>
      <div class="row2">
        <label>
          Min duration
          <input name="minDuration" placeholder="e.g. 100ms" value={minDuration} onInput={(e) => setMin((e.target as HTMLInputElement).value)} />
        </label>
        <label>
          Max duration
          <input name="maxDuration" placeholder="e.g. 2s" value={maxDuration} onInput={(e) => setMax((e.target as HTMLInputElement).value)} />
        </label>
      </div>
      <TimeRangeFields range={range} />
      <label>
        Limit
        <input name="limit" type="number" min="1" max="1500" value={limit} onInput={(e) => setLimit((e.target as HTMLInputElement).value)} />
      </label>
      {problem && (
        <div class="form-error" role="alert">
          {problem}
        </div>
      )}
      <button type="submit" class="primary">
        Find traces
      </button>
      {services.state === 'error' && <ErrorState error={services.error} hint="The service list could not be loaded; searching all services still works." />}
    </form>
  );
}

function Results(props: { load: (signal: AbortSignal) => Promise<JaegerTrace[]>; query: URLSearchParams; fileMode?: boolean }) {
  const [result, reload] = useAsync(props.load, []);
  const sort = (props.query.get('sort') as SortKey) || 'recent';
  const [selected, setSelected] = useState<string[]>([]);
  const rows = useMemo(() => (result.state === 'done' ? result.value.map(summarise) : []), [result]);
  const sorted = useMemo(() => sortSummaries(rows, sort), [rows, sort]);

  if (result.state === 'loading') return <Loading what="traces" />;
  if (result.state === 'error')
    return <ErrorState error={result.error} retry={reload} hint="Check the search fields (durations like 150ms, tags as key=value) or widen the time range." />;
  if (!rows.length)
    return (
      <Empty title={props.fileMode ? 'No opened file' : 'No traces match'}>
        {props.fileMode ? (
          'Use “Open JSON” to load a Jaeger or OTLP JSON file.'
        ) : (
          <>Widen the time range, pick “All services”, or remove duration and tag filters. New to Spindle? Point an OpenTelemetry exporter at :4317 (gRPC) or :4318 (HTTP).</>
        )}
      </Empty>
    );
  const longest = Math.max(...rows.map((r) => r.duration), 1);
  const traceLink = (id: string) => (props.fileMode ? href(`/trace/${id}`, { source: 'file' }) : `/trace/${id}`);
  return (
    <>
      <div class="card">
        <Scatter points={rows.map((r) => ({ traceID: r.traceID, start: r.start, duration: r.duration, error: r.errors > 0 }))} onOpen={(id) => navigate(traceLink(id))} />
      </div>
      <div class="results-bar">
        <strong data-testid="result-count">
          {rows.length} trace{rows.length === 1 ? '' : 's'}
        </strong>
        <label>
          Sort
          <select
            value={sort}
            aria-label="Sort results"
            onChange={(e) => {
              const p = new URLSearchParams(props.query);
              p.set('sort', (e.target as HTMLSelectElement).value);
              navigate(`/search?${p}`, { replace: true });
            }}
          >
            <option value="recent">Most recent</option>
            <option value="longest">Longest first</option>
            <option value="spans">Most spans</option>
            <option value="errors">Most errors</option>
          </select>
        </label>
        <div class="spacer" />
        <button
          type="button"
          disabled={selected.length !== 2}
          onClick={() => navigate(href('/compare', { a: selected[0], b: selected[1] }))}
          title="Tick two traces to compare them"
        >
          Compare {selected.length}/2
        </button>
      </div>
      <ul class="result-list">
        {sorted.map((r) => (
          <li class="result card" data-testid="result" key={r.traceID}>
            <input
              type="checkbox"
              aria-label={`select ${r.traceID} for comparison`}
              checked={selected.includes(r.traceID)}
              onChange={(e) => {
                const on = (e.target as HTMLInputElement).checked;
                setSelected((s) => (on ? [...s.filter((x) => x !== r.traceID), r.traceID].slice(-2) : s.filter((x) => x !== r.traceID)));
              }}
            />
            <div class="result-main">
              <div class="result-head">
                <Link href={traceLink(r.traceID)} class="result-title">
                  <i class="dot" style={{ background: serviceColor(r.rootService) }} />
                  {r.title}
                </Link>
                <span class="mono muted">{r.traceID.slice(0, 8)}</span>
                <div class="spacer" />
                <span class="duration">{formatDuration(r.duration)}</span>
              </div>
              <div class="result-bar" aria-hidden="true">
                <div style={{ width: `${Math.max((r.duration / longest) * 100, 0.5)}%`, background: r.errors ? 'var(--error)' : 'var(--accent)' }} />
              </div>
              <div class="result-meta">
                <span>{r.spans} spans</span>
                {r.errors > 0 && <span class="error-badge">{r.errors} error{r.errors === 1 ? '' : 's'}</span>}
                {r.services.map(([s, n]) => (
                  <ServiceBadge service={s} count={n} />
                ))}
                <div class="spacer" />
                <span class="muted" title={formatTime(r.start)}>
                  {formatAgo(r.start)} · {formatTime(r.start)}
                </span>
              </div>
            </div>
          </li>
        ))}
      </ul>
    </>
  );
}
