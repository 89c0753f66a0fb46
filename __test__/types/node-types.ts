// Node inputs and outputs are typed through the exported DagNode / NodeArgs interfaces.
import type { Dag, DagNode, NodeArgs } from 'ramus';

interface Ctx {
  count: number;
}
type Root = number;

export const typedNode: DagNode<Ctx, Root, { first: number }, string> = {
  parents: ['first'],
  run: ({ input, rootInput, context }) => {
    const f: number = input.first;
    const r: number = rootInput;
    // @ts-expect-error the inputs have no such parent
    const second = input.second;
    return String(f + r + context.count) + String(second);
  },
};

// @ts-expect-error the output must be a string
export const badOutput: DagNode<Ctx, Root, { first: number }, string> = { run: () => 5 };

export function argsOf(args: NodeArgs<Ctx, Root, { a: string }>): string {
  const c: number = args.context.count;
  // @ts-expect-error input.a is a string
  const n: number = args.input.a;
  return args.input.a + c + n;
}

export const dag: Dag<Ctx, Root> = {
  name: 'nodes',
  nodes: {
    first: { run: ({ rootInput }) => rootInput + 1 },
    second: typedNode,
  },
};
