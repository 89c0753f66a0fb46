import { describe, test, expect, vi } from 'vitest';
import { StateMachineRunner, CancelledError } from 'ramus';
import { deferred, settle, within, waitUntil, collectEvents, waitForStatus, outcome, statusLog, loopGuard, RUNAWAY } from './helpers.mjs';

const thrower = (err) => () => {
  throw err;
};

describe('errors with an error state', () => {
  test('machine errorState: the failing state moves there with the error as input; status error; finished resolves', async () => {
    const err = new Error('boom');
    let seen;
    const r = new StateMachineRunner({
      config: {
        name: 'e',
        initial: 'a',
        errorState: 'failed',
        nodes: {
          a: { run: () => 'A', transition: 'b' },
          b: { run: thrower(err), transition: 'c' },
          c: { final: true, run: () => 'never' },
          failed: { final: true, run: ({ input, previousState }) => ((seen = { input, previousState }), `handled: ${input.message}`) },
        },
      },
      input: null,
    });
    const guard = loopGuard(r);
    const fin = outcome(r.finished);
    await within(r.run(), 3000, 'run()');
    expect(guard.tripped, RUNAWAY).toBe(false);
    await within(fin.promise, 3000, 'finished');
    expect(fin.status).toBe('fulfilled');
    expect(fin.value).toBe('handled: boom');
    expect(seen.input).toBe(err);
    expect(seen.previousState).toBe('b');
    expect(r.state).toBe('failed');
    expect(r.machineStatus).toBe('error');
    expect(r.canStep()).toBe(false);
  });

  test('a state errorState overrides the machine errorState', async () => {
    const r1 = new StateMachineRunner({
      config: {
        name: 'e',
        initial: 'a',
        errorState: 'global',
        nodes: {
          a: { run: thrower(new Error('x')), errorState: 'local', transition: 'ok' },
          ok: { final: true },
          global: { final: true, run: () => 'global' },
          local: { final: true, run: () => 'local' },
        },
      },
      input: null,
    });
    const guard = loopGuard(r1);
    await r1.run();
    expect(guard.tripped, RUNAWAY).toBe(false);
    expect(await within(r1.finished, 3000, 'finished')).toBe('local');
    expect(r1.state).toBe('local');
  });

  test('a state-level errorState works without a machine errorState', async () => {
    const r = new StateMachineRunner({
      config: {
        name: 'e',
        initial: 'a',
        nodes: {
          a: { run: async () => Promise.reject(new TypeError('typed')), errorState: 'local', transition: 'ok' },
          ok: { final: true },
          local: { final: true, run: ({ input }) => `${input.name}:${input.message}` },
        },
      },
      input: null,
    });
    const guard = loopGuard(r);
    await r.run();
    expect(guard.tripped, RUNAWAY).toBe(false);
    expect(await within(r.finished, 3000, 'finished')).toBe('TypeError:typed');
    expect(r.machineStatus).toBe('error');
  });

  test('the error state may itself be a final state without run: finished resolves with the error', async () => {
    const err = new Error('raw');
    const r = new StateMachineRunner({
      config: { name: 'e', initial: 'a', errorState: 'failed', nodes: { a: { run: thrower(err) }, failed: { final: true } } },
      input: null,
    });
    const guard = loopGuard(r);
    await r.run();
    expect(guard.tripped, RUNAWAY).toBe(false);
    expect(await within(r.finished, 3000, 'finished')).toBe(err);
    expect(r.machineStatus).toBe('error');
  });

  test('status sequence: running, then error, at the error state', async () => {
    const r = new StateMachineRunner({
      config: {
        name: 'e',
        initial: 'a',
        errorState: 'failed',
        nodes: { a: { run: thrower(new Error('x')), transition: 'b' }, b: { final: true }, failed: { final: true, run: () => 'h' } },
      },
      input: null,
    });
    const log = statusLog(r);
    const guard = loopGuard(r);
    await r.run();
    expect(guard.tripped, RUNAWAY).toBe(false);
    await r.finished;
    await settle();
    const statuses = log.raw.map((s) => s.machineState);
    expect(statuses[0]).toBe('running');
    expect(statuses.at(-1)).toBe('error');
    expect(statuses).not.toContain('final');
    expect(r.state).toBe('failed');
  });

  test('step() resolves true when a failure moves the machine to its error state', async () => {
    const r = new StateMachineRunner({
      config: { name: 'e', initial: 'a', errorState: 'failed', nodes: { a: { run: thrower(new Error('x')) }, failed: { final: true } } },
      input: null,
    });
    expect(await r.step()).toBe(true);
    expect(r.state).toBe('failed');
  });
});

describe('errors without an error state', () => {
  test('the machine halts on the failing state: status error, canStep() true, finished rejects with the error', async () => {
    const err = new Error('halt');
    const cRun = vi.fn();
    const r = new StateMachineRunner({
      config: { name: 'h', initial: 'a', nodes: { a: { run: () => 'A', transition: 'b' }, b: { run: thrower(err), transition: 'c' }, c: { final: true, run: cRun } } },
      input: null,
    });
    const fin = outcome(r.finished);
    await within(r.run(), 3000, 'run() resolves when halted');
    await within(fin.promise, 3000, 'finished');
    expect(fin.status).toBe('rejected');
    expect(fin.reason).toBe(err);
    expect(r.state).toBe('b');
    expect(r.machineStatus).toBe('error');
    expect(r.canStep()).toBe(true);
    expect(cRun).not.toHaveBeenCalled();
  });

  test("'ramus:error' listener and state_machine:error event get the error", async () => {
    const err = new Error('listened');
    const r = new StateMachineRunner({
      config: { name: 'h', initial: 'a', nodes: { a: { run: thrower(err), transition: 'b' }, b: { final: true } } },
      input: null,
    });
    const onError = vi.fn();
    r.on('ramus:error', onError);
    const events = collectEvents(r);
    const fin = outcome(r.finished);
    await r.run();
    await fin.promise;
    await settle();
    expect(onError).toHaveBeenCalledTimes(1);
    // No error state: the machine halts, the run as a whole failed.
    expect(onError.mock.calls[0][0]).toEqual({ error: err, fatal: true });
    expect(onError.mock.calls[0][0].error).toBe(err);
    const errs = events.filter((e) => e.type === 'state_machine:error');
    expect(errs).toHaveLength(1);
    const reported = errs[0].data.error;
    expect(reported === err || reported?.message === 'listened').toBe(true);
    expect(events.some((e) => e.type === 'state_machine:finish')).toBe(false);
  });

  test('step() resolves false when the state fails without an error state', async () => {
    const r = new StateMachineRunner({
      config: { name: 'h', initial: 'a', nodes: { a: { run: thrower(new Error('s')), transition: 'b' }, b: { final: true } } },
      input: null,
    });
    const fin = outcome(r.finished);
    expect(await r.step()).toBe(false);
    expect(r.machineStatus).toBe('error');
    await fin.promise;
    expect(fin.status).toBe('rejected');
  });

  test('retry: step() re-runs the failed state with the same input and the machine goes on', async () => {
    const err = new Error('flaky');
    const inputs = [];
    let attempts = 0;
    const r = new StateMachineRunner({
      config: {
        name: 'retry',
        initial: 'a',
        nodes: {
          a: { run: () => 'A', transition: 'b' },
          b: {
            run: ({ input }) => {
              inputs.push(input);
              attempts += 1;
              if (attempts === 1) throw err;
              return `${input}+B`;
            },
            transition: 'c',
          },
          c: { final: true, run: ({ input }) => `C(${input})` },
        },
      },
      input: null,
    });
    const fin = outcome(r.finished);
    await r.run();
    expect(r.machineStatus).toBe('error');
    expect(r.state).toBe('b');
    expect(r.canStep()).toBe(true);
    expect(await r.step()).toBe(true);
    expect(r.state).toBe('c');
    expect(inputs).toEqual(['A', 'A']);
    await r.run();
    expect(r.machineStatus).toBe('final');
    expect(r.output).toBe('C(A+B)');
    await fin.promise;
    expect(fin.status).toBe('rejected');
    expect(fin.reason).toBe(err);
  });

  test('a thrown non-Error value rejects finished with that value', async () => {
    const r = new StateMachineRunner({
      config: { name: 'h', initial: 'a', nodes: { a: { run: thrower('plain string') } } },
      input: null,
    });
    const fin = outcome(r.finished);
    await r.run();
    await fin.promise;
    expect(fin.reason).toBe('plain string');
  });
});

describe('maxSteps and maxVisits', () => {
  const pingPong = (extra = {}, nodeExtra = {}) => {
    const calls = { a: 0, b: 0 };
    return {
      calls,
      config: {
        name: 'loop',
        initial: 'a',
        ...extra,
        nodes: {
          a: { run: () => (calls.a += 1), transition: 'b', ...nodeExtra.a },
          b: { run: () => (calls.b += 1), transition: 'a', ...nodeExtra.b },
          failed: { final: true, run: ({ input }) => `caught: ${input.message}` },
        },
      },
    };
  };

  test('maxSteps: the run that would exceed it fails with "Machine M exceeded maxSteps (N) at state S"', async () => {
    const { calls, config } = pingPong({ maxSteps: 3 });
    const r = new StateMachineRunner({ config, input: null });
    const fin = outcome(r.finished);
    await within(r.run(), 3000, 'run()');
    await fin.promise;
    expect(fin.status).toBe('rejected');
    expect(fin.reason).toBeInstanceOf(Error);
    expect(fin.reason.message).toBe('Machine loop exceeded maxSteps (3) at state b');
    expect(calls).toEqual({ a: 2, b: 1 });
    expect(r.machineStatus).toBe('error');
    expect(r.state).toBe('b');
  });

  test('maxSteps names the machine by its config name', async () => {
    const { config } = pingPong({ maxSteps: 2 });
    config.name = 'other-name';
    const r = new StateMachineRunner({ config, input: null });
    const fin = outcome(r.finished);
    await r.run();
    await fin.promise;
    expect(fin.reason.message).toBe('Machine other-name exceeded maxSteps (2) at state a');
  });

  test('maxSteps with an error state: moves there; the error state is exempt for that visit', async () => {
    const { calls, config } = pingPong({ maxSteps: 2, errorState: 'failed' });
    const r = new StateMachineRunner({ config, input: null });
    const guard = loopGuard(r);
    await r.run();
    expect(guard.tripped, RUNAWAY).toBe(false);
    expect(await within(r.finished, 3000, 'finished')).toBe('caught: Machine loop exceeded maxSteps (2) at state a');
    expect(calls).toEqual({ a: 1, b: 1 });
    expect(r.state).toBe('failed');
    expect(r.machineStatus).toBe('error');
  });

  test('a machine within maxSteps finishes normally', async () => {
    const r = new StateMachineRunner({
      config: { name: 'ok', initial: 'a', maxSteps: 3, nodes: { a: { run: () => 1, transition: 'b' }, b: { run: () => 2, transition: 'c' }, c: { final: true, run: () => 3 } } },
      input: null,
    });
    await r.run();
    expect(await within(r.finished, 3000, 'finished')).toBe(3);
  });

  test('maxVisits: "State S exceeded maxVisits (N)" on the visit past the limit', async () => {
    const { calls, config } = pingPong({}, { b: { maxVisits: 2 } });
    const r = new StateMachineRunner({ config, input: null });
    const fin = outcome(r.finished);
    await r.run();
    await fin.promise;
    expect(fin.status).toBe('rejected');
    expect(fin.reason.message).toBe('State b exceeded maxVisits (2)');
    expect(calls).toEqual({ a: 3, b: 2 });
    expect(r.state).toBe('b');
    expect(r.machineStatus).toBe('error');
    expect(r.canStep()).toBe(true);
  });

  test('maxVisits with a state errorState goes to that error state', async () => {
    const { calls, config } = pingPong({}, { a: { maxVisits: 1, errorState: 'failed' } });
    const r = new StateMachineRunner({ config, input: null });
    const guard = loopGuard(r);
    await r.run();
    expect(guard.tripped, RUNAWAY).toBe(false);
    expect(await within(r.finished, 3000, 'finished')).toBe('caught: State a exceeded maxVisits (1)');
    expect(calls).toEqual({ a: 1, b: 1 });
  });

  test('maxVisits on an error state does not block visits caused by errors', async () => {
    let attempts = 0;
    const failedInputs = [];
    const r = new StateMachineRunner({
      config: {
        name: 'ev',
        initial: 'a',
        errorState: 'failed',
        nodes: {
          a: {
            run: () => {
              attempts += 1;
              if (attempts <= 2) throw new Error(`attempt ${attempts}`);
              return 'third time';
            },
            transition: 'done',
          },
          failed: { maxVisits: 1, run: ({ input }) => failedInputs.push(input.message), transition: 'a' },
          done: { final: true },
        },
      },
      input: null,
    });
    const guard = loopGuard(r);
    await r.run();
    expect(guard.tripped, RUNAWAY).toBe(false);
    expect(await within(r.finished, 3000, 'finished')).toBe('third time');
    expect(failedInputs).toEqual(['attempt 1', 'attempt 2']);
  });
});

describe('cancel()', () => {
  test('mid-run: the running state finishes and takes its transition, then nothing runs', async () => {
    const gate = deferred();
    const seen = [];
    const bRun = vi.fn(() => 'B');
    const r = new StateMachineRunner({
      config: {
        name: 'c',
        initial: 'a',
        nodes: {
          a: {
            run: async ({ isCancelled }) => {
              seen.push(isCancelled());
              await gate.promise;
              seen.push(isCancelled());
              return 'A';
            },
            transition: 'b',
          },
          b: { run: bRun, transition: 'c' },
          c: { final: true },
        },
      },
      input: null,
    });
    const onCancelled = vi.fn();
    r.on('cancelled', onCancelled);
    const fin = outcome(r.finished);
    const p = r.run();
    await waitForStatus(r, 'running', 'a');
    r.cancel();
    gate.resolve();
    await within(p, 3000, 'run() resolves after cancel');
    await fin.promise;
    // b would run now if cancel() let it: give it every chance
    await settle();
    expect(seen).toEqual([false, true]);
    expect(r.state).toBe('b');
    expect(bRun).not.toHaveBeenCalled();
    expect(r.machineStatus).toBe('cancelled');
    expect(r.canStep()).toBe(false);
    expect(fin.status).toBe('rejected');
    expect(fin.reason).toBeInstanceOf(CancelledError);
    expect(onCancelled).toHaveBeenCalledTimes(1);
  });

  test('before run(): nothing runs and finished rejects with CancelledError', async () => {
    const aRun = vi.fn();
    const r = new StateMachineRunner({
      config: { name: 'c', initial: 'a', nodes: { a: { run: aRun, transition: 'b' }, b: { final: true } } },
      input: null,
    });
    const fin = outcome(r.finished);
    r.cancel();
    expect(r.machineStatus).toBe('cancelled');
    expect(r.canStep()).toBe(false);
    await within(Promise.resolve(r.run()).catch(() => {}), 3000, 'run() after cancel');
    await fin.promise;
    expect(aRun).not.toHaveBeenCalled();
    expect(fin.reason).toBeInstanceOf(CancelledError);
  });

  test('while waiting for an event: later events do nothing', async () => {
    const bRun = vi.fn();
    const r = new StateMachineRunner({
      config: { name: 'c', initial: 'a', nodes: { a: { run: () => 1, transition: { go: 'b' } }, b: { final: true, run: bRun } } },
      input: null,
    });
    const fin = outcome(r.finished);
    await r.run();
    r.cancel();
    r.send({ type: 'go' });
    await settle();
    await fin.promise;
    expect(r.state).toBe('a');
    expect(r.machineStatus).toBe('cancelled');
    expect(bRun).not.toHaveBeenCalled();
    expect(fin.reason).toBeInstanceOf(CancelledError);
  });

  test('status sequence ends with cancelled and stays there', async () => {
    const gate = deferred();
    const r = new StateMachineRunner({
      config: { name: 'c', initial: 'a', nodes: { a: { run: () => gate.promise, transition: 'b' }, b: { final: true } } },
      input: null,
    });
    const log = statusLog(r);
    const fin = outcome(r.finished);
    const p = r.run();
    await waitForStatus(r, 'running', 'a');
    r.cancel();
    gate.resolve(1);
    await p;
    await fin.promise;
    await settle();
    expect(log.raw.at(-1).machineState).toBe('cancelled');
    expect(log.raw.filter((s) => s.machineState === 'cancelled')).toHaveLength(1);
    expect(log.raw.map((s) => s.machineState)).not.toContain('final');
    expect(r.machineStatus).toBe('cancelled');
  });

  test('exitIfCancelled() throws CancelledError, which is not a state error', async () => {
    const gate = deferred();
    const failedRun = vi.fn();
    const r = new StateMachineRunner({
      config: {
        name: 'c',
        initial: 'a',
        errorState: 'failed',
        nodes: {
          a: {
            run: async ({ exitIfCancelled }) => {
              exitIfCancelled();
              await gate.promise;
              exitIfCancelled();
              return 'unreachable';
            },
            transition: 'b',
          },
          b: { final: true },
          failed: { final: true, run: failedRun },
        },
      },
      input: null,
    });
    const onError = vi.fn();
    r.on('ramus:error', onError);
    const fin = outcome(r.finished);
    const p = r.run();
    await waitForStatus(r, 'running', 'a');
    r.cancel();
    gate.resolve();
    await within(p, 3000, 'run()');
    await fin.promise;
    await settle();
    expect(failedRun).not.toHaveBeenCalled();
    expect(onError).not.toHaveBeenCalled();
    expect(r.machineStatus).toBe('cancelled');
    expect(fin.reason).toBeInstanceOf(CancelledError);
  });

  test('cancel() after the machine is final runs nothing and keeps finished resolved', async () => {
    const run = vi.fn(() => 'done');
    const r = new StateMachineRunner({
      config: { name: 'c', initial: 'a', nodes: { a: { final: true, run } } },
      input: null,
    });
    const onFinish = vi.fn();
    r.on('finish', onFinish);
    await r.run();
    r.cancel();
    await r.run();
    await settle();
    expect(await r.finished).toBe('done');
    expect(run).toHaveBeenCalledTimes(1);
    expect(onFinish).toHaveBeenCalledTimes(1);
    expect(r.output).toBe('done');
  });

  test('step() after cancel() does not run the state', async () => {
    const aRun = vi.fn();
    const r = new StateMachineRunner({
      config: { name: 'c', initial: 'a', nodes: { a: { run: aRun, transition: 'b' }, b: { final: true } } },
      input: null,
    });
    outcome(r.finished);
    r.cancel();
    await Promise.resolve()
      .then(() => r.step())
      .catch(() => {});
    await settle();
    expect(aRun).not.toHaveBeenCalled();
    expect(r.state).toBe('a');
    await waitUntil(() => r.machineStatus === 'cancelled', 'still cancelled');
  });
});
