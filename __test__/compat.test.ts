// Behaviour kept from the original TypeScript Ramus (@ramus/workflow), so that its users
// switch by changing an import: the shape of 'ramus:error', cancel() while a state runs,
// how a DAG run's name is composed, and the exports it had.
import { createRequire } from 'node:module';

import { describe, expect, test, vi } from 'vitest';

import {
  acquireSemaphores,
  CancelledError,
  DagRunner,
  Engine,
  LocalSemaphore,
  MESSAGE_FROM_USER,
  StateMachineRunner,
  type Dag,
  type MessageFromUserEvent,
  type MessageToUserEvent,
  type RamusErrorEvent,
  type RamusEvent,
  type Semaphore,
  type StateMachine,
} from 'ramus';

import { deferred, promiseState, settle } from './helpers.mjs';

describe("'ramus:error' receives { error, fatal }", () => {
  test('a DAG whose node throws: fatal, with the error finished rejects with', async () => {
    const boom = new Error('node failed');
    const runner = new DagRunner({
      dag: { name: 'fails', nodes: { a: { run: () => 1 }, b: { parents: ['a'], run: () => Promise.reject(boom) } } },
      input: null,
    });
    const seen: RamusErrorEvent[] = [];
    runner.on('ramus:error', (e: RamusErrorEvent) => seen.push(e));
    await expect(runner.run()).rejects.toBe(boom);
    expect(seen).toEqual([{ error: boom, fatal: true }]);
    expect(seen[0]!.error).toBe(boom);
  });

  test("the original's listener pattern, reject(e.error), rejects with the thrown error", async () => {
    const boom = new TypeError('bad input');
    const runner = new DagRunner({ dag: { name: 'one', nodes: { only: { run: () => { throw boom; } } } }, input: null });
    const viaListener = new Promise((_, reject) => runner.on('ramus:error', (e: RamusErrorEvent) => reject(e.error)));
    void runner.run().catch(() => {});
    await expect(viaListener).rejects.toBe(boom);
  });

  test('a machine state that fails into an error state: not fatal, and the machine goes on', async () => {
    const boom = new Error('state failed');
    const config: StateMachine<object, null> = {
      name: 'recovers',
      initial: 'work',
      errorState: 'recover',
      nodes: {
        work: { run: () => { throw boom; }, transition: 'done' },
        recover: { run: ({ input }) => `recovered from ${(input as Error).message}`, transition: 'done' },
        done: { final: true },
      },
    };
    const r = new StateMachineRunner({ config, input: null });
    const seen: RamusErrorEvent[] = [];
    r.on('ramus:error', (e: RamusErrorEvent) => seen.push(e));
    await r.run();
    expect(seen).toEqual([{ error: boom, fatal: false }]);
    expect(r.state).toBe('done');
    await expect(r.finished).resolves.toBe('recovered from state failed');
  });

  test('a machine state that fails without an error state: fatal, the machine halts there', async () => {
    const boom = new Error('no way out');
    const r = new StateMachineRunner({
      config: { name: 'halts', initial: 'a', nodes: { a: { run: () => { throw boom; }, transition: 'b' }, b: { final: true } } },
      input: null,
    });
    const seen: RamusErrorEvent[] = [];
    r.on('ramus:error', (e: RamusErrorEvent) => seen.push(e));
    const finished = r.finished.then(
      () => 'resolved',
      (err: unknown) => err,
    );
    await r.run();
    expect(seen).toEqual([{ error: boom, fatal: true }]);
    expect(await finished).toBe(boom);
    expect(r.state).toBe('a');
    expect(r.machineStatus).toBe('error');
  });
});

describe('cancel() while a state runs', () => {
  /** a -> b -> c; `a` awaits `gate` (after `during`, if given), and `b` must never run. */
  function machine(during?: (r: StateMachineRunner) => void) {
    const gate = deferred();
    const bRun = vi.fn(() => 'b ran');
    let returned = false;
    const r: StateMachineRunner = new StateMachineRunner({
      config: {
        name: 'cancellable',
        initial: 'a',
        nodes: {
          a: {
            run: async () => {
              during?.(r);
              await gate.promise;
              returned = true;
              return 'a out';
            },
            transition: 'b',
          },
          b: { run: bRun, transition: 'c' },
          c: { final: true },
        },
      },
      input: null,
    });
    return { r, gate, bRun, returned: () => returned };
  }

  test('from inside the state: run() resolves only after the state returned and moved on', async () => {
    const m = machine((r) => r.cancel());
    const finished = m.r.finished.then(
      () => 'resolved',
      (err: unknown) => err,
    );
    const running = m.r.run();
    await settle();
    // Cancelled, but `a` has not returned: run() waits for it.
    expect(m.r.machineStatus).toBe('cancelled');
    expect(await promiseState(running)).toBe('pending');
    m.gate.resolve(undefined);
    await running;
    expect(m.returned()).toBe(true);
    expect(m.r.state).toBe('b');
    expect(m.r.currentState.input).toBe('a out');
    expect(m.r.machineStatus).toBe('cancelled');
    expect(m.r.canStep()).toBe(false);
    await settle();
    expect(m.bRun).not.toHaveBeenCalled();
    expect(await finished).toBeInstanceOf(CancelledError);
  });

  test('from outside, during step(): step() resolves true once the state took its transition', async () => {
    const m = machine();
    const stepped = m.r.step();
    await settle();
    expect(m.r.machineStatus).toBe('running');
    m.r.cancel();
    void m.r.finished.catch(() => {});
    expect(await promiseState(stepped)).toBe('pending');
    m.gate.resolve(undefined);
    expect(await stepped).toBe(true);
    expect(m.r.state).toBe('b');
    expect(m.r.machineStatus).toBe('cancelled');
    await settle();
    expect(m.bRun).not.toHaveBeenCalled();
  });

  test('the transition taken is the one the output selects', async () => {
    let r: StateMachineRunner;
    r = new StateMachineRunner({
      config: {
        name: 'chooses',
        initial: 'ask',
        nodes: {
          ask: {
            run: () => {
              r.cancel();
              return 7;
            },
            transition: { '': [{ state: 'small', condition: ({ output }) => (output as number) < 5 }, { state: 'large' }] },
          },
          small: { final: true },
          large: { final: true },
        },
      },
      input: null,
    });
    void r.finished.catch(() => {});
    await r.run();
    expect(r.state).toBe('large');
    expect(r.machineStatus).toBe('cancelled');
  });
});

describe("a run's name", () => {
  const dag: Dag<object, null> = { name: 'd', nodes: { only: { run: () => 'out' } } };

  test("a DAG run's name option prefixes the DAG's name, in events too", async () => {
    const runner = new DagRunner({ dag, input: null, name: 'n' });
    expect(runner.name).toBe('n: d');
    const sources = new Set<string>();
    runner.on('event', (e: RamusEvent) => sources.add(e.source));
    await runner.run();
    expect([...sources]).toEqual(['n: d']);
  });

  test("without the option, the DAG's name", () => {
    expect(new DagRunner({ dag, input: null }).name).toBe('d');
  });

  test('a state machine takes the name option as its name', () => {
    const config: StateMachine<object, null> = { name: 'm', initial: 's', nodes: { s: { final: true } } };
    expect(new StateMachineRunner({ config, input: null, name: 'n' }).name).toBe('n');
    expect(new StateMachineRunner({ config, input: null }).name).toBe('m');
  });

  test('a run an Engine starts keeps the name it is stored and listed under', async () => {
    const engine = new Engine({ db: ':memory:' });
    try {
      const run = engine.start(dag, { input: null, name: 'n' });
      await run.finished;
      expect(run.name).toBe('n');
      expect(engine.runs({ name: 'n' }).map((r) => r.id)).toEqual([run.runId]);
      const unstored = engine.start(dag, { input: null, name: 'n', durability: 'off' });
      await unstored.finished;
      expect(unstored.name).toBe('n');
    } finally {
      await engine.close();
    }
  });
});

describe('LocalSemaphore.counts', () => {
  test('shows limit, held slots and waiting acquires for each key with a limit', async () => {
    const sem = new LocalSemaphore({ llm: 1, search: 3 });
    await sem.acquire('llm');
    const waiting = sem.acquire('llm');
    await sem.acquire('search');
    await sem.acquire('unlimited');
    expect(new Map(sem.counts)).toEqual(
      new Map([
        ['llm', { limit: 1, current: 1, pending: 1 }],
        ['search', { limit: 3, current: 1, pending: 0 }],
      ]),
    );
    sem.release('llm');
    await waiting;
    expect(sem.counts.get('llm')).toEqual({ limit: 1, current: 1, pending: 0 });
    sem.setLimit('fresh', 2);
    expect(sem.counts.get('fresh')).toEqual({ limit: 2, current: 0, pending: 0 });
  });

  test('a release beyond the acquires leaves current at 0', () => {
    const sem = new LocalSemaphore({ key: 1 });
    sem.release('key');
    expect(sem.counts.get('key')?.current).toBe(0);
  });
});

describe('acquireSemaphores', () => {
  test('holds a slot of the key in every semaphore until the releaser is called', async () => {
    const global = new LocalSemaphore({ llm: 2 });
    const perRun = new LocalSemaphore({ llm: 1 });
    const release = await acquireSemaphores([global, perRun], 'llm');
    expect([global.current('llm'), perRun.current('llm')]).toEqual([1, 1]);
    // perRun is full: a second claim waits for the first to be released.
    const second = acquireSemaphores([global, perRun], 'llm');
    expect(await promiseState(second)).toBe('pending');
    await release();
    const releaseSecond = await second;
    expect([global.current('llm'), perRun.current('llm')]).toEqual([1, 1]);
    await releaseSecond();
    expect([global.current('llm'), perRun.current('llm')]).toEqual([0, 0]);
  });

  test('when one semaphore fails to acquire, the slots taken elsewhere go back and the error is thrown', async () => {
    const local = new LocalSemaphore({ k: 1 });
    const refusing: Semaphore = { acquire: () => Promise.reject(new Error('quota service down')), release: () => {} };
    await expect(acquireSemaphores([local, refusing], 'k')).rejects.toThrow('quota service down');
    await settle();
    expect(local.current('k')).toBe(0);
  });

  test('a releaser waits for asynchronous releases', async () => {
    const released: string[] = [];
    const remote: Semaphore = {
      acquire: async () => {},
      release: async (key) => {
        await settle(1);
        released.push(key);
      },
    };
    const release = await acquireSemaphores([remote], 'api');
    await release();
    expect(released).toEqual(['api']);
  });
});

describe('chat events', () => {
  test('MESSAGE_FROM_USER is the event type a machine waits on for the user; runners emit chat messages', async () => {
    expect(MESSAGE_FROM_USER).toBe('chat');
    const r = new StateMachineRunner({
      config: {
        name: 'conversation',
        initial: 'greet',
        nodes: {
          greet: {
            run: ({ emit }) => emit('chat', { text: 'What is your name?' }),
            transition: { [MESSAGE_FROM_USER]: 'reply' },
          },
          reply: { run: ({ event }) => `Hello, ${(event?.data as MessageFromUserEvent).text}`, final: true },
        },
      },
      input: null,
    });
    const toUser: MessageToUserEvent[] = [];
    r.on('event', (e: RamusEvent) => {
      if (e.type === 'chat') toUser.push(e as MessageToUserEvent);
    });
    await r.run();
    expect(toUser.map((e) => e.data.text)).toEqual(['What is your name?']);
    expect(r.availableEvents()).toEqual([MESSAGE_FROM_USER]);
    r.send({ type: MESSAGE_FROM_USER, data: { text: 'Ada' } satisfies MessageFromUserEvent });
    await expect(r.finished).resolves.toBe('Hello, Ada');
  });

  test('the new exports load through require() as the same values', () => {
    const cjs = createRequire(import.meta.url)('ramus');
    expect(cjs.acquireSemaphores).toBe(acquireSemaphores);
    expect(cjs.MESSAGE_FROM_USER).toBe(MESSAGE_FROM_USER);
  });
});
