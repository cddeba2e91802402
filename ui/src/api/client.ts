// Typed client of Spindle's public HTTP API (docs/API.md). The UI talks to nothing else.

import type { JaegerTrace } from '../model/trace';
import { handleUnauthorized, requestHeaders, session } from './session';

export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

export const NOT_AUTHORIZED = 'not authorized: sign in, or ask for access to this tenant';

interface Envelope<T> {
  data: T | null;
  errors?: { code: number; msg: string }[] | null;
}

/** The error body of `/api/spindle/*`. */
interface AnalyticsError {
  error?: { httpCode: number; message: string };
}

/**
 * GETs JSON; a non-2xx answer throws an `ApiError` carrying the server's own message. Every
 * request of the UI comes through here: it carries the selected tenant (`requestHeaders`),
 * and a 401 goes to the login or to the "not authorized" state (`handleUnauthorized`),
 * after which no request is sent until the page reloads.
 */
export async function getJson<T>(url: string, signal?: AbortSignal): Promise<T> {
  if (session().auth !== 'ok') throw new ApiError(NOT_AUTHORIZED, 401);
  let res: Response;
  try {
    res = await fetch(url, { signal, headers: requestHeaders() });
  } catch (e) {
    if ((e as Error).name === 'AbortError') throw e;
    throw new ApiError(`cannot reach Spindle (${(e as Error).message}); is the server running?`, 0);
  }
  if (res.status === 401) {
    await handleUnauthorized();
    throw new ApiError(NOT_AUTHORIZED, 401);
  }
  const text = await res.text();
  let body: unknown = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    /* a proxy's HTML error page: reported below with the status */
  }
  if (!res.ok) {
    const env = body as (Envelope<unknown> & AnalyticsError) | null;
    const msg = env?.errors?.map((e) => e.msg).join('; ') || env?.error?.message || text.slice(0, 200) || res.statusText;
    throw new ApiError(msg, res.status);
  }
  return body as T;
}

async function getData<T>(url: string, signal?: AbortSignal): Promise<T> {
  const env = await getJson<Envelope<T>>(url, signal);
  return env.data as T;
}

export function services(signal?: AbortSignal): Promise<string[]> {
  return getData<string[] | null>('/api/services', signal).then((d) => d ?? []);
}

export function operations(service: string, signal?: AbortSignal): Promise<string[]> {
  return getData<string[] | null>(`/api/services/${encodeURIComponent(service)}/operations`, signal).then((d) => (d ?? []).slice().sort());
}

export interface TraceSearch {
  service?: string;
  operation?: string;
  /** key → value; every pair must match one span. */
  tags?: Record<string, string>;
  minDuration?: string;
  maxDuration?: string;
  /** µs epoch */
  start: number;
  end: number;
  limit: number;
}

export function searchUrl(q: TraceSearch): string {
  const p = new URLSearchParams();
  if (q.service) p.set('service', q.service);
  if (q.operation) p.set('operation', q.operation);
  if (q.tags && Object.keys(q.tags).length) p.set('tags', JSON.stringify(q.tags));
  if (q.minDuration) p.set('minDuration', q.minDuration);
  if (q.maxDuration) p.set('maxDuration', q.maxDuration);
  p.set('start', String(Math.floor(q.start)));
  p.set('end', String(Math.ceil(q.end)));
  p.set('limit', String(q.limit));
  return `/api/traces?${p}`;
}

export function searchTraces(q: TraceSearch, signal?: AbortSignal): Promise<JaegerTrace[]> {
  return getData<JaegerTrace[] | null>(searchUrl(q), signal).then((d) => d ?? []);
}

export async function getTrace(id: string, signal?: AbortSignal): Promise<JaegerTrace> {
  const data = await getData<JaegerTrace[]>(`/api/traces/${encodeURIComponent(id)}`, signal);
  if (!data?.length) throw new ApiError(`trace ${id} not found`, 404);
  return data[0];
}

