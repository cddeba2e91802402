import { defineConfig } from 'vitest/config';

// Browser tests against a real spindle: one server and one Chromium for all files, run
// one file at a time because two cores are shared with cargo builds.
export default defineConfig({
  test: {
    include: ['test/e2e/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    fileParallelism: false,
    globalSetup: ['test/e2e/global-setup.ts'],
    // Analytics answers scan stored spans; on a loaded two-core machine one can take
    // seconds, far past expect.poll's 1 s default.
    expect: { poll: { timeout: 20_000, interval: 100 } },
  },
});
