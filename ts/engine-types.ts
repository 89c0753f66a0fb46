import type { CompiledDag, DagRunner } from './dag';
import type { Dag, LeafOutput, NodeResultCache, Retry, Tools } from './dag-types';
import type { StateMachineRunner } from './machine';
import type { Duration, MachineEvent, MachineOutput, NodesEvents, RunnerOutput, StateArgs, StateMachine, TransitionGuardInput } from './machine-types';
import type { Semaphore } from './semaphore';

/** How runs are written: see docs/durability.md. */
export type Durability = 'sync' | 'batched' | 'off';

export interface EngineOptions<T = Tools> {
  /** The SQLite file (created if missing), or `':memory:'`. Default `'./ramus.sqlite'`. */
  db?: string;
  /** The default for runs started by this engine. Default `'batched'`. */
  durability?: Durability;
  /**
   * Commits survive a power loss, not only a crash of the process (SQLite `synchronous =
   * FULL`: an fsync per group commit). Default false. See docs/durability.md.
   */
  fsync?: boolean;
  /** Handed to every runner (their `tools`, of the engine's type `T`); never stored. */
  tools?: T;
  /**
   * Where the runs' step outputs are cached (DAG nodes unless `cache: false`, states with a
   * `cache` field); `sqliteCache(engine.db)` keeps them in the engine's own database.
   */
  cache?: NodeResultCache;
  /**
   * How long this engine's hold on a run lasts without renewal (ms, default 30,000): a
   * live engine renews its leases a third of that apart; once a crashed or stopped
   * holder's lease expires, another engine may take its runs over (`resume`).
   */
  leaseMs?: number;
  /** How often live runs look for events sent from other processes (ms). Default 500. */
  pollInterval?: number;
  /** Where time comes from (default the system clock); a `TestClock` in tests. */
  clock?: { readonly id: number };
}

/**
 * What a registered runner receives: the usual node or state arguments plus its `args`. One
 * runner serves every definition that names it, so its context, input and event data are
 * `any` unless its parameter is annotated with narrower types; its tools are the engine's.
 */
export type RegisteredRunnerArgs<Ctx = any, Args = any, T = Tools> = StateArgs<Ctx, any, any, T, Record<string, any>> & { args: Args };

/** A serializable runner: stored definitions name it by its registry key. */
export type RegisteredRunner<T = Tools> = (args: RegisteredRunnerArgs<any, any, T>) => unknown;

/** A transition condition registered under a key (`condition: 'approved'` in a stored machine). */
export type RegisteredCondition = (input: TransitionGuardInput<any, any, any, any, Record<string, any>>, event?: MachineEvent<any>) => unknown;

/** A `retry.retryOn` predicate registered under a key. */
export type RegisteredPredicate = (error: unknown) => unknown;

/**
 * An entry of `engine.register({ … })`: a runner, unless its parameters are annotated as a
 * condition's or a predicate's (an unannotated function is contextually typed as a runner).
 */
export type RegistryEntry<F, T> = F extends RegisteredRunner<T> ? F : F extends RegisteredCondition | RegisteredPredicate ? F : RegisteredRunner<T>;

/** The keys an engine's type knows: any string while it knows none (`register` not chained on `new Engine`). */
export type RegisteredKeys<R> = [keyof R] extends [never] ? string : keyof R & string;

/** What every node of a stored definition may have besides how it runs. */
export interface StoredDagNodeFields<K extends string = string> {
  args?: unknown;
  parents?: readonly string[];
  semaphoreKey?: string;
  /** Another name for `semaphoreKey` (a step's category, e.g. 'llm'): the key its limits are kept under. */
  category?: string;
  tolerateParentErrors?: boolean;
  tags?: string[];
  info?: object;
  retry?: StoredRetry<K>;
  timeout?: Duration;
  cache?: StoredCache | boolean;
  /** The root-input keys it reads: `engine.updateInput` reruns it when one of them changes. */
  uses?: readonly string[];
}

/** A DAG node of a stored definition: it names a registered runner instead of holding code
 * (or, instead, a registered runner that returns what it runs, or a DAG to map over a list).
 * `K`: the registered keys it may name (an engine's `RegisteredKeys`). */
export type StoredDagNode<K extends string = string> = StoredDagNodeFields<K> &
  (
    | { runner: K; expand?: never; map?: never }
    | { /** A registered runner that returns the DAG or machine config this node runs (nested in its step). */ expand: K; runner?: never; map?: never }
    | { /** Run `dag` once per item of parent `over`'s output. */ map: { over: string; dag: { name: string; nodes: Record<string, StoredDagNode<K>> } }; runner?: never; expand?: never }
  );

/** A stored step's `cache`: its `key`, if any, is a fixed string. */
export type StoredCache = { key?: string; ttl?: Duration; version?: string };

/** A stored step's `retry`: `retryOn` names a registered predicate. */
export type StoredRetry<K extends string = string> = Omit<Retry, 'retryOn'> & { retryOn?: K };

/** A stored DAG definition: pure JSON. */
export interface StoredDag<K extends string = string> {
  name: string;
  description?: string;
  /** The initial context of each run (copied per run). */
  context?: object;
  tolerateFailures?: boolean;
  tags?: string[];
  info?: object;
  nodes: Record<string, StoredDagNode<K>>;
}

/** A transition of a stored machine; `condition` names a registered function. */
export interface StoredTransition<K extends string = string> {
  state: string;
  condition?: K;
  delay?: Duration;
}

/** A state of a stored machine. */
export interface StoredState<K extends string = string> {
  runner?: K;
  args?: unknown;
  transition?: string | Record<string, string | StoredTransition<K> | StoredTransition<K>[]>;
  final?: boolean;
  errorState?: string;
  semaphoreKey?: string;
  /** Another name for `semaphoreKey` (a step's category, e.g. 'llm'): the key its limits are kept under. */
  category?: string;
  maxVisits?: number;
  timeout?: { after: Duration; state: string };
  retry?: StoredRetry<K>;
  cache?: StoredCache | boolean;
  tags?: string[];
  info?: object;
}

/** A stored state machine definition: pure JSON. */
export interface StoredMachine<K extends string = string> {
  name: string;
  initial: string;
  description?: string;
  context?: object;
  errorState?: string;
  maxSteps?: number;
  tags?: string[];
  info?: object;
  nodes: Record<string, StoredState<K>>;
}

export type Definition<K extends string = string> = StoredDag<K> | StoredMachine<K>;

/** What `engine.define` stores: JSON, or a typed machine of registered keys (`defineMachine`). */
export type Storable<K extends string> = Definition<K> | StateMachine<any, any, string, any, any, any, K>;

/** What `engine.start` runs: a storable definition, or a DAG or machine of inline code. */
export type Startable<K extends string> = Storable<K> | Dag<any, any, any, any> | CompiledDag<any, any, any> | StateMachine<any, any, string, any, any, any, never>;

/** The output of a registered runner of an engine with registry `R`. */
type RunnerResult<K, R> = K extends keyof R ? (R[K] extends (...args: any) => infer O ? Awaited<O> : unknown) : unknown;
/** An output with the outputs of registered runners (`RunnerOutput`) resolved. */
type Resolved<O, R> = O extends RunnerOutput<infer K> ? RunnerResult<K, R> : O;
/** A DAG's output from its nodes' types: the leaves' outputs. */
type DagNodesOutput<N, R> = LeafOutput<
  { [K in keyof N]: N[K] extends { run: (...args: any) => infer O } ? Awaited<O> : N[K] extends { runner: infer Key } ? RunnerResult<Key, R> : unknown },
  Exclude<keyof N, { [K in keyof N]: N[K] extends { parents: readonly (infer P)[] } ? P : never }[keyof N]>
>;

/**
 * The runner `engine.start(definition)` returns. A typed definition (`defineMachine`,
 * `DagBuilder`, `chain`, an annotated `Dag` or `StateMachine`) keeps its types; a literal's
 * output and events are read from its nodes.
 */
export type EngineRunOf<D, R> = D extends CompiledDag<infer Ctx, infer Root, infer Out>
  ? DagRunner<Ctx, Root, Out>
  : '__output' extends keyof D
    ? D extends StateMachine<infer Ctx, infer Root, infer S, infer M, any, infer Out, any>
      ? StateMachineRunner<Ctx, Root, Resolved<Out, R>, S, M>
      : D extends Dag<infer Ctx, infer Root, infer Out, any>
        ? DagRunner<Ctx, Root, Out>
        : never
    : D extends { initial: string; nodes: infer N }
      ? StateMachineRunner<any, unknown, Resolved<MachineOutput<N>, R>, keyof N & string, NodesEvents<N>>
      : D extends { nodes: infer N }
        ? DagRunner<any, unknown, DagNodesOutput<N, R>>
        : never;

/** `engine.start`'s options for a definition: the input and context types of a typed one. */
export type StartOptionsOf<D> = D extends CompiledDag<infer Ctx, infer Root, any>
  ? StartOptions<Root, Ctx>
  : '__output' extends keyof D
    ? D extends Dag<infer Ctx, infer Root, any, any> | StateMachine<infer Ctx, infer Root, any, any, any, any, any>
      ? StartOptions<Root, Ctx>
      : StartOptions
    : StartOptions;

/** Options of `engine.start`. */
export interface StartOptions<Root = unknown, Ctx = any> {
  input?: Root;
  context?: Ctx;
  tags?: string[];
  /** The run's name; defaults to the definition's. */
  name?: string;
  info?: object;
  /** A stored definition's version; defaults to the latest. */
  version?: number;
  durability?: Durability;
  /** Merged over the engine's tools for this run. */
  tools?: Tools;
  semaphores?: Semaphore[];
  keepAlive?: boolean;
  /** The W3C traceparent the run's span joins (default: the caller's active span). */
  traceparent?: string;
  /**
   * Start at most one run per key: a second `start` (or `enqueue`) with the same key finds
   * the first run. `start` returns it when it is live in this engine, and otherwise throws
   * a `DuplicateRunError` naming it. Stored definitions only.
   */
  idempotencyKey?: string;
}

/** How `engine.enqueue` queues a run for a worker (`engine.work`). */
export interface EnqueueOptions<Root = unknown, Ctx = any> extends Pick<StartOptions<Root, Ctx>, 'input' | 'context' | 'tags' | 'name' | 'info' | 'version'> {
  /** Higher runs first (default 0); each `aging` waited adds one (see `WorkOptions.aging`). */
  priority?: number;
  /** Not before this time (a Date or ms on the engine's clock). */
  runAt?: Date | number;
  /** A second enqueue (or start) with the same key returns the first run, `created: false`. */
  idempotencyKey?: string;
  /** Runs with the same key run one at a time, across all workers. */
  concurrencyKey?: string;
}

/** How `engine.work` takes runs from the store. */
export interface WorkOptions {
  /** How many runs it holds at once (default 10). */
  concurrency?: number;
  /** Only runs of these definitions (default: all). */
  names?: string[];
  /** How often it looks for work when it has free slots (ms, default 200). */
  pollInterval?: number;
  /** A machine idle this long (waiting for an event, or sleeping) is handed back, its slot freed (ms, default 1000). */
  idleAfter?: number;
  /** Waiting this long raises a queued run's priority by one, so low priorities never starve (default '1m'). */
  aging?: number | string;
  /** Merged over the engine's tools for the runs it starts. */
  tools?: Tools;
  semaphores?: Semaphore[];
}

/** A run as stored (`runs` table, docs/schema.md). */
export interface StoredRun {
  id: string;
  name: string;
  kind: 'dag' | 'machine';
  definitionName: string | null;
  definitionVersion: number | null;
  status: 'pending' | 'queued' | 'running' | 'waitingForEvent' | 'sleeping' | 'finished' | 'error' | 'cancelled';
  input: unknown;
  output: unknown;
  error: unknown;
  tags: string[];
  info: unknown;
  traceId: string | null;
  spanId: string | null;
  parentRunId: string | null;
  parentStepId: string | null;
  createdAt: number;
  updatedAt: number;
  endedAt: number | null;
  /**
   * The run and step this run was forked from (`engine.fork`). A run a nested fork kept as
   * it ended (a sibling started before the forked one) names its run and no step.
   */
  forkedFrom: { runId: string; stepId: string | null } | null;
  /** Only from `engine.run(id)`. */
  snapshot?: unknown;
}

/** A step as stored (`steps` table). */
export interface StoredStep {
  id: string;
  runId: string;
  seq: number;
  node: string;
  parentStepId: string | null;
  input: unknown;
  output: unknown;
  error: unknown;
  status: 'pending' | 'running' | 'finished' | 'error' | 'cancelled';
  attempt: number;
  /** Its output came from the cache: the runner did not run. */
  cached: boolean;
  startedAt: number | null;
  endedAt: number | null;
  /** When a rerun (`engine.rerun`, `engine.updateInput`) set this step aside: its node ran again in a later step. */
  supersededAt: number | null;
}

/** What `engine.fork` changes; values are JSON. */
export interface ForkOptions {
  /** The step to fork at (`engine.steps(runId)[i].id`): the fork starts as the run was when it started. */
  atStep: string;
  /** A DAG: the fork's root input. A machine: the input the forked state starts with (at the first step, the run's input too). Default: as it was. */
  input?: unknown;
  /** A machine: the context the forked state starts with (default: the context it had then). A DAG: the run's context. */
  context?: unknown;
  /** The output of the step's node or state, which then does not run (a DAG's downstream runs again; a machine goes on from it as from its runner's). */
  output?: unknown;
}

/** Which runs to list. */
export interface RunFilter {
  name?: string;
  status?: StoredRun['status'];
  tags?: string[];
  limit?: number;
}
