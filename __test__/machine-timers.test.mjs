import { describe, test, expect, vi } from 'vitest';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { StateMachineRunner, TimeoutError, CancelledError, LocalSemaphore } from 'ramus';
import { deferred, settle, sleep, within, waitUntil, collectEvents, waitForStatus, outcome, statusLog } from './helpers.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

const fin = (s) => ({ final: true, run: ({ input }) => ({ at: s, input }) });

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

describe('delays', () => {
  test('a numeric delay: status sleeping (run() rests), then the transition happens by itself', async () => {
    const r = new StateMachineRunner({ config: delayed(100), input: null });
    const events = collectEvents(r);
    const log = statusLog(r);
    await within(r.run(), 3000, 'run() rests while sleeping');
    const restedAt = Date.now();
    expect(r.machineStatus).toBe('sleeping');
    expect(r.state).toBe('a');
    expect(r.canStep()).toBe(false);
    expect(events.some((e) => e.type === 'state_machine:transition')).toBe(false);
    expect(await within(r.finished, 3000, 'finished after the delay')).toEqual({ at: 'b', input: 'A' });
    await settle();
    const sleeping = events.find((e) => e.type === 'state_machine:status' && e.data.status === 'sleeping');
    const t = events.find((e) => e.type === 'state_machine:transition');
    expect(t.data).toMatchObject({ from: 'a', to: 'b', event: null, output: 'A', final: true });
    // the transition is emitted when the delay fires, not when it is scheduled
    expect(t.time - sleeping.time).toBeGreaterThanOrEqual(95);
    expect(t.time).toBeGreaterThanOrEqual(restedAt);
    const statuses = log.raw.map((s) => s.machineState);
    expect(statuses.filter((s) => s !== 'ready')).toEqual(['running', 'sleeping', 'running', 'final']);
  });

  test("a string delay ('70ms')", async () => {
    const r = new StateMachineRunner({ config: delayed('70ms'), input: null });
    const t0 = Date.now();
    await r.run();
    expect(r.machineStatus).toBe('sleeping');
    await within(r.finished, 3000, 'finished');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(65);
  });

  test('step() resolves true for a delayed transition; without run() the machine then waits for step()', async () => {
    const bRun = vi.fn(() => 'B');
    const r = new StateMachineRunner({
      config: { name: 'd', initial: 'a', nodes: { a: { run: () => 'A', transition: { '': { state: 'b', delay: 30 } } }, b: { final: true, run: bRun } } },
      input: null,
    });
    expect(await r.step()).toBe(true);
    expect(r.machineStatus).toBe('sleeping');
    expect(r.state).toBe('a');
    await waitUntil(() => r.state === 'b', 'delayed transition to b');
    await sleep(20);
    expect(r.machineStatus).toBe('ready');
    expect(r.canStep()).toBe(true);
    expect(bRun).not.toHaveBeenCalled();
    await r.step();
    expect(bRun).toHaveBeenCalledTimes(1);
    expect(r.machineStatus).toBe('final');
  });

  test('an event the sleeping state takes pre-empts the delay', async () => {
    const bRun = vi.fn();
    const r = new StateMachineRunner({
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
    expect(r.availableEvents()).toEqual(['go']);
    r.send({ type: 'go', data: 'now' });
    expect(await within(r.finished, 3000, 'finished')).toEqual({ at: 'c', input: 'A' });
    await sleep(100);
    expect(bRun).not.toHaveBeenCalled();
    expect(r.state).toBe('c');
    expect(events.filter((e) => e.type === 'state_machine:transition').map((e) => e.data.to)).toEqual(['c']);
  });

  test("a '30d' delay is pre-empted by an event", async () => {
    const r = new StateMachineRunner({ config: delayed('30d', { go: 'c' }), input: null });
    await r.run();
    expect(r.machineStatus).toBe('sleeping');
    r.send({ type: 'go' });
    expect(await within(r.finished, 3000, 'finished')).toEqual({ at: 'c', input: 'A' });
  });

  test("a '30d' delay does not fire early (beyond a 32-bit setTimeout)", async () => {
    const bRun = vi.fn();
    const r = new StateMachineRunner({
      config: { name: 'long', initial: 'a', nodes: { a: { run: () => 'A', transition: { '': { state: 'b', delay: '30d' } } }, b: { final: true, run: bRun } } },
      input: null,
    });
    const o = outcome(r.finished);
    await r.run();
    await sleep(60);
    const snapshot = { state: r.state, status: r.machineStatus, bRan: bRun.mock.calls.length };
    r.cancel();
    await o.promise;
    expect(snapshot).toEqual({ state: 'a', status: 'sleeping', bRan: 0 });
  });

  test("a '25d' timeout does not fire early (beyond a 32-bit setTimeout)", async () => {
    const lateRun = vi.fn();
    const r = new StateMachineRunner({
      config: {
        name: 'long-timeout',
        initial: 'a',
        nodes: { a: { timeout: { after: '25d', state: 'late' }, transition: { go: 'b' } }, b: fin('b'), late: { final: true, run: lateRun } },
      },
      input: null,
    });
    const o = outcome(r.finished);
    await r.run();
    await sleep(60);
    const snapshot = { state: r.state, status: r.machineStatus, lateRan: lateRun.mock.calls.length };
    r.cancel();
    await o.promise;
    expect(snapshot).toEqual({ state: 'a', status: 'waitingForEvent', lateRan: 0 });
  });

  test('an event the sleeping state does not handle leaves the delay in place', async () => {
    const r = new StateMachineRunner({ config: delayed(40, { go: 'c' }), input: null });
    await r.run();
    r.send({ type: 'unrelated' });
    await settle(2);
    expect(r.machineStatus).toBe('sleeping');
    expect(await within(r.finished, 3000, 'finished')).toEqual({ at: 'b', input: 'A' });
  });

  test('a guarded event that does not hold does not pre-empt the delay', async () => {
    const r = new StateMachineRunner({ config: delayed(40, { go: { state: 'c', condition: () => false } }), input: null });
    await r.run();
    r.send({ type: 'go' });
    await settle(2);
    expect(r.machineStatus).toBe('sleeping');
    expect(await within(r.finished, 3000, 'finished')).toEqual({ at: 'b', input: 'A' });
  });

  test('a delay on an event transition: sleeping after the event, then the transition', async () => {
    const r = new StateMachineRunner({
      config: { name: 'evd', initial: 'a', nodes: { a: { run: () => 'A', transition: { go: { state: 'b', delay: 40 } } }, b: fin('b') } },
      input: null,
    });
    await r.run();
    expect(r.machineStatus).toBe('waitingForEvent');
    const t0 = Date.now();
    r.send({ type: 'go' });
    await waitForStatus(r, 'sleeping', 'a');
    expect(await within(r.finished, 3000, 'finished')).toEqual({ at: 'b', input: 'A' });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(35);
  });

  test('a guarded array picks the delay of the winning entry', async () => {
    const r = new StateMachineRunner({
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
    const t0 = Date.now();
    await r.run();
    expect(r.machineStatus).toBe('sleeping');
    expect(await within(r.finished, 3000, 'finished')).toEqual({ at: 'b', input: 'A' });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(45);
  });

  test('cancel() while sleeping clears the delay', async () => {
    const bRun = vi.fn();
    const r = new StateMachineRunner({
      config: { name: 'cs', initial: 'a', nodes: { a: { run: () => 'A', transition: { '': { state: 'b', delay: 30 } } }, b: { final: true, run: bRun } } },
      input: null,
    });
    const o = outcome(r.finished);
    await r.run();
    expect(r.machineStatus).toBe('sleeping');
    r.cancel();
    await sleep(70);
    await o.promise;
    expect(bRun).not.toHaveBeenCalled();
    expect(r.state).toBe('a');
    expect(r.machineStatus).toBe('cancelled');
    expect(o.reason).toBeInstanceOf(CancelledError);
  });
});

describe('timeouts', () => {
  test('during a run: isCancelled() turns true, the result is ignored, the machine moves to the timeout state with a TimeoutError', async () => {
    const seen = [];
    const runEnded = deferred();
    let lateArgs;
    const bRun = vi.fn();
    const r = new StateMachineRunner({
      config: {
        name: 'to',
        initial: 'a',
        nodes: {
          a: {
            timeout: { after: '40ms', state: 'late' },
            run: async ({ isCancelled }) => {
              seen.push(isCancelled());
              await sleep(120);
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
    expect(await within(r.finished, 3000, 'finished')).toBe('late-out');
    await within(runEnded.promise, 3000, 'the timed-out run ends');
    await sleep(20);
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
    const r = new StateMachineRunner({
      config: {
        name: 'to-fast',
        initial: 'a',
        nodes: {
          a: { timeout: { after: 30, state: 'late' }, run: () => sleep(400).then(() => 'slow'), transition: 'b' },
          b: { final: true },
          late: { final: true, run: () => 'late' },
        },
      },
      input: null,
    });
    const t0 = Date.now();
    r.run();
    expect(await within(r.finished, 3000, 'finished')).toBe('late');
    const elapsed = Date.now() - t0;
    expect(elapsed).toBeGreaterThanOrEqual(25);
    expect(elapsed).toBeLessThan(300);
  });

  test('a timed-out run releases its semaphore slot when it ends', async () => {
    const sem = new LocalSemaphore({ k: 1 });
    const ended = deferred();
    const r = new StateMachineRunner({
      config: {
        name: 'to-sem',
        initial: 'a',
        nodes: {
          a: {
            semaphoreKey: 'k',
            timeout: { after: 20, state: 'late' },
            run: async () => {
              await sleep(60);
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
    expect(await within(r.finished, 3000, 'finished')).toBe('late');
    await within(ended.promise, 3000, 'timed-out run ends');
    await waitUntil(() => sem.current('k') === 0, 'slot released');
  });

  test('a numeric timeout: the TimeoutError message names the state', async () => {
    let msg;
    const r = new StateMachineRunner({
      config: {
        name: 'to-num',
        initial: 'work',
        nodes: {
          work: { timeout: { after: 30, state: 'late' }, run: () => sleep(100), transition: 'b' },
          b: { final: true },
          late: { final: true, run: ({ input }) => (msg = input.message) },
        },
      },
      input: null,
    });
    r.run();
    await within(r.finished, 3000, 'finished');
    expect(msg).toMatch(/^State work timed out after /);
  });

  test('while waiting for events: the machine moves to the timeout state by itself', async () => {
    let lateInput;
    const r = new StateMachineRunner({
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
    const t0 = Date.now();
    await r.run();
    expect(r.machineStatus).toBe('waitingForEvent');
    expect(await within(r.finished, 3000, 'finished')).toBe('late');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(45);
    expect(lateInput).toBeInstanceOf(TimeoutError);
    expect(lateInput.message).toBe('State a timed out after 50ms');
  });

  test('a state without run waiting for events times out too', async () => {
    const r = new StateMachineRunner({
      config: {
        name: 'to-norun',
        initial: 'a',
        nodes: { a: { timeout: { after: 30, state: 'late' }, transition: { go: 'b' } }, b: fin('b'), late: { final: true, run: ({ input }) => input.name } },
      },
      input: null,
    });
    await r.run();
    expect(await within(r.finished, 3000, 'finished')).toBe('TimeoutError');
  });

  test('an event in time leaves the timeout unfired', async () => {
    const lateRun = vi.fn();
    const r = new StateMachineRunner({
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
    r.send({ type: 'go' });
    await waitForStatus(r, 'waitingForEvent', 'b');
    await sleep(110);
    expect(lateRun).not.toHaveBeenCalled();
    expect(r.state).toBe('b');
    expect(r.machineStatus).toBe('waitingForEvent');
  });

  test('a run that ends in time clears the timeout', async () => {
    const lateRun = vi.fn();
    const r = new StateMachineRunner({
      config: {
        name: 'to-clear',
        initial: 'a',
        nodes: {
          a: { timeout: { after: 50, state: 'late' }, run: () => sleep(5).then(() => 'A'), transition: 'b' },
          b: { run: () => 'B', transition: { more: 'c' } },
          c: fin('c'),
          late: { final: true, run: lateRun },
        },
      },
      input: null,
    });
    await r.run();
    expect(r.state).toBe('b');
    await sleep(100);
    expect(lateRun).not.toHaveBeenCalled();
    expect(r.state).toBe('b');
  });

  test('the timeout is re-armed on each visit', async () => {
    const visits = [];
    const r = new StateMachineRunner({
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
              await sleep(context.n < 4 ? 25 : 250);
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
    // visits 1-3 take 75ms together (more than the 60ms timeout) but each stays under it
    expect(await within(r.finished, 3000, 'finished')).toBe('late after 4');
    expect(visits).toEqual([1, 2, 3, 4]);
  });

  test('cancel() clears a pending timeout', async () => {
    const lateRun = vi.fn();
    const r = new StateMachineRunner({
      config: {
        name: 'to-cancel',
        initial: 'a',
        nodes: { a: { timeout: { after: 30, state: 'late' }, transition: { go: 'b' } }, b: fin('b'), late: { final: true, run: lateRun } },
      },
      input: null,
    });
    const o = outcome(r.finished);
    await r.run();
    r.cancel();
    await sleep(70);
    await o.promise;
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
