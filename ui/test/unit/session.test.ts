// The session logic behind the top bar and the API client: which tenant picker shows, which
// tenant is read, the X-Scope-OrgID header, and what a 401 does. fetch, location and the
// storages are stand-ins recording what the code asked of them.

import { afterEach, beforeEach, describe, expect, test, vi } from 'vitest';
import { ApiError, getJson, services } from '../../src/api/client';
import {
  type WhoAmI,
  chooseTenant,
  headerModel,
  resetSession,
  resolveTenant,
  selectTenant,
  session,
  startSession,
  tenantChoice,
  withTenant,
} from '../../src/api/session';

const anonymous: WhoAmI = { name: 'anonymous', authenticated: false, read: '*', write: '*', admin: true, tenant: null, login: null, logout: null };
const alice: WhoAmI = { name: 'alice', authenticated: true, read: ['team-b', 'team-a'], write: [], admin: false, tenant: 'team-b', login: '/auth/login', logout: '/auth/logout' };
const loggedOut: WhoAmI = { ...anonymous, read: [], write: [], admin: false, login: '/auth/login', logout: null };

class MemoryStorage {
  items = new Map<string, string>();
  getItem(k: string) {
    return this.items.get(k) ?? null;
  }
  setItem(k: string, v: string) {
    this.items.set(k, String(v));
  }
  removeItem(k: string) {
    this.items.delete(k);
  }
}

interface Call {
  url: string;
  headers: Record<string, string>;
}

/** A server: whoami answers `who` (`whoamiStatus` when null), every other path `api`'s status. */
function server(who: WhoAmI | null, api: { status: number; body?: unknown } = { status: 200, body: { data: ['svc'] } }, whoamiStatus = 404) {
  const calls: Call[] = [];
  const fetch = vi.fn(async (url: string, init?: RequestInit) => {
    calls.push({ url, headers: { ...(init?.headers as Record<string, string>) } });
    if (url === '/api/spindle/whoami') return who ? Response.json(who) : new Response('{"error":{"message":"no"}}', { status: whoamiStatus });
    return new Response(JSON.stringify(api.body ?? {}), { status: api.status, headers: api.status === 401 ? { 'www-authenticate': 'Bearer' } : {} });
  });
  vi.stubGlobal('fetch', fetch);
  return calls;
}

let local: MemoryStorage;
let sessionStore: MemoryStorage;
let assign: ReturnType<typeof vi.fn>;
let reload: ReturnType<typeof vi.fn>;

function at(pathAndQuery: string) {
  const u = new URL(pathAndQuery, 'http://spindle.test');
  vi.stubGlobal('location', { pathname: u.pathname, search: u.search, assign, reload });
}

beforeEach(() => {
  resetSession();
  local = new MemoryStorage();
  sessionStore = new MemoryStorage();
  assign = vi.fn();
  reload = vi.fn();
  vi.stubGlobal('localStorage', local);
  vi.stubGlobal('sessionStorage', sessionStore);
  at('/search');
});
afterEach(() => {
  vi.unstubAllGlobals();
});

describe('header', () => {
  test('authentication off, one tenant: no name, no sign-out, no picker (the UI as before)', async () => {
    server(anonymous);
    await startSession(null);
    const m = headerModel(session(), '/search');
    expect(m).toEqual({ user: null, logout: null, login: null, picker: { kind: 'none' }, tenant: null });
  });

  test('an older server without whoami: nothing shown either', async () => {
    server(null);
    await startSession(null);
    expect(session().ready).toBe(true);
    expect(headerModel(session(), '/search')).toEqual({ user: null, logout: null, login: null, picker: { kind: 'none' }, tenant: null });
  });

  test('signed in with two readable tenants: name, sign-out and a list picker, sorted', async () => {
    server(alice);
    await startSession(null);
    const m = headerModel(session(), '/search');
    expect(m.user).toBe('alice');
    expect(m.logout).toBe('/auth/logout');
    expect(m.login).toBeNull();
    expect(m.picker).toEqual({ kind: 'list', tenants: ['team-a', 'team-b'] });
    // No tenant asked for: the principal's own.
    expect(m.tenant).toBe('team-b');
  });

  test('signed in with one tenant: no picker', () => {
    expect(tenantChoice({ ...alice, read: ['team-a'] }, 'team-a')).toEqual({ kind: 'none' });
    expect(tenantChoice({ ...alice, read: ['team-a', 'team-a'] }, null)).toEqual({ kind: 'none' });
  });

  test('"*": a free-text field when signed in; without authentication only once a tenant is chosen', () => {
    expect(tenantChoice({ ...alice, read: '*' }, null)).toEqual({ kind: 'free' });
    expect(tenantChoice(anonymous, null)).toEqual({ kind: 'none' });
    expect(tenantChoice(anonymous, 'team-a')).toEqual({ kind: 'free' });
  });

  test('nobody signed in but a login exists: a Sign in link back to this page', () => {
    const m = headerModel({ ready: true, who: loggedOut, tenant: null, auth: 'ok' }, '/trace/abc?span=1');
    expect(m.user).toBeNull();
    expect(m.login).toBe('/auth/login?return_to=%2Ftrace%2Fabc%3Fspan%3D1');
  });

  test('no picker before whoami has answered', () => {
    expect(headerModel({ ready: false, who: null, tenant: 'x', auth: 'ok' }, '/').picker).toEqual({ kind: 'none' });
  });
});

describe('tenant selection', () => {
  test('a readable tenant from the URL wins; one the principal may not read is replaced', () => {
    expect(resolveTenant(alice, 'team-a')).toBe('team-a');
    expect(resolveTenant(alice, 'team-z')).toBe('team-b');
    expect(resolveTenant({ ...alice, tenant: null }, 'team-z')).toBe('team-a');
    expect(resolveTenant({ ...alice, read: [] }, 'team-a')).toBeNull();
    // One tenant that is also the default: nothing to name.
    expect(resolveTenant({ ...alice, read: ['team-b'] }, null)).toBeNull();
    expect(resolveTenant({ ...alice, read: ['team-a'], tenant: null }, null)).toBe('team-a');
    expect(resolveTenant(anonymous, ' acme ')).toBe('acme');
    expect(resolveTenant(anonymous, '')).toBeNull();
  });

  test('remembered in localStorage, used when the URL names none', async () => {
    server(alice);
    await startSession('team-a');
    expect(local.getItem('spindle.tenant')).toBe('team-a');
    resetSession();
    await startSession(null);
    expect(session().tenant).toBe('team-a');
    chooseTenant('team-b');
    expect(local.getItem('spindle.tenant')).toBe('team-b');
    expect(selectTenant(null)).toBe('team-b');
  });

  test('clearing the free-text field forgets the tenant', async () => {
    server({ ...alice, read: '*' });
    await startSession('acme');
    expect(session().tenant).toBe('acme');
    chooseTenant(null);
    expect(session().tenant).toBeNull();
    expect(local.getItem('spindle.tenant')).toBeNull();
  });

  test('in-app links carry the tenant; API, auth and outside links do not', () => {
    expect(withTenant('/search', 'a')).toBe('/search?tenant=a');
    expect(withTenant('/search?service=x', 'a')).toBe('/search?service=x&tenant=a');
    expect(withTenant('/trace/1#top', 'a b')).toBe('/trace/1?tenant=a+b#top');
    expect(withTenant('/search?tenant=b', 'a')).toBe('/search?tenant=b');
    expect(withTenant('/search', null)).toBe('/search');
    for (const u of ['/api/services', '/auth/logout', '/auth/login?return_to=%2F', 'https://example.org/x', '//cdn/x']) expect(withTenant(u, 'a')).toBe(u);
  });
});

describe('API client', () => {
  test('every request names the selected tenant in X-Scope-OrgID', async () => {
    const calls = server(alice);
    await startSession('team-a');
    expect(await services()).toEqual(['svc']);
    const req = calls.find((c) => c.url === '/api/services')!;
    expect(req.headers['X-Scope-OrgID']).toBe('team-a');
  });

  test('no tenant selected: no header, as before', async () => {
    const calls = server(anonymous);
    await startSession(null);
    await services();
    expect(calls.find((c) => c.url === '/api/services')!.headers).toEqual({ accept: 'application/json', 'X-Requested-With': 'XMLHttpRequest' });
  });

  test('401 with a login: the browser goes to it, coming back to this page; nothing more is sent', async () => {
    at('/search?service=a&tenant=team-a');
    const calls = server(loggedOut, { status: 401, body: { error: { httpCode: 401, message: 'unauthorized' } } });
    await startSession('team-a');
    await expect(services()).rejects.toBeInstanceOf(ApiError);
    expect(assign).toHaveBeenCalledTimes(1);
    expect(assign).toHaveBeenCalledWith('/auth/login?return_to=%2Fsearch%3Fservice%3Da%26tenant%3Dteam-a');
    expect(session().auth).toBe('redirecting');
    const sent = calls.length;
    await expect(getJson('/api/spindle/alerts')).rejects.toMatchObject({ status: 401 });
    expect(calls.length).toBe(sent);
    expect(assign).toHaveBeenCalledTimes(1);
  });

  test('401 without a login: "not authorized", once, and no retries', async () => {
    const calls = server(anonymous, { status: 401 });
    await startSession(null);
    const all = await Promise.allSettled([services(), getJson('/api/spindle/alerts'), getJson('/api/spindle/graph')]);
    expect(all.every((r) => r.status === 'rejected' && (r.reason as ApiError).status === 401)).toBe(true);
    expect(session().auth).toBe('unauthorized');
    expect(assign).not.toHaveBeenCalled();
    const sent = calls.length;
    await expect(services()).rejects.toMatchObject({ status: 401 });
    expect(calls.length).toBe(sent);
  });

  test('a login that came straight back unauthenticated is not retried in a loop', async () => {
    const first = server(loggedOut, { status: 401 });
    await startSession(null);
    await services().catch(() => undefined);
    expect(assign).toHaveBeenCalledTimes(1);
    expect(first.length).toBeGreaterThan(0);
    // The page loads again after the login, still without a session.
    resetSession();
    server(loggedOut, { status: 401 });
    await startSession(null);
    await services().catch(() => undefined);
    expect(assign).toHaveBeenCalledTimes(1);
    expect(session().auth).toBe('unauthorized');
    // A sign-in that worked clears the guard: a later expiry goes to the login again.
    resetSession();
    server(alice);
    await startSession(null);
    expect(sessionStore.getItem('spindle.loginAttempt')).toBeNull();
    resetSession();
    server(loggedOut, { status: 401 });
    await startSession(null);
    await services().catch(() => undefined);
    expect(assign).toHaveBeenCalledTimes(2);
  });

  test('whoami refused as well: one reload, for the server to send the page to its login; straight back, "not authorized"', async () => {
    const calls = server(null, { status: 401 }, 401);
    await startSession(null);
    await expect(services()).rejects.toMatchObject({ status: 401 });
    expect(reload).toHaveBeenCalledTimes(1);
    expect(assign).not.toHaveBeenCalled();
    expect(session().auth).toBe('redirecting');
    // The reloaded page is refused again at once: no second reload.
    resetSession();
    server(null, { status: 401 }, 401);
    await startSession(null);
    await services().catch(() => undefined);
    expect(reload).toHaveBeenCalledTimes(1);
    expect(session().auth).toBe('unauthorized');
    expect(calls.length).toBeGreaterThan(0);
  });

  test('an older server without whoami answering 401: "not authorized", no reload', async () => {
    server(null, { status: 401 }, 404);
    await startSession(null);
    await services().catch(() => undefined);
    expect(reload).not.toHaveBeenCalled();
    expect(session().auth).toBe('unauthorized');
  });

  test('other errors still carry the server message', async () => {
    server(alice, { status: 403, body: { errors: [{ code: 403, msg: 'alice may not read tenant team-c' }] } });
    await startSession('team-a');
    await expect(services()).rejects.toMatchObject({ status: 403, message: 'alice may not read tenant team-c' });
    expect(session().auth).toBe('ok');
  });
});
