// The trace as a flame chart: time left to right, depth top to bottom, one rectangle per
// span. Drawn on a canvas because 100k rectangles would be 100k DOM nodes; spans narrower
// than half a pixel are skipped (their ancestors already cover them).

import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { formatDuration, serviceColor } from '../model/format';
import type { Span, Trace } from '../model/trace';
import { cssVar } from './Chart';

const LEVEL = 20;

export function FlameGraph(props: {
  trace: Trace;
  selected: Span | null;
  onSelect: (s: Span) => void;
  critical: Set<string> | null;
  /** Spans a query matched (TraceQL's `highlight=`): outlined. */
  highlighted?: Set<string> | null;
}) {
  const { trace, selected } = props;
  const canvas = useRef<HTMLCanvasElement>(null);
  const [width, setWidth] = useState(800);
  const [hover, setHover] = useState<Span | null>(null);
  const byDepth = useMemo(() => {
    const levels: Span[][] = [];
    for (const s of trace.spans) (levels[s.depth] ??= []).push(s);
    return levels;
  }, [trace]);
  const height = byDepth.length * LEVEL;

  useEffect(() => {
    const el = canvas.current?.parentElement;
    if (!el) return;
    const ro = new ResizeObserver(() => setWidth(el.clientWidth));
    ro.observe(el);
    setWidth(el.clientWidth);
    return () => ro.disconnect();
  }, []);

  useEffect(() => {
    const c = canvas.current;
    if (!c) return;
    const dpr = window.devicePixelRatio || 1;
    c.width = width * dpr;
    c.height = height * dpr;
    const ctx = c.getContext('2d')!;
    ctx.scale(dpr, dpr);
    ctx.clearRect(0, 0, width, height);
    ctx.font = '11px system-ui, sans-serif';
    ctx.textBaseline = 'middle';
    const scale = width / Math.max(trace.duration, 1);
    const text = cssVar('--flame-text');
    const errorColor = cssVar('--error');
    const fg = cssVar('--fg');
    const match = cssVar('--match');
    byDepth.forEach((level, depth) => {
      const y = depth * LEVEL;
      for (const s of level) {
        const x = (s.startTime - trace.startTime) * scale;
        const w = s.duration * scale;
        if (w < 0.5) continue;
        ctx.globalAlpha = props.critical && !props.critical.has(s.spanID) ? 0.45 : 1;
        ctx.fillStyle = serviceColor(s.service);
        ctx.fillRect(x, y + 1, Math.max(w - 1, 0.5), LEVEL - 2);
        if (s.error) {
          ctx.fillStyle = errorColor;
          ctx.fillRect(x, y + LEVEL - 4, Math.max(w - 1, 0.5), 3);
        }
        if (props.highlighted?.has(s.spanID)) {
          ctx.globalAlpha = 1;
          ctx.strokeStyle = match;
          ctx.lineWidth = 3;
          ctx.strokeRect(x + 1.5, y + 2.5, Math.max(w - 3, 1), LEVEL - 5);
        }
        if (s === selected) {
          ctx.strokeStyle = fg;
          ctx.lineWidth = 2;
          ctx.strokeRect(x + 1, y + 2, Math.max(w - 2, 1), LEVEL - 4);
        }
        if (w > 40) {
          ctx.fillStyle = text;
          const label = `${s.operationName} ${formatDuration(s.duration)}`;
          ctx.save();
          ctx.beginPath();
          ctx.rect(x, y, w - 2, LEVEL);
          ctx.clip();
          ctx.fillText(label, x + 4, y + LEVEL / 2);
          ctx.restore();
        }
      }
    });
    ctx.globalAlpha = 1;
  }, [byDepth, width, height, selected, props.critical, props.highlighted, trace]);

  const spanAt = (e: MouseEvent): Span | null => {
    const rect = (e.target as HTMLCanvasElement).getBoundingClientRect();
    const level = byDepth[Math.floor((e.clientY - rect.top) / LEVEL)];
    if (!level) return null;
    const t = trace.startTime + ((e.clientX - rect.left) / width) * trace.duration;
    let best: Span | null = null;
    for (const s of level) if (t >= s.startTime && t <= s.startTime + s.duration && (!best || s.duration < best.duration)) best = s;
    return best;
  };

  return (
    <div class="flame">
      <div class="flame-status muted">{hover ? `${hover.service}: ${hover.operationName} — ${formatDuration(hover.duration)}` : 'Hover a span for its name, click to select it'}</div>
      <div class="flame-scroll">
        <canvas
          ref={canvas}
          style={{ width: `${width}px`, height: `${height}px` }}
          data-testid="flame-canvas"
          onMouseMove={(e) => setHover(spanAt(e))}
          onMouseLeave={() => setHover(null)}
          onClick={(e) => {
            const s = spanAt(e);
            if (s) props.onSelect(s);
          }}
        />
      </div>
    </div>
  );
}
