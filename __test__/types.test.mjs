import { describe, test, expect, beforeAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { existsSync } from 'node:fs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TSC = `${ROOT}node_modules/.bin/tsc`;

let result;
let diagnostics = [];

beforeAll(() => {
  result = spawnSync(TSC, ['--noEmit', '--pretty', 'false', '-p', '__test__/tsconfig.json'], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 110_000,
  });
  diagnostics = `${result.stdout}${result.stderr}`
    .split('\n')
    .filter((l) => /error TS\d+/.test(l));
}, 120_000);

const errorsIn = (file) => diagnostics.filter((l) => l.includes(file));

describe('TypeScript types (strict tsc --noEmit)', () => {
  test('the package ships typings where package.json points', () => {
    expect(existsSync(`${ROOT}lib/index.d.ts`)).toBe(true);
  });

  test("'ramus' resolves to typed declarations (no implicit any module)", () => {
    const unresolved = diagnostics.filter((l) => /TS2307|TS7016/.test(l));
    expect(unresolved).toEqual([]);
  });

  test('context and rootInput are typed; misuse is rejected (types/usage.ts)', () => {
    expect(errorsIn('usage.ts')).toEqual([]);
  });

  test('node inputs and outputs are typed via DagNode / NodeArgs (types/node-types.ts)', () => {
    expect(errorsIn('node-types.ts')).toEqual([]);
  });

  test('chain and DagBuilder.then type each step from the one before (types/chain.ts)', () => {
    expect(errorsIn('chain.ts')).toEqual([]);
  });

  test('engine.register types its runners and keys; typed definitions run durably with their types (types/durable.ts)', () => {
    expect(errorsIn('durable.ts')).toEqual([]);
  });

  test("a machine's events, event data and output are typed from its config (types/machine-events.ts)", () => {
    expect(errorsIn('machine-events.ts')).toEqual([]);
  });

  test('tools are typed from a Tools parameter; tolerateParentErrors makes parents possibly undefined (types/tools-and-parents.ts)', () => {
    expect(errorsIn('tools-and-parents.ts')).toEqual([]);
  });

  test('time travel and live editing are typed: fork, rerun, updateInput, addNodes, mergeDag, expand and map (types/travel.ts)', () => {
    expect(errorsIn('travel.ts')).toEqual([]);
  });

  test('types resolve from an ES module too (types/usage-esm.mts)', () => {
    expect(errorsIn('usage-esm.mts')).toEqual([]);
  });

  test('the shipped declaration files themselves type-check', () => {
    const libErrors = diagnostics.filter((l) => !l.includes('__test__/'));
    expect(libErrors).toEqual([]);
  });

  test('tsc exits 0 overall', () => {
    expect(result.error).toBeUndefined();
    expect(result.status, `${result.stdout}${result.stderr}`).toBe(0);
  });
});
