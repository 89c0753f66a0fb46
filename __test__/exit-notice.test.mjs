// A script that ends while a run its engine started is resting (sleeping on a delay, waiting
// for an event) says so on stderr, and the run is stored as it rests, so the notice's
// `engine.resumeAll()` really continues it. Each case is a child process.
import { describe, test, expect, beforeAll, afterAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
let dir;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'ramus-exit-notice-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function node(args) {
  const res = spawnSync(process.execPath, args, { cwd: ROOT, encoding: 'utf8', timeout: 10_000 });
  expect(res.error, `child did not exit by itself; stderr:\n${res.stderr}`).toBeUndefined();
  return res;
}

const NAP = "{ name: 'nap', initial: 'a', nodes: { a: { runner: 'hello', transition: { '': { state: 'b', delay: '1h' } } }, b: { final: true } } }";
const ASK = "{ name: 'ask', initial: 'a', nodes: { a: { timeout: { after: '2h', state: 'late' }, transition: { approve: 'b', reject: 'b' } }, b: { final: true }, late: { final: true } } }";

describe('a script that ends while its runs rest', () => {
  test('an ES module awaiting a sleeping run: the notice names the run and when it wakes; resumeAll() continues it', () => {
    const db = join(dir, 'nap.sqlite');
    const res = node([
      '--input-type=module',
      '-e',
      `
      import { Engine } from 'ramus';
      const engine = new Engine({ db: ${JSON.stringify(db)} });
      engine.register('hello', () => 'hi');
      const run = engine.start(${NAP});
      await run.run();
      console.log(run.runId);
      await run.finished;
      console.log('never');
      `,
    ]);
    // Node's code for a top-level await that never settled; the notice does not change it.
    expect(res.status).toBe(13);
    const runId = res.stdout.trim();
    expect(runId).toMatch(/^[0-9a-f-]{36}$/);
    expect(res.stderr).toContain('1 run it started has not finished');
    expect(res.stderr).toContain(`${runId} 'nap' is sleeping in state 'a' until `);
    expect(res.stderr).toContain(`stored in ${db}`);
    expect(res.stderr).toContain('engine.resumeAll()');

    // The run was stored as it rested (its delay included), and another process continues it.
    const next = node([
      '-e',
      `
      const { Engine } = require('ramus');
      const engine = new Engine({ db: ${JSON.stringify(db)} });
      engine.register('hello', () => 'hi');
      const stored = engine.run(${JSON.stringify(runId)});
      const timers = engine.timers(${JSON.stringify(runId)});
      engine.resumeAll().then(async (runs) => {
        console.log(JSON.stringify({ status: stored.status, timers, resumed: runs.map((r) => [r.runId, r.machineStatus]) }));
        await engine.close();
      });
      `,
    ]);
    expect(next.status, next.stderr).toBe(0);
    // The engine was closed at the end: no notice.
    expect(next.stderr).toBe('');
    const seen = JSON.parse(next.stdout);
    expect(seen.status).toBe('sleeping');
    expect(seen.timers).toHaveLength(1);
    expect(seen.timers[0]).toMatchObject({ kind: 'delay', firedAt: null });
    expect(seen.resumed).toEqual([[runId, 'sleeping']]);
    expect(res.stderr).toContain(`until ${new Date(seen.timers[0].dueAt).toISOString()}`);
  });

  test('a CommonJS script leaving a run waiting for an event: the notice names the events and the timeout', () => {
    const db = join(dir, 'ask.sqlite');
    const res = node([
      '-e',
      `
      const { Engine } = require('ramus');
      const engine = new Engine({ db: ${JSON.stringify(db)} });
      const run = engine.start(${ASK});
      run.run().then(() => console.log(JSON.stringify({ runId: run.runId, dueAt: engine.timers(run.runId).map((t) => t.dueAt) })));
      `,
    ]);
    expect(res.status).toBe(0);
    const { runId } = JSON.parse(res.stdout);
    expect(res.stderr).toContain(`${runId} 'ask' is waiting in state 'a' for an event (approve, reject); its timeout fires at `);
    const check = node(['-e', `const { Engine } = require('ramus'); const e = new Engine({ db: ${JSON.stringify(db)} }); console.log(JSON.stringify(e.timers(${JSON.stringify(runId)}))); e.close();`]);
    const [timer] = JSON.parse(check.stdout);
    expect(timer.kind).toBe('timeout');
    expect(res.stderr).toContain(`its timeout fires at ${new Date(timer.dueAt).toISOString()}`);
  });

  test("an engine on ':memory:' says the runs end with the process", () => {
    const res = node([
      '-e',
      `
      const { Engine } = require('ramus');
      const engine = new Engine({ db: ':memory:' });
      engine.start(${ASK.replace("name: 'ask'", "name: 'one'")});
      engine.start(${ASK.replace("name: 'ask'", "name: 'two'")});
      `,
    ]);
    expect(res.status).toBe(0);
    expect(res.stderr).toContain('2 runs it started have not finished');
    expect(res.stderr).toMatch(/'one' is waiting in state 'a' for an event/);
    expect(res.stderr).toMatch(/'two' is waiting in state 'a' for an event/);
    expect(res.stderr).toContain("The engine's database is ':memory:': these runs end with the process.");
    expect(res.stderr).not.toContain('resumeAll');
  });

  test('no notice when every run finished, when the engine was closed, or for a keepAlive run that woke', () => {
    const finished = node([
      '-e',
      `
      const { Engine } = require('ramus');
      const engine = new Engine({ db: ${JSON.stringify(join(dir, 'done.sqlite'))} });
      engine.register('hello', () => 'hi');
      engine.start({ name: 'quick', initial: 'a', nodes: { a: { runner: 'hello', transition: 'b' }, b: { final: true } } }).finished.then((o) => console.log('out=' + o));
      `,
    ]);
    expect(finished.status, finished.stderr).toBe(0);
    expect(finished.stdout.trim()).toBe('out=hi');
    expect(finished.stderr).toBe('');

    const closed = node([
      '-e',
      `
      const { Engine } = require('ramus');
      const engine = new Engine({ db: ${JSON.stringify(join(dir, 'closed.sqlite'))} });
      const run = engine.start(${ASK});
      run.run().then(() => engine.close()).then(() => console.log('closed'));
      `,
    ]);
    expect(closed.status, closed.stderr).toBe(0);
    expect(closed.stdout.trim()).toBe('closed');
    expect(closed.stderr).toBe('');

    const woke = node([
      '-e',
      `
      const { Engine } = require('ramus');
      const engine = new Engine({ db: ${JSON.stringify(join(dir, 'woke.sqlite'))} });
      const run = engine.start({ name: 'short', initial: 'a', nodes: { a: { transition: { '': { state: 'b', delay: 50 } } }, b: { final: true } } }, { keepAlive: true });
      run.finished.then(() => console.log('woke'));
      `,
    ]);
    expect(woke.status, woke.stderr).toBe(0);
    expect(woke.stdout.trim()).toBe('woke');
    expect(woke.stderr).toBe('');
  });
});
