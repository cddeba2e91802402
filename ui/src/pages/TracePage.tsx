// One trace: header, timeline / flame graph / statistics, span detail, find, downloads.

import { useEffect, useMemo, useState } from 'preact/hooks';
import * as api from '../api/client';
import { Empty, ErrorState, Link, Loading, ServiceBadge, downloadJson, useAsync } from '../components/common';
import { FlameGraph } from '../components/FlameGraph';
import { SpanDetail } from '../components/SpanDetail';
import { StatsTable } from '../components/StatsTable';
import { Timeline } from '../components/Timeline';
import { localTrace } from '../local-traces';
import { criticalPath, segmentsBySpan } from '../model/critical-path';
import { formatDuration, formatTime } from '../model/format';
import { jaegerToOtlp } from '../model/formats';
import { collapseBelow, findSpans, highlightedSpans, revealSpan } from '../model/layout';
import { type JaegerTrace, type Span, buildTrace, rootSpan, toJaegerTrace } from '../model/trace';
import { href, navigate, setQuery } from '../router';

declare global {
  interface Window {
    /** Read by the browser benchmark: how long the last trace took to render. */
    __spindleRender?: { traceID: string; spans: number; buildMs: number; renderMs: number };
  }
}

export function TracePage(props: { traceId: string; query: URLSearchParams }) {
  const fromFile = props.query.get('source') === 'file';
  const [raw, reload] = useAsync<{ trace: JaegerTrace; receivedAt: number }>(async (signal) => {
    if (fromFile) {
      const t = localTrace(props.traceId);
      if (!t) throw new Error('this trace came from a file that is no longer open; use “Open JSON” to open it again');
      return { trace: t, receivedAt: performance.now() };
    }
    const trace = await api.getTrace(props.traceId, signal);
    return { trace, receivedAt: performance.now() };
  }, [props.traceId, fromFile]);
  if (raw.state === 'loading') return <Loading what={`trace ${props.traceId}`} />;
  if (raw.state === 'error') {
    const notFound = raw.error instanceof api.ApiError && raw.error.status === 404;
    return (
      <ErrorState
        error={raw.error}
        retry={notFound ? undefined : reload}
        hint={notFound ? <>The trace may have aged out of retention, or its spans have not arrived yet. <Link href="/search">Search recent traces</Link>.</> : undefined}
      />
    );
  }
  return <TraceView raw={raw.value.trace} receivedAt={raw.value.receivedAt} query={props.query} fromFile={fromFile} />;
}

type Tab = 'timeline' | 'flame' | 'stats';

function TraceView(props: { raw: JaegerTrace; receivedAt: number; query: URLSearchParams; fromFile: boolean }) {
  const q = props.query;
  const built = useMemo(() => {
    const t0 = performance.now();
    const trace = buildTrace(props.raw);
    const path = criticalPath(trace);
    return { trace, path, segments: segmentsBySpan(path), buildMs: performance.now() - t0 };
  }, [props.raw]);
  const { trace, path } = built;
  // Big traces open collapsed below depth 6 so the shape shows first; small ones fully open.
  const [collapsed, setCollapsed] = useState<Set<string>>(() => (trace.spans.length > 5000 ? collapseBelow(trace, 6) : new Set()));
  const [showCritical, setShowCritical] = useState(q.get('critical') !== '0');
  const [findText, setFindText] = useState(q.get('find') ?? '');
  const [matchIdx, setMatchIdx] = useState(0);
  const [scrollTo, setScrollTo] = useState<Span | null>(null);
  const tab = (q.get('view') as Tab) || 'timeline';
  const selected = (q.get('span') && trace.byId.get(q.get('span')!)) || null;
  // The spans a TraceQL query matched (`highlight=<id>,<id>` from its results), marked in the timeline.
  const highlightParam = q.get('highlight');
  const highlighted = useMemo(() => highlightedSpans(trace, highlightParam), [trace, highlightParam]);
  const highlightSet = useMemo(() => (highlighted.length ? new Set(highlighted.map((s) => s.spanID)) : null), [highlighted]);
  const [highlightIdx, setHighlightIdx] = useState(-1);

  // Once per trace (not per selection change): the first paint and the deep-linked span.
  useEffect(() => {
    // Measure to the frame after the first paint of the rows: what the user waits for.
    requestAnimationFrame(() =>
      setTimeout(() => {
        window.__spindleRender = { traceID: trace.traceID, spans: trace.spans.length, buildMs: built.buildMs, renderMs: performance.now() - props.receivedAt };
      }, 0),
    );
    // A deep link to a span opens its ancestors and scrolls to it; so does one to matched spans.
    if (selected) {
      setCollapsed((c) => revealSpan(c, selected));
      setScrollTo(selected);
    }
    if (highlighted.length) {
      setCollapsed((c) => highlighted.reduce((acc, s) => revealSpan(acc, s), c));
      if (!selected) setScrollTo(highlighted[0]);
    }
  }, [trace]);

  useEffect(() => {
    // `/` jumps to "find in trace" from anywhere on the page, as in most code viewers.
    const onKey = (e: KeyboardEvent) => {
      const target = e.target as HTMLElement;
      if (e.key !== '/' || target.closest('input, textarea, select')) return;
      e.preventDefault();
      document.querySelector<HTMLInputElement>('input[aria-label="Find in trace"]')?.focus();
    };
    addEventListener('keydown', onKey);
    return () => removeEventListener('keydown', onKey);
  }, []);

  const matches = useMemo(() => findSpans(trace, findText), [trace, findText]);
  const matchSet = useMemo(() => (findText.trim() ? new Set(matches.map((m) => m.spanID)) : null), [matches, findText]);

  const select = (s: Span | null) => setQuery({ span: s?.spanID });
  const jumpToMatch = (i: number) => {
    if (!matches.length) return;
    const k = ((i % matches.length) + matches.length) % matches.length;
    setMatchIdx(k);
    const s = matches[k];
    setCollapsed((c) => revealSpan(c, s));
    select(s);
    setScrollTo(s);
  };
  const jumpToHighlighted = (i: number) => {
    if (!highlighted.length) return;
    const k = ((i % highlighted.length) + highlighted.length) % highlighted.length;
    setHighlightIdx(k);
    const s = highlighted[k];
    setCollapsed((c) => revealSpan(c, s));
    select(s);
    setScrollTo(s);
  };
  const toggle = (s: Span) =>
    setCollapsed((c) => {
      const n = new Set(c);
      if (n.has(s.spanID)) n.delete(s.spanID);
      else n.add(s.spanID);
      return n;
    });

  const root = rootSpan(trace);
  const jaeger = () => toJaegerTrace(trace);
  const idForLinks = props.fromFile ? { source: 'file' } : {};

  return (
    <div class="trace-page">
      <header class="trace-header card">
        <div class="title-row">
          <h1 data-testid="trace-title">{root ? `${root.service}: ${root.operationName}` : trace.traceID}</h1>
          <span class="mono muted">{trace.traceID}</span>
          <div class="spacer" />
          <button type="button" onClick={() => downloadJson(`trace-${trace.traceID}.jaeger.json`, { data: [jaeger()] })}>
            ⤓ Jaeger JSON
          </button>
          <button type="button" onClick={() => downloadJson(`trace-${trace.traceID}.otlp.json`, jaegerToOtlp(jaeger()))}>
            ⤓ OTLP JSON
          </button>
          <CompareWith traceID={trace.traceID} />
        </div>
        <dl class="trace-facts">
          <div>
            <dt>Start</dt>
            <dd>{formatTime(trace.startTime)}</dd>
          </div>
          <div>
            <dt>Duration</dt>
            <dd data-testid="trace-duration">{formatDuration(trace.duration)}</dd>
          </div>
          <div>
            <dt>Services</dt>
            <dd>{trace.services.length}</dd>
          </div>
          <div>
            <dt>Depth</dt>
            <dd>{trace.depth}</dd>
          </div>
          <div>
            <dt>Spans</dt>
            <dd data-testid="trace-spans">{trace.spans.length}</dd>
          </div>
          <div>
            <dt>Errors</dt>
            <dd class={trace.errorCount ? 'error-text' : undefined}>{trace.errorCount}</dd>
          </div>
          <div class="svc-list">
            {trace.services.map((s) => (
              <ServiceBadge service={s} href={props.fromFile ? undefined : `/service/${encodeURIComponent(s)}`} />
            ))}
          </div>
        </dl>
        {trace.warnings.length > 0 && <div class="warn-text">{trace.warnings.join('; ')}</div>}
      </header>
      <div class="trace-toolbar">
        <div class="tabs" role="tablist">
          {(
            [
              ['timeline', 'Timeline'],
              ['flame', 'Flame graph'],
              ['stats', 'Statistics'],
            ] as [Tab, string][]
          ).map(([t, label]) => (
            <button type="button" role="tab" aria-selected={tab === t} class={tab === t ? 'active' : ''} onClick={() => setQuery({ view: t === 'timeline' ? undefined : t })}>
              {label}
            </button>
          ))}
        </div>
        <label class="check">
          <input
            type="checkbox"
            checked={showCritical}
            onChange={(e) => {
              const on = (e.target as HTMLInputElement).checked;
              setShowCritical(on);
              setQuery({ critical: on ? undefined : '0' });
            }}
          />
          Critical path <span class="crit-swatch" /> <span class="muted">({path.spanIds.size} spans)</span>
        </label>
        {highlightParam && (
          <span class="matched-chip" data-testid="highlight-count" title="Spans the TraceQL query matched, marked in the timeline">
            <i class="match-swatch" />
            {highlighted.length} matched
            <button type="button" class="small" disabled={!highlighted.length} onClick={() => jumpToHighlighted(highlightIdx - 1)} aria-label="previous matched span">
              ↑
            </button>
            <button type="button" class="small" disabled={!highlighted.length} onClick={() => jumpToHighlighted(highlightIdx + 1)} aria-label="next matched span">
              ↓
            </button>
            <button type="button" class="small" onClick={() => setQuery({ highlight: undefined })} aria-label="clear the matched spans" title="Clear">
              ×
            </button>
          </span>
        )}
        <span class="muted keys" title="Click the timeline first">
          ↑↓ move · ←→ collapse/expand · Enter toggle · / find
        </span>
        <div class="spacer" />
        <form
          class="find"
          onSubmit={(e) => {
            e.preventDefault();
            jumpToMatch(matchIdx + 1);
          }}
        >
          <input
            type="search"
            placeholder="Find in trace (name, tag=value, id)"
            value={findText}
            aria-label="Find in trace"
            onInput={(e) => {
              const v = (e.target as HTMLInputElement).value;
              setFindText(v);
              setMatchIdx(-1);
              setQuery({ find: v });
            }}
          />
          {findText.trim() && (
            <span class="muted" data-testid="find-count">
              {matches.length ? `${matchIdx >= 0 ? matchIdx + 1 : '–'} of ${matches.length}` : 'no match'}
            </span>
          )}
          <button type="button" class="small" disabled={!matches.length} onClick={() => jumpToMatch(matchIdx - 1)} aria-label="previous match">
            ↑
          </button>
          <button type="submit" class="small" disabled={!matches.length} aria-label="next match">
            ↓
          </button>
        </form>
      </div>
      <div class={`trace-body${selected ? ' with-detail' : ''}`}>
        <div class="trace-main card">
          {tab === 'timeline' &&
            (trace.spans.length ? (
              <Timeline
                trace={trace}
                collapsed={collapsed}
                onToggle={toggle}
                onCollapseAll={() => setCollapsed(collapseBelow(trace, 1))}
                onExpandAll={() => setCollapsed(new Set())}
                selected={selected}
                onSelect={select}
                critical={showCritical ? built.segments : null}
                matches={matchSet}
                highlighted={highlightSet}
                scrollTo={scrollTo}
              />
            ) : (
              <Empty title="This trace has no spans" />
            ))}
          {tab === 'flame' && <FlameGraph trace={trace} selected={selected} onSelect={select} critical={showCritical ? path.spanIds : null} highlighted={highlightSet} />}
          {tab === 'stats' && (
            <StatsTable
              trace={trace}
              onFind={(text) => {
                setFindText(text);
                navigate(href(location.pathname, { ...idForLinks, find: text }), { replace: true });
              }}
            />
          )}
        </div>
        {selected && <SpanDetail span={selected} trace={trace} onSelect={select} onClose={() => select(null)} />}
      </div>
    </div>
  );
}

function CompareWith(props: { traceID: string }) {
  const [other, setOther] = useState('');
  return (
    <form
      class="compare-with"
      onSubmit={(e) => {
        e.preventDefault();
        navigate(href('/compare', { a: props.traceID, b: other.trim() || undefined }));
      }}
    >
      <input placeholder="other trace id" value={other} onInput={(e) => setOther((e.target as HTMLInputElement).value)} aria-label="Trace to compare with" />
      <button type="submit">Compare</button>
    </form>
  );
}

