// Native runs are let go when they end: a process can run any number of runs one after the
// other. These loops run 20,000 runs in one loop of the test (no timers, no sleeps between
// them), so every run reuses what the previous one released.
//
// After each loop the binding holds no live run (`liveRuns()` from 'ramus/testing').
// This file runs alone in its process (vitest forks one per file), so nothing else holds runs.
import { describe, expect, test } from 'vitest';
import { CancelledError, CompiledDag, DagRunner, runDag, StateMachineRunner, type StateMachine } from 'ramus';
import { liveRuns } from 'ramus/testing';

const N = 20_000;

describe(`${N} runs one after the other`, () => {
  test(`runDag with synchronous runners, ${N} times: every run resolves with its own output`, async () => {
    const dag = { name: 'inc', nodes: { a: { run: ({ rootInput }: any) => rootInput + 1 }, b: { parents: ['a'], run: ({ input }: any) => input.a * 2 } } };
    let i = 0;
    let error: any;
    try {
      for (; i < N; i++) {
        const out = await runDag({ dag, input: i });
        if (out !== (i + 1) * 2) throw new Error(`run ${i} resolved with ${String(out)}`);
      }
    } catch (err) {
      error = err;
    }
    expect(error === undefined ? 'all ran' : `run ${i} (0-based) failed: ${error?.message} (${error?.code})`).toBe('all ran');
    expect(liveRuns()).toBe(0);
  }, 120_000);

  test(`a compiled DAG, a machine, a failing and a cancelled run in turn, ${N} runs in all`, async () => {
    const compiled = new CompiledDag({ name: 'c', nodes: { a: { run: ({ rootInput }: any) => rootInput } } });
    const machine: StateMachine<any, number> = { name: 'm', initial: 'a', nodes: { a: { run: ({ input }: any) => input + 1, transition: 'b' }, b: { final: true } } };
    const failing = { name: 'f', nodes: { a: { run: () => { throw new Error('planned'); } } } };
    let i = 0;
    let error: any;
    try {
      for (; i < N; i++) {
        switch (i % 4) {
          case 0: {
            if ((await runDag({ dag: compiled, input: i })) !== i) throw new Error(`compiled DAG run ${i} gave a wrong output`);
            break;
          }
          case 1: {
            const r = new StateMachineRunner({ config: machine, input: i });
            await r.run();
            if ((await r.finished) !== i + 1) throw new Error(`machine run ${i} gave a wrong output`);
            break;
          }
          case 2: {
            const outcome = await runDag({ dag: failing, input: i }).then(
              () => 'resolved',
              (e: Error) => e.message,
            );
            if (outcome !== 'planned') throw new Error(`failing run ${i}: ${outcome}`);
            break;
          }
          default: {
            const r = new DagRunner({ dag: compiled, input: i });
            r.cancel();
            const outcome = await r.run().then(
              () => 'resolved',
              (e: unknown) => e,
            );
            if (!(outcome instanceof CancelledError)) throw new Error(`cancelled run ${i}: ${String(outcome)}`);
          }
        }
      }
    } catch (err) {
      error = err;
    }
    expect(error === undefined ? 'all ran' : `run ${i} (0-based) failed: ${error?.message} (${error?.code})`).toBe('all ran');
    expect(liveRuns()).toBe(0);
  }, 120_000);

  test('a run that is still live is counted, and let go when it ends', async () => {
    const r = new StateMachineRunner({ config: { name: 'w', initial: 'a', nodes: { a: { transition: { go: 'b' } }, b: { final: true } } }, input: null });
    await r.run();
    expect(liveRuns()).toBe(1);
    r.send({ type: 'go' });
    await r.finished;
    expect(liveRuns()).toBe(0);
  });
});
