import { describe, test, expect } from 'vitest';
import { runDag, DagRunner } from 'ramus';
import { UUID_V7, deferred, settle, sleep, collectEvents, uuidV7Millis } from './helpers.mjs';

const diamond = () => ({
  name: 'diamond',
  nodes: {
    a: { run: ({ rootInput }) => rootInput + 1 },
    b: {
      run: async () => {
        await sleep(2);
        return 10;
      },
    },
    c: { parents: ['a', 'b'], run: ({ input }) => input.a + input.b },
  },
});

async function runCollect(options) {
  const runner = new DagRunner(options);
  const events = collectEvents(runner);
  const t0 = Date.now();
  const out = await runner.run().catch((e) => ({ __error: e }));
  await settle();
  const t1 = Date.now();
  return { runner, events, out, t0, t1 };
}

const ofType = (events, type, node) =>
  events.filter((e) => e.type === type && (node === undefined || e.sourceNode === node));
const one = (events, type, node) => {
  const found = ofType(events, type, node);
  expect(found, `exactly one ${type}${node ? ` for ${node}` : ''}`).toHaveLength(1);
  return found[0];
};

describe('event shape', () => {
  test('every event carries id, type, runId, stepId, parentStepId, source, sourceNode, time, data', async () => {
    const { events } = await runCollect({ dag: diamond(), input: 1 });
    expect(events.length).toBeGreaterThan(0);
    for (const e of events) {
      for (const key of ['id', 'type', 'runId', 'stepId', 'parentStepId', 'source', 'sourceNode', 'time', 'data']) {
        expect(e, `event ${e.type} has ${key}`).toHaveProperty(key);
      }
      expect(typeof e.type).toBe('string');
      expect(typeof e.sourceNode).toBe('string');
      expect(typeof e.time).toBe('number');
    }
  });

  test('id, runId and stepId are UUIDv7 (version 7, RFC variant) with a current timestamp', async () => {
    const { events, t0, t1 } = await runCollect({ dag: diamond(), input: 1 });
    for (const e of events) {
      for (const key of ['id', 'runId', 'stepId']) {
        expect(e[key], `${e.type}.${key}`).toMatch(UUID_V7);
        const ms = uuidV7Millis(e[key]);
        expect(ms).toBeGreaterThanOrEqual(t0 - 1000);
        expect(ms).toBeLessThanOrEqual(t1 + 1000);
      }
      if (e.parentStepId !== null) expect(e.parentStepId).toMatch(UUID_V7);
    }
  });

  test('time is milliseconds since the epoch, taken during the run', async () => {
    const { events, t0, t1 } = await runCollect({ dag: diamond(), input: 1 });
    for (const e of events) {
      expect(Number.isInteger(e.time) || Number.isFinite(e.time)).toBe(true);
      expect(e.time).toBeGreaterThanOrEqual(t0 - 5);
      expect(e.time).toBeLessThanOrEqual(t1 + 5);
    }
  });

  test('event ids are unique', async () => {
    const { events } = await runCollect({ dag: diamond(), input: 1 });
    expect(new Set(events.map((e) => e.id)).size).toBe(events.length);
  });

  test('ids stay unique across many concurrent runs (event ids, runIds and step ids)', async () => {
    const runners = Array.from({ length: 50 }, () => new DagRunner({ dag: diamond(), input: 1 }));
    const all = runners.map((r) => collectEvents(r));
    await Promise.all(runners.map((r) => r.run()));
    await settle();
    const events = all.flat();
    expect(new Set(events.map((e) => e.id)).size).toBe(events.length);
    expect(new Set(all.map((evs) => evs[0].runId)).size).toBe(50);
    const stepIds = new Set(
      events.filter((e) => e.type === 'dag:start' || e.type === 'dag:node_start').map((e) => e.stepId)
    );
    expect(stepIds.size).toBe(50 * 4);
    for (const evs of all) expect(evs[0].runId).not.toBe(evs[0].stepId);
  });

  test('all events of one run share a runId; two runs get different runIds', async () => {
    const first = await runCollect({ dag: diamond(), input: 1 });
    const second = await runCollect({ dag: diamond(), input: 1 });
    const ids1 = new Set(first.events.map((e) => e.runId));
    const ids2 = new Set(second.events.map((e) => e.runId));
    expect(ids1.size).toBe(1);
    expect(ids2.size).toBe(1);
    expect([...ids1][0]).not.toBe([...ids2][0]);
  });

  test("source is the DAG name, or 'options.name: DAG name' when given (as the original composed it)", async () => {
    const plain = await runCollect({ dag: diamond(), input: 1 });
    expect(new Set(plain.events.map((e) => e.source))).toEqual(new Set(['diamond']));
    const named = await runCollect({ dag: diamond(), input: 1, name: 'custom-run' });
    expect(new Set(named.events.map((e) => e.source))).toEqual(new Set(['custom-run: diamond']));
  });
});

describe('event types and data', () => {
  test('dag:start first with {input}, top-level parentStepId null, sourceNode empty', async () => {
    const { events } = await runCollect({ dag: diamond(), input: 1 });
    const start = events[0];
    expect(start.type).toBe('dag:start');
    expect(start.data).toEqual({ input: 1 });
    expect(start.parentStepId).toBeNull();
    expect(start.sourceNode).toBe('');
    expect(ofType(events, 'dag:start')).toHaveLength(1);
  });

  test('dag:finish last with {output}, on the run step', async () => {
    const { events } = await runCollect({ dag: diamond(), input: 1 });
    const start = events[0];
    const finish = events.at(-1);
    expect(finish.type).toBe('dag:finish');
    expect(finish.data).toEqual({ output: 12 });
    expect(finish.sourceNode).toBe('');
    expect(finish.stepId).toBe(start.stepId);
    expect(ofType(events, 'dag:finish')).toHaveLength(1);
  });

  test('dag:node_start {input} and dag:node_finish {output} once per node', async () => {
    const { events } = await runCollect({ dag: diamond(), input: 1 });
    expect(one(events, 'dag:node_start', 'a').data).toEqual({ input: {} });
    expect(one(events, 'dag:node_start', 'b').data).toEqual({ input: {} });
    expect(one(events, 'dag:node_start', 'c').data).toEqual({ input: { a: 2, b: 10 } });
    expect(one(events, 'dag:node_finish', 'a').data).toEqual({ output: 2 });
    expect(one(events, 'dag:node_finish', 'b').data).toEqual({ output: 10 });
    expect(one(events, 'dag:node_finish', 'c').data).toEqual({ output: 12 });
  });

  test('node events use the node step; their parentStepId is the run step', async () => {
    const { events } = await runCollect({ dag: diamond(), input: 1 });
    const runStep = events[0].stepId;
    const steps = {};
    for (const n of ['a', 'b', 'c']) {
      const s = one(events, 'dag:node_start', n);
      const f = one(events, 'dag:node_finish', n);
      expect(s.stepId).toBe(f.stepId);
      expect(s.stepId).not.toBe(runStep);
      expect(s.parentStepId).toBe(runStep);
      expect(f.parentStepId).toBe(runStep);
      steps[n] = s.stepId;
    }
    expect(new Set(Object.values(steps)).size).toBe(3);
  });

  test('ordering: node_start before node_finish; a child starts after its parents finish', async () => {
    const { events } = await runCollect({ dag: diamond(), input: 1 });
    const idx = (type, node) => events.findIndex((e) => e.type === type && e.sourceNode === node);
    for (const n of ['a', 'b', 'c']) {
      expect(idx('dag:node_start', n)).toBeGreaterThan(0);
      expect(idx('dag:node_start', n)).toBeLessThan(idx('dag:node_finish', n));
    }
    expect(idx('dag:node_start', 'c')).toBeGreaterThan(idx('dag:node_finish', 'a'));
    expect(idx('dag:node_start', 'c')).toBeGreaterThan(idx('dag:node_finish', 'b'));
    const finishIdx = events.findIndex((e) => e.type === 'dag:finish');
    expect(finishIdx).toBe(events.length - 1);
    expect(finishIdx).toBeGreaterThan(idx('dag:node_finish', 'c'));
  });

  test('event times never go backwards', async () => {
    const { events } = await runCollect({ dag: diamond(), input: 1 });
    for (let i = 1; i < events.length; i++) {
      expect(events[i].time).toBeGreaterThanOrEqual(events[i - 1].time);
    }
  });

  test('dag:node_state {state} on every state change; also delivered to dag:state', async () => {
    const runner = new DagRunner({ dag: diamond(), input: 1 });
    const events = collectEvents(runner);
    const stateListener = [];
    runner.on('dag:state', (s) => stateListener.push(s));
    await runner.run();
    await settle();
    const nodeStates = ofType(events, 'dag:node_state');
    for (const n of ['a', 'b', 'c']) {
      const seq = nodeStates.filter((e) => e.sourceNode === n).map((e) => e.data.state);
      expect(seq, `states of ${n}`).toContain('running');
      expect(seq.at(-1)).toBe('finished');
      // no repeated consecutive state: these are changes
      for (let i = 1; i < seq.length; i++) expect(seq[i]).not.toBe(seq[i - 1]);
    }
    for (const e of nodeStates) {
      expect(e.parentStepId === events[0].stepId || e.stepId === events[0].stepId).toBe(true);
    }
    expect(stateListener.map((s) => [s.sourceNode, s.state])).toEqual(
      nodeStates.map((e) => [e.sourceNode, e.data.state])
    );
  });

  test('node_state running comes before node_finish for that node', async () => {
    const { events } = await runCollect({ dag: diamond(), input: 1 });
    for (const n of ['a', 'b', 'c']) {
      const running = events.findIndex((e) => e.type === 'dag:node_state' && e.sourceNode === n && e.data.state === 'running');
      const fin = events.findIndex((e) => e.type === 'dag:node_finish' && e.sourceNode === n);
      expect(running).toBeGreaterThan(0);
      expect(running).toBeLessThan(fin);
    }
  });

  test('failing run: dag:node_error {error} then dag:error {error}; no node_finish for the failed node', async () => {
    const err = new Error('exploded');
    const { events, out } = await runCollect({
      dag: {
        name: 'err',
        nodes: {
          a: { run: () => 1 },
          b: {
            parents: ['a'],
            run: () => {
              throw err;
            },
          },
        },
      },
      input: null,
    });
    expect(out.__error).toBe(err);
    const nodeError = one(events, 'dag:node_error', 'b');
    const runError = one(events, 'dag:error');
    const start = one(events, 'dag:node_start', 'b');
    expect(nodeError.stepId).toBe(start.stepId);
    expect(nodeError.parentStepId).toBe(events[0].stepId);
    expect(runError.stepId).toBe(events[0].stepId);
    expect(runError.sourceNode).toBe('');
    for (const e of [nodeError, runError]) {
      const reported = e.data.error;
      expect(reported === err || reported?.message === 'exploded').toBe(true);
    }
    expect(events.indexOf(start)).toBeLessThan(events.indexOf(nodeError));
    expect(events.indexOf(nodeError)).toBeLessThan(events.indexOf(runError));
    expect(ofType(events, 'dag:node_finish', 'b')).toHaveLength(0);
    expect(ofType(events, 'dag:finish')).toHaveLength(0);
    const bStates = ofType(events, 'dag:node_state', 'b').map((e) => e.data.state);
    expect(bStates.at(-1)).toBe('error');
  });

  test('custom emit() is tied to the node step', async () => {
    const { events } = await runCollect({
      dag: {
        name: 'custom',
        nodes: {
          a: {
            run: async ({ emit }) => {
              emit('my:progress', { pct: 50 });
              await sleep(1);
              emit('my:done');
              return 1;
            },
          },
          b: {
            parents: ['a'],
            run: ({ emit }) => {
              emit('other:note', 'text');
              return 2;
            },
          },
        },
      },
      input: null,
    });
    const runStep = events[0].stepId;
    const aStart = one(events, 'dag:node_start', 'a');
    const aFinish = one(events, 'dag:node_finish', 'a');
    const progress = one(events, 'my:progress');
    expect(progress).toMatchObject({
      type: 'my:progress',
      stepId: aStart.stepId,
      parentStepId: runStep,
      sourceNode: 'a',
      source: 'custom',
      runId: events[0].runId,
      data: { pct: 50 },
    });
    expect(progress.id).toMatch(UUID_V7);
    const done = one(events, 'my:done');
    expect(done.stepId).toBe(aStart.stepId);
    expect(done.data).toBeUndefined();
    expect(events.indexOf(aStart)).toBeLessThan(events.indexOf(progress));
    expect(events.indexOf(progress)).toBeLessThan(events.indexOf(done));
    expect(events.indexOf(done)).toBeLessThan(events.indexOf(aFinish));
    const note = one(events, 'other:note');
    expect(note.stepId).toBe(one(events, 'dag:node_start', 'b').stepId);
    expect(note.sourceNode).toBe('b');
    expect(note.data).toBe('text');
  });

  test('custom events from concurrent nodes stay on their own steps', async () => {
    const gate = deferred();
    const { events } = await runCollect({
      dag: {
        name: 'custom-concurrent',
        nodes: {
          x: {
            run: async ({ emit }) => {
              await gate.promise;
              emit('tick', 'x');
              return 1;
            },
          },
          y: {
            run: async ({ emit }) => {
              setTimeout(() => gate.resolve(), 5);
              await gate.promise;
              emit('tick', 'y');
              return 2;
            },
          },
        },
      },
      input: null,
    });
    for (const n of ['x', 'y']) {
      const tick = events.find((e) => e.type === 'tick' && e.data === n);
      expect(tick.sourceNode).toBe(n);
      expect(tick.stepId).toBe(one(events, 'dag:node_start', n).stepId);
    }
  });

  test("an 'event' listener added after run() started receives the rest of the events", async () => {
    const gate = deferred();
    const runner = new DagRunner({
      dag: { name: 'late', nodes: { a: { run: () => gate.promise }, b: { parents: ['a'], run: () => 'b' } } },
      input: null,
    });
    const p = runner.run();
    await settle();
    const events = collectEvents(runner);
    gate.resolve('a');
    expect(await p).toBe('b');
    await settle();
    const types = events.map((e) => `${e.type}:${e.sourceNode}`);
    expect(types).toContain('dag:node_finish:a');
    expect(types).toContain('dag:node_start:b');
    expect(types).toContain('dag:node_finish:b');
    expect(types.at(-1)).toBe('dag:finish:');
  });

  test('two concurrent top-level runners: each listener only sees its own run', async () => {
    // Two concurrent top-level runners: each listener only sees its own run.
    const r1 = new DagRunner({ dag: diamond(), input: 1, name: 'one' });
    const r2 = new DagRunner({ dag: diamond(), input: 2, name: 'two' });
    const e1 = collectEvents(r1);
    const e2 = collectEvents(r2);
    await Promise.all([r1.run(), r2.run()]);
    await settle();
    expect(new Set(e1.map((e) => e.source))).toEqual(new Set(['one: diamond']));
    expect(new Set(e2.map((e) => e.source))).toEqual(new Set(['two: diamond']));
    expect(new Set(e1.map((e) => e.runId)).size).toBe(1);
    expect(e1[0].runId).not.toBe(e2[0].runId);
  });
});

describe('nesting', () => {
  const inner = (name = 'inner', value = 'inner-out') => ({
    name,
    nodes: {
      x: { run: () => value },
      y: { parents: ['x'], run: ({ input, emit }) => (emit('inner:custom', input.x), input.x) },
    },
  });

  function checkNested(events, outerNode, innerName) {
    const outerStart = events.find((e) => e.type === 'dag:start' && e.parentStepId === null);
    const nodeStart = events.find(
      (e) => e.type === 'dag:node_start' && e.sourceNode === outerNode && e.parentStepId === outerStart.stepId
    );
    const innerStart = events.find((e) => e.type === 'dag:start' && e.source === innerName);
    expect(outerStart, 'outer dag:start').toBeDefined();
    expect(nodeStart, `outer node_start ${outerNode}`).toBeDefined();
    expect(innerStart, `inner dag:start ${innerName} reached the outer listener`).toBeDefined();
    expect(innerStart.runId).toBe(outerStart.runId);
    expect(innerStart.parentStepId).toBe(nodeStart.stepId);
    expect(innerStart.stepId).not.toBe(nodeStart.stepId);
    expect(innerStart.stepId).not.toBe(outerStart.stepId);
    const innerEvents = events.filter((e) => e.source === innerName);
    expect(new Set(innerEvents.map((e) => e.type))).toEqual(
      new Set(['dag:start', 'dag:node_state', 'dag:node_start', 'dag:node_finish', 'inner:custom', 'dag:finish'])
    );
    for (const e of innerEvents) expect(e.runId).toBe(outerStart.runId);
    const innerX = events.find((e) => e.type === 'dag:node_start' && e.source === innerName && e.sourceNode === 'x');
    expect(innerX.parentStepId).toBe(innerStart.stepId);
    return { outerStart, nodeStart, innerStart };
  }

  test('runDag inside a node (before any await) nests under that node', async () => {
    const runner = new DagRunner({
      dag: { name: 'outer', nodes: { a: { run: () => runDag({ dag: inner(), input: 1 }) } } },
      input: null,
    });
    const events = collectEvents(runner);
    expect(await runner.run()).toBe('inner-out');
    await settle();
    checkNested(events, 'a', 'inner');
  });

  test('runDag inside a node after awaits (timer, immediate, microtask) nests under that node', async () => {
    const runner = new DagRunner({
      dag: {
        name: 'outer',
        nodes: {
          a: {
            run: async () => {
              await sleep(3);
              await new Promise((r) => setImmediate(r));
              await Promise.resolve();
              return runDag({ dag: inner(), input: 1 });
            },
          },
        },
      },
      input: null,
    });
    const events = collectEvents(runner);
    expect(await runner.run()).toBe('inner-out');
    await settle();
    checkNested(events, 'a', 'inner');
  });

  test('inner dag:finish comes before the outer node finishes', async () => {
    const runner = new DagRunner({
      dag: {
        name: 'outer',
        nodes: {
          a: {
            run: async () => {
              await sleep(1);
              return runDag({ dag: inner(), input: 1 });
            },
          },
        },
      },
      input: null,
    });
    const events = collectEvents(runner);
    await runner.run();
    await settle();
    const innerFinish = events.findIndex((e) => e.type === 'dag:finish' && e.source === 'inner');
    const outerNodeFinish = events.findIndex((e) => e.type === 'dag:node_finish' && e.sourceNode === 'a');
    const outerFinish = events.findIndex((e) => e.type === 'dag:finish' && e.source === 'outer');
    expect(innerFinish).toBeGreaterThan(0);
    expect(innerFinish).toBeLessThan(outerNodeFinish);
    expect(outerFinish).toBe(events.length - 1);
  });

  test('concurrent nodes each nest their own inner runs', async () => {
    const gate = deferred();
    const runner = new DagRunner({
      dag: {
        name: 'outer',
        nodes: {
          p: {
            run: async () => {
              await gate.promise;
              await sleep(3);
              return runDag({ dag: inner('inner-p', 'P'), input: 1 });
            },
          },
          q: {
            run: async () => {
              setTimeout(() => gate.resolve(), 2);
              await gate.promise;
              return runDag({ dag: inner('inner-q', 'Q'), input: 1 });
            },
          },
        },
      },
      input: null,
    });
    const events = collectEvents(runner);
    expect(await runner.run()).toEqual({ p: 'P', q: 'Q' });
    await settle();
    checkNested(events, 'p', 'inner-p');
    checkNested(events, 'q', 'inner-q');
  });

  test('three levels: innermost events reach the top runner and chain step parents', async () => {
    const level3 = { name: 'level3', nodes: { z: { run: () => 'deep' } } };
    const level2 = {
      name: 'level2',
      nodes: {
        m: {
          run: async () => {
            await sleep(1);
            return runDag({ dag: level3, input: null });
          },
        },
      },
    };
    const runner = new DagRunner({
      dag: {
        name: 'level1',
        nodes: {
          top: {
            run: async () => {
              await Promise.resolve();
              return runDag({ dag: level2, input: null });
            },
          },
        },
      },
      input: null,
    });
    const events = collectEvents(runner);
    expect(await runner.run()).toBe('deep');
    await settle();
    const runId = events[0].runId;
    expect(events.every((e) => e.runId === runId)).toBe(true);
    const start2 = one(events.filter((e) => e.source === 'level2'), 'dag:start');
    const start3 = one(events.filter((e) => e.source === 'level3'), 'dag:start');
    const top = one(events, 'dag:node_start', 'top');
    const m = one(events, 'dag:node_start', 'm');
    expect(start2.parentStepId).toBe(top.stepId);
    expect(start3.parentStepId).toBe(m.stepId);
    expect(m.parentStepId).toBe(start2.stepId);
    expect(events.some((e) => e.source === 'level3' && e.type === 'dag:node_finish' && e.sourceNode === 'z')).toBe(true);
  });

  test('a nested DagRunner listener sees its own events with the outer runId', async () => {
    let innerEvents;
    const runner = new DagRunner({
      dag: {
        name: 'outer',
        nodes: {
          a: {
            run: async () => {
              await sleep(1);
              const r = new DagRunner({ dag: inner(), input: 1 });
              innerEvents = collectEvents(r);
              return r.run();
            },
          },
        },
      },
      input: null,
    });
    const events = collectEvents(runner);
    await runner.run();
    await settle();
    expect(innerEvents.length).toBeGreaterThan(0);
    expect(innerEvents.every((e) => e.runId === events[0].runId)).toBe(true);
    checkNested(events, 'a', 'inner');
  });

  test('a run started outside any node after a nested run is a new top-level run', async () => {
    const outer = new DagRunner({
      dag: { name: 'outer', nodes: { a: { run: () => runDag({ dag: inner(), input: 1 }) } } },
      input: null,
    });
    const outerEvents = collectEvents(outer);
    await outer.run();
    const later = new DagRunner({ dag: inner('later'), input: 1 });
    const laterEvents = collectEvents(later);
    await later.run();
    await settle();
    expect(laterEvents[0].type).toBe('dag:start');
    expect(laterEvents[0].parentStepId).toBeNull();
    expect(laterEvents[0].runId).not.toBe(outerEvents[0].runId);
    expect(outerEvents.some((e) => e.source === 'later')).toBe(false);
  });

  test('a nested run failing rejects inside the node with the same error', async () => {
    const err = new Error('inner failure');
    let caughtInside;
    const out = await runDag({
      dag: {
        name: 'outer',
        nodes: {
          a: {
            run: async () => {
              try {
                await runDag({
                  dag: {
                    name: 'inner-fail',
                    nodes: {
                      x: {
                        run: () => {
                          throw err;
                        },
                      },
                    },
                  },
                  input: null,
                });
              } catch (e) {
                caughtInside = e;
              }
              return 'recovered';
            },
          },
        },
      },
      input: null,
    });
    expect(out).toBe('recovered');
    expect(caughtInside).toBe(err);
  });
});
