// Run ownership: a live run is held by one engine through a lease; another engine gets a
// LeaseHeldError until the lease is released or expires, and a holder that lost its lease
// can no longer write. Across processes too: a stopped (SIGSTOP) holder is taken over
// once its lease expires and, continued, cannot write.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { Engine, LeaseHeldError, TestClock } from 'ramus';

import { waitUntil, within } from './helpers.mjs';
import { pgSchema } from './engine-fixtures';

const RAMUS = createRequire(import.meta.url).resolve('ramus');
const T0 = Date.UTC(2026, 0, 1);
const dirs: string[] = [];
const engines: Engine[] = [];
afterEach(async () => {
  for (const e of engines.splice(0)) await e.close().catch(() => {});
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'ramus-lease-'));
  dirs.push(d);
  return d;
}

/** A new database: a SQLite file, or a new PostgreSQL schema in the second pass. */
function dbFile(): string {
  return pgSchema('lease') ?? path.join(tempDir(), 'runs.sqlite');
}

const APPROVAL = {
  name: 'approval',
  initial: 'ask',
  nodes: { ask: { runner: 'ask', transition: { approve: 'done' } }, done: { runner: 'done', final: true } },
};

function engineOn(db: string, clock: TestClock, leaseMs = 1000): Engine {
  const e = new Engine({ db, durability: 'sync', clock, leaseMs });
  e.register('ask', (async () => 'asked') as any);
  e.register('done', (async ({ event }: any) => `approved by ${event?.data?.by}`) as any);
  engines.push(e);
  return e;
}

async function waiting(engine: Engine, runId: string): Promise<void> {
  await waitUntil(() => engine.run(runId)?.status === 'waitingForEvent', 'waiting for an event');
}

describe('leases between engines', () => {
  test('a run held by a live engine cannot be resumed elsewhere; released, it can', async () => {
    const db = dbFile();
    const a = engineOn(db, new TestClock(T0));
    const run = a.start(APPROVAL);
    await waiting(a, run.runId);
    const b = engineOn(db, new TestClock(T0 + 10));
    const err = await b.resume(run.runId).catch((e) => e);
    expect(err).toBeInstanceOf(LeaseHeldError);
    expect(err).toMatchObject({ code: 'ERR_LEASE_HELD', runId: run.runId, expiresAt: T0 + 1000 });
    expect(err.holder).toMatch(new RegExp(`\\(pid ${process.pid} on `));
    expect(err.message).toContain('until 2026-01-01T00:00:01.000Z');
    // resumeAll() reports it the same way.
    await expect(b.resumeAll()).rejects.toThrow(/is held by engine/);
    // Closing hands the lease back: B takes the run at once and finishes it.
    await a.close();
    const resumed = await b.resume(run.runId);
    b.send(run.runId, { type: 'approve', data: { by: 'ada' } });
    expect(await within(resumed.finished, 2000, 'resumed')).toBe('approved by ada');
  });

  test('an expired lease is taken over; the old holder cannot write any more', async () => {
    const db = dbFile();
    const clockA = new TestClock(T0);
    const a = engineOn(db, clockA);
    const run = a.start(APPROVAL);
    await waiting(a, run.runId);
    // B's clock is past A's lease (A did not renew: its clock stood still).
    const b = engineOn(db, new TestClock(T0 + 5000));
    const taken = await b.resume(run.runId);
    // A still runs the machine in memory; the event it takes must not be written.
    a.send(run.runId, { type: 'approve', data: { by: 'stale' } });
    await expect(within(run.finished, 2000, 'stale run')).rejects.toThrow(/no longer held by this engine/);
    b.send(run.runId, { type: 'approve', data: { by: 'bob' } });
    expect(await within(taken.finished, 2000, 'taken over')).toBe('approved by bob');
    expect(b.run(run.runId)).toMatchObject({ status: 'finished', output: 'approved by bob' });
    expect(b.steps(run.runId).filter((s) => s.node === 'done').map((s) => s.output)).toEqual(['approved by bob']);
  });
});

describe('a holder stopped past its lease (SIGSTOP), then continued', () => {
  test('is taken over, and its step, continued, cannot write', async () => {
    const db = dbFile();
    const dir = tempDir();
    const script = path.join(dir, 'holder.mjs');
    fs.writeFileSync(
      script,
      `
      import { createRequire } from 'node:module';
      import fs from 'node:fs';
      const require = createRequire(import.meta.url);
      const [ramusPath, db, dir] = process.argv.slice(2);
      const { Engine } = require(ramusPath);
      const engine = new Engine({ db, durability: 'sync', leaseMs: 300 });
      engine.register('work', async () => {
        fs.writeFileSync(dir + '/started', '');
        while (!fs.existsSync(dir + '/go')) await new Promise((r) => setTimeout(r, 5));
        return 'child';
      });
      const run = engine.start({ name: 'job', initial: 'work', nodes: { work: { runner: 'work', transition: 'done' }, done: { final: true } } });
      fs.writeFileSync(dir + '/run', run.runId);
      const outcome = await run.finished.then((v) => ({ ok: v }), (e) => ({ error: e.message }));
      fs.writeFileSync(dir + '/outcome.json', JSON.stringify(outcome));
      await engine.close().catch(() => {});
      `,
    );
    const child = spawn(process.execPath, [script, RAMUS, db, dir], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
    try {
      await waitUntil(() => fs.existsSync(path.join(dir, 'started')), `the child's step started ${stderr}`, 8000);
      const runId = fs.readFileSync(path.join(dir, 'run'), 'utf8');
      child.kill('SIGSTOP');
      // Past the child's lease: its clock is the system's; this engine's is ahead of it.
      const engine = new Engine({ db, durability: 'sync', clock: new TestClock(Date.now() + 60_000) });
      engines.push(engine);
      engine.register('work', (async () => 'parent') as any);
      const run = await engine.resume(runId);
      expect(await within(run.finished, 4000, 'taken over')).toBe('parent');
      // Continued, the child's step returns: its write is refused, its run stops.
      fs.writeFileSync(path.join(dir, 'go'), '');
      child.kill('SIGCONT');
      await within(exited, 8000, 'child exits');
      const outcome = JSON.parse(fs.readFileSync(path.join(dir, 'outcome.json'), 'utf8'));
      if (!outcome.error) fs.writeFileSync('/tmp/lease-debug.json', JSON.stringify({ outcome, stderr, steps: engine.steps(runId), run: engine.run(runId) }));
      expect(outcome.error, JSON.stringify(outcome) + stderr + JSON.stringify(engine.steps(runId))).toMatch(/no longer held by this engine/);
      expect(engine.run(runId)).toMatchObject({ status: 'finished', output: 'parent' });
      // The child's attempt stays as the takeover left it: interrupted, never finished.
      expect(engine.steps(runId).map((s) => [s.node, s.status, s.output])).toEqual([
        ['work', 'cancelled', null],
        ['work', 'finished', 'parent'],
      ]);
    } finally {
      child.kill('SIGKILL');
    }
  }, 20_000);
});
