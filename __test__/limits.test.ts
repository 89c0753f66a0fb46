// Limits shared through the store (engine.limits): concurrency and rate per semaphoreKey,
// held across runs, nested runs and processes; run limits (workflow:<name>, '*') on what
// workers start; the slots of a killed process come back with its lease.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { Engine, LocalSemaphore, TestClock, runDag } from 'ramus';

import { engineFixtures } from './engine-fixtures';
// @ts-expect-error: plain ESM helpers without types
import { waitUntil, within } from './helpers.mjs';

const RAMUS = createRequire(import.meta.url).resolve('ramus');
const { open, tempDir } = engineFixtures('ramus-limits-');
const T0 = Date.UTC(2026, 0, 1);

/** Counts steps running at once; `gate` holds them until the test opens it. */
function meter() {
  let now = 0;
  let max = 0;
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  return {
    get max() {
      return max;
    },
    get now() {
      return now;
    },
    open: () => open(),
    async step<T>(out: T): Promise<T> {
      now++;
      max = Math.max(max, now);
      await gate;
      await new Promise((r) => setImmediate(r));
      now--;
      return out;
    },
  };
}

const wide = (n: number, key: string) => ({
  name: `wide-${key}`,
  nodes: Object.fromEntries(Array.from({ length: n }, (_, i) => [`n${i}`, { runner: 'metered', semaphoreKey: key }])),
});

describe('limits in one process', () => {
  test('a concurrency limit holds across runs; engine.limits() shows the slots held', async () => {
    const engine = open({ durability: 'sync' });
    const m = meter();
    engine.register('metered', (() => m.step('x')) as any);
    engine.limits({ llm: { concurrency: 2 } });
    const runs = [engine.start(wide(3, 'llm')), engine.start(wide(3, 'llm'))];
    await waitUntil(() => m.now === 2, 'two steps run');
    // The other four asked and were refused: they wait in the store's line.
    await waitUntil(() => engine.limits()[0]!.waiting === 4, 'four steps wait');
    expect(m.now).toBe(2);
    expect(engine.limits()).toEqual([{ key: 'llm', concurrency: 2, rate: null, running: 2, waiting: 4 }]);
    m.open();
    await within(Promise.all(runs.map((r) => r.finished)), 8000, 'runs');
    expect(m.max).toBe(2);
    expect(engine.limits()[0]!.running).toBe(0);
  });

  test('nested runs hold to the limit; a nested step under a step holding its key does not wait on it', async () => {
    const engine = open({ durability: 'sync' });
    const m = meter();
    engine.limits({ tool: { concurrency: 3 }, llm: { concurrency: 1 } });
    engine.register('metered', (() => m.step('x')) as any);
    engine.register('fanout', (async () => {
      // Ten nested DAGs of 'tool' steps, started inside one step.
      const outs = await Promise.all(Array.from({ length: 10 }, () => runDag({ dag: { name: 'tool-call', nodes: { t: { run: () => m.step(1), semaphoreKey: 'tool' } } } })));
      return outs.length;
    }) as any);
    engine.register('thinks', (async () => {
      // Holds the only 'llm' slot and calls a nested 'llm' step: it runs under that slot.
      return runDag({ dag: { name: 'thought', nodes: { inner: { run: async () => 'inner', semaphoreKey: 'llm' } } } });
    }) as any);
    const run = engine.start({ name: 'nested', nodes: { f: { runner: 'fanout' }, l: { runner: 'thinks', semaphoreKey: 'llm' } } });
    await waitUntil(() => m.now === 3, 'three tool steps run');
    const tool = () => engine.limits().find((l) => l.key === 'tool')!;
    await waitUntil(() => tool().waiting === 7, 'the seven other nested steps wait');
    expect(m.now).toBe(3);
    m.open();
    expect(await within(run.finished, 8000, 'nested')).toEqual({ f: 10, l: 'inner' });
    expect(m.max).toBe(3);
  });

  test("a run's own semaphores reach the runs nested in its steps", async () => {
    const engine = open({ durability: 'sync' });
    const m = meter();
    const sem = new LocalSemaphore({ tool: 3 });
    engine.register('fanout', (async () => {
      const outs = await Promise.all(Array.from({ length: 30 }, () => runDag({ dag: { name: 'tool-call', nodes: { t: { run: () => m.step(1), semaphoreKey: 'tool' } } } })));
      return outs.length;
    }) as any);
    const run = engine.start({ name: 'fan', nodes: { f: { runner: 'fanout' } } }, { semaphores: [sem] });
    await waitUntil(() => m.now === 3 && sem.counts.get('tool')!.pending === 27, 'three run, 27 wait');
    m.open();
    expect(await within(run.finished, 8000, 'fan')).toBe(30);
    expect(m.max).toBe(3);
  });

  test('a rate lets steps through as its bucket refills on the engine clock', async () => {
    const clock = new TestClock(T0);
    const engine = open({ durability: 'sync', clock });
    const started: string[] = [];
    engine.register('rated', (async ({ args }: any) => {
      started.push(args.n);
      return args.n;
    }) as any);
    engine.limits({ api: { rate: '2/min' } });
    const nodes = Object.fromEntries(['a', 'b', 'c', 'd'].map((n) => [n, { runner: 'rated', args: { n }, semaphoreKey: 'api' }]));
    const run = engine.start({ name: 'rated', nodes });
    const waiting = () => engine.limits()[0]!.waiting;
    await waitUntil(() => started.length === 2 && waiting() === 2, 'a burst of two, two refused');
    await clock.advance(30_000); // one token
    await waitUntil(() => started.length === 3 && waiting() === 1, 'the third, one still refused');
    expect(started.length).toBe(3);
    await clock.advance(30_000);
    await within(run.finished, 4000, 'rated run');
    expect(started.sort()).toEqual(['a', 'b', 'c', 'd']);
  });

  test('workflow limits bound how many queued runs of a definition workers start', async () => {
    const engine = open({ durability: 'sync' });
    const m = meter();
    engine.register('metered', (() => m.step('x')) as any);
    const SLOW = { name: 'slow', nodes: { s: { runner: 'metered' } } };
    engine.limits({ 'workflow:slow': { concurrency: 2 } });
    const ids = [1, 2, 3, 4].map(() => engine.enqueue(SLOW).runId);
    const worker = engine.work({ concurrency: 10, pollInterval: 3_600_000 });
    expect(await worker.poll()).toBe(2);
    expect(await worker.poll()).toBe(0);
    m.open();
    await waitUntil(() => ids.every((id) => engine.run(id)?.status === 'finished'), 'all four', 8000);
    await worker.stop();
  });

  test('slots go to waiting steps by their run priority, across the line of waiters', async () => {
    const engine = open({ durability: 'sync' });
    const order: string[] = [];
    let free!: () => void;
    const held = new Promise<void>((r) => (free = r));
    engine.register('block', (async () => held) as any);
    engine.register('call', (async ({ rootInput }: any) => {
      order.push(rootInput.label);
      return rootInput.label;
    }) as any);
    engine.limits({ llm: { concurrency: 1 } });
    const blocker = engine.start({ name: 'blocker', nodes: { b: { runner: 'block', semaphoreKey: 'llm' } } });
    await waitUntil(() => engine.limits()[0]!.running === 1, 'the blocker holds the slot');
    const CALL = { name: 'call', nodes: { c: { runner: 'call', semaphoreKey: 'llm' } } };
    const low = engine.enqueue(CALL, { input: { label: 'low' }, priority: 0 });
    const high = engine.enqueue(CALL, { input: { label: 'high' }, priority: 5 });
    const worker = engine.work({ concurrency: 5, pollInterval: 3_600_000 });
    expect(await worker.poll()).toBe(2);
    await waitUntil(() => engine.limits()[0]!.waiting === 2, 'both wait in line');
    free();
    await within(blocker.finished, 4000, 'blocker');
    await waitUntil(() => [low.runId, high.runId].every((id) => engine.run(id)?.status === 'finished'), 'both run', 8000);
    expect(order).toEqual(['high', 'low']);
    expect(engine.limits()[0]).toMatchObject({ running: 0, waiting: 0 });
    await worker.stop();
  });

  test("a step's release gives back its own slot, never another step's", async () => {
    const engine = open({ durability: 'sync' });
    const gates = new Map<string, () => void>();
    const ran: string[] = [];
    engine.register('gated', (async ({ rootInput }: any) => {
      ran.push(rootInput.label);
      await new Promise<void>((r) => gates.set(rootInput.label, r));
      return rootInput.label;
    }) as any);
    const STEP = { name: 'gated', nodes: { g: { runner: 'gated', semaphoreKey: 'llm' } } };
    engine.limits({ other: { concurrency: 5 } });
    // A starts while 'llm' has no limit: it takes no slot.
    const a = engine.start(STEP, { input: { label: 'a' } });
    await waitUntil(() => gates.has('a'), 'a runs');
    engine.limits({ llm: { concurrency: 1 } });
    const b = engine.start(STEP, { input: { label: 'b' } });
    await waitUntil(() => gates.has('b'), 'b takes the slot');
    const c = engine.start(STEP, { input: { label: 'c' } });
    const llm = () => engine.limits().find((l) => l.key === 'llm')!;
    await waitUntil(() => llm().waiting === 1, 'c waits');
    gates.get('a')!();
    await within(a.finished, 4000, 'a');
    // A gave back nothing: B still holds the only slot, C still waits.
    await waitUntil(() => llm().running === 1 && llm().waiting === 1, 'b holds, c waits');
    expect(ran).toEqual(['a', 'b']);
    gates.get('b')!();
    await waitUntil(() => gates.has('c'), 'c runs after b');
    gates.get('c')!();
    await within(Promise.all([b.finished, c.finished]), 4000, 'b and c');
  });

  test('a cancelled step leaves the line at once', async () => {
    const engine = open({ durability: 'sync' });
    let free!: () => void;
    const held = new Promise<void>((r) => (free = r));
    engine.register('block', (async () => held) as any);
    engine.register('call', (async () => 'called') as any);
    engine.limits({ llm: { concurrency: 1 } });
    const blocker = engine.start({ name: 'blocker', nodes: { b: { runner: 'block', semaphoreKey: 'llm' } } });
    await waitUntil(() => engine.limits()[0]!.running === 1, 'the blocker holds the slot');
    const waiter = engine.start({ name: 'call', nodes: { c: { runner: 'call', semaphoreKey: 'llm' } } });
    await waitUntil(() => engine.limits()[0]!.waiting === 1, 'it waits');
    waiter.cancel();
    await expect(waiter.finished).rejects.toThrow(/Cancelled/);
    await waitUntil(() => engine.limits()[0]!.waiting === 0, 'the line is empty');
    free();
    await within(blocker.finished, 4000, 'blocker');
    expect(engine.limits()[0]).toMatchObject({ running: 0, waiting: 0 });
  });

  test("a node's or state's category is its limit key", async () => {
    const engine = open({ durability: 'sync' });
    const m = meter();
    engine.register('metered', (() => m.step('x')) as any);
    engine.limits({ llm: { concurrency: 1 } });
    const dag = engine.start({ name: 'cat-dag', nodes: { a: { runner: 'metered', category: 'llm' }, b: { runner: 'metered', category: 'llm' } } });
    const machine = engine.start({ name: 'cat-machine', initial: 's', nodes: { s: { runner: 'metered', category: 'llm', transition: { '': 'done' } }, done: { final: true } } });
    await waitUntil(() => m.now === 1 && engine.limits()[0]!.waiting === 2, 'one runs, two wait');
    m.open();
    await within(Promise.all([dag.finished, machine.finished]), 8000, 'both');
    expect(m.max).toBe(1);
    expect(() => engine.define({ name: 'both', nodes: { a: { runner: 'metered', semaphoreKey: 'llm', category: 'tool' } } })).toThrow(/Node 'a' has (semaphoreKey 'llm' and category 'tool'|category 'tool' and semaphoreKey 'llm'); category is another name for semaphoreKey/);
  });

  test('bad limits are named', () => {
    const engine = open();
    expect(() => engine.limits({ llm: { concurrency: -1 } })).toThrow(/'llm'.concurrency must be a whole number/);
    expect(() => engine.limits({ llm: { rate: '60 per minute' } as never })).toThrow(/'llm'.rate must be like '60\/min'/);
    expect(() => engine.limits({ llm: { concurency: 2 } as never })).toThrow(/unknown field 'concurency'/);
    expect(() => engine.limits([] as never)).toThrow(/must be an object/);
    engine.limits({ llm: { rate: '10/5s' } });
    expect(engine.limits()).toEqual([{ key: 'llm', concurrency: null, rate: { count: 10, per: 5000 }, running: 0, waiting: 0 }]);
  });
});

describe('limits across processes', () => {
  test('three processes never run more steps of a key at once than its limit', async () => {
    const engine = open({ durability: 'sync' });
    engine.limits({ llm: { concurrency: 2 } });
    const dir = tempDir();
    const log = path.join(dir, 'steps.log');
    const script = path.join(dir, 'child.mjs');
    fs.writeFileSync(
      script,
      `
      import fs from 'node:fs';
      const [ramus, db, log] = process.argv.slice(2);
      const { Engine } = await import(ramus);
      const engine = new Engine({ db, durability: 'sync' });
      engine.register('metered', async () => {
        fs.appendFileSync(log, 'start ' + process.hrtime.bigint() + '\\n');
        await new Promise((r) => setTimeout(r, 15));
        fs.appendFileSync(log, 'end ' + process.hrtime.bigint() + '\\n');
        return 1;
      });
      const nodes = Object.fromEntries(Array.from({ length: 8 }, (_, i) => ['n' + i, { runner: 'metered', semaphoreKey: 'llm' }]));
      await engine.start({ name: 'wide', nodes }).finished;
      await engine.close();
      `,
    );
    // hrtime is per machine (CLOCK_MONOTONIC), so the three logs share one timeline.
    const children = [0, 1, 2].map(() => spawn(process.execPath, [script, RAMUS, engine.db, log], { stdio: ['ignore', 'ignore', 'pipe'] }));
    const codes = await within(Promise.all(children.map((c) => new Promise((r) => c.on('close', r)))), 30_000, 'children');
    expect(codes).toEqual([0, 0, 0]);
    const events = fs
      .readFileSync(log, 'utf8')
      .trim()
      .split('\n')
      .map((l) => l.split(' '))
      .map(([what, t]) => [BigInt(t!), what === 'start' ? 1 : -1] as const)
      .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] - b[1]));
    expect(events.length).toBe(48);
    let running = 0;
    let max = 0;
    for (const [, d] of events) max = Math.max(max, (running += d));
    expect(max).toBe(2);
  }, 40_000);

  test("a killed process's slots come back when its lease runs out", async () => {
    const engine = open({ durability: 'sync', leaseMs: 1000 });
    engine.limits({ llm: { concurrency: 1 } });
    const dir = tempDir();
    const script = path.join(dir, 'holder.mjs');
    fs.writeFileSync(
      script,
      `
      import fs from 'node:fs';
      const [ramus, db, dir] = process.argv.slice(2);
      const { Engine } = await import(ramus);
      const engine = new Engine({ db, durability: 'sync', leaseMs: 1000 });
      engine.register('hold', async () => {
        fs.writeFileSync(dir + '/holding', '');
        await new Promise(() => {});
      });
      engine.start({ name: 'holder', nodes: { h: { runner: 'hold', semaphoreKey: 'llm' } } });
      setInterval(() => {}, 1000);
      `,
    );
    const child = spawn(process.execPath, [script, RAMUS, engine.db, dir], { stdio: 'ignore' });
    await waitUntil(() => fs.existsSync(path.join(dir, 'holding')), 'the child holds the slot', 10_000);
    expect(engine.limits()[0]!.running).toBe(1);
    child.kill('SIGKILL');
    await new Promise((r) => child.on('close', r));
    // Its slot lasts as long as its lease would have.
    const later = open({ db: engine.db, durability: 'sync', clock: new TestClock(Date.now() + 5_000) });
    later.register('quick', (async () => 'got it') as any);
    const run = later.start({ name: 'quick', nodes: { q: { runner: 'quick', semaphoreKey: 'llm' } } });
    expect(await within(run.finished, 4000, 'after the lease')).toBe('got it');
  }, 30_000);
});
