// Display helpers: durations, times, service colours.

/** A duration in µs with a unit that keeps 3 significant digits: 950µs, 12.3ms, 4.56s. */
export function formatDuration(us: number): string {
  if (!Number.isFinite(us)) return '–';
  const abs = Math.abs(us);
  const fmt = (v: number, unit: string) => `${Number(v.toPrecision(3))}${unit}`;
  if (abs < 1000) return fmt(us, 'µs');
  if (abs < 1e6) return fmt(us / 1e3, 'ms');
  if (abs < 60e6) return fmt(us / 1e6, 's');
  const m = Math.floor(abs / 60e6);
  const s = Math.round((abs - m * 60e6) / 1e6);
  return `${us < 0 ? '-' : ''}${m}m${s ? `${s}s` : ''}`;
}

export function formatTime(usEpoch: number): string {
  const d = new Date(usEpoch / 1000);
  const pad = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

export function formatAgo(usEpoch: number, nowMs = Date.now()): string {
  const s = Math.round((nowMs - usEpoch / 1000) / 1000);
  if (s < 60) return `${Math.max(s, 0)}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86400) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
}

export function formatPercent(ratio: number): string {
  return Number.isFinite(ratio) ? `${(ratio * 100).toFixed(ratio > 0 && ratio < 0.01 ? 2 : 1)}%` : '–';
}

/**
 * Parses a Go-style duration as the API takes it (`1.5ms`, `300us`, `2s`, `1h30m`) into
 * µs; null when malformed. The UI validates before sending so the user sees the mistake.
 */
export function parseDuration(text: string): number | null {
  const units: Record<string, number> = { ns: 1e-3, us: 1, 'µs': 1, ms: 1e3, s: 1e6, m: 60e6, h: 3600e6 };
  const t = text.trim();
  if (!t) return null;
  const re = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)/gy;
  let total = 0;
  let pos = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(t))) {
    total += parseFloat(m[1]) * units[m[2]];
    pos = re.lastIndex;
  }
  return pos === t.length ? total : null;
}

// Twelve hues spread for contrast; a service keeps its colour across pages and reloads.
export const PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#b07aa1', '#76b7b2', '#edc948', '#ff9da7', '#9c755f', '#7f6dbf', '#86bcb6', '#8cd17d', '#a0cbe8'];

export function serviceColor(service: string): string {
  let h = 2166136261;
  for (let i = 0; i < service.length; i++) h = Math.imul(h ^ service.charCodeAt(i), 16777619);
  return PALETTE[(h >>> 0) % PALETTE.length];
}
