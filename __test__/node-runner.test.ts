// DagNodeRunner, the original's per-node runner wired to its parents by hand: the cases of
// the original's own node_runner tests, through the package.
import { describe, expect, test } from 'vitest';
import { DagNodeRunner, LocalSemaphore, type RamusEvent } from 'ramus';

import { settle, within } from './helpers.mjs';

/** What a node emitted: its `finish` payload, or the reason it did not finish. */
function watch(runner: DagNodeRunner<any, any, any, any>) {
  let ended = false;
  const outcome = new Promise((resolve, reject) => {
    runner.on('finish', (d) => {
      ended = true;
      resolve(d);
    });
    runner.on('parentError', () => {
      ended = true;
      reject(new Error('parentError'));
    });
    runner.on('ramus:error', (e) => {
      ended = true;
      reject(e.error);
    });
  });
  outcome.catch(() => {});
  return { outcome, ended: () => ended };
}

/** A parent that returns `output`, or throws when `fail`. */
function parent(name: string, output: unknown, fail = false) {
  const runner = new DagNodeRunner({
    name,
    dagName: name,
    rootInput: {},
    context: {},
    config: {
      run: async () => {
        if (fail) throw new Error(`${name} failed`);
        return output;
      },
    },
  });
  runner.init([]);
  return runner;
}

describe('DagNodeRunner', () => {
  test('without parents it waits for run(), then finishes with its output', async () => {
    const runner = new DagNodeRunner({
      name: 'node',
      dagName: 'node',
      rootInput: {},
      context: { value: 1 },
      config: { run: ({ context }) => context.value + 1 },
    });
    const { outcome, ended } = watch(runner);
    runner.init([]);
    expect(runner.state).toBe('waiting');
    expect(ended()).toBe(false);
    expect(await runner.run()).toBe(true);
    expect(await outcome).toEqual({ name: 'node', output: 2 });
    expect(runner.state).toBe('finished');
    expect(runner.result).toEqual({ type: 'success', output: 2 });
    // A finished node does not run again.
    expect(await runner.run()).toBe(false);
  });

  test('with one parent it runs when the parent finishes, with its output as input', async () => {
    const p = parent('parent', 2);
    const runner = new DagNodeRunner({
      name: 'node',
      dagName: 'node',
      rootInput: {},
      context: { value: 1 },
      config: { parents: ['parent'], run: ({ context, input }) => (input.parent as number) + context.value + 1 },
    });
    const { outcome, ended } = watch(runner);
    runner.init([p]);
    expect(runner.state).toBe('waiting');
    // The parent has not run: the node cannot.
    expect(await runner.run()).toBe(false);
    expect(runner.state).toBe('waiting');
    expect(ended()).toBe(false);
    await p.run();
    expect(await within(outcome, 2000, 'node')).toEqual({ name: 'node', output: 4 });
    expect(runner.state).toBe('finished');
    expect(runner.result).toEqual({ type: 'success', output: 4 });
  });

  test('with several parents it waits for the last one', async () => {
    const parents = [1, 2, 3, 4].map((i) => parent(`parent${i}`, i));
    const runner = new DagNodeRunner({
      name: 'node',
      dagName: 'node',
      rootInput: {},
      context: { value: 10 },
      config: {
        parents: parents.map((p) => p.name),
        run: async ({ context, input }) => (input.parent1 as number) + (input.parent2 as number) + (input.parent3 as number) + (input.parent4 as number) + context.value,
      },
    });
    const { outcome, ended } = watch(runner);
    runner.init(parents);
    await Promise.all([parents[0]!.run(), parents[2]!.run(), parents[3]!.run()]);
    expect(await runner.run()).toBe(false);
    expect(runner.state).toBe('waiting');
    expect(ended()).toBe(false);
    await parents[1]!.run();
    expect(await within(outcome, 2000, 'node')).toEqual({ name: 'node', output: 20 });
    expect(runner.result).toEqual({ type: 'success', output: 20 });
  });

  test('a failed parent cancels it (parentError) unless it tolerates parent errors', async () => {
    const ok = parent('ok', 1);
    const bad = parent('bad', 1, true);
    let ran = false;
    const runner = new DagNodeRunner({
      name: 'node',
      dagName: 'node',
      rootInput: {},
      context: {},
      config: {
        parents: ['ok', 'bad'],
        run: async () => {
          ran = true;
          return 1;
        },
      },
    });
    let sawParentError = false;
    runner.on('parentError', () => (sawParentError = true));
    const { outcome, ended } = watch(runner);
    runner.init([ok, bad]);
    await bad.run();
    await expect(within(outcome, 2000, 'node')).rejects.toThrow('parentError');
    expect(runner.state).toBe('cancelled');
    expect(runner.result).toBeUndefined();
    expect(ended()).toBe(true);
    expect(sawParentError).toBe(true);
    await ok.run();
    await settle();
    expect(runner.state).toBe('cancelled');
    expect(ran).toBe(false);
    expect(bad.result).toMatchObject({ type: 'error' });
  });

  test('tolerating parent errors, it runs with a failed parent as undefined; even when every parent failed', async () => {
    const good = parent('good', 5);
    const bad = parent('bad', 8, true);
    const runner = new DagNodeRunner({
      name: 'node',
      dagName: 'node',
      rootInput: {},
      context: {},
      config: {
        parents: ['good', 'bad'],
        tolerateParentErrors: true,
        run: async ({ input }) => (input.good as number) + ((input.bad as number | undefined) ?? 0) + 1,
      },
    });
    const { outcome } = watch(runner);
    runner.init([good, bad]);
    await bad.run();
    await good.run();
    expect(await within(outcome, 2000, 'node')).toEqual({ name: 'node', output: 6 });
    expect(runner.state).toBe('finished');

    const bad1 = parent('bad1', 5, true);
    const bad2 = parent('bad2', 8, true);
    const all = new DagNodeRunner({
      name: 'node',
      dagName: 'node',
      rootInput: {},
      context: {},
      config: {
        parents: ['bad1', 'bad2'],
        tolerateParentErrors: true,
        run: async ({ input }) => ((input.bad1 as number | undefined) ?? 0) + ((input.bad2 as number | undefined) ?? 0) + 2,
      },
    });
    const watched = watch(all);
    all.init([bad1, bad2]);
    void bad1.run();
    void bad2.run();
    expect(await within(watched.outcome, 2000, 'node')).toEqual({ name: 'node', output: 2 });
  });

  test('autorun false: the node is ready once its parents finished and runs on run()', async () => {
    const p = parent('parent', 2);
    const runner = new DagNodeRunner({
      name: 'node',
      dagName: 'node',
      rootInput: {},
      context: { value: 1 },
      autorun: () => false,
      config: { parents: ['parent'], run: ({ context, input }) => (input.parent as number) + context.value + 1 },
    });
    const states: string[] = [];
    runner.on('state', (e) => states.push(e.state));
    const { outcome, ended } = watch(runner);
    runner.init([p]);
    expect(await runner.run()).toBe(false);
    expect(runner.state).toBe('waiting');
    await p.run();
    await settle();
    expect(runner.state).toBe('ready');
    expect(ended()).toBe(false);
    expect(await runner.run()).toBe(true);
    expect(await outcome).toEqual({ name: 'node', output: 4 });
    expect(runner.state).toBe('finished');
    expect(states).toEqual(['ready', 'running', 'finished']);
  });

  test('with a semaphore it runs once a slot is free', async () => {
    const semaphore = new LocalSemaphore({ key: 0 });
    let ran = false;
    const runner = new DagNodeRunner({
      name: 'node',
      dagName: 'node',
      rootInput: {},
      context: { value: 1 },
      semaphores: [semaphore],
      config: {
        semaphoreKey: 'key',
        run: ({ context }) => {
          ran = true;
          return context.value + 1;
        },
      },
    });
    const { outcome, ended } = watch(runner);
    runner.init([]);
    const running = runner.run();
    await settle();
    expect(ran).toBe(false);
    expect(runner.state).toBe('pendingSemaphore');
    expect(ended()).toBe(false);
    semaphore.setLimit('key', 1);
    expect(await within(running, 2000, 'run')).toBe(true);
    expect(await outcome).toEqual({ name: 'node', output: 2 });
    expect(runner.result).toEqual({ type: 'success', output: 2 });
  });

  test('a failed node reports ramus:error, can be run again, and its events reach eventCb', async () => {
    let calls = 0;
    const events: RamusEvent[] = [];
    const runner = new DagNodeRunner({
      name: 'flaky',
      dagName: 'd',
      rootInput: {},
      context: {},
      eventCb: (e) => events.push(e),
      config: {
        run: () => {
          if (++calls === 1) throw new Error('first call fails');
          return 'second';
        },
      },
    });
    const errors: unknown[] = [];
    runner.on('ramus:error', (e) => errors.push(e.error));
    runner.init([]);
    expect(await runner.run()).toBe(true);
    expect(runner.state).toBe('error');
    expect(runner.result).toMatchObject({ type: 'error' });
    expect((errors[0] as Error).message).toBe('first call fails');
    expect(await runner.run()).toBe(true);
    expect(runner.result).toEqual({ type: 'success', output: 'second' });
    expect(events.every((e) => e.sourceNode === 'flaky' && e.source === 'd')).toBe(true);
    expect(events.map((e) => e.type)).toContain('dag:node_error');
    expect(events.map((e) => e.type)).toContain('dag:node_finish');
  });

  test('finished read after the node settled settles as it did', async () => {
    const search = parent('search', ['a', 'b']);
    const summary = new DagNodeRunner({
      name: 'summary',
      dagName: 'research',
      rootInput: {},
      context: {},
      config: { parents: ['search'], run: ({ input }) => (input.search as string[]).join() },
    });
    summary.init([search]);
    await search.run();
    await settle();
    expect(summary.state).toBe('finished');
    expect(await within(summary.finished, 2000, 'summary')).toEqual({ name: 'summary', output: 'a,b' });
    const bad = parent('bad', 1, true);
    await bad.run();
    await expect(within(bad.finished, 2000, 'bad')).rejects.toThrow('bad failed');
  });

  test('a parent cancelled after init cancels its children (parentError)', async () => {
    const p = new DagNodeRunner({ name: 'p', dagName: 'd', rootInput: {}, context: {}, config: { parents: ['gate'], run: () => 1 } });
    const gate = parent('gate', 1);
    p.init([gate]);
    const child = new DagNodeRunner({ name: 'child', dagName: 'd', rootInput: {}, context: {}, config: { parents: ['p'], run: () => 2 } });
    const { outcome } = watch(child);
    child.init([p]);
    p.cancel();
    await expect(within(outcome, 2000, 'child')).rejects.toThrow('parentError');
    expect(child.state).toBe('cancelled');
    await expect(within(child.finished, 2000, 'child')).rejects.toThrow('parentError');
    await expect(p.finished).rejects.toThrow('Cancelled');
  });

  test('cancel() before it runs: it never runs, and finished rejects', async () => {
    const p = parent('parent', 1);
    let ran = false;
    const runner = new DagNodeRunner({
      name: 'node',
      dagName: 'node',
      rootInput: {},
      context: {},
      config: { parents: ['parent'], run: () => (ran = true) },
    });
    runner.init([p]);
    const finished = runner.finished;
    finished.catch(() => {});
    runner.cancel();
    await expect(finished).rejects.toThrow('Cancelled');
    await p.run();
    await settle();
    expect(runner.state).toBe('cancelled');
    expect(ran).toBe(false);
    expect(await runner.run()).toBe(false);
  });
});
