import { describe, test, expect, beforeAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TSC = `${ROOT}node_modules/.bin/tsc`;
const FILE = '__test__/types/machine-usage.ts';

let result;
let diagnostics = [];

// Same compiler options as __test__/tsconfig.json (strict, NodeNext), on the machine usage file only.
beforeAll(() => {
  result = spawnSync(
    TSC,
    [
      '--noEmit',
      '--pretty',
      'false',
      '--strict',
      '--target',
      'ES2022',
      '--lib',
      'ES2022',
      '--module',
      'NodeNext',
      '--moduleResolution',
      'NodeNext',
      '--types',
      'node',
      FILE,
    ],
    { cwd: ROOT, encoding: 'utf8', timeout: 110_000 }
  );
  diagnostics = `${result.stdout}${result.stderr}`.split('\n').filter((l) => /error TS\d+/.test(l));
}, 120_000);

describe('state machine TypeScript types (strict tsc --noEmit)', () => {
  test('machine configs, runners, runAll and helpers are typed; misuse is rejected (types/machine-usage.ts)', () => {
    expect(diagnostics.filter((l) => l.includes('machine-usage.ts'))).toEqual([]);
  });

  test('the shipped declaration files type-check', () => {
    expect(diagnostics.filter((l) => !l.includes('__test__/'))).toEqual([]);
  });

  test('tsc exits 0', () => {
    expect(result.error).toBeUndefined();
    expect(result.status, `${result.stdout}${result.stderr}`).toBe(0);
  });
});
