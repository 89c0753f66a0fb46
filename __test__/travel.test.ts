// Time travel through the package: a machine's context at every step (stored as JSON
// Patches), and forks of machines and DAGs from a step of a run that ended.
import { describe, expect, test } from 'vitest';
import type { Engine } from 'ramus';

import { engineFixtures } from './engine-fixtures';

const { open, tempDb } = engineFixtures('ramus-travel-');

/** A counter machine: `work` adds `context.step` to `context.n` while `n < 5`, then ends in `done`, or in `big` when the context says so. */
function counter(engine: Engine) {
  const seen: Array<{ state: string; context: any }> = [];
  engine.register({
    work: async ({ context }: any) => {
      seen.push({ state: 'work', context: structuredClone(context) });
      context.n += context.step;
      context.log.push(context.n);
      return context.n;
    },
    end: async ({ context }: any) => {
      seen.push({ state: 'end', context: structuredClone(context) });
      return { n: context.n, big: context.big === true };
    },
    more: ((g: any) => g.context.n < 5) as any,
    isBig: ((g: any) => g.context.big === true) as any,
  });
  engine.define({
    name: 'counter',
    initial: 'work',
    context: { n: 0, step: 1, log: [] },
    nodes: {
      work: {
        runner: 'work',
        transition: { '': [{ state: 'work', condition: 'more' }, { state: 'big', condition: 'isBig' }, { state: 'done' }] },
      },
      done: { runner: 'end', final: true },
      big: { runner: 'end', final: true },
    },
  } as any);
  return seen;
}

describe('contextAt', () => {
  test('the context at every step equals what its runner saw, for a 100 KB context', async () => {
    const engine = open({ durability: 'sync' });
    const seen = counter(engine);
    const pad = 'x'.repeat(100_000);
    const run = engine.start('counter', { context: { n: 0, step: 1, log: [], pad } });
    expect(await run.finished).toEqual({ n: 5, big: false });
    const steps = engine.steps(run.runId);
    expect(steps.map((s) => s.node)).toEqual(['work', 'work', 'work', 'work', 'work', 'done']);
    expect(steps.length).toBe(seen.length);
    steps.forEach((s, i) => expect(engine.contextAt(run.runId, s.id)).toEqual(seen[i]!.context));
    expect(engine.contextAt<{ log: number[] }>(run.runId, steps[3]!.id).log).toEqual([1, 2, 3]);
  });

  test('names what it cannot read: a step of no run, a DAG', async () => {
    const engine = open();
    counter(engine);
    const run = engine.start('counter');
    await run.finished;
    expect(() => engine.contextAt(run.runId, 'nope')).toThrow(expect.objectContaining({ code: 'ERR_NO_STEP', message: `No step 'nope' in run ${run.runId}` }));
    engine.register('one', (async () => 1) as any);
    engine.define({ name: 'tiny', nodes: { a: { runner: 'one' } } } as any);
    const dag = engine.start('tiny');
    await dag.finished;
    expect(() => engine.contextAt(dag.runId, engine.steps(dag.runId)[0]!.id)).toThrow(/is a DAG; contextAt reads a state machine's context/);
  });
});

describe('fork a machine', () => {
  test('at its third step with an edited context: it takes another path; the old run is untouched', async () => {
    const engine = open({ durability: 'sync' });
    const seen = counter(engine);
    const run = engine.start('counter');
    expect(await run.finished).toEqual({ n: 5, big: false });
    const steps = engine.steps(run.runId);
    const third = steps[2]!;
    const context = engine.contextAt<any>(run.runId, third.id);
    expect(context).toEqual({ n: 2, step: 1, log: [1, 2] });
    seen.length = 0;

    const fork = await engine.fork(run.runId, { atStep: third.id, context: { ...context, step: 10, big: true } });
    expect(await fork.finished).toEqual({ n: 12, big: true });
    expect(seen.map((s) => s.state)).toEqual(['work', 'end']);
    expect(seen[0]!.context).toEqual({ n: 2, step: 10, log: [1, 2], big: true });
    const row = engine.run(fork.runId)!;
    expect(row).toMatchObject({ status: 'finished', name: 'counter', definitionName: 'counter', forkedFrom: { runId: run.runId, stepId: third.id } });
    expect(engine.steps(fork.runId).map((s) => s.node)).toEqual(['work', 'big']);
    expect(engine.transitions(fork.runId).map((t) => [t.from, t.to])).toEqual([[null, 'work'], ['work', 'big']]);
    // The old run: the same rows, no fork mark.
    expect(engine.steps(run.runId)).toEqual(steps);
    expect(engine.run(run.runId)!.forkedFrom).toBeNull();

    // As it was: the same path again from that step.
    const again = await engine.fork(run.runId, { atStep: third.id });
    expect(await again.finished).toEqual({ n: 5, big: false });
    expect(engine.steps(again.runId).map((s) => s.node)).toEqual(['work', 'work', 'work', 'done']);
  });

  test('a human-in-the-loop run forked at its waiting state waits again, in another engine on the same store', async () => {
    const db = tempDb();
    const first = open({ db });
    const register = (engine: Engine) => {
      engine.register({
        draft: async ({ input, context }: any) => {
          context.drafts = (context.drafts ?? 0) + 1;
          return `${input} (draft ${context.drafts})`;
        },
        publish: async ({ input, event }: any) => ({ text: input, by: event?.data?.by }),
      });
      engine.define({
        name: 'review',
        initial: 'draft',
        nodes: {
          draft: { runner: 'draft', transition: 'wait' },
          wait: { transition: { approve: 'publish', reject: 'draft' } },
          publish: { runner: 'publish', final: true },
        },
      } as any);
    };
    register(first);
    const run = first.start('review', { input: 'post' });
    await expect.poll(() => first.run(run.runId)!.status).toBe('waitingForEvent');
    first.send(run.runId, { type: 'approve', data: { by: 'ann' } });
    expect(await run.finished).toEqual({ text: 'post (draft 1)', by: 'ann' });

    const second = open({ db });
    register(second);
    const draft = second.steps(run.runId)[0]!;
    const fork = await second.fork(run.runId, { atStep: draft.id, input: 'other post' });
    await expect.poll(() => second.run(fork.runId)!.status).toBe('waitingForEvent');
    second.send(fork.runId, { type: 'approve', data: { by: 'bob' } });
    expect(await fork.finished).toEqual({ text: 'other post (draft 1)', by: 'bob' });
    expect(second.run(fork.runId)!.input).toBe('other post');
  });

  test('with an output: the step takes it instead of running, and the machine goes on from it', async () => {
    const engine = open({ durability: 'sync' });
    const seen = counter(engine);
    const run = engine.start('counter');
    await run.finished;
    const third = engine.steps(run.runId)[2]!;
    seen.length = 0;
    const fork = await engine.fork(run.runId, { atStep: third.id, output: 42 });
    expect(await fork.finished).toEqual({ n: 5, big: false });
    // The third work step did not run (the context is as it was then, n = 2): the next
    // ones count on from there.
    expect(seen.map((s) => [s.state, s.context.n])).toEqual([
      ['work', 2],
      ['work', 3],
      ['work', 4],
      ['end', 5],
    ]);
    expect(engine.steps(fork.runId).map((s) => [s.node, s.output])).toEqual([
      ['work', 42],
      ['work', 3],
      ['work', 4],
      ['work', 5],
      ['done', { n: 5, big: false }],
    ]);
  });

  test('of a cancelled run: the fork runs on from the step it was cancelled in', async () => {
    const engine = open();
    let release!: () => void;
    let calls = 0;
    engine.register({
      slow: async () => {
        calls += 1;
        if (calls === 1) await new Promise<void>((r) => (release = r));
        return 'done';
      },
    });
    engine.define({ name: 'slow', initial: 'a', nodes: { a: { runner: 'slow', final: true } } } as any);
    const run = engine.start('slow');
    await expect.poll(() => engine.steps(run.runId).length).toBe(1);
    run.cancel();
    await run.finished.catch(() => {});
    release();
    expect(engine.run(run.runId)!.status).toBe('cancelled');
    const fork = await engine.fork(run.runId, { atStep: engine.steps(run.runId)[0]!.id });
    expect(await fork.finished).toBe('done');
  });
});

describe('fork a DAG', () => {
  function diamond(engine: Engine) {
    const calls: string[] = [];
    engine.register('node', (async ({ input, args }: any) => {
      calls.push(args.name);
      const parts = Object.keys(input ?? {}).sort().map((k) => input[k]);
      return `${args.name}(${parts.join(',')})`;
    }) as any);
    const node = (name: string, parents: string[] = []) => ({ runner: 'node', args: { name }, parents });
    engine.define({ name: 'diamond', nodes: { a: node('a'), b: node('b', ['a']), c: node('c', ['a']), d: node('d', ['b', 'c']) } } as any);
    return calls;
  }

  test('at a middle node with its output edited: only its downstream runs, the rest keep their outputs', async () => {
    const engine = open({ durability: 'sync' });
    const calls = diamond(engine);
    const run = engine.start('diamond');
    expect(await run.finished).toBe('d(b(a()),c(a()))');
    const steps = engine.steps(run.runId);
    const b = steps.find((s) => s.node === 'b')!;
    const c = steps.find((s) => s.node === 'c')!;
    calls.length = 0;

    // Forking at the later of b and c keeps the earlier one.
    const later = b.seq > c.seq ? b : c;
    const fork = await engine.fork(run.runId, { atStep: later.id, output: 'EDITED' });
    const expected = later.node === 'b' ? 'd(EDITED,c(a()))' : 'd(b(a()),EDITED)';
    expect(await fork.finished).toBe(expected);
    expect(calls).toEqual(['d']);
    expect(engine.run(fork.runId)!.forkedFrom).toEqual({ runId: run.runId, stepId: later.id });
    expect(engine.steps(fork.runId).map((s) => [s.node, s.status])).toEqual([
      ['a', 'finished'],
      [later.node === 'b' ? 'c' : 'b', 'finished'],
      [later.node, 'finished'],
      ['d', 'finished'],
    ]);
  });

  test('without an output: that node and everything after it run again', async () => {
    const engine = open();
    const calls = diamond(engine);
    const run = engine.start('diamond');
    await run.finished;
    const first = engine.steps(run.runId)[0]!;
    calls.length = 0;
    const fork = await engine.fork(run.runId, { atStep: first.id });
    expect(await fork.finished).toBe('d(b(a()),c(a()))');
    expect(calls.sort()).toEqual(['a', 'b', 'c', 'd']);
  });
});

describe('fork at a step of a nested run', () => {
  /** Squares 1, 2, 3 (plus one) in a map, and sums them; item 2's square waits for `hold` when given. */
  function squares(engine: Engine, hold?: Promise<void>) {
    const calls: string[] = [];
    engine.register({
      sum: (async ({ input }: any) => input.each.reduce((a: number, b: number) => a + b, 0)) as any,
      list: (async () => [1, 2, 3]) as any,
      square: (async ({ rootInput }: any) => {
        calls.push(`square ${rootInput}`);
        if (hold && rootInput === 2) await hold;
        return rootInput * rootInput;
      }) as any,
      plusOne: (async ({ input, rootInput }: any) => (calls.push(`plusOne ${rootInput}`), input.square + 1)) as any,
    });
    engine.define({
      name: 'squares',
      nodes: {
        list: { runner: 'list' },
        each: { parents: ['list'], map: { over: 'list', dag: { name: 'sq', nodes: { square: { runner: 'square' }, plus: { runner: 'plusOne', parents: ['square'] } } } } },
        total: { runner: 'sum', parents: ['each'] },
      },
    } as any);
    return calls;
  }

  test('forks the chain above it: the step that started the nested run runs again, and gets the nested fork and the siblings that ended before it', async () => {
    const engine = open({ durability: 'sync' });
    const calls = squares(engine);
    const run = engine.start('squares');
    expect(await run.finished).toBe(2 + 5 + 10);
    const children = engine.children(run.runId);
    expect(children.map((c) => c.status)).toEqual(['finished', 'finished', 'finished']);
    const second = children[1]!;
    const square = engine.steps(second.id).find((s) => s.node === 'square')!;
    calls.length = 0;

    // Named through the top-level run (the nested run's own id works too): its square's output is edited.
    const fork = await engine.fork(run.runId, { atStep: square.id, output: 100 });
    expect(await fork.finished).toBe(2 + 101 + 10);
    // The first child (started before the second) is kept as it ended; the second is the
    // nested fork (its plus runs again); the third, started after it, runs again.
    expect(calls.sort()).toEqual(['plusOne 2', 'plusOne 3', 'square 3']);
    expect(engine.run(fork.runId)!.forkedFrom?.runId).toBe(run.runId);
    const forked = engine.children(fork.runId);
    expect(forked.map((c) => [c.status, c.forkedFrom?.runId])).toEqual([
      ['finished', children[0]!.id],
      ['finished', second.id],
      ['finished', undefined],
    ]);
    expect(forked[1]!.forkedFrom).toEqual({ runId: second.id, stepId: square.id });
    expect(engine.steps(forked[1]!.id).map((s) => [s.node, s.status, s.output])).toEqual([
      ['square', 'finished', 100],
      ['plus', 'finished', 101],
    ]);
    // The old run is untouched.
    expect(engine.children(run.runId).map((c) => c.status)).toEqual(['finished', 'finished', 'finished']);

    // The same fork, named by the nested run itself.
    calls.length = 0;
    const again = await engine.fork(second.id, { atStep: square.id });
    expect(await again.finished).toBe(2 + 5 + 10);
    expect(calls.sort()).toEqual(['plusOne 2', 'plusOne 3', 'square 2', 'square 3']);
    expect(engine.run(again.runId)!.parentRunId ?? null).toBe(null);
  });

  test('refused while a run the step had started before that one has not ended', async () => {
    const engine = open({ durability: 'sync' });
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    squares(engine, gate);
    const run = engine.start('squares');
    for (let i = 0; i < 500 && engine.children(run.runId)[2]?.status !== 'finished'; i++) await new Promise((r) => setImmediate(r));
    const [, second, third] = engine.children(run.runId);
    expect([second!.status, third!.status]).toEqual(['running', 'finished']);
    const square = engine.steps(third!.id).find((s) => s.node === 'square')!;
    await expect(engine.fork(run.runId, { atStep: square.id })).rejects.toMatchObject({
      code: 'ERR_NOT_FORKABLE',
      message: expect.stringContaining(`had started run ${second!.id} (sq) before it, which has not ended`),
    });
    release();
    expect(await run.finished).toBe(2 + 5 + 10);
  });

  test('under a machine, the step standing for the one that started the nested run keeps its whole context', async () => {
    const engine = open({ durability: 'sync' });
    const { runDag } = await import('ramus');
    engine.register({
      prep: (async ({ context }: any) => ((context.pad = 'p'.repeat(5000)), (context.n = 1), 'ready')) as any,
      call: (async ({ context }: any) => runDag({ input: context.n, dag: { name: 'inner', nodes: { twice: { run: ({ rootInput }: any) => rootInput * 2 } } } })) as any,
    });
    engine.define({ name: 'outer', initial: 'prep', context: { n: 0 }, nodes: { prep: { runner: 'prep', transition: 'call' }, call: { runner: 'call', final: true } } } as any);
    const run = engine.start('outer');
    expect(await run.finished).toBe(2);
    const inner = engine.children(run.runId)[0]!;
    const twice = engine.steps(inner.id)[0]!;
    const fork = await engine.fork(run.runId, { atStep: twice.id, output: 21 });
    expect(await fork.finished).toBe(21);
    const [standing] = engine.steps(fork.runId);
    expect(standing!.node).toBe('call');
    // Closed by the resume as the stand-in it was, not as a step a crash interrupted.
    expect([standing!.status, (standing!.error as any)?.name]).toEqual(['cancelled', 'Forked']);
    expect(engine.contextAt<any>(fork.runId, standing!.id)).toMatchObject({ n: 1, pad: 'p'.repeat(5000) });
  });

  test('a machine made by an expand node, forked at the state where it waited: the fork waits again and takes another answer', async () => {
    const engine = open({ durability: 'sync' });
    const calls: string[] = [];
    engine.register({
      plan: (async ({ rootInput }: any) => (calls.push('plan'), `post about ${rootInput}`)) as any,
      review: (async () => {
        calls.push('expand');
        return {
          name: 'approval',
          initial: 'draft',
          nodes: {
            draft: { run: async ({ input }: any) => (calls.push('draft'), `draft of ${input.plan}`), transition: 'wait' },
            wait: { transition: { approve: 'done' } },
            done: { final: true, run: ({ input, event }: any) => ({ text: input, by: event.data.by }) },
          },
        };
      }) as any,
    });
    engine.define({ name: 'publish', nodes: { plan: { runner: 'plan' }, review: { parents: ['plan'], expand: 'review' } } } as any);
    const run = engine.start('publish', { input: 'wasm' });
    const waiting = async (parent: string) => {
      for (let i = 0; i < 200 && engine.children(parent)[0]?.status !== 'waitingForEvent'; i++) await new Promise((r) => setImmediate(r));
      return engine.children(parent)[0]!;
    };
    const approval = await waiting(run.runId);
    engine.send(approval.id, { type: 'approve', data: { by: 'ann' } });
    expect(await run.finished).toEqual({ text: 'draft of post about wasm', by: 'ann' });
    const wait = engine.steps(approval.id).find((s) => s.node === 'wait')!;
    // Its context at a step is read through the top-level run too.
    expect(engine.contextAt(run.runId, wait.id)).toEqual(engine.contextAt(approval.id, wait.id));
    calls.length = 0;

    const fork = await engine.fork(run.runId, { atStep: wait.id });
    const forked = await waiting(fork.runId);
    expect(forked.forkedFrom).toEqual({ runId: approval.id, stepId: wait.id });
    // plan kept its output; the expand step ran again and made the machine, which went on
    // from its waiting state: the draft was not written again.
    expect(calls).toEqual(['expand']);
    engine.send(forked.id, { type: 'approve', data: { by: 'bob' } });
    expect(await fork.finished).toEqual({ text: 'draft of post about wasm', by: 'bob' });
    expect(calls).toEqual(['expand']);
  });
});

describe('fork refuses', () => {
  test('with an error that names the culprit', async () => {
    const engine = open();
    counter(engine);
    const run = engine.start('counter');
    await run.finished;
    const step = engine.steps(run.runId)[0]!;
    await expect(engine.fork(run.runId, { atStep: 'nope' })).rejects.toMatchObject({ code: 'ERR_NO_STEP' });
    await expect(engine.fork('0190b6a4-1f00-7a3c-8d2e-5b1f0c9e4a77', { atStep: step.id })).rejects.toMatchObject({ code: 'ERR_NO_RUN' });
    await expect(engine.fork(run.runId, {} as any)).rejects.toThrow(TypeError);
    const other = engine.start('counter');
    await other.finished;
    await expect(engine.fork(other.runId, { atStep: step.id })).rejects.toMatchObject({
      code: 'ERR_NO_STEP',
      message: `Step '${step.id}' belongs to run ${run.runId}, which is neither run ${other.runId} nor started inside it`,
    });
    const inline = engine.start({ name: 'inline', initial: 'a', nodes: { a: { run: async () => 1, final: true } } } as any);
    await inline.finished;
    await expect(engine.fork(inline.runId, { atStep: engine.steps(inline.runId)[0]!.id })).rejects.toMatchObject({
      code: 'ERR_NOT_FORKABLE',
      message: expect.stringContaining('inline run functions'),
    });
  });
});

describe('rerun and updateInput', () => {
  /** A diamond a → (b, c) → d; `c` declares that it reads the root input's `topic`. */
  function diamond(engine: Engine, fail?: { node: string; times: number }) {
    const calls: string[] = [];
    engine.register('node', (async ({ input, args, rootInput }: any) => {
      calls.push(args.name);
      if (fail?.node === args.name && fail.times-- > 0) throw new Error(`${args.name} failed`);
      const parts = Object.keys(input ?? {}).sort().map((k) => input[k]);
      if (args.name === 'c') parts.push(rootInput.topic);
      return `${args.name}(${parts.join(',')})`;
    }) as any);
    const node = (name: string, parents: string[] = [], more = {}) => ({ runner: 'node', args: { name }, parents, ...more });
    engine.define({
      name: 'diamond',
      nodes: { a: node('a'), b: node('b', ['a']), c: node('c', ['a'], { uses: ['topic'] }), d: node('d', ['b', 'c']) },
    } as any);
    return calls;
  }

  test('rerun of a middle node runs exactly its downstream again, in place; every attempt is kept', async () => {
    const engine = open({ durability: 'sync' });
    const calls = diamond(engine);
    const run = engine.start('diamond', { input: { topic: 'wasm' } });
    expect(await run.finished).toBe('d(b(a()),c(a(),wasm))');
    calls.length = 0;
    const again = await engine.rerun(run.runId, { node: 'b' });
    expect(again.runId).toBe(run.runId);
    expect(await again.finished).toBe('d(b(a()),c(a(),wasm))');
    expect(calls).toEqual(['b', 'd']);
    calls.length = 0;

    const edited = await engine.rerun(run.runId, { node: 'c', output: 'C!' });
    expect(await edited.finished).toBe('d(b(a()),C!)');
    expect(calls).toEqual(['d']);
    expect(engine.run(run.runId)).toMatchObject({ status: 'finished', output: 'd(b(a()),C!)', endedAt: expect.any(Number) });
    const steps = engine.steps(run.runId);
    expect(steps.filter((s) => s.supersededAt === null).map((s) => [s.node, s.output])).toEqual([
      ['a', 'a()'],
      ['b', 'b(a())'],
      ['c', 'C!'],
      ['d', 'd(b(a()),C!)'],
    ]);
    expect(steps.filter((s) => s.node === 'd').map((s) => s.output)).toEqual(['d(b(a()),c(a(),wasm))', 'd(b(a()),c(a(),wasm))', 'd(b(a()),C!)']);
  });

  test('updateInput reruns only the nodes that use a changed key, and their downstream', async () => {
    const engine = open();
    const calls = diamond(engine);
    const run = engine.start('diamond', { input: { topic: 'wasm', lang: 'en' } });
    await run.finished;
    calls.length = 0;
    const nobody = await engine.updateInput(run.runId, { lang: 'fr' });
    expect(nobody.rerun).toEqual([]);
    expect(await nobody.finished).toBe('d(b(a()),c(a(),wasm))');
    expect(calls).toEqual([]);
    const updated = await engine.updateInput(run.runId, { topic: 'rust' });
    expect(updated.rerun).toEqual(['c', 'd']);
    expect(await updated.finished).toBe('d(b(a()),c(a(),rust))');
    expect(calls).toEqual(['c', 'd']);
    expect(engine.run(run.runId)!.input).toEqual({ topic: 'rust', lang: 'fr' });
  });

  test('a failed node is rerun once its cause is fixed; a cancelled node can be rerun', async () => {
    const engine = open();
    const calls = diamond(engine, { node: 'c', times: 1 });
    const run = engine.start('diamond', { input: { topic: 't' } });
    await expect(run.finished).rejects.toThrow('c failed');
    expect(engine.run(run.runId)!.status).toBe('error');
    const fixed = await engine.rerun(run.runId, { node: 'c' });
    expect(await fixed.finished).toBe('d(b(a()),c(a(),t))');
    expect(engine.run(run.runId)!.status).toBe('finished');

    let release!: () => void;
    engine.register('hold', (async () => {
      calls.push('hold');
      if (calls.filter((c) => c === 'hold').length === 1) await new Promise<void>((r) => (release = r));
      return 'held';
    }) as any);
    engine.define({ name: 'held', nodes: { a: { runner: 'node', args: { name: 'a' } }, h: { runner: 'hold', parents: ['a'] } } } as any);
    const held = engine.start('held');
    await expect.poll(() => calls.includes('hold')).toBe(true);
    held.cancel();
    await held.finished.catch(() => {});
    release();
    expect(engine.run(held.runId)!.status).toBe('cancelled');
    const back = await engine.rerun(held.runId, { node: 'h' });
    expect(await back.finished).toBe('held');
  });

  test('refuse with errors that name the culprit', async () => {
    const engine = open();
    diamond(engine);
    const run = engine.start('diamond', { input: { topic: 't' } });
    // While it runs here, a rerun applies to the live run (see cancelNode); updateInput waits for its end.
    await expect(engine.rerun(run.runId, { node: 'bb' })).rejects.toThrow(/has no node 'bb'/);
    await expect(engine.updateInput(run.runId, { topic: 'u' })).rejects.toMatchObject({ code: 'ERR_NOT_RESUMABLE', message: expect.stringContaining('is running in this engine') });
    await run.finished;
    await expect(engine.rerun(run.runId, { node: 'bb' })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT', message: `rerun: run ${run.runId} (diamond) has no node 'bb' (did you mean 'b'?)` });
    await expect(engine.updateInput(run.runId, [] as any)).rejects.toThrow(TypeError);
    counter(engine);
    const machine = engine.start('counter');
    await machine.finished;
    await expect(engine.rerun(machine.runId, { node: 'work' })).rejects.toMatchObject({ code: 'ERR_NOT_RESUMABLE', message: expect.stringContaining('fork it at a step instead') });
    // The refused calls left the run as it was: it still reruns.
    expect(await (await engine.rerun(run.runId, { node: 'd' })).finished).toBe('d(b(a()),c(a(),t))');
  });
});

describe('cancelNode', () => {
  test('cancels one branch of a live DAG while the rest finishes; rerun brings it back', async () => {
    const engine = open();
    let slowCalls = 0;
    let started!: () => void;
    const slowStarted = new Promise<void>((r) => (started = r));
    const seen: string[] = [];
    engine.register({
      slow: async ({ isCancelled }: any) => {
        slowCalls += 1;
        if (slowCalls === 1) {
          started();
          while (!isCancelled()) await new Promise((r) => setImmediate(r));
          seen.push('slow saw its cancellation');
          return 'ignored';
        }
        return 'slow';
      },
      fast: async () => 'fast',
      count: async ({ input }: any) => Object.keys(input).length,
    });
    engine.define({
      name: 'branches',
      nodes: {
        slow: { runner: 'slow' },
        afterSlow: { runner: 'count', parents: ['slow'] },
        fast: { runner: 'fast' },
        afterFast: { runner: 'count', parents: ['fast'] },
      },
    } as any);
    const run = engine.start('branches');
    await slowStarted;
    engine.cancelNode(run.runId, 'slow');
    expect(await run.finished).toMatchObject({ afterFast: 1 });
    expect(run.nodeState('slow')).toBe('cancelled');
    expect(run.nodeState('afterSlow')).toBe('cancelled');
    // The run may end before the cancelled step looks again; it sees it when it does.
    await expect.poll(() => seen).toEqual(['slow saw its cancellation']);
    expect(engine.steps(run.runId).map((s) => [s.node, s.status]).sort()).toEqual([
      ['afterFast', 'finished'],
      ['afterSlow', 'cancelled'],
      ['fast', 'finished'],
      ['slow', 'cancelled'],
    ]);
    expect(engine.run(run.runId)!.status).toBe('finished');
    // A rerun of the other branch leaves the cancelled one cancelled.
    const other = await engine.rerun(run.runId, { node: 'afterFast' });
    expect(await other.finished).toMatchObject({ afterFast: 1 });
    expect(slowCalls).toBe(1);

    const back = await engine.rerun(run.runId, { node: 'slow' });
    expect(await back.finished).toEqual({ afterFast: 1, afterSlow: 1 });
    expect(engine.steps(run.runId).filter((s) => s.node === 'fast')).toHaveLength(1);
  });

  test('rerun of a run still running here: the node and its downstream run again while the rest goes on', async () => {
    const engine = open({ durability: 'sync' });
    const calls: string[] = [];
    let aRuns = 0;
    let openGate!: () => void;
    const gate = new Promise<void>((r) => (openGate = r));
    const started: Record<string, () => void> = {};
    const onStart = (name: string) => new Promise<void>((r) => (started[name] = r));
    const abandoned: string[] = [];
    const waitForCancel = async (name: string, isCancelled: () => boolean) => {
      started[name]?.();
      while (!isCancelled()) await new Promise((r) => setImmediate(r));
      abandoned.push(name);
      return 'ignored';
    };
    engine.register({
      gate: async () => (await gate, 'g'),
      a: async () => (calls.push('a'), `a${++aRuns}`),
      b: async ({ input, isCancelled }: any) => {
        calls.push('b');
        return calls.filter((c) => c === 'b').length === 1 ? waitForCancel('b', isCancelled) : `b(${input.a})`;
      },
      x: async ({ isCancelled }: any) => (calls.push('x'), waitForCancel('x', isCancelled)),
    });
    engine.define({ name: 'live', nodes: { gate: { runner: 'gate' }, a: { runner: 'a' }, b: { runner: 'b', parents: ['a'] }, x: { runner: 'x' } } } as any);
    const bStarted = onStart('b');
    const xStarted = onStart('x');
    const run = engine.start('live');
    await Promise.all([bStarted, xStarted]);

    // b runs (its first attempt waits): rerun a, and b is abandoned and runs again after a.
    const same = await engine.rerun(run.runId, { node: 'a' });
    expect(same).toBe(run);
    await expect.poll(() => run.nodeState('b')).toBe('finished');
    expect(abandoned).toContain('b');
    // A node cancelled while the run goes on comes back with an output given to it.
    engine.cancelNode(run.runId, 'x');
    expect(run.nodeState('x')).toBe('cancelled');
    await engine.rerun(run.runId, { node: 'x', output: 'X!' });
    expect(run.nodeState('x')).toBe('finished');
    expect(run.nodeState('gate')).toBe('running');

    openGate();
    expect(await run.finished).toEqual({ gate: 'g', b: 'b(a2)', x: 'X!' });
    expect(calls.slice(0, 3).sort()).toEqual(['a', 'b', 'x']);
    expect(calls.slice(3)).toEqual(['a', 'b']);
    const steps = engine.steps(run.runId);
    expect(steps.filter((s) => s.supersededAt === null).map((s) => [s.node, s.status, s.output, s.attempt]).sort()).toEqual([
      ['a', 'finished', 'a2', 1],
      ['b', 'finished', 'b(a2)', 1],
      ['gate', 'finished', 'g', 1],
      ['x', 'finished', 'X!', 1],
    ]);
    expect(steps.filter((s) => s.supersededAt !== null).map((s) => [s.node, s.status, s.output]).sort()).toEqual([
      ['a', 'finished', 'a1'],
      ['b', 'cancelled', null],
      ['x', 'cancelled', null],
    ]);
    expect(engine.run(run.runId)).toMatchObject({ status: 'finished', output: { gate: 'g', b: 'b(a2)', x: 'X!' } });
    // Once it ended, a rerun goes through the store, from the kept outputs.
    const after = await engine.rerun(run.runId, { node: 'b' });
    expect(await after.finished).toEqual({ gate: 'g', b: 'b(a2)', x: 'X!' });
  });

  test('refuses what it cannot cancel', async () => {
    const engine = open();
    counter(engine);
    const machine = engine.start('counter');
    expect(() => engine.cancelNode(machine.runId, 'work')).toThrow(/is a state machine/);
    await machine.finished;
    expect(() => engine.cancelNode(machine.runId, 'work')).toThrow(expect.objectContaining({ code: 'ERR_NOT_LIVE' }));
  });
});

describe('mergeDag', () => {
  test('merges a DAG under prefixed names, wired to where its roots read and its leaves go', async () => {
    const { mergeDag, runDag } = await import('ramus');
    const research = {
      name: 'research',
      nodes: {
        search: { run: ({ input }: any) => `found ${input.plan}` },
        rank: { parents: ['search'], run: ({ input }: any) => `${input['search']} (ranked)` },
      },
    };
    const pipeline = {
      name: 'pipeline',
      nodes: {
        plan: { run: ({ rootInput }: any) => `plan for ${rootInput.topic}` },
        write: { parents: ['plan'], run: ({ input }: any) => Object.keys(input).sort().map((k) => `${k}=${input[k]}`).join('; ') },
      },
    };
    const merged = mergeDag(pipeline as any, research as any, { prefix: 'r.', inputs: ['plan'], outputs: ['write'] });
    expect(Object.keys(merged.nodes)).toEqual(['plan', 'write', 'r.search', 'r.rank']);
    expect(await runDag({ dag: merged, input: { topic: 'wasm' } })).toBe('plan=plan for wasm; r.rank=found plan for wasm (ranked)');
    expect(pipeline.nodes.write).not.toHaveProperty('parents', ['plan', 'r.rank']);

    // Stored definitions of registered runners merge the same way.
    const engine = open();
    engine.register({ echo: (async ({ args, input }: any) => `${args.name}(${Object.keys(input ?? {}).sort().join(',')})`) as any });
    const node = (name: string, parents?: string[]) => ({ runner: 'echo', args: { name }, ...(parents ? { parents } : {}) });
    const stored = mergeDag({ name: 'outer', nodes: { a: node('a'), z: node('z', ['a']) } } as any, { name: 'inner', nodes: { x: node('x'), y: node('y', ['x']) } } as any, { inputs: ['a'], outputs: ['z'] });
    engine.define(stored);
    expect(await engine.start('outer').finished).toBe('z(a,inner.y)');

    // A merged map still reads its list from its (renamed) parent.
    const mapper = { name: 'mapper', nodes: { list: { run: () => [1, 2] }, each: { parents: ['list'], map: { over: 'list', dag: { name: 'inc', nodes: { i: { run: ({ rootInput }: any) => rootInput + 1 } } } } } } };
    expect(await runDag({ dag: mergeDag({ name: 'outer', nodes: { start: { run: () => 0 } } } as any, mapper as any, { inputs: ['start'] }), input: null })).toEqual([2, 3]);

    expect(() => mergeDag(pipeline as any, research as any, { prefix: '', inputs: ['nope'] })).toThrow("mergeDag: inputs names 'nope', which is not a node of pipeline");
    expect(() => mergeDag(merged, research as any, { prefix: 'r.' })).toThrow("mergeDag: pipeline already has a node 'r.search' (choose another prefix)");
  });
});

describe('expand and map', () => {
  test('map runs a DAG per item of a parent, in item order; expand runs the DAG or machine a node makes', async () => {
    const { runDag } = await import('ramus');
    const out = await runDag({
      input: 'q',
      dag: {
        name: 'outer',
        nodes: {
          items: { run: () => [1, 2, 3] },
          squares: { parents: ['items'], map: { over: 'items', dag: { name: 'sq', nodes: { sq: { run: ({ rootInput }: any) => rootInput * rootInput } } } } },
          made: {
            parents: ['squares'],
            expand: ({ input }: any) => ({
              name: 'sum',
              initial: 'add',
              nodes: { add: { run: ({ input: i }: any) => i.squares.reduce((a: number, b: number) => a + b, 0), final: true } },
            }),
          },
        },
      } as any,
    });
    expect(out).toBe(14);
    await expect(
      runDag({
        input: null,
        dag: { name: 'bad', nodes: { items: { run: () => 'nope' }, each: { parents: ['items'], map: { over: 'items', dag: { name: 'x', nodes: { x: { run: () => 1 } } } } } } } as any,
      }),
    ).rejects.toThrow("Node 'each' maps over 'items', whose output is string, not an array");
  });

  test('map over 1,000 items under a limit of 4: each child a stored run of the step, at most 4 at once', async () => {
    const { LocalSemaphore } = await import('ramus');
    const engine = open();
    let running = 0;
    let most = 0;
    engine.register({
      list: (async () => Array.from({ length: 1000 }, (_, i) => i)) as any,
      work: (async ({ rootInput }: any) => {
        running += 1;
        most = Math.max(most, running);
        await new Promise((r) => setImmediate(r));
        running -= 1;
        return rootInput * 2;
      }) as any,
    });
    engine.define({
      name: 'fanout',
      nodes: {
        list: { runner: 'list' },
        each: { parents: ['list'], map: { over: 'list', dag: { name: 'double', nodes: { w: { runner: 'work', semaphoreKey: 'llm' } } } } },
      },
    } as any);
    const run = engine.start('fanout', { semaphores: [new LocalSemaphore({ llm: 4 })] });
    const out = (await run.finished) as number[];
    expect(out).toHaveLength(1000);
    expect(out.slice(0, 3)).toEqual([0, 2, 4]);
    expect(out[999]).toBe(1998);
    expect(most).toBe(4);
    const children = engine.children(run.runId);
    expect(children).toHaveLength(1000);
    const step = engine.steps(run.runId).find((s) => s.node === 'each')!;
    expect(new Set(children.map((c) => c.parentStepId))).toEqual(new Set([step.id]));
    expect(children.every((c) => c.status === 'finished' && c.name === 'double')).toBe(true);
  });

  test('stored definitions check what map and expand name; a node gives one way to run', async () => {
    const engine = open();
    engine.register({ one: (async () => 1) as any });
    expect(() => engine.define({ name: 'm', nodes: { a: { runner: 'one' }, b: { parents: ['a'], map: { over: 'a', dag: { name: 'i', nodes: { x: { runner: 'nope' } } } } } } } as any)).toThrow(
      /map of node 'b': node 'x' names runner 'nope', which is not registered/,
    );
    expect(() => engine.define({ name: 'e', nodes: { a: { runner: 'one' }, b: { parents: ['a'], expand: 'maker' } } } as any)).toThrow(/node 'b' expands with runner 'maker', which is not registered/);
    expect(() => engine.define({ name: 'o', nodes: { a: { runner: 'one' }, b: { parents: ['a'], map: { over: 'z', dag: { name: 'i', nodes: { x: { runner: 'one' } } } } } } } as any)).toThrow(
      "Node 'b' maps over 'z', which is not one of its parents",
    );
    expect(() => engine.define({ name: 'r', nodes: { a: { runner: 'one', expand: 'one' } } } as any)).toThrow("Node 'a' has both expand and a runner; expand is what it runs");
  });
});

describe('addNodes', () => {
  test('grows a live DAG: new nodes run once their parents finish, and the output takes the new leaves', async () => {
    const { DagRunner } = await import('ramus');
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const runner = new DagRunner({
      input: 'x',
      dag: {
        name: 'grow',
        nodes: {
          a: { run: () => 'a' },
          slow: { run: async () => (await gate, 'slow') },
        },
      } as any,
    });
    const done = runner.run();
    await expect.poll(() => runner.nodeState('a')).toBe('finished');
    runner.addNodes({
      b: { parents: ['a'], run: ({ input }: any) => `b(${input.a})` },
      c: { parents: ['b', 'slow'], run: ({ input }: any) => `c(${input.b},${input.slow})` },
    } as any);
    await expect.poll(() => runner.nodeState('b')).toBe('finished');
    expect(runner.nodeState('c')).toBe('waiting');
    release();
    expect(await done).toBe('c(b(a),slow)');
    expect(() => runner.addNodes({ d: { run: () => 1 } } as any)).toThrow(/the run has ended/);
  });

  test('refuses what the graph cannot take, naming it; a durable run of a stored definition goes on under a new version', async () => {
    const engine = open({ durability: 'sync' });
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    engine.register({
      word: (async ({ args }: any) => args.word) as any,
      wait: (async () => (await gate, 'waited')) as any,
      join: (async ({ input }: any) => Object.keys(input).sort().map((k) => input[k]).join('+')) as any,
    });
    engine.define({ name: 'grows', nodes: { a: { runner: 'word', args: { word: 'a' } }, w: { runner: 'wait' } } } as any);
    const run = engine.start('grows') as any;
    await expect.poll(() => run.nodeState('a')).toBe('finished');
    expect(() => run.addNodes({ a: { runner: 'word' } })).toThrow("addNodes: DAG 'grows' already has a node 'a'");
    expect(() => run.addNodes({ z: { runner: 'word', parents: ['nope'] } })).toThrow(/unknown parent 'nope'/);
    expect(() => run.addNodes({ z: { run: () => 1 } })).toThrow(/a run of a stored definition takes nodes that name registered runners/);
    run.addNodes({ j: { runner: 'join', parents: ['a', 'w'] } });
    release();
    expect(await run.finished).toBe('a+waited');
    expect(engine.run(run.runId)).toMatchObject({ name: 'grows', definitionName: `grows (grown in run ${run.runId})`, definitionVersion: 1 });
    expect(engine.steps(run.runId).map((s) => s.node).sort()).toEqual(['a', 'j', 'w']);
    // The definition other runs start from is as it was.
    const again = engine.start('grows') as any;
    expect(await again.finished).toEqual({ a: 'a', w: 'waited' });
    expect(engine.run(again.runId)).toMatchObject({ definitionName: 'grows', definitionVersion: 1 });
  });
});
