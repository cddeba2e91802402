// A history-API router in a few lines: the URL is the state (deep links), pages read it
// through `useLocation` and change it through `navigate`. The server answers every
// non-/api path with index.html, so any of these URLs can be opened directly.

import { useEffect, useState } from 'preact/hooks';
import { withTenant } from './api/session';

/** Dispatched on `window` after every in-app navigation (`popstate` covers back and forward). */
export const NAVIGATE_EVENT = 'spindle:navigate';
const EVENT = NAVIGATE_EVENT;

export interface Location {
  path: string;
  query: URLSearchParams;
}

function current(): Location {
  return { path: location.pathname, query: new URLSearchParams(location.search) };
}

/** Goes to `url`, which keeps the selected tenant when it names none (`withTenant`). */
export function navigate(url: string, opts: { replace?: boolean } = {}): void {
  url = withTenant(url);
  if (url === location.pathname + location.search) return;
  history[opts.replace ? 'replaceState' : 'pushState'](null, '', url);
  dispatchEvent(new Event(EVENT));
}

export function useLocation(): Location {
  const [loc, setLoc] = useState(current);
  useEffect(() => {
    const update = () => setLoc(current());
    addEventListener('popstate', update);
    addEventListener(EVENT, update);
    return () => {
      removeEventListener('popstate', update);
      removeEventListener(EVENT, update);
    };
  }, []);
  return loc;
}

/** Builds `path?query` from a record, dropping empty values so URLs stay short. */
export function href(path: string, params: Record<string, string | number | undefined | null> = {}): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}

/** Replaces some query parameters of the current URL (for view state like the selected span). */
export function setQuery(params: Record<string, string | number | undefined | null>, replace = true): void {
  const q = new URLSearchParams(location.search);
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === '') q.delete(k);
    else q.set(k, String(v));
  }
  const s = q.toString();
  navigate(s ? `${location.pathname}?${s}` : location.pathname, { replace });
}

/** Click handler for in-app links: plain clicks navigate in place, modified clicks open tabs. */
export function onLinkClick(e: MouseEvent): void {
  const a = (e.currentTarget as HTMLAnchorElement) ?? null;
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  e.preventDefault();
  navigate(a.getAttribute('href') ?? '/');
}
