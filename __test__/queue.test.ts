// The queue and its workers: enqueue (priority with aging, runAt, idempotencyKey,
// concurrencyKey), engine.work() claiming queued runs and runs that need a holder (an event
// arrived, a timer fell due, their holder stopped), handing idle machines back, and stop().
import { execFile } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';
import { DuplicateRunError, Engine, TestClock, type Worker } from 'ramus';

import { engineFixtures } from './engine-fixtures';
// @ts-expect-error: plain ESM helpers without types
import { waitUntil, within } from './helpers.mjs';

const { open, tempDb } = engineFixtures('ramus-queue-');
const T0 = Date.UTC(2026, 0, 1);

const ECHO = { name: 'echo', nodes: { out: { runner: 'echo' } } };
const APPROVAL = {
  name: 'approval',
  initial: 'ask',
  nodes: { ask: { runner: 'ask', transition: { approve: 'done' } }, done: { runner: 'done', final: true } },
};
const NAP = {
  name: 'nap',
  initial: 'first',
  nodes: { first: { runner: 'ask', transition: { '': { state: 'done', delay: '1h' } } }, done: { runner: 'done', final: true } },
};

/** An engine whose `echo` runner records the order its runs ran in. */
function engineWith(order: string[], options: ConstructorParameters<typeof Engine>[0] = {}): Engine {
  const e = open({ durability: 'sync', ...options });
  e.register('echo', (async ({ rootInput: input }: any) => {
    order.push(input.label);
    return `echo ${input.label}`;
  }) as any);
  e.register('ask', (async () => 'asked') as any);
  e.register('done', (async ({ event }: any) => `done ${event?.data?.by ?? ''}`.trim()) as any);
  return e;
}

/** A 'slow' runner held until `release()`, and a DAG of it. */
function gated(engine: Engine) {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  engine.register('slow', (async () => {
    await gate;
    return 'slow';
  }) as any);
  return { release: () => release(), SLOW: { name: 'slow', nodes: { s: { runner: 'slow' } } } };
}

const workers: Worker[] = [];
function work(engine: Engine, options: Parameters<Engine['work']>[0] = {}): Worker {
  // Polls only when a test asks (`poll()`), or when a slot frees.
  const w = engine.work({ pollInterval: 3_600_000, ...options });
  workers.push(w);
  return w;
}

async function drained(engine: Engine, ids: string[]): Promise<void> {
  await waitUntil(() => ids.every((id) => ['finished', 'error', 'cancelled'].includes(engine.run(id)?.status ?? '')), 'runs end', 8000);
}

describe('enqueue', () => {
  test('a queued run is stored as queued and started by a worker', async () => {
    const order: string[] = [];
    const engine = engineWith(order, { clock: new TestClock(T0) });
    const q = engine.enqueue(ECHO, { input: { label: 'a' }, tags: ['user:7'] });
    expect(q.created).toBe(true);
    expect(engine.run(q.runId)).toMatchObject({ status: 'queued', name: 'echo', definitionName: 'echo', tags: ['user:7'], input: { label: 'a' }, createdAt: T0 });
    expect(engine.runs({ status: 'queued' }).map((r) => r.id)).toEqual([q.runId]);
    const worker = work(engine);
    // Not resumable: it has not started.
    await expect(engine.resume(q.runId)).rejects.toThrow(/is queued and has not started; a worker starts it/);
    expect(await worker.poll()).toBe(1);
    await drained(engine, [q.runId]);
    expect(engine.run(q.runId)).toMatchObject({ status: 'finished', output: 'echo a', createdAt: T0 });

    expect(engine.steps(q.runId).map((s) => [s.node, s.status])).toEqual([['out', 'finished']]);
    expect(await worker.poll()).toBe(0);
    await worker.stop();
    // The definition's tags, as start gives them.
    const tagged = engine.enqueue({ ...ECHO, name: 'tagged', tags: ['team:a'] }, { input: { label: 't' } });
    expect(engine.run(tagged.runId)?.tags).toEqual(['team:a']);
  });

  test('an idempotency key makes one run however often it is enqueued or started', async () => {
    const engine = engineWith([]);
    const a = engine.enqueue(ECHO, { input: { label: 'a' }, idempotencyKey: 'ticket-42' });
    const b = engine.enqueue('echo', { input: { label: 'b' }, idempotencyKey: 'ticket-42' });
    expect(b).toEqual({ runId: a.runId, created: false });
    expect(engine.runs().length).toBe(1);
    // start: the first starts it, a second returns the same live run.
    const first = engine.start(ECHO, { input: { label: 's' }, idempotencyKey: 'ticket-43' });
    const again = engine.start(ECHO, { input: { label: 's' }, idempotencyKey: 'ticket-43' });
    expect(again).toBe(first);
    expect(await within(first.finished, 4000, 'started')).toBe('echo s');
    // Not live here (it ended): the error names it.
    const err = (() => {
      try {
        engine.start(ECHO, { input: { label: 's' }, idempotencyKey: 'ticket-43' });
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(DuplicateRunError);
    expect(err).toMatchObject({ code: 'ERR_DUPLICATE_RUN', runId: first.runId });
    // The queued one with the same key as an enqueue is the enqueued run.
    expect(() => engine.start(ECHO, { idempotencyKey: 'ticket-42' })).toThrow(new RegExp(a.runId));
    expect(() => engine.start(ECHO, { idempotencyKey: 'k', durability: 'off' })).toThrow(/not stored/);
  });

  test('higher priority first; waiting raises priority so a low one does not starve', async () => {
    const order: string[] = [];
    const clock = new TestClock(T0);
    const engine = engineWith(order, { clock });
    const old = engine.enqueue(ECHO, { input: { label: 'old, priority 0' } });
    await clock.advance(10 * 60_000); // ten minutes: ten priority points with the default aging
    const ids = [
      engine.enqueue(ECHO, { input: { label: 'low' }, priority: 1 }),
      engine.enqueue(ECHO, { input: { label: 'high' }, priority: 20 }),
      engine.enqueue(ECHO, { input: { label: 'mid' }, priority: 5 }),
    ].map((q) => q.runId);
    // One at a time: each run that ends frees the slot for the next by priority.
    const worker = work(engine, { concurrency: 1 });
    expect(await worker.poll()).toBe(1);
    await drained(engine, [old.runId, ...ids]);
    expect(order).toEqual(['high', 'old, priority 0', 'mid', 'low']);
  });

  test('runAt holds a run back until its time on the engine clock', async () => {
    const clock = new TestClock(T0);
    const engine = engineWith([], { clock });
    const q = engine.enqueue(ECHO, { input: { label: 'later' }, runAt: new Date(T0 + 60_000) });
    const worker = work(engine);
    expect(await worker.poll()).toBe(0);
    await clock.advance(59_999);
    expect(await worker.poll()).toBe(0);
    await clock.advance(1);
    expect(await worker.poll()).toBe(1);
    await drained(engine, [q.runId]);
  });

  test('runs sharing a concurrency key run one at a time', async () => {
    const engine = engineWith([]);
    const { release, SLOW } = gated(engine);
    const a = engine.enqueue(SLOW, { concurrencyKey: 'user:1' });
    const b = engine.enqueue(SLOW, { concurrencyKey: 'user:1' });
    const c = engine.enqueue(SLOW, { concurrencyKey: 'user:2' });
    const worker = work(engine, { concurrency: 5 });
    expect(await worker.poll()).toBe(2);
    expect(worker.runIds.sort()).toEqual([a.runId, c.runId].sort());
    expect(engine.run(b.runId)?.status).toBe('queued');
    expect(await worker.poll()).toBe(0);
    release();
    // The key frees when `a` ends; the worker fills the slot by itself.
    await drained(engine, [a.runId, b.runId, c.runId]);
  });

  test('result() waits for a run another engine works on: its output or its error', async () => {
    const producer = engineWith([], { pollInterval: 10 });
    producer.register('boom', (async () => {
      throw new Error('the model said no');
    }) as any);
    const ok = producer.enqueue(ECHO, { input: { label: 'far' } });
    const bad = producer.enqueue({ name: 'boom', nodes: { b: { runner: 'boom' } } });
    const consumer = engineWith([], { db: producer.db });
    consumer.register('boom', (async () => {
      throw new Error('the model said no');
    }) as any);
    const done = producer.result(ok.runId);
    const failed = producer.result(bad.runId).catch((e) => e);
    const worker = work(consumer);
    await worker.poll();
    expect(await within(done, 8000, 'result')).toBe('echo far');
    expect(await within(failed, 8000, 'error')).toMatchObject({ message: 'the model said no' });
    await expect(producer.result('01890000-0000-7000-8000-000000000000')).rejects.toThrow(/No run 01890000/);
  });

  test('bad options are named', () => {
    const engine = engineWith([]);
    engine.define(ECHO);
    expect(() => engine.enqueue('echo', { priority: 1.5 })).toThrow(/priority/);
    expect(() => engine.enqueue('echo', { runAt: 'soon' as never })).toThrow(/runAt/);
    expect(() => engine.enqueue('echo', { idempotencyKey: '' })).toThrow(/idempotencyKey/);
    expect(() => engine.enqueue('nope')).toThrow(/No definition named 'nope'/);
    expect(() => engine.enqueue({ name: 'inline', nodes: { a: { run: async () => 1 } } } as never)).toThrow(/registered runners/);
    expect(() => engine.work({ concurrency: 0 })).toThrow(/concurrency/);
  });
});

describe('workers and runs that need a holder', () => {
  test('an idle machine is handed back and claimed again when an event arrives', async () => {
    const engine = engineWith([]);
    const worker = work(engine, { idleAfter: 0 });
    const q = engine.enqueue(APPROVAL);
    expect(await worker.poll()).toBe(1);
    await waitUntil(() => engine.run(q.runId)?.status === 'waitingForEvent', 'waiting');
    // Resting: the next poll hands it back (its slot and its lease).
    expect(await worker.poll()).toBe(0);
    expect(worker.running).toBe(0);
    expect(engine.get(q.runId)).toBeUndefined();
    // Another engine on the file sends the event; the worker finds it and finishes the run.
    const other = engineWith([], { db: engine.db });
    other.send(q.runId, { type: 'approve', data: { by: 'ada' } });
    expect(await worker.poll()).toBe(1);
    await drained(engine, [q.runId]);
    expect(engine.run(q.runId)).toMatchObject({ status: 'finished', output: 'done ada' });
    expect(engine.steps(q.runId).map((s) => s.node)).toEqual(['ask', 'done']);
  });

  test('a machine resumed while a claim is out is watched (the claim does not hold the engine)', async () => {
    const engine = engineWith([]);
    const run = engine.start(APPROVAL);
    await waitUntil(() => engine.run(run.runId)?.status === 'waitingForEvent', 'waiting');
    await engine.close();
    const other = engineWith([], { db: engine.db });
    other.enqueue(ECHO, { input: { label: 'q' } });
    const worker = work(other);
    const claim = worker.poll();
    // While the claim waits on the thread pool: a resume, whose machine is watched.
    const resumed = await other.resume(run.runId);
    other.send(run.runId, { type: 'approve', data: { by: 'cy' } });
    expect(await within(resumed.finished, 4000, 'resumed')).toBe('done cy');
    expect(await claim).toBe(1);
  });

  test('a sleeping machine is claimed again when its timer falls due', async () => {
    const clock = new TestClock(T0);
    const engine = engineWith([], { clock });
    const worker = work(engine, { idleAfter: 0 });
    const q = engine.enqueue(NAP);
    expect(await worker.poll()).toBe(1);
    await waitUntil(() => engine.run(q.runId)?.status === 'sleeping', 'sleeping');
    expect(await worker.poll()).toBe(0);
    expect(worker.running).toBe(0);
    await clock.advance(3_599_000);
    expect(await worker.poll()).toBe(0);
    await clock.advance(1000);
    expect(await worker.poll()).toBe(1);
    // A test clock fires what is due when the test moves it.
    await clock.advance(0);
    await drained(engine, [q.runId]);
    expect(engine.run(q.runId)?.output).toBe('done');
  });

  test("a run left by a closed engine is taken by a worker; another's held run is not", async () => {
    const engine = engineWith([]);
    const { release, SLOW } = gated(engine);
    const held = engine.start(SLOW);
    const left = engine.start(SLOW);
    await waitUntil(() => engine.steps(left.runId).length === 1 && engine.steps(held.runId).length === 1, 'steps start');
    const other = engineWith([], { db: engine.db });
    other.register('slow', (async () => 'taken over') as any);
    const worker = work(other);
    // Its first timed poll goes out now, not while the engine closes (a later poll waits
    // for one that is out, so the poll below is the one that finds the runs).
    await new Promise((r) => setTimeout(r, 0));
    expect(await worker.poll()).toBe(0);
    // Closing hands its leases back: both runs are free, both were mid-step.
    await engine.close();
    release();
    expect(await worker.poll()).toBe(2);
    await drained(other, [held.runId, left.runId]);
    expect(other.run(left.runId)?.output).toBe('taken over');
  });

  test('stop() lets running steps finish and hands resting machines back', async () => {
    const engine = engineWith([]);
    const { release, SLOW } = gated(engine);
    const worker = work(engine);
    const slow = engine.enqueue(SLOW);
    const approval = engine.enqueue(APPROVAL);
    expect(await worker.poll()).toBe(2);
    await waitUntil(() => engine.run(approval.runId)?.status === 'waitingForEvent', 'waiting');
    let stopped = false;
    const stopping = worker.stop().then(() => (stopped = true));
    await waitUntil(() => worker.running === 1, 'the resting machine is handed back');
    expect(stopped).toBe(false);
    release();
    await within(stopping, 4000, 'stop');
    expect(engine.run(slow.runId)?.status).toBe('finished');
    expect(engine.run(approval.runId)?.status).toBe('waitingForEvent');
    // Handed back: another engine resumes it at once.
    const other = engineWith([], { db: engine.db });
    const resumed = await other.resume(approval.runId);
    other.send(approval.runId, { type: 'approve', data: { by: 'bo' } });
    expect(await within(resumed.finished, 4000, 'resumed')).toBe('done bo');
    expect(await worker.poll()).toBe(0);
  });

  test('a run a worker cannot start (its runner is not registered there) is left to others', async () => {
    const engine = engineWith([]);
    const q = engine.enqueue(ECHO, { input: { label: 'x' } });
    const bare = open({ db: engine.db, durability: 'sync' });
    const worker = work(bare);
    const errors: Error[] = [];
    worker.on('error', (e) => errors.push(e));
    expect(await worker.poll()).toBe(0);
    expect(errors.map((e) => e.message)).toEqual([expect.stringMatching(/names runner 'echo', which is not registered/)]);
    // Skipped here for a while, handed back at once: a worker that has the runner takes it.
    expect(await worker.poll()).toBe(0);
    expect(errors.length).toBe(1);
    expect(engine.run(q.runId)?.status).toBe('queued');
    expect(await work(engine).poll()).toBe(1);
    await drained(engine, [q.runId]);
  });
});

describe('examples/queue-workers.mjs', () => {
  test('runs: 20 tickets enqueued once each, taken by the workers, every result back', async () => {
    const example = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'examples', 'queue-workers.mjs');
    const out = await new Promise<string>((resolve, reject) =>
      execFile(process.execPath, [example], { env: { ...process.env, RAMUS_DB: tempDb() }, timeout: 60_000 }, (err, stdout, stderr) =>
        err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout),
      ),
    );
    expect(out).toContain('enqueued again: false');
    expect(out).toMatch(/20 tickets triaged on (SQLite|PostgreSQL)/);
    expect(out).toContain("team: 'facilities'");
  }, 60_000);
});
