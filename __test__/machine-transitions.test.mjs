import { describe, test, expect, vi } from 'vitest';
import { StateMachineRunner, TestClock, transitionTo } from 'ramus';
import { settle, sleep, within, waitUntil, collectEvents, promiseState, outcome, waitForStatus, loopGuard, RUNAWAY } from './helpers.mjs';

/** Build a machine whose initial state `a` runs `run` (default: returns the input) with `transition`. */
function machine(transition, { run = ({ input }) => input, extraNodes = {}, rest = {} } = {}) {
  const finals = {};
  for (const s of ['b', 'c', 'd', 'x', 'y', 'z']) {
    finals[s] = { final: true, run: ({ input }) => ({ at: s, input }) };
  }
  return { name: 'tm', initial: 'a', ...rest, nodes: { ...finals, a: { run, transition }, ...extraNodes } };
}

async function runToRest(config, input = null, extra = {}) {
  const r = new StateMachineRunner({ config, input, ...extra });
  const guard = config.errorState ? loopGuard(r) : { tripped: false };
  const fin = outcome(r.finished);
  await within(r.run(), 3000, 'run()');
  expect(guard.tripped, RUNAWAY).toBe(false);
  await settle(3);
  return { r, fin };
}

describe('string transitions', () => {
  test("a string transition always goes to that state", async () => {
    const { r, fin } = await runToRest(machine('c'), 5);
    expect(r.state).toBe('c');
    await fin.promise;
    expect(fin.value).toEqual({ at: 'c', input: 5 });
  });

  test('a string transition ignores events: availableEvents() is empty and send() does not move it', async () => {
    const r = new StateMachineRunner({ config: machine('b'), input: 1 });
    expect(r.availableEvents()).toEqual([]);
    r.send({ type: 'b' });
    r.send({ type: 'c' });
    await settle(3);
    expect(r.state).toBe('a');
    await r.run();
    expect(r.state).toBe('b');
  });
});

describe("event maps and '' transitions", () => {
  test("'' fires without an event", async () => {
    const { r } = await runToRest(machine({ '': 'd' }), 1);
    expect(r.state).toBe('d');
    expect(r.machineStatus).toBe('final');
  });

  test("'' given as an object { state } fires without an event", async () => {
    const { r } = await runToRest(machine({ '': { state: 'x' } }), 1);
    expect(r.state).toBe('x');
  });

  test("an event map without '' waits; the matching event picks its target", async () => {
    const { r, fin } = await runToRest(machine({ left: 'b', right: 'c' }, { run: () => 'A' }));
    expect(r.machineStatus).toBe('waitingForEvent');
    expect(r.availableEvents().sort()).toEqual(['left', 'right']);
    r.send({ type: 'right' });
    await within(fin.promise, 3000, 'finished');
    expect(r.state).toBe('c');
    expect(fin.value).toEqual({ at: 'c', input: 'A' });
  });

  test("with both '' and events, '' fires after the run when no event is queued", async () => {
    const { r } = await runToRest(machine({ go: 'b', '': 'c' }));
    expect(r.state).toBe('c');
  });

  test('availableEvents() excludes the empty event type', () => {
    const r = new StateMachineRunner({ config: machine({ go: 'b', stop: { state: 'c' }, retry: [{ state: 'd' }], '': 'x' }), input: 1 });
    expect(r.availableEvents().sort()).toEqual(['go', 'retry', 'stop']);
  });

  test('availableEvents() follows the current state', async () => {
    const r = new StateMachineRunner({
      config: {
        name: 'ae',
        initial: 'a',
        nodes: { a: { transition: { one: 'b' } }, b: { transition: { two: 'c', three: 'c' } }, c: { final: true } },
      },
      input: null,
    });
    expect(r.availableEvents()).toEqual(['one']);
    await r.run();
    r.send({ type: 'one' });
    await waitUntil(() => r.state === 'b', 'state b');
    expect(r.availableEvents().sort()).toEqual(['three', 'two']);
  });
});

describe('guarded arrays', () => {
  const chooser = () => ({
    '': [
      { state: 'x', condition: () => false },
      { state: 'y', condition: ({ output }) => output > 5 },
      { state: 'z' },
    ],
  });

  test('the first entry whose condition holds wins', async () => {
    const { r } = await runToRest(machine(chooser()), 10);
    expect(r.state).toBe('y');
  });

  test('an entry without condition always holds', async () => {
    const { r } = await runToRest(machine(chooser()), 3);
    expect(r.state).toBe('z');
  });

  test('order matters: an earlier holding entry wins over a later one', async () => {
    const { r } = await runToRest(
      machine({
        '': [
          { state: 'c', condition: () => true },
          { state: 'b', condition: () => true },
        ],
      })
    );
    expect(r.state).toBe('c');
  });

  test('conditions after the winning entry are not evaluated', async () => {
    const later = vi.fn(() => true);
    await runToRest(machine({ '': [{ state: 'b', condition: () => true }, { state: 'c', condition: later }] }));
    expect(later).not.toHaveBeenCalled();
  });

  test('a single object with a condition: false leaves the machine waiting', async () => {
    const { r } = await runToRest(machine({ '': { state: 'b', condition: () => false } }));
    expect(r.state).toBe('a');
    expect(r.machineStatus).toBe('waitingForEvent');
  });

  test('no entry holds: the machine waits for an event', async () => {
    const { r } = await runToRest(machine({ '': [{ state: 'b', condition: () => false }], go: 'c' }));
    expect(r.state).toBe('a');
    expect(r.machineStatus).toBe('waitingForEvent');
    r.send({ type: 'go' });
    await waitUntil(() => r.state === 'c', 'state c after go');
  });

  test('guard arguments: context, input, output, rootInput; no event for ""', async () => {
    const guard = vi.fn(() => true);
    await runToRest(
      machine({ '': [{ state: 'b', condition: guard }] }, { run: ({ input }) => `${input}!`, rest: { context: () => ({ k: 'v' }) } }),
      'in'
    );
    expect(guard).toHaveBeenCalledTimes(1);
    const g = guard.mock.calls[0][0];
    expect(g.context).toEqual({ k: 'v' });
    expect(g.input).toBe('in');
    expect(g.output).toBe('in!');
    expect(g.rootInput).toBe('in');
    expect(g.event ?? undefined).toBeUndefined();
  });

  test('guard arguments for an event include event { type, data }', async () => {
    const guard = vi.fn(() => true);
    const { r, fin } = await runToRest(machine({ approve: [{ state: 'b', condition: guard }] }, { run: () => 'out' }), 'root');
    r.send({ type: 'approve', data: { amount: 7 } });
    await within(fin.promise, 3000, 'finished');
    expect(guard).toHaveBeenCalledTimes(1);
    expect(guard.mock.calls[0][0]).toMatchObject({
      input: 'root',
      output: 'out',
      rootInput: 'root',
      event: { type: 'approve', data: { amount: 7 } },
    });
  });

  test('event guards route by event data', async () => {
    const config = machine({
      approve: [{ state: 'b', condition: ({ event }) => event.data.amount > 100 }, { state: 'c' }],
    });
    for (const [amount, expected] of [
      [500, 'b'],
      [5, 'c'],
    ]) {
      const { r, fin } = await runToRest(config);
      r.send({ type: 'approve', data: { amount } });
      await within(fin.promise, 3000, 'finished');
      expect(r.state, `amount ${amount}`).toBe(expected);
    }
  });

  test('guards see context mutations made by the run', async () => {
    const { r } = await runToRest(
      machine(
        { '': [{ state: 'b', condition: ({ context }) => context.flag === true }, { state: 'c' }] },
        {
          run: ({ context }) => {
            context.flag = true;
          },
          rest: { context: () => ({ flag: false }) },
        }
      )
    );
    expect(r.state).toBe('b');
  });
});

describe('object-returning guards', () => {
  test('an object without transition: false transitions', async () => {
    const { r } = await runToRest(machine({ '': [{ state: 'b', condition: () => ({ reason: 'because' }) }, { state: 'c' }] }));
    expect(r.state).toBe('b');
  });

  test('an empty object transitions', async () => {
    const { r } = await runToRest(machine({ '': [{ state: 'b', condition: () => ({}) }, { state: 'c' }] }));
    expect(r.state).toBe('b');
  });

  test('{ transition: true } transitions', async () => {
    const { r } = await runToRest(machine({ '': [{ state: 'b', condition: () => ({ transition: true }) }, { state: 'c' }] }));
    expect(r.state).toBe('b');
  });

  test('{ transition: false } does not transition; the next entry is tried', async () => {
    const { r } = await runToRest(
      machine({
        '': [
          { state: 'b', condition: () => ({ transition: false, reason: 'no' }) },
          { state: 'c', condition: () => ({ transition: false }) },
          { state: 'd', condition: () => ({ note: 1 }) },
        ],
      })
    );
    expect(r.state).toBe('d');
  });

  test('false, undefined and null do not transition', async () => {
    const { r } = await runToRest(
      machine({
        '': [
          { state: 'b', condition: () => false },
          { state: 'c', condition: () => undefined },
          { state: 'd', condition: () => null },
          { state: 'x' },
        ],
      })
    );
    expect(r.state).toBe('x');
  });
});

describe('transitionTo', () => {
  test('chooses the next state among declared transitions; output becomes the next input', async () => {
    const { r, fin } = await runToRest(machine({ go: 'b', alt: 'c' }, { run: () => transitionTo('c', { picked: true }) }));
    await within(fin.promise, 3000, 'finished');
    expect(r.state).toBe('c');
    expect(fin.value).toEqual({ at: 'c', input: { picked: true } });
  });

  test("overrides a '' transition", async () => {
    const { r } = await runToRest(machine({ '': 'b', other: 'd' }, { run: () => transitionTo('d', 1) }));
    expect(r.state).toBe('d');
  });

  test('without output the next input is undefined', async () => {
    const { fin } = await runToRest(machine({ go: 'b' }, { run: () => transitionTo('b') }), 'root');
    await within(fin.promise, 3000, 'finished');
    expect(fin.value.at).toBe('b');
    expect(fin.value.input).toBeUndefined();
  });

  test('a state without transitions may choose any existing state', async () => {
    const { r, fin } = await runToRest(machine(undefined, { run: () => transitionTo('z', 'free') }));
    await within(fin.promise, 3000, 'finished');
    expect(r.state).toBe('z');
    expect(fin.value).toEqual({ at: 'z', input: 'free' });
  });

  test('an async run may return transitionTo', async () => {
    const { r } = await runToRest(
      machine(
        { go: 'b', alt: 'c' },
        {
          run: async () => {
            await sleep(1);
            return transitionTo('b', 'async');
          },
        }
      )
    );
    expect(r.state).toBe('b');
    expect(r.currentState.previousState).toBe('a');
  });

  test('the chosen state sees previousState and its input', async () => {
    let seen;
    const { r } = await runToRest(
      machine(undefined, {
        run: () => transitionTo('m', 42),
        extraNodes: { m: { final: true, run: ({ input, previousState }) => (seen = { input, previousState }) } },
      })
    );
    expect(r.state).toBe('m');
    expect(seen).toEqual({ input: 42, previousState: 'a' });
  });

  test('a target that does not exist is a state error: "State S chose transition target T, which does not exist"', async () => {
    const { r, fin } = await runToRest(machine(undefined, { run: () => transitionTo('nowhere', 1) }));
    await fin.promise;
    expect(fin.status).toBe('rejected');
    expect(fin.reason).toBeInstanceOf(Error);
    expect(fin.reason.message).toBe('State a chose transition target nowhere, which does not exist');
    expect(r.machineStatus).toBe('error');
    expect(r.state).toBe('a');
  });

  test('a target that exists but is not among the transitions: "…, which is not among its transitions"', async () => {
    const { r, fin } = await runToRest(machine({ go: 'b', '': 'c' }, { run: () => transitionTo('d', 1) }));
    await fin.promise;
    expect(fin.status).toBe('rejected');
    expect(fin.reason.message).toBe('State a chose transition target d, which is not among its transitions');
    expect(r.machineStatus).toBe('error');
    expect(r.state).toBe('a');
  });

  test('guarded array targets count as declared transitions', async () => {
    const { r } = await runToRest(
      machine({ go: [{ state: 'b', condition: () => false }, { state: 'x' }] }, { run: () => transitionTo('x', 0) })
    );
    expect(r.state).toBe('x');
  });

  test('a string transition declares exactly one target', async () => {
    const { fin } = await runToRest(machine('b', { run: () => transitionTo('c', 0) }));
    await fin.promise;
    expect(fin.status).toBe('rejected');
    expect(fin.reason.message).toBe('State a chose transition target c, which is not among its transitions');
  });

  test('a bad transitionTo goes to the error state with the error as input', async () => {
    const { r, fin } = await runToRest(
      machine(
        { go: 'b' },
        {
          run: () => transitionTo('ghost'),
          rest: { errorState: 'failed' },
          extraNodes: { failed: { final: true, run: ({ input }) => `handled: ${input.message}` } },
        }
      )
    );
    await within(fin.promise, 3000, 'finished');
    expect(fin.value).toBe('handled: State a chose transition target ghost, which does not exist');
    expect(r.state).toBe('failed');
    expect(r.machineStatus).toBe('error');
  });

  test('the transition event records the chosen target', async () => {
    const r = new StateMachineRunner({ config: machine({ go: 'b', alt: 'c' }, { run: () => transitionTo('c', 'o') }), input: 'i' });
    const events = collectEvents(r);
    await r.run();
    await settle();
    const t = events.filter((e) => e.type === 'state_machine:transition');
    expect(t).toHaveLength(1);
    expect(t[0].data).toMatchObject({ from: 'a', to: 'c', event: null, final: true });
  });

  test('step() resolves true when transitionTo moves the machine', async () => {
    const r = new StateMachineRunner({ config: machine({ go: 'b' }, { run: () => transitionTo('b', 1) }), input: null });
    expect(await r.step()).toBe(true);
    expect(r.state).toBe('b');
    expect(await promiseState(r.finished)).toBe('pending');
  });

  test('transitionTo with a delay sleeps, then transitions', async () => {
    const clock = new TestClock();
    const r = new StateMachineRunner({
      clock,
      config: machine({ go: 'b' }, { run: () => transitionTo('b', 'late', { delay: 40 }) }),
      input: null,
    });
    await r.run();
    expect(r.machineStatus).toBe('sleeping');
    expect(r.state).toBe('a');
    expect(clock.next()).toBe(clock.now() + 40);
    await clock.advance(39);
    expect(r.machineStatus).toBe('sleeping');
    await clock.advance(1);
    expect(await within(r.finished, 3000, 'finished after delay')).toEqual({ at: 'b', input: 'late' });
    await waitForStatus(r, 'final', 'b');
  });
});

describe('where inline conditions are found', () => {
  test('conditions of arrays, single objects and strings, under several events, __proto__ included, each asked for its own transition', async () => {
    const asked = [];
    const cond = (name, holds) => ({ input }) => {
      asked.push(name);
      return holds(input);
    };
    const transition = { go: 'x' };
    Object.defineProperty(transition, '__proto__', {
      value: [{ state: 'y', condition: cond('proto-y', (i) => i === 'proto') }, { state: 'z', condition: cond('proto-z', () => true) }],
      enumerable: true,
    });
    transition[''] = [{ state: 'b', condition: cond('eventless-b', (i) => i === 1) }, 'c', { state: 'd', condition: cond('unreached', () => true) }];
    transition.other = { state: 'd', condition: cond('other-d', () => true) };
    const config = machine(transition, { run: ({ input }) => input });
    // Eventless: the first holds for input 1.
    expect((await runToRest(config, 1)).r.state).toBe('b');
    expect(asked).toEqual(['eventless-b']);
    // Input 2: the eventless condition fails, then the string 'c' is taken without a condition.
    asked.length = 0;
    expect((await runToRest(config, 2)).r.state).toBe('c');
    expect(asked).toEqual(['eventless-b']);
    // The '__proto__' event's array: its first condition fails, its second holds.
    asked.length = 0;
    const only = machine(transition, { run: ({ input }) => input });
    delete only.nodes.a.transition[''];
    const { r } = await runToRest(only, 'x');
    r.send({ type: '__proto__' });
    await settle(3);
    expect(r.state).toBe('z');
    expect(asked).toEqual(['proto-y', 'proto-z']);
  });
});
