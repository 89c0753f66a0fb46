// Regressions of the durable Engine found in review (fixed in f17de28): restores that count
// an interrupted state twice, lose the events a machine holds or turn undefined into null,
// re-run failed DAG nodes; flush()/close() missing nested runs; a self-cancelling machine
// without a span; held events that pile up; prune() deleting live runs; a batched run not
// yet committed when it has ended.
// A restart is simulated in this process: close the first engine, open a second one on the
// same file and resume (restarts in another process are in engine-restart.test.ts).
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { CancelledError, configureTracing, Engine, flushTracing, runDag, shutdownTracing, StateMachineRunner, TestClock } from 'ramus';
import { attr, engineFixtures, otlpCollector, settled, storedStatus } from './engine-fixtures';
// @ts-expect-error: plain ESM helpers without types
import { deferred, settle, sleep, waitUntil } from './helpers.mjs';

// ---- fixtures ----

const { engines, tempDb, open, track } = engineFixtures('ramus-regress-');

/** A runner result that never comes: the state or node is still running when the engine closes. */
const hang = () => new Promise<never>(() => {});

/** The last transition of a run, without ids and times. */
function lastTransition(engine: Engine, runId: string) {
  const t = engine.transitions(runId).at(-1)!;
  return { from: t.from, to: t.to, eventType: t.eventType, eventData: t.eventData };
}

const stepsOf = (engine: Engine, runId: string) => engine.steps(runId).map((s) => `${s.node}:${s.status}`);

// ---- restore after a restart ----

describe('resume after a restart', () => {
  test('a state interrupted while running is not counted twice against maxVisits or maxSteps', async () => {
    for (const limit of ['maxVisits', 'maxSteps'] as const) {
      const db = tempDb();
      let phase = 1;
      const runners = { work: () => (phase === 1 ? hang() : 'done') };
      const def =
        limit === 'maxVisits'
          ? { name: 'mv', initial: 'work', nodes: { work: { runner: 'work', maxVisits: 1, transition: 'end' }, end: { final: true } } }
          : { name: 'ms', initial: 'work', maxSteps: 1, nodes: { work: { runner: 'work', transition: 'end' }, end: { final: true } } };
      const first = open({ db, durability: 'sync' });
      first.register(runners);
      const run = first.start(def, { input: 1 });
      await waitUntil(() => first.steps(run.runId).some((s) => s.node === 'work' && s.status === 'running'), 'work running');
      await first.close(); // the process "stops" while `work` runs

      phase = 2;
      const second = open({ db });
      second.register(runners);
      const again = await second.resume(run.runId);
      const outcome = await settled(again.finished);
      expect(outcome, limit).toEqual({ ok: true, value: 'done' });
      second.flush();
      expect(second.steps(run.runId).map((s) => [s.node, s.status, s.output]), limit).toEqual([
        ['work', 'cancelled', null],
        ['work', 'finished', 'done'],
      ]);
      expect(second.run(run.runId), limit).toMatchObject({ status: 'finished', output: 'done', error: null });
      expect(second.transitions(run.runId).map((t) => [t.from, t.to]), limit).toEqual([
        [null, 'work'],
        ['work', 'end'],
      ]);
    }
  });

  test('events a restored machine holds keep their type and data in its transitions (delayed transition, queued event)', async () => {
    const db = tempDb();
    let phase = 1;
    const runners = {
      a: () => (phase === 1 ? hang() : 'a-out'),
      fin: ({ input, event }: any) => ({ input, event: event?.type ?? null }),
    };
    // Both engines share one clock: the restart happens at a time the test controls.
    const clock = new TestClock();
    const first = open({ db, durability: 'sync', clock });
    first.register(runners);
    // 1) a delayed transition chosen by an event
    const sleepy = first.start({
      name: 'sleepy',
      initial: 'wait',
      nodes: { wait: { transition: { go: { state: 'done', delay: 300 } } }, done: { runner: 'fin', final: true } },
    });
    // 2) an event queued while a state runs
    const queued = first.start({
      name: 'queued',
      initial: 'a',
      nodes: { a: { runner: 'a', transition: { approve: 'done' } }, done: { runner: 'fin', final: true } },
    });
    await storedStatus(first, sleepy.runId, 'waitingForEvent');
    await waitUntil(() => queued.machineStatus === 'running', `queued running (now ${queued.machineStatus})`);
    first.send(sleepy.runId, { type: 'go', data: { x: 1 } });
    first.send(queued.runId, { type: 'approve', data: { by: 'ann' }, queue: true });
    await waitUntil(() => sleepy.machineStatus === 'sleeping', `sleepy sleeping (now ${sleepy.machineStatus})`);
    const dueAt = clock.now() + 300;
    expect(clock.next()).toBe(dueAt);
    await settle();
    expect(queued.machineStatus).toBe('running');
    await first.close();

    phase = 2;
    await clock.advance(100); // the restart, 100ms into the delay
    const second = open({ db, clock });
    second.register(runners);
    const r1 = await second.resume(sleepy.runId, { keepAlive: true });
    const r2 = await second.resume(queued.runId);
    expect(await settled(r2.finished)).toEqual({ ok: true, value: { input: 'a-out', event: 'approve' } });
    // The restored delay keeps its due time.
    expect((r1 as any).machineStatus).toBe('sleeping');
    expect(clock.next()).toBe(dueAt);
    await clock.advance(199);
    expect((r1 as any).machineStatus).toBe('sleeping');
    await clock.advance(1);
    expect(await settled(r1.finished)).toEqual({ ok: true, value: { event: 'go' } });
    second.flush();
    expect(lastTransition(second, sleepy.runId)).toEqual({ from: 'wait', to: 'done', eventType: 'go', eventData: { x: 1 } });
    expect(lastTransition(second, queued.runId)).toEqual({ from: 'a', to: 'done', eventType: 'approve', eventData: { by: 'ann' } });
  });

  test('undefined input and output held in a machine snapshot come back undefined, not null', async () => {
    const seen: string[] = [];
    const runners = {
      first: () => undefined, // output undefined
      last: ({ input }: any) => {
        seen.push(input === undefined ? 'undefined' : JSON.stringify(input));
        return 'ok';
      },
    };
    const def = {
      name: 'undef',
      initial: 'first',
      nodes: {
        first: { runner: 'first', transition: 'wait' },
        wait: { transition: { go: 'last' } }, // no runner: passes its input (undefined) on
        last: { runner: 'last', final: true },
      },
    };
    // Control: the same run without a restart.
    const memory = new Engine({ db: ':memory:' });
    engines.push(memory);
    memory.register(runners);
    const control = memory.start(def);
    await storedStatus(memory, control.runId, 'waitingForEvent');
    memory.send(control.runId, { type: 'go' });
    expect(await settled(control.finished)).toEqual({ ok: true, value: 'ok' });

    // With a restart while waiting for the event.
    const db = tempDb();
    const first = open({ db });
    first.register(runners);
    const run = first.start(def);
    await storedStatus(first, run.runId, 'waitingForEvent');
    await first.close();

    const second = open({ db });
    second.register(runners);
    const again = await second.resume(run.runId);
    expect(again.state).toBe('wait');
    expect(again.currentState.input).toBeUndefined();
    expect(again.output).toBeUndefined();
    second.send(run.runId, { type: 'go' });
    expect(await settled(again.finished)).toEqual({ ok: true, value: 'ok' });
    expect(seen).toEqual(['undefined', 'undefined']);
  });

  test('a DAG that tolerates failures keeps its failed node failed on resume: no re-run, no child run', async () => {
    const db = tempDb();
    let phase = 1;
    const calls: string[] = [];
    const runners = {
      charge: () => {
        calls.push(`charge@${phase}`);
        if (phase === 1) throw new Error('card declined');
        return 'charged';
      },
      ship: () => {
        calls.push(`ship@${phase}`);
        return 'shipped';
      },
      slow: () => {
        calls.push(`slow@${phase}`);
        return phase === 1 ? hang() : 'slow-done';
      },
    };
    const def = {
      name: 'tol',
      tolerateFailures: true,
      nodes: { charge: { runner: 'charge' }, ship: { runner: 'ship', parents: ['charge'] }, slow: { runner: 'slow' } },
    };
    const first = open({ db, durability: 'sync' });
    first.register(runners);
    const run = first.start(def);
    await waitUntil(() => run.nodeState('charge') === 'error' && run.nodeState('slow') === 'running', 'charge failed, slow running');
    expect([run.nodeState('charge'), run.nodeState('ship'), run.nodeState('slow')]).toEqual(['error', 'cancelled', 'running']);
    await first.close();

    phase = 2;
    const second = open({ db });
    second.register(runners);
    const again = await second.resume(run.runId);
    expect(await settled(again.finished)).toEqual({ ok: true, value: { slow: 'slow-done' } });
    expect([again.nodeState('charge'), again.nodeState('ship'), again.nodeState('slow')]).toEqual(['error', 'cancelled', 'finished']);
    expect(calls).toEqual(['charge@1', 'slow@1', 'slow@2']);
    second.flush();
    expect(stepsOf(second, run.runId)).toEqual(['charge:error', 'slow:cancelled', 'slow:finished']);
    expect(second.steps(run.runId)[0]!.error).toMatchObject({ name: 'Error', message: 'card declined' });
    expect(second.run(run.runId)).toMatchObject({ status: 'finished', output: { slow: 'slow-done' } });
  });

  test("the snapshot taken while a state runs keeps the context of the state's start; an event queued meanwhile survives", async () => {
    for (const how of ['emit', 'send'] as const) {
      const db = tempDb();
      let phase = 1;
      const calls: string[] = [];
      const proceed = deferred();
      const reached = deferred();
      const runners = {
        work: async ({ context, emit }: any) => {
          calls.push(`work@${phase}:${context.count}`);
          context.count += 1;
          await proceed.promise; // the state runs on after its start: the test says when
          if (how === 'emit') emit('progress', { count: context.count });
          reached.resolve();
          if (phase === 1) return hang();
          return context.count;
        },
      };
      const def = {
        name: `mid-${how}`,
        initial: 'work',
        context: { count: 0 },
        nodes: { work: { runner: 'work', transition: { '': 'done', ping: 'done' } }, done: { final: true } },
      };
      const first = open({ db, durability: 'sync' });
      first.register(runners);
      const run = first.start(def);
      await waitUntil(() => calls.length === 1, 'work started');
      proceed.resolve();
      await reached.promise;
      // A persist while the state runs: an emitted event, or an event queued by send().
      if (how === 'send') first.send(run.runId, { type: 'ping', queue: true });
      await settle();
      expect(run.context.count, how).toBe(1); // in memory the state has changed it
      await first.close();

      phase = 2;
      const second = open({ db });
      second.register(runners);
      expect(second.run(run.runId)!.snapshot.context, how).toEqual({ count: 0 });
      if (how === 'emit') expect(second.events(run.runId).map((e) => [e.type, e.data])).toEqual([['progress', { count: 1 }]]);
      const again = await second.resume(run.runId);
      expect(await settled(again.finished), how).toEqual({ ok: true, value: 1 });
      // The interrupted state ran once more, from the context it started with.
      expect(again.context.count, how).toBe(1);
      expect(calls, how).toEqual(['work@1:0', 'work@2:0']);
      second.flush();
      expect(stepsOf(second, run.runId), how).toEqual(['work:cancelled', 'work:finished']);
      // The queued event was kept in the snapshot and taken when the state finished.
      expect(lastTransition(second, run.runId), how).toEqual({ from: 'work', to: 'done', eventType: how === 'send' ? 'ping' : null, eventData: null });
    }
  });
});

// ---- flush / close reach nested runs ----

describe('runs nested in durable runs', () => {
  const child = { name: 'child', nodes: { c1: { run: () => 'one' }, c2: { run: () => hang(), parents: ['c1'] } } };

  test.each(['flush', 'close'] as const)('engine.%s() writes what a nested run recorded in the same turn', async (mode) => {
    const db = tempDb();
    const first = open({ db });
    let childRun: Promise<unknown> | undefined;
    const parent = {
      name: 'parent',
      nodes: {
        p: {
          run: () => {
            childRun = runDag({ dag: child } as any);
            childRun.catch(() => {});
            return hang();
          },
        },
      },
    };
    const run = track(first.start(parent as any));
    // Same turn: the child ran c1 and started c2.
    if (mode === 'flush') first.flush();
    else await first.close();
    expect(childRun).toBeDefined();

    const reader = open({ db });
    const kids = reader.children(run.runId);
    expect(kids.map((k) => [k.name, k.kind, k.status])).toEqual([['child', 'dag', 'running']]);
    expect(stepsOf(reader, kids[0]!.id)).toEqual(['c1:finished', 'c2:running']);
  });

  test('after engine.close() a nested run is detached: its parent keeps running in memory and gets its output', async () => {
    const db = tempDb();
    const first = open({ db });
    const childGate = deferred();
    const parent = {
      name: 'parent',
      nodes: {
        p: {
          run: async () => {
            try {
              return await runDag({ dag: { name: 'child', nodes: { c1: { run: async () => (await childGate.promise, 'child-ok') } } } } as any);
            } catch (e: any) {
              return `child failed: ${e.name}: ${e.message}`;
            }
          },
        },
      },
    };
    const run = first.start(parent as any);
    await waitUntil(() => first.children(run.runId).length === 1, 'child stored');
    await settle();
    await first.close(); // the child's c1 is still running: it ends only after the close
    childGate.resolve();
    expect(await settled(run.finished)).toEqual({ ok: true, value: 'child-ok' });
  });
});

// ---- held events ----

describe('held events', () => {
  test('a pre-empted delay drops the event that chose it: the snapshot holds no events after many', async () => {
    const clock = new TestClock();
    const engine = open({ clock });
    const run = track(
      engine.start({
        name: 'pre',
        initial: 'wait',
        nodes: { wait: { transition: { go: { state: 'wait', delay: 60000 }, stop: 'wait' } } },
      }),
    );
    await storedStatus(engine, run.runId, 'waitingForEvent');
    for (let k = 0; k < 1000; k++) {
      engine.send(run.runId, { type: 'go', data: { k, pad: 'x'.repeat(100) } }); // sleeping, event held
      engine.send(run.runId, { type: 'stop' }); // pre-empts the delay
    }
    await settle();
    engine.flush();
    expect(run.machineStatus).toBe('waitingForEvent');
    expect(clock.next()).toBeUndefined(); // the last delay was disarmed too
    const snap = engine.run(run.runId)!.snapshot;
    expect(snap.events).toEqual([]);
    expect(JSON.stringify(snap).length).toBeLessThan(2000);
  });
});

// ---- prune ----

describe('prune and live runs', () => {
  test('prune without a status deletes only ended runs: a running and a waiting run survive and finish', async () => {
    const engine = open({ durability: 'sync' });
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const ended = engine.start({ name: 'ended', nodes: { a: { run: () => 1 } } } as any);
    expect(await settled(ended.finished)).toEqual({ ok: true, value: 1 });
    const running = track(engine.start({ name: 'running', nodes: { a: { run: async () => (await gate, 'ran') } } } as any));
    const waiting = track(
      engine.start({
        name: 'live',
        initial: 'wait',
        nodes: { wait: { transition: { go: 'done' } }, done: { run: () => 'ok', final: true } },
      } as any),
    );
    await storedStatus(engine, waiting.runId, 'waitingForEvent');
    expect(engine.run(running.runId)?.status).toBe('running');

    expect(engine.prune({ olderThan: Date.now() + 1000 })).toBe(1);
    expect(engine.run(ended.runId)).toBeUndefined();
    expect(engine.run(running.runId)?.status).toBe('running');
    expect(engine.run(waiting.runId)?.status).toBe('waitingForEvent');

    // Both go on and are stored as they end; nothing fails later.
    engine.send(waiting.runId, { type: 'go' });
    release();
    expect(await settled(waiting.finished)).toEqual({ ok: true, value: 'ok' });
    expect(await settled(running.finished)).toEqual({ ok: true, value: 'ran' });
    engine.flush();
    expect(engine.run(waiting.runId)).toMatchObject({ status: 'finished', output: 'ok' });
    expect(engine.run(running.runId)).toMatchObject({ status: 'finished', output: 'ran' });
    const other = engine.start({ name: 'innocent', nodes: { a: { run: () => 1 } } } as any);
    expect(await settled(other.finished)).toEqual({ ok: true, value: 1 });
    expect(() => engine.flush()).not.toThrow();
    expect(engine.run(other.runId)?.status).toBe('finished');
  });

  test("prune with status 'waitingForEvent' deletes a waiting run (an abandoned wait)", async () => {
    const db = tempDb();
    const first = open({ db, durability: 'sync' });
    const waiting = first.start({
      name: 'abandoned',
      initial: 'wait',
      nodes: { wait: { transition: { go: 'done' } }, done: { final: true } },
    });
    await storedStatus(first, waiting.runId, 'waitingForEvent');
    const done = first.start({ name: 'done', nodes: { a: { run: () => 1 } } } as any);
    await done.finished;
    await first.close();

    const second = open({ db });
    expect(second.prune({ olderThan: Date.now() + 1000, status: 'waitingForEvent' })).toBe(1);
    expect(second.run(waiting.runId)).toBeUndefined();
    expect(second.transitions(waiting.runId)).toEqual([]);
    expect(second.run(done.runId)?.status).toBe('finished');
  });
});

// ---- batched runs are committed when they end ----

describe('batched durability', () => {
  test('a fast batched run is committed by the time its finished settles (another engine sees it all)', async () => {
    const db = tempDb();
    const engine = open({ db });
    const N = 3000;
    let i = 0;
    engine.register({
      tick: () => {
        i += 1;
        return i % 100 === 0 ? new Promise((r) => setImmediate(() => r(i))) : i;
      },
      more: ({ output }: any) => output < N,
    });
    const run = engine.start({
      name: 'loop',
      initial: 'a',
      nodes: { a: { runner: 'tick', transition: { '': [{ state: 'a', condition: 'more' }, { state: 'done' }] } }, done: { final: true } },
    });
    expect(await settled(run.finished)).toEqual({ ok: true, value: N });
    // No flush: a reader on the same file sees what the run wrote.
    const reader = open({ db });
    expect(reader.run(run.runId)).toMatchObject({ status: 'finished', output: N });
    expect(reader.steps(run.runId)).toHaveLength(N);
  });
});

// ---- tracing ----

describe('tracing of a machine that cancels itself', () => {
  let collector: Awaited<ReturnType<typeof otlpCollector>>;

  beforeAll(async () => {
    collector = await otlpCollector();
    configureTracing({ endpoint: collector.endpoint });
  });

  afterAll(async () => {
    await shutdownTracing();
    collector.close();
  });

  test('a state that throws CancelledError ends the run span (status cancelled), once', async () => {
    const m = new StateMachineRunner({
      config: {
        name: 'selfcancel',
        initial: 'a',
        nodes: {
          a: {
            run: () => {
              throw new CancelledError();
            },
            transition: 'b',
          },
          b: { final: true },
        },
      },
    } as any);
    await m.run();
    const outcome = await settled(m.finished);
    expect(outcome.ok).toBe(false);
    expect((outcome as any).error).toBeInstanceOf(CancelledError);
    expect(m.machineStatus).toBe('cancelled');
    const runSpans = () => collector.spans.filter((s) => s.name === 'invoke_agent selfcancel');
    await flushTracing();
    await waitUntil(() => runSpans().length > 0, 'the run span of the self-cancelled machine exported', 2000);
    await sleep(20);
    expect(runSpans().map((s) => attr(s, 'workflow.run.status'))).toEqual(['cancelled']);
  });
});

describe('the same event-loop turn as start()', () => {
  test('close() right after start() detaches the run: it finishes in memory, not with a closed store', async () => {
    const engine = open();
    engine.register('slow', () => new Promise((resolve) => setTimeout(() => resolve('top-ok'), 20)));
    const run = engine.start({ name: 'same-turn', nodes: { a: { runner: 'slow' } } });
    await engine.close();
    expect(await settled(run.finished)).toEqual({ ok: true, value: 'top-ok' });
  });

  test('send() right after start() reaches the live machine although its row is not committed yet', async () => {
    const engine = open();
    const run = engine.start({ name: 'quick', initial: 'wait', nodes: { wait: { transition: { go: 'done' } }, done: { final: true } } });
    expect(() => engine.send(run.runId, { type: 'go', data: 1 })).not.toThrow();
    // The event moved the machine (a final state passes its input on: here undefined).
    expect(await settled(run.finished)).toEqual({ ok: true, value: undefined });
    engine.flush();
    expect(engine.transitions(run.runId).at(-1)).toMatchObject({ from: 'wait', to: 'done', eventType: 'go', eventData: 1 });
  });
});

describe('the stored context of a DAG that ended', () => {
  const runners = {
    first: ({ context }: any) => {
      context.first = true;
      return 1;
    },
    last: async ({ context }: any) => {
      await null;
      context.last = true;
      return 2;
    },
    broken: async ({ context }: any) => {
      await null;
      context.broken = true;
      throw new Error('no');
    },
  };

  test.each(['sync', 'batched'] as const)('%s: is the context its last node left, finished or failed', async (durability) => {
    const engine = open({ durability });
    engine.register(runners);
    const ok = engine.start({ name: 'ok', nodes: { a: { runner: 'first' }, b: { runner: 'last', parents: ['a'] } } }, { context: { start: 1 } });
    await ok.finished;
    const failed = engine.start({ name: 'failed', nodes: { a: { runner: 'first' }, b: { runner: 'broken', parents: ['a'] } } }, { context: { start: 1 } });
    await settled(failed.finished);
    expect(engine.run(ok.runId)!.snapshot.context).toEqual({ start: 1, first: true, last: true });
    expect(engine.run(failed.runId)!.status).toBe('error');
    expect(engine.run(failed.runId)!.snapshot.context).toEqual({ start: 1, first: true, broken: true });
  });

  test.each(['sync', 'batched'] as const)('%s: tolerateFailures: a node cancelled below a failure does not keep the last change out', async (durability) => {
    const engine = open({ durability });
    engine.register({
      ...runners,
      slow: async ({ context }: any) => {
        await new Promise((r) => setImmediate(r));
        context.slow = true;
        return 3;
      },
    });
    const run = engine.start(
      { name: 'tolerant', tolerateFailures: true, nodes: { a: { runner: 'broken' }, b: { runner: 'first', parents: ['a'] }, c: { runner: 'slow' } } },
      { context: { start: 1 } },
    );
    await run.finished;
    expect(engine.run(run.runId)!.snapshot.context).toEqual({ start: 1, broken: true, slow: true });
  });
});

describe("'sync' runs wait for their commits, not the JS thread", () => {
  test('across concurrent runs, every step starts only once its start is committed, and each run ends stored', async () => {
    const engine = open({ durability: 'sync' });
    const unseen: string[] = [];
    // Each step looks for its own row, read back from the database: it must be there, running.
    // (Its run's row was committed when the run was created.)
    const idOf = (i: number) => engine.runs({ name: 'committed-starts' }).find((r) => r.input === i)!.id;
    const look = (node: string) => async ({ rootInput, input }: any) => {
      const row = engine.steps(idOf(rootInput)).find((s) => s.node === node && s.status === 'running');
      if (!row) unseen.push(`${rootInput}:${node}`);
      await Promise.resolve();
      return (input as Record<string, number>)?.a ?? rootInput;
    };
    engine.register({ 'look.a': look('a'), 'look.b': look('b'), 'look.c': look('c') });
    const dag = { name: 'committed-starts', nodes: { a: { runner: 'look.a' }, b: { parents: ['a'], runner: 'look.b' }, c: { parents: ['a'], runner: 'look.c' } } };
    const runs = Array.from({ length: 40 }, (_, i) => engine.start(dag, { input: i }));
    await Promise.all(runs.map((r) => r.finished));
    expect(unseen).toEqual([]);
    for (const id of runs.map((r) => r.runId)) {
      expect(engine.run(id)!.status).toBe('finished');
      expect(engine.steps(id).map((s) => s.status)).toEqual(['finished', 'finished', 'finished']);
    }
  });
});
