import { defineConfig } from 'vitest/config';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('.', import.meta.url));
const escape = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

export default defineConfig({
  test: {
    include: ['__test__/**/*.test.{js,mjs,cjs,ts,mts}'],
    // The engine is a native addon: run every file in its own child process.
    pool: 'forks',
    testTimeout: 15_000,
    hookTimeout: 120_000,
    server: {
      deps: {
        // `import ... from 'ramus'` is a self-reference to this repo, which Vite would otherwise
        // transform like app source. A user gets the package from node_modules, which Vitest hands
        // to Node as-is: do the same here so the tests load exactly what Node loads.
        external: [new RegExp(`^${escape(root)}(lib/|index\\.js$)`)],
      },
    },
  },
});
