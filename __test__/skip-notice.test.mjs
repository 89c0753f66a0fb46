// `npm test` on a machine without Chromium says, after the summary, that the browser tests
// were skipped and how to run them (skip-notice-reporter.mjs). Checked with a vitest run of
// inspector.test.ts in a child process, pointed at a Chromium that does not exist.
import { test, expect } from 'vitest';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

test('a run without Chromium ends with a notice naming the skipped browser tests and how to run them', () => {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^VITEST|^CI$|^NODE_OPTIONS$/.test(k)));
  const res = spawnSync(process.execPath, [`${ROOT}node_modules/vitest/vitest.mjs`, 'run', '__test__/inspector.test.ts'], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 100_000,
    env: { ...env, NO_COLOR: '1', RAMUS_CHROMIUM: '/nonexistent/chromium' },
  });
  const out = `${res.stdout}${res.stderr}`;
  expect(res.status, out).toBe(0);
  const skipped = Number(/Tests\s+\d+ passed \| (\d+) skipped/.exec(res.stdout)?.[1]);
  expect(skipped, out).toBeGreaterThan(0);
  expect(res.stderr).toContain(`${skipped} BROWSER TESTS WERE SKIPPED (__test__/inspector.test.ts): no Chromium at /nonexistent/chromium.`);
  expect(res.stderr).toContain('apt-get install chromium');
  expect(res.stderr).toContain('RAMUS_CHROMIUM');
}, 110_000);
