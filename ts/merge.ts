import type { Dag } from './dag-types';

/** Where a merged DAG attaches: its roots' parents and its leaves' children in `into`. */
export interface MergeOptions {
  /** Put before each of the merged DAG's node names (default: its name and a dot). */
  prefix?: string;
  /** Nodes of `into` whose outputs the merged roots take as their `input` (as parents). */
  inputs?: readonly string[];
  /** Nodes of `into` that take every merged leaf as a parent (its output under its prefixed name). */
  outputs?: readonly string[];
}

/**
 * A new DAG: `into` with the nodes of `dag` added under prefixed names. The merged roots
 * take `inputs` as parents (their `input` is those nodes' outputs, by name); each node of
 * `outputs` takes the merged leaves as parents (under their prefixed names). Inline runners
 * of merged nodes still see their own parents under the names they had.
 * Neither config is changed; the result is checked (cycles, parents) when it is run or
 * defined. Works for inline and stored (registered-runner) configs alike.
 *
 * ```ts
 * const full = mergeDag(pipeline, research, { prefix: 'r.', inputs: ['plan'], outputs: ['write'] });
 * ```
 */
export function mergeDag<Ctx extends object, Root, Out>(into: Dag<Ctx, Root, Out>, dag: Dag<any, any, any>, options: MergeOptions = {}): Dag<Ctx, Root, any> {
  for (const [what, d] of [['into', into], ['dag', dag]] as const) {
    if (d === null || typeof d !== 'object' || d.nodes === null || typeof d.nodes !== 'object') {
      throw new TypeError(`mergeDag: ${what} must be a DAG config with nodes`);
    }
  }
  const prefix = options.prefix ?? `${dag.name}.`;
  if (typeof prefix !== 'string') throw new TypeError('mergeDag: prefix must be a string');
  const own = (o: object, k: string) => Object.prototype.hasOwnProperty.call(o, k);
  const names = Object.keys(dag.nodes);
  const named = (n: string) => `${prefix}${n}`;
  for (const list of ['inputs', 'outputs'] as const) {
    for (const n of options[list] ?? []) {
      if (!own(into.nodes, n)) throw new Error(`mergeDag: ${list} names '${n}', which is not a node of ${into.name}`);
    }
  }
  const parented = new Set<string>();
  const nodes: Record<string, any> = { ...into.nodes };
  // Defined, not assigned: a node may be called `__proto__`.
  const set = (k: string, value: unknown) => Object.defineProperty(nodes, k, { value, enumerable: true, writable: true, configurable: true });
  for (const n of names) {
    if (own(nodes, named(n))) throw new Error(`mergeDag: ${into.name} already has a node '${named(n)}' (choose another prefix)`);
    const node = dag.nodes[n] as { parents?: readonly string[] };
    for (const p of node.parents ?? []) parented.add(p);
  }
  // An inline runner sees its parents under their own names, as before the merge (a
  // registered runner of a stored config sees the prefixed names: it cannot be wrapped).
  const unprefixed = (input: unknown) => {
    if (input === null || typeof input !== 'object' || prefix === '') return input;
    return Object.fromEntries(Object.entries(input).map(([k, v]) => [k.startsWith(prefix) ? k.slice(prefix.length) : k, v]));
  };
  const withOwnInput = (f: unknown) => (typeof f === 'function' ? (args: object) => f(Object.create(args, { input: { value: unprefixed((args as { input: unknown }).input), enumerable: true } })) : f);
  for (const n of names) {
    const node = dag.nodes[n] as { parents?: readonly string[]; run?: unknown; expand?: unknown; map?: { over: string; dag: unknown } };
    const parents = node.parents?.length ? node.parents.map(named) : [...(options.inputs ?? [])];
    const moved: Record<string, unknown> = { ...node, parents };
    if (node.parents?.length) {
      if (node.run !== undefined) moved['run'] = withOwnInput(node.run);
      if (node.expand !== undefined) moved['expand'] = withOwnInput(node.expand);
      // A map reads its list from a parent: that parent has its merged name now.
      if (node.map !== undefined) moved['map'] = { ...node.map, over: named(node.map.over) };
    }
    set(named(n), moved);
  }
  const leaves = names.filter((n) => !parented.has(n)).map(named);
  for (const o of options.outputs ?? []) {
    const node = nodes[o] as { parents?: readonly string[] };
    set(o, { ...node, parents: [...(node.parents ?? []), ...leaves] });
  }
  return { ...into, nodes } as Dag<Ctx, Root, any>;
}
