import { describe, test, expect, vi } from 'vitest';
import { StateMachineRunner, LocalSemaphore } from 'ramus';
import { deferred, settle, within, waitUntil, collectEvents, promiseState, waitForStatus, outcome } from './helpers.mjs';

/** Transitions taken, as 'from>to' strings, from collected events. */
const pathOf = (events) => events.filter((e) => e.type === 'state_machine:transition').map((e) => `${e.data.from}>${e.data.to}`);

/** A machine whose state `a` runs until `gate` resolves; other states from `nodes`. */
function gated(aTransition, nodes, gate, name = 'gated') {
  return {
    name,
    initial: 'a',
    nodes: {
      a: {
        run: async () => {
          await gate.promise;
          return 'A';
        },
        transition: aTransition,
      },
      ...nodes,
    },
  };
}

const fin = (s) => ({ final: true, run: ({ input }) => ({ at: s, input }) });

describe('send() while waiting for an event', () => {
  test('after run(), an event transitions now and the machine continues by itself (auto mode)', async () => {
    const bRun = vi.fn(({ input }) => `${input}+B`);
    const r = new StateMachineRunner({
      config: { name: 'auto', initial: 'a', nodes: { a: { run: () => 'A', transition: { go: 'b' } }, b: { run: bRun, transition: 'c' }, c: fin('c') } },
      input: null,
    });
    await r.run();
    expect(r.machineStatus).toBe('waitingForEvent');
    r.send({ type: 'go' });
    expect(await within(r.finished, 3000, 'finished')).toEqual({ at: 'c', input: 'A+B' });
    expect(bRun).toHaveBeenCalledTimes(1);
  });

  test('with only step(), an event transitions and the machine waits for the next step()', async () => {
    const bRun = vi.fn(() => 'B');
    const r = new StateMachineRunner({
      config: { name: 'manual', initial: 'a', nodes: { a: { run: () => 'A', transition: { go: 'b' } }, b: { run: bRun, transition: 'c' }, c: fin('c') } },
      input: null,
    });
    expect(await r.step()).toBe(false);
    expect(r.machineStatus).toBe('waitingForEvent');
    r.send({ type: 'go', data: 1 });
    await waitUntil(() => r.state === 'b', 'state b');
    await settle();
    expect(r.machineStatus).toBe('ready');
    expect(r.canStep()).toBe(true);
    expect(bRun).not.toHaveBeenCalled();
    expect(r.currentState.input).toBe('A');
    expect(await r.step()).toBe(true);
    expect(bRun).toHaveBeenCalledTimes(1);
    expect(r.state).toBe('c');
  });

  test('an event for a ready state (step mode) transitions without running that state', async () => {
    const bRun = vi.fn(() => 'B');
    const r = new StateMachineRunner({
      config: {
        name: 'skip',
        initial: 'a',
        nodes: { a: { run: () => 'A', transition: 'b' }, b: { run: bRun, transition: { skip: 'c', '': 'd' } }, c: fin('c'), d: fin('d') },
      },
      input: null,
    });
    await r.step();
    expect(r.state).toBe('b');
    expect(r.machineStatus).toBe('ready');
    r.send({ type: 'skip' });
    await waitUntil(() => r.state === 'c', 'state c');
    expect(bRun).not.toHaveBeenCalled();
  });

  test('an event without a handler and without queue is dropped', async () => {
    const r = new StateMachineRunner({
      config: { name: 'drop', initial: 'a', nodes: { a: { run: () => 1, transition: { go: 'b' } }, b: { run: () => 2, transition: { later: 'c' } }, c: fin('c') } },
      input: null,
    });
    const events = collectEvents(r);
    await r.run();
    r.send({ type: 'later' });
    await settle();
    expect(r.state).toBe('a');
    expect(r.machineStatus).toBe('waitingForEvent');
    r.send({ type: 'go' });
    await waitForStatus(r, 'waitingForEvent', 'b');
    await settle();
    expect(r.state).toBe('b');
    expect(pathOf(events)).toEqual(['a>b']);
  });

  test('queue: true without a handler waits until a later state handles it', async () => {
    const r = new StateMachineRunner({
      config: { name: 'q', initial: 'a', nodes: { a: { run: () => 1, transition: { go: 'b' } }, b: { run: () => 2, transition: { later: 'c' } }, c: fin('c') } },
      input: null,
    });
    const events = collectEvents(r);
    await r.run();
    r.send({ type: 'later', data: 'L', queue: true });
    await settle();
    expect(r.state).toBe('a');
    expect(r.machineStatus).toBe('waitingForEvent');
    r.send({ type: 'go' });
    expect(await within(r.finished, 3000, 'finished')).toEqual({ at: 'c', input: 2 });
    await settle();
    expect(pathOf(events)).toEqual(['a>b', 'b>c']);
    expect(r.currentState.event).toEqual({ type: 'later', data: 'L' });
  });

  test('a handler whose guard does not hold drops the event, even with queue: true', async () => {
    const r = new StateMachineRunner({
      config: {
        name: 'guard-drop',
        initial: 'a',
        nodes: {
          a: { run: () => 1, transition: { go: 'b', later: { state: 'x', condition: () => false } } },
          b: { run: () => 2, transition: { later: 'c' } },
          c: fin('c'),
          x: fin('x'),
        },
      },
      input: null,
    });
    const events = collectEvents(r);
    await r.run();
    r.send({ type: 'later', queue: true });
    await settle();
    expect(r.state).toBe('a');
    r.send({ type: 'go' });
    await waitForStatus(r, 'waitingForEvent', 'b');
    await settle();
    expect(r.state).toBe('b');
    expect(pathOf(events)).toEqual(['a>b']);
  });

  test('a handled event with a holding guard transitions; its data reaches the guard and the next state', async () => {
    let seen;
    const r = new StateMachineRunner({
      config: {
        name: 'data',
        initial: 'a',
        nodes: {
          a: { run: () => 1, transition: { pay: { state: 'b', condition: ({ event }) => event.data.ok } } },
          b: { final: true, run: ({ event }) => (seen = event) },
        },
      },
      input: null,
    });
    await r.run();
    r.send({ type: 'pay', data: { ok: false } });
    await settle();
    expect(r.state).toBe('a');
    r.send({ type: 'pay', data: { ok: true } });
    await within(r.finished, 3000, 'finished');
    expect(seen).toEqual({ type: 'pay', data: { ok: true } });
  });
});

describe('send() during a run', () => {
  test('an event sent while a state runs is queued and handled after the run', async () => {
    const gate = deferred();
    const r = new StateMachineRunner({ config: gated({ go: 'b' }, { b: fin('b') }, gate), input: null });
    r.run();
    await waitForStatus(r, 'running', 'a');
    r.send({ type: 'go', data: 1 });
    await settle();
    expect(r.state).toBe('a');
    expect(r.machineStatus).toBe('running');
    gate.resolve();
    expect(await within(r.finished, 3000, 'finished')).toEqual({ at: 'b', input: 'A' });
    expect(r.currentState.event).toEqual({ type: 'go', data: 1 });
  });

  test("a queued event wins over the '' transition", async () => {
    const gate = deferred();
    const r = new StateMachineRunner({ config: gated({ go: 'b', '': 'c' }, { b: fin('b'), c: fin('c') }, gate), input: null });
    r.run();
    await waitForStatus(r, 'running', 'a');
    r.send({ type: 'go' });
    gate.resolve();
    await within(r.finished, 3000, 'finished');
    expect(r.state).toBe('b');
  });

  test('queued events are tried in order: the first that transitions wins', async () => {
    const gate = deferred();
    const r = new StateMachineRunner({ config: gated({ left: 'b', right: 'c' }, { b: fin('b'), c: fin('c') }, gate), input: null });
    r.run();
    await waitForStatus(r, 'running', 'a');
    r.send({ type: 'right' });
    r.send({ type: 'left' });
    gate.resolve();
    await within(r.finished, 3000, 'finished');
    expect(r.state).toBe('c');
  });

  test('a queued event whose guard fails is skipped for the next one', async () => {
    const gate = deferred();
    const r = new StateMachineRunner({
      config: gated({ left: { state: 'b', condition: () => false }, right: 'c' }, { b: fin('b'), c: fin('c') }, gate),
      input: null,
    });
    r.run();
    await waitForStatus(r, 'running', 'a');
    r.send({ type: 'left' });
    r.send({ type: 'right' });
    gate.resolve();
    await within(r.finished, 3000, 'finished');
    expect(r.state).toBe('c');
  });

  test('an unhandled non-queue event before the winner is dropped', async () => {
    const gate = deferred();
    const r = new StateMachineRunner({
      config: gated({ go: 'b' }, { b: { run: () => 'B', transition: { nope: 'x' } }, x: fin('x') }, gate),
      input: null,
    });
    const events = collectEvents(r);
    const rested = r.run();
    await waitForStatus(r, 'running', 'a');
    r.send({ type: 'nope' });
    r.send({ type: 'go' });
    gate.resolve();
    // run() resolves once the machine rests: a kept 'nope' would have moved b on to x first
    await within(rested, 3000, 'run() rests');
    await settle();
    expect(r.machineStatus).toBe('waitingForEvent');
    expect(r.state).toBe('b');
    expect(pathOf(events)).toEqual(['a>b']);
  });

  test('after the winner, the remaining non-queue events are dropped', async () => {
    const gate = deferred();
    const r = new StateMachineRunner({
      config: gated({ go: 'b' }, { b: { run: () => 'B', transition: { nope: 'x' } }, x: fin('x') }, gate),
      input: null,
    });
    const events = collectEvents(r);
    const rested = r.run();
    await waitForStatus(r, 'running', 'a');
    r.send({ type: 'go' });
    r.send({ type: 'nope' });
    gate.resolve();
    // run() resolves once the machine rests: a kept 'nope' would have moved b on to x first
    await within(rested, 3000, 'run() rests');
    await settle();
    expect(r.machineStatus).toBe('waitingForEvent');
    expect(r.state).toBe('b');
    expect(pathOf(events)).toEqual(['a>b']);
  });

  test('queue: true events stay queued after the winner and are handled by the next state', async () => {
    const gate = deferred();
    const r = new StateMachineRunner({
      config: gated({ go: 'b' }, { b: { run: () => 'B', transition: { later: 'c' } }, c: fin('c') }, gate),
      input: null,
    });
    const events = collectEvents(r);
    r.run();
    await waitForStatus(r, 'running', 'a');
    r.send({ type: 'go' });
    r.send({ type: 'later', data: 'L', queue: true });
    gate.resolve();
    expect(await within(r.finished, 3000, 'finished')).toEqual({ at: 'c', input: 'B' });
    await settle();
    expect(pathOf(events)).toEqual(['a>b', 'b>c']);
  });

  test('a queue: true event without a handler before the winner stays queued', async () => {
    const gate = deferred();
    const r = new StateMachineRunner({
      config: gated({ go: 'b' }, { b: { run: () => 'B', transition: { later: 'c' } }, c: fin('c') }, gate),
      input: null,
    });
    r.run();
    await waitForStatus(r, 'running', 'a');
    r.send({ type: 'later', queue: true });
    r.send({ type: 'go' });
    gate.resolve();
    await within(r.finished, 3000, 'finished');
    expect(r.state).toBe('c');
  });

  test('a queue: true event waits through states that do not handle it', async () => {
    const gate = deferred();
    const r = new StateMachineRunner({
      config: gated(
        { go: 'b' },
        {
          b: { run: () => 'B', transition: { '': 'c' } },
          c: { run: () => 'C', transition: { later: 'd' } },
          d: fin('d'),
        },
        gate
      ),
      input: null,
    });
    const events = collectEvents(r);
    r.run();
    await waitForStatus(r, 'running', 'a');
    r.send({ type: 'later', queue: true });
    r.send({ type: 'go' });
    gate.resolve();
    expect(await within(r.finished, 3000, 'finished')).toEqual({ at: 'd', input: 'C' });
    await settle();
    expect(pathOf(events)).toEqual(['a>b', 'b>c', 'c>d']);
  });

  test('a queued queue: true event whose handler guard fails is dropped', async () => {
    const gate = deferred();
    const r = new StateMachineRunner({
      config: gated(
        { later: { state: 'x', condition: () => false }, '': 'b' },
        { b: { run: () => 'B', transition: { later: 'c' } }, c: fin('c'), x: fin('x') },
        gate
      ),
      input: null,
    });
    const events = collectEvents(r);
    const rested = r.run();
    await waitForStatus(r, 'running', 'a');
    r.send({ type: 'later', queue: true });
    gate.resolve();
    // run() resolves once the machine rests: a kept 'later' would have moved b on to c first
    await within(rested, 3000, 'run() rests');
    await settle();
    expect(r.machineStatus).toBe('waitingForEvent');
    expect(r.state).toBe('b');
    expect(pathOf(events)).toEqual(['a>b']);
  });

  test('in step mode, events queued during step() are handled when it ends', async () => {
    const gate = deferred();
    const r = new StateMachineRunner({ config: gated({ go: 'b' }, { b: fin('b') }, gate), input: null });
    const p = r.step();
    await waitForStatus(r, 'running', 'a');
    r.send({ type: 'go' });
    gate.resolve();
    expect(await p).toBe(true);
    expect(r.state).toBe('b');
  });

  test('an event sent while waiting for a semaphore slot is queued and handled after the run', async () => {
    const sem = new LocalSemaphore({ k: 0 });
    const aRun = vi.fn(() => 'A');
    const r = new StateMachineRunner({
      config: { name: 'sem', initial: 'a', nodes: { a: { semaphoreKey: 'k', run: aRun, transition: { go: 'b' } }, b: fin('b') } },
      input: null,
      semaphores: [sem],
    });
    r.run();
    await waitForStatus(r, 'pendingSemaphore', 'a');
    r.send({ type: 'go' });
    await settle();
    expect(r.state).toBe('a');
    expect(aRun).not.toHaveBeenCalled();
    sem.setLimit('k', 1);
    expect(await within(r.finished, 3000, 'finished')).toEqual({ at: 'b', input: 'A' });
    expect(aRun).toHaveBeenCalledTimes(1);
  });
});

describe('final states', () => {
  const wakeable = (fRun) => ({
    name: 'wake',
    initial: 'a',
    nodes: {
      a: { run: () => 'A', transition: 'f' },
      f: { final: true, run: fRun, transition: { restart: 'a2' } },
      a2: { run: ({ input }) => `${input}+A2`, transition: 'g' },
      g: { final: true, run: ({ input }) => `G(${input})` },
    },
  });

  test('a final state runs once; finished resolves with its output', async () => {
    const fRun = vi.fn(({ input }) => `F(${input})`);
    const r = new StateMachineRunner({ config: wakeable(fRun), input: null });
    await r.run();
    expect(await within(r.finished, 3000, 'finished')).toBe('F(A)');
    await settle();
    expect(fRun).toHaveBeenCalledTimes(1);
    expect(r.machineStatus).toBe('final');
    expect(r.state).toBe('f');
    expect(r.canStep()).toBe(false);
    expect(r.availableEvents()).toEqual(['restart']);
  });

  test('an event wakes a final state that has transitions; the machine continues', async () => {
    const fRun = vi.fn(({ input }) => `F(${input})`);
    const r = new StateMachineRunner({ config: wakeable(fRun), input: null });
    const events = collectEvents(r);
    await r.run();
    const first = await r.finished;
    r.send({ type: 'restart' });
    await waitForStatus(r, 'final', 'g');
    expect(first).toBe('F(A)');
    expect(r.output).toBe('G(F(A)+A2)');
    expect(fRun).toHaveBeenCalledTimes(1);
    await settle();
    expect(pathOf(events)).toEqual(['a>f', 'f>a2', 'a2>g']);
  });

  test('in step mode, an event moves a final state away and canStep() turns true', async () => {
    const r = new StateMachineRunner({ config: wakeable(({ input }) => input), input: null });
    for (let i = 0; i < 5 && r.canStep(); i++) await r.step();
    expect(r.machineStatus).toBe('final');
    expect(r.canStep()).toBe(false);
    r.send({ type: 'restart' });
    await waitUntil(() => r.state === 'a2', 'state a2');
    expect(r.canStep()).toBe(true);
    expect(await r.step()).toBe(true);
    expect(r.state).toBe('g');
  });

  test('an unknown event leaves a final state at rest', async () => {
    const fRun = vi.fn(() => 'F');
    const r = new StateMachineRunner({ config: wakeable(fRun), input: null });
    await r.run();
    r.send({ type: 'unknown' });
    r.send({ type: 'other', queue: true });
    await settle();
    expect(r.state).toBe('f');
    expect(r.machineStatus).toBe('final');
    expect(fRun).toHaveBeenCalledTimes(1);
  });

  test('a final state without transitions ignores events', async () => {
    const r = new StateMachineRunner({
      config: { name: 'end', initial: 'a', nodes: { a: { transition: 'b' }, b: { final: true } } },
      input: 9,
    });
    await r.run();
    expect(await r.finished).toBe(9);
    expect(r.availableEvents()).toEqual([]);
    r.send({ type: 'anything' });
    await settle();
    expect(r.state).toBe('b');
    expect(r.machineStatus).toBe('final');
    expect(await promiseState(r.finished)).toBe('fulfilled');
  });
});

describe('send() and finished outcome', () => {
  test('finished stays pending while the machine waits for an event', async () => {
    const r = new StateMachineRunner({
      config: { name: 'p', initial: 'a', nodes: { a: { transition: { go: 'b' } }, b: { final: true } } },
      input: 1,
    });
    const o = outcome(r.finished);
    await r.run();
    await settle();
    expect(r.machineStatus).toBe('waitingForEvent');
    expect(o.status).toBe('pending');
    r.send({ type: 'go' });
    await within(o.promise, 3000, 'finished');
    expect(o.value).toBe(1);
  });
});
