// The durable Engine across restarts: a child Node process starts runs and SIGKILLs itself
// at a known point; the test process (a new Engine on the same file) resumes them.
import { afterEach, describe, expect, test } from 'vitest';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { Engine, TestClock, TimeoutError } from 'ramus';
// @ts-expect-error: plain ESM helpers without types
import { settle, waitUntil, within } from './helpers.mjs';

const RAMUS = createRequire(import.meta.url).resolve('ramus');

// ---- fixtures ----

const dirs: string[] = [];
const engines: Engine[] = [];
const liveRuns: Array<{ cancel(): void; finished: Promise<unknown> }> = [];

afterEach(async () => {
  const cancelled = liveRuns.splice(0);
  for (const run of cancelled) run.cancel();
  await within(Promise.all(cancelled.map((run) => run.finished.catch(() => {}))), 5000, 'cancelled runs settle');
  await settle();
  for (const engine of engines.splice(0)) await engine.close();
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

interface Workspace {
  dir: string;
  db: string;
  /** What runners in child processes logged (one line per call). */
  calls(): string[];
  /** Run a child script (prelude + body); resolves when it exits. */
  child(body: string, args?: string[]): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string; stdout: string; report: any }>;
  /** A child that must SIGKILL itself: returns its report. */
  killed(body: string, args?: string[]): Promise<any>;
  /** A new engine on the workspace's file, in this process. */
  engine(options?: ConstructorParameters<typeof Engine>[0]): Engine;
}

/** What every child script starts with. `report(x)` and `log(s)` write files synchronously, so they survive SIGKILL. */
const PRELUDE = `
import { createRequire } from 'node:module';
import fs from 'node:fs';
const require = createRequire(import.meta.url);
const [ramusPath, db, dir, ...args] = process.argv.slice(2);
const ramus = require(ramusPath);
const { Engine, TestClock, runDag } = ramus;
const log = (s) => fs.appendFileSync(dir + '/calls.log', s + '\\n');
const report = (o) => fs.writeFileSync(dir + '/report.json', JSON.stringify(o));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const hang = () => new Promise(() => {});
async function until(fn, what, ms = 5000) {
  const t = Date.now();
  while (!fn()) {
    if (Date.now() - t > ms) throw new Error('child: timed out waiting for ' + what);
    await sleep(2);
  }
}
const die = () => process.kill(process.pid, 'SIGKILL');
process.on('unhandledRejection', (e) => { console.error(e); process.exit(3); });
`;

let scripts = 0;

function workspace(): Workspace {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ramus-restart-'));
  dirs.push(dir);
  const db = path.join(dir, 'runs.sqlite');
  const ws: Workspace = {
    dir,
    db,
    calls: () => {
      const f = path.join(dir, 'calls.log');
      return fs.existsSync(f) ? fs.readFileSync(f, 'utf8').split('\n').filter(Boolean) : [];
    },
    child(body, args = []) {
      const script = path.join(dir, `child-${++scripts}.mjs`);
      fs.writeFileSync(script, `${PRELUDE}\n${body}\n`);
      fs.rmSync(path.join(dir, 'report.json'), { force: true });
      return new Promise((resolve, reject) => {
        const proc = spawn(process.execPath, [script, RAMUS, db, dir, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
        let stdout = '';
        let stderr = '';
        proc.stdout.on('data', (d) => (stdout += d));
        proc.stderr.on('data', (d) => (stderr += d));
        const timer = setTimeout(() => {
          proc.kill('SIGKILL');
          reject(new Error(`child script did not end within 8s\n${stderr}`));
        }, 8000);
        proc.on('error', reject);
        proc.on('close', (code, signal) => {
          clearTimeout(timer);
          const f = path.join(dir, 'report.json');
          resolve({ code, signal, stderr, stdout, report: fs.existsSync(f) ? JSON.parse(fs.readFileSync(f, 'utf8')) : undefined });
        });
      });
    },
    async killed(body, args) {
      const r = await ws.child(body, args);
      expect(r.signal, `the child should have killed itself; exit code ${r.code}\n${r.stderr}`).toBe('SIGKILL');
      expect(r.report, 'the child reports before it dies').toBeDefined();
      return r.report;
    },
    engine(options = {}) {
      const engine = new Engine({ db, ...options });
      engines.push(engine);
      return engine;
    },
  };
  return ws;
}

function track<T extends { cancel(): void; finished: Promise<unknown> }>(run: T): T {
  run.finished.catch(() => {});
  liveRuns.push(run);
  return run;
}

/** Read-only SQL on the file (docs/schema.md is the contract for readers), with the sqlite3 CLI when installed. */
const HAS_SQLITE3 = (() => {
  try {
    execFileSync('sqlite3', ['-version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();
function sql(db: string, query: string): any[] {
  const out = execFileSync('sqlite3', ['-readonly', '-json', db, query], { encoding: 'utf8' }).trim();
  return out === '' ? [] : JSON.parse(out);
}

const later = <T>(value: T, ms = 2) => new Promise<T>((r) => setTimeout(() => r(value), ms));

// ---- shared definitions (pure JSON: the child embeds them) ----

const PIPELINE = {
  name: 'pipeline',
  nodes: {
    a: { runner: 'fetch', args: { i: 1 } },
    b: { runner: 'fetch', args: { i: 2 } },
    total: { runner: 'slow', parents: ['a', 'b'] },
  },
};

const APPROVAL = {
  name: 'approval',
  initial: 'draft',
  nodes: {
    draft: { runner: 'draft', transition: 'review' },
    review: { transition: { approve: 'publish', reject: 'draft' } },
    publish: { runner: 'publish', final: true },
  },
};

const CHILD_APPROVAL_RUNNERS = `
engine.register({
  draft: async ({ input }) => { log('draft:' + input); await sleep(1); return 'draft of ' + input; },
  publish: async ({ input, event }) => { log('publish'); return { input, event }; },
});
`;

/** The test process's runners for APPROVAL; counts calls. */
function approvalRunners(engine: Engine) {
  const calls: string[] = [];
  engine.register({
    draft: async ({ input }: any) => {
      calls.push(`draft:${input}`);
      return later(`draft of ${input}`);
    },
    publish: async ({ input, event }: any) => {
      calls.push('publish');
      return later({ input, event });
    },
  });
  return calls;
}

// ---- (1) a DAG killed while a node hangs ----

describe('a DAG killed while one node runs', () => {
  test.each(['sync', 'batched'] as const)('%s: resume runs the interrupted node again, never a finished one', async (durability) => {
    const ws = workspace();
    const { runId } = await ws.killed(`
      const DEF = ${JSON.stringify(PIPELINE)};
      const engine = new Engine({ db, durability: '${durability}' });
      engine.register({
        fetch: async ({ args }) => { log('fetch' + args.i); await sleep(1); return args.i * 10; },
        slow: async () => { log('slow'); globalThis.slowRan = true; return hang(); },
      });
      const run = engine.start(DEF, { input: 'root' });
      // Die only once the store shows both fetches finished and 'total' running (its row
      // is committed before its runner is called: wait for both).
      await until(() => globalThis.slowRan && engine.steps(run.runId).some((s) => s.node === 'total' && s.status === 'running'), 'total running');
      report({ runId: run.runId });
      die();
    `);
    expect(ws.calls().sort()).toEqual(['fetch1', 'fetch2', 'slow']);

    const engine = ws.engine({ durability: 'sync' });
    expect(engine.run(runId)).toMatchObject({ status: 'running', output: null, endedAt: null });
    const calls: string[] = [];
    engine.register({
      fetch: async ({ args }: any) => {
        calls.push(`fetch${args.i}`);
        return later(args.i * 10);
      },
      slow: async ({ input, rootInput }: any) => {
        calls.push('slow');
        return later({ sum: input.a + input.b, rootInput });
      },
    });
    const run = await engine.resume(runId);
    expect(run.runId).toBe(runId);
    expect(await within(run.finished, 5000, 'resumed run')).toEqual({ sum: 30, rootInput: 'root' });
    expect(calls).toEqual(['slow']);
    expect(engine.steps(runId).map((s) => [s.seq, s.node, s.status, s.output])).toEqual([
      [1, expect.stringMatching(/^[ab]$/), 'finished', expect.any(Number)],
      [2, expect.stringMatching(/^[ab]$/), 'finished', expect.any(Number)],
      [3, 'total', 'cancelled', null],
      [4, 'total', 'finished', { sum: 30, rootInput: 'root' }],
    ]);
    const steps = engine.steps(runId);
    expect(steps[3].input).toEqual({ a: 10, b: 20 });
    expect(steps[2].endedAt).not.toBeNull();
    expect(engine.run(runId)).toMatchObject({ status: 'finished', output: { sum: 30, rootInput: 'root' } });
  });
});

// ---- (2) a machine waiting for an event across a restart ----

describe('a machine waiting for an event across a restart', () => {
  test('send() while no process runs it stores the event; resume() delivers it', async () => {
    const ws = workspace();
    const { runId } = await ws.killed(`
      const engine = new Engine({ db, durability: 'sync' });
      ${CHILD_APPROVAL_RUNNERS}
      const run = engine.start(${JSON.stringify(APPROVAL)}, { input: 'essay', tags: ['needs-review'] });
      await until(() => engine.run(run.runId)?.status === 'waitingForEvent', 'waitingForEvent');
      report({ runId: run.runId });
      die();
    `);
    expect(ws.calls()).toEqual(['draft:essay']);

    const engine = ws.engine({ durability: 'sync' });
    const calls = approvalRunners(engine);
    expect(engine.waiting({ tags: ['needs-review'] }).map((r) => r.id)).toEqual([runId]);
    const eventId = engine.send(runId, { type: 'approve', data: { by: 'ann' } });
    expect(typeof eventId).toBe('string');
    await settle();
    // Nobody runs it: the event waits in the store, the run has not moved.
    expect(engine.run(runId)!.status).toBe('waitingForEvent');
    expect(calls).toEqual([]);
    if (HAS_SQLITE3) {
      const pending = sql(ws.db, `SELECT id, type, data, delivered_at FROM pending_events WHERE run_id = '${runId}'`);
      expect(pending.map((p) => ({ ...p, data: JSON.parse(p.data) }))).toEqual([{ id: eventId, type: 'approve', data: { by: 'ann' }, delivered_at: null }]);
    }

    const run = await engine.resume(runId);
    const out = { input: 'draft of essay', event: { type: 'approve', data: { by: 'ann' } } };
    expect(await within(run.finished, 5000, 'resumed machine')).toEqual(out);
    expect(calls).toEqual(['publish']); // draft did not run again
    expect(engine.run(runId)).toMatchObject({ status: 'finished', output: out });
    expect(engine.steps(runId).map((s) => [s.node, s.status])).toEqual([
      ['draft', 'finished'],
      ['review', 'finished'],
      ['publish', 'finished'],
    ]);
    expect(engine.transitions(runId).filter((t) => t.eventType !== null).map((t) => [t.from, t.to, t.eventType, t.eventData])).toEqual([
      ['review', 'publish', 'approve', { by: 'ann' }],
    ]);
    expect(engine.waiting()).toEqual([]);
    if (HAS_SQLITE3) {
      const [row] = sql(ws.db, `SELECT delivered_at FROM pending_events WHERE id = '${eventId}'`);
      expect(row.delivered_at).toEqual(expect.any(Number));
    }
  });

  test('resumeAll() picks up every waiting run; a stored event reaches its run, the others keep waiting', async () => {
    const ws = workspace();
    const { ids } = await ws.killed(`
      const engine = new Engine({ db, durability: 'sync' });
      ${CHILD_APPROVAL_RUNNERS}
      const runs = ['one', 'two'].map((input) => engine.start(${JSON.stringify(APPROVAL)}, { input }));
      await until(() => runs.every((r) => engine.run(r.runId)?.status === 'waitingForEvent'), 'both waiting');
      report({ ids: runs.map((r) => r.runId) });
      die();
    `);
    const engine = ws.engine({ durability: 'sync' });
    const calls = approvalRunners(engine);
    engine.send(ids[0], { type: 'approve', data: 'first' });
    const runs = await engine.resumeAll();
    expect(runs.map((r) => r.runId).sort()).toEqual([...ids].sort());
    const [one, two] = ids.map((id: string) => track(runs.find((r) => r.runId === id)!));
    expect(await within(one.finished, 5000, 'run one')).toEqual({ input: 'draft of one', event: { type: 'approve', data: 'first' } });
    await settle();
    expect((two as any).machineStatus).toBe('waitingForEvent');
    expect(engine.run(ids[0])!.status).toBe('finished');
    // The resumed run that still waits is stored as waiting, and listed as such.
    await waitUntil(() => engine.run(ids[1])!.status === 'waitingForEvent', 'two stored as waiting');
    expect(engine.waiting().map((r) => r.id)).toContain(ids[1]);
    // The second one is live here now: an event reaches it at once.
    engine.send(ids[1], { type: 'reject' });
    await waitUntil(() => calls.includes('draft:draft of two'), 'two drafted again after reject');
    await waitUntil(() => (two as any).machineStatus === 'waitingForEvent', 'two waiting again');
    engine.send(ids[1], { type: 'approve', data: 'second' });
    expect(await within(two.finished, 5000, 'run two')).toEqual({ input: 'draft of draft of two', event: { type: 'approve', data: 'second' } });
    // resumeAll() again finds nothing left.
    expect(await engine.resumeAll()).toEqual([]);
  });

  test('an event sent from another process reaches a run live in this one', async () => {
    const ws = workspace();
    const engine = ws.engine({ durability: 'sync', pollInterval: 20 });
    approvalRunners(engine);
    const run = engine.start(APPROVAL, { input: 'memo' });
    await waitUntil(() => engine.run(run.runId)?.status === 'waitingForEvent', 'waiting');
    const sender = await ws.child(`
      const engine = new Engine({ db });
      const id = engine.send(args[0], { type: 'approve', data: { from: 'other process' } });
      await engine.close();
      report({ id });
    `, [run.runId]);
    expect(sender.code, sender.stderr).toBe(0);
    expect(await within(run.finished, 3000, 'live run takes the stored event')).toEqual({
      input: 'draft of memo',
      event: { type: 'approve', data: { from: 'other process' } },
    });
  });
});

// ---- (3) a delay that falls due while no process runs ----

// The child and the test process each run on a TestClock: stored times are plain ms, so the
// test process "restarts" at whatever time it chooses, without waiting for the delay.
const T0 = Date.UTC(2026, 0, 1);

const SLEEPY = {
  name: 'sleepy',
  initial: 's',
  nodes: {
    s: { runner: 'nap', args: 's', transition: { '': { state: 'z', delay: 300 } } },
    z: { runner: 'nap', args: 'z', final: true },
  },
};

/** A child that starts SLEEPY at T0, lets `elapsed` ms of its clock pass, and dies. */
const SLEEPY_CHILD = (elapsed: number) => `
  const clock = new TestClock(${T0});
  const engine = new Engine({ db, durability: 'sync', clock });
  engine.register('nap', async ({ args }) => { log('nap:' + args); return 'napped ' + args; });
  const run = engine.start(${JSON.stringify(SLEEPY)});
  await until(() => engine.run(run.runId)?.status === 'sleeping', 'sleeping');
  await clock.advance(${elapsed});
  report({ runId: run.runId, status: engine.run(run.runId)?.status, now: clock.now(), next: clock.next() ?? null });
  die();
`;

describe('a delayed transition across a restart', () => {
  test('a delay that fell due while no process ran fires at once on resumeAll()', async () => {
    const ws = workspace();
    const { runId, status, next } = await ws.killed(SLEEPY_CHILD(0));
    expect(ws.calls()).toEqual(['nap:s']);
    expect(status).toBe('sleeping');
    const dueAt = T0 + 300;
    expect(next).toBe(dueAt);
    if (HAS_SQLITE3) {
      const timers = sql(ws.db, `SELECT id, kind, due_at, fired_at FROM timers WHERE run_id = '${runId}'`);
      expect(timers).toEqual([{ id: expect.any(String), kind: 'delay', due_at: dueAt, fired_at: null }]);
    }

    // The restart comes 330ms after the child slept: the delay fell due 30ms ago.
    const clock = new TestClock(T0 + 330);
    const engine = ws.engine({ durability: 'sync', clock });
    expect(engine.timers(runId)).toMatchObject([{ kind: 'delay', dueAt, firedAt: null }]);
    const naps: string[] = [];
    engine.register('nap', async ({ args }: any) => {
      naps.push(args);
      return `napped ${args} again`;
    });
    const runs = await engine.resumeAll();
    expect(runs.map((r) => r.runId)).toEqual([runId]);
    // Armed at its stored time, which has passed: due now, not 300ms after the restart.
    expect(clock.next()).toBe(dueAt);
    await clock.advance(0);
    expect(await within(runs[0].finished, 2000, 'sleepy')).toBe('napped z again');
    expect(clock.now(), 'the clock did not move').toBe(T0 + 330);
    expect(naps).toEqual(['z']);
    expect(engine.steps(runId).map((s) => [s.node, s.status])).toEqual([
      ['s', 'finished'],
      ['z', 'finished'],
    ]);
    expect(engine.run(runId)).toMatchObject({ status: 'finished', output: 'napped z again' });
    expect(engine.timers(runId)).toMatchObject([{ kind: 'delay', dueAt, firedAt: T0 + 330 }]);
    if (HAS_SQLITE3) {
      const [timer] = sql(ws.db, `SELECT fired_at FROM timers WHERE run_id = '${runId}' AND kind = 'delay'`);
      expect(timer.fired_at).toBe(T0 + 330);
    }
  });

  test('a delay not yet due at restart waits only for what is left', async () => {
    const ws = workspace();
    const { runId, status, now, next } = await ws.killed(SLEEPY_CHILD(150));
    // 150ms of the child's clock passed: the delay had not fired there.
    expect({ status, now, next }).toEqual({ status: 'sleeping', now: T0 + 150, next: T0 + 300 });
    if (HAS_SQLITE3) expect(sql(ws.db, `SELECT due_at FROM timers WHERE run_id = '${runId}'`)[0].due_at).toBe(T0 + 300);

    // The restart, 150ms after the child slept.
    const clock = new TestClock(T0 + 150);
    const engine = ws.engine({ durability: 'sync', clock });
    engine.register('nap', async ({ args }: any) => `napped ${args}`);
    const run = await engine.resume(runId);
    // What is left of the delay (150ms), not a whole new one from the restart.
    expect(clock.next()).toBe(T0 + 300);
    await clock.advance(149);
    expect((run as any).machineStatus, 'not before the delay is due').toBe('sleeping');
    await clock.advance(1);
    expect(await within(run.finished, 2000, 'sleepy')).toBe('napped z');
    expect(engine.timers(runId)).toMatchObject([{ kind: 'delay', dueAt: T0 + 300, firedAt: T0 + 300 }]);
  });
});

// ---- (4) a state timeout that expires across a restart ----

describe('a state timeout across a restart', () => {
  test('a wait whose timeout expired while no process ran goes to the timeout state with a TimeoutError', async () => {
    const DEADLINE = {
      name: 'deadline',
      initial: 'ask',
      nodes: {
        ask: { runner: 'echo', transition: 'wait' },
        wait: { transition: { answer: 'done' }, timeout: { after: 300, state: 'late' } },
        done: { runner: 'echo', final: true },
        late: { runner: 'late', final: true },
      },
    };
    const ws = workspace();
    const { runId, next } = await ws.killed(`
      const clock = new TestClock(${T0});
      const engine = new Engine({ db, durability: 'sync', clock });
      engine.register({ echo: async ({ input }) => input, late: () => { log('late'); return 'late in child'; } });
      const run = engine.start(${JSON.stringify(DEADLINE)}, { input: 'question' });
      await until(() => engine.run(run.runId)?.status === 'waitingForEvent', 'waiting');
      report({ runId: run.runId, next: clock.next() ?? null });
      die();
    `);
    expect(next).toBe(T0 + 300);

    // The restart comes 340ms after the wait began: the timeout expired while no process ran.
    const clock = new TestClock(T0 + 340);
    const engine = ws.engine({ durability: 'sync', clock });
    const seen: any[] = [];
    engine.register({
      echo: async ({ input }: any) => input,
      late: ({ input, previousState }: any) => {
        seen.push(input);
        return { name: input?.name, message: input?.message, isTimeoutError: input instanceof TimeoutError, previousState };
      },
    });
    const run = await engine.resume(runId);
    expect(clock.next()).toBe(T0 + 300);
    await clock.advance(0);
    const out: any = await within(run.finished, 2000, 'deadline');
    expect(clock.now(), 'fired at once: the clock did not move').toBe(T0 + 340);
    expect(out).toMatchObject({ name: 'TimeoutError', previousState: 'wait' });
    expect(out.message).toMatch(/wait/);
    expect(seen[0]).toBeInstanceOf(Error);
    expect(ws.calls()).toEqual([]);
    expect(engine.steps(runId).map((s) => s.node)).toEqual(['ask', 'wait', 'late']);
    expect(engine.transitions(runId).filter((t) => t.from !== null).map((t) => [t.from, t.to])).toEqual([
      ['ask', 'wait'],
      ['wait', 'late'],
    ]);
    expect(engine.run(runId)!.status).toBe('finished');
    expect(engine.timers(runId)).toMatchObject([{ kind: 'timeout', dueAt: T0 + 300, firedAt: T0 + 340 }]);
    if (HAS_SQLITE3) {
      const timers = sql(ws.db, `SELECT kind, fired_at FROM timers WHERE run_id = '${runId}'`);
      expect(timers).toEqual([{ kind: 'timeout', fired_at: T0 + 340 }]);
    }
  });
});

// ---- (5) the context is restored ----

describe('context across a restart', () => {
  test('a loop killed midway resumes with the stored context', async () => {
    const LOOP = {
      name: 'counter',
      initial: 'inc',
      context: { n: 0, seen: [] },
      nodes: {
        inc: { runner: 'inc', transition: { '': [{ state: 'done', condition: 'enough' }, { state: 'inc' }] } },
        done: { runner: 'report', final: true },
      },
    };
    const ws = workspace();
    const { runId } = await ws.killed(`
      const engine = new Engine({ db, durability: 'sync' });
      engine.register({
        inc: async ({ context }) => {
          context.n += 1;
          context.seen.push('child' + context.n);
          log('inc' + context.n);
          if (context.n === 3) {
            globalThis.thirdRan = true;
            return hang();
          }
          await sleep(1);
          return context.n;
        },
        enough: ({ context }) => context.n >= 5,
        report: ({ context }) => ({ ...context }),
      });
      const run = engine.start(${JSON.stringify(LOOP)});
      // The third step's row is committed before its runner is called: wait for both.
      await until(() => globalThis.thirdRan && engine.steps(run.runId).filter((s) => s.status === 'running').length === 1 && engine.steps(run.runId).length === 3, 'third inc running');
      report({ runId: run.runId });
      die();
    `);
    expect(ws.calls()).toEqual(['inc1', 'inc2', 'inc3']);

    const engine = ws.engine({ durability: 'sync' });
    const saw: number[] = [];
    engine.register({
      inc: async ({ context }: any) => {
        saw.push(context.n);
        context.n += 1;
        context.seen.push(`test${context.n}`);
        return later(context.n);
      },
      enough: ({ context }: any) => context.n >= 5,
      report: ({ context }: any) => JSON.parse(JSON.stringify(context)),
    });
    const run = await engine.resume(runId);
    // The third visit was interrupted: its change to the context was never stored, so it runs again from n = 2.
    expect(await within(run.finished, 3000, 'counter')).toEqual({ n: 5, seen: ['child1', 'child2', 'test3', 'test4', 'test5'] });
    expect(saw).toEqual([2, 3, 4]);
    expect(engine.steps(runId).map((s) => [s.node, s.status])).toEqual([
      ['inc', 'finished'],
      ['inc', 'finished'],
      ['inc', 'cancelled'],
      ['inc', 'finished'],
      ['inc', 'finished'],
      ['inc', 'finished'],
      ['done', 'finished'],
    ]);
  });

  // The caller's context, not the definition's default, is what a run killed before its first
  // step ended must resume with.
  const WITH_DEFAULT = {
    machine: { name: 'ctx-machine', initial: 'look', context: { who: 'default', n: 0 }, nodes: { look: { runner: 'look', transition: 'done' }, done: { final: true } } },
    dag: { name: 'ctx-dag', context: { who: 'default', n: 0 }, nodes: { look: { runner: 'look' } } },
  };

  test.each(['machine', 'dag'] as const)("sync: a %s killed right after engine.start(def, { context }) resumes with the caller's context", async (kind) => {
    const ws = workspace();
    const { runId } = await ws.killed(`
      const engine = new Engine({ db, durability: 'sync' });
      engine.register({ look: ({ context }) => { log('look:' + context.who); return hang(); } });
      const run = engine.start(${JSON.stringify(WITH_DEFAULT[kind])}, { context: { who: 'caller', n: 41 }, input: 'in' });
      report({ runId: run.runId });
      die();
    `);
    // Whether or not the first runner got called before the kill, it never saw the default.
    expect(ws.calls().filter((c) => c !== 'look:caller')).toEqual([]);

    const engine = ws.engine({ durability: 'sync' });
    const saw: unknown[] = [];
    engine.register({
      look: ({ context, rootInput }: any) => {
        saw.push({ ...context });
        return { ...context, rootInput };
      },
    });
    expect(engine.run(runId)?.status).toBe('running');
    const run = await engine.resume(runId);
    expect(await within(run.finished, 5000, 'resumed run')).toEqual({ who: 'caller', n: 41, rootInput: 'in' });
    expect(saw).toEqual([{ who: 'caller', n: 41 }]);
    expect(engine.run(runId)).toMatchObject({ status: 'finished', output: { who: 'caller', n: 41, rootInput: 'in' } });
  });
});

// ---- (6) a process without the runner ----

describe('a process that did not register a runner', () => {
  test('resume, resumeAll and start name the missing key; registering it fixes the resume', async () => {
    const ws = workspace();
    const { runId } = await ws.killed(`
      const engine = new Engine({ db, durability: 'sync' });
      engine.register({
        fetch: async ({ args }) => { log('fetch' + args.i); return args.i * 10; },
        slow: async () => { log('slow'); return hang(); },
      });
      const run = engine.start(${JSON.stringify(PIPELINE)});
      await until(() => engine.steps(run.runId).some((s) => s.node === 'total' && s.status === 'running'), 'total running');
      report({ runId: run.runId });
      die();
    `);
    const engine = ws.engine({ durability: 'sync' });
    engine.register('fetch', ({ args }: any) => args.i * 10);
    await expect(engine.resume(runId)).rejects.toThrow(/'total'.*'slow'/);
    await expect(engine.resumeAll()).rejects.toThrow(/'slow'/);
    expect(() => engine.start('pipeline')).toThrow(/'total'.*'slow'/);
    // The failed attempts changed nothing stored.
    expect(engine.run(runId)!.status).toBe('running');
    expect(engine.steps(runId).map((s) => [s.node, s.status]).sort()).toEqual([
      ['a', 'finished'],
      ['b', 'finished'],
      ['total', 'running'],
    ]);
    engine.register('slow', ({ input }: any) => input.a + input.b);
    const run = await engine.resume(runId);
    expect(await within(run.finished, 3000, 'resumed')).toBe(30);
  });
});

// ---- (7) what cannot be resumed ----

describe('runs that cannot be resumed', () => {
  test('a finished run, an unknown id, a child run and an inline-config run are clear errors', async () => {
    const ws = workspace();
    const { finishedId, parentId, inlineId } = await ws.killed(`
      const engine = new Engine({ db, durability: 'sync' });
      engine.register({
        quick: async () => 'quick',
        nest: async () => {
          log('nest');
          return runDag({ dag: { name: 'inner', nodes: { stuck: { run: () => { log('stuck'); return hang(); } } } }, input: 'in' });
        },
      });
      const done = engine.start({ name: 'quick', nodes: { q: { runner: 'quick' } } });
      await done.finished;
      const parent = engine.start({ name: 'outer', nodes: { n: { runner: 'nest' } } });
      const inline = engine.start({ name: 'inline', nodes: { x: { run: () => hang() } } });
      await until(() => engine.children(parent.runId).length === 1 && engine.steps(engine.children(parent.runId)[0].id).length === 1, 'inner stuck');
      await until(() => engine.steps(inline.runId).length === 1, 'inline running');
      report({ finishedId: done.runId, parentId: parent.runId, inlineId: inline.runId });
      die();
    `);
    const engine = ws.engine({ durability: 'sync' });
    engine.register({ quick: async () => 'quick', nest: async () => 'no longer nested' });

    await expect(engine.resume(finishedId)).rejects.toThrow(new RegExp(`${finishedId}.*finished`));
    const unknown = '01900000-0000-7000-8000-00000000abcd';
    await expect(engine.resume(unknown)).rejects.toThrow(new RegExp(unknown));
    const [child] = engine.children(parentId);
    expect(child).toMatchObject({ name: 'inner', status: 'running', parentRunId: parentId });
    await expect(engine.resume(child.id)).rejects.toThrow(new RegExp(`inside run ${parentId}`));
    await expect(engine.resume(inlineId)).rejects.toThrow(/inline/);

    // Resuming the parent runs its step again; the interrupted child is closed as cancelled.
    const parent = await engine.resume(parentId);
    expect(await within(parent.finished, 3000, 'parent')).toBe('no longer nested');
    expect(engine.run(child.id)!.status).toBe('cancelled');
    expect(engine.steps(child.id).map((s) => s.status)).toEqual(['cancelled']);
    await expect(engine.resume(child.id)).rejects.toThrow();
  });
});

describe('runs nested in steps across a restart', () => {
  // A machine whose state runs a DAG whose node runs a machine that waits for a person.
  // The runners are the same code in both processes (as a deployed agent's would be).
  const NESTED_RUNNERS = `
    ({ log, runDag, StateMachineRunner }) => ({
      plan: async ({ input }) => {
        log('plan');
        return runDag({
          input,
          dag: {
            name: 'inner',
            nodes: {
              prep: { run: async ({ rootInput }) => { log('prep'); return 'prepared ' + rootInput; } },
              ask: {
                parents: ['prep'],
                run: async ({ input }) => {
                  log('ask');
                  const m = new StateMachineRunner({
                    input: input.prep,
                    config: {
                      name: 'approval',
                      initial: 'draft',
                      nodes: {
                        draft: { run: async ({ input }) => { log('draft'); return 'draft of ' + input; }, transition: 'review' },
                        review: { transition: { approve: 'done' } },
                        done: { final: true, run: ({ input, event }) => ({ input, by: event.data.by }) },
                      },
                    },
                  });
                  await m.run();
                  return m.finished;
                },
              },
            },
          },
        });
      },
    })
  `;

  test('a machine waiting inside a DAG node inside a machine goes on where it was; finished nested work does not run again', async () => {
    const ws = workspace();
    const OUTER = { name: 'outer', initial: 'plan', nodes: { plan: { runner: 'plan', transition: 'end' }, end: { final: true } } };
    const { runId } = await ws.killed(`
      const engine = new Engine({ db, durability: 'sync' });
      engine.register((${NESTED_RUNNERS})({ log, runDag, StateMachineRunner: ramus.StateMachineRunner }));
      const run = engine.start(${JSON.stringify(OUTER)}, { input: 'topic' });
      await until(() => engine.runs({ name: 'approval' })[0]?.status === 'waitingForEvent', 'the inner machine waits');
      report({ runId: run.runId });
      die();
    `);
    expect(ws.calls()).toEqual(['plan', 'prep', 'ask', 'draft']);

    const engine = ws.engine({ durability: 'sync' });
    const calls: string[] = [];
    const { runDag, StateMachineRunner } = await import('ramus');
    engine.register(new Function(`return (${NESTED_RUNNERS})`)()({ log: (s: string) => calls.push(s), runDag, StateMachineRunner }));
    const approval = engine.runs({ name: 'approval' })[0]!;
    expect(approval.status).toBe('waitingForEvent');
    const run = track(await engine.resume(runId));
    // The interrupted steps run again; the nested runs they start continue from their own
    // records: the DAG keeps its finished node, the machine keeps waiting where it was.
    await waitUntil(() => calls.length === 2, 'the interrupted steps ran again');
    expect(calls).toEqual(['plan', 'ask']);
    expect(engine.runs({ name: 'approval' }).map((r) => r.id)).toEqual([approval.id]);
    engine.send(approval.id, { type: 'approve', data: { by: 'ann' } });
    expect(await within(run.finished, 5000, 'outer machine')).toEqual({ input: 'draft of prepared topic', by: 'ann' });
    expect(calls).toEqual(['plan', 'ask']);
    engine.flush();
    expect(engine.run(approval.id)).toMatchObject({ status: 'finished', parentRunId: expect.any(String) });
    const inner = engine.runs({ name: 'inner' });
    expect(inner.map((r) => r.status)).toEqual(['finished']);
    expect(engine.steps(inner[0]!.id).map((s) => [s.node, s.status])).toEqual([
      ['prep', 'finished'],
      ['ask', 'cancelled'],
      ['ask', 'finished'],
    ]);
  });
});

describe('a node that expands into a machine, across a restart', () => {
  // The expanded machine waits for a person; its runners are the same code in both processes.
  const EXPAND_RUNNERS = `
    ({ log }) => ({
      plan: async ({ rootInput }) => { log('plan'); return 'post about ' + rootInput; },
      review: async ({ input }) => {
        log('expand');
        return {
          name: 'approval',
          initial: 'draft',
          nodes: {
            draft: { run: async ({ input }) => { log('draft'); return 'draft of ' + input.plan; }, transition: 'wait' },
            wait: { transition: { approve: 'done' } },
            done: { final: true, run: ({ input, event }) => ({ text: input, by: event.data.by }) },
          },
        };
      },
    })
  `;
  const OUTER = { name: 'publish', nodes: { plan: { runner: 'plan' }, review: { parents: ['plan'], expand: 'review' } } };

  test('the machine it made still waits after kill -9, and the run finishes when the person answers', async () => {
    const ws = workspace();
    const { runId } = await ws.killed(`
      const engine = new Engine({ db, durability: 'sync' });
      engine.register((${EXPAND_RUNNERS})({ log }));
      const run = engine.start(${JSON.stringify(OUTER)}, { input: 'wasm' });
      await until(() => engine.runs({ name: 'approval' })[0]?.status === 'waitingForEvent', 'the expanded machine waits');
      report({ runId: run.runId });
      die();
    `);
    expect(ws.calls()).toEqual(['plan', 'expand', 'draft']);

    const engine = ws.engine({ durability: 'sync' });
    const calls: string[] = [];
    engine.register(new Function(`return (${EXPAND_RUNNERS})`)()({ log: (s: string) => calls.push(s) }));
    const approval = engine.runs({ name: 'approval' })[0]!;
    expect(approval).toMatchObject({ status: 'waitingForEvent', parentRunId: runId });
    const run = track(await engine.resume(runId));
    // The expand step runs again and makes the same machine, which goes on where it was.
    await waitUntil(() => calls.length === 1, 'the interrupted expand step ran again');
    expect(calls).toEqual(['expand']);
    engine.send(approval.id, { type: 'approve', data: { by: 'ann' } });
    expect(await within(run.finished, 5000, 'publish')).toEqual({ text: 'draft of post about wasm', by: 'ann' });
    expect(calls).toEqual(['expand']);
    expect(engine.runs({ name: 'approval' }).map((r) => r.id)).toEqual([approval.id]);
  });
});

describe('a machine forked with an output, across a restart', () => {
  test('killed before the forked step ended, the resumed fork still ends that step with the given output', async () => {
    const ws = workspace();
    const MACHINE = {
      name: 'answer',
      initial: 'ask',
      nodes: { ask: { runner: 'ask', semaphoreKey: 'llm', transition: 'show' }, show: { runner: 'show', final: true } },
    };
    const RUNNERS = `({ log }) => ({
      ask: async () => { log('ask'); return 'from the model'; },
      show: async ({ input }) => { log('show:' + input); return 'shown: ' + input; },
    })`;
    const { forkId } = await ws.killed(`
      const engine = new Engine({ db, durability: 'sync' });
      engine.register((${RUNNERS})({ log }));
      engine.define(${JSON.stringify(MACHINE)});
      const run = engine.start('answer', { semaphores: [new ramus.LocalSemaphore({ llm: 1 })] });
      await run.finished;
      const ask = engine.steps(run.runId)[0];
      // The fork's step waits for a slot that never frees here.
      const fork = await engine.fork(run.runId, { atStep: ask.id, output: 'given' }, { semaphores: [new ramus.LocalSemaphore({ llm: 0 })] });
      await until(() => engine.run(fork.runId)?.status === 'running', 'the fork runs');
      await sleep(20);
      report({ forkId: fork.runId });
      die();
    `);
    expect(ws.calls()).toEqual(['ask', 'show:from the model']);
    const engine = ws.engine({ durability: 'sync' });
    const calls: string[] = [];
    engine.register(new Function(`return (${RUNNERS})`)()({ log: (s: string) => calls.push(s) }));
    const fork = track(await engine.resume(forkId));
    expect(await within(fork.finished, 5000, 'fork')).toBe('shown: given');
    // The model was not asked again: the step took the output the fork gave it.
    expect(calls).toEqual(['show:given']);
    expect(engine.steps(forkId).filter((s) => s.status === 'finished').map((s) => [s.node, s.output])).toEqual([
      ['ask', 'given'],
      ['show', 'shown: given'],
    ]);
  });
});

describe('a DAG grown while it ran, across a restart', () => {
  test('the nodes added before kill -9 run after the resume', async () => {
    const ws = workspace();
    const DAG = { name: 'grown', nodes: { a: { runner: 'word', args: 'a' }, w: { runner: 'wait' } } };
    const { runId } = await ws.killed(`
      const engine = new Engine({ db, durability: 'sync' });
      engine.register({
        word: async ({ args }) => { log('word ' + args); return args; },
        wait: async () => { log('wait'); return hang(); },
        join: async ({ input }) => Object.keys(input).sort().map((k) => input[k]).join('+'),
      });
      const run = engine.start(${JSON.stringify(DAG)});
      await until(() => run.nodeState('a') === 'finished' && run.nodeState('w') === 'running', 'a finished, w runs');
      run.addNodes({ j: { runner: 'join', parents: ['a', 'w'] } });
      engine.flush();
      report({ runId: run.runId });
      die();
    `);
    expect(ws.calls().sort()).toEqual(['wait', 'word a']);
    const engine = ws.engine({ durability: 'sync' });
    const calls: string[] = [];
    engine.register({
      word: (async ({ args }: any) => (calls.push(`word ${args}`), args)) as any,
      wait: (async () => (calls.push('wait'), 'waited')) as any,
      join: (async ({ input }: any) => Object.keys(input).sort().map((k) => input[k]).join('+')) as any,
    });
    expect(engine.run(runId)).toMatchObject({ definitionName: `grown (grown in run ${runId})` });
    const run = track(await engine.resume(runId));
    expect(await within(run.finished, 5000, 'grown')).toBe('a+waited');
    expect(calls).toEqual(['wait']);
  });
});

// ---- (9) a retry waiting across a restart ----

const FLAKY_DAG = {
  name: 'flaky-dag',
  nodes: {
    fetch: { runner: 'flaky', args: 'fetch', retry: { attempts: 3, backoff: 'fixed', initial: '1m' } },
    after: { runner: 'flaky', args: 'after', parents: ['fetch'] },
  },
};
const FLAKY_MACHINE = {
  name: 'flaky-machine',
  initial: 'fetch',
  nodes: {
    fetch: { runner: 'flaky', args: 'fetch', retry: { attempts: 3, backoff: 'fixed', initial: '1m' }, transition: 'after' },
    after: { runner: 'flaky', args: 'after', final: true },
  },
};

describe('a retry across a restart', () => {
  for (const def of [FLAKY_DAG, FLAKY_MACHINE]) {
    test(`${def.name}: the wait survives kill -9, and the next attempt runs once, numbered 2`, async () => {
      const ws = workspace();
      const { runId } = await ws.killed(`
        const clock = new TestClock(${T0});
        const engine = new Engine({ db, durability: 'sync', clock });
        engine.register('flaky', async ({ args, attempt }) => {
          log(args + ':' + attempt);
          throw new Error('down ' + attempt);
        });
        const run = engine.start(${JSON.stringify(def)});
        await until(() => engine.timers(run.runId).some((t) => t.kind === 'retry'), 'retry timer');
        report({ runId: run.runId });
        die();
      `);
      expect(ws.calls()).toEqual(['fetch:1']);
      // Restarted after the wait fell due.
      const clock = new TestClock(T0 + 120_000);
      const engine = ws.engine({ durability: 'sync', clock });
      const seen: string[] = [];
      engine.register('flaky', async ({ args, attempt }: any) => {
        seen.push(`${args}:${attempt}`);
        return `${args} ok`;
      });
      const run = track(await engine.resume(runId));
      await clock.advance(0);
      expect(await within(run.finished, 2000, def.name)).toBe('after ok');
      expect(seen).toEqual(['fetch:2', 'after:1']);
      expect(engine.steps(runId).map((s) => [s.node, s.status, s.attempt])).toEqual([
        ['fetch', 'error', 1],
        ['fetch', 'finished', 2],
        ['after', 'finished', 1],
      ]);
      expect(engine.timers(runId).filter((t) => t.kind === 'retry')).toMatchObject([{ dueAt: T0 + 60_000, firedAt: T0 + 120_000 }]);
    });
  }
});
