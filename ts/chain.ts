import type { AnyInputs, Dag, DagNode, DagNodes, NodeArgs, Tools } from './dag-types';

/** A chain step's runner: its `input` is the previous step's output (the root input for the first). */
export type ChainRun<Ctx, Root, In, Out, T = Tools> = (args: NodeArgs<Ctx, Root, In, T>) => Out | Promise<Out>;

/** A chain step as a node: a DAG node without `parents`, which the chain sets. */
export type ChainNode<Ctx, Root, In, Out, T = Tools> = Omit<DagNode<Ctx, Root, AnyInputs, Out, T>, 'parents' | 'run'> & { run: ChainRun<Ctx, Root, In, Out, T> };

/** One element of `chain`: a runner or a node, optionally named: `['fetch', runner]`. */
export type ChainStep<Ctx, Root, In, Out> =
  | ChainRun<Ctx, Root, In, Out>
  | ChainNode<Ctx, Root, In, Out>
  | readonly [name: string, step: ChainRun<Ctx, Root, In, Out> | ChainNode<Ctx, Root, In, Out>];

type S<Ctx, Root, In, Out> = ChainStep<Ctx, Root, Awaited<In>, Out>;
type NineOrMore<T> = readonly [T, T, T, T, T, T, T, T, T, ...T[]];
/** The last output of steps not given (their outputs default to `never`). */
type LastOut<O extends unknown[]> = O extends [...infer Rest, infer L] ? ([L] extends [never] ? LastOut<Rest> : Awaited<L>) : never;

/**
 * A DAG of steps in a line: each step's `input` is the previous step's output, the first's is the
 * root input, and the run's output is the last one's. Steps are named by `[name, step]`, else by
 * a function's own name, else `step1`, `step2`, … by position.
 */
// Optional steps rather than an overload per length: a mistake is then reported at its step.
export function chain<Ctx extends object, Root, A, B = never, C = never, D = never, E = never, F = never, G = never, H = never>(
  name: string,
  steps: readonly [S<Ctx, Root, Root, A>, S<Ctx, Root, A, B>?, S<Ctx, Root, B, C>?, S<Ctx, Root, C, D>?, S<Ctx, Root, D, E>?, S<Ctx, Root, E, F>?, S<Ctx, Root, F, G>?, S<Ctx, Root, G, H>?],
): Dag<Ctx, Root, LastOut<[A, B, C, D, E, F, G, H]>>;
/** Nine steps and more: their inputs and the output are not inferred. */
export function chain<Ctx extends object = any, Root = any>(name: string, steps: NineOrMore<ChainStep<Ctx, Root, any, unknown>>): Dag<Ctx, Root>;
export function chain(name: string, steps: readonly unknown[]): Dag<any, any> {
  if (!Array.isArray(steps) || steps.length === 0) throw new TypeError(`chain '${name}' has no steps`);
  const named = steps.map((s) => (Array.isArray(s) ? s : [undefined, s]) as [unknown, unknown]);
  // A function's own name only when no other step has it: the same function twice is `step1`, `step2`.
  const wanted = named.map(([label, s]) => label ?? (typeof s === 'function' && /^[A-Za-z_$][\w$]*$/.test(s.name) ? s.name : undefined));
  const uses = new Map<unknown, number>();
  for (const w of wanted) uses.set(w, (uses.get(w) ?? 0) + 1);
  const at = new Map<string, number>();
  let prev: string | undefined;
  // fromEntries: a step may be called anything, `__proto__` included.
  const nodes: DagNodes<any, any> = Object.fromEntries(
    named.map(([label, step], i) => {
      if (label !== undefined && typeof label !== 'string') throw new TypeError(`chain '${name}': step ${i + 1} is named by a ${typeof label}, not a string`);
      const key = label ?? (wanted[i] !== undefined && uses.get(wanted[i]) === 1 ? (wanted[i] as string) : `step${i + 1}`);
      if (at.has(key)) throw new Error(`chain '${name}': steps ${at.get(key)! + 1} and ${i + 1} are both named '${key}'`);
      at.set(key, i);
      const node = pipedNode(step, prev, `chain '${name}': step ${i + 1} ('${key}')`);
      prev = key;
      return [key, node];
    }),
  );
  return { name, nodes };
}

/**
 * @internal A step as a DAG node whose `input` is `parent`'s output itself (the root input when
 * there is no parent), not the DAG's `{ [parent]: output }`.
 */
export function pipedNode(step: unknown, parent: string | undefined, culprit: string): DagNode<any, any> {
  const node = (typeof step === 'function' ? { run: step } : step) as DagNode<any, any> | null;
  if (node === null || typeof node !== 'object' || typeof node.run !== 'function') {
    throw new TypeError(`${culprit} is neither a function nor a node with a run function`);
  }
  if (node.parents !== undefined) throw new TypeError(`${culprit} has parents: a chained step's parent is the step before it`);
  const run = node.run;
  const piped = (args: NodeArgs<any, any, AnyInputs>) => run({ ...args, input: parent === undefined ? args.rootInput : args.input[parent] });
  // The run cache keys a node by its runner's source: the step's, not this wrapper's.
  piped.toString = () => String(run);
  return { ...node, parents: parent === undefined ? undefined : [parent], run: piped };
}
