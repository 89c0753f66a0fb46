import type { StateMachine } from './machine-types';
import { pipedNode, type ChainNode, type ChainRun } from './chain';
import type { NodeResultCache } from './cache';
import type { Semaphore } from './semaphore';

export type { NodeResultCache };

/** Clients, functions and connections handed to every runner; never serialized. Their
 * type where no type parameter (`T`) gives one. */
export type Tools = Record<string, any>;

/** Node states of a DAG run (`retrying`: an attempt failed, the next waits for its backoff). */
export type DagNodeState = 'waiting' | 'ready' | 'pendingSemaphore' | 'running' | 'cancelled' | 'error' | 'finished' | 'retrying';

/**
 * A step's cache entry: `key` replaces the default (a hash of the definition and node
 * names, the runner, its `args`, the input and the root input), `ttl` is how long it
 * lives, and a new `version` leaves the old entries behind.
 */
export interface StepCache<Ctx = any, Root = any, Inputs = any> {
  key?: string | ((a: { input: Inputs; rootInput: Root; args: unknown; context: Ctx }) => string);
  ttl?: Duration;
  version?: string;
}

/** Milliseconds, or a duration text: `'250ms'`, `'90s'`, `'15m'`, `'2h'`, `'30d'`. */
export type Duration = number | string;

/**
 * Run a step again when it fails: `attempts` in all (the first included), waiting `initial`
 * (1s by default) after the first failure, twice that after the next (`'exponential'`, the
 * default) or always `initial` (`'fixed'`), at most `max`; `jitter` waits a random time
 * between half of that and all of it. Each attempt is a step of its own, and the wait is a
 * durable timer. Every error but a `CancelledError` is retried unless `retryOn` (a function,
 * or the key of a registered one in stored definitions) says otherwise.
 */
export interface Retry {
  attempts: number;
  backoff?: 'fixed' | 'exponential';
  initial?: Duration;
  max?: Duration;
  jitter?: boolean;
  retryOn?: string | ((error: unknown) => boolean);
}

/** Parent outputs keyed by parent name. */
export type AnyInputs = Record<string, unknown>;

/** What a runner receives. */
export interface NodeArgs<Ctx, Root, Inputs, T = Tools> {
  /** The run's context: one JSON-serializable object, mutable, shared by the run's nodes. */
  context: Ctx;
  /** The outputs of this node's parents, keyed by parent name (`{}` for roots). */
  input: Inputs;
  /** The run's input. */
  rootInput: Root;
  tools: T;
  /** True once the run was cancelled (or failed) while this node runs. */
  isCancelled(): boolean;
  /** Throws a `CancelledError`, which the engine does not count as a failure, once cancelled. */
  exitIfCancelled(): void;
  /**
   * Record a custom event tied to this node's step. `{ store: false }` (tokens, progress)
   * reaches listeners and `stream()` but is not written to the database or to spans.
   */
  emit(type: string, data?: unknown, options?: { store?: boolean }): void;
  /** Which attempt this is: 1, then 2, 3… when the step has a `retry` and failed before. */
  attempt: number;
}

export interface DagNode<Ctx, Root, Inputs extends AnyInputs = AnyInputs, Out = unknown, T = Tools> {
  /** Names of the nodes whose outputs this node needs. */
  parents?: Array<keyof Inputs & string>;
  /** Join rate limiting under this key: the node holds a slot of each of the run's semaphores while it runs. */
  semaphoreKey?: string;
  /** Another name for `semaphoreKey` (a step's category, e.g. 'llm'): the key its limits are kept under. */
  category?: string;
  /** Run even when a parent failed; that parent's input is `undefined`. */
  tolerateParentErrors?: boolean;
  tags?: string[];
  /** Extra data logged with the node. */
  info?: object;
  /** Run it again when it fails. */
  retry?: Retry;
  /** Cancel an attempt that runs longer and fail it with a `TimeoutError` (then `retry` applies). */
  timeout?: Duration;
  /** How the run's `cache` keeps this node's output, or `false` for never. */
  cache?: StepCache<Ctx, Root, Inputs> | boolean;
  /** The root-input keys it reads: `engine.updateInput` reruns it when one of them changes. */
  uses?: readonly string[];
  run(args: NodeArgs<Ctx, Root, Inputs, T>): Out | Promise<Out>;
}

/**
 * A node that makes its work at run time instead of running a function of its own: `expand`
 * returns a DAG or machine config, which runs nested in the node's step with the node's input;
 * `map` runs `dag` once per item of parent `over`'s output (concurrently, limits applying),
 * each with the item as its root input, and outputs their outputs in item order.
 */
export type DerivedNode<Ctx, Root, T = Tools> = Omit<DagNode<Ctx, Root, any, any, T>, 'run'> &
  (
    | { expand: (args: NodeArgs<Ctx, Root, any, T>) => Dag<any, any, any> | StateMachine<any, any> | Promise<Dag<any, any, any> | StateMachine<any, any>>; map?: never; run?: never }
    | { map: { over: string; dag: Dag<any, any, any> }; expand?: never; run?: never }
  );

export type DagNodes<Ctx, Root, T = Tools> = Record<string, DagNode<Ctx, Root, any, any, T> | DerivedNode<Ctx, Root, T>>;

export interface Dag<Ctx extends object, Root, Out = unknown, T = Tools> {
  name: string;
  /** The default context when the caller gives none. */
  context?: () => Ctx;
  description?: string;
  inputSchema?: object;
  /** Keep running what can run when a node fails; the failed leaves' outputs are `undefined`. */
  tolerateFailures?: boolean;
  tags?: string[];
  info?: object;
  nodes: DagNodes<Ctx, Root, T>;
  /** Phantom: the run's output type, carried by `DagBuilder`. */
  readonly __output?: Out;
}

/** The output type of a node. */
export type DagOutput<N> = N extends DagNode<any, any, any, infer O> ? Awaited<O> : never;

/** Parent outputs keyed by node name, for a nodes record. */
export type DagInputs<T extends Record<string, DagNode<any, any, any, any>>> = { [K in keyof T]: DagOutput<T[K]> };

/** Options of `runDag` and `new DagRunner`. */
export interface DagRunnerOptions<Ctx extends object, Root, Out = unknown> {
  dag: Dag<Ctx, Root, Out, any> | import('./dag').CompiledDag<Ctx, Root, Out>;
  input: Root;
  /** The run's context; defaults to `dag.context()`, or `{}`. */
  context?: Ctx;
  tools?: Tools;
  /** Names this run: its name (in events too) is `'<name>: <DAG name>'`; without it, the DAG's name. */
  name?: string;
  /** Rate limiters for nodes with a `semaphoreKey`. */
  semaphores?: Semaphore[];
  /** Asked when a node becomes ready (with its name): return false to leave it `ready` for `runNode`. */
  autorun?: (node: string) => boolean;
  /** Where node outputs are cached (every node's, but those with `cache: false`): see `memoryCache`, `sqliteCache`… */
  cache?: NodeResultCache;
  /** The W3C traceparent the run's span joins (default: the caller's active span); see `configureTracing`. */
  traceparent?: string;
  /** Where time comes from (default the system clock); a `TestClock` in tests. */
  clock?: { readonly id: number };
}


type IsUnion<T, U = T> = T extends unknown ? ([U] extends [T] ? false : true) : never;

/** A DAG's output: the leaf's output, or an object of the leaves' outputs. */
export type LeafOutput<Outs, Leaves extends keyof Outs> = [Leaves] extends [never]
  ? unknown
  : true extends IsUnion<Leaves>
    ? { [K in Leaves]: Outs[K] }
    : Outs[Leaves];

/** A parent's output as a node sees it: with `tolerateParentErrors`, a failed parent's is `undefined`. */
type Tolerated<Out, Tolerate> = true extends Tolerate ? Out | undefined : Out;

/**
 * Builds a DAG with each node's `input` typed from its parents' outputs, and the run's
 * output typed from the leaves; `then` adds a step fed by the node added last:
 *
 * ```ts
 * const dag = new DagBuilder<{ apiKey: string }, string>('research')
 *   .node('search', { run: async ({ rootInput }) => [rootInput] })
 *   .node('summarize', { parents: ['search'], run: ({ input }) => input.search.join() })
 *   .then('count', ({ input }) => input.length)
 *   .build();
 * const n: number = await runDag({ dag, input: 'rust', context: { apiKey } });
 * ```
 */
export class DagBuilder<Ctx extends object, Root, T = Tools, Outs extends AnyInputs = {}, Parents extends string = never, Last extends keyof Outs & string = never> {
  readonly #name: string;
  readonly #nodes: DagNodes<Ctx, Root, T> = {};
  readonly #options: Omit<Dag<Ctx, Root, unknown, T>, 'name' | 'nodes' | '__output'>;
  #last: string | undefined;

  constructor(name: string, options: Omit<Dag<Ctx, Root, unknown, T>, 'name' | 'nodes' | '__output'> = {}) {
    this.#name = name;
    this.#options = options;
  }

  /** Add a node; `parents` must name nodes added before it. */
  node<const K extends string, O, const P extends keyof Outs & string = never, const Tolerate extends boolean = false>(
    name: K,
    node: Omit<DagNode<Ctx, Root, { [k in P]: Tolerated<Outs[k], Tolerate> }, O, T>, 'parents' | 'tolerateParentErrors'> & { parents?: readonly P[]; tolerateParentErrors?: Tolerate },
  ): DagBuilder<Ctx, Root, T, Outs & { [k in K]: Awaited<O> }, Parents | P, K> {
    return this.#add(name, { ...node, parents: node.parents ? [...node.parents] : undefined } as DagNode<Ctx, Root>);
  }

  /** Add a node whose one parent is the node added last, and whose `input` is that node's output itself (as in `chain`). */
  then<const K extends string, O, const Tolerate extends boolean = false>(
    name: K,
    step: ChainRun<Ctx, Root, Outs[Last], O, T> | (Omit<ChainNode<Ctx, Root, Tolerated<Outs[Last], Tolerate>, O, T>, 'tolerateParentErrors'> & { tolerateParentErrors?: Tolerate }),
  ): DagBuilder<Ctx, Root, T, Outs & { [k in K]: Awaited<O> }, Parents | Last, K> {
    // `await builder` calls then(resolve, reject): say so rather than add a node.
    if (typeof name !== 'string') throw new TypeError(`DagBuilder '${this.#name}': then(name, step) takes a node name first (a DagBuilder is not a promise)`);
    if (this.#last === undefined) throw new Error(`DagBuilder '${this.#name}': then('${name}') has no node before it to follow`);
    return this.#add(name, pipedNode(step, this.#last, `DagBuilder '${this.#name}': then('${name}')`));
  }

  #add(name: string, node: DagNode<Ctx, Root>): any {
    if (Object.hasOwn(this.#nodes, name)) throw new Error(`DagBuilder '${this.#name}' already has a node '${name}'`);
    // Not `nodes[name] =`: a node may be called `__proto__`.
    Object.defineProperty(this.#nodes, name, { value: node, enumerable: true, writable: true, configurable: true });
    this.#last = name;
    return this;
  }

  /** The finished definition. */
  build(): Dag<Ctx, Root, LeafOutput<Outs, Exclude<keyof Outs, Parents>>, T> {
    return { ...this.#options, name: this.#name, nodes: this.#nodes };
  }
}
