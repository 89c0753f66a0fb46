// The same types resolve from an ES module (package.json "exports" import condition).
import { runDag, CancelledError } from 'ramus';
import type { Dag } from 'ramus';

const dag: Dag<{ n: number }, string> = {
  name: 'esm-typed',
  context: () => ({ n: 1 }),
  nodes: {
    a: {
      run: ({ context, rootInput }) => {
        // @ts-expect-error rootInput is a string
        const r: number = rootInput;
        return context.n + r + rootInput.length;
      },
    },
  },
};

export const out: Promise<unknown> = runDag({ dag, input: 'x' });
// @ts-expect-error input must be a string
export const bad = runDag({ dag, input: 5 });
export const err: Error = new CancelledError();
