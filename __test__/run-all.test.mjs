import { describe, test, expect, vi, afterEach } from 'vitest';
import { StateMachineRunner, DagRunner, runAll, CancelledError } from 'ramus';
import { sleep, settle, within, collectEvents, outcome, loopGuard, RUNAWAY } from './helpers.mjs';

const valueMachine = (value, ms = 5) =>
  new StateMachineRunner({
    config: {
      name: `value-${String(value)}`,
      initial: 'a',
      nodes: { a: { run: async () => (await sleep(ms), value), transition: 'done' }, done: { final: true } },
    },
    input: null,
  });

/** A machine whose state polls isCancelled() until it turns true. */
function slowMachine(probe) {
  return new StateMachineRunner({
    config: {
      name: 'slow-machine',
      initial: 'a',
      nodes: {
        a: {
          run: async ({ isCancelled }) => {
            const t0 = Date.now();
            while (!isCancelled() && Date.now() - t0 < 3000) await sleep(3);
            probe.sawCancel = isCancelled();
            return 'late';
          },
          transition: 'b',
        },
        b: { final: true, run: () => (probe.bRan = true) },
      },
    },
    input: null,
  });
}

function slowDag(probe) {
  return new DagRunner({
    dag: {
      name: 'slow-dag',
      nodes: {
        x: {
          run: async ({ isCancelled }) => {
            const t0 = Date.now();
            while (!isCancelled() && Date.now() - t0 < 3000) await sleep(3);
            probe.sawCancel = isCancelled();
            return 'late';
          },
        },
      },
    },
    input: null,
  });
}

const waitingMachine = () =>
  new StateMachineRunner({
    config: { name: 'waiting', initial: 'a', nodes: { a: { run: () => 1, transition: { go: 'b' } }, b: { final: true } } },
    input: null,
  });

const failingDag = (err) =>
  new DagRunner({
    dag: {
      name: 'failing-dag',
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

const okDag = (value) => new DagRunner({ dag: { name: 'ok-dag', nodes: { x: { run: () => value } } }, input: null });

/**
 * The runAll budget is a JS setTimeout (runAll takes no clock), so the budget tests fake
 * setTimeout alone: the budget and the children's own short waits then run on fake time, which
 * only `advance` moves. Helpers that wait on real timers (within, waitUntil, settle) are not
 * used while it is faked.
 */
async function withFakeTimeouts(fn) {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
  try {
    await fn((ms) => vi.advanceTimersByTimeAsync(ms));
  } finally {
    vi.useRealTimers();
  }
}
afterEach(() => vi.useRealTimers()); // also when a test timed out inside withFakeTimeouts

describe('runAll', () => {
  test('fast children fulfilled, slow ones timedOut and cancelled, failing ones rejected; results in input order', async () => {
    const err = new Error('child failed');
    const pm = {};
    const pd = {};
    const slowM = slowMachine(pm);
    const slowD = slowDag(pd);
    const waiting = waitingMachine();
    const slowMFinished = outcome(slowM.finished);
    const slowDFinished = outcome(slowD.finished);
    const waitingFinished = outcome(waiting.finished);
    const children = [valueMachine('m1'), slowM, failingDag(err), okDag('dag-ok'), slowD, waiting];
    await withFakeTimeouts(async (advance) => {
      const all = outcome(runAll(children, { timeout: 120 }));
      // 1ms short of the budget the fast children are done, but runAll still waits for the slow ones
      await advance(119);
      expect(all.settled).toBe(false);
      expect(pm.sawCancel).toBeUndefined();
      await advance(1);
      expect(all.settled, 'runAll resolves at the budget').toBe(true);
      expect(all.status).toBe('fulfilled');
      const results = all.value;
      expect(results).toHaveLength(6);
      expect(results[0]).toEqual({ status: 'fulfilled', value: 'm1' });
      expect(results[1]).toEqual({ status: 'timedOut' });
      expect(results[2].status).toBe('rejected');
      expect(results[2].reason).toBe(err);
      expect(results[3]).toEqual({ status: 'fulfilled', value: 'dag-ok' });
      expect(results[4]).toEqual({ status: 'timedOut' });
      expect(results[5]).toEqual({ status: 'timedOut' });

      // the slow children poll isCancelled() every 3ms
      await advance(3);
      expect(pm.sawCancel).toBe(true);
      expect(pd.sawCancel).toBe(true);
    });
    await Promise.all([slowMFinished.promise, slowDFinished.promise, waitingFinished.promise]);
    expect(slowMFinished.reason).toBeInstanceOf(CancelledError);
    expect(slowDFinished.status).toBe('rejected');
    expect(waitingFinished.reason).toBeInstanceOf(CancelledError);
    await settle();
    expect(slowM.machineStatus).toBe('cancelled');
    expect(waiting.machineStatus).toBe('cancelled');
    expect(pm.bRan).toBeUndefined();
  });

  test('results keep input order, not completion order', async () => {
    const results = await runAll([valueMachine('first', 40), valueMachine('second', 1), okDag('third')], { timeout: 2000 });
    expect(results).toEqual([
      { status: 'fulfilled', value: 'first' },
      { status: 'fulfilled', value: 'second' },
      { status: 'fulfilled', value: 'third' },
    ]);
  });

  test('resolves as soon as every child is done, without waiting for the budget', async () => {
    await withFakeTimeouts(async (advance) => {
      const all = outcome(runAll([valueMachine(1), okDag(2)], { timeout: '10s' }));
      // the value machine takes 5ms: then every child is done, 9995ms before the budget
      await advance(5);
      expect(all.settled, 'runAll resolves when the last child is done').toBe(true);
      expect(all.value.map((r) => r.value)).toEqual([1, 2]);
      expect(vi.getTimerCount(), 'the budget timer is cleared').toBe(0);
    });
  });

  test("a string budget ('60ms') times out slow children", async () => {
    const probe = {};
    await withFakeTimeouts(async (advance) => {
      const all = outcome(runAll([slowMachine(probe), valueMachine('ok')], { timeout: '60ms' }));
      await advance(59);
      expect(all.settled).toBe(false);
      await advance(1);
      expect(all.settled, 'runAll resolves at the budget').toBe(true);
      expect(all.value).toEqual([{ status: 'timedOut' }, { status: 'fulfilled', value: 'ok' }]);
      await advance(3);
      expect(probe.sawCancel).toBe(true);
    });
  });

  test('never rejects, even when every child fails', async () => {
    const e1 = new Error('one');
    const e2 = new TypeError('two');
    const failingMachine = new StateMachineRunner({
      config: {
        name: 'fm',
        initial: 'a',
        nodes: {
          a: {
            run: () => {
              throw e2;
            },
            transition: 'b',
          },
          b: { final: true },
        },
      },
      input: null,
    });
    const results = await runAll([failingDag(e1), failingMachine], { timeout: 1000 });
    expect(results).toHaveLength(2);
    expect(results[0].status).toBe('rejected');
    expect(results[0].reason).toBe(e1);
    expect(results[1].status).toBe('rejected');
    expect(results[1].reason).toBe(e2);
  });

  test('a machine that handles its error in an error state is fulfilled with that output', async () => {
    const m = new StateMachineRunner({
      config: {
        name: 'handled',
        initial: 'a',
        errorState: 'failed',
        nodes: {
          a: {
            run: () => {
              throw new Error('inner');
            },
          },
          failed: { final: true, run: ({ input }) => `handled ${input.message}` },
        },
      },
      input: null,
    });
    const guard = loopGuard(m);
    expect(await runAll([m], { timeout: 1000 })).toEqual([{ status: 'fulfilled', value: 'handled inner' }]);
    await settle();
    expect(guard.tripped, RUNAWAY).toBe(false);
  });

  test('an empty list resolves to []', async () => {
    expect(await runAll([], { timeout: 100 })).toEqual([]);
  });

  test('children already started, or already finished, are awaited too', async () => {
    const started = valueMachine('started', 20);
    started.run();
    const done = okDag('done');
    await done.run();
    const startedDag = okDag('started-dag');
    startedDag.run();
    const results = await runAll([started, done, startedDag], { timeout: 1000 });
    expect(results).toEqual([
      { status: 'fulfilled', value: 'started' },
      { status: 'fulfilled', value: 'done' },
      { status: 'fulfilled', value: 'started-dag' },
    ]);
  });

  test('inside a state run, children nest under that state step and share its runId', async () => {
    const outer = new StateMachineRunner({
      config: {
        name: 'outer',
        initial: 'fan',
        nodes: {
          fan: {
            run: () => runAll([valueMachine('x'), okDag('y')], { timeout: 1000 }),
            transition: 'done',
          },
          done: { final: true },
        },
      },
      input: null,
    });
    const events = collectEvents(outer);
    await outer.run();
    const out = await within(outer.finished, 3000, 'outer finished');
    expect(out).toEqual([
      { status: 'fulfilled', value: 'x' },
      { status: 'fulfilled', value: 'y' },
    ]);
    await settle();
    const fanStep = events.find((e) => e.type === 'state_machine:node_start' && e.source === 'outer' && e.sourceNode === 'fan');
    const mStart = events.find((e) => e.type === 'state_machine:start' && e.source === 'value-x');
    const dStart = events.find((e) => e.type === 'dag:start' && e.source === 'ok-dag');
    expect(mStart, 'child machine events reach the outer listener').toBeDefined();
    expect(dStart, 'child DAG events reach the outer listener').toBeDefined();
    for (const s of [mStart, dStart]) {
      expect(s.runId).toBe(fanStep.runId);
      expect(s.parentStepId).toBe(fanStep.stepId);
    }
  });
});
