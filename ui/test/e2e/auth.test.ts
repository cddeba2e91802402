// Tenants and sign-in in a real browser against spindles of their own (the suite's shared
// one runs without either): spans sent as two tenants over OTLP/HTTP with X-Scope-OrgID,
// the tenant picker switching what the search page shows, a token's principal, the "not
// authorized" state, and the login through a real OpenID provider (tests/oidc/issuer.js:
// oidc-provider with a scripted login) and back, session expiry and sign-out.

import { type ChildProcess, spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { OtlpTracesData } from '../../src/model/formats';
import { launch, newPage, screenshot } from './browser';
import { REPO_DIR, type Spindle, freePort, postOtlp, startSpindle } from './server';

let browser: Browser;
const cleanup: (() => Promise<void> | void)[] = [];

beforeAll(async () => {
  browser = await launch();
});
afterAll(async () => {
  await browser?.close();
  for (const c of cleanup.reverse()) await c();
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'spindle-ui-auth-'));
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function start(opts: Parameters<typeof startSpindle>[0] = {}): Promise<Spindle> {
  const s = await startSpindle(opts);
  cleanup.push(() => s.stop());
  return s;
}

/** One trace of one span of `service`, a few seconds old. */
function trace(service: string, seq: number): OtlpTracesData {
  const hex = (n: number, len: number) => n.toString(16).padStart(len, '0');
  const startNs = BigInt(Date.now() - 5_000) * 1_000_000n;
  return {
    resourceSpans: [
      {
        resource: { attributes: [{ key: 'service.name', value: { stringValue: service } }] },
        scopeSpans: [
          {
            scope: { name: 'ui-auth-test' },
            spans: [
              {
                traceId: hex(0xa11ce000 + seq, 32),
                spanId: hex(seq + 1, 16),
                name: `${service}-op`,
                kind: 2,
                startTimeUnixNano: String(startNs),
                endTimeUnixNano: String(startNs + 3_000_000n),
                attributes: [],
              },
            ],
          },
        ],
      },
    ],
  };
}

/** Spans for the default tenant (no header), team-a and team-b, each with a service of its own. */
async function loadTenants(s: Spindle, withDefault: boolean): Promise<void> {
  if (withDefault) await postOtlp(s, trace('home-service', 1));
  await postOtlp(s, trace('alpha-service', 2), 'team-a');
  await postOtlp(s, trace('beta-service', 3), 'team-b');
}

/** The services the search form offers (once loaded). */
async function serviceOptions(page: Page): Promise<string[]> {
  const options = await page.locator('select[name=service] option').allTextContents();
  return options.filter((o) => o !== 'All services');
}

async function expectServices(page: Page, services: string[]): Promise<void> {
  await expect.poll(() => serviceOptions(page)).toEqual(services);
}

function tenantOf(url: string): string | null {
  return new URL(url).searchParams.get('tenant');
}

describe('tenants without authentication', () => {
  let base: string;
  let page: Page;

  beforeAll(async () => {
    const s = await start();
    await loadTenants(s, true);
    base = s.queryUrl;
    page = await newPage(browser);
  });

  test('no tenant chosen: no picker, no sign-in, the default tenant, URLs as before', async () => {
    await page.goto(`${base}/search`);
    await expectServices(page, ['home-service']);
    expect(await page.locator('[data-testid=tenant-picker]').count()).toBe(0);
    expect(await page.locator('[data-testid=user-name], [data-testid=logout], [data-testid=login]').count()).toBe(0);
    expect(tenantOf(page.url())).toBeNull();
    expect(await page.getAttribute('.topbar nav a >> text=Compare', 'href')).toBe('/compare');
  });

  test('a link naming a tenant opens it; the picker switches tenants and is remembered', async () => {
    await page.goto(`${base}/search?tenant=team-a`);
    await expectServices(page, ['alpha-service']);
    const picker = page.locator('[data-testid=tenant-picker]');
    expect(await picker.inputValue()).toBe('team-a');
    // Every in-app link keeps the tenant, so a copied link opens the same one.
    expect(await page.getAttribute('.topbar nav a >> text=Compare', 'href')).toBe('/compare?tenant=team-a');
    await screenshot(page, 'auth-01-tenant-a');

    await picker.fill('team-b');
    await picker.press('Enter');
    await page.waitForURL((u) => tenantOf(u.toString()) === 'team-b');
    await expectServices(page, ['beta-service']);
    await page.click('button[type=submit]');
    await page.waitForSelector('[data-testid=result]');
    // A badge reads the service and its span count.
    expect((await page.locator('.result .badge').allTextContents()).map((b) => b.replace(/\d+$/, ''))).toEqual(['beta-service']);
    expect(await page.evaluate(() => localStorage.getItem('spindle.tenant'))).toBe('team-b');

    // A URL without a tenant opens the remembered one, and says so.
    await page.goto(`${base}/search`);
    await page.waitForURL((u) => tenantOf(u.toString()) === 'team-b');
    await expectServices(page, ['beta-service']);

    // Back to the default tenant: the field emptied.
    await picker.fill('');
    await picker.press('Enter');
    await page.waitForURL((u) => tenantOf(u.toString()) === null);
    await expectServices(page, ['home-service']);
    expect(await page.locator('[data-testid=tenant-picker]').count()).toBe(0);
  });
});

describe('tenants of a token', () => {
  const TOKEN = 'carol-secret-token';
  let base: string;

  beforeAll(async () => {
    const dir = tempDir();
    const creds = join(dir, 'credentials.toml');
    writeFileSync(creds, `[[token]]\nname = "carol"\ntoken = "${TOKEN}"\nread = ["team-a", "team-b"]\ntenant = "team-a"\n`);
    const s = await start({ args: ['--auth-file', creds, '--auth', 'query'] });
    await loadTenants(s, false);
    base = s.queryUrl;
  });

  async function contextWithToken(apiToo: boolean): Promise<{ context: BrowserContext; page: Page; apiRequests: string[] }> {
    const page = await newPage(browser);
    const context = page.context();
    const apiRequests: string[] = [];
    await context.route(`${base}/**`, (route) => {
      const req = route.request();
      const isApi = new URL(req.url()).pathname.startsWith('/api/');
      if (isApi) apiRequests.push(req.url());
      const headers = { ...req.headers() };
      if (!isApi || apiToo) headers.authorization = `Bearer ${TOKEN}`;
      return route.continue({ headers });
    });
    return { context, page, apiRequests };
  }

  test('the name and a list of the tenants it may read; choosing one changes the services shown', async () => {
    const { page } = await contextWithToken(true);
    await page.goto(`${base}/search`);
    // No tenant asked for: the token's own, named in the URL.
    await page.waitForURL((u) => tenantOf(u.toString()) === 'team-a');
    await expect.poll(() => page.textContent('[data-testid=user-name]')).toBe('carol');
    await expectServices(page, ['alpha-service']);
    const picker = page.locator('select[data-testid=tenant-picker]');
    expect(await picker.locator('option').allTextContents()).toEqual(['team-a', 'team-b']);
    await screenshot(page, 'auth-02-token-tenants');

    await picker.selectOption('team-b');
    await page.waitForURL((u) => tenantOf(u.toString()) === 'team-b');
    await expectServices(page, ['beta-service']);

    // A tenant it may not read, from a link: replaced by its own.
    await page.goto(`${base}/search?tenant=team-z`);
    await page.waitForURL((u) => tenantOf(u.toString()) === 'team-a');
    await expectServices(page, ['alpha-service']);
    await page.context().close();
  });

  test('the API answers 401 and there is no login: "not authorized", and no retries', async () => {
    const { page, apiRequests } = await contextWithToken(false);
    await page.goto(`${base}/search`);
    await page.locator('[data-testid=not-authorized]').waitFor();
    expect(await page.textContent('[data-testid=not-authorized]')).toContain('Not authorized');
    expect(page.url()).toBe(`${base}/search`);
    await screenshot(page, 'auth-03-not-authorized');
    // Nothing polls on: the count stays where the first refusals left it.
    const sent = apiRequests.length;
    expect(sent).toBeGreaterThan(0);
    await page.waitForTimeout(1500);
    expect(apiRequests.length).toBe(sent);
    await page.context().close();
  });
});

describe('sign-in through an OpenID provider', () => {
  let base: string;
  let issuerUrl: string;

  beforeAll(async () => {
    const dir = tempDir();
    const [issuerPort, queryPort] = [await freePort(), await freePort()];
    issuerUrl = `http://127.0.0.1:${issuerPort}`;
    base = `http://127.0.0.1:${queryPort}`;
    const keyFile = join(dir, 'issuer-key.pem');
    writeFileSync(keyFile, generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }));
    const issuer: ChildProcess = spawn('node', [join(REPO_DIR, 'tests/oidc/issuer.js')], {
      stdio: ['ignore', 'ignore', 'inherit'],
      env: {
        ...process.env,
        ISSUER_PORT: String(issuerPort),
        ISSUER_KEY_FILE: keyFile,
        ISSUER_KEY_ID: 'ui-test-key',
        ISSUER_REDIRECT_URI: `${base}/auth/callback`,
        ISSUER_POST_LOGOUT_URI: `${base}/`,
        ISSUER_LOGIN: 'alice',
      },
    });
    let exited = false;
    issuer.once('exit', () => (exited = true));
    cleanup.push(async () => {
      if (!exited) {
        issuer.kill('SIGTERM');
        await new Promise((r) => issuer.once('exit', r));
      }
    });
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (exited) throw new Error('tests/oidc/issuer.js exited during startup; install it with: (cd tests/oidc && npm ci)');
      const ok = await fetch(`${issuerUrl}/.well-known/openid-configuration`).then(
        (r) => r.ok,
        () => false,
      );
      if (ok) break;
      if (Date.now() > deadline) throw new Error('the OpenID provider is not ready after 30 s');
      await new Promise((r) => setTimeout(r, 100));
    }

    const secret = join(dir, 'client-secret');
    writeFileSync(secret, 'ui-secret\n');
    // The provider's account alice is in its group "sre": here that group reads two tenants.
    const creds = join(dir, 'credentials.toml');
    writeFileSync(creds, `[[group]]\nname = "sre"\nread = ["team-a", "team-b"]\ntenant = "team-a"\n`);
    const s = await start({
      queryPort,
      args: [
        '--auth', 'query',
        '--auth-file', creds,
        '--oidc-issuer', issuerUrl,
        '--oidc-client-id', 'spindle-ui',
        '--oidc-client-secret-file', secret,
        '--public-url', base,
      ],
    });
    await loadTenants(s, false);
  });

  /** Opens the UI in a new browser context and signs in; answers the page and the page requests made. */
  async function signIn(path: string): Promise<{ page: Page; context: BrowserContext; visited: string[] }> {
    const page = await newPage(browser);
    const visited: string[] = [];
    // Every page request, redirects included: the provider's scripted login answers with redirects only.
    page.on('request', (r) => r.isNavigationRequest() && r.frame() === page.mainFrame() && visited.push(r.url()));
    await page.goto(`${base}${path}`);
    await page.waitForURL((u) => u.toString().startsWith(`${base}${path.split('?')[0]}`));
    await expect.poll(() => page.textContent('[data-testid=user-name]')).toBe('alice');
    return { page, context: page.context(), visited };
  }

  test('opening the UI goes through the provider and back, signed in; sign-out ends the session', async () => {
    const { page, context, visited } = await signIn('/search?lookback=1h');
    expect(visited.some((u) => u.startsWith(`${issuerUrl}/`))).toBe(true);
    expect(new URL(page.url()).searchParams.get('lookback')).toBe('1h');
    // alice's group reads team-a and team-b, team-a by default.
    expect(tenantOf(page.url())).toBe('team-a');
    await expectServices(page, ['alpha-service']);
    expect(await page.locator('select[data-testid=tenant-picker] option').allTextContents()).toEqual(['team-a', 'team-b']);
    expect(await page.getAttribute('[data-testid=logout]', 'href')).toBe('/auth/logout');
    await screenshot(page, 'auth-04-signed-in');

    // Sign out: the session cookie is gone by the time the provider's end-session page shows.
    await page.click('[data-testid=logout]');
    await page.waitForURL((u) => u.toString().startsWith(`${issuerUrl}/session/end`));
    expect((await context.cookies(base)).map((c) => c.name)).not.toContain('spindle_session');
    const who = await context.request.get(`${base}/api/spindle/whoami`, { headers: { accept: 'application/json', 'X-Requested-With': 'XMLHttpRequest' } });
    if (who.ok()) expect((await who.json()).authenticated).toBe(false);
    else expect(who.status()).toBe(401);
    await context.close();
  });

  test('a session that ends behind the page: the next API call answers 401, and the UI signs in again and comes back to the same page', async () => {
    const { page, context, visited } = await signIn('/search');
    await expectServices(page, ['alpha-service']);
    await context.clearCookies({ name: 'spindle_session' });
    visited.length = 0;
    const login = page.waitForRequest((r) => r.url().startsWith(`${base}/auth/login?`), { timeout: 15_000 }).catch(async (e) => {
      // The UI goes to whoami's login, or, where whoami is refused too, loads the page again
      // for the server to send it to its login.
      const who = await context.request.get(`${base}/api/spindle/whoami`, { headers: { accept: 'application/json', 'X-Requested-With': 'XMLHttpRequest' } });
      const shown = await page.locator('main').textContent();
      throw new Error(`the UI did not go to the login (${(e as Error).message.split('\n')[0]}); it shows ${JSON.stringify(shown)}; whoami without a session answers ${who.status()} ${await who.text()}`);
    });
    const callback = page.waitForRequest((r) => r.url().startsWith(`${base}/auth/callback?`));
    // Switching the tenant reloads the page's data: the first request answers 401.
    await page.locator('select[data-testid=tenant-picker]').selectOption('team-b');
    const returnTo = new URL((await login).url()).searchParams.get('return_to') ?? '';
    await callback;
    expect(returnTo.startsWith('/search?')).toBe(true);
    expect(tenantOf(`${base}${returnTo}`)).toBe('team-b');
    await page.waitForURL((u) => u.toString().startsWith(`${base}/search`) && tenantOf(u.toString()) === 'team-b');
    expect(visited.some((u) => u.startsWith(`${issuerUrl}/`))).toBe(true);
    await expect.poll(() => page.textContent('[data-testid=user-name]')).toBe('alice');
    await expectServices(page, ['beta-service']);
    await context.close();
  });
});
