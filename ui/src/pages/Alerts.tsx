// Every alert rule Spindle evaluates and its state (`/api/spindle/alerts`), refreshed
// while the page is open: firing and pending first, with the traces that made them fire.

import { useEffect, useState } from 'preact/hooks';
import * as analytics from '../api/analytics';
import { Empty, ErrorState, Link, Loading, ServiceBadge } from '../components/common';
import { formatAgo } from '../model/format';
import { sortAlerts } from '../model/monitor';
import { href } from '../router';

const REFRESH_MS = 5000;

export function AlertState(props: { state: string }) {
  return <span class={`alert-state state-${props.state}`}>{props.state}</span>;
}

function ago(rfc3339: string | null): string {
  if (!rfc3339) return '–';
  const t = Date.parse(rfc3339);
  return Number.isFinite(t) ? formatAgo(t * 1000) : rfc3339;
}

function KeyValues(props: { map: Record<string, string> | undefined }) {
  const entries = Object.entries(props.map ?? {});
  if (!entries.length) return <span class="muted">–</span>;
  return (
    <>
      {entries.map(([k, v]) => (
        <span class="kv-chip" title={`${k}=${v}`}>
          <span class="muted">{k}=</span>
          {v}
        </span>
      ))}
    </>
  );
}

type Load = { state: 'loading' } | { state: 'error'; error: unknown } | { state: 'done'; value: analytics.Alert[]; at: number };

/** Polls the alert state; a failed refresh keeps showing the last answer with the error. */
function useAlerts(): [Load, unknown, () => void] {
  const [load, setLoad] = useState<Load>({ state: 'loading' });
  const [refreshError, setRefreshError] = useState<unknown>(null);
  const [nonce, setNonce] = useState(0);
  useEffect(() => {
    let ctl = new AbortController();
    let stopped = false;
    const run = () => {
      ctl = new AbortController();
      analytics.alerts(ctl.signal).then(
        (value) => {
          if (stopped) return;
          setLoad({ state: 'done', value, at: Date.now() });
          setRefreshError(null);
        },
        (error) => {
          if (stopped) return;
          setLoad((l) => (l.state === 'done' ? l : { state: 'error', error }));
          setRefreshError(error);
        },
      );
    };
    run();
    const timer = setInterval(run, REFRESH_MS);
    return () => {
      stopped = true;
      clearInterval(timer);
      ctl.abort();
    };
  }, [nonce]);
  return [load, refreshError, () => setNonce((n) => n + 1)];
}

export function AlertsPage() {
  const [load, refreshError, reload] = useAlerts();
  return (
    <div class="alerts-page">
      <div class="card toolbar">
        <h1>Alerts</h1>
        {load.state === 'done' && (
          <span class="muted" data-testid="alerts-summary">
            {load.value.filter((a) => a.state === 'firing').length} firing · {load.value.filter((a) => a.state === 'pending').length} pending · {load.value.length} rules
          </span>
        )}
        <div class="spacer" />
        {refreshError !== null && load.state === 'done' && <span class="error-text">refresh failed: {refreshError instanceof Error ? refreshError.message : String(refreshError)}</span>}
        <span class="muted">refreshes every {REFRESH_MS / 1000} s</span>
        <button type="button" onClick={reload}>
          Refresh
        </button>
      </div>
      {load.state === 'loading' && <Loading what="alert rules" />}
      {load.state === 'error' && <ErrorState error={load.error} retry={reload} />}
      {load.state === 'done' &&
        (load.value.length === 0 ? (
          <Empty title="No alert rules">
            Spindle evaluates alert rules when started with <code>--alert-rules rules.yaml</code> (p99 above a threshold, error ratio, span rate, any error trace; see
            docs/OPERATIONS.md), and sends them to Alertmanager or webhooks.
          </Empty>
        ) : (
          <section class="card">
            <table class="grid" data-testid="alerts-table">
              <thead>
                <tr>
                  <th>State</th>
                  <th>Rule</th>
                  <th>Service</th>
                  <th>Operation</th>
                  <th class="num">Value</th>
                  <th>Active since</th>
                  <th>Evaluated</th>
                  <th>Labels</th>
                  <th>Annotations</th>
                  <th>Example traces</th>
                </tr>
              </thead>
              <tbody>
                {sortAlerts(load.value).map((a) => (
                  <tr data-alert={a.name} data-state={a.state} class={`alert-row state-${a.state}`}>
                    <td>
                      <AlertState state={a.state} />
                    </td>
                    <td>
                      <b>{a.name}</b>
                    </td>
                    <td>{a.service ? <ServiceBadge service={a.service} href={`/service/${encodeURIComponent(a.service)}`} /> : <span class="muted">all</span>}</td>
                    <td>{a.operation ?? <span class="muted">all</span>}</td>
                    <td class="num">{a.value === null ? '–' : Number(a.value.toPrecision(4))}</td>
                    <td title={a.activeSince ?? ''}>{ago(a.activeSince)}</td>
                    <td title={a.lastEvaluation ?? ''}>{a.lastEvaluation ? ago(a.lastEvaluation) : <span class="muted">not yet</span>}</td>
                    <td class="wrap">
                      <KeyValues map={a.labels} />
                    </td>
                    <td class="wrap">
                      <KeyValues map={a.annotations} />
                    </td>
                    <td class="wrap">
                      {a.exampleTraceIDs.length ? (
                        a.exampleTraceIDs.map((id) => (
                          <Link href={`/trace/${id}`} class="mono small-link">
                            {id.slice(0, 8)}
                          </Link>
                        ))
                      ) : a.service ? (
                        <Link href={href('/search', { service: a.service, operation: a.operation ?? undefined })} class="muted">
                          search
                        </Link>
                      ) : (
                        <span class="muted">–</span>
                      )}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
            <p class="muted note">Values: the measured quantile (ms), error ratio, span rate (per second) or error span count over the rule's window, as of the last evaluation.</p>
          </section>
        ))}
    </div>
  );
}
