// Per service/operation statistics of one trace, sortable by any column.

import { useMemo, useState } from 'preact/hooks';
import { formatDuration, serviceColor } from '../model/format';
import { type OperationStats, operationStats } from '../model/stats';
import type { Trace } from '../model/trace';

type Col = keyof Pick<OperationStats, 'service' | 'operation' | 'count' | 'errors' | 'total' | 'self' | 'avg' | 'min' | 'max'>;
const COLS: [Col, string][] = [
  ['service', 'Service'],
  ['operation', 'Operation'],
  ['count', 'Count'],
  ['errors', 'Errors'],
  ['total', 'Total'],
  ['self', 'Self time'],
  ['avg', 'Avg'],
  ['min', 'Min'],
  ['max', 'Max'],
];

export function StatsTable(props: { trace: Trace; onFind: (text: string) => void }) {
  const stats = useMemo(() => operationStats(props.trace), [props.trace]);
  const [sort, setSort] = useState<{ col: Col; desc: boolean }>({ col: 'total', desc: true });
  const rows = useMemo(() => {
    const dir = sort.desc ? -1 : 1;
    return stats.slice().sort((a, b) => {
      const x = a[sort.col];
      const y = b[sort.col];
      return (typeof x === 'string' ? x.localeCompare(y as string) : (x as number) - (y as number)) * dir;
    });
  }, [stats, sort]);
  const traceTotal = Math.max(props.trace.duration, 1);
  return (
    <div class="table-wrap">
      <table class="grid" data-testid="stats-table">
        <thead>
          <tr>
            {COLS.map(([c, label]) => (
              <th
                class={typeof stats[0]?.[c] === 'number' ? 'num' : undefined}
                aria-sort={sort.col === c ? (sort.desc ? 'descending' : 'ascending') : 'none'}
                onClick={() => setSort({ col: c, desc: sort.col === c ? !sort.desc : true })}
              >
                {label}
                {sort.col === c ? (sort.desc ? ' ▾' : ' ▴') : ''}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => (
            <tr onClick={() => props.onFind(r.operation)} title="Find these spans in the timeline">
              <td>
                <i class="dot" style={{ background: serviceColor(r.service) }} /> {r.service}
              </td>
              <td>{r.operation}</td>
              <td class="num">{r.count}</td>
              <td class={`num${r.errors ? ' error-text' : ''}`}>{r.errors}</td>
              <td class="num">{formatDuration(r.total)}</td>
              <td class="num">
                {formatDuration(r.self)} <span class="muted">({((r.self / traceTotal) * 100).toFixed(1)}%)</span>
              </td>
              <td class="num">{formatDuration(r.avg)}</td>
              <td class="num">{formatDuration(r.min)}</td>
              <td class="num">{formatDuration(r.max)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
