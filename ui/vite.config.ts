import { defineConfig } from 'vite';

export default defineConfig({
  // Preact's automatic JSX runtime: no React, no compat layer.
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    // The server embeds every file of dist/; source maps would double the binary's UI
    // payload for little use in production.
    sourcemap: false,
    target: 'es2022',
    chunkSizeWarningLimit: 200,
  },
  test: {
    include: ['test/unit/**/*.test.ts'],
  },
});
