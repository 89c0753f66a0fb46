// chain() and DagBuilder.then(): each step's input is typed from the previous step's output, and
// the run's output from the last step. Every `@ts-expect-error` must hit a real error.
import { chain, DagBuilder, DagRunner, runDag, type ChainNode, type Dag } from 'ramus';

interface Ctx {
  llmCalls: number;
}

// The README's example (the Chains section), as it is there.
async function fetchPage({ input }: { input: string }) {
  return { url: input, html: `<p>${input}</p>` };
}

const summarize = chain('summarize', [
  fetchPage, // input: the root input, a URL
  ['text', ({ input }) => input.html.replace(/<[^>]+>/g, '')], // input: fetchPage's output
  { semaphoreKey: 'llm', run: async ({ input }) => input.slice(0, 100) }, // a node, named step3
]);

export async function readme(): Promise<void> {
  const summary: string = await runDag({ dag: summarize, input: 'https://example.com' });

  const dag = new DagBuilder<Ctx, string>('summarize')
    .node('fetch', { run: ({ rootInput }) => fetchPage({ input: rootInput }) })
    .then('text', ({ input }) => input.html.replace(/<[^>]+>/g, ''))
    .then('summary', {
      semaphoreKey: 'llm',
      run: async ({ input, context }) => {
        context.llmCalls += 1;
        return input.slice(0, 100);
      },
    })
    .build();
  const same: string = await runDag({ dag, input: 'https://example.com', context: { llmCalls: 0 } });
  void [summary, same];
}

// Inference through eight steps, async ones included; the root input comes from the first step.
const eight = chain('eight', [
  ({ input }: { input: string }) => input.split(' '),
  async ({ input }) => input.length,
  ({ input }) => input > 2,
  ({ input }) => (input ? 'yes' : 'no'),
  ({ input }) => [input],
  ({ input }) => input.join(),
  async ({ input }) => ({ text: input }),
  ({ input }) => input.text.length,
]);
export const eightOut: Promise<number> = runDag({ dag: eight, input: 'a b c' });
// @ts-expect-error the root input is the first step's input: a string
export const eightBad = runDag({ dag: eight, input: 5 });
// @ts-expect-error the output is the last step's: a number
export const eightWrong: Promise<string> = runDag({ dag: eight, input: 'a' });

// The context and root input are inferred from the first step's arguments too; named steps and nodes.
const withContext = chain('ctx', [
  ({ rootInput, context }: { rootInput: number; context: Ctx }) => rootInput + context.llmCalls,
  ['label', ({ input, context, rootInput }) => `${input + rootInput + context.llmCalls}`],
  { tags: ['t'], run: ({ input }) => input.length },
]);
export const ctxOut: Promise<number> = new DagRunner({ dag: withContext, input: 1, context: { llmCalls: 0 } }).run();
// @ts-expect-error the context must be a Ctx
export const ctxBad = runDag({ dag: withContext, input: 1, context: { llmCalls: 'none' } });
export const asDag: Dag<Ctx, number, number> = withContext;

// All type arguments given: each step is typed without annotations.
export const explicit = chain<Ctx, string, number, string>('explicit', [({ input, context }) => input.length + context.llmCalls, ({ input }) => String(input)]);

// Typed steps declared apart.
function parse({ input }: { input: { html: string } }): number {
  return input.html.length;
}
export const good = chain('apart', [fetchPage, parse]);
// @ts-expect-error parse needs fetchPage's output, not a number
chain('swapped', [parse, fetchPage]);
// @ts-expect-error a step's input is the previous step's output: a number has no toUpperCase
chain('wrong', [({ input }: { input: string }) => input.length, ({ input }) => input.toUpperCase()]);
// @ts-expect-error a chain sets the parents
chain('parents', [{ parents: ['x'], run: () => 1 }]);
// @ts-expect-error a chain has at least one step
chain('empty', []);

export const node: ChainNode<Ctx, string, number[], number> = { semaphoreKey: 'k', run: ({ input }) => input.length };

// Longer chains type-check, with inputs and output not inferred.
const long = chain('long', [
  ({ input }: { input: number }) => input + 1,
  ({ input }) => input + 1,
  ({ input }) => input + 1,
  ({ input }) => input + 1,
  ({ input }) => input + 1,
  ({ input }) => input + 1,
  ({ input }) => input + 1,
  ({ input }) => input + 1,
  ({ input }) => input + 1,
]);
export const longOut: Promise<unknown> = runDag({ dag: long, input: 1 });

// then(): the input is the last node's output; the output is the leaves'.
const built = new DagBuilder<Ctx, string>('built')
  .node('split', { run: ({ rootInput }) => rootInput.split(',') })
  .then('count', async ({ input }) => input.length)
  .node('first', { parents: ['split'], run: ({ input }) => input.split[0] })
  .then('upper', ({ input }) => input?.toUpperCase())
  .build();
export const builtOut: Promise<{ count: number; upper: string | undefined }> = runDag({ dag: built, input: 'a,b', context: { llmCalls: 0 } });

new DagBuilder<Ctx, string>('bad')
  .node('n', { run: () => 1 })
  // @ts-expect-error then's input is the number the node before it returns
  .then('s', ({ input }) => input.length);

export async function awaitBuilder(): Promise<void> {
  // @ts-expect-error a DagBuilder is not a promise
  await new DagBuilder<Ctx, string>('b').node('n', { run: () => 1 });
}
