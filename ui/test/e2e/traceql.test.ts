// TraceQL on the search page in a real browser against a spindle of its own, loaded over
// OTLP/HTTP with a small quote workload: a query written through the editor's completion,
// its results checked against `/api/search`'s own answer, the matched spans highlighted in
// the trace view, the URL rerunning the query, a metrics query charted from
// `/api/metrics/query_range`, and a bad query's parse error with its caret.

import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { TempoQueryRangeResponse, TempoSearchResponse } from '../../src/api/tempo';
import type { OtlpSpan, OtlpTracesData } from '../../src/model/formats';
import { launch, newPage, screenshot } from './browser';
import { type Spindle, postOtlp, startSpindle } from './server';

const SYMBOLS = ['TK042', 'TK043', 'TK042', 'TK044', 'TK042', 'TK043'];
const SERVICES = ['quote-api', 'pricing', 'storage'];
const QUERY = '{ resource.service.name = "pricing" && span.symbol = "TK042" }';
const METRICS_QUERY = '{ } | rate() by (resource.service.name)';
const BAD_QUERY = '{ span.symbol = }';

let spindle: Spindle;
let base: string;
let browser: Browser;
let page: Page;
/** trace id → the ids of its `price_lookup` spans for TK042 (what QUERY matches). */
const expected = new Map<string, string[]>();

const hex = (n: number, len: number) => n.toString(16).padStart(len, '0');

/**
 * Trace k: quote-api `GET /quote` (server) → pricing `price_lookup` (symbol) → storage
 * `db_write`; the third trace looks its symbol up twice, so one result has two matched spans.
 */
function quoteTrace(k: number, symbol: string, startMs: number): { traceId: string; data: OtlpTracesData; matched: string[] } {
  // Ids without leading zeros, which Tempo's answers would strip from trace ids.
  const traceId = `7ace${hex(k, 28)}`;
  let seq = 0;
  const byService = new Map<string, OtlpSpan[]>(SERVICES.map((s) => [s, []]));
  const add = (service: string, name: string, parent: OtlpSpan | null, offMs: number, durMs: number, kind: number, attributes: OtlpSpan['attributes'] = []) => {
    const start = BigInt(startMs + offMs) * 1_000_000n;
    const sp: OtlpSpan = {
      traceId,
      spanId: `5${hex((k + 1) * 0x100 + ++seq, 15)}`,
      name,
      kind,
      startTimeUnixNano: String(start),
      endTimeUnixNano: String(start + BigInt(durMs * 1_000_000)),
      attributes,
    };
    if (parent) sp.parentSpanId = parent.spanId;
    byService.get(service)!.push(sp);
    return sp;
  };
  const root = add('quote-api', 'GET /quote', null, 0, 40, 2, [{ key: 'http.route', value: { stringValue: '/quote' } }]);
  const matched: string[] = [];
  for (let n = 0; n < (k === 2 ? 2 : 1); n++) {
    const lookup = add('pricing', 'price_lookup', root, 2 + n * 12, 10, 3, [{ key: 'symbol', value: { stringValue: symbol } }]);
    if (symbol === 'TK042') matched.push(lookup.spanId);
    add('storage', 'db_write', lookup, 4 + n * 12, 5, 3, [{ key: 'db.system', value: { stringValue: 'postgresql' } }]);
  }
  const data: OtlpTracesData = {
    resourceSpans: SERVICES.map((service) => ({
      resource: { attributes: [{ key: 'service.name', value: { stringValue: service } }] },
      scopeSpans: [{ scope: { name: 'ui-traceql-test' }, spans: byService.get(service)! }],
    })),
  };
  return { traceId, data, matched };
}

/** The server's own answer, to check what the page shows against. */
async function api<T>(path: string): Promise<T> {
  const res = await fetch(`${base}${path}`);
  if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
  return (await res.json()) as T;
}

function lastHour(): string {
  const end = Math.ceil(Date.now() / 1000);
  return `start=${end - 3600}&end=${end}`;
}

beforeAll(async () => {
  spindle = await startSpindle();
  base = spindle.queryUrl;
  const now = Date.now();
  const traces = SYMBOLS.map((symbol, k) => quoteTrace(k, symbol, now - 120_000 + k * 10_000));
  for (const t of traces) if (t.matched.length) expected.set(t.traceId, t.matched);
  await postOtlp(spindle, { resourceSpans: traces.flatMap((t) => t.data.resourceSpans) });
  // Searchable once the next sync has run.
  for (let deadline = Date.now() + 20_000; ; ) {
    const found = (await api<TempoSearchResponse>(`/api/search?q=${encodeURIComponent(QUERY)}&${lastHour()}&limit=20&spss=3`)).traces?.length ?? 0;
    if (found === expected.size) break;
    if (Date.now() > deadline) throw new Error(`/api/search found ${found} traces of ${expected.size} after 20 s`);
    await new Promise((r) => setTimeout(r, 200));
  }
  browser = await launch();
  page = await newPage(browser);
});
afterAll(async () => {
  await browser?.close();
  await spindle?.stop();
});

/** Waits for TraceQL results; when none come, fails with what the page shows instead. */
async function waitForResults(p: Page): Promise<void> {
  try {
    await p.waitForSelector('[data-testid=traceql-result]', { timeout: 30_000 });
  } catch (e) {
    const shown = await p.locator('.traceql-page').textContent().catch(() => null);
    throw new Error(`no TraceQL results at ${p.url()}; the page shows: ${JSON.stringify(shown)} (${(e as Error).message.split('\n')[0]})`);
  }
}

/** Waits for the completion list to offer `label`. */
async function offered(p: Page, label: string): Promise<void> {
  await p.locator('[data-testid=completions] li .label', { hasText: label }).first().waitFor();
}

const editor = 'textarea[name=traceql]';

describe('TraceQL search', () => {
  test('a query written with completion lists the matching traces and their matched spans, as /api/search answers', async () => {
    await page.goto(`${base}/search`);
    await page.click('button[role=tab]:has-text("TraceQL")');
    await page.waitForURL(/mode=traceql/);
    await page.click(editor);

    // Attribute names come from /api/v2/search/tags: Tab accepts, and the operators follow.
    await page.keyboard.type('{ resource.serv');
    await offered(page, 'resource.service.name');
    await page.keyboard.press('Tab');
    expect(await page.inputValue(editor)).toBe('{ resource.service.name ');
    await offered(page, '!=');
    // Values come from /api/v2/search/tag/…/values, strings quoted; typing narrows them.
    await page.keyboard.type('= "pri');
    await expect.poll(() => page.locator('[data-testid=completions] li .label').allTextContents()).toEqual(['"pricing"']);
    await page.keyboard.press('Enter');
    expect(await page.inputValue(editor)).toBe('{ resource.service.name = "pricing"');

    // Arrows move through the list; Escape closes it.
    await page.keyboard.type(' && span.sym');
    await offered(page, 'span.symbol');
    await page.keyboard.press('ArrowDown');
    await page.keyboard.press('ArrowUp');
    await page.keyboard.press('Enter');
    await page.keyboard.type('= ');
    // The values of span.symbol narrowed by the condition before (all three symbols are priced).
    await offered(page, '"TK042"');
    const symbols = await page.locator('[data-testid=completions] li .label').allTextContents();
    expect(symbols).toEqual(expect.arrayContaining(['"TK042"', '"TK043"', '"TK044"']));
    await page.keyboard.press('Escape');
    expect(await page.locator('[data-testid=completions]').count()).toBe(0);
    await page.keyboard.type('"TK042" }');
    expect(await page.inputValue(editor)).toBe(QUERY);
    await page.keyboard.press('Enter');

    await page.waitForURL(/[?&]q=/);
    const url = new URL(page.url());
    expect(Object.fromEntries(url.searchParams)).toMatchObject({ mode: 'traceql', q: QUERY, lookback: '1h', limit: '20' });
    await waitForResults(page);

    const answer = await api<TempoSearchResponse>(`/api/search?q=${encodeURIComponent(QUERY)}&${lastHour()}&limit=20&spss=3`);
    const ids = await page.locator('[data-testid=traceql-result]').evaluateAll((els) => els.map((e) => e.getAttribute('data-trace-id')!));
    expect(ids.sort()).toEqual(answer.traces!.map((t) => t.traceID).sort());
    expect(ids.sort()).toEqual([...expected.keys()].sort());
    expect(await page.textContent('[data-testid=traceql-result-count]')).toBe(`${expected.size} traces`);

    for (const t of answer.traces!) {
      const result = page.locator(`[data-testid=traceql-result][data-trace-id="${t.traceID}"]`);
      await expect.poll(() => result.locator('.result-title').textContent()).toContain(`${t.rootServiceName}: ${t.rootTraceName}`);
      expect(t.rootServiceName).toBe('quote-api');
      // The matched spans, highlighted: the TK042 lookups of this trace and nothing else.
      const shown = await result.locator('.matched-span[data-matched=true]').evaluateAll((els) => els.map((e) => e.getAttribute('data-span-id')!));
      expect(shown.sort()).toEqual(expected.get(t.traceID)!.slice().sort());
      for (const text of await result.locator('.matched-span').allTextContents()) expect(text).toContain('price_lookup');
      const service = t.spanSets?.[0]?.spans?.[0]?.attributes?.find((a) => a.key === 'service.name')?.value.stringValue;
      if (service) expect(await result.locator('.matched-span .badge').first().textContent()).toContain(service);
    }
    await screenshot(page, '14-traceql-results');
  });

  test('a result opens the trace view with its matched spans marked', async () => {
    const [traceId, spans] = [...expected].find(([, s]) => s.length === 2)!;
    await page.goto(`${base}/search?mode=traceql&q=${encodeURIComponent(QUERY)}&lookback=1h`);
    await waitForResults(page);
    await page.locator(`[data-testid=traceql-result][data-trace-id="${traceId}"] .result-title`).click();
    await page.waitForURL(/\/trace\/[0-9a-f]+\?highlight=/);
    await page.waitForSelector('[data-testid=timeline] .tl-row');
    const marked = page.locator('.tl-row[data-matched=true]');
    await expect.poll(() => marked.count()).toBe(2);
    expect((await marked.evaluateAll((rows) => rows.map((r) => r.getAttribute('data-span-id')!))).sort()).toEqual(spans.slice().sort());
    for (const cls of await marked.evaluateAll((rows) => rows.map((r) => r.className))) expect(cls).toContain('matched');
    expect(await marked.first().textContent()).toContain('price_lookup');
    // The other spans are not marked.
    expect(await page.locator('.tl-row:not([data-matched])').count()).toBe(3);
    expect(await page.textContent('[data-testid=highlight-count]')).toContain('2 matched');
    // Stepping through the matches selects them.
    await page.click('button[aria-label="next matched span"]');
    await expect.poll(() => page.textContent('.span-detail h2')).toBe('price_lookup');
    await screenshot(page, '15-traceql-trace');

    // A matched span's own link opens the trace at that span.
    await page.goBack();
    await waitForResults(page);
    // Listed in start order: the second is the second lookup.
    await page.locator(`[data-testid=traceql-result][data-trace-id="${traceId}"] .matched-span a`).nth(1).click();
    await page.waitForURL(new RegExp(`span=${spans[1]}`));
    await page.waitForSelector('[data-testid=span-detail]');
    await expect.poll(() => page.locator('.tl-row.selected[data-matched=true]').count()).toBe(1);
  });

  test('the URL is the query: reload, back and forward rerun it', async () => {
    await page.goto(`${base}/search?mode=traceql&q=${encodeURIComponent(QUERY)}&lookback=1h&limit=20`);
    await waitForResults(page);
    await page.reload();
    await waitForResults(page);
    expect(await page.inputValue(editor)).toBe(QUERY);
    expect(await page.locator('[data-testid=traceql-result]').count()).toBe(expected.size);

    // A second query through the editor, then back to the first and forward again.
    const other = '{ resource.service.name = "pricing" && span.symbol = "TK044" }';
    await page.fill(editor, other);
    await page.keyboard.press('Escape');
    await page.click('.traceql-form button[type=submit]');
    await page.waitForURL((u) => u.searchParams.get('q') === other);
    await expect.poll(() => page.locator('[data-testid=traceql-result]').count()).toBe(1);
    await page.goBack();
    await expect.poll(() => page.inputValue(editor)).toBe(QUERY);
    await expect.poll(() => page.locator('[data-testid=traceql-result]').count()).toBe(expected.size);
    await page.goForward();
    await expect.poll(() => page.inputValue(editor)).toBe(other);
    await expect.poll(() => page.locator('[data-testid=traceql-result]').count()).toBe(1);
  });

  test('a metrics query is charted, one line per series, as /api/metrics/query_range answers', async () => {
    await page.goto(`${base}/search?mode=traceql&lookback=1h`);
    await page.fill(editor, METRICS_QUERY);
    await page.keyboard.press('Escape');
    await page.keyboard.press('Enter');
    await page.waitForURL((u) => u.searchParams.get('q') === METRICS_QUERY);
    await page.waitForSelector('[data-testid=metrics-result] canvas', { timeout: 30_000 });
    const answer = await api<TempoQueryRangeResponse>(`/api/metrics/query_range?q=${encodeURIComponent(METRICS_QUERY)}&${lastHour()}&step=30s`);
    const services = (answer.series ?? []).map((s) => s.labels?.find((l) => l.key === 'resource.service.name')?.value.stringValue).sort();
    expect(services).toEqual([...SERVICES].sort());
    const legend = await page.locator('[data-testid=series-legend] li').allTextContents();
    expect(legend).toHaveLength(services.length);
    for (const svc of SERVICES) expect(legend.some((l) => l.includes(`resource.service.name="${svc}"`)), svc).toBe(true);
    // The chart draws one line per series (uPlot: the x series plus one per line).
    expect(await page.locator('[data-testid=metrics-result] .u-over').count()).toBe(1);
    await screenshot(page, '16-traceql-metrics');
  });

  test("a bad query shows the server's message under the editor, with a caret at its column", async () => {
    const res = await fetch(`${base}/api/search?q=${encodeURIComponent(BAD_QUERY)}&${lastHour()}&limit=20&spss=3`);
    expect(res.status).toBe(400);
    const message = (await res.text()).trim();
    await page.goto(`${base}/search?mode=traceql&q=${encodeURIComponent(BAD_QUERY)}&lookback=1h`);
    await page.waitForSelector('[data-testid=traceql-error]');
    await expect.poll(() => page.textContent('[data-testid=traceql-error] .message')).toBe(message);
    const column = /col(?:umn)? (\d+)/.exec(message)?.[1];
    expect(column, `a column in "${message}"`).toBeDefined();
    expect(await page.getAttribute('[data-testid=error-caret]', 'data-column')).toBe(column);
    // The caret sits under that column of the query.
    const lines = (await page.textContent('[data-testid=error-caret]'))!.split('\n');
    expect(lines[0]).toBe(BAD_QUERY);
    expect(lines[1].indexOf('^')).toBe(Number(column) - 1);
    expect(await page.locator(`${editor}.invalid`).count()).toBe(1);
    await screenshot(page, '17-traceql-error');
  });

  test('switching from the form carries its search over as TraceQL', async () => {
    await page.goto(`${base}/search?service=pricing&lookback=1h&limit=20`);
    await page.click('button[role=tab]:has-text("TraceQL")');
    await page.waitForURL(/mode=traceql/);
    await expect.poll(() => page.inputValue(editor)).toBe('{ resource.service.name = "pricing" }');
    await waitForResults(page);
    expect(await page.locator('[data-testid=traceql-result]').count()).toBe(SYMBOLS.length);
    await page.click('button[role=tab]:has-text("Search")');
    await page.waitForSelector('form.search-form');
    expect(new URL(page.url()).searchParams.get('mode')).toBeNull();
  });
});
