// uPlot wrapped for Preact: sized to its container, recreated when data, options or the
// theme change (uPlot reads colours once, at creation).

import { useEffect, useRef, useState } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

export function cssVar(name: string): string {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || '#888';
}

function useThemeVersion(): number {
  const [v, setV] = useState(0);
  useEffect(() => {
    const mo = new MutationObserver(() => setV((x) => x + 1));
    mo.observe(document.documentElement, { attributes: true, attributeFilter: ['data-theme'] });
    return () => mo.disconnect();
  }, []);
  return v;
}

export interface ChartProps {
  data: uPlot.AlignedData;
  /** Options without width/height/data; called at creation so colours follow the theme. */
  options: () => Omit<uPlot.Options, 'width' | 'height'>;
  height: number;
  /** Called with the created plot, e.g. to attach click handlers. */
  onCreate?: (u: uPlot) => void;
  class?: string;
  label?: string;
}

export function Chart(props: ChartProps) {
  const box = useRef<HTMLDivElement>(null);
  const theme = useThemeVersion();
  // Recreated on new data, theme or height only: options are a fresh closure each render.
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const u = new uPlot({ ...props.options(), width: Math.max(el.clientWidth, 200), height: props.height }, props.data, el);
    props.onCreate?.(u);
    const ro = new ResizeObserver(() => u.setSize({ width: Math.max(el.clientWidth, 200), height: props.height }));
    ro.observe(el);
    return () => {
      ro.disconnect();
      u.destroy();
    };
  }, [props.data, theme, props.height]);
  return <div ref={box} class={`chart ${props.class ?? ''}`} role="img" aria-label={props.label} />;
}

/** Axis styling shared by every chart. */
export function axes(yLabel: string, yFormat: (v: number) => string): uPlot.Axis[] {
  const stroke = cssVar('--fg-muted');
  const grid = { stroke: cssVar('--grid'), width: 1 };
  return [
    { stroke, grid, ticks: grid },
    { stroke, grid, ticks: grid, label: yLabel, size: 60, values: (_u, vals) => vals.map(yFormat) },
  ];
}
