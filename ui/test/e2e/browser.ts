// Debian's Chromium driven by playwright-core (no browser download): one per test file.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { type Browser, type Page, chromium } from 'playwright-core';
import { REPO_DIR } from './server';

export const SCREENSHOTS = join(REPO_DIR, 'target/ui-screenshots');

export async function launch(): Promise<Browser> {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
}

export async function newPage(browser: Browser, opts: { theme?: 'light' | 'dark'; width?: number; height?: number } = {}): Promise<Page> {
  const context = await browser.newContext({ viewport: { width: opts.width ?? 1440, height: opts.height ?? 900 }, colorScheme: opts.theme ?? 'light' });
  const page = await context.newPage();
  // Any uncaught error in the UI fails the test that caused it.
  page.on('pageerror', (e) => {
    throw e;
  });
  return page;
}

export async function screenshot(page: Page, name: string, opts: { fullPage?: boolean } = {}): Promise<void> {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: opts.fullPage ?? false });
}
