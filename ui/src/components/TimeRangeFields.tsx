// The time range of a search form: a "Last 1h" preset or a custom range, kept in the
// form's state until it is submitted; shared by the Jaeger-style and the TraceQL search.

import { useState } from 'preact/hooks';
import { LOOKBACKS, timeRange } from '../model/query';

export function toLocalInput(us: number): string {
  const d = new Date(us / 1000 - new Date().getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 19);
}

export interface TimeRangeState {
  lookback: string;
  setLookback: (v: string) => void;
  customStart: string;
  setCustomStart: (v: string) => void;
  customEnd: string;
  setCustomEnd: (v: string) => void;
  /** The URL parameters of the range (`lookback`, and `start`/`end` in µs when custom); throws when the custom range is backwards. */
  params: () => Record<string, string>;
}

export function useTimeRange(q: URLSearchParams): TimeRangeState {
  const [lookback, setLookback] = useState(q.get('lookback') ?? '1h');
  const [customStart, setCustomStart] = useState(toLocalInput(Number(q.get('start')) || Date.now() * 1000 - 3600e6));
  const [customEnd, setCustomEnd] = useState(toLocalInput(Number(q.get('end')) || Date.now() * 1000));
  return {
    lookback,
    setLookback,
    customStart,
    setCustomStart,
    customEnd,
    setCustomEnd,
    params: (): Record<string, string> => {
      if (lookback !== 'custom') return { lookback };
      const [s, en] = [Date.parse(customStart) * 1000, Date.parse(customEnd) * 1000];
      timeRange('custom', String(s), String(en));
      return { lookback, start: String(s), end: String(en) };
    },
  };
}

export function TimeRangeFields(props: { range: TimeRangeState }) {
  const r = props.range;
  return (
    <>
      <label>
        Time range
        <select name="lookback" value={r.lookback} onChange={(e) => r.setLookback((e.target as HTMLSelectElement).value)}>
          {Object.keys(LOOKBACKS).map((k) => (
            <option value={k}>Last {k}</option>
          ))}
          <option value="custom">Custom range…</option>
        </select>
      </label>
      {r.lookback === 'custom' && (
        <div class="row2">
          <label>
            From
            <input type="datetime-local" step="1" value={r.customStart} onInput={(e) => r.setCustomStart((e.target as HTMLInputElement).value)} />
          </label>
          <label>
            To
            <input type="datetime-local" step="1" value={r.customEnd} onInput={(e) => r.setCustomEnd((e.target as HTMLInputElement).value)} />
          </label>
        </div>
      )}
    </>
  );
}
