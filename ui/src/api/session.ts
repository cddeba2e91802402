// Who the browser is signed in as (`/api/spindle/whoami`), which tenant the UI reads, and
// what an unauthenticated answer does. The API client (`client.ts`) asks this module for
// the headers of every request and hands it every 401; the top bar shows its state.
//
// The tenant lives in the URL (`?tenant=`, so a shared link opens the same tenant), is
// remembered in localStorage for URLs without one, and goes to the server as Tempo's
// `X-Scope-OrgID` header. With nothing selected no header is sent and the server picks
// the principal's default tenant: an unauthenticated single-tenant Spindle sees no change.

export interface WhoAmI {
  name: string;
  authenticated: boolean;
  read: string[] | '*';
  write: string[] | '*';
  admin: boolean;
  /** The tenant the server uses when a request names none. */
  tenant: string | null;
  login: string | null;
  logout: string | null;
}

export const TENANT_PARAM = 'tenant';
export const TENANT_HEADER = 'X-Scope-OrgID';
const TENANT_KEY = 'spindle.tenant';
/** When the UI last sent the browser to the login, to stop a login that does not stick from looping. */
const LOGIN_KEY = 'spindle.loginAttempt';
const LOGIN_RETRY_MS = 60_000;

/**
 * - `ok`: requests go out as usual;
 * - `redirecting`: the browser is on its way to the login page;
 * - `unauthorized`: the server refused us and there is no login to send the browser to
 *   (or the last one came straight back): no further requests until a reload.
 */
export type AuthState = 'ok' | 'redirecting' | 'unauthorized';

export interface SessionState {
  /** Whether `/api/spindle/whoami` has answered (or failed: an older server has none). */
  ready: boolean;
  who: WhoAmI | null;
  tenant: string | null;
  auth: AuthState;
}

let state: SessionState = { ready: false, who: null, tenant: null, auth: 'ok' };
const listeners = new Set<() => void>();

export function session(): SessionState {
  return state;
}

export function subscribe(fn: () => void): () => void {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function update(patch: Partial<SessionState>): void {
  const next = { ...state, ...patch };
  if ((Object.keys(patch) as (keyof SessionState)[]).every((k) => next[k] === state[k])) return;
  state = next;
  for (const fn of listeners) fn();
}

/** Back to the state of a fresh page load (tests). */
export function resetSession(): void {
  state = { ready: false, who: null, tenant: null, auth: 'ok' };
  whoamiInFlight = null;
}

export function currentTenant(): string | null {
  return state.tenant;
}

/**
 * The headers every API request carries. `X-Requested-With` marks a script's request, the
 * usual convention for a server to answer its 401 without a Basic challenge: on one,
 * browsers stop the fetch to prompt for a password, and the UI never sees the 401.
 */
export function requestHeaders(): Record<string, string> {
  const h: Record<string, string> = { accept: 'application/json', 'X-Requested-With': 'XMLHttpRequest' };
  if (state.tenant) h[TENANT_HEADER] = state.tenant;
  return h;
}

// --- tenants -----------------------------------------------------------------------------

/** What the top bar offers: nothing, a list of the readable tenants, or a free-text field. */
export type TenantChoice = { kind: 'none' } | { kind: 'list'; tenants: string[] } | { kind: 'free' };

export function tenantChoice(who: WhoAmI | null, selected: string | null): TenantChoice {
  if (who && Array.isArray(who.read)) {
    const tenants = [...new Set(who.read)].sort();
    return tenants.length > 1 ? { kind: 'list', tenants } : { kind: 'none' };
  }
  // "*" (or an older server without whoami): any name. Only a signed-in principal gets the
  // field unasked; without authentication it shows once a tenant is chosen (a link with
  // `?tenant=`), so a plain single-tenant Spindle looks as it always did.
  if (who?.authenticated || selected) return { kind: 'free' };
  return { kind: 'none' };
}

/**
 * The tenant to read, from the one asked for (the URL's, else the remembered one) and what
 * the principal may read: a tenant it may not read is dropped; where it may read a list,
 * one of them is always named so every link says which.
 */
export function resolveTenant(who: WhoAmI | null, wanted: string | null): string | null {
  const w = wanted?.trim() || null;
  if (!who || who.read === '*') return w;
  const read = [...new Set(who.read)].sort();
  if (w && read.includes(w)) return w;
  if (read.length === 0) return null;
  if (who.tenant && read.includes(who.tenant)) return read.length > 1 ? who.tenant : null;
  return read[0];
}

function storage(kind: 'localStorage' | 'sessionStorage'): Storage | null {
  try {
    return (globalThis as unknown as Record<string, Storage | undefined>)[kind] ?? null;
  } catch {
    return null; // storage disabled by the browser's settings
  }
}

export function rememberedTenant(): string | null {
  return storage('localStorage')?.getItem(TENANT_KEY) || null;
}

/**
 * Selects the tenant for the URL's `tenant` parameter (null: the URL names none, so the
 * remembered one applies) and remembers it. Returns the tenant in effect.
 */
export function selectTenant(fromUrl: string | null): string | null {
  const wanted = fromUrl ?? state.tenant ?? rememberedTenant();
  if (!state.ready) {
    // Before whoami answers nothing is sent; the choice is checked when it does.
    const tenant = wanted?.trim() || null;
    update({ tenant });
    return tenant;
  }
  return chooseTenant(wanted);
}

/** The picker's choice (null: none, the server's default); remembered for URLs without one. */
export function chooseTenant(tenant: string | null): string | null {
  const t = resolveTenant(state.who, tenant);
  update({ tenant: t });
  remember(t);
  return t;
}

function remember(tenant: string | null): void {
  const ls = storage('localStorage');
  if (tenant) ls?.setItem(TENANT_KEY, tenant);
  else ls?.removeItem(TENANT_KEY);
}

/** `url` with the current tenant added when it is an in-app path that names none. */
export function withTenant(url: string, tenant = state.tenant): string {
  if (!tenant || !url.startsWith('/') || url.startsWith('//') || /^\/(api|auth)(\/|$|\?)/.test(url)) return url;
  const [beforeHash, hash] = splitOnce(url, '#');
  const [path, query] = splitOnce(beforeHash, '?');
  const q = new URLSearchParams(query ?? '');
  if (q.has(TENANT_PARAM)) return url;
  q.set(TENANT_PARAM, tenant);
  return `${path}?${q}${hash !== undefined ? `#${hash}` : ''}`;
}

function splitOnce(s: string, sep: string): [string, string | undefined] {
  const i = s.indexOf(sep);
  return i < 0 ? [s, undefined] : [s.slice(0, i), s.slice(i + 1)];
}

// --- whoami, login, 401 ------------------------------------------------------------------

/** whoami's answer, and its HTTP status (0: no answer). */
interface WhoamiAnswer {
  who: WhoAmI | null;
  status: number;
}

let whoamiInFlight: Promise<WhoamiAnswer> | null = null;

function isWhoAmI(v: unknown): v is WhoAmI {
  const w = v as WhoAmI | null;
  return !!w && typeof w.name === 'string' && typeof w.authenticated === 'boolean' && (w.read === '*' || Array.isArray(w.read));
}

function askWhoami(): Promise<WhoamiAnswer> {
  whoamiInFlight ??= (async () => {
    try {
      const res = await fetch('/api/spindle/whoami', { headers: { accept: 'application/json', 'X-Requested-With': 'XMLHttpRequest' } });
      if (!res.ok) return { who: null, status: res.status };
      const body: unknown = await res.json();
      return { who: isWhoAmI(body) ? body : null, status: res.status };
    } catch {
      return { who: null, status: 0 };
    } finally {
      whoamiInFlight = null;
    }
  })();
  return whoamiInFlight;
}

/** Asks the server who we are; null when it cannot say (an older server, a refusal, no network). */
export async function fetchWhoami(): Promise<WhoAmI | null> {
  return (await askWhoami()).who;
}

/** Loads whoami once at start; the tenant asked for is checked against what it may read. */
export async function startSession(fromUrl: string | null): Promise<void> {
  const who = await fetchWhoami();
  if (who?.authenticated) storage('sessionStorage')?.removeItem(LOGIN_KEY);
  // One update: the pages start with the tenant they are to read.
  const tenant = resolveTenant(who, fromUrl ?? state.tenant ?? rememberedTenant());
  update({ who, ready: true, tenant });
  remember(tenant);
}

export function loginHref(login: string, returnTo: string): string {
  return `${login}${login.includes('?') ? '&' : '?'}return_to=${encodeURIComponent(returnTo)}`;
}

function currentPath(): string {
  return location.pathname + location.search;
}

/** Whether the UI sent the browser to the login a moment ago, and it came back unauthenticated. */
function loginJustTried(now: number): boolean {
  const at = Number(storage('sessionStorage')?.getItem(LOGIN_KEY));
  return Number.isFinite(at) && at > 0 && now - at < LOGIN_RETRY_MS;
}

/**
 * What a 401 does: with a login (whoami's `login`), the browser goes to it and comes back
 * to this page. Where whoami is refused as well, it cannot say whether there is a login:
 * the page is loaded again, and the server sends a page load without a session to its
 * login if it has one. Otherwise, or when the last of these came straight back, the UI
 * shows "not authorized" and sends no further requests. Returns the state it moved to.
 */
export async function handleUnauthorized(): Promise<AuthState> {
  if (state.auth !== 'ok') return state.auth;
  const { who, status } = await askWhoami();
  if (state.auth !== 'ok') return state.auth;
  if (who) update({ who });
  const login = who && !who.authenticated ? who.login : null;
  const now = Date.now();
  if ((login || status === 401) && !loginJustTried(now)) {
    storage('sessionStorage')?.setItem(LOGIN_KEY, String(now));
    update({ auth: 'redirecting' });
    if (login) location.assign(loginHref(login, currentPath()));
    else location.reload();
  } else {
    update({ auth: 'unauthorized' });
  }
  return state.auth;
}

/** The top bar's user area and tenant picker, from the session. */
export interface HeaderModel {
  /** The signed-in name; null where nobody is signed in (authentication off). */
  user: string | null;
  logout: string | null;
  /** A "Sign in" link, where the server has a login and nobody is signed in. */
  login: string | null;
  picker: TenantChoice;
  tenant: string | null;
}

export function headerModel(s: SessionState, path: string): HeaderModel {
  const who = s.who;
  const signedIn = !!who?.authenticated;
  return {
    user: signedIn ? who!.name : null,
    logout: signedIn ? (who!.logout ?? null) : null,
    login: !signedIn && who?.login ? loginHref(who.login, path) : null,
    picker: s.ready ? tenantChoice(who, s.tenant) : { kind: 'none' },
    tenant: s.tenant,
  };
}
