// Small shared pieces: links (which keep the selected tenant), badges, and the
// loading/empty/error states every page uses.

import type { ComponentChildren } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { withTenant } from '../api/session';
import { serviceColor } from '../model/format';
import { LOOKBACKS } from '../model/query';
import { onLinkClick, setQuery } from '../router';

export function Link(props: { href: string; class?: string; title?: string; children: ComponentChildren; 'data-testid'?: string }) {
  return (
    <a href={withTenant(props.href)} class={props.class} title={props.title} onClick={onLinkClick} data-testid={props['data-testid']}>
      {props.children}
    </a>
  );
}

export function ServiceBadge(props: { service: string; count?: number; href?: string }) {
  const body = (
    <>
      <i class="dot" style={{ background: serviceColor(props.service) }} />
      {props.service}
      {props.count !== undefined && <b>{props.count}</b>}
    </>
  );
  return props.href ? (
    <Link href={props.href} class="badge">
      {body}
    </Link>
  ) : (
    <span class="badge">{body}</span>
  );
}

export function Loading(props: { what: string }) {
  return (
    <div class="state" role="status">
      <div class="spinner" /> Loading {props.what}…
    </div>
  );
}

export function ErrorState(props: { error: unknown; hint?: ComponentChildren; retry?: () => void }) {
  const msg = props.error instanceof Error ? props.error.message : String(props.error);
  return (
    <div class="state error" role="alert">
      <strong>Something went wrong:</strong> {msg}
      {props.hint && <div class="hint">{props.hint}</div>}
      {props.retry && (
        <button type="button" onClick={props.retry}>
          Try again
        </button>
      )}
    </div>
  );
}

export function Empty(props: { title: string; children?: ComponentChildren }) {
  return (
    <div class="state empty">
      <strong>{props.title}</strong>
      {props.children && <div class="hint">{props.children}</div>}
    </div>
  );
}

export type Async<T> = { state: 'loading' } | { state: 'error'; error: unknown } | { state: 'done'; value: T };

/**
 * Runs `load` whenever `deps` change, aborting the previous run; `reload` reruns it.
 * `load` itself is not a dependency: callers pass a fresh closure on every render.
 */
export function useAsync<T>(load: (signal: AbortSignal) => Promise<T>, deps: unknown[]): [Async<T>, () => void] {
  const [result, setResult] = useState<Async<T>>({ state: 'loading' });
  const [nonce, setNonce] = useState(0);
  useEffect(() => {
    const ctl = new AbortController();
    setResult({ state: 'loading' });
    load(ctl.signal).then(
      (value) => !ctl.signal.aborted && setResult({ state: 'done', value }),
      (error) => !ctl.signal.aborted && setResult({ state: 'error', error }),
    );
    return () => ctl.abort();
  }, [...deps, nonce]);
  return [result, () => setNonce((n) => n + 1)];
}

/** Downloads `data` as a JSON file, without a server round trip. */
export function downloadJson(name: string, data: unknown): void {
  const blob = new Blob([JSON.stringify(data, null, 2)], { type: 'application/json' });
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

/** The "Last 1h" picker of pages whose time range is the URL's `lookback` parameter. */
export function LookbackSelect(props: { value: string }) {
  return (
    <label>
      Time range
      <select value={props.value} onChange={(e) => setQuery({ lookback: (e.target as HTMLSelectElement).value })}>
        {Object.keys(LOOKBACKS).map((k) => (
          <option value={k}>Last {k}</option>
        ))}
      </select>
    </label>
  );
}
