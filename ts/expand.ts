// Nodes that make their work at run time: `expand` returns a DAG or machine config to run,
// `map` runs a DAG once per item of a parent's output. What they start runs nested in the
// node's step, so a durable run stores, restores and shows it as its own (the engine nests
// runs started inside steps: see docs/durability.md, "Resume").
import { StateMachineRunner } from './machine';

type Args = { input: unknown; tools?: unknown; [k: string]: unknown };
type Runner = (args: Args) => unknown;
type RunDag = (config: object, input: unknown, tools: unknown) => Promise<unknown>;

/** A config whose nodes (or states) name registered runners, with those runners as `run`. */
function inlined(config: Record<string, any>, lookup: ((key: string) => unknown) | undefined, culprit: string): Record<string, any> {
  const nodes = config['nodes'];
  if (nodes === null || typeof nodes !== 'object') return config;
  const out: Record<string, any> = {};
  for (const [name, node] of Object.entries(nodes as Record<string, any>)) {
    if (node === null || typeof node !== 'object' || typeof node.runner !== 'string') {
      Object.defineProperty(out, name, { value: node, enumerable: true, writable: true, configurable: true });
      continue;
    }
    const { runner, args, ...rest } = node;
    const fn = lookup?.(runner) as Runner | undefined;
    if (typeof fn !== 'function') throw new Error(`${culprit}: node '${name}' names runner '${runner}', which is not registered in this engine`);
    const run = (a: Args) => fn(Object.assign(a, { args }));
    Object.defineProperty(out, name, { value: { ...rest, run }, enumerable: true, writable: true, configurable: true });
  }
  return { ...config, nodes: out };
}

/** The runner of a node with `expand` or `map`, or undefined for a plain node. */
export function derivedRunner(name: string, node: Record<string, any>, lookup: ((key: string) => unknown) | undefined, runDag: RunDag): Runner | undefined {
  if (node['map'] !== undefined) {
    const { over, dag } = node['map'] as { over: string; dag: Record<string, any> };
    const config = inlined(dag, lookup, `Node '${name}' map`);
    return async (a) => {
      const items = (a.input as Record<string, unknown> | undefined)?.[over];
      if (!Array.isArray(items)) {
        throw new TypeError(`Node '${name}' maps over '${over}', whose output is ${items === null ? 'null' : typeof items}, not an array`);
      }
      return Promise.all(items.map((item) => runDag(config, item, a.tools)));
    };
  }
  if (node['expand'] === undefined) return undefined;
  const expand = (typeof node['expand'] === 'string' ? lookup?.(node['expand']) : node['expand']) as Runner | undefined;
  if (typeof expand !== 'function') throw new Error(`Node '${name}' expands with runner '${String(node['expand'])}', which is not registered in this engine`);
  return async (a) => {
    const made = (await expand(a)) as Record<string, any> | null;
    if (made === null || typeof made !== 'object' || typeof made['nodes'] !== 'object') {
      throw new TypeError(`Node '${name}': expand must return a DAG or machine config ({ name, nodes }), got ${made === null ? 'null' : typeof made}`);
    }
    const config = inlined(made, lookup, `Node '${name}' expand`);
    if (config['initial'] === undefined) return runDag(config, a.input, a.tools);
    const machine = new StateMachineRunner({ config: config as any, input: a.input, ...(a.tools === undefined ? {} : { tools: a.tools as any }) });
    await machine.run();
    return machine.finished;
  };
}
