// The types of time travel and live editing: fork, rerun, updateInput, contextAt, cancelNode,
// addNodes, mergeDag and nodes that expand at run time. Every `@ts-expect-error` must hit a
// real error.
import { DagRunner, Engine, mergeDag, runDag, type Dag, type ForkOptions, type StoredRun } from 'ramus';

const engine = new Engine({ db: ':memory:' }).register({ echo: ({ input }) => input });

export async function travel(runId: string, stepId: string): Promise<void> {
  const fork = await engine.fork<string>(runId, { atStep: stepId, context: { step: 2 } });
  const out: string = await fork.finished;
  const from: StoredRun['forkedFrom'] = engine.run(fork.runId)?.forkedFrom ?? null;
  void from?.stepId;
  // @ts-expect-error atStep is required
  await engine.fork(runId, { context: {} });
  const options: ForkOptions = { atStep: stepId, output: 1 };
  await engine.fork(runId, options);

  const again = await engine.rerun<number>(runId, { node: 'search', output: [1] });
  const n: number = await again.finished;
  // @ts-expect-error rerun names a node
  await engine.rerun(runId, { output: 1 });

  const updated = await engine.updateInput(runId, { topic: 'rust' });
  const rerun: string[] = updated.rerun;
  // @ts-expect-error the patch is an object of root-input keys
  await engine.updateInput(runId, 'rust');

  const ctx = engine.contextAt<{ drafts: number }>(runId, stepId);
  const drafts: number = ctx.drafts;
  engine.cancelNode(runId, 'search');
  void [out, n, rerun, drafts];
}

// ---- a DAG that grows, merges, maps and expands ----

const research: Dag<{}, { topic: string }, unknown> = {
  name: 'research',
  nodes: {
    queries: { run: ({ rootInput }) => [rootInput.topic], uses: ['topic'] },
    each: { parents: ['queries'], map: { over: 'queries', dag: { name: 'one', nodes: { q: { run: ({ rootInput }) => String(rootInput) } } } } },
    made: { parents: ['each'], expand: ({ input }) => ({ name: 'write', nodes: { w: { run: () => JSON.stringify(input) } } }) },
  },
};

export const bad: Dag<{}, unknown> = {
  name: 'bad',
  nodes: {
    // @ts-expect-error a node runs one way: run or map, not both
    both: { run: () => 1, map: { over: 'x', dag: research } },
  },
};

export async function grow(): Promise<void> {
  const runner = new DagRunner({ dag: research, input: { topic: 'wasm' } });
  runner.addNodes({ extra: { parents: ['made'], run: () => 'more' } });
  // @ts-expect-error addNodes takes nodes
  runner.addNodes('extra');
  runner.cancelNode('each');
  await runner.run();
  const merged = mergeDag(research, research, { prefix: 'again.', inputs: ['made'], outputs: [] });
  await runDag({ dag: merged, input: { topic: 'x' } });
  // @ts-expect-error inputs name nodes
  mergeDag(research, research, { inputs: 'made' });
}

// Stored definitions: a node runs by a runner, an expand runner, or a map.
engine.define({ name: 's', nodes: { a: { runner: 'echo' }, b: { parents: ['a'], expand: 'echo' }, c: { parents: ['a'], map: { over: 'a', dag: { name: 'i', nodes: { x: { runner: 'echo' } } } } } } });
// @ts-expect-error a stored node runs one way
engine.define({ name: 's2', nodes: { a: { runner: 'echo', expand: 'echo' } } });
