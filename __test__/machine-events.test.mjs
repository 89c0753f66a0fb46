import { describe, test, expect } from 'vitest';
import { StateMachineRunner, runDag, DagRunner } from 'ramus';
import { UUID_V7, settle, sleep, within, collectEvents, uuidV7Millis, outcome } from './helpers.mjs';

/** a -> b -> c (final). input 1 -> 2 -> 20 -> 'out:20'. */
const linear = () => ({
  name: 'linear',
  initial: 'a',
  nodes: {
    a: { run: ({ input }) => input + 1, transition: 'b' },
    b: {
      run: async ({ input, emit }) => {
        emit('my:progress', { pct: 50 });
        await sleep(1);
        emit('my:bare');
        return input * 10;
      },
      transition: { '': 'c' },
    },
    c: { final: true, run: ({ input }) => `out:${input}` },
  },
});

async function runCollect(options) {
  const r = new StateMachineRunner(options);
  const events = collectEvents(r);
  const t0 = Date.now();
  const fin = outcome(r.finished);
  await r.run();
  await fin.promise;
  await settle();
  return { r, events, fin, t0, t1: Date.now() };
}

const ofType = (events, type, node) => events.filter((e) => e.type === type && (node === undefined || e.sourceNode === node));
const one = (events, type, node) => {
  const found = ofType(events, type, node);
  expect(found, `exactly one ${type}${node ? ` for ${node}` : ''}`).toHaveLength(1);
  return found[0];
};
const noStatus = (events) => events.filter((e) => e.type !== 'state_machine:status');

describe('event envelope', () => {
  test('every event has id, type, runId, stepId, parentStepId, source, sourceNode, time, data', async () => {
    const { events, t0, t1 } = await runCollect({ config: linear(), input: 1 });
    expect(events.length).toBeGreaterThan(5);
    for (const e of events) {
      for (const key of ['id', 'type', 'runId', 'stepId', 'parentStepId', 'source', 'sourceNode', 'time', 'data']) {
        expect(e, `${e.type} has ${key}`).toHaveProperty(key);
      }
      for (const key of ['id', 'runId', 'stepId']) {
        expect(e[key], `${e.type}.${key}`).toMatch(UUID_V7);
        expect(uuidV7Millis(e[key])).toBeGreaterThanOrEqual(t0 - 1000);
        expect(uuidV7Millis(e[key])).toBeLessThanOrEqual(t1 + 1000);
      }
      expect(typeof e.sourceNode).toBe('string');
      expect(e.time).toBeGreaterThanOrEqual(t0 - 5);
      expect(e.time).toBeLessThanOrEqual(t1 + 5);
    }
    expect(new Set(events.map((e) => e.id)).size).toBe(events.length);
    expect(new Set(events.map((e) => e.runId)).size).toBe(1);
  });

  test('source is the machine name, or options.name when given', async () => {
    const plain = await runCollect({ config: linear(), input: 1 });
    expect(new Set(plain.events.map((e) => e.source))).toEqual(new Set(['linear']));
    const named = await runCollect({ config: linear(), input: 1, name: 'custom' });
    expect(new Set(named.events.map((e) => e.source))).toEqual(new Set(['custom']));
  });

  test('two runners get different runIds', async () => {
    const a = await runCollect({ config: linear(), input: 1 });
    const b = await runCollect({ config: linear(), input: 1 });
    expect(a.events[0].runId).not.toBe(b.events[0].runId);
  });
});

describe('event types, data and order', () => {
  test('order (without status events): start, then node_start/node_finish/transition per state, finish last', async () => {
    const { events } = await runCollect({ config: linear(), input: 1 });
    const seq = noStatus(events)
      .filter((e) => e.type.startsWith('state_machine:'))
      .map((e) => (e.type === 'state_machine:transition' ? `transition:${e.data.from}>${e.data.to}` : `${e.type.slice(14)}:${e.sourceNode}`));
    expect(seq).toEqual([
      'start:',
      'node_start:a',
      'node_finish:a',
      'transition:a>b',
      'node_start:b',
      'node_finish:b',
      'transition:b>c',
      'node_start:c',
      'node_finish:c',
      'finish:',
    ]);
  });

  test('state_machine:start {input} on the run step with parentStepId null', async () => {
    const { events } = await runCollect({ config: linear(), input: 1 });
    const start = one(events, 'state_machine:start');
    expect(events[0]).toBe(start);
    expect(start.data).toEqual({ input: 1 });
    expect(start.parentStepId).toBeNull();
    expect(start.sourceNode).toBe('');
  });

  test('node_start {input} and node_finish {output} share a step whose parent is the run step', async () => {
    const { events } = await runCollect({ config: linear(), input: 1 });
    const runStep = one(events, 'state_machine:start').stepId;
    const expected = { a: [1, 2], b: [2, 20], c: [20, 'out:20'] };
    const steps = new Set();
    for (const [s, [input, output]] of Object.entries(expected)) {
      const ns = one(events, 'state_machine:node_start', s);
      const nf = one(events, 'state_machine:node_finish', s);
      expect(ns.data).toMatchObject({ input });
      expect(nf.data).toMatchObject({ output });
      expect(nf.stepId).toBe(ns.stepId);
      expect(ns.stepId).not.toBe(runStep);
      expect(ns.parentStepId).toBe(runStep);
      expect(nf.parentStepId).toBe(runStep);
      steps.add(ns.stepId);
    }
    expect(steps.size).toBe(3);
  });

  test('state_machine:transition data is { from, to, event, input, output, final }', async () => {
    const { events } = await runCollect({ config: linear(), input: 1 });
    const t = ofType(events, 'state_machine:transition');
    expect(t).toHaveLength(2);
    expect(t[0].data).toEqual({ from: 'a', to: 'b', event: null, input: 1, output: 2, final: false });
    expect(t[1].data).toEqual({ from: 'b', to: 'c', event: null, input: 2, output: 20, final: true });
  });

  test('an event-triggered transition records the event type', async () => {
    const r = new StateMachineRunner({
      config: { name: 'ev', initial: 'a', nodes: { a: { run: () => 'A', transition: { approve: 'b' } }, b: { final: true } } },
      input: 'in',
    });
    const events = collectEvents(r);
    await r.run();
    r.send({ type: 'approve', data: { by: 'me' } });
    await within(r.finished, 3000, 'finished');
    await settle();
    const t = one(events, 'state_machine:transition');
    expect(t.data).toMatchObject({ from: 'a', to: 'b', event: 'approve', input: 'in', output: 'A', final: true });
  });

  test('state_machine:status {status} events are on the run step', async () => {
    const { events } = await runCollect({ config: linear(), input: 1 });
    const runStep = one(events, 'state_machine:start').stepId;
    const statuses = ofType(events, 'state_machine:status');
    expect(statuses.length).toBeGreaterThanOrEqual(4);
    for (const e of statuses) {
      expect(e.stepId).toBe(runStep);
      expect(typeof e.data.status).toBe('string');
    }
    expect(statuses.at(-1).data.status).toBe('final');
  });

  test('state_machine:finish {output} on the run step', async () => {
    const { events } = await runCollect({ config: linear(), input: 1 });
    const finish = one(events, 'state_machine:finish');
    expect(finish.data).toEqual({ output: 'out:20' });
    expect(finish.stepId).toBe(one(events, 'state_machine:start').stepId);
    expect(finish.sourceNode).toBe('');
  });

  test('state_machine:error {error} when a state fails without an error state', async () => {
    const err = new Error('bad state');
    const { events, fin } = await runCollect({
      config: { name: 'err', initial: 'a', nodes: { a: { run: () => { throw err; }, transition: 'b' }, b: { final: true } } },
      input: null,
    });
    expect(fin.reason).toBe(err);
    const e = one(events, 'state_machine:error');
    expect(e.data.error === err || e.data.error?.message === 'bad state').toBe(true);
    expect(ofType(events, 'state_machine:finish')).toHaveLength(0);
    expect(ofType(events, 'state_machine:node_finish', 'a')).toHaveLength(0);
  });

  test('custom emit() is tied to the state step, in order', async () => {
    const { events } = await runCollect({ config: linear(), input: 1 });
    const bStart = one(events, 'state_machine:node_start', 'b');
    const bFinish = one(events, 'state_machine:node_finish', 'b');
    const progress = one(events, 'my:progress');
    const bare = one(events, 'my:bare');
    expect(progress).toMatchObject({
      stepId: bStart.stepId,
      parentStepId: bStart.parentStepId,
      runId: bStart.runId,
      sourceNode: 'b',
      source: 'linear',
      data: { pct: 50 },
    });
    expect(bare.stepId).toBe(bStart.stepId);
    expect(bare.data).toBeUndefined();
    const idx = (e) => events.indexOf(e);
    expect(idx(bStart)).toBeLessThan(idx(progress));
    expect(idx(progress)).toBeLessThan(idx(bare));
    expect(idx(bare)).toBeLessThan(idx(bFinish));
  });

  test('each visit of a state is a new step', async () => {
    const { events } = await runCollect({
      config: {
        name: 'loop',
        initial: 'a',
        context: () => ({ n: 0 }),
        nodes: {
          a: {
            run: ({ context, emit }) => {
              context.n += 1;
              emit('visit', context.n);
              return context.n;
            },
            transition: { '': [{ state: 'a', condition: ({ output }) => output < 3 }, { state: 'done' }] },
          },
          done: { final: true },
        },
      },
      input: null,
    });
    const starts = ofType(events, 'state_machine:node_start', 'a');
    const finishes = ofType(events, 'state_machine:node_finish', 'a');
    expect(starts).toHaveLength(3);
    expect(new Set(starts.map((e) => e.stepId)).size).toBe(3);
    expect(finishes.map((e) => e.stepId)).toEqual(starts.map((e) => e.stepId));
    const visits = ofType(events, 'visit');
    expect(visits.map((e) => e.data)).toEqual([1, 2, 3]);
    expect(visits.map((e) => e.stepId)).toEqual(starts.map((e) => e.stepId));
    expect(ofType(events, 'state_machine:transition').map((e) => `${e.data.from}>${e.data.to}`)).toEqual(['a>a', 'a>a', 'a>done']);
  });

  test('events keep coming after run() rested, when an event wakes the machine', async () => {
    const r = new StateMachineRunner({
      config: { name: 'wake', initial: 'a', nodes: { a: { run: () => 'A', transition: { go: 'b' } }, b: { final: true, run: () => 'B' } } },
      input: null,
    });
    const events = collectEvents(r);
    await r.run();
    await settle();
    const before = events.length;
    r.send({ type: 'go' });
    await within(r.finished, 3000, 'finished');
    await settle();
    const after = events.slice(before).filter((e) => e.type !== 'state_machine:status').map((e) => e.type);
    expect(after).toEqual(['state_machine:transition', 'state_machine:node_start', 'state_machine:node_finish', 'state_machine:finish']);
    expect(new Set(events.map((e) => e.runId)).size).toBe(1);
  });
});

describe('nesting', () => {
  const innerDag = {
    name: 'inner-dag',
    nodes: {
      x: { run: ({ rootInput }) => rootInput * 2 },
      y: { parents: ['x'], run: ({ input, emit }) => (emit('inner:custom', input.x), input.x + 1) },
    },
  };
  const innerMachine = () => ({
    name: 'inner-machine',
    initial: 'i1',
    context: () => ({ own: true }),
    nodes: {
      i1: { run: ({ input, emit }) => (emit('inner:custom', input), input + 100), transition: 'i2' },
      i2: { final: true },
    },
  });

  function outerWith(run) {
    return {
      name: 'outer',
      initial: 'a',
      context: () => ({ outer: 1 }),
      nodes: { a: { run, transition: 'done' }, done: { final: true } },
    };
  }

  function checkNested(events, innerName, innerStartType) {
    const outerStart = events.find((e) => e.type === 'state_machine:start' && e.parentStepId === null);
    const aStart = events.find((e) => e.type === 'state_machine:node_start' && e.source === 'outer' && e.sourceNode === 'a');
    const innerStart = events.find((e) => e.type === innerStartType && e.source === innerName);
    expect(outerStart, 'outer start').toBeDefined();
    expect(aStart, 'outer node_start a').toBeDefined();
    expect(innerStart, `inner ${innerStartType} reached the outer listener`).toBeDefined();
    expect(innerStart.runId).toBe(outerStart.runId);
    expect(innerStart.parentStepId).toBe(aStart.stepId);
    expect(innerStart.stepId).not.toBe(aStart.stepId);
    const inner = events.filter((e) => e.source === innerName);
    for (const e of inner) expect(e.runId).toBe(outerStart.runId);
    const custom = inner.find((e) => e.type === 'inner:custom');
    expect(custom, 'inner custom event').toBeDefined();
    expect(custom.parentStepId).toBe(innerStart.stepId);
    // inner events come before the outer state finishes
    const aFinish = events.findIndex((e) => e.type === 'state_machine:node_finish' && e.source === 'outer' && e.sourceNode === 'a');
    expect(events.indexOf(innerStart)).toBeLessThan(aFinish);
    return { outerStart, aStart, innerStart };
  }

  test('runDag inside a state run shares runId and nests under the state step', async () => {
    const { events, fin } = await runCollect({ config: outerWith(() => runDag({ dag: innerDag, input: 5 })), input: null });
    expect(fin.value).toBe(11);
    checkNested(events, 'inner-dag', 'dag:start');
    expect(events.some((e) => e.type === 'dag:finish' && e.source === 'inner-dag')).toBe(true);
  });

  test('runDag after awaits inside a state run still nests', async () => {
    const { events } = await runCollect({
      config: outerWith(async () => {
        await sleep(2);
        await new Promise((r) => setImmediate(r));
        return runDag({ dag: innerDag, input: 1 });
      }),
      input: null,
    });
    checkNested(events, 'inner-dag', 'dag:start');
  });

  test('a child StateMachineRunner inside a state run shares runId and nests; its own listener sees its events', async () => {
    let childEvents;
    const { events, fin } = await runCollect({
      config: outerWith(async ({ input }) => {
        await sleep(1);
        const child = new StateMachineRunner({ config: innerMachine(), input: 7 });
        childEvents = collectEvents(child);
        await child.run();
        return child.finished;
      }),
      input: null,
    });
    expect(fin.value).toBe(107);
    const { outerStart, innerStart } = checkNested(events, 'inner-machine', 'state_machine:start');
    const i1 = events.find((e) => e.type === 'state_machine:node_start' && e.source === 'inner-machine' && e.sourceNode === 'i1');
    expect(i1.parentStepId).toBe(innerStart.stepId);
    expect(childEvents.length).toBeGreaterThan(0);
    expect(childEvents.every((e) => e.runId === outerStart.runId)).toBe(true);
    expect(childEvents.every((e) => e.source === 'inner-machine')).toBe(true);
    expect(events.some((e) => e.type === 'state_machine:finish' && e.source === 'inner-machine')).toBe(true);
  });

  test('a machine inside a DAG node nests under the node step', async () => {
    const dag = {
      name: 'outer-dag',
      nodes: {
        n: {
          run: async () => {
            const child = new StateMachineRunner({ config: innerMachine(), input: 1 });
            await child.run();
            return child.finished;
          },
        },
      },
    };
    const runner = new DagRunner({ dag, input: null });
    const events = collectEvents(runner);
    expect(await runner.run()).toBe(101);
    await settle();
    const dagStart = events.find((e) => e.type === 'dag:start');
    const nStart = events.find((e) => e.type === 'dag:node_start' && e.sourceNode === 'n');
    const mStart = events.find((e) => e.type === 'state_machine:start');
    expect(mStart, 'machine start reached the DAG listener').toBeDefined();
    expect(mStart.runId).toBe(dagStart.runId);
    expect(mStart.parentStepId).toBe(nStart.stepId);
  });

  test('nested runs on two visits of a state nest under their own visit', async () => {
    const { events } = await runCollect({
      config: {
        name: 'outer',
        initial: 'a',
        context: () => ({ n: 0 }),
        nodes: {
          a: {
            run: async ({ context }) => {
              context.n += 1;
              await runDag({ dag: { name: `inner-${context.n}`, nodes: { x: { run: () => 1 } } }, input: null });
              return context.n;
            },
            transition: { '': [{ state: 'a', condition: ({ output }) => output < 2 }, { state: 'done' }] },
          },
          done: { final: true },
        },
      },
      input: null,
    });
    const visits = ofType(events, 'state_machine:node_start', 'a').filter((e) => e.source === 'outer');
    expect(visits).toHaveLength(2);
    for (const [i, visit] of visits.entries()) {
      const start = events.find((e) => e.type === 'dag:start' && e.source === `inner-${i + 1}`);
      expect(start.parentStepId, `inner-${i + 1}`).toBe(visit.stepId);
    }
  });

  test('a machine started after another finished is a new top-level run', async () => {
    const first = await runCollect({ config: linear(), input: 1 });
    const second = await runCollect({ config: linear(), input: 1 });
    expect(second.events[0].parentStepId).toBeNull();
    expect(second.events[0].runId).not.toBe(first.events[0].runId);
  });
});

describe('scoped context', () => {
  test("a child machine has its own context (its config's), not the parent's", async () => {
    let childSeen;
    let parentAfter;
    const child = {
      name: 'child',
      initial: 'c',
      context: () => ({ items: [] }),
      nodes: {
        c: {
          final: true,
          run: ({ context }) => {
            childSeen = JSON.parse(JSON.stringify(context));
            context.items.push('from-child');
            context.outer = 'overwritten?';
            return context.items.length;
          },
        },
      },
    };
    const r = new StateMachineRunner({
      config: {
        name: 'parent',
        initial: 'p',
        context: () => ({ outer: 'parent-value' }),
        nodes: {
          p: {
            run: async ({ context }) => {
              const runner = new StateMachineRunner({ config: child, input: null });
              await runner.run();
              const out = await runner.finished;
              parentAfter = { ...context };
              return { out, childContext: runner.context };
            },
            transition: 'done',
          },
          done: { final: true },
        },
      },
      input: null,
    });
    await r.run();
    const result = await within(r.finished, 3000, 'finished');
    expect(childSeen).toEqual({ items: [] });
    expect(result.out).toBe(1);
    expect(result.childContext).toEqual({ items: ['from-child'], outer: 'overwritten?' });
    expect(parentAfter).toEqual({ outer: 'parent-value' });
    expect(r.context).toEqual({ outer: 'parent-value' });
  });

  test('a child machine without a context gets {} even inside a parent with context', async () => {
    let childSeen;
    const r = new StateMachineRunner({
      config: {
        name: 'parent',
        initial: 'p',
        context: () => ({ secret: 1 }),
        nodes: {
          p: {
            final: true,
            run: async () => {
              const runner = new StateMachineRunner({
                config: { name: 'bare-child', initial: 'c', nodes: { c: { final: true, run: ({ context }) => (childSeen = { ...context }) } } },
                input: null,
              });
              await runner.run();
              return runner.finished;
            },
          },
        },
      },
      input: null,
    });
    await r.run();
    await within(r.finished, 3000, 'finished');
    expect(childSeen).toEqual({});
  });

  test('a nested DAG inside a state has its own context', async () => {
    let dagSeen;
    const r = new StateMachineRunner({
      config: {
        name: 'parent',
        initial: 'p',
        context: () => ({ parent: true }),
        nodes: {
          p: {
            final: true,
            run: () =>
              runDag({
                dag: { name: 'd', context: () => ({ dag: true }), nodes: { x: { run: ({ context }) => (dagSeen = { ...context }) } } },
                input: null,
              }),
          },
        },
      },
      input: null,
    });
    await r.run();
    await within(r.finished, 3000, 'finished');
    expect(dagSeen).toEqual({ dag: true });
    expect(r.context).toEqual({ parent: true });
  });
});
