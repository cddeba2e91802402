// The span timeline: a collapsible tree on the left, bars on a time axis on the right.
// Only the rows in view (plus a margin) are in the DOM, so a 100k-span trace scrolls as
// smoothly as a 10-span one; rows have a fixed height so the window is a division.

import { useEffect, useLayoutEffect, useMemo, useRef, useState } from 'preact/hooks';
import type { PathSegment } from '../model/critical-path';
import { formatDuration, serviceColor } from '../model/format';
import { barGeometry, timeTicks, visibleRows } from '../model/layout';
import type { Span, Trace } from '../model/trace';

export const ROW_HEIGHT = 24;
const OVERSCAN = 12;
const INDENT = 14;
/** Deeper levels stop indenting so names stay readable; the depth still shows on hover. */
const MAX_INDENT_LEVELS = 24;

export interface TimelineProps {
  trace: Trace;
  collapsed: Set<string>;
  onToggle: (span: Span) => void;
  onCollapseAll: () => void;
  onExpandAll: () => void;
  selected: Span | null;
  onSelect: (span: Span | null) => void;
  critical: Map<string, PathSegment[]> | null;
  matches: Set<string> | null;
  /** Spans to mark as matched by a query (TraceQL's spansets), by span id. */
  highlighted?: Set<string> | null;
  /** When set, scrolls this span's row into view (after find or a deep link). */
  scrollTo: Span | null;
}

export function Timeline(props: TimelineProps) {
  const { trace, collapsed, selected, critical, matches } = props;
  const rows = useMemo(() => visibleRows(trace, collapsed), [trace, collapsed]);
  const rowIndex = useMemo(() => {
    const m = new Map<Span, number>();
    rows.forEach((r, i) => m.set(r, i));
    return m;
  }, [rows]);
  const scroller = useRef<HTMLDivElement>(null);
  const [scrollTop, setScrollTop] = useState(0);
  const [height, setHeight] = useState(600);

  useLayoutEffect(() => {
    const el = scroller.current;
    if (!el) return;
    const ro = new ResizeObserver(() => setHeight(el.clientHeight));
    ro.observe(el);
    setHeight(el.clientHeight);
    return () => ro.disconnect();
  }, []);

  const ensureVisible = (span: Span) => {
    const el = scroller.current;
    const i = rowIndex.get(span);
    if (!el || i === undefined) return;
    const top = i * ROW_HEIGHT;
    if (top < el.scrollTop) el.scrollTop = top;
    else if (top + ROW_HEIGHT > el.scrollTop + el.clientHeight) el.scrollTop = top + ROW_HEIGHT - el.clientHeight;
  };

  useEffect(() => {
    if (!props.scrollTo) return;
    const el = scroller.current;
    const i = rowIndex.get(props.scrollTo);
    // Centre a jumped-to span so its context shows above and below.
    if (el && i !== undefined) el.scrollTop = Math.max(0, i * ROW_HEIGHT - el.clientHeight / 2);
  }, [props.scrollTo, rowIndex]);

  const first = Math.max(0, Math.floor(scrollTop / ROW_HEIGHT) - OVERSCAN);
  const last = Math.min(rows.length, Math.ceil((scrollTop + height) / ROW_HEIGHT) + OVERSCAN);
  const ticks = useMemo(() => timeTicks(trace.duration), [trace.duration]);

  const onKey = (e: KeyboardEvent) => {
    if (!rows.length) return;
    const cur = selected && rowIndex.has(selected) ? rowIndex.get(selected)! : -1;
    const select = (i: number) => {
      const s = rows[Math.max(0, Math.min(rows.length - 1, i))];
      props.onSelect(s);
      ensureVisible(s);
    };
    const page = Math.max(1, Math.floor(height / ROW_HEIGHT) - 1);
    switch (e.key) {
      case 'ArrowDown':
      case 'j':
        select(cur + 1);
        break;
      case 'ArrowUp':
      case 'k':
        select(cur < 0 ? 0 : cur - 1);
        break;
      case 'PageDown':
        select(cur + page);
        break;
      case 'PageUp':
        select(cur - page);
        break;
      case 'Home':
        select(0);
        break;
      case 'End':
        select(rows.length - 1);
        break;
      case 'ArrowRight':
      case 'l':
        if (!selected) select(0);
        else if (collapsed.has(selected.spanID)) props.onToggle(selected);
        else if (selected.children.length) select(cur + 1);
        break;
      case 'ArrowLeft':
      case 'h':
        if (!selected) select(0);
        else if (selected.children.length && !collapsed.has(selected.spanID)) props.onToggle(selected);
        else if (selected.parent) {
          props.onSelect(selected.parent);
          ensureVisible(selected.parent);
        }
        break;
      case 'Enter':
      case ' ':
        if (selected?.children.length) props.onToggle(selected);
        break;
      case 'Escape':
        props.onSelect(null);
        break;
      default:
        return;
    }
    e.preventDefault();
  };

  const visible = rows.slice(first, last);
  return (
    <div class="timeline">
      <div class="tl-header">
        <div class="tl-name-col">
          <span>Service &amp; operation</span>
          <div class="spacer" />
          <button type="button" class="small" onClick={props.onExpandAll} title="Expand all">
            ⊞
          </button>
          <button type="button" class="small" onClick={props.onCollapseAll} title="Collapse all">
            ⊟
          </button>
        </div>
        <div class="tl-axis">
          {ticks.map((t) => (
            <span class="tick" style={{ left: `${(t / Math.max(trace.duration, 1)) * 100}%` }}>
              {formatDuration(t)}
            </span>
          ))}
        </div>
      </div>
      <div
        class="tl-body"
        ref={scroller}
        tabIndex={0}
        role="tree"
        aria-label="Spans; arrow keys move, left/right collapse and expand"
        onScroll={(e) => setScrollTop((e.target as HTMLDivElement).scrollTop)}
        onKeyDown={onKey}
        data-testid="timeline"
      >
        <div class="tl-inner" style={{ height: `${rows.length * ROW_HEIGHT}px` }}>
          <div class="tl-grid" aria-hidden="true">
            {ticks.map((t) => (
              <i style={{ left: `${(t / Math.max(trace.duration, 1)) * 100}%` }} />
            ))}
          </div>
          {visible.map((s, k) => (
            <Row
              key={s.spanID + s.index}
              span={s}
              top={(first + k) * ROW_HEIGHT}
              trace={trace}
              collapsed={collapsed.has(s.spanID)}
              selected={selected === s}
              dimmed={matches !== null && !matches.has(s.spanID)}
              matched={!!props.highlighted?.has(s.spanID)}
              segments={critical?.get(s.spanID)}
              onToggle={props.onToggle}
              onSelect={props.onSelect}
            />
          ))}
        </div>
      </div>
    </div>
  );
}

interface RowProps {
  span: Span;
  top: number;
  trace: Trace;
  collapsed: boolean;
  selected: boolean;
  dimmed: boolean;
  matched: boolean;
  segments?: PathSegment[];
  onToggle: (s: Span) => void;
  onSelect: (s: Span) => void;
}

function Row({ span: s, top, trace, collapsed, selected, dimmed, matched, segments, onToggle, onSelect }: RowProps) {
  const bar = barGeometry(s.startTime, s.duration, trace.startTime, trace.endTime);
  const color = serviceColor(s.service);
  const labelRight = bar.left + bar.width < 0.75;
  const indent = Math.min(s.depth, MAX_INDENT_LEVELS) * INDENT;
  return (
    <div
      class={`tl-row${selected ? ' selected' : ''}${dimmed ? ' dimmed' : ''}${matched ? ' matched' : ''}${s.error ? ' has-error' : ''}`}
      style={{ top: `${top}px` }}
      role="treeitem"
      aria-selected={selected}
      aria-expanded={s.children.length ? !collapsed : undefined}
      aria-level={s.depth + 1}
      data-span-id={s.spanID}
      data-matched={matched ? 'true' : undefined}
      onClick={() => onSelect(s)}
    >
      <div class="tl-name-col" style={{ paddingLeft: `${indent + 4}px` }} title={`${s.service}: ${s.operationName} (depth ${s.depth})`}>
        {s.children.length ? (
          <button
            type="button"
            class="toggle"
            aria-label={collapsed ? 'expand' : 'collapse'}
            onClick={(e) => {
              e.stopPropagation();
              onToggle(s);
            }}
          >
            {collapsed ? '▸' : '▾'}
          </button>
        ) : (
          <span class="toggle-space" />
        )}
        <i class="svc-stripe" style={{ background: color }} />
        {s.error && (
          <span class="err-icon" title="error">
            !
          </span>
        )}
        <span class="svc-name">{s.service}</span>
        <span class="op-name">{s.operationName}</span>
        {collapsed && <span class="child-count">+{countDescendants(s)}</span>}
      </div>
      <div class="tl-bar-col">
        <div class="bar" style={{ left: `${bar.left * 100}%`, width: `max(1px, ${bar.width * 100}%)`, background: color }} />
        {segments?.map((seg) => {
          // The highlight covers only the span's own bar; waiting past its end is not drawn.
          const from = Math.max(seg.start, s.startTime);
          const to = Math.min(seg.end, s.startTime + s.duration);
          if (to <= from) return null;
          const g = barGeometry(from, to - from, trace.startTime, trace.endTime);
          return <div class="crit" style={{ left: `${g.left * 100}%`, width: `max(1px, ${g.width * 100}%)` }} />;
        })}
        {s.logs.map((l) => (
          <i class="event-tick" style={{ left: `${barGeometry(l.timestamp, 0, trace.startTime, trace.endTime).left * 100}%` }} />
        ))}
        <span class={`bar-label${labelRight ? '' : ' left'}`} style={labelRight ? { left: `calc(${(bar.left + bar.width) * 100}% + 4px)` } : { right: `calc(${(1 - bar.left) * 100}% + 4px)` }}>
          {formatDuration(s.duration)}
        </span>
      </div>
    </div>
  );
}

function countDescendants(s: Span): number {
  let n = 0;
  const stack = [...s.children];
  while (stack.length) {
    const c = stack.pop()!;
    n++;
    for (const g of c.children) stack.push(g);
  }
  return n;
}
