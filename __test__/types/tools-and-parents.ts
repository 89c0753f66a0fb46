// `tools` typed from a `Tools` type parameter (by default `Record<string, any>`), and
// `tolerateParentErrors: true` making the parents' outputs possibly undefined. Every
// `@ts-expect-error` must hit a real error.
import { DagBuilder, StateMachineRunner, defineMachine, runDag, type Dag, type NodeArgs, type StateMachine } from 'ramus';

interface Tools {
  search(q: string): Promise<string[]>;
}
const tools: Tools = { search: async (q) => [q] };

// ---- tools ----

export const dag: Dag<{}, string, unknown, Tools> = {
  name: 'typed-tools',
  nodes: {
    a: {
      run: async ({ tools, rootInput }) => {
        const hits: string[] = await tools.search(rootInput);
        // @ts-expect-error search takes a string
        await tools.search(1);
        // @ts-expect-error these tools have no llm
        tools.llm('x');
        return hits;
      },
    },
  },
};
export const ran: Promise<unknown> = runDag({ dag, input: 'q', tools });

// Without a Tools type, tools are a record of anything (as before).
export const untyped: Dag<{}, string> = { name: 'untyped', nodes: { a: { run: ({ tools }) => tools.anything(1, 2) } } };

export function args({ tools }: NodeArgs<{}, string, {}, Tools>): Promise<string[]> {
  return tools.search('x');
}

export const built = new DagBuilder<{}, string, Tools>('built')
  .node('a', { run: ({ tools, rootInput }) => tools.search(rootInput) })
  .then('b', ({ tools, input }) => tools.search(input.join()))
  .build();
// @ts-expect-error the builder's tools have no llm
new DagBuilder<{}, string, Tools>('bad').node('a', { run: ({ tools }) => tools.llm() });

const machine = defineMachine<{}, string, { go: undefined }, Tools>()({
  name: 'm',
  initial: 'a',
  nodes: {
    a: { run: ({ tools, rootInput }) => tools.search(rootInput), transition: { go: 'b' } },
    // @ts-expect-error the machine's tools have no llm
    b: { final: true, run: ({ tools }) => tools.llm() },
  },
});
new StateMachineRunner({ config: machine, input: 'q', tools });

export const annotatedMachine: StateMachine<{}, string, 'a', {}, Tools> = {
  name: 'annotated',
  initial: 'a',
  nodes: { a: { final: true, run: ({ tools }) => tools.search('x') } },
};

// ---- tolerateParentErrors ----

export const tolerant = new DagBuilder<{}, string>('tolerant')
  .node('split', { run: ({ rootInput }) => rootInput.split(',') })
  .node('len', { run: ({ rootInput }) => rootInput.length })
  .node('strict', { parents: ['split', 'len'], run: ({ input }) => input.split.length + input.len })
  .node('lenient', {
    parents: ['split', 'len'],
    tolerateParentErrors: true,
    run: ({ input }) => {
      const split: string[] | undefined = input.split;
      const len: number | undefined = input.len;
      // @ts-expect-error a failed parent's output is undefined
      const sure: number = input.len;
      return [split, len, sure];
    },
  })
  .node('off', { parents: ['len'], tolerateParentErrors: false, run: ({ input }) => input.len + 1 })
  .then('after', { tolerateParentErrors: true, run: ({ input }) => (input ?? 0) + 1 })
  .build();

new DagBuilder<{}, string>('bad')
  .node('len', { run: ({ rootInput }) => rootInput.length })
  // @ts-expect-error then's input may be undefined when its parent failed
  .then('after', { tolerateParentErrors: true, run: ({ input }) => input + 1 });

export const out: Promise<{ strict: number; lenient: unknown[]; after: number }> = runDag({ dag: tolerant, input: 'a,b' });
