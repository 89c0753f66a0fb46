// A machine that nobody observes or stores runs plain transitions without asking the core
// each step (the core grants a budget of steps and hears of them with the next report).
// These tests hold such runs to what the same machine does when every step goes through the
// core (a listener on 'event' makes a run observed, which turns the local steps off), and to
// what must reach the run in the middle of a batch: events, cancel, listeners, nested runs,
// isCancelled(), limits.
import { describe, expect, test } from 'vitest';
import { CancelledError, runDag, StateMachineRunner, type StateMachine } from 'ramus';
import { liveRuns } from 'ramus/testing';

const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

/** A machine that walks a, b, c by conditions on a counter, with a trace of every visit. */
function walker(trace: string[], steps: number): StateMachine<{ n: number }> {
  const visit = (name: string) => async ({ input, context }: { input: unknown; context: { n: number } }) => {
    trace.push(`${name}:${String(input)}`);
    context.n++;
    return `${name}${context.n}`;
  };
  return {
    name: 'walker',
    initial: 'a',
    maxSteps: steps + 10,
    context: () => ({ n: 0 }),
    nodes: {
      a: {
        run: visit('a'),
        transition: {
          '': [
            { state: 'done', condition: ({ context }) => context.n >= steps },
            { state: 'b', condition: ({ context }) => context.n % 3 === 1 },
            { state: 'c' },
          ],
        },
      },
      b: { run: visit('b'), transition: { '': [{ state: 'done', condition: ({ context }) => context.n >= steps }, { state: 'a' }] } },
      c: { run: visit('c'), transition: { '': 'a' } },
      done: { final: true },
    },
  };
}

async function walk(steps: number, observe: boolean) {
  const trace: string[] = [];
  const r = new StateMachineRunner({ config: walker(trace, steps), input: 'start' });
  const events: string[] = [];
  if (observe) r.on('event', (e) => e.type === 'state_machine:transition' && events.push(`${(e.data as any).from}>${(e.data as any).to}`));
  await r.run();
  return { trace, output: await r.finished, state: r.state, previous: r.currentState.previousState, context: r.context, events };
}

describe('steps a machine runs by itself', () => {
  test('take the same course as steps the core decides one by one', async () => {
    // 20,000 steps: several budgets of local steps, and the yields between them.
    const local = await walk(20_000, false);
    const core = await walk(20_000, true);
    expect(core.events.length).toBe(20_000);
    expect(local.trace).toEqual(core.trace);
    expect(local.output).toEqual(core.output);
    expect([local.state, local.previous]).toEqual([core.state, core.previous]);
    expect(local.context).toEqual({ n: 20_000 });
    expect(liveRuns()).toBe(0);
  });

  test('stop at maxSteps exactly, naming the state', async () => {
    let n = 0;
    const r = new StateMachineRunner({
      config: { name: 'spin', initial: 's', maxSteps: 9_000, nodes: { s: { run: async () => ++n, transition: 's' } } },
      input: 0,
    });
    void r.run();
    await expect(r.finished).rejects.toThrow('Machine spin exceeded maxSteps (9000) at state s');
    expect(n).toBe(9_000);
  });

  test('an event sent in the middle of a batch is handled where the machine is', async () => {
    let n = 0;
    const r: StateMachineRunner = new StateMachineRunner({
      config: {
        name: 'interrupted',
        initial: 's',
        nodes: {
          s: {
            run: async () => {
              n++;
              if (n === 100) queueMicrotask(() => r.send({ type: 'stop', data: n }));
              return n;
            },
            transition: { stop: 'stopped', '': 's' },
          },
          stopped: { final: true, run: ({ input, event }) => ({ input, event }) },
        },
      },
      input: 0,
    });
    await r.run();
    const out = (await r.finished) as { input: number; event: { type: string; data: number } };
    // The event arrives while step 100 runs (its result comes after the microtask): it is
    // taken after that step, as when the core decides each step (an observed run).
    expect(n).toBe(100);
    expect(out).toEqual({ input: 100, event: { type: 'stop', data: 100 } });
    expect(r.currentState.previousState).toBe('s');
  });

  test('cancel() from a step stops the run there, and that step sees isCancelled()', async () => {
    let n = 0;
    const seen: boolean[] = [];
    const r: StateMachineRunner = new StateMachineRunner({
      config: {
        name: 'cancelled',
        initial: 's',
        nodes: {
          s: {
            run: async ({ isCancelled }) => {
              n++;
              seen.push(isCancelled());
              if (n === 500) {
                r.cancel();
                seen.push(isCancelled());
              }
              return n;
            },
            transition: 's',
          },
        },
      },
      input: 0,
    });
    void r.run();
    await expect(r.finished).rejects.toBeInstanceOf(CancelledError);
    expect(n).toBe(500);
    expect(seen.slice(0, 500).every((c) => c === false)).toBe(true);
    expect(seen[500]).toBe(true);
    expect(r.machineStatus).toBe('cancelled');
  });

  test('a listener attached in the middle sees every transition from then on', async () => {
    let n = 0;
    const moves: Array<[string, string, unknown]> = [];
    const r: StateMachineRunner = new StateMachineRunner({
      config: {
        name: 'watched-later',
        initial: 'a',
        maxSteps: 2_000,
        nodes: {
          a: {
            run: async () => {
              n++;
              if (n === 700) r.on('event', (e) => e.type === 'state_machine:transition' && moves.push([(e.data as any).from, (e.data as any).to, (e.data as any).input]));
              return n;
            },
            transition: { '': [{ state: 'end', condition: ({ output }) => output === 1_000 }, { state: 'a' }] },
          },
          end: { final: true },
        },
      },
      input: 0,
    });
    await r.run();
    expect(await r.finished).toBe(1_000);
    // Listening from inside step 700: the transitions after it (700 > 701 … 1000 > end).
    expect(moves.length).toBe(301);
    expect(moves[0]).toEqual(['a', 'a', 699]);
    expect(moves.at(-1)).toEqual(['a', 'end', 999]);
  });

  test('a run started in a step nests under that step, and the loop goes on after it', async () => {
    // (A machine that failed above still rests in 'error', live.)
    const live = liveRuns();
    let n = 0;
    const r = new StateMachineRunner({
      config: {
        name: 'nesting',
        initial: 's',
        nodes: {
          s: {
            run: async ({ input }) => {
              n++;
              if (n !== 300) return (input as number) + 1;
              await tick();
              return runDag({ dag: { name: 'inner', nodes: { one: { run: async () => (input as number) + 1000 } } }, input: {} });
            },
            transition: { '': [{ state: 'end', condition: ({ output }) => (output as number) >= 2_000 }, { state: 's' }] },
          },
          end: { final: true },
        },
      },
      input: 0,
    });
    await r.run();
    // 299 steps add 1 each, step 300 adds 1000, then +1 until 2000.
    expect(await r.finished).toBe(2_000);
    expect(n).toBe(299 + 1 + (2_000 - 1_299));
    expect(liveRuns()).toBe(live);
  });

  test('step() still runs one state at a time', async () => {
    let n = 0;
    const r = new StateMachineRunner({ config: { name: 'manual', initial: 's', nodes: { s: { run: async () => ++n, transition: 's' } } }, input: 0 });
    for (let i = 0; i < 5; i++) expect(await r.step()).toBe(true);
    expect(n).toBe(5);
    r.cancel();
    await expect(r.finished).rejects.toBeInstanceOf(CancelledError);
  });
});
