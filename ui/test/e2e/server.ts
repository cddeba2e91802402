// Starts a real `spindle` on free loopback ports with a temporary data directory, and
// loads traces into it over OTLP/HTTP JSON, as an instrumented service would.

import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { OtlpTracesData } from '../../src/model/formats';

export const UI_DIR = resolve(import.meta.dirname, '../..');
export const REPO_DIR = resolve(UI_DIR, '..');

export function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.once('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => ok(port));
    });
  });
}

export interface Spindle {
  queryUrl: string;
  otlpUrl: string;
  stop: () => Promise<void>;
}

/**
 * `alertRules`: the YAML of an alert rules file, passed with `--alert-rules`; `args`: more
 * command-line settings; `queryPort`: the query listener's port, when the caller must know
 * it before the start (a public URL for an OpenID provider's redirect).
 */
export async function startSpindle(opts: { alertRules?: string; args?: string[]; queryPort?: number } = {}): Promise<Spindle> {
  const bin = process.env.SPINDLE_BIN ?? join(REPO_DIR, 'target/debug/spindle');
  const tmp = mkdtempSync(join(tmpdir(), 'spindle-ui-e2e-'));
  const dataDir = join(tmp, 'data');
  const [query, grpc, http, admin] = [opts.queryPort ?? (await freePort()), await freePort(), await freePort(), await freePort()];
  const args = ['--data-dir', dataDir, '--query-addr', `127.0.0.1:${query}`, '--otlp-grpc-addr', `127.0.0.1:${grpc}`, '--otlp-http-addr', `127.0.0.1:${http}`, '--admin-addr', `127.0.0.1:${admin}`, '--sync', 'interval:200', '--log', 'warn'];
  // The other receivers on free loopback ports too, so several spindles run side by side.
  for (const listener of ['jaeger-compact', 'jaeger-binary', 'jaeger-http', 'jaeger-grpc', 'zipkin', 'sampling']) args.push(`--${listener}-addr`, `127.0.0.1:${await freePort()}`);
  if (opts.alertRules !== undefined) {
    const rules = join(tmp, 'alert-rules.yaml');
    writeFileSync(rules, opts.alertRules);
    args.push('--alert-rules', rules);
  }
  args.push(...(opts.args ?? []));
  const child: ChildProcess = spawn(bin, args, { stdio: ['ignore', 'inherit', 'inherit'] });
  let exited = false;
  child.once('exit', () => (exited = true));
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (exited) throw new Error(`spindle (${bin}) exited during startup; build it with: cargo build -p spindle-server`);
    try {
      if ((await fetch(`http://127.0.0.1:${admin}/readyz`)).ok) break;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline) throw new Error('spindle not ready after 30 s');
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    queryUrl: `http://127.0.0.1:${query}`,
    otlpUrl: `http://127.0.0.1:${http}/v1/traces`,
    stop: async () => {
      if (!exited) {
        child.kill('SIGTERM');
        await new Promise((r) => child.once('exit', r));
      }
      rmSync(tmp, { recursive: true, force: true });
    },
  };
}

/** `tenant`: sent as `X-Scope-OrgID`, as a multi-tenant collector would. */
export async function postOtlp(s: Spindle, data: OtlpTracesData, tenant?: string): Promise<void> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (tenant) headers['X-Scope-OrgID'] = tenant;
  const res = await fetch(s.otlpUrl, { method: 'POST', headers, body: JSON.stringify(data) });
  if (!res.ok) throw new Error(`OTLP POST answered ${res.status}: ${await res.text()}`);
}
