// The top bar's session pieces: who is signed in, sign out, the tenant picker; and what
// the page shows instead of itself when the server refuses us.

import { useEffect, useState } from 'preact/hooks';
import { type HeaderModel, type SessionState, TENANT_PARAM, chooseTenant, headerModel, session, subscribe } from '../api/session';
import { navigate } from '../router';

export function useSession(): SessionState {
  const [s, set] = useState(session);
  useEffect(() => {
    set(session());
    return subscribe(() => set(session()));
  }, []);
  return s;
}

/** Selects `tenant` and reopens the current page for it (its URL names the new tenant). */
function switchTenant(tenant: string | null): void {
  const t = chooseTenant(tenant);
  const q = new URLSearchParams(location.search);
  if (t) q.set(TENANT_PARAM, t);
  else q.delete(TENANT_PARAM);
  const s = q.toString();
  navigate(s ? `${location.pathname}?${s}` : location.pathname);
}

export function AccountArea(props: { path: string }) {
  const m: HeaderModel = headerModel(useSession(), props.path);
  return (
    <>
      <TenantPicker model={m} />
      {m.user !== null && (
        <span class="user" data-testid="user-name" title="Signed in">
          {m.user}
        </span>
      )}
      {m.logout && (
        <a href={m.logout} class="signout" data-testid="logout">
          Sign out
        </a>
      )}
      {m.login && (
        <a href={m.login} data-testid="login">
          Sign in
        </a>
      )}
    </>
  );
}

function TenantPicker(props: { model: HeaderModel }) {
  const { picker, tenant } = props.model;
  const [text, setText] = useState(tenant ?? '');
  useEffect(() => setText(tenant ?? ''), [tenant]);
  if (picker.kind === 'none') return null;
  if (picker.kind === 'list')
    return (
      <label class="tenant">
        Tenant
        <select data-testid="tenant-picker" aria-label="Tenant" value={tenant ?? ''} onChange={(e) => switchTenant((e.target as HTMLSelectElement).value)}>
          {picker.tenants.map((t) => (
            <option value={t}>{t}</option>
          ))}
        </select>
      </label>
    );
  return (
    <form
      class="tenant"
      onSubmit={(e) => {
        e.preventDefault();
        if (text.trim() !== (tenant ?? '')) switchTenant(text.trim() || null);
      }}
    >
      <label>
        Tenant
        <input
          data-testid="tenant-picker"
          aria-label="Tenant"
          placeholder="default"
          value={text}
          size={14}
          onInput={(e) => setText((e.target as HTMLInputElement).value)}
          onBlur={(e) => (e.currentTarget as HTMLInputElement).form?.requestSubmit()}
        />
      </label>
    </form>
  );
}

/** Shown instead of the page when the server answered 401 and there is no login to go to. */
export function SessionGate(props: { state: SessionState; path: string }) {
  if (props.state.auth === 'redirecting')
    return (
      <div class="state" role="status" data-testid="signing-in">
        <div class="spinner" /> Signing in…
      </div>
    );
  const m = headerModel(props.state, props.path);
  return (
    <div class="state error" role="alert" data-testid="not-authorized">
      <strong>Not authorized</strong>
      <div class="hint">
        Spindle refused this browser's requests: it needs credentials the browser did not send, or that give no access to{' '}
        {props.state.tenant ? <>tenant {props.state.tenant}</> : 'this tenant'}.
        {m.login && (
          <>
            {' '}
            <a href={m.login}>Sign in</a> to continue.
          </>
        )}
      </div>
      <button type="button" onClick={() => location.reload()}>
        Try again
      </button>
    </div>
  );
}
