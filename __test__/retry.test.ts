// Retries and DAG node timeouts, through the package, on a TestClock: no test waits for a
// backoff or a timeout in real time.
import { afterEach, describe, expect, test } from 'vitest';
import { CancelledError, Engine, runDag, StateMachineRunner, TimeoutError, type RamusEvent } from 'ramus';
import { TestClock } from 'ramus/testing';

import { settle, within } from './helpers.mjs';

const T0 = Date.UTC(2026, 0, 1);
const engines: Engine[] = [];

afterEach(async () => {
  for (const e of engines.splice(0)) await e.close();
});

/** A runner that fails `failures` times, then returns `value`; `attempts` logs what it saw. */
function flaky(failures: number, value: unknown) {
  const attempts: number[] = [];
  let calls = 0;
  const run = async ({ attempt }: { attempt: number }) => {
    attempts.push(attempt);
    if (calls++ < failures) throw new Error(`flaky ${calls}`);
    return value;
  };
  return { run, attempts };
}

describe('retry on DAG nodes', () => {
  test('a failed node runs again after its backoff, each attempt its own step, and no error is left', async () => {
    const clock = new TestClock(T0);
    const fetch = flaky(2, 'page');
    const events: RamusEvent[] = [];
    const { DagRunner } = await import('ramus');
    const runner = new DagRunner({
      clock,
      dag: {
        name: 'd',
        nodes: {
          fetch: { run: fetch.run, retry: { attempts: 3, initial: 100 } },
          use: { parents: ['fetch'], run: ({ input }) => `used ${input.fetch}` },
        },
      },
    });
    runner.on('event', (e: RamusEvent) => events.push(e));
    const done = runner.run();
    await settle();
    expect(fetch.attempts).toEqual([1]);
    expect(runner.nodeState('fetch')).toBe('retrying');
    // Exponential by default: 100ms after the first failure, 200ms after the second.
    expect(clock.next()).toBe(T0 + 100);
    await clock.advance(99);
    expect(fetch.attempts).toEqual([1]);
    await clock.advance(1);
    expect(fetch.attempts).toEqual([1, 2]);
    expect(clock.next()).toBe(T0 + 300);
    await clock.advance(200);
    expect(await within(done, 2000, 'run')).toBe('used page');
    expect(fetch.attempts).toEqual([1, 2, 3]);

    const retries = events.filter((e) => e.type === 'dag:node_retry');
    expect(retries.map((e) => [e.sourceNode, (e.data as any).attempt, (e.data as any).delay, (e.data as any).error.message])).toEqual([
      ['fetch', 1, 100, 'flaky 1'],
      ['fetch', 2, 200, 'flaky 2'],
    ]);
    expect(events.some((e) => e.type === 'dag:node_error')).toBe(false);
    const starts = events.filter((e) => e.type === 'dag:node_start' && e.sourceNode === 'fetch');
    expect(new Set(starts.map((e) => e.stepId)).size, 'each attempt has its own step').toBe(3);
    expect(runner.nodeState('fetch')).toBe('finished');
  });

  test('the last failed attempt fails the node with its error; retryOn chooses which errors are retried', async () => {
    const clock = new TestClock(T0);
    const always = flaky(10, 'never');
    const run = runDag({ clock, dag: { name: 'd', nodes: { a: { run: always.run, retry: { attempts: 2, backoff: 'fixed', initial: '1s' } } } } });
    run.catch(() => {});
    await settle();
    await clock.advance('1s');
    await expect(within(run, 2000, 'run')).rejects.toThrow('flaky 2');
    expect(always.attempts).toEqual([1, 2]);

    // A predicate that declines the error: no second attempt.
    const seen: unknown[] = [];
    const bad = flaky(10, 'never');
    const declined = runDag({
      clock,
      dag: {
        name: 'd',
        nodes: {
          a: {
            run: bad.run,
            retry: { attempts: 5, retryOn: (e) => (seen.push(e), (e as Error).message.startsWith('transient')) },
          },
        },
      },
    });
    await expect(within(declined, 2000, 'declined')).rejects.toThrow('flaky 1');
    expect(bad.attempts).toEqual([1]);
    expect((seen[0] as Error).message).toBe('flaky 1');
    expect(clock.next(), 'no retry timer is left armed').toBeUndefined();
  });

  test('a CancelledError is not retried, and cancelling a run during a backoff ends it', async () => {
    const clock = new TestClock(T0);
    let calls = 0;
    const cancelledSelf = runDag({
      clock,
      dag: {
        name: 'd',
        tolerateFailures: true,
        nodes: {
          a: {
            run: () => {
              calls++;
              throw new CancelledError();
            },
            retry: { attempts: 3 },
          },
        },
      },
    });
    await within(cancelledSelf, 2000, 'cancelled self');
    expect(calls).toBe(1);

    const { DagRunner } = await import('ramus');
    const f = flaky(5, 'x');
    const runner = new DagRunner({ clock, dag: { name: 'd', nodes: { a: { run: f.run, retry: { attempts: 3 } } } } });
    const done = runner.run();
    done.catch(() => {});
    await settle();
    expect(runner.nodeState('a')).toBe('retrying');
    runner.cancel();
    await expect(within(done, 2000, 'cancelled')).rejects.toBeInstanceOf(CancelledError);
    expect(clock.next()).toBeUndefined();
    await clock.advance('1h');
    expect(f.attempts).toEqual([1]);
  });
});

describe('timeout on DAG nodes', () => {
  test('an attempt that runs too long fails with a TimeoutError, sees its cancellation, and its late result is ignored', async () => {
    const clock = new TestClock(T0);
    const cancelledSeen: boolean[] = [];
    const releases: Array<(v: string) => void> = [];
    const { DagRunner } = await import('ramus');
    const runner = new DagRunner({
      clock,
      dag: {
        name: 'd',
        nodes: {
          slow: {
            timeout: 50,
            retry: { attempts: 2, initial: 10 },
            run: ({ attempt, isCancelled }) =>
              new Promise<string>((resolve) => {
                releases.push(resolve);
                // Checked when the test releases it.
                releases.push(() => cancelledSeen.push(isCancelled()));
                if (attempt === 2) resolve('second');
              }),
          },
          next: { parents: ['slow'], run: ({ input }) => input.slow },
        },
      },
    });
    const events: RamusEvent[] = [];
    runner.on('event', (e: RamusEvent) => events.push(e));
    const done = runner.run();
    await settle();
    await clock.advance(50);
    const retry = events.find((e) => e.type === 'dag:node_retry')!;
    expect((retry.data as any).error).toBeInstanceOf(TimeoutError);
    expect((retry.data as any).error.message).toBe('Node slow timed out after 50ms');
    // The first attempt still runs; it sees that it is over.
    releases[1]!('');
    expect(cancelledSeen).toEqual([true]);
    await clock.advance(10);
    expect(await within(done, 2000, 'run')).toBe('second');
    // Attempt 1 returns late: nothing changes.
    releases[0]!('late');
    await settle();
    expect(runner.output).toBe('second');
  });

  test('a timeout that retryOn declines is not retried: the node fails with the TimeoutError', async () => {
    const clock = new TestClock(T0);
    const asked: unknown[] = [];
    let calls = 0;
    const run = runDag({
      clock,
      dag: {
        name: 'd',
        nodes: {
          hang: {
            timeout: 50,
            retry: {
              attempts: 3,
              initial: 10,
              retryOn: (e) => {
                asked.push(e);
                return !(e instanceof TimeoutError);
              },
            },
            run: () => {
              calls++;
              return new Promise(() => {});
            },
          },
        },
      },
    });
    run.catch(() => {});
    await settle();
    await clock.advance(50);
    const err = await within(run, 2000, 'run').catch((e) => e);
    expect(err).toBeInstanceOf(TimeoutError);
    expect(asked).toHaveLength(1);
    expect(asked[0]).toBeInstanceOf(TimeoutError);
    expect((asked[0] as Error).message).toBe('Node hang timed out after 50ms');
    expect(calls).toBe(1);
  });

  test('a timeout without retry fails the run with the TimeoutError', async () => {
    const clock = new TestClock(T0);
    const run = runDag({ clock, dag: { name: 'd', nodes: { hang: { timeout: '2s', run: () => new Promise(() => {}) } } } });
    run.catch(() => {});
    await settle();
    await clock.advance('2s');
    const err = await within(run, 2000, 'run').catch((e) => e);
    expect(err).toBeInstanceOf(TimeoutError);
    expect(err.message).toBe('Node hang timed out after 2s');
  });

  test('bad retry and timeout fields are refused with messages that name the node', async () => {
    await expect(runDag({ dag: { name: 'd', nodes: { a: { run: () => 1, retry: { attempts: 0 } } } } })).rejects.toThrow(
      "Node 'a' retry.attempts must be a positive integer, got 0",
    );
    await expect(runDag({ dag: { name: 'd', nodes: { a: { run: () => 1, timeout: 'soon' } } } })).rejects.toThrow("Node 'a' has an invalid timeout: soon");
    await expect(runDag({ dag: { name: 'd', nodes: { a: { run: () => 1, retry: { attempts: 2, backof: 'fixed' } as any } } } })).rejects.toThrow(
      "unknown field 'backof' on retry of node 'a' (did you mean 'backoff'?)",
    );
  });
});

describe('retry on machine states', () => {
  test('a failed state sleeps, runs again with the same input, then takes its transition', async () => {
    const clock = new TestClock(T0);
    const inputs: unknown[] = [];
    let calls = 0;
    const machine = new StateMachineRunner({
      clock,
      input: 'question',
      config: {
        name: 'm',
        initial: 'ask',
        nodes: {
          ask: {
            retry: { attempts: 3, backoff: 'fixed', initial: '5s' },
            run: ({ input, attempt }) => {
              inputs.push([input, attempt]);
              if (++calls < 3) throw new Error(`rate limited ${calls}`);
              return 'answer';
            },
            transition: 'done',
          },
          done: { final: true },
        },
      },
    });
    const events: RamusEvent[] = [];
    machine.on('event', (e: RamusEvent) => events.push(e));
    void machine.run();
    const done = machine.finished;
    await settle();
    expect(machine.machineStatus).toBe('sleeping');
    expect(machine.state).toBe('ask');
    await clock.advance('5s');
    await clock.advance('5s');
    expect(await within(done, 2000, 'run')).toBe('answer');
    expect(inputs).toEqual([
      ['question', 1],
      ['question', 2],
      ['question', 3],
    ]);
    expect(events.filter((e) => e.type === 'state_machine:retry').map((e) => [(e.data as any).attempt, (e.data as any).delay])).toEqual([
      [1, 5000],
      [2, 5000],
    ]);
    expect(events.some((e) => e.type === 'state_machine:error')).toBe(false);
  });

  test("a state's timeout is taken, not retried, unless retryOn says so; then each attempt has a timeout of its own", async () => {
    for (const retryTimeouts of [false, true]) {
      const clock = new TestClock(T0);
      // Another live run, whose retryOn must not be the one asked.
      const other = new StateMachineRunner({
        clock,
        config: { name: 'other', initial: 'w', nodes: { w: { retry: { attempts: 2, retryOn: () => !retryTimeouts }, transition: { x: 'z' } }, z: { final: true } } },
      });
      void other.run();
      const seen: Array<[number, boolean]> = [];
      const checks: Array<() => void> = [];
      const machine = new StateMachineRunner({
        clock,
        config: {
          name: 'm',
          initial: 'call',
          nodes: {
            call: {
              timeout: { after: '1s', state: 'late' },
              retry: { attempts: 3, backoff: 'fixed', initial: '5s', retryOn: (e) => retryTimeouts && e instanceof TimeoutError },
              run: ({ attempt, isCancelled }) => {
                checks.push(() => seen.push([attempt, isCancelled()]));
                return attempt === 2 ? 'second' : new Promise(() => {});
              },
              transition: 'done',
            },
            done: { final: true, run: ({ input }) => `done with ${input}` },
            late: { final: true, run: ({ input }) => `late: ${(input as Error).message}` },
          },
        },
      });
      const events: RamusEvent[] = [];
      machine.on('event', (e: RamusEvent) => events.push(e));
      void machine.run();
      const done = machine.finished;
      await settle();
      await clock.advance('1s');
      if (!retryTimeouts) {
        expect(await within(done, 2000, 'run')).toBe('late: State call timed out after 1s');
        expect(events.some((e) => e.type === 'state_machine:retry')).toBe(false);
        other.cancel();
        continue;
      }
      expect(machine.machineStatus).toBe('sleeping');
      const retry = events.find((e) => e.type === 'state_machine:retry')!;
      expect((retry.data as any).error).toBeInstanceOf(TimeoutError);
      expect((retry.data as any).error.message).toBe('State call timed out after 1s');
      expect((retry.data as any).delay).toBe(5000);
      await clock.advance('5s');
      expect(await within(done, 2000, 'run')).toBe('done with second');
      for (const c of checks) c();
      expect(seen).toEqual([
        [1, true],
        [2, false],
      ]);
      other.cancel();
    }
  });

  test('out of attempts, the error state applies as it would without retry', async () => {
    const clock = new TestClock(T0);
    const machine = new StateMachineRunner({
      clock,
      config: {
        name: 'm',
        initial: 'ask',
        nodes: {
          ask: {
            retry: { attempts: 2, initial: 10 },
            errorState: 'fallback',
            run: () => {
              throw new Error('down');
            },
          },
          fallback: { final: true, run: ({ input }) => `fallback after ${(input as Error).message}` },
        },
      },
    });
    void machine.run();
    const done = machine.finished;
    await settle();
    await clock.advance(10);
    expect(await within(done, 2000, 'run')).toBe('fallback after down');
  });
});

describe('retries of durable runs', () => {
  test('each attempt is a step row, the wait a retry timer', async () => {
    const clock = new TestClock(T0);
    const engine = new Engine({ db: ':memory:', clock, durability: 'sync' });
    engines.push(engine);
    const f = flaky(1, { ok: true });
    engine.register('fetch', f.run as any);
    engine.register('transient', ((e: Error) => e.message.startsWith('flaky')) as any);
    const run = engine.start({
      name: 'fetcher',
      nodes: { fetch: { runner: 'fetch', retry: { attempts: 3, initial: '1m', retryOn: 'transient' } } },
    });
    await settle();
    await within(
      (async () => {
        while (!engine.timers(run.runId).length) await settle(1);
      })(),
      2000,
      'retry timer',
    );
    expect(engine.timers(run.runId)).toMatchObject([{ kind: 'retry', dueAt: T0 + 60_000, firedAt: null }]);
    expect(engine.run(run.runId)?.status).toBe('running');
    await clock.advance('1m');
    expect(await within(run.finished, 2000, 'run')).toEqual({ ok: true });
    expect(engine.steps(run.runId).map((s) => [s.node, s.status, s.attempt, s.error?.message])).toEqual([
      ['fetch', 'error', 1, 'flaky 1'],
      ['fetch', 'finished', 2, undefined],
    ]);
    expect(f.attempts).toEqual([1, 2]);
  });

  test("a stored machine's state timeout retried by a registered retryOn: the timed-out attempt is an error row", async () => {
    const clock = new TestClock(T0);
    const engine = new Engine({ db: ':memory:', clock, durability: 'sync' });
    engines.push(engine);
    engine.register('call', (({ attempt }: { attempt: number }) => (attempt === 1 ? new Promise(() => {}) : 'ok')) as any);
    engine.register('timeouts', ((e: Error) => e instanceof TimeoutError) as any);
    engine.define({
      name: 'caller',
      initial: 'call',
      nodes: {
        call: { runner: 'call', timeout: { after: '30s', state: 'gaveUp' }, retry: { attempts: 2, initial: '1m', retryOn: 'timeouts' }, transition: 'done' },
        done: { final: true },
        gaveUp: { final: true },
      },
    });
    const run = engine.start('caller');
    await settle();
    await clock.advance('30s');
    await clock.advance('1m');
    expect(await within(run.finished, 2000, 'run')).toBe('ok');
    expect(run.state).toBe('done');
    expect(engine.steps(run.runId).map((s) => [s.node, s.status, s.attempt, s.error?.name, s.error?.message])).toEqual([
      ['call', 'error', 1, 'TimeoutError', 'State call timed out after 30s'],
      ['call', 'finished', 2, undefined, undefined],
    ]);
  });
});
