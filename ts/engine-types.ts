import type { NodeArgs, NodeResultCache, Retry, Tools } from './dag-types';
import type { Duration, MachineEvent, StateArgs } from './machine-types';
import type { Semaphore } from './semaphore';

/** How runs are written: see docs/durability.md. */
export type Durability = 'sync' | 'batched' | 'off';

export interface EngineOptions {
  /** The SQLite file (created if missing), or `':memory:'`. Default `'./ramus.sqlite'`. */
  db?: string;
  /** The default for runs started by this engine. Default `'batched'`. */
  durability?: Durability;
  /**
   * Commits survive a power loss, not only a crash of the process (SQLite `synchronous =
   * FULL`: an fsync per group commit). Default false. See docs/durability.md.
   */
  fsync?: boolean;
  /** Handed to every runner; never stored. */
  tools?: Tools;
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

/** What a registered runner receives: the usual node or state arguments plus its `args`. */
export type RegisteredRunnerArgs<Ctx = any, Args = any> = StateArgs<Ctx, any, any> & NodeArgs<Ctx, any, any> & { args: Args };

/** A serializable runner: stored definitions name it by its registry key. */
export type RegisteredRunner = (args: RegisteredRunnerArgs) => unknown;

/** A transition condition registered under a key (`condition: 'approved'` in a stored machine). */
export type RegisteredCondition = (input: { context: any; input: any; output: any; rootInput: any; event?: MachineEvent }, event?: MachineEvent) => unknown;

/** A DAG node of a stored definition: it names a registered runner instead of holding code. */
export interface StoredDagNode {
  runner: string;
  args?: unknown;
  parents?: string[];
  semaphoreKey?: string;
  tolerateParentErrors?: boolean;
  tags?: string[];
  info?: object;
  retry?: StoredRetry;
  timeout?: Duration;
  cache?: StoredCache | boolean;
}

/** A stored step's `cache`: its `key`, if any, is a fixed string. */
export type StoredCache = { key?: string; ttl?: Duration; version?: string };

/** A stored step's `retry`: `retryOn` names a registered predicate. */
export type StoredRetry = Omit<Retry, 'retryOn'> & { retryOn?: string };

/** A stored DAG definition: pure JSON. */
export interface StoredDag {
  name: string;
  description?: string;
  /** The initial context of each run (copied per run). */
  context?: object;
  tolerateFailures?: boolean;
  tags?: string[];
  info?: object;
  nodes: Record<string, StoredDagNode>;
}

/** A transition of a stored machine; `condition` names a registered function. */
export interface StoredTransition {
  state: string;
  condition?: string;
  delay?: Duration;
}

/** A state of a stored machine. */
export interface StoredState {
  runner?: string;
  args?: unknown;
  transition?: string | Record<string, string | StoredTransition | StoredTransition[]>;
  final?: boolean;
  errorState?: string;
  semaphoreKey?: string;
  maxVisits?: number;
  timeout?: { after: Duration; state: string };
  retry?: StoredRetry;
  cache?: StoredCache | boolean;
  tags?: string[];
  info?: object;
}

/** A stored state machine definition: pure JSON. */
export interface StoredMachine {
  name: string;
  initial: string;
  description?: string;
  context?: object;
  errorState?: string;
  maxSteps?: number;
  tags?: string[];
  info?: object;
  nodes: Record<string, StoredState>;
}

export type Definition = StoredDag | StoredMachine;

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
}

/** A run as stored (`runs` table, docs/schema.md). */
export interface StoredRun {
  id: string;
  name: string;
  kind: 'dag' | 'machine';
  definitionName: string | null;
  definitionVersion: number | null;
  status: 'pending' | 'running' | 'waitingForEvent' | 'sleeping' | 'finished' | 'error' | 'cancelled';
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
}

/** Which runs to list. */
export interface RunFilter {
  name?: string;
  status?: StoredRun['status'];
  tags?: string[];
  limit?: number;
}
