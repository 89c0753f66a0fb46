import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['__test__/**/*.test.{js,mjs,cjs,ts,mts}'],
    // The engine is a native addon: run every file in its own child process.
    pool: 'forks',
    testTimeout: 15_000,
    hookTimeout: 120_000,
    // The default output, then a loud notice when the browser tests were skipped.
    reporters: ['default', './__test__/skip-notice-reporter.mjs'],
  },
});
