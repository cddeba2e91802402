// Grafana Tempo's HTTP API as Spindle serves it: TraceQL search (`/api/search`), tag
// names and values for the editor's completion (`/api/v2/search/tags`,
// `/api/v2/search/tag/{tag}/values`) and TraceQL metrics (`/api/metrics/query_range`).
// Requests go through `getJson`, so they carry the tenant and handle a 401 as every other
// request of the UI. Answers are normalised here: int64s arrive as strings, times become
// µs epoch numbers as in the rest of the UI, absent fields get their zero.

import type { TagValue } from '../model/traceql';
import { ApiError, getJson } from './client';

export type { TagValue };

export interface TempoAnyValue {
  stringValue?: string;
  intValue?: string | number;
  doubleValue?: number;
  boolValue?: boolean;
}

export interface TempoKeyValue {
  key: string;
  value: TempoAnyValue;
}

export interface TempoSpan {
  spanID: string;
  name?: string;
  startTimeUnixNano?: string;
  durationNanos?: string;
  attributes?: TempoKeyValue[];
}

export interface TempoSpanSet {
  spans?: TempoSpan[];
  matched?: number;
  attributes?: TempoKeyValue[];
}

export interface TempoTrace {
  traceID: string;
  rootServiceName?: string;
  rootTraceName?: string;
  startTimeUnixNano?: string;
  durationMs?: number;
  spanSets?: TempoSpanSet[];
  spanSet?: TempoSpanSet;
}

export interface TempoSearchResponse {
  traces?: TempoTrace[] | null;
  metrics?: { inspectedTraces?: number; inspectedBytes?: string; inspectedSpans?: string; totalBlocks?: number };
}

export interface TempoTagsResponse {
  scopes?: { name: string; tags?: string[] | null }[] | null;
}

export interface TempoTagValuesResponse {
  tagValues?: TagValue[] | null;
}

export interface TempoSample {
  timestampMs: string;
  value: number;
}

export interface TempoSeries {
  labels?: TempoKeyValue[] | null;
  promLabels?: string;
  samples?: TempoSample[] | null;
}

export interface TempoQueryRangeResponse {
  series?: TempoSeries[] | null;
  /** `PARTIAL` (with `message`) when the answer is incomplete, e.g. at the series limit. */
  status?: string;
  message?: string;
}

/** A matched span, in the UI's units. */
export interface MatchedSpan {
  spanID: string;
  name: string;
  /** From the span's `service.name` attribute, when the answer has it. */
  service: string | null;
  /** µs epoch */
  start: number;
  /** µs */
  duration: number;
  attributes: [string, string][];
}

export interface MatchedTrace {
  traceID: string;
  rootService: string | null;
  rootName: string | null;
  /** µs epoch */
  start: number;
  /** µs */
  duration: number;
  spanSets: { spans: MatchedSpan[]; matched: number }[];
}

export interface SearchAnswer {
  traces: MatchedTrace[];
  inspectedTraces: number | null;
  inspectedBytes: number | null;
}

export interface Series {
  /** `{resource.service.name="api"}`; `{}` for a series without labels. */
  label: string;
  labels: [string, string][];
  /** [seconds epoch, value], by time. */
  points: [number, number][];
}

/** The µs of an int64 nanosecond count sent as a string (or a number). */
export function nanosToMicros(v: string | number | undefined | null): number {
  if (v === undefined || v === null || v === '') return 0;
  if (typeof v === 'number') return v / 1000;
  if (/^-?\d+$/.test(v)) return Number(BigInt(v) / 1000n) + Number(BigInt(v) % 1000n) / 1000;
  const n = Number(v);
  return Number.isFinite(n) ? n / 1000 : 0;
}

export function anyValueText(v: TempoAnyValue | undefined): string {
  if (!v) return '';
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.intValue !== undefined) return String(v.intValue);
  if (v.doubleValue !== undefined) return String(v.doubleValue);
  if (v.boolValue !== undefined) return String(v.boolValue);
  return '';
}

function unix(us: number, round: (x: number) => number): string {
  return String(round(us / 1e6));
}

export interface TraceQLSearch {
  q: string;
  /** µs epoch */
  start: number;
  end: number;
  limit: number;
  /** Spans per spanset. */
  spss: number;
}

export function searchUrl(s: TraceQLSearch): string {
  const p = new URLSearchParams({ q: s.q, start: unix(s.start, Math.floor), end: unix(s.end, Math.ceil), limit: String(s.limit), spss: String(s.spss) });
  return `/api/search?${p}`;
}

function toSpan(s: TempoSpan): MatchedSpan {
  const attributes = (s.attributes ?? []).map((a): [string, string] => [a.key, anyValueText(a.value)]);
  return {
    spanID: s.spanID,
    name: s.name ?? '',
    service: attributes.find(([k]) => k === 'service.name' || k === 'resource.service.name')?.[1] ?? null,
    start: nanosToMicros(s.startTimeUnixNano),
    duration: nanosToMicros(s.durationNanos),
    attributes,
  };
}

export function toMatchedTrace(t: TempoTrace): MatchedTrace {
  const sets = t.spanSets ?? (t.spanSet ? [t.spanSet] : []);
  return {
    traceID: t.traceID,
    rootService: t.rootServiceName || null,
    rootName: t.rootTraceName || null,
    start: nanosToMicros(t.startTimeUnixNano),
    duration: (t.durationMs ?? 0) * 1000,
    spanSets: sets.map((ss) => {
      const spans = (ss.spans ?? []).map(toSpan);
      return { spans, matched: ss.matched ?? spans.length };
    }),
  };
}

export async function search(s: TraceQLSearch, signal?: AbortSignal): Promise<SearchAnswer> {
  const r = await getJson<TempoSearchResponse | null>(searchUrl(s), signal);
  const m = r?.metrics;
  const bytes = m?.inspectedBytes !== undefined ? Number(m.inspectedBytes) : null;
  return { traces: (r?.traces ?? []).map(toMatchedTrace), inspectedTraces: m?.inspectedTraces ?? null, inspectedBytes: Number.isFinite(bytes) ? bytes : null };
}

export type TagScope = 'span' | 'resource' | 'intrinsic' | 'event' | 'link' | 'none';

/** Attribute names of one scope. */
export async function tags(scope: TagScope, signal?: AbortSignal): Promise<string[]> {
  const r = await getJson<TempoTagsResponse | null>(`/api/v2/search/tags?scope=${scope}`, signal);
  const scopes = r?.scopes ?? [];
  const tagsOf = scope === 'none' ? scopes.flatMap((s) => s.tags ?? []) : (scopes.find((s) => s.name === scope)?.tags ?? []);
  return [...new Set(tagsOf)].sort();
}

/** `filter`: the query so far (`{resource.service.name="x"}`), narrowing the values; `{}` or empty for none. */
export function tagValuesUrl(tag: string, filter: string): string {
  const q = filter && filter !== '{}' ? `?${new URLSearchParams({ q: filter })}` : '';
  return `/api/v2/search/tag/${encodeURIComponent(tag)}/values${q}`;
}

export async function tagValues(tag: string, filter: string, signal?: AbortSignal): Promise<TagValue[]> {
  const r = await getJson<TempoTagValuesResponse | null>(tagValuesUrl(tag, filter), signal);
  return (r?.tagValues ?? []).filter((v) => v && typeof v.value === 'string');
}

export interface MetricsQuery {
  q: string;
  /** µs epoch */
  start: number;
  end: number;
  /** seconds */
  stepSec: number;
}

export function queryRangeUrl(m: MetricsQuery): string {
  const p = new URLSearchParams({ q: m.q, start: unix(m.start, Math.floor), end: unix(m.end, Math.ceil), step: `${m.stepSec}s` });
  return `/api/metrics/query_range?${p}`;
}

/**
 * How a legend names a series: its labels without `__name__` (the function, which a query
 * without `by()` gets as its only label); null when nothing else is left (the whole query).
 */
export function legendLabel(s: Series): string | null {
  const rest = s.labels.filter(([k]) => k !== '__name__');
  return rest.length ? seriesLabel(rest) : s.labels.length ? null : s.label === '{}' ? null : s.label;
}

export function seriesLabel(labels: [string, string][]): string {
  return `{${labels.map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(', ')}}`;
}

export function toSeries(s: TempoSeries): Series {
  const labels = (s.labels ?? []).map((l): [string, string] => [l.key, anyValueText(l.value)]);
  const points = (s.samples ?? [])
    .map((p): [number, number] => [Number(p.timestampMs) / 1000, typeof p.value === 'number' ? p.value : Number(p.value)])
    .filter(([t]) => Number.isFinite(t))
    .sort((a, b) => a[0] - b[0]);
  return { label: s.promLabels || seriesLabel(labels), labels, points };
}

export interface QueryRangeAnswer {
  series: Series[];
  /** Why the answer is incomplete, when it is (`status: PARTIAL`). */
  partial: string | null;
}

export async function queryRange(m: MetricsQuery, signal?: AbortSignal): Promise<QueryRangeAnswer> {
  const r = await getJson<TempoQueryRangeResponse | null>(queryRangeUrl(m), signal);
  return {
    series: (r?.series ?? []).map(toSeries).sort((a, b) => a.label.localeCompare(b.label)),
    partial: r?.status === 'PARTIAL' ? r.message || 'the answer is incomplete' : null,
  };
}

/** Whether an error is the server refusing the query itself (a 400: parse or validation error). */
export function isQueryError(e: unknown): e is ApiError {
  return e instanceof ApiError && e.status === 400;
}

/**
 * Series on one time axis, as uPlot takes them: [seconds…], then one array per series with
 * null where it has no sample.
 */
export function alignSeries(series: Series[]): [number[], ...(number | null)[][]] {
  const times = [...new Set(series.flatMap((s) => s.points.map(([t]) => t)))].sort((a, b) => a - b);
  const index = new Map(times.map((t, k) => [t, k]));
  const lines = series.map((s) => {
    const out: (number | null)[] = new Array(times.length).fill(null);
    for (const [t, v] of s.points) out[index.get(t)!] = Number.isFinite(v) ? v : null;
    return out;
  });
  return [times, ...lines];
}
