import { describe, test, expect, vi } from 'vitest';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { StateMachineRunner, TimeoutError, CancelledError, LocalSemaphore, TestClock } from 'ramus';
import { deferred, settle, within, waitUntil, collectEvents, waitForStatus, outcome, statusLog } from './helpers.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

const fin = (s) => ({ final: true, run: ({ input }) => ({ at: s, input }) });
const DAY = 24 * 3600 * 1000;

function delayed(delay, extra = {}) {
  return {
    name: 'delayed',
    initial: 'a',
    nodes: {
      a: { run: () => 'A', transition: { '': { state: 'b', delay }, ...extra } },
      b: fin('b'),
      c: fin('c'),
    },
  };
}

/** How long until the clock's next timer falls due (undefined when none is armed). */
const dueIn = (clock) => (clock.next() === undefined ? undefined : clock.next() - clock.now());

describe('delays', () => {
  test('a numeric delay: status sleeping (run() rests), then the transition happens when the clock reaches it', async () => {
    const clock = new TestClock();
    const t0 = clock.now();
    const r = new StateMachineRunner({ clock, config: delayed(100), input: null });
    const events = collectEvents(r);
    const log = statusLog(r);
    await within(r.run(), 3000, 'run() rests while sleeping');
    expect(r.machineStatus).toBe('sleeping');
    expect(r.state).toBe('a');
    expect(r.canStep()).toBe(false);
    expect(clock.next()).toBe(t0 + 100);
    expect(events.some((e) => e.type === 'state_machine:transition')).toBe(false);
    await clock.advance(99);
    expect(r.machineStatus).toBe('sleeping');
    expect(events.some((e) => e.type === 'state_machine:transition')).toBe(false);
    await clock.advance(1);
    expect(await within(r.finished, 3000, 'finished after the delay')).toEqual({ at: 'b', input: 'A' });
    expect(clock.next()).toBeUndefined();
    const sleeping = events.find((e) => e.type === 'state_machine:status' && e.data.status === 'sleeping');
    const t = events.find((e) => e.type === 'state_machine:transition');
    expect(t.data).toMatchObject({ from: 'a', to: 'b', event: null, output: 'A', final: true });
    // the transition is emitted when the delay fires, not when it is scheduled
    expect(sleeping.time).toBe(t0);
    expect(t.time).toBe(t0 + 100);
    const statuses = log.raw.map((s) => s.machineState);
    expect(statuses.filter((s) => s !== 'ready')).toEqual(['running', 'sleeping', 'running', 'final']);
  });

  test("a string delay ('70ms')", async () => {
    const clock = new TestClock();
    const r = new StateMachineRunner({ clock, config: delayed('70ms'), input: null });
    await r.run();
    expect(r.machineStatus).toBe('sleeping');
    expect(dueIn(clock)).toBe(70);
    await clock.advance(69);
    expect(r.machineStatus).toBe('sleeping');
    await clock.advance(1);
    expect(r.machineStatus).toBe('final');
    expect(await within(r.finished, 3000, 'finished')).toEqual({ at: 'b', input: 'A' });
  });

  test('step() resolves true for a delayed transition; without run() the machine then waits for step()', async () => {
    const clock = new TestClock();
    const bRun = vi.fn(() => 'B');
    const r = new StateMachineRunner({
      clock,
      config: { name: 'd', initial: 'a', nodes: { a: { run: () => 'A', transition: { '': { state: 'b', delay: 30 } } }, b: { final: true, run: bRun } } },
      input: null,
    });
    expect(await r.step()).toBe(true);
    expect(r.machineStatus).toBe('sleeping');
    expect(r.state).toBe('a');
    expect(dueIn(clock)).toBe(30);
    await clock.advance(30);
    expect(r.state).toBe('b');
    // nothing runs b until step() is called, however long the machine is left alone
    await clock.advance('1d');
    await settle();
    expect(r.machineStatus).toBe('ready');
    expect(r.canStep()).toBe(true);
    expect(bRun).not.toHaveBeenCalled();
    await r.step();
    expect(bRun).toHaveBeenCalledTimes(1);
    expect(r.machineStatus).toBe('final');
  });

  test('an event the sleeping state takes pre-empts the delay', async () => {
    const clock = new TestClock();
    const bRun = vi.fn();
    const r = new StateMachineRunner({
      clock,
      config: {
        name: 'pre',
        initial: 'a',
        nodes: {
          a: { run: () => 'A', transition: { '': { state: 'b', delay: 60 }, go: 'c' } },
          b: { final: true, run: bRun },
          c: fin('c'),
        },
      },
      input: null,
    });
    const events = collectEvents(r);
    await r.run();
    expect(r.machineStatus).toBe('sleeping');
    expect(dueIn(clock)).toBe(60);
    expect(r.availableEvents()).toEqual(['go']);
    r.send({ type: 'go', data: 'now' });
    expect(await within(r.finished, 3000, 'finished')).toEqual({ at: 'c', input: 'A' });
    // the delay is disarmed: moving past its due time fires nothing
    expect(clock.next()).toBeUndefined();
    await clock.advance(100);
    expect(bRun).not.toHaveBeenCalled();
    expect(r.state).toBe('c');
    expect(events.filter((e) => e.type === 'state_machine:transition').map((e) => e.data.to)).toEqual(['c']);
  });

  test("a '30d' delay is pre-empted by an event", async () => {
    const clock = new TestClock();
    const r = new StateMachineRunner({ clock, config: delayed('30d', { go: 'c' }), input: null });
    await r.run();
    expect(r.machineStatus).toBe('sleeping');
    expect(dueIn(clock)).toBe(30 * DAY);
    r.send({ type: 'go' });
    expect(await within(r.finished, 3000, 'finished')).toEqual({ at: 'c', input: 'A' });
    expect(clock.next()).toBeUndefined();
  });

  test("a '30d' delay falls due after 30 days, not before (beyond a 32-bit timer)", async () => {
    const clock = new TestClock();
    const bRun = vi.fn(() => 'B');
    const r = new StateMachineRunner({
      clock,
      config: { name: 'long', initial: 'a', nodes: { a: { run: () => 'A', transition: { '': { state: 'b', delay: '30d' } } }, b: { final: true, run: bRun } } },
      input: null,
    });
    await r.run();
    // 30 days (2.592e9 ms) do not fit a signed 32-bit ms timer: a truncated one would fall due early
    expect(dueIn(clock)).toBe(30 * DAY);
    await clock.advance(30 * DAY - 1);
    expect({ state: r.state, status: r.machineStatus, bRan: bRun.mock.calls.length }).toEqual({ state: 'a', status: 'sleeping', bRan: 0 });
    await clock.advance(1);
    expect({ state: r.state, status: r.machineStatus, bRan: bRun.mock.calls.length }).toEqual({ state: 'b', status: 'final', bRan: 1 });
    expect(await r.finished).toBe('B');
  });

  test("a '25d' timeout falls due after 25 days, not before (beyond a 32-bit timer)", async () => {
    const clock = new TestClock();
    const lateRun = vi.fn(({ input }) => input.name);
    const r = new StateMachineRunner({
      clock,
      config: {
        name: 'long-timeout',
        initial: 'a',
        nodes: { a: { timeout: { after: '25d', state: 'late' }, transition: { go: 'b' } }, b: fin('b'), late: { final: true, run: lateRun } },
      },
      input: null,
    });
    await r.run();
    expect(dueIn(clock)).toBe(25 * DAY);
    await clock.advance(25 * DAY - 1);
    expect({ state: r.state, status: r.machineStatus, lateRan: lateRun.mock.calls.length }).toEqual({ state: 'a', status: 'waitingForEvent', lateRan: 0 });
    await clock.advance(1);
    expect({ state: r.state, status: r.machineStatus, lateRan: lateRun.mock.calls.length }).toEqual({ state: 'late', status: 'final', lateRan: 1 });
    expect(await r.finished).toBe('TimeoutError');
  });

  test('an event the sleeping state does not handle leaves the delay in place', async () => {
    const clock = new TestClock();
    const r = new StateMachineRunner({ clock, config: delayed(40, { go: 'c' }), input: null });
    await r.run();
    const due = clock.next();
    r.send({ type: 'unrelated' });
    await settle(2);
    expect(r.machineStatus).toBe('sleeping');
    expect(clock.next()).toBe(due);
    await clock.advance(40);
    expect(await within(r.finished, 3000, 'finished')).toEqual({ at: 'b', input: 'A' });
  });

  test('a guarded event that does not hold does not pre-empt the delay', async () => {
    const clock = new TestClock();
    const r = new StateMachineRunner({ clock, config: delayed(40, { go: { state: 'c', condition: () => false } }), input: null });
    await r.run();
    const due = clock.next();
    r.send({ type: 'go' });
    await settle(2);
    expect(r.machineStatus).toBe('sleeping');
    expect(clock.next()).toBe(due);
    await clock.advance(40);
    expect(await within(r.finished, 3000, 'finished')).toEqual({ at: 'b', input: 'A' });
  });

  test('a delay on an event transition: sleeping after the event, then the transition', async () => {
    const clock = new TestClock();
    const r = new StateMachineRunner({
      clock,
      config: { name: 'evd', initial: 'a', nodes: { a: { run: () => 'A', transition: { go: { state: 'b', delay: 40 } } }, b: fin('b') } },
      input: null,
    });
    await r.run();
    expect(r.machineStatus).toBe('waitingForEvent');
    expect(clock.next()).toBeUndefined();
    await clock.advance(1000);
    const sentAt = clock.now();
    r.send({ type: 'go' });
    await waitForStatus(r, 'sleeping', 'a');
    // the delay counts from the event
    expect(clock.next()).toBe(sentAt + 40);
    await clock.advance(39);
    expect(r.machineStatus).toBe('sleeping');
    await clock.advance(1);
    expect(await within(r.finished, 3000, 'finished')).toEqual({ at: 'b', input: 'A' });
  });

  test('a guarded array picks the delay of the winning entry', async () => {
    const clock = new TestClock();
    const r = new StateMachineRunner({
      clock,
      config: {
        name: 'arr',
        initial: 'a',
        nodes: {
          a: { run: () => 'A', transition: { '': [{ state: 'c', condition: () => false, delay: 5 }, { state: 'b', delay: '50ms' }] } },
          b: fin('b'),
          c: fin('c'),
        },
      },
      input: null,
    });
    await r.run();
    expect(r.machineStatus).toBe('sleeping');
    expect(dueIn(clock)).toBe(50);
    await clock.advance(5);
    expect(r.machineStatus).toBe('sleeping');
    await clock.advance(45);
    expect(await within(r.finished, 3000, 'finished')).toEqual({ at: 'b', input: 'A' });
  });

  test('cancel() while sleeping clears the delay', async () => {
    const clock = new TestClock();
    const bRun = vi.fn();
    const r = new StateMachineRunner({
      clock,
      config: { name: 'cs', initial: 'a', nodes: { a: { run: () => 'A', transition: { '': { state: 'b', delay: 30 } } }, b: { final: true, run: bRun } } },
      input: null,
    });
    const o = outcome(r.finished);
    await r.run();
    expect(r.machineStatus).toBe('sleeping');
    expect(dueIn(clock)).toBe(30);
    r.cancel();
    await o.promise;
    expect(clock.next()).toBeUndefined();
    await clock.advance(100);
    expect(bRun).not.toHaveBeenCalled();
    expect(r.state).toBe('a');
    expect(r.machineStatus).toBe('cancelled');
    expect(o.reason).toBeInstanceOf(CancelledError);
  });
});

describe('timeouts', () => {
  test('during a run: isCancelled() turns true, the result is ignored, the machine moves to the timeout state with a TimeoutError', async () => {
    const clock = new TestClock();
    const seen = [];
    const release = deferred();
    const runEnded = deferred();
    let lateArgs;
    const bRun = vi.fn();
    const r = new StateMachineRunner({
      clock,
      config: {
        name: 'to',
        initial: 'a',
        nodes: {
          a: {
            timeout: { after: '40ms', state: 'late' },
            run: async ({ isCancelled }) => {
              seen.push(isCancelled());
              await release.promise;
              seen.push(isCancelled());
              runEnded.resolve();
              return 'ignored';
            },
            transition: 'b',
          },
          b: { final: true, run: bRun },
          late: { final: true, run: ({ input, previousState }) => ((lateArgs = { input, previousState }), 'late-out') },
        },
      },
      input: null,
    });
    const events = collectEvents(r);
    r.run();
    await clock.advance(39);
    expect(r.machineStatus).toBe('running');
    expect(seen).toEqual([false]);
    await clock.advance(1);
    // the timeout fired while the run was still going
    expect(await within(r.finished, 3000, 'finished')).toBe('late-out');
    release.resolve();
    await within(runEnded.promise, 3000, 'the timed-out run ends');
    await settle();
    expect(seen).toEqual([false, true]);
    expect(lateArgs.input).toBeInstanceOf(TimeoutError);
    expect(lateArgs.input).toBeInstanceOf(Error);
    expect(lateArgs.input.name).toBe('TimeoutError');
    expect(lateArgs.input.message).toBe('State a timed out after 40ms');
    expect(lateArgs.previousState).toBe('a');
    expect(bRun).not.toHaveBeenCalled();
    expect(r.state).toBe('late');
    expect(r.machineStatus).toBe('final');
    expect(events.filter((e) => e.type === 'state_machine:transition').map((e) => `${e.data.from}>${e.data.to}`)).toEqual(['a>late']);
  });

  test('the machine moves to the timeout state without waiting for the run to end', async () => {
    const clock = new TestClock();
    const slow = deferred();
    const r = new StateMachineRunner({
      clock,
      config: {
        name: 'to-fast',
        initial: 'a',
        nodes: {
          a: { timeout: { after: 30, state: 'late' }, run: () => slow.promise.then(() => 'slow'), transition: 'b' },
          b: { final: true },
          late: { final: true, run: () => 'late' },
        },
      },
      input: null,
    });
    const t0 = clock.now();
    const o = outcome(r.finished);
    r.run();
    await clock.advance(29);
    expect(r.machineStatus).toBe('running');
    expect(o.settled).toBe(false);
    await clock.advance(1);
    // the run of a has not ended (nothing resolved it), yet the machine is done
    expect(await within(r.finished, 3000, 'finished')).toBe('late');
    expect(clock.now()).toBe(t0 + 30);
    slow.resolve();
  });

  test('a timed-out run releases its semaphore slot when it ends', async () => {
    const clock = new TestClock();
    const sem = new LocalSemaphore({ k: 1 });
    const release = deferred();
    const ended = deferred();
    const r = new StateMachineRunner({
      clock,
      config: {
        name: 'to-sem',
        initial: 'a',
        nodes: {
          a: {
            semaphoreKey: 'k',
            timeout: { after: 20, state: 'late' },
            run: async () => {
              await release.promise;
              ended.resolve();
              return 'ignored';
            },
            transition: 'b',
          },
          b: { final: true },
          late: { final: true, run: () => 'late' },
        },
      },
      input: null,
      semaphores: [sem],
    });
    r.run();
    await clock.advance(20);
    expect(await within(r.finished, 3000, 'finished')).toBe('late');
    expect(sem.current('k')).toBe(1);
    release.resolve();
    await within(ended.promise, 3000, 'timed-out run ends');
    await waitUntil(() => sem.current('k') === 0, 'slot released');
  });

  test('a numeric timeout: the TimeoutError message names the state', async () => {
    const clock = new TestClock();
    let msg;
    const r = new StateMachineRunner({
      clock,
      config: {
        name: 'to-num',
        initial: 'work',
        nodes: {
          work: { timeout: { after: 30, state: 'late' }, run: () => new Promise(() => {}), transition: 'b' },
          b: { final: true },
          late: { final: true, run: ({ input }) => (msg = input.message) },
        },
      },
      input: null,
    });
    r.run();
    await clock.advance(30);
    await within(r.finished, 3000, 'finished');
    expect(msg).toMatch(/^State work timed out after /);
  });

  test('while waiting for events: the machine moves to the timeout state by itself', async () => {
    const clock = new TestClock();
    let lateInput;
    const r = new StateMachineRunner({
      clock,
      config: {
        name: 'to-wait',
        initial: 'a',
        nodes: {
          a: { timeout: { after: '50ms', state: 'late' }, run: () => 'A', transition: { go: 'b' } },
          b: fin('b'),
          late: { final: true, run: ({ input }) => ((lateInput = input), 'late') },
        },
      },
      input: null,
    });
    await r.run();
    expect(r.machineStatus).toBe('waitingForEvent');
    expect(dueIn(clock)).toBe(50);
    await clock.advance(49);
    expect(r.machineStatus).toBe('waitingForEvent');
    await clock.advance(1);
    expect(await within(r.finished, 3000, 'finished')).toBe('late');
    expect(lateInput).toBeInstanceOf(TimeoutError);
    expect(lateInput.message).toBe('State a timed out after 50ms');
  });

  test('a state without run waiting for events times out too', async () => {
    const clock = new TestClock();
    const r = new StateMachineRunner({
      clock,
      config: {
        name: 'to-norun',
        initial: 'a',
        nodes: { a: { timeout: { after: 30, state: 'late' }, transition: { go: 'b' } }, b: fin('b'), late: { final: true, run: ({ input }) => input.name } },
      },
      input: null,
    });
    await r.run();
    expect(dueIn(clock)).toBe(30);
    await clock.advance(30);
    expect(await within(r.finished, 3000, 'finished')).toBe('TimeoutError');
  });

  test('an event in time leaves the timeout unfired', async () => {
    const clock = new TestClock();
    const lateRun = vi.fn();
    const r = new StateMachineRunner({
      clock,
      config: {
        name: 'to-event',
        initial: 'a',
        nodes: {
          a: { timeout: { after: 60, state: 'late' }, run: () => 'A', transition: { go: 'b' } },
          b: { run: () => 'B', transition: { more: 'c' } },
          c: fin('c'),
          late: { final: true, run: lateRun },
        },
      },
      input: null,
    });
    await r.run();
    await clock.advance(59);
    r.send({ type: 'go' });
    await waitForStatus(r, 'waitingForEvent', 'b');
    expect(clock.next()).toBeUndefined();
    await clock.advance(110);
    expect(lateRun).not.toHaveBeenCalled();
    expect(r.state).toBe('b');
    expect(r.machineStatus).toBe('waitingForEvent');
  });

  test('a run that ends in time clears the timeout', async () => {
    const clock = new TestClock();
    const lateRun = vi.fn();
    const work = deferred();
    const r = new StateMachineRunner({
      clock,
      config: {
        name: 'to-clear',
        initial: 'a',
        nodes: {
          a: { timeout: { after: 50, state: 'late' }, run: () => work.promise, transition: 'b' },
          b: { run: () => 'B', transition: { more: 'c' } },
          c: fin('c'),
          late: { final: true, run: lateRun },
        },
      },
      input: null,
    });
    const rested = r.run();
    await clock.advance(49);
    expect(r.state).toBe('a');
    expect(r.machineStatus).toBe('running');
    work.resolve('A');
    await rested;
    expect(r.state).toBe('b');
    expect(clock.next()).toBeUndefined();
    await clock.advance(100);
    expect(lateRun).not.toHaveBeenCalled();
    expect(r.state).toBe('b');
  });

  test('the timeout is re-armed on each visit', async () => {
    const clock = new TestClock();
    const visits = [];
    const gates = [deferred(), deferred(), deferred(), deferred()];
    const r = new StateMachineRunner({
      clock,
      config: {
        name: 'to-rearm',
        initial: 'a',
        context: () => ({ n: 0 }),
        nodes: {
          a: {
            timeout: { after: 60, state: 'late' },
            run: async ({ context }) => {
              context.n += 1;
              visits.push(context.n);
              await gates[context.n - 1].promise;
              return context.n;
            },
            transition: 'a',
          },
          late: { final: true, run: ({ context }) => `late after ${context.n}` },
        },
      },
      input: null,
    });
    r.run();
    // visits 1-3 take 25ms each, 75ms together (more than the 60ms timeout), but each stays under it
    for (let n = 1; n <= 3; n++) {
      await waitUntil(() => visits.length === n, `visit ${n}`);
      expect(dueIn(clock)).toBe(60);
      await clock.advance(25);
      gates[n - 1].resolve();
    }
    await waitUntil(() => visits.length === 4, 'visit 4');
    expect(dueIn(clock)).toBe(60);
    await clock.advance(59);
    expect(r.machineStatus).toBe('running');
    await clock.advance(1);
    expect(await within(r.finished, 3000, 'finished')).toBe('late after 4');
    expect(visits).toEqual([1, 2, 3, 4]);
    gates[3].resolve();
  });

  test('cancel() clears a pending timeout', async () => {
    const clock = new TestClock();
    const lateRun = vi.fn();
    const r = new StateMachineRunner({
      clock,
      config: {
        name: 'to-cancel',
        initial: 'a',
        nodes: { a: { timeout: { after: 30, state: 'late' }, transition: { go: 'b' } }, b: fin('b'), late: { final: true, run: lateRun } },
      },
      input: null,
    });
    const o = outcome(r.finished);
    await r.run();
    expect(dueIn(clock)).toBe(30);
    r.cancel();
    await o.promise;
    expect(clock.next()).toBeUndefined();
    await clock.advance(70);
    expect(lateRun).not.toHaveBeenCalled();
    expect(r.state).toBe('a');
    expect(r.machineStatus).toBe('cancelled');
  });
});

/** Run `node -e code` in the package root; it must exit by itself within `timeout` ms. */
function node(code, timeout = 8000) {
  const started = Date.now();
  const res = spawnSync(process.execPath, ['-e', code], { cwd: ROOT, encoding: 'utf8', timeout });
  return { ...res, elapsed: Date.now() - started };
}

function expectCleanExit(res) {
  expect(res.error?.code, `child did not exit by itself; stderr:\n${res.stderr}`).toBeUndefined();
  expect(res.signal, `child was killed; stderr:\n${res.stderr}`).toBeNull();
  expect(res.status, `stderr:\n${res.stderr}`).toBe(0);
}

describe('timers and process exit', () => {
  test("a pending '30d' delay does not keep the process alive", () => {
    const res = node(`
      const { StateMachineRunner } = require('ramus');
      const r = new StateMachineRunner({
        config: { name: 'p', initial: 'a', nodes: { a: { run: () => 1, transition: { '': { state: 'b', delay: '30d' } } }, b: { final: true } } },
        input: null,
      });
      r.finished.then(() => console.log('finished'), () => console.log('rejected'));
      r.run().then(() => console.log('status=' + r.machineStatus));
    `);
    expectCleanExit(res);
    expect(res.stdout.trim()).toBe('status=sleeping');
  });

  test("a pending '30d' timeout while waiting for an event does not keep the process alive", () => {
    const res = node(`
      const { StateMachineRunner } = require('ramus');
      const r = new StateMachineRunner({
        config: { name: 'p', initial: 'a', nodes: { a: { timeout: { after: '30d', state: 'b' }, run: () => 1, transition: { go: 'b' } }, b: { final: true } } },
        input: null,
      });
      r.run().then(() => console.log('status=' + r.machineStatus));
    `);
    expectCleanExit(res);
    expect(res.stdout.trim()).toBe('status=waitingForEvent');
  });

  test('without keepAlive a short delay never fires because the process exits first', () => {
    const res = node(`
      const { StateMachineRunner } = require('ramus');
      const r = new StateMachineRunner({
        config: { name: 'p', initial: 'a', nodes: { a: { run: () => 1, transition: { '': { state: 'b', delay: 400 } } }, b: { final: true, run: () => console.log('fired') } } },
        input: null,
      });
      r.run().then(() => console.log('rested'));
    `);
    expectCleanExit(res);
    expect(res.stdout.trim()).toBe('rested');
  });

  test('keepAlive: true keeps the process alive until the delay fires', () => {
    const res = node(`
      const { StateMachineRunner } = require('ramus');
      const t0 = Date.now();
      const r = new StateMachineRunner({
        config: { name: 'p', initial: 'a', nodes: { a: { run: () => 1, transition: { '': { state: 'b', delay: 150 } } }, b: { final: true, run: ({ input }) => input + 1 } } },
        input: null,
        keepAlive: true,
      });
      r.finished.then((out) => console.log('fired out=' + out + ' waited=' + (Date.now() - t0 >= 140)));
      r.run().then(() => console.log('rested'));
    `);
    expectCleanExit(res);
    expect(res.stdout.trim().split('\n')).toEqual(['rested', 'fired out=2 waited=true']);
  });

  test('keepAlive: true keeps the process alive until a timeout fires', () => {
    const res = node(`
      const { StateMachineRunner } = require('ramus');
      const r = new StateMachineRunner({
        config: { name: 'p', initial: 'a', nodes: { a: { timeout: { after: 100, state: 'late' }, transition: { go: 'b' } }, b: { final: true }, late: { final: true, run: ({ input }) => input.name } } },
        input: null,
        keepAlive: true,
      });
      r.finished.then((out) => console.log('out=' + out));
      r.run();
    `);
    expectCleanExit(res);
    expect(res.stdout.trim()).toBe('out=TimeoutError');
  });
});
