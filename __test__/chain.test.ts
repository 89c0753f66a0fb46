// chain(name, steps) and DagBuilder.then: steps in a line, each fed the previous step's output.
import { createRequire } from 'node:module';

import { describe, expect, test } from 'vitest';

import { chain, CompiledDag, DagBuilder, DagRunner, runDag, type NodeResultCache, type RamusEvent } from 'ramus';

import { sleep } from './helpers.mjs';

function record(runner: DagRunner): RamusEvent[] {
  const events: RamusEvent[] = [];
  runner.on('event', (e: RamusEvent) => events.push(e));
  return events;
}

describe('chain', () => {
  test('is exported by both entry points, as one function', () => {
    expect(typeof chain).toBe('function');
    expect(createRequire(import.meta.url)('ramus').chain).toBe(chain);
  });

  test('runs its steps in order, each given the previous output itself; the run resolves with the last', async () => {
    const seen: unknown[] = [];
    const dag = chain('words', [
      ({ input }: { input: string }) => (seen.push(input), input.split(' ')),
      ({ input }) => (seen.push(input), input.length),
      ({ input }) => (seen.push(input), input * 10),
    ]);
    expect(await runDag({ dag, input: 'a b c' })).toBe(30);
    expect(seen).toEqual(['a b c', ['a', 'b', 'c'], 3]);
    // The same config runs again, compiled or through a DagRunner.
    expect(await runDag({ dag: new CompiledDag(dag), input: 'x' })).toBe(10);
    expect(await new DagRunner({ dag, input: 'x y' }).run()).toBe(20);
  });

  test('async steps are awaited before the next one starts', async () => {
    const log: string[] = [];
    const dag = chain('slow', [
      async ({ input }: { input: number }) => (await sleep(20), log.push('a'), input + 1),
      ({ input }) => (log.push('b'), Promise.resolve(input * 2)),
      async ({ input }) => (await sleep(5), log.push('c'), `n=${input}`),
    ]);
    expect(await runDag({ dag, input: 1 })).toBe('n=4');
    expect(log).toEqual(['a', 'b', 'c']);
  });

  test('context, rootInput, tools and emit reach every step unchanged', async () => {
    const dag = chain('args', [
      ({ input, context, tools }: { input: number; context: { calls: number }; tools: Record<string, any> }) => {
        context.calls += 1;
        return tools.double(input);
      },
      ({ input, context, rootInput, isCancelled }) => ({ input, rootInput, calls: context.calls, cancelled: isCancelled() }),
    ]);
    const context = { calls: 0 };
    expect(await runDag({ dag, input: 4, context, tools: { double: (n: number) => n * 2 } })).toEqual({ input: 8, rootInput: 4, calls: 1, cancelled: false });
    expect(context.calls).toBe(1);
  });

  test('names: [name, step], else a function name used once, else step<position>; node objects keep their fields', () => {
    function fetchPage() {
      return 'html';
    }
    const twice = () => 1;
    const dag = chain('names', [fetchPage, ['parse', { semaphoreKey: 'llm', tags: ['t'], run: () => 2 }], twice, twice, () => 3, fetchPage.bind(null)]);
    expect(Object.keys(dag.nodes)).toEqual(['fetchPage', 'parse', 'step3', 'step4', 'step5', 'step6']);
    expect(dag.nodes.parse).toMatchObject({ semaphoreKey: 'llm', tags: ['t'], parents: ['fetchPage'] });
    expect(dag.nodes.fetchPage!.parents).toBeUndefined();
    expect(dag.nodes.step6!.parents).toEqual(['step5']);
  });

  test('a step that throws fails the run with that error; the steps after it never run', async () => {
    class QuotaError extends Error {}
    const ran: string[] = [];
    const dag = chain('fails', [
      ['one', () => (ran.push('one'), 1)],
      ['two', async () => {
        ran.push('two');
        throw new QuotaError('out of quota');
      }],
      ['three', () => ran.push('three')],
    ]);
    const runner = new DagRunner({ dag, input: null });
    const err = await runner.run().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QuotaError);
    expect((err as Error).message).toBe('out of quota');
    expect(ran).toEqual(['one', 'two']);
    expect([runner.nodeState('one'), runner.nodeState('two'), runner.nodeState('three')]).toEqual(['finished', 'error', 'cancelled']);
  });

  test("events name the steps; a step's emit is tied to it", async () => {
    const dag = chain('observed', [
      function draft({ input }: { input: string }) {
        return `${input}!`;
      },
      ['review', ({ input, emit }) => (emit('review:note', { length: input.length }), input.toUpperCase())],
    ]);
    const runner = new DagRunner({ dag, input: 'hi' });
    const events = record(runner);
    expect(await runner.run()).toBe('HI!');
    expect(events.filter((e) => e.type === 'dag:node_finish').map((e) => [e.sourceNode, e.data])).toEqual([
      ['draft', { output: 'hi!' }],
      ['review', { output: 'HI!' }],
    ]);
    const note = events.find((e) => e.type === 'review:note')!;
    expect(note).toMatchObject({ sourceNode: 'review', data: { length: 3 } });
    expect(note.stepId).toBe(events.find((e) => e.type === 'dag:node_start' && e.sourceNode === 'review')!.stepId);
  });

  test("nested in a DAG node: it runs inside the node's step and its events reach the outer listeners", async () => {
    const inner = chain('inner', [({ input }: { input: number }) => input + 1, ['square', ({ input }) => input * input]]);
    const outer = new DagBuilder<object, number>('outer')
      .node('prepare', { run: ({ rootInput }) => rootInput * 2 })
      .node('nested', { parents: ['prepare'], run: ({ input }) => runDag({ dag: inner, input: input.prepare }) })
      .build();
    const runner = new DagRunner({ dag: outer, input: 1 });
    const events = record(runner);
    expect(await runner.run()).toBe(9);
    const nested = events.find((e) => e.type === 'dag:node_start' && e.sourceNode === 'nested')!;
    const innerStart = events.find((e) => e.type === 'dag:start' && e.source === 'inner')!;
    expect(innerStart.parentStepId).toBe(nested.stepId);
    expect(events.filter((e) => e.source === 'inner' && e.type === 'dag:node_finish').map((e) => e.sourceNode)).toEqual(['step1', 'square']);
  });

  test('with a cache, a step is keyed by its own runner: two chains never share an entry', async () => {
    const store = new Map<string, string>();
    const cache: NodeResultCache = { get: (n, k) => store.get(`${n}/${k}`), set: (n, k, v) => void store.set(`${n}/${k}`, v) };
    let calls = 0;
    const plus = chain('plus', [({ input }: { input: number }) => (calls++, input + 1)]);
    const times = chain('times', [({ input }: { input: number }) => (calls++, input * 10)]);
    expect(await runDag({ dag: plus, input: 2, cache })).toBe(3);
    expect(await runDag({ dag: times, input: 2, cache })).toBe(20);
    expect(await runDag({ dag: plus, input: 2, cache })).toBe(3);
    expect(calls).toBe(2);
  });

  test('bad steps are refused with an error naming the chain and the step', () => {
    const bad = (steps: unknown[]) => () => chain('c', steps as never);
    expect(bad([])).toThrow("chain 'c' has no steps");
    expect(() => chain('c', undefined as never)).toThrow("chain 'c' has no steps");
    expect(bad([() => 1, 'oops'])).toThrow("chain 'c': step 2 ('step2') is neither a function nor a node with a run function");
    expect(bad([() => 1, { run: 5 }])).toThrow("chain 'c': step 2 ('step2') is neither a function nor a node with a run function");
    expect(bad([['a', () => 1], ['b', () => 2], ['a', () => 3]])).toThrow("chain 'c': steps 1 and 3 are both named 'a'");
    expect(bad([['a', () => 1], { parents: ['a'], run: () => 2 }])).toThrow("chain 'c': step 2 ('step2') has parents: a chained step's parent is the step before it");
    expect(bad([[1, () => 1]])).toThrow("chain 'c': step 1 is named by a number, not a string");
  });
});

describe('DagBuilder.then', () => {
  test("adds a node fed by the node added last, with that node's output as its input", async () => {
    const dag = new DagBuilder<{ n: number }, string>('built')
      .node('split', { run: ({ rootInput }) => rootInput.split(',') })
      .then('count', ({ input }) => input.length)
      .then('scaled', { semaphoreKey: 'k', run: async ({ input, context }) => input * context.n })
      .build();
    expect(dag.nodes.count!.parents).toEqual(['split']);
    expect(dag.nodes.scaled).toMatchObject({ parents: ['count'], semaphoreKey: 'k' });
    expect(await runDag({ dag, input: 'a,b,c', context: { n: 2 } })).toBe(6);
  });

  test('mixes with node(): a then() node is a leaf until a later node names it', async () => {
    const dag = new DagBuilder<object, number>('mixed')
      .node('root', { run: ({ rootInput }) => rootInput + 1 })
      .then('double', ({ input }) => input * 2)
      .node('other', { parents: ['root'], run: ({ input }) => -input.root })
      .then('label', ({ input }) => `other=${input}`)
      .build();
    expect(await runDag({ dag, input: 1 })).toEqual({ double: 4, label: 'other=-2' });
  });

  test('then() first, a taken name, or an awaited builder are errors naming the builder and the node', async () => {
    expect(() => new DagBuilder('b').then('x', () => 1)).toThrow("DagBuilder 'b': then('x') has no node before it to follow");
    const b = new DagBuilder('b').node('a', { run: () => 1 });
    expect(() => b.then('a', () => 2)).toThrow("DagBuilder 'b' already has a node 'a'");
    expect(() => b.then('c', 'oops' as never)).toThrow("DagBuilder 'b': then('c') is neither a function nor a node with a run function");
    // A builder has a then method, so await treats it as a promise: it rejects with a clear error.
    await expect((async () => await (b as unknown as Promise<unknown>))()).rejects.toThrow("DagBuilder 'b': then(name, step) takes a node name first (a DagBuilder is not a promise)");
  });
});
