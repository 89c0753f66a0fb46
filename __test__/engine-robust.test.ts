// What a run does when something goes wrong, or goes on too long: the default maxSteps of a
// machine and loops that must not freeze the process; stored definitions holding values JSON
// cannot hold; errors and outputs that cannot be serialized; error states of durable machines;
// prune() of a live run; the message of a state timeout, live and stored; TestClock timers in
// due order across runs.
// Engine time is a TestClock wherever delays or timeouts are involved: no sleeps.
import { describe, expect, test } from 'vitest';
import { CancelledError, DagRunner, Engine, StateMachineRunner, TestClock, TimeoutError, type StateMachine } from 'ramus';
import { engineFixtures, settled } from './engine-fixtures';

const { open, track, tempDb } = engineFixtures('ramus-robust-');

const DURABLE = ['sync', 'batched'] as const;

/** The error of starting a run: thrown by `start`, or the rejection of its `finished`; undefined when it finished. */
async function startFailure(start: () => { finished: Promise<unknown> }): Promise<any> {
  let run: { finished: Promise<unknown> };
  try {
    run = start();
  } catch (err) {
    return err;
  }
  const outcome = await settled(run.finished);
  return outcome.ok ? undefined : outcome.error;
}

// ---- 3. the default maxSteps, and loops that do not freeze the process ----

describe('machines get a default maxSteps of 10,000', () => {
  test('a loop without maxSteps fails after 10,000 state runs, naming the limit and the state', async () => {
    let runs = 0;
    const r = new StateMachineRunner({ config: { name: 'm', initial: 's', nodes: { s: { run: () => void runs++, transition: 's' } } }, input: null });
    await r.run();
    const outcome = await settled(r.finished);
    expect(outcome.ok).toBe(false);
    expect((outcome as { error: Error }).error.message).toBe('Machine m exceeded maxSteps (10000) at state s');
    expect(runs).toBe(10_000);
    expect([r.machineStatus, r.state]).toEqual(['error', 's']);
  });

  test('a pass-through loop (no run) hits the same limit', async () => {
    const r = new StateMachineRunner({ config: { name: 'p', initial: 's', nodes: { s: { transition: 's' } } }, input: 1 });
    await r.run();
    const outcome = await settled(r.finished);
    expect((outcome as { error: Error }).error?.message).toBe('Machine p exceeded maxSteps (10000) at state s');
  });

  test('a config can raise it: 15,000 iterations finish under maxSteps 20,000, a runaway stops at 20,000', async () => {
    const counting: StateMachine<any, number> = {
      name: 'count',
      initial: 's',
      maxSteps: 20_000,
      nodes: {
        s: { run: ({ input }) => input + 1, transition: { '': [{ state: 'done', condition: ({ output }) => output >= 15_000 }, { state: 's' }] } },
        done: { final: true },
      },
    };
    const r = new StateMachineRunner({ config: counting, input: 0 });
    await r.run();
    expect(await settled(r.finished)).toEqual({ ok: true, value: 15_000 });

    let runs = 0;
    const runaway = new StateMachineRunner({ config: { name: 'big', initial: 's', maxSteps: 20_000, nodes: { s: { run: () => void runs++, transition: 's' } } }, input: null });
    await runaway.run();
    const outcome = await settled(runaway.finished);
    expect((outcome as { error: Error }).error?.message).toBe('Machine big exceeded maxSteps (20000) at state s');
    expect(runs).toBe(20_000);
  });
});

describe('a long loop does not freeze the process', () => {
  const LIMIT = 1_000_000;
  /** Three kinds of loop; `count` is called once per iteration. */
  const loops: Array<[string, (count: () => void) => StateMachine<any, any>]> = [
    ['a synchronous run', (count) => ({ name: 'sync-loop', initial: 's', maxSteps: LIMIT, nodes: { s: { run: () => count(), transition: 's' } } })],
    ['a pass-through state', (count) => ({ name: 'pass-loop', initial: 's', maxSteps: LIMIT, nodes: { s: { transition: { '': { state: 's', condition: () => (count(), true) } } } } })],
    ['an instantly resolving async run', (count) => ({ name: 'async-loop', initial: 's', maxSteps: LIMIT, nodes: { s: { run: async () => count(), transition: 's' } } })],
  ];

  test.each(loops)('%s: setTimeout and setImmediate callbacks run while it loops, and cancel() from them stops it', async (_label, make) => {
    let n = 0;
    const r = new StateMachineRunner({ config: make(() => void n++), input: null });
    const seen: Array<{ from: string; n: number; status: string }> = [];
    let cancelledAt = -1;
    // A timer callback, then an immediate from it that cancels: both must get in while the machine loops.
    setTimeout(() => {
      seen.push({ from: 'setTimeout', n, status: r.machineStatus });
      setImmediate(() => {
        seen.push({ from: 'setImmediate', n, status: r.machineStatus });
        cancelledAt = n;
        r.cancel();
      });
    }, 0);
    void r.run();
    const outcome = await settled(r.finished);
    expect(outcome.ok).toBe(false);
    expect((outcome as { error: unknown }).error).toBeInstanceOf(CancelledError);
    expect(r.machineStatus).toBe('cancelled');
    expect(seen.map((s) => s.from)).toEqual(['setTimeout', 'setImmediate']);
    for (const s of seen) {
      // It was looping (not ended) when the callback ran.
      expect(['ready', 'running'], `${s.from} ran while the machine was ${s.status} after ${s.n} iterations`).toContain(s.status);
    }
    // Stopped at the cancel (a running state may finish and take its transition), far before the limit.
    expect(n).toBeLessThanOrEqual(cancelledAt + 1);
    expect(n).toBeLessThan(LIMIT / 2);
  });
});

// ---- 5. a stored machine whose args hold a BigInt ----

describe('a stored definition whose args hold a BigInt', () => {
  const machine = { name: 'big-args', initial: 'a', nodes: { a: { runner: 'k', args: { n: 5n }, transition: 'b' }, b: { final: true } } };
  const dag = { name: 'big-args-dag', nodes: { a: { runner: 'k', args: { n: 5n } } } };

  test.each([
    ['machine', machine, "State a args.n: BigInt values cannot be stored"],
    ['DAG', dag, "Node 'a' args.n: BigInt values cannot be stored"],
  ] as const)('%s: engine.start(config) fails naming the path, runs nothing and stores nothing finished', async (_kind, config, message) => {
    const engine = open({ durability: 'sync' });
    let calls = 0;
    engine.register({ k: () => ++calls });
    const err = await startFailure(() => engine.start(config as any));
    expect(err, 'the run finished as if the config were inline').toBeInstanceOf(Error);
    expect(err.message).toBe(message);
    expect(calls).toBe(0);
    engine.flush();
    expect(engine.runs({ status: 'finished' })).toEqual([]);
  });

  test.each([
    ['machine', machine, "State a args.n: BigInt values cannot be stored"],
    ['DAG', dag, "Node 'a' args.n: BigInt values cannot be stored"],
  ] as const)('%s: engine.define(config) refuses it, naming the path', (_kind, config, message) => {
    const engine = open({ durability: 'sync' });
    engine.register({ k: () => 1 });
    let err: any;
    try {
      engine.define(config as any);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(Error);
    expect(err.message).toBe(message);
    expect(err.code).toBe('ERR_DEFINITION_NOT_JSON');
    expect(() => engine.start(config.name)).toThrow();
  });
});

// ---- 6. errors and outputs that cannot be serialized ----

/** An error with an enumerable own getter that throws. */
function errorWithThrowingGetter(): Error {
  const e = new Error('getter error');
  Object.defineProperty(e, 'detail', {
    enumerable: true,
    get() {
      throw new Error('no detail for you');
    },
  });
  return e;
}

function selfCause(): Error {
  const e = new Error('self cause') as Error & { cause?: unknown };
  e.cause = e;
  return e;
}

function mutualCause(): Error {
  const a = new Error('mutual a') as Error & { cause?: unknown };
  const b = new Error('mutual b') as Error & { cause?: unknown };
  a.cause = b;
  b.cause = a;
  return a;
}

function deepCause(): Error {
  let e = new Error('cause 0') as Error & { cause?: unknown };
  for (let i = 1; i < 100_000; i++) {
    const next = new Error(`cause ${i}`) as Error & { cause?: unknown };
    next.cause = e;
    e = next;
  }
  return e;
}

const trap = (what: string) => () => {
  throw new Error(`trap ${what}`);
};

/** A Proxy whose every trap throws (reading `then` included). */
const hostileProxy = () =>
  new Proxy({}, { get: trap('get'), has: trap('has'), ownKeys: trap('ownKeys'), getOwnPropertyDescriptor: trap('getOwnPropertyDescriptor'), getPrototypeOf: trap('getPrototypeOf') });

/** A Proxy that is not a thenable (`then` reads undefined) but throws on every other trap. */
const hostileDataProxy = () =>
  new Proxy(
    {},
    {
      get: (_t, key) => {
        if (key === 'then') return undefined;
        throw new Error('trap get');
      },
      has: trap('has'),
      ownKeys: trap('ownKeys'),
      getOwnPropertyDescriptor: trap('getOwnPropertyDescriptor'),
      getPrototypeOf: trap('getPrototypeOf'),
    },
  );

function deepArray(): unknown {
  let v: unknown = [];
  for (let i = 0; i < 200_000; i++) v = [v];
  return v;
}

/** Each case: the runner, and what the stored step error's message must say. */
const UNSERIALIZABLE: Array<[string, () => unknown, RegExp]> = [
  ['throws an error with a throwing getter', () => { throw errorWithThrowingGetter(); }, /^getter error$/],
  ['throws an error that is its own cause', () => { throw selfCause(); }, /^self cause$/],
  ['throws errors that are each other\'s cause', () => { throw mutualCause(); }, /^mutual a$/],
  ['throws an error with a 100,000-deep cause chain', () => { throw deepCause(); }, /^cause 99999$/],
  ['returns a Proxy whose traps all throw', () => hostileProxy(), /trap/],
  ['resolves to a Proxy whose traps all throw', async () => hostileProxy(), /trap/],
  ['returns a non-thenable Proxy whose traps throw', () => hostileDataProxy(), /output.*trap|trap/],
  ['resolves to a non-thenable Proxy whose traps throw', async () => hostileDataProxy(), /output.*trap|trap/],
  ['returns an array nested 200,000 deep', () => deepArray(), /output: nested too deeply to store/],
];

const cases6 = DURABLE.flatMap((durability) => (['dag', 'machine'] as const).flatMap((kind) => UNSERIALIZABLE.map(([label, fn, message]) => [durability, kind, label, fn, message] as const)));

describe('an error or output that cannot be serialized fails the step in a durable run', () => {
  test.each(cases6)('%s %s: a runner that %s', async (durability, kind, _label, fn, message) => {
    const engine = open({ durability });
    engine.register({ bad: fn as () => unknown });
    const def: any =
      kind === 'dag'
        ? { name: 'bad-dag', nodes: { a: { runner: 'bad' } } }
        : { name: 'bad-machine', initial: 'a', nodes: { a: { runner: 'bad', transition: 'b' }, b: { final: true } } };
    let run!: { runId: string; finished: Promise<unknown> };
    expect(() => (run = engine.start(def)), 'engine.start() must not throw what the runner returned').not.toThrow();
    track(run as any);
    // finished settles (it fails), it does not hang.
    const outcome = await settled(run.finished);
    expect(outcome.ok ? '' : String(outcome.error?.message), 'run.finished must settle, not hang').not.toMatch(/did not settle/);
    expect(outcome.ok, 'the run must fail').toBe(false);
    expect((outcome as { error: unknown }).error).toBeInstanceOf(Error);
    engine.flush();
    const row = engine.run(run.runId)!;
    expect(row.status, 'the stored run must not be left running').toBe('error');
    const steps = engine.steps(run.runId);
    expect(steps.map((s) => [s.node, s.status])).toEqual([['a', 'error']]);
    expect((steps[0]!.error as any)?.message).toMatch(message);
    expect((row.error as any)?.message).toMatch(message);
  });
});

describe('in memory, a runner returning a Proxy whose traps throw neither escapes nor hangs its run', () => {
  // In memory nothing is serialized: a Proxy that is not a thenable may well be the output. One
  // whose `then` throws fails its step, as it would as a promise's resolution. Either way the
  // run settles, and no call of the API throws the trap's error.
  test.each([
    ['DagRunner', 'all traps', hostileProxy],
    ['DagRunner', 'all but then', hostileDataProxy],
    ['StateMachineRunner', 'all traps', hostileProxy],
    ['StateMachineRunner', 'all but then', hostileDataProxy],
  ] as const)('%s, a Proxy throwing on %s', async (how, _label, make) => {
    const r =
      how === 'DagRunner'
        ? new DagRunner({ dag: { name: 'p', nodes: { a: { run: () => make() } } }, input: null })
        : new StateMachineRunner({ config: { name: 'p', initial: 'a', nodes: { a: { run: () => make(), transition: 'b' }, b: { final: true } } }, input: null });
    let started: unknown = 'not started';
    expect(() => {
      r.run().then(
        () => (started = 'ok'),
        (e) => (started = e),
      );
    }, 'run() must not throw the trap error').not.toThrow();
    const outcome = await settled(r.finished);
    expect(outcome.ok ? '' : String(outcome.error?.message), 'finished must settle').not.toMatch(/did not settle/);
    if (how === 'StateMachineRunner') expect(started, 'run() must not reject with the trap error').toBe('ok');
  });
});

// ---- 7. a durable machine that ends in its error state ----

describe('a durable machine that ends in its error state', () => {
  test.each(DURABLE)('%s: stores the error state\'s output as output and the error that led there as error', async (durability) => {
    const engine = open({ durability });
    engine.register({
      boom: () => {
        const e = new TypeError('kaput') as TypeError & { code?: string };
        e.code = 'E_KAPUT';
        throw e;
      },
      recover: ({ input }: any) => ({ recovered: input.message, name: input.name }),
    });
    const run = engine.start({
      name: 'fails',
      initial: 'a',
      errorState: 'failed',
      nodes: { a: { runner: 'boom', transition: 'b' }, b: { final: true }, failed: { runner: 'recover', final: true } },
    }) as StateMachineRunner;
    expect(await settled(run.finished)).toEqual({ ok: true, value: { recovered: 'kaput', name: 'TypeError' } });
    expect(run.machineStatus).toBe('error');
    engine.flush();
    const row = engine.run(run.runId)!;
    expect(row.status).toBe('error');
    expect(row.output).toEqual({ recovered: 'kaput', name: 'TypeError' });
    expect(row.error).toMatchObject({ name: 'TypeError', message: 'kaput', code: 'E_KAPUT' });
    expect(engine.steps(run.runId).map((s) => [s.node, s.status, (s.error as any)?.message ?? null])).toEqual([
      ['a', 'error', 'kaput'],
      ['failed', 'finished', null],
    ]);
  });

  test.each(DURABLE)('%s: an error state without a runner passes the error on: it is both output and error', async (durability) => {
    const engine = open({ durability });
    engine.register({ boom: () => { throw new RangeError('out of range'); } });
    const run = engine.start({ name: 'fails-plain', initial: 'a', errorState: 'failed', nodes: { a: { runner: 'boom', transition: 'b' }, b: { final: true }, failed: { final: true } } });
    const outcome = await settled(run.finished);
    expect(outcome.ok).toBe(true);
    expect((outcome as { value: unknown }).value).toBeInstanceOf(RangeError);
    engine.flush();
    const row = engine.run(run.runId)!;
    expect(row.status).toBe('error');
    expect(row.output).toMatchObject({ name: 'RangeError', message: 'out of range' });
    expect(row.error).toMatchObject({ name: 'RangeError', message: 'out of range' });
  });

  test.each(DURABLE)('%s: a maxSteps breach that lands in the error state stores the breach as the error', async (durability) => {
    const engine = open({ durability });
    engine.register({ loop: () => 1, recover: ({ input }: any) => `recovered: ${input.message}` });
    const run = engine.start({ name: 'ms', initial: 's', maxSteps: 3, errorState: 'failed', nodes: { s: { runner: 'loop', transition: 's' }, failed: { runner: 'recover', final: true } } });
    expect(await settled(run.finished)).toEqual({ ok: true, value: 'recovered: Machine ms exceeded maxSteps (3) at state s' });
    engine.flush();
    expect(engine.run(run.runId)).toMatchObject({
      status: 'error',
      output: 'recovered: Machine ms exceeded maxSteps (3) at state s',
      error: { message: 'Machine ms exceeded maxSteps (3) at state s' },
    });
  });
});

// ---- 8. prune() of a run live in this process ----

const APPROVAL = {
  name: 'approval',
  initial: 'draft',
  nodes: { draft: { runner: 'draft', transition: 'review' }, review: { transition: { approve: 'publish' } }, publish: { runner: 'publish', final: true } },
};

function pruneEngine(durability: (typeof DURABLE)[number]): Engine {
  const engine = open({ durability });
  engine.register({ draft: () => 'draft', publish: ({ input }: any) => input, hang: () => new Promise(() => {}) });
  return engine;
}

/** What `engine.send` does for a run: `{ id }` or the error it throws. */
function sendTo(engine: Engine, runId: string): { id?: string; error?: any } {
  try {
    return { id: engine.send(runId, { type: 'approve' }) };
  } catch (error) {
    return { error };
  }
}

function expectNoRun(result: { id?: string; error?: any }, runId: string) {
  expect(result.error, `send returned ${result.id} for a pruned run`).toBeInstanceOf(Error);
  expect(result.error.message).toMatch(/^No run/);
  expect(result.error.message).toContain(runId);
  expect(result.error.message).not.toMatch(/FOREIGN KEY|constraint/i);
}

describe('prune() that deletes a run live in this process ends it cleanly', () => {
  test.each(DURABLE)('%s: a waiting machine: finished rejects (cancelled); a later send fails with "No run"', async (durability) => {
    const engine = pruneEngine(durability);
    const run = engine.start(APPROVAL, { input: 'x' }) as StateMachineRunner;
    await run.run();
    engine.flush();
    expect(engine.run(run.runId)?.status).toBe('waitingForEvent');
    expect(engine.prune({ olderThan: Date.now() + 60_000, status: 'waitingForEvent' })).toBe(1);
    const outcome = await settled(run.finished);
    expect((outcome as { error: unknown }).error).toBeInstanceOf(CancelledError);
    expect(run.machineStatus).toBe('cancelled');
    expectNoRun(sendTo(engine, run.runId), run.runId);
    expect(() => engine.flush()).not.toThrow();
    expect(engine.run(run.runId)).toBeUndefined();
    // The engine goes on: a new run is stored as usual.
    const next = engine.start(APPROVAL, { input: 'y' }) as StateMachineRunner;
    await next.run();
    engine.send(next.runId, { type: 'approve' });
    expect(await settled(next.finished)).toEqual({ ok: true, value: 'draft' });
  });

  test.each(DURABLE)('%s: a running machine and a running DAG: finished rejects (cancelled), nothing is stored again', async (durability) => {
    const engine = pruneEngine(durability);
    const machine = engine.start({ name: 'hang-m', initial: 'a', nodes: { a: { runner: 'hang', transition: 'b' }, b: { final: true } } });
    const dag = engine.start({ name: 'hang-d', nodes: { a: { runner: 'hang' } } });
    engine.flush();
    expect(engine.prune({ olderThan: Date.now() + 60_000, status: 'running' })).toBe(2);
    for (const run of [machine, dag]) {
      const outcome = await settled(run.finished);
      expect((outcome as { error: unknown }).error).toBeInstanceOf(CancelledError);
    }
    expectNoRun(sendTo(engine, machine.runId), machine.runId);
    engine.flush();
    expect(engine.run(machine.runId)).toBeUndefined();
    expect(engine.run(dag.runId)).toBeUndefined();
    expect(engine.steps(machine.runId)).toEqual([]);
  });

  test.each(DURABLE)('%s: a send right after prune() (before finished settled) fails with "No run" too', async (durability) => {
    const engine = pruneEngine(durability);
    const run = engine.start(APPROVAL, { input: 'x' }) as StateMachineRunner;
    await run.run();
    engine.flush();
    expect(engine.prune({ olderThan: Date.now() + 60_000, status: 'waitingForEvent' })).toBe(1);
    const result = sendTo(engine, run.runId);
    await settled(run.finished);
    expectNoRun(result, run.runId);
  });

  test.each(DURABLE)('%s: pruned by another Engine on the same file: send fails with "No run" (not a foreign-key error), and the run ends', async (durability) => {
    const db = tempDb();
    const owner = open({ db, durability, pollInterval: 20 });
    owner.register({ draft: () => 'draft', publish: ({ input }: any) => input });
    const run = track(owner.start(APPROVAL, { input: 'x' }) as StateMachineRunner);
    await run.run();
    owner.flush();
    const janitor = open({ db });
    expect(janitor.prune({ olderThan: Date.now() + 60_000, status: 'waitingForEvent' })).toBe(1);
    expectNoRun(sendTo(owner, run.runId), run.runId);
    const outcome = await settled(run.finished);
    expect((outcome as { error: unknown }).error).toBeInstanceOf(CancelledError);
  });
});

// ---- 10. a state timeout's message, live and stored ----

describe("a state timeout's error has the same message live and stored", () => {
  const timed = (after: number | string, run?: () => unknown): StateMachine<any, any> => ({
    name: 'to',
    initial: 'a',
    nodes: {
      a: { ...(run ? { run } : {}), timeout: { after, state: 't' }, transition: run ? 'b' : { go: 'b' } },
      b: { final: true },
      t: { final: true, run: ({ input }) => ({ name: input.name, message: input.message, isTimeoutError: input instanceof TimeoutError }) },
    },
  });

  test.each([
    [40, 'State a timed out after 40ms'],
    ['40ms', 'State a timed out after 40ms'],
    ['5s', 'State a timed out after 5s'],
  ] as const)('live, after %j: the timeout state gets a TimeoutError "%s" (waiting and running)', async (after, message) => {
    for (const run of [undefined, () => new Promise(() => {})]) {
      const clock = new TestClock();
      const r = new StateMachineRunner({ clock, config: timed(after, run), input: null });
      void r.run();
      await clock.advance('1m');
      expect(await settled(r.finished)).toEqual({ ok: true, value: { name: 'TimeoutError', message, isTimeoutError: true } });
    }
  });

  const stored = DURABLE.flatMap((d) =>
    [
      [40, 'State a timed out after 40ms'],
      ['5s', 'State a timed out after 5s'],
    ].map(([after, message]) => [d, after, message] as const),
  );

  test.each(stored)('%s, after %j: the stored input of the timeout state is the same "%s"', async (durability, after, message) => {
    const clock = new TestClock();
    const engine = open({ durability, clock });
    engine.register({ look: ({ input }: any) => ({ name: input.name, message: input.message, isTimeoutError: input instanceof TimeoutError }), hang: () => new Promise(() => {}) });
    for (const waiting of [true, false]) {
      const run = engine.start({
        name: waiting ? 'to-wait' : 'to-run',
        initial: 'a',
        nodes: {
          a: waiting ? { timeout: { after, state: 't' }, transition: { go: 'b' } } : { runner: 'hang', timeout: { after, state: 't' }, transition: 'b' },
          b: { final: true },
          t: { runner: 'look', final: true },
        },
      });
      await clock.advance('1m');
      expect(await settled(run.finished)).toEqual({ ok: true, value: { name: 'TimeoutError', message, isTimeoutError: true } });
      engine.flush();
      const t = engine.steps(run.runId).find((s) => s.node === 't')!;
      expect(t.input).toMatchObject({ name: 'TimeoutError', message });
      expect(engine.transitions(run.runId).map((tr) => [tr.from, tr.to])).toEqual([
        [null, 'a'],
        ['a', 't'],
      ]);
    }
  });
});

// ---- TestClock: timers of several runs fire in due order ----

describe('TestClock fires the timers of several runs in due order', () => {
  test('delays and timeouts of in-memory and durable runs, and a timer armed by one that fired', async () => {
    const clock = new TestClock();
    const t0 = clock.now();
    const fired: Array<[string, number]> = [];
    const note = (name: string) => () => {
      fired.push([name, clock.now() - t0]);
      return name;
    };
    const delayed = (name: string, delay: string | number): StateMachine<any, any> => ({
      name,
      initial: 'a',
      nodes: { a: { transition: { '': { state: 'z', delay } } }, z: { final: true, run: note(name) } },
    });
    const runs: Array<{ finished: Promise<unknown>; run(): Promise<unknown> }> = [];
    runs.push(new StateMachineRunner({ clock, config: delayed('three-hours', '3h'), input: null }));
    runs.push(new StateMachineRunner({ clock, config: { name: 'timeout-90m', initial: 'a', nodes: { a: { timeout: { after: '90m', state: 'z' }, transition: { go: 'b' } }, b: { final: true }, z: { final: true, run: note('timeout-90m') } } }, input: null }));
    // Fires at 1h, then sleeps 45m more: its second timer (1h45m) is due before the 2h one.
    runs.push(
      new StateMachineRunner({
        clock,
        config: {
          name: 'chain',
          initial: 'a',
          nodes: {
            a: { transition: { '': { state: 'mid', delay: '1h' } } },
            mid: { run: note('chain-1h'), transition: { '': { state: 'z', delay: '45m' } } },
            z: { final: true, run: note('chain-1h45m') },
          },
        },
        input: null,
      }),
    );
    runs.push(new StateMachineRunner({ clock, config: delayed('ms-delay', 7_200_000), input: null }));
    const engine = open({ durability: 'sync', clock });
    engine.register({ note: ({ args }: any) => note(args)() });
    const durable = engine.start({ name: 'durable-150m', initial: 'a', nodes: { a: { transition: { '': { state: 'z', delay: '150m' } } }, z: { runner: 'note', args: 'durable-150m', final: true } } });
    for (const r of runs) await r.run();
    expect(fired).toEqual([]);
    expect(clock.next()).toBe(t0 + 3_600_000);

    await clock.advance('1d');
    expect(fired).toEqual([
      ['chain-1h', 3_600_000],
      ['timeout-90m', 5_400_000],
      ['chain-1h45m', 6_300_000],
      ['ms-delay', 7_200_000],
      ['durable-150m', 9_000_000],
      ['three-hours', 10_800_000],
    ]);
    for (const r of [...runs, durable]) expect((await settled(r.finished)).ok).toBe(true);
    expect(clock.now()).toBe(t0 + 86_400_000);
    expect(clock.next()).toBeUndefined();
  });

  test('advancing in steps fires only what is due by each step', async () => {
    const clock = new TestClock();
    const fired: string[] = [];
    const make = (name: string, delay: string) =>
      new StateMachineRunner({ clock, config: { name, initial: 'a', nodes: { a: { transition: { '': { state: 'z', delay } } }, z: { final: true, run: () => void fired.push(name) } } }, input: null });
    const runs = [make('30d', '30d'), make('1d', '1d'), make('29d', '29d')];
    for (const r of runs) await r.run();
    await clock.advance('1d');
    expect(fired).toEqual(['1d']);
    await clock.advance('27d');
    expect(fired).toEqual(['1d']);
    await clock.advance('1d');
    expect(fired).toEqual(['1d', '29d']);
    expect(runs[0]!.machineStatus).toBe('sleeping');
    await clock.advance('1d');
    expect(fired).toEqual(['1d', '29d', '30d']);
  });
});
