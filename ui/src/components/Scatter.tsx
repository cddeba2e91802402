// Trace duration over time, one dot per trace (red for traces with errors); clicking a
// dot opens the trace. Ids travel in a side array because uPlot holds numbers only.

import { useMemo } from 'preact/hooks';
import type uPlot from 'uplot';
import { formatDuration } from '../model/format';
import { Chart, axes, cssVar } from './Chart';

export interface ScatterPoint {
  traceID: string;
  start: number; // µs epoch
  duration: number; // µs
  error: boolean;
}

export function Scatter(props: { points: ScatterPoint[]; onOpen: (traceID: string) => void }) {
  const sorted = useMemo(() => props.points.slice().sort((a, b) => a.start - b.start), [props.points]);
  const data = useMemo<uPlot.AlignedData>(
    () => [sorted.map((p) => p.start / 1e6), sorted.map((p) => (p.error ? null : p.duration)), sorted.map((p) => (p.error ? p.duration : null))],
    [sorted],
  );
  const dots = (color: string): uPlot.Series => ({
    stroke: color,
    fill: color + '99',
    paths: () => null,
    points: { show: true, size: 8, stroke: color, fill: color + '99' },
  });
  return (
    <Chart
      class="scatter"
      label="Trace duration over time"
      height={170}
      data={data}
      options={() => ({
        legend: { show: false },
        cursor: { drag: { x: false, y: false }, points: { show: false } },
        scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, max * 1.1 || 1] } },
        axes: axes('duration', formatDuration),
        series: [{}, { ...dots(cssVar('--accent')), label: 'ok' }, { ...dots(cssVar('--error')), label: 'error' }],
      })}
      onCreate={(u) => {
        u.over.style.cursor = 'pointer';
        u.over.addEventListener('click', () => {
          const { left, top } = u.cursor;
          if (left === undefined || top === undefined || left < 0) return;
          let best = -1;
          let bestD = 12 * 12; // px²: a click must land near a dot
          sorted.forEach((p, i) => {
            const dx = u.valToPos(p.start / 1e6, 'x') - left;
            const dy = u.valToPos(p.duration, 'y') - top;
            const d = dx * dx + dy * dy;
            if (d < bestD) {
              bestD = d;
              best = i;
            }
          });
          if (best >= 0) props.onOpen(sorted[best].traceID);
        });
      }}
    />
  );
}
