// The torture test at a small size (scripts/torture.mjs; `npm run torture` runs 10,000
// runs): worker processes over one SQLite file (or PostgreSQL, in the second pass), some SIGKILLed mid-step, and every run
// finished right, every step committed once, no step ran in two places at once.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, test } from 'vitest';

import { pgSchema } from './engine-fixtures';

const script = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'scripts', 'torture.mjs');

test('three workers, three killed mid-run and replaced: nothing lost, nothing doubled', async () => {
  const pg = pgSchema('torture');
  const db = pg ? ['--db', pg] : [];
  const args = [script, '--runs', '600', '--workers', '3', '--kills', '3', '--kill-ms', '150', '--lease', '1500', ...db];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  expect(out).toContain('ok: every run finished right');
  expect(code, out).toBe(0);
  expect(out).toMatch(/3 workers killed/);
}, 120_000);
