// The user journeys of issue 8 in a real browser against a real spindle: search → open a
// trace → expand → select a span → read its attributes; compare two traces; the system
// map and a service page; a screenshot of each page under target/ui-screenshots/.

import { readFileSync } from 'node:fs';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest';
import type { Alert, Comparison, ErrorGroup, Graph, KafkaTopic, Outliers, PathSegment, SpanRef, StatsAnswer } from '../../src/api/analytics';
import { formatDuration, formatPercent } from '../../src/model/format';
import type { JaegerTrace } from '../../src/model/trace';
import { edgeLabel } from '../../src/model/monitor';
import { launch, newPage, screenshot } from './browser';

const base = inject('baseUrl');
let browser: Browser;
let page: Page;

/** The server's own answer, to check what the page shows against. */
async function api<T>(path: string): Promise<T> {
  const res = await fetch(`${base}${path}`);
  if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
  return (await res.json()) as T;
}

/** The last hour, as the service page asks for it by default (µs). */
function lastHour(): string {
  const end = Date.now() * 1000;
  return `start=${end - 3600e6}&end=${end}`;
}

const fmtMs = (v: number | null) => formatDuration(v === null ? NaN : v * 1000);

beforeAll(async () => {
  browser = await launch();
  page = await newPage(browser);
});
afterAll(async () => {
  await browser?.close();
});

describe('search', () => {
  test('all services by default, with scatter plot, badges and error counts', async () => {
    await page.goto(`${base}/search?lookback=1h&limit=100`);
    await waitForResults(page);
    const count = await page.textContent('[data-testid=result-count]');
    // 40 workload traces + the fast/slow/error trio (the 10k trace is older than 1h? no: 2 min) + big one.
    expect(Number(count?.split(' ')[0])).toBeGreaterThanOrEqual(43);
    expect(await page.locator('.scatter canvas').count()).toBeGreaterThan(0);
    expect(await page.locator('.result .badge', { hasText: 'storage-service' }).count()).toBeGreaterThan(0);
    expect(await page.locator('.result .error-badge').count()).toBeGreaterThan(0);
    await screenshot(page, '01-search');
  });

  test('filters by service, tag and duration through the form, and the URL carries them', async () => {
    await page.goto(`${base}/search`);
    await page.locator('select[name=service] option', { hasText: 'storage-service' }).waitFor({ state: 'attached' });
    await page.selectOption('select[name=service]', 'storage-service');
    await page.locator('select[name=operation] option', { hasText: 'db_write' }).waitFor({ state: 'attached' });
    await page.selectOption('select[name=operation]', 'db_write');
    await page.fill('input[name=tags]', 'error=true');
    await page.fill('input[name=minDuration]', '1ms');
    await page.click('button[type=submit]');
    await page.waitForURL(/service=storage-service/);
    expect(page.url()).toContain('operation=db_write');
    expect(page.url()).toContain('tags=error%3Dtrue');
    await waitForResults(page);
    const titles = await page.locator('[data-testid=result]').count();
    // Only traces whose db_write failed: the workload's ~10% plus the dedicated error trace.
    expect(titles).toBeGreaterThanOrEqual(1);
    expect(titles).toBeLessThan(20);
    await expect.poll(() => page.locator('.result .error-badge').count()).toBe(titles);
  });

  test('a malformed duration is explained instead of sent', async () => {
    await page.goto(`${base}/search`);
    await page.fill('input[name=minDuration]', '10 parsecs');
    await page.click('button[type=submit]');
    await expect.poll(() => page.textContent('.form-error')).toContain('150ms');
  });

  test('sorting by longest puts the slowest first', async () => {
    await page.goto(`${base}/search?lookback=1h&limit=100&sort=longest`);
    await waitForResults(page);
    const durations = await page.locator('.result .duration').allTextContents();
    const us = durations.map(parseUs);
    expect(us).toEqual([...us].sort((a, b) => b - a));
  });
});

/**
 * Waits for search results; when none come, fails with what the page shows instead (an
 * error, an empty state, a spinner) rather than a bare timeout.
 */
async function waitForResults(p: Page): Promise<void> {
  try {
    await p.waitForSelector('[data-testid=result]', { timeout: 45_000 });
  } catch (e) {
    const shown = await p.locator('.results').textContent().catch(() => null);
    throw new Error(`no search results at ${p.url()}; the results area shows: ${JSON.stringify(shown)} (${(e as Error).message.split('\n')[0]})`);
  }
}

function parseUs(text: string): number {
  const m = /([\d.]+)(µs|ms|s)/.exec(text)!;
  return Number(m[1]) * { µs: 1, ms: 1e3, s: 1e6 }[m[2] as 'µs' | 'ms' | 's'];
}

describe('trace view', () => {
  test('search → open a trace → expand → select a span → read its attributes', async () => {
    await page.goto(`${base}/search?service=storage-service&operation=db_write&tags=error%3Dtrue&lookback=1h`);
    await page.locator('[data-testid=result] .result-title').first().click();
    await page.waitForURL(/\/trace\//);
    await page.waitForSelector('[data-testid=timeline] .tl-row');
    await expect.poll(() => page.textContent('[data-testid=trace-title]')).toBe('ingestion-service: fetch_instrument_data');

    // Collapse the Kafka consumer subtree, then expand it again from the keyboard.
    const consumer = page.locator('.tl-row', { hasText: 'process_message' });
    await consumer.locator('button.toggle').click();
    await expect.poll(() => page.locator('.tl-row', { hasText: 'calculate_bsm' }).count()).toBe(0);
    await consumer.click();
    await page.keyboard.press('ArrowRight');
    await page.waitForSelector('.tl-row:has-text("calculate_bsm")');

    // Select the failing database write and read what it did.
    await page.locator('.tl-row.has-error', { hasText: 'db_write' }).first().click();
    await page.waitForSelector('[data-testid=span-detail]');
    const attrs = await page.textContent('[data-testid=span-attributes]');
    expect(attrs).toContain('db.system');
    expect(attrs).toContain('postgresql');
    expect(attrs).toContain('INSERT INTO quotes');
    await expect.poll(() => page.textContent('[data-testid=span-status]')).toContain('ERROR');
    await expect.poll(() => page.textContent('[data-testid=span-resource]')).toContain('storage-service');
    await expect.poll(() => page.textContent('.events')).toContain('psycopg.OperationalError');
    // The selection is in the URL: a reload shows the same span.
    expect(page.url()).toMatch(/span=[0-9a-f]{16}/);
    await screenshot(page, '02-trace');
    await page.reload();
    await page.waitForSelector('[data-testid=span-detail]');
    await expect.poll(() => page.textContent('[data-testid=span-attributes]')).toContain('postgresql');
  });

  test('critical path, keyboard navigation, find, statistics and flame graph', async () => {
    const id = inject('slowTrace');
    await page.goto(`${base}/trace/${id}`);
    await page.waitForSelector('.tl-row');
    // The pipeline is sequential, so its whole chain through both Kafka hops is critical,
    // the slow calculate_bsm and the last database write included.
    const critRows = await page.locator('.tl-row:has(.crit)').allTextContents();
    for (const op of ['fetch_instrument_data', 'process_message', 'calculate_bsm', 'store_data', 'db_write']) {
      expect(critRows.some((t) => t.includes(op)), op).toBe(true);
    }

    await page.focus('[data-testid=timeline]');
    await page.keyboard.press('Home');
    await page.keyboard.press('ArrowDown');
    await page.keyboard.press('ArrowDown');
    await expect.poll(() => page.textContent('.span-detail h2')).toBe('send_to_kafka');
    await page.keyboard.press('ArrowLeft'); // send_to_kafka has children: collapses it
    await expect.poll(() => page.locator('.tl-row', { hasText: 'process_message' }).count()).toBe(0);
    await page.keyboard.press('ArrowLeft'); // collapsed: goes to the parent
    await expect.poll(() => page.textContent('.span-detail h2')).toBe('fetch_instrument_data');

    await page.keyboard.press('/'); // from the timeline straight into "find"
    await page.keyboard.type('db_write');
    await page.keyboard.press('Enter');
    await expect.poll(() => page.textContent('[data-testid=find-count]')).toBe('1 of 3');
    await expect.poll(() => page.textContent('.span-detail h2')).toBe('db_write');

    await page.click('button[role=tab]:has-text("Statistics")');
    const row = page.locator('[data-testid=stats-table] tr', { hasText: 'db_write' });
    await row.waitFor();
    expect((await row.locator('td').allTextContents())[2]).toBe('3');
    await screenshot(page, '03-trace-statistics');

    await page.click('button[role=tab]:has-text("Flame graph")');
    await page.waitForSelector('[data-testid=flame-canvas]');
    const box = (await page.locator('[data-testid=flame-canvas]').boundingBox())!;
    await page.mouse.click(box.x + 5, box.y + 10);
    await expect.poll(() => page.textContent('.span-detail h2')).toBe('fetch_instrument_data');
    await screenshot(page, '04-trace-flame');
  });

  test('downloads Jaeger and OTLP JSON that open again from disk', async () => {
    const id = inject('errorTrace');
    await page.goto(`${base}/trace/${id}`);
    await page.waitForSelector('.tl-row');
    for (const [button, kind] of [
      ['⤓ OTLP JSON', 'otlp'],
      ['⤓ Jaeger JSON', 'jaeger'],
    ]) {
      const [download] = await Promise.all([page.waitForEvent('download'), page.click(`button:has-text("${button}")`)]);
      const path = await download.path();
      const json = JSON.parse(readFileSync(path, 'utf8'));
      expect(kind === 'otlp' ? json.resourceSpans.length : json.data[0].traceID).toBeTruthy();
      await page.goto(`${base}/search`);
      await page.setInputFiles('[data-testid=open-file]', path);
      await page.waitForURL(/source=file/);
      await page.waitForSelector('.tl-row');
      await expect.poll(() => page.textContent('[data-testid=trace-spans]')).toBe('12');
      await expect.poll(() => page.locator('.tl-row.has-error').count()).toBe(4);
    }
  });

  test('a span link to another trace can be followed to that span', async () => {
    await page.goto(`${base}/trace/${inject('errorTrace')}`);
    await page.locator('.tl-row', { hasText: 'fetch_instrument_data' }).click();
    await page.click('.span-detail .links a');
    await page.waitForURL(new RegExp(`/trace/${inject('fastTrace')}\\?span=`));
    await page.waitForSelector('[data-testid=span-detail]');
    await expect.poll(() => page.textContent('.span-detail h2')).toBe('fetch_instrument_data');
    await expect.poll(() => page.locator('.tl-row.selected').count()).toBe(1);
  });

  test('clicking a dot of the scatter plot opens that trace', async () => {
    await page.goto(`${base}/search?lookback=1h&limit=100`);
    await page.waitForSelector('.scatter .u-over');
    // The 10k-span backfill is the longest trace: its dot is the highest one.
    const over = (await page.locator('.scatter .u-over').boundingBox())!;
    const target = await page.evaluate(() => {
      const canvas = document.querySelector('.scatter canvas') as HTMLCanvasElement;
      const ctx = canvas.getContext('2d')!;
      const { width, height } = canvas;
      const data = ctx.getImageData(0, 0, width, height).data;
      // The topmost pixel in the error colour (the backfill has errors): scan rows downwards.
      for (let y = 0; y < height; y++)
        for (let x = 0; x < width; x++) {
          const i = (y * width + x) * 4;
          if (data[i] > 180 && data[i + 1] < 110 && data[i + 2] < 110) return { x: x / devicePixelRatio, y: y / devicePixelRatio + 3 };
        }
      return null;
    });
    expect(target).not.toBeNull();
    const canvasBox = (await page.locator('.scatter canvas').boundingBox())!;
    await page.mouse.move(canvasBox.x + target!.x, canvasBox.y + target!.y);
    await page.mouse.click(canvasBox.x + target!.x, canvasBox.y + target!.y);
    await page.waitForURL(new RegExp(`/trace/${inject('bigTrace')}`));
    expect(over.width).toBeGreaterThan(0);
  });

  test('an unknown trace id says what to do next', async () => {
    await page.goto(`${base}/trace/00000000000000000000000000abcdef`);
    await page.waitForSelector('.state.error');
    await expect.poll(() => page.textContent('.state.error')).toContain('Search recent traces');
  });
});

describe('compare', () => {
  test("structure diff and per-operation latency deltas: the server's numbers", async () => {
    const a = inject('fastTrace');
    const b = inject('slowTrace');
    await page.goto(`${base}/compare?a=${a}&b=${b}`);
    await page.waitForSelector('[data-testid=structure-diff]');
    await expect.poll(() => page.textContent('[data-testid=compare-source]')).toContain('/api/spindle/compare');
    const c = await api<Comparison>(`/api/spindle/compare?a=${a}&b=${b}`);
    // B retried db_write: the path exists in both with a different count.
    const db = page.locator('[data-testid=structure-diff] tr', { hasText: 'db_write' });
    expect(await db.getAttribute('data-status')).toBe('changed');
    expect((await db.locator('td').allTextContents()).slice(1, 3)).toEqual(['1', '3']);
    // Siblings in the order they ran, not by name as the API lists them.
    const order = (await page.locator('[data-testid=structure-diff] tbody tr').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-path')!))).map((p) => p.split(':').pop());
    expect(order.indexOf('clean_data')).toBeLessThan(order.indexOf('calculate_bsm'));
    expect(order.indexOf('calculate_bsm')).toBeLessThan(order.indexOf('send_enriched'));
    // Every path of the API, with its counts.
    expect(await page.locator('[data-testid=structure-diff] tbody tr').count()).toBe(c.structure.length);
    for (const p of c.structure) {
      const cells = await page.locator(`[data-testid=structure-diff] tr[data-path="${p.path}"] td`).allTextContents();
      expect(cells.slice(1, 3), p.path).toEqual([String(p.countA), String(p.countB)]);
    }
    // Every operation, with the API's counts and totals.
    for (const o of c.operations) {
      const cells = await page.locator(`[data-testid=latency-deltas] tr[data-op="${o.service}/${o.operation}"] td`).allTextContents();
      expect(cells.slice(2, 5), o.operation).toEqual([`${o.countA} → ${o.countB}`, formatDuration(o.totalMsA * 1000), formatDuration(o.totalMsB * 1000)]);
    }
    // calculate_bsm is the biggest latency change of its own work and got slower.
    const first = page.locator('[data-testid=latency-deltas] tbody tr').first();
    expect(await first.textContent()).toContain('calculate_bsm');
    expect(await first.locator('td.worse').count()).toBeGreaterThan(0);
    await screenshot(page, '05-compare', { fullPage: true });
  });

  test('two results ticked on the search page open the comparison', async () => {
    await page.goto(`${base}/search?lookback=1h`);
    await waitForResults(page);
    const boxes = page.locator('[data-testid=result] input[type=checkbox]');
    await boxes.nth(0).check();
    await boxes.nth(1).check();
    await page.click('button:has-text("Compare 2/2")');
    await page.waitForURL(/\/compare\?a=.*&b=/);
    await page.waitForSelector('[data-testid=latency-deltas]');
  });

  test('a trace opened from a file is compared in the browser', async () => {
    const id = inject('errorTrace');
    const trace = await api<{ data: JaegerTrace[] }>(`/api/traces/${id}`);
    await page.goto(`${base}/search`);
    await page.setInputFiles('[data-testid=open-file]', { name: 'error.json', mimeType: 'application/json', buffer: Buffer.from(JSON.stringify(trace)) });
    await page.waitForURL(/source=file/);
    await page.click('nav a:has-text("Compare")');
    await page.fill('input[name=a]', inject('fastTrace'));
    await page.fill('input[name=b]', id);
    await page.click('.compare-picker button[type=submit]');
    await page.waitForSelector('[data-testid=structure-diff]');
    await expect.poll(() => page.textContent('[data-testid=compare-source]')).toContain('compared in the browser');
    // The client diff has per-path times, which the API does not give.
    expect(await page.locator('[data-testid=structure-diff] th', { hasText: 'Time B' }).count()).toBe(1);
  });
});

describe('system map and service page', () => {
  test("the map draws /api/spindle/graph: Kafka and PostgreSQL as virtual nodes, the API's calls, errors and p99 per edge", async () => {
    await page.goto(`${base}/map`);
    await page.waitForSelector('[data-testid=system-map]');
    const end = Date.now() * 1000;
    const g = await api<Graph>(`/api/spindle/graph?start=${end - 24 * 3600e6}&end=${end}`);
    const [raw, enriched] = ['kafka/market-data-raw', 'kafka/market-data-enriched'];
    for (const node of ['ingestion-service', 'processor-service', 'storage-service', raw, enriched, 'postgresql']) {
      expect(await page.locator(`[data-node="${node}"]`).count(), node).toBe(1);
    }
    expect(await page.locator('[data-node]').count()).toBe(g.nodes.length);
    for (const n of g.nodes) expect(((await page.locator(`[data-node="${n.id}"]`).getAttribute('class')) ?? '').includes('virtual'), n.id).toBe(n.virtual);
    // The seed's graph: one node per Kafka topic, so the pipeline reads left to right.
    expect(g.nodes.filter((n) => n.virtual).map((n) => n.id)).toEqual(expect.arrayContaining([raw, enriched, 'postgresql']));
    expect(g.nodes.find((n) => n.id === raw)).toMatchObject({ kind: 'topic', system: 'kafka', topic: 'market-data-raw' });
    for (const edge of [`ingestion-service->${raw}`, `${raw}->processor-service`, `processor-service->${enriched}`, `${enriched}->storage-service`, 'storage-service->postgresql']) {
      expect(await page.locator(`[data-edge="${edge}"]`).count(), edge).toBe(1);
    }
    expect(await page.locator('[data-edge]').count()).toBe(g.edges.length);
    for (const e of g.edges) {
      const label = await page.textContent(`[data-edge-label="${e.parent}->${e.child}"]`);
      expect(label, `${e.parent}->${e.child}`).toBe(edgeLabel(e));
    }
    // 4 workload traces + the error trace wrote to a failing PostgreSQL, 3 times each.
    const pg = g.edges.find((e) => e.parent === 'storage-service' && e.child === 'postgresql')!;
    expect(pg.errorCount).toBe(15);
    expect(await page.textContent('[data-edge-label="storage-service->postgresql"]')).toMatch(new RegExp(`^${pg.callCount} calls · [\\d.]+% err · p99 `));
    expect(await page.locator('[data-edge="storage-service->postgresql"]').getAttribute('class')).toContain('erroring');
    await screenshot(page, '06-system-map');
    await page.click('[data-node="postgresql"]');
    await page.waitForURL(/\/search\?tags=db.system%3Dpostgresql/);
    await page.goBack();
    await page.click(`[data-node="${enriched}"]`);
    await page.waitForURL(/\/search\?tags=messaging.destination.name%3Dmarket-data-enriched/);
    await page.goBack();
    await page.click('[data-node="storage-service"]');
    await page.waitForURL(/\/service\/storage-service/);
  });

  test("the service page shows the stats API's numbers: operations, charts, group by symbol, errors, slowest, outliers, Kafka hops", async () => {
    await page.goto(`${base}/service/storage-service`);
    await page.waitForSelector('[data-testid=operations-table]');
    await expect.poll(() => page.textContent('[data-testid=metrics-source]')).toContain('/api/spindle/stats');
    const range = lastHour();
    const byOp = await api<StatsAnswer>(`/api/spindle/stats?service=storage-service&groupBy=span.name&${range}`);
    const all = await api<StatsAnswer>(`/api/spindle/stats?service=storage-service&${range}`);
    expect(byOp.groups.map((g) => g.group).sort()).toEqual(['db_write', 'prepare_records', 'store_data']);
    // Each operation's calls, error % and percentiles are the API's, and so is the total.
    for (const g of byOp.groups) {
      const cells = await page.locator(`[data-testid=operations-table] tr[data-op="${g.group}"] td`).allTextContents();
      expect(cells, g.group!).toEqual([g.group, String(g.total.calls), cells[2], formatPercent(g.total.errorRatio), fmtMs(g.total.p50Ms), fmtMs(g.total.p90Ms), fmtMs(g.total.p99Ms)]);
    }
    const total = await page.locator('[data-testid=operations-table] tr[data-op=""] td').allTextContents();
    expect(total[1]).toBe(String(all.groups[0].total.calls));
    // 33 clean traces write once, 4 failing ones three times, plus the trio's 1 + 3 + 3.
    expect(byOp.groups.find((g) => g.group === 'db_write')!.total.calls).toBe(52);
    expect(await page.locator('.mini-chart canvas').count()).toBeGreaterThanOrEqual(3);

    // Group by symbol (the default): one row per symbol, with the API's calls.
    const bySymbol = await api<StatsAnswer>(`/api/spindle/stats?service=storage-service&groupBy=symbol&${range}`);
    await page.waitForSelector('[data-testid=group-by-table]');
    expect(await page.locator('[data-testid=group-by-table] tbody tr').count()).toBe(5);
    for (const g of bySymbol.groups) {
      expect(await page.locator(`[data-testid=group-by-table] tr[data-group="${g.group}"] td`).nth(1).textContent(), g.group!).toBe(String(g.total.calls));
    }
    expect(await page.locator('[data-testid=group-by-table] svg.sparkline').count()).toBe(5);

    // Error groups with the API's example traces, linked.
    const errors = await api<{ groups: ErrorGroup[] }>(`/api/spindle/errors?service=storage-service&${range}`);
    await page.waitForSelector('[data-testid=error-groups]');
    await expect.poll(() => page.textContent('[data-testid=error-groups]')).toContain('psycopg.OperationalError');
    const pgErrors = errors.groups.find((g) => g.errorType === 'psycopg.OperationalError')!;
    expect(pgErrors.count).toBe(15);
    const row = page.locator('[data-testid=error-groups] tr', { hasText: 'psycopg.OperationalError' });
    expect(await row.locator('td').nth(2).textContent()).toBe(String(pgErrors.count));
    const links = await row.locator('a.mono').evaluateAll((as) => as.map((a) => a.getAttribute('href')));
    expect(links).toEqual(pgErrors.exampleTraceIDs.map((id) => `/trace/${id}`));

    // Slowest spans and outliers, as the API lists them.
    const slowest = await api<{ spans: SpanRef[] }>(`/api/spindle/slowest?service=storage-service&limit=10&${range}`);
    await page.waitForSelector('[data-testid=slowest] li');
    const slowLinks = await page.locator('[data-testid=slowest] a').evaluateAll((as) => as.map((a) => a.getAttribute('href')));
    expect(slowLinks).toEqual(slowest.spans.map((s) => `/trace/${s.traceID}?span=${s.spanID}`));
    const outliers = await api<Outliers>(`/api/spindle/outliers?service=storage-service&quantile=0.99&limit=10&${range}`);
    await expect.poll(() => page.locator('[data-testid=outliers] li').count()).toBe(outliers.spans.length);

    // storage-service consumes market-data-enriched: the hop count is the API's.
    const hops = await api<{ topics: KafkaTopic[] }>(`/api/spindle/kafka-hops?step=876000h&${range}`);
    const enriched = hops.topics.find((t) => t.topic === 'market-data-enriched')!;
    await page.waitForSelector('[data-testid=kafka-hops]');
    const hopCells = await page.locator('[data-testid=kafka-hops] tr[data-topic="market-data-enriched"] td').allTextContents();
    expect(hopCells.slice(1, 6)).toEqual(['consumes', String(enriched.series[0].count), fmtMs(enriched.series[0].p50Ms), fmtMs(enriched.series[0].p99Ms), fmtMs(enriched.series[0].maxMs)]);
    expect(await page.locator('[data-testid=kafka-hops] tr[data-topic="market-data-raw"]').count()).toBe(0);

    // Its one rule is listed, not firing.
    await expect.poll(() => page.getAttribute('[data-testid=service-alerts] [data-alert=StorageSlowWrites] .alert-state', 'class')).toContain('state-inactive');
    await screenshot(page, '07-service', { fullPage: true });

    // Picking an operation charts it alone and narrows the lists below.
    await page.click('[data-testid=operations-table] tr[data-op="db_write"]');
    await page.waitForURL(/op=db_write/);
    await expect.poll(() => page.textContent('.mini-chart h3')).toContain('db_write');
    await expect.poll(async () => (await page.locator('[data-testid=slowest] a').allTextContents()).every((t) => t === 'db_write')).toBe(true);
  });

  test('group by another attribute, typed in; a key no span carries says which keys exist', async () => {
    await page.goto(`${base}/service/processor-service?op=calculate_bsm`);
    await page.waitForSelector('[data-testid=group-by-table]');
    await page.fill('input[name=groupBy]', 'model');
    await page.press('input[name=groupBy]', 'Enter');
    await page.waitForURL(/groupBy=model/);
    await expect.poll(() => page.locator('[data-testid=group-by-table] tbody tr').allTextContents()).toEqual([expect.stringContaining('black-scholes-merton')]);
    await page.goto(`${base}/service/processor-service?groupBy=no.such.key`);
    await page.waitForSelector('[data-testid=group-by-empty]');
    await expect.poll(() => page.locator('[data-testid=group-by-empty] button', { hasText: 'symbol' }).count()).toBe(1);
  });

  test('a service without spans in the range says what to do next', async () => {
    await page.goto(`${base}/service/no-such-service`);
    await page.waitForSelector('.state.empty');
    await expect.poll(() => page.textContent('.state.empty')).toContain('No spans of no-such-service');
  });

  test('a firing alert shows on its service page, with both Kafka topics of a middle service', async () => {
    await page.goto(`${base}/service/processor-service`);
    await page.waitForSelector('[data-testid=service-alerts]');
    await expect.poll(() => page.getAttribute('[data-testid=service-alerts] [data-alert=ProcessorErrors] .alert-state', 'class')).toContain('state-firing');
    await page.waitForSelector('[data-testid=kafka-hops]');
    expect(await page.textContent('[data-testid=kafka-hops] tr[data-topic="market-data-raw"] td:nth-child(2)')).toBe('consumes');
    expect(await page.textContent('[data-testid=kafka-hops] tr[data-topic="market-data-enriched"] td:nth-child(2)')).toBe('produces');
    await screenshot(page, '11-service-processor', { fullPage: true });
  });
});

describe('alerts', () => {
  test('the alerts page lists every rule with its state, value and example traces', async () => {
    await page.goto(`${base}/alerts`);
    await page.waitForSelector('[data-testid=alerts-table]');
    const rules = await api<{ alerts: Alert[] }>('/api/spindle/alerts');
    expect(rules.alerts.map((a) => a.name).sort()).toEqual(['ProcessorErrors', 'StorageSlowWrites']);
    await expect.poll(() => page.getAttribute('tr[data-alert=ProcessorErrors]', 'data-state')).toBe('firing');
    expect(await page.getAttribute('tr[data-alert=StorageSlowWrites]', 'data-state')).toBe('inactive');
    // Firing first.
    expect(await page.locator('[data-testid=alerts-table] tbody tr').first().getAttribute('data-alert')).toBe('ProcessorErrors');
    const firing = (await api<{ alerts: Alert[] }>('/api/spindle/alerts')).alerts.find((a) => a.name === 'ProcessorErrors')!;
    // Three failed messages, each an error on calculate_bsm and on process_message.
    expect(firing.value).toBe(6);
    const row = page.locator('tr[data-alert=ProcessorErrors]');
    await expect.poll(() => row.locator('td').nth(4).textContent()).toBe('6');
    expect(await row.textContent()).toContain('severity=page');
    expect(await row.locator('a.mono').count()).toBe(firing.exampleTraceIDs.length);
    await expect.poll(() => page.textContent('[data-testid=firing-count]')).toBe('1');
    await screenshot(page, '12-alerts');
    // An example trace opens the failure.
    await row.locator('a.mono').first().click();
    await page.waitForURL(/\/trace\//);
    await page.waitForSelector('.tl-row.has-error');
  });
});

describe('critical path', () => {
  async function highlighted(p: Page, id: string): Promise<Set<string>> {
    await p.goto(`${base}/trace/${id}`);
    await p.waitForSelector('.tl-row');
    return new Set(await p.locator('.tl-row:has(.crit)').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-span-id')!)));
  }

  test('the highlighted spans are the segments of /api/spindle/traces/{id}/critical-path', async () => {
    // Tall enough that every row of the 36-span trace is rendered.
    const tall = await newPage(browser, { height: 1400 });
    const id = inject('syncTrace');
    const server = await api<{ segments: PathSegment[] }>(`/api/spindle/traces/${id}/critical-path`);
    const expected = new Set(server.segments.map((s) => s.spanID));
    const shown = await highlighted(tall, id);
    expect(await tall.locator('.tl-row').count()).toBe(36);
    expect(expected.size).toBeGreaterThan(3);
    expect(expected.size).toBeLessThan(36); // parallel children: not every span is critical
    expect([...shown].sort()).toEqual([...expected].sort());
    await tall.context().close();
  });

  test('across a Kafka hop the UI follows the consumer; the server stops at the producer', async () => {
    // The server clips a child to its parent's end, so an asynchronous consumer (it
    // starts after the producer span ended) is never on its path; the UI's is
    // Kafka-aware. They agree on everything before the hop, and the UI adds exactly the
    // spans downstream of a consumer.
    const id = inject('slowTrace');
    const server = new Set((await api<{ segments: PathSegment[] }>(`/api/spindle/traces/${id}/critical-path`)).segments.map((s) => s.spanID));
    const shown = await highlighted(page, id);
    const trace = (await api<{ data: JaegerTrace[] }>(`/api/traces/${id}`)).data[0];
    const byId = new Map(trace.spans.map((s) => [s.spanID, s]));
    const parent = (s: JaegerTrace['spans'][number]) => byId.get(s.references.find((r) => r.refType === 'CHILD_OF')?.spanID ?? '');
    const isConsumer = (s: JaegerTrace['spans'][number]) => s.tags.some((t) => t.key === 'span.kind' && t.value === 'consumer');
    const belowConsumer = (s: JaegerTrace['spans'][number]) => {
      for (let c: JaegerTrace['spans'][number] | undefined = s; c; c = parent(c)) if (isConsumer(c)) return true;
      return false;
    };
    for (const sid of server) expect(shown.has(sid), `server's ${byId.get(sid)?.operationName} highlighted`).toBe(true);
    const extra = [...shown].filter((sid) => !server.has(sid));
    for (const sid of extra) expect(belowConsumer(byId.get(sid)!), byId.get(sid)!.operationName).toBe(true);
  });
});

describe('themes', () => {
  test('dark theme follows the system and the toggle', async () => {
    const dark = await newPage(browser, { theme: 'dark' });
    await dark.goto(`${base}/trace/${inject('errorTrace')}`);
    await dark.waitForSelector('.tl-row');
    await expect.poll(() => dark.getAttribute('html', 'data-theme')).toBe('dark');
    await dark.locator('.tl-row.has-error').first().click();
    await screenshot(dark, '08-trace-dark');
    await dark.goto(`${base}/service/processor-service`);
    await dark.waitForSelector('[data-testid=kafka-hops]');
    await dark.waitForSelector('[data-testid=outliers]');
    await screenshot(dark, '13-service-dark', { fullPage: true });
    await dark.goto(`${base}/trace/${inject('errorTrace')}`);
    await dark.waitForSelector('.tl-row');
    await dark.click('button[aria-label="Toggle dark theme"]');
    // Preact renders on the next tick: wait for the attribute rather than racing it.
    await dark.waitForFunction(() => document.documentElement.dataset.theme === 'light');
    await dark.reload();
    await expect.poll(() => dark.getAttribute('html', 'data-theme')).toBe('light'); // the choice is remembered
    await dark.context().close();
  });
});
