import { describe, test, expect, vi } from 'vitest';
import { StateMachineRunner, LocalSemaphore } from 'ramus';
import {
  deferred,
  settle,
  sleep,
  within,
  waitUntil,
  collectEvents,
  promiseState,
  statusLog,
  waitForStatus,
  concurrencyTracker,
} from './helpers.mjs';

/** a -(string)-> b -('')-> c (final). input 1 -> a: 2 -> b: 20 -> c: 'out:20'. */
const linear = (log = []) => ({
  name: 'linear',
  initial: 'a',
  nodes: {
    a: {
      run: ({ input }) => {
        log.push('a');
        return input + 1;
      },
      transition: 'b',
    },
    b: {
      run: async ({ input }) => {
        await sleep(1);
        log.push('b');
        return input * 10;
      },
      transition: { '': 'c' },
    },
    c: {
      final: true,
      run: ({ input }) => {
        log.push('c');
        return `out:${input}`;
      },
    },
  },
});

describe('run()', () => {
  test('runs every state in order and ends final; finished resolves with the final output', async () => {
    const log = [];
    const r = new StateMachineRunner({ config: linear(log), input: 1 });
    expect(await within(r.run(), 3000, 'run()')).toBeUndefined();
    expect(log).toEqual(['a', 'b', 'c']);
    expect(r.state).toBe('c');
    expect(r.machineStatus).toBe('final');
    expect(r.canStep()).toBe(false);
    expect(r.output).toBe('out:20');
    expect(await within(r.finished, 3000, 'finished')).toBe('out:20');
  });

  test('finished read before run() resolves with the final output', async () => {
    const r = new StateMachineRunner({ config: linear(), input: 2 });
    const f = r.finished;
    expect(f).toBeInstanceOf(Promise);
    expect(await promiseState(f)).toBe('pending');
    r.run();
    expect(await within(f, 3000, 'finished')).toBe('out:30');
  });

  test('finished read after the machine finished still resolves', async () => {
    const r = new StateMachineRunner({ config: linear(), input: 0 });
    await r.run();
    await settle();
    expect(await within(r.finished, 3000, 'finished (late)')).toBe('out:10');
  });

  test("'finish' listener is called once with the output", async () => {
    const r = new StateMachineRunner({ config: linear(), input: 1 });
    const onFinish = vi.fn();
    r.on('finish', onFinish);
    await r.run();
    await r.finished;
    await settle();
    expect(onFinish).toHaveBeenCalledTimes(1);
    expect(onFinish).toHaveBeenCalledWith('out:20');
  });

  test('a final state runs once: calling run() again does not run anything', async () => {
    const log = [];
    const r = new StateMachineRunner({ config: linear(log), input: 1 });
    await r.run();
    await within(r.run(), 3000, 'second run()');
    await settle();
    expect(log).toEqual(['a', 'b', 'c']);
    expect(r.machineStatus).toBe('final');
  });

  test('a machine whose initial state is final without run finishes with the root input', async () => {
    const r = new StateMachineRunner({ config: { name: 'f', initial: 'done', nodes: { done: { final: true } } }, input: { x: 1 } });
    await r.run();
    expect(r.machineStatus).toBe('final');
    expect(await within(r.finished, 3000, 'finished')).toEqual({ x: 1 });
  });

  test('options.initial starts elsewhere with the root input', async () => {
    const log = [];
    const r = new StateMachineRunner({ config: linear(log), input: 7, initial: 'b' });
    await r.run();
    expect(log).toEqual(['b', 'c']);
    expect(await r.finished).toBe('out:70');
  });

  test('run() resolves while the machine waits for an event', async () => {
    const r = new StateMachineRunner({
      config: { name: 'w', initial: 'a', nodes: { a: { run: () => 'x', transition: { go: 'b' } }, b: { final: true } } },
      input: null,
    });
    await within(r.run(), 3000, 'run() should rest in waitingForEvent');
    expect(r.machineStatus).toBe('waitingForEvent');
    expect(r.state).toBe('a');
    expect(r.canStep()).toBe(false);
    expect(await promiseState(r.finished)).toBe('pending');
  });
});

describe('step() and canStep()', () => {
  test('step() runs one state and takes its transition; the machine waits for the next step()', async () => {
    const log = [];
    const r = new StateMachineRunner({ config: linear(log), input: 1 });
    expect(r.machineStatus).toBe('initial');
    expect(r.canStep()).toBe(true);
    expect(r.currentState.state).toBe('a');
    expect(r.currentState.input).toBe(1);

    expect(await r.step()).toBe(true);
    expect(log).toEqual(['a']);
    expect(r.state).toBe('b');
    expect(r.machineStatus).toBe('ready');
    expect(r.canStep()).toBe(true);
    expect(r.currentState.state).toBe('b');
    expect(r.currentState.previousState).toBe('a');
    expect(r.currentState.input).toBe(2);
    expect(r.output).toBe(2);
    await settle();
    expect(log).toEqual(['a']);

    expect(await r.step()).toBe(true);
    expect(log.slice(0, 2)).toEqual(['a', 'b']);
    expect(r.state).toBe('c');
    expect(r.currentState.previousState).toBe('b');
    expect(r.currentState.input).toBe(20);

    for (let i = 0; i < 3 && r.canStep(); i++) await r.step();
    expect(r.canStep()).toBe(false);
    expect(log).toEqual(['a', 'b', 'c']);
    expect(r.machineStatus).toBe('final');
    expect(await within(r.finished, 3000, 'finished')).toBe('out:20');
  });

  test('step() resolves false when no transition fires; status waitingForEvent and canStep() false', async () => {
    const r = new StateMachineRunner({
      config: { name: 'w', initial: 'a', nodes: { a: { run: () => 'A', transition: { go: 'b' } }, b: { final: true } } },
      input: null,
    });
    expect(await r.step()).toBe(false);
    expect(r.state).toBe('a');
    expect(r.machineStatus).toBe('waitingForEvent');
    expect(r.canStep()).toBe(false);
    expect(r.currentState.output).toBe('A');
    expect(r.output).toBe('A');
  });

  test('canStep() is false while a state runs', async () => {
    const gate = deferred();
    const r = new StateMachineRunner({
      config: {
        name: 'g',
        initial: 'a',
        nodes: { a: { run: () => gate.promise, transition: 'b' }, b: { run: () => 'b', transition: 'c' }, c: { final: true } },
      },
      input: null,
    });
    expect(r.canStep()).toBe(true);
    const p = r.step();
    await waitForStatus(r, 'running');
    expect(r.canStep()).toBe(false);
    gate.resolve('done');
    expect(await p).toBe(true);
    expect(r.canStep()).toBe(true);
  });

  test('a state with neither run nor transitions that is not final waits for events', async () => {
    const r = new StateMachineRunner({
      config: { name: 'dead', initial: 'a', nodes: { a: { run: () => 1, transition: 'b' }, b: {} } },
      input: null,
    });
    await r.run();
    expect(r.state).toBe('b');
    expect(r.machineStatus).toBe('waitingForEvent');
    expect(r.canStep()).toBe(false);
  });
});

describe('status sequence', () => {
  test("'state_machine:state' reports running for each state, then final", async () => {
    const r = new StateMachineRunner({ config: linear(), input: 1 });
    const log = statusLog(r);
    await r.run();
    await r.finished;
    await settle();
    const statuses = log.raw.map((s) => s.machineState);
    expect(statuses.filter((s) => s !== 'ready')).toEqual(['running', 'running', 'running', 'final']);
    // these are changes: never the same status for the same state twice in a row
    for (let i = 1; i < log.raw.length; i++) {
      expect(log.raw[i].machineState === log.raw[i - 1].machineState && log.raw[i].state === log.raw[i - 1].state).toBe(false);
    }
  });

  test("'state_machine:state' payloads name the current state", async () => {
    const r = new StateMachineRunner({ config: linear(), input: 1 });
    const log = statusLog(r);
    await r.run();
    await r.finished;
    await settle();
    expect(log.seq.filter((s) => !s.startsWith('ready@'))).toEqual(['running@a', 'running@b', 'running@c', 'final@c']);
    for (const s of log.seq.filter((x) => x.startsWith('ready@'))) expect(['ready@b', 'ready@c']).toContain(s);
  });

  test("state_machine:status events carry the same sequence as the 'state_machine:state' listener", async () => {
    const r = new StateMachineRunner({ config: linear(), input: 1 });
    const log = statusLog(r);
    const events = collectEvents(r);
    await r.run();
    await settle();
    const statuses = events.filter((e) => e.type === 'state_machine:status').map((e) => e.data.status);
    expect(statuses.length).toBeGreaterThanOrEqual(4);
    expect(statuses).toEqual(log.raw.map((s) => s.machineState));
    expect(statuses.at(-1)).toBe('final');
  });

  test('waiting for an event: running then waitingForEvent; the event moves it on', async () => {
    const r = new StateMachineRunner({
      config: {
        name: 'w',
        initial: 'a',
        nodes: { a: { run: () => 1, transition: { go: 'b' } }, b: { run: () => 2, final: true } },
      },
      input: null,
    });
    const log = statusLog(r);
    await r.run();
    await settle();
    expect(log.raw.map((s) => s.machineState)).toEqual(['running', 'waitingForEvent']);
    r.send({ type: 'go' });
    await within(r.finished, 3000, 'finished after event');
    await settle();
    expect(log.raw.slice(2).map((s) => s.machineState).filter((s) => s !== 'ready')).toEqual(['running', 'final']);
    expect(r.state).toBe('b');
  });

  test('pendingSemaphore while waiting for a slot, then running', async () => {
    const sem = new LocalSemaphore({ k: 0 });
    const ran = vi.fn(() => 'ran');
    const r = new StateMachineRunner({
      config: { name: 's', initial: 'a', nodes: { a: { semaphoreKey: 'k', run: ran, transition: 'b' }, b: { final: true } } },
      input: null,
      semaphores: [sem],
    });
    const log = statusLog(r);
    const p = r.run();
    await waitForStatus(r, 'pendingSemaphore', 'a');
    expect(r.canStep()).toBe(false);
    await settle();
    expect(ran).not.toHaveBeenCalled();
    sem.setLimit('k', 1);
    await within(p, 3000, 'run() after the slot is free');
    expect(ran).toHaveBeenCalledTimes(1);
    expect(await r.finished).toBe('ran');
    await settle();
    expect(log.raw.slice(0, 2).map((s) => s.machineState)).toEqual(['pendingSemaphore', 'running']);
    expect(sem.current('k')).toBe(0);
  });

  test('a semaphoreKey without semaphores never goes pendingSemaphore', async () => {
    const r = new StateMachineRunner({
      config: { name: 's', initial: 'a', nodes: { a: { semaphoreKey: 'k', run: () => 1, transition: 'b' }, b: { final: true } } },
      input: null,
    });
    const log = statusLog(r);
    await r.run();
    await settle();
    expect(log.seq.some((s) => s.startsWith('pendingSemaphore'))).toBe(false);
    expect(r.machineStatus).toBe('final');
  });

  test('a failing state releases its semaphore slot', async () => {
    const sem = new LocalSemaphore({ k: 1 });
    const r = new StateMachineRunner({
      config: {
        name: 's',
        initial: 'a',
        nodes: {
          a: {
            semaphoreKey: 'k',
            run: async () => {
              await sleep(2);
              throw new Error('fails holding a slot');
            },
            transition: 'b',
          },
          b: { final: true },
        },
      },
      input: null,
      semaphores: [sem],
    });
    const failed = r.finished.catch((e) => e);
    await r.run();
    expect((await failed).message).toBe('fails holding a slot');
    expect(r.machineStatus).toBe('error');
    expect(sem.current('k')).toBe(0);
  });

  test('a state with semaphoreKey holds a slot of every semaphore while it runs', async () => {
    const global = new LocalSemaphore({ k: 5 });
    const local = new LocalSemaphore({ k: 5 });
    let during;
    const r = new StateMachineRunner({
      config: {
        name: 's',
        initial: 'a',
        nodes: {
          a: { semaphoreKey: 'k', run: () => (during = [global.current('k'), local.current('k')]), transition: 'b' },
          b: { final: true, run: () => [global.current('k'), local.current('k')] },
        },
      },
      input: null,
      semaphores: [global, local],
    });
    await r.run();
    expect(during).toEqual([1, 1]);
    expect(await r.finished).toEqual([0, 0]);
  });

  test('machines sharing a semaphore hold a slot while a state runs', async () => {
    const sem = new LocalSemaphore({ llm: 1 });
    const t = concurrencyTracker();
    const config = {
      name: 'shared',
      initial: 'a',
      nodes: {
        a: {
          semaphoreKey: 'llm',
          run: async () => {
            t.enter();
            await sleep(8);
            t.leave();
            return 1;
          },
          transition: 'b',
        },
        b: { final: true },
      },
    };
    const runners = Array.from({ length: 4 }, () => new StateMachineRunner({ config, input: null, semaphores: [sem] }));
    await Promise.all(runners.map((r) => r.run()));
    await Promise.all(runners.map((r) => r.finished));
    expect(t.max).toBe(1);
    expect(sem.current('llm')).toBe(0);
  });
});

describe('inputs, outputs and run arguments', () => {
  test("a state's output is the next state's input; the first input is the root input", async () => {
    const inputs = {};
    const r = new StateMachineRunner({
      config: {
        name: 'io',
        initial: 'a',
        nodes: {
          a: { run: ({ input }) => ((inputs.a = input), { n: input.n + 1 }), transition: 'b' },
          b: { run: ({ input }) => ((inputs.b = input), [input.n, 'b']), transition: 'c' },
          c: { final: true, run: ({ input }) => ((inputs.c = input), input.join('-')) },
        },
      },
      input: { n: 1 },
    });
    await r.run();
    expect(inputs).toEqual({ a: { n: 1 }, b: { n: 2 }, c: [2, 'b'] });
    expect(await r.finished).toBe('2-b');
  });

  test('a state without run passes its input through as its output', async () => {
    const events = [];
    const r = new StateMachineRunner({
      config: {
        name: 'pass',
        initial: 'a',
        nodes: {
          a: { run: () => ({ v: 5 }), transition: 'p' },
          p: { transition: 'q' },
          q: { transition: { '': 'c' } },
          c: { final: true, run: ({ input }) => ({ got: input }) },
        },
      },
      input: null,
    });
    r.on('event', (e) => events.push(e));
    await r.run();
    expect(await r.finished).toEqual({ got: { v: 5 } });
    await settle();
    const tq = events.find((e) => e.type === 'state_machine:transition' && e.data.from === 'q');
    expect(tq.data.input).toEqual({ v: 5 });
    expect(tq.data.output).toEqual({ v: 5 });
  });

  test('a final state without run finishes with its input', async () => {
    const r = new StateMachineRunner({
      config: { name: 'f', initial: 'a', nodes: { a: { run: ({ input }) => input * 3, transition: 'end' }, end: { final: true } } },
      input: 4,
    });
    await r.run();
    expect(await r.finished).toBe(12);
    expect(r.output).toBe(12);
  });

  test('undefined outputs round-trip as undefined', async () => {
    const seen = [];
    const r = new StateMachineRunner({
      config: {
        name: 'u',
        initial: 'a',
        nodes: {
          a: { run: () => undefined, transition: 'b' },
          b: { final: true, run: ({ input }) => (seen.push(input), undefined) },
        },
      },
      input: 'root',
    });
    await r.run();
    expect(seen).toHaveLength(1);
    expect(seen[0]).toBeUndefined();
    expect(await r.finished).toBeUndefined();
  });

  test('run args: context, input, rootInput, tools, previousState, event and the helper functions', async () => {
    const seen = {};
    const tools = { double: (x) => x * 2 };
    const r = new StateMachineRunner({
      config: {
        name: 'args',
        initial: 'a',
        context: () => ({ n: 1 }),
        nodes: {
          a: { run: (args) => ((seen.a = { ...args }), args.tools.double(args.input)), transition: 'b' },
          b: { run: (args) => ((seen.b = { ...args }), 'b'), final: true },
        },
      },
      input: 21,
      tools,
    });
    await r.run();
    expect(seen.a.input).toBe(21);
    expect(seen.a.rootInput).toBe(21);
    expect(seen.a.context).toEqual({ n: 1 });
    expect(seen.a.tools.double).toBe(tools.double);
    expect(seen.a.previousState ?? undefined).toBeUndefined();
    expect(seen.a.event ?? undefined).toBeUndefined();
    for (const fn of ['isCancelled', 'exitIfCancelled', 'emit']) expect(typeof seen.a[fn], fn).toBe('function');
    expect(seen.b.input).toBe(42);
    expect(seen.b.rootInput).toBe(21);
    expect(seen.b.previousState).toBe('a');
    expect(seen.b.event ?? undefined).toBeUndefined();
  });

  test('previousState and event are seen by a state entered through an event', async () => {
    const seen = {};
    const r = new StateMachineRunner({
      config: {
        name: 'ev',
        initial: 'a',
        nodes: {
          a: { run: () => 'A', transition: { go: 'b' } },
          b: { run: ({ previousState, event, input }) => ((seen.b = { previousState, event, input }), 'B'), transition: 'c' },
          c: { final: true, run: ({ previousState, event }) => ((seen.c = { previousState, event }), 'C') },
        },
      },
      input: null,
    });
    await r.run();
    r.send({ type: 'go', data: { n: 1 } });
    expect(await within(r.finished, 3000, 'finished')).toBe('C');
    expect(seen.b).toEqual({ previousState: 'a', event: { type: 'go', data: { n: 1 } }, input: 'A' });
    expect(seen.c.previousState).toBe('b');
    expect(seen.c.event ?? undefined).toBeUndefined();
  });

  test('currentState exposes state, previousState, input, event and output', async () => {
    const r = new StateMachineRunner({
      config: {
        name: 'cs',
        initial: 'a',
        nodes: {
          a: { run: () => 'A-out', transition: { go: 'b' } },
          b: { run: ({ input }) => `${input}+B`, transition: { next: 'c' } },
          c: { final: true },
        },
      },
      input: 'root',
    });
    expect(r.currentState).toMatchObject({ state: 'a', input: 'root' });
    await r.step();
    expect(r.currentState).toMatchObject({ state: 'a', input: 'root', output: 'A-out' });
    r.send({ type: 'go', data: 'payload' });
    await waitUntil(() => r.state === 'b', 'transition to b');
    expect(r.currentState).toMatchObject({
      state: 'b',
      previousState: 'a',
      input: 'A-out',
      event: { type: 'go', data: 'payload' },
    });
    expect(r.currentState.output).toBeUndefined();
    await r.step();
    expect(r.currentState).toMatchObject({ state: 'b', output: 'A-out+B' });
    expect(r.output).toBe('A-out+B');
  });

  test('rootInput stays the root input in every state', async () => {
    const roots = [];
    const r = new StateMachineRunner({
      config: {
        name: 'root',
        initial: 'a',
        nodes: {
          a: { run: ({ rootInput }) => (roots.push(rootInput), 'x'), transition: 'b' },
          b: { run: ({ rootInput }) => (roots.push(rootInput), 'y'), transition: 'c' },
          c: { final: true, run: ({ rootInput }) => roots.push(rootInput) },
        },
      },
      input: { q: 'question' },
    });
    await r.run();
    expect(roots).toEqual([{ q: 'question' }, { q: 'question' }, { q: 'question' }]);
  });
});

describe('context', () => {
  const counting = () => ({
    name: 'ctx',
    initial: 'a',
    context: () => ({ count: 0, log: [] }),
    nodes: {
      a: {
        run: ({ context }) => {
          context.count += 1;
          context.log.push('a');
        },
        transition: { '': [{ state: 'a', condition: ({ context }) => context.count < 3 }, { state: 'b' }] },
      },
      b: { final: true, run: ({ context }) => ({ ...context }) },
    },
  });

  test('config.context() is the default; mutations are seen by later states and guards', async () => {
    const r = new StateMachineRunner({ config: counting(), input: null });
    expect(r.context).toEqual({ count: 0, log: [] });
    await r.run();
    expect(await r.finished).toEqual({ count: 3, log: ['a', 'a', 'a'] });
    expect(r.context).toEqual({ count: 3, log: ['a', 'a', 'a'] });
  });

  test('options.context overrides the default', async () => {
    const r = new StateMachineRunner({ config: counting(), input: null, context: { count: 2, log: ['given'] } });
    expect(r.context).toEqual({ count: 2, log: ['given'] });
    await r.run();
    expect(await r.finished).toEqual({ count: 3, log: ['given', 'a'] });
  });

  test('without config.context or options.context the context is {}', async () => {
    let seen;
    const r = new StateMachineRunner({
      config: { name: 'noctx', initial: 'a', nodes: { a: { final: true, run: ({ context }) => (seen = context) } } },
      input: null,
    });
    expect(r.context).toEqual({});
    await r.run();
    expect(seen).toEqual({});
  });

  test('two runners of the same config get separate contexts from config.context()', async () => {
    const r1 = new StateMachineRunner({ config: counting(), input: null });
    const r2 = new StateMachineRunner({ config: counting(), input: null, initial: 'b' });
    await r1.run();
    await r2.run();
    expect(r1.context.count).toBe(3);
    expect(r2.context).toEqual({ count: 0, log: [] });
  });
});
