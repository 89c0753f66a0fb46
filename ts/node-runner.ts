import { EventEmitter } from 'node:events';

import { DagRunner } from './dag';
import type { AnyInputs, DagNode, DagNodeState } from './dag-types';
import type { NodeResultCache } from './cache';
import type { RamusEvent } from './events';
import type { Semaphore } from './semaphore';

/** A node's outcome once it settled, as the original's `DagNodeRunner.result`. */
export type RunnerResult<Out> = { type: 'success'; output: Out } | { type: 'error'; error: unknown };

/** Options of a {@link DagNodeRunner} (the original's, plus `clock`). */
export interface DagNodeRunnerOptions<Ctx extends object, Root, Inputs extends AnyInputs, Out> {
  /** The node's name: its parents' children find its output under it. */
  name: string;
  /** The name of the DAG it belongs to (its events' `source`). */
  dagName: string;
  /** Kept for the original's callers; the run's id is the engine's own. */
  dagId?: string;
  config: DagNode<Ctx, Root, Inputs, Out>;
  context: Ctx;
  /** The DAG's input. */
  rootInput: Root;
  cache?: NodeResultCache;
  /** Called with each of this node's events. */
  eventCb?: (event: RamusEvent) => void;
  /** Asked when the parents have finished: false leaves the node `ready` until `run()`. */
  autorun?: () => boolean;
  /** Rate limiters, for a node with a `semaphoreKey`. */
  semaphores?: Semaphore[];
  /** Where time comes from (a `TestClock` in tests). */
  clock?: { readonly id: number };
}

/** The events a {@link DagNodeRunner} emits, as the original's. */
export interface DagNodeRunnerEvents<Out> {
  state: [{ sourceNode: string; source: string; state: DagNodeState }];
  finish: [{ name: string; output: Out }];
  'ramus:error': [{ error: unknown; fatal: false }];
  cancelled: [];
  parentError: [];
}

/** Raised into a child's placeholder for a parent that did not run because its own parent failed. */
class ParentFailed extends Error {}

/**
 * One node wired to its parents by hand, as the original's `DagNodeRunner`: it waits for
 * every parent given to `init` to emit `finish` (or, with `tolerateParentErrors`, to fail),
 * then runs, or stays `ready` for `run()` when `autorun` says no; a parent that fails
 * otherwise cancels it (`parentError`). The deciding is the engine's: the node and one
 * placeholder per parent, which settles as that parent does, are a DAG run of their own.
 *
 * ```ts
 * const search = new DagNodeRunner({ name: 'search', dagName: 'research', rootInput: 'rust', context: {},
 *   config: { run: ({ rootInput }) => [`${rootInput} results`] } });
 * const summary = new DagNodeRunner({ name: 'summary', dagName: 'research', rootInput: 'rust', context: {},
 *   config: { parents: ['search'], run: ({ input }) => (input.search as string[]).join() } });
 * search.init([]);
 * summary.init([search]);
 * await search.run();
 * console.log((await summary.finished).output); // 'rust results'
 * ```
 */
export class DagNodeRunner<Ctx extends object = any, Root = unknown, Inputs extends AnyInputs = AnyInputs, Out = unknown> extends EventEmitter<
  DagNodeRunnerEvents<Out>
> {
  readonly name: string;
  readonly dagName: string;
  readonly config: DagNode<Ctx, Root, Inputs, Out>;
  readonly context: Ctx;
  readonly rootInput: Root;
  readonly autorun: () => boolean;
  readonly semaphores: Semaphore[] | undefined;
  /** How the node ended: set once it finished or failed. */
  result: RunnerResult<Out> | undefined;
  #options: DagNodeRunnerOptions<Ctx, Root, Inputs, Out>;
  #parents: DagNodeRunner<Ctx, Root, AnyInputs, unknown>[] = [];
  #dag: DagRunner<Ctx, Root> | undefined;
  /** `run()` started the run: the node runs as soon as it is ready, whatever `autorun` says. */
  #wanted = false;
  /** `cancel()` was called. */
  #cancelled = false;
  #settled: Promise<void> | undefined;
  #settle: (() => void) | undefined;
  #finished: Promise<{ name: string; output: Out }> | undefined;

  constructor(options: DagNodeRunnerOptions<Ctx, Root, Inputs, Out>) {
    super();
    if (options === null || typeof options !== 'object') throw new TypeError('DagNodeRunner options must be an object');
    if (typeof options.name !== 'string') throw new TypeError('DagNodeRunner: name must be a string');
    this.#options = options;
    this.name = options.name;
    this.dagName = options.dagName ?? options.name;
    this.config = options.config;
    this.context = options.context;
    this.rootInput = options.rootInput;
    this.autorun = options.autorun ?? (() => true);
    this.semaphores = options.semaphores;
  }

  /** The run's id once it started (the original's `dagId` when one was given). */
  get dagId(): string | undefined {
    return this.#options.dagId ?? this.#dag?.runId;
  }

  /** @internal Whether `cancel()` ended it (rather than a failed parent). */
  get cancelCalled(): boolean {
    return this.#cancelled;
  }

  /** `waiting` for parents, `ready` (parents done, `autorun` said no), `pendingSemaphore`, `running`, then `finished`, `error` or `cancelled`. */
  get state(): DagNodeState {
    if (this.#dag) return this.#dag.nodeState(this.name);
    return this.#cancelled ? 'cancelled' : 'waiting';
  }

  /** Resolves with `{ name, output }` when the node finishes; rejects when it fails or is cancelled. */
  get finished(): Promise<{ name: string; output: Out }> {
    // Read after the node settled, it settles as the node did.
    this.#finished ??= outcomeOf(this, new Error('Cancelled'), new Error('parentError')).then((output) => ({ name: this.name, output: output as Out }));
    return this.#finished;
  }

  /** Wire the node to its parents (after every runner was constructed, as in the original). */
  init(parents: DagNodeRunner<Ctx, Root, any, any>[]): void {
    this.#parents = parents;
    // A node with parents waits for them from now on; one without waits for `run()`.
    if (parents.length > 0) this.#start();
  }

  /**
   * Run the node now. Resolves true once it ran (whether it succeeded or failed), false when
   * it cannot run: a parent has not finished, or it is running or done. A node that failed
   * can be run again.
   */
  async run(): Promise<boolean> {
    if (this.#cancelled) return false;
    if (this.#dag === undefined || this.state === 'error') {
      if (this.#parents.some((p) => p.result === undefined)) return false;
      this.#wanted = true;
      this.#start();
      await this.#settled;
      return true;
    }
    if (this.state !== 'ready') return false;
    return this.#dag.runNode(this.name);
  }

  /** Cancel the node unless it ended: a running runner sees `isCancelled()`. */
  cancel(): void {
    const state = this.state;
    if (state !== 'waiting' && state !== 'ready' && state !== 'pendingSemaphore' && state !== 'running') return;
    this.#cancelled = true;
    this.#dag?.cancelNode(this.name);
    this.emit('cancelled');
  }

  #start(): void {
    const placeholders: Record<string, DagNode<Ctx, Root>> = {};
    for (const p of this.#parents) placeholders[p.name] = { cache: false, run: () => parentOutcome(p) };
    const { parents: _declared, ...own } = this.config as DagNode<Ctx, Root> & { parents?: string[] };
    const node = { ...own, parents: this.#parents.map((p) => p.name) } as DagNode<Ctx, Root>;
    this.#settled = new Promise((resolve) => (this.#settle = resolve));
    const dag = new DagRunner<Ctx, Root>({
      dag: { name: this.dagName, tolerateFailures: true, nodes: { ...placeholders, [this.name]: node } },
      input: this.rootInput,
      context: this.context,
      semaphores: this.semaphores,
      cache: this.#options.cache,
      clock: this.#options.clock,
      autorun: (name) => name !== this.name || this.#take() || this.autorun(),
    });
    this.#dag = dag;
    this.result = undefined;
    // A node run again after it failed settles anew.
    this.#finished = undefined;
    dag.on('event', (e: RamusEvent) => this.#event(e));
    dag.run().catch(() => {});
  }

  /** Whether `run()` asked for the node, once. */
  #take(): boolean {
    const wanted = this.#wanted;
    this.#wanted = false;
    return wanted;
  }

  #event(e: RamusEvent): void {
    if (e.sourceNode !== this.name) return;
    this.#options.eventCb?.(e);
    const data = e.data as { state?: DagNodeState; output?: Out; error?: unknown };
    switch (e.type) {
      case 'dag:node_state':
        this.emit('state', { sourceNode: this.name, source: this.dagName, state: data.state! });
        if (data.state === 'cancelled') {
          this.#settle?.();
          if (!this.#cancelled) this.emit('parentError');
        }
        break;
      case 'dag:node_finish':
        this.result = { type: 'success', output: data.output as Out };
        this.#settle?.();
        this.emit('finish', { name: this.name, output: data.output as Out });
        break;
      case 'dag:node_error':
        this.result = { type: 'error', error: data.error };
        this.#settle?.();
        this.emit('ramus:error', { error: data.error, fatal: false });
        break;
    }
  }
}

/**
 * How a node settles (or settled): its output, or its error; `cancelled` when it was
 * cancelled, `parentError` when a failed parent cancelled it. Listeners go once it settles.
 */
function outcomeOf(p: DagNodeRunner<any, any, any, any>, cancelled: Error, parentError: Error): Promise<unknown> {
  if (p.result) return p.result.type === 'success' ? Promise.resolve(p.result.output) : Promise.reject(p.result.error);
  if (p.state === 'cancelled') return Promise.reject(p.cancelCalled ? cancelled : parentError);
  return new Promise((resolve, reject) => {
    const done = () => {
      p.off('finish', onFinish);
      p.off('ramus:error', onError);
      p.off('cancelled', onCancelled);
      p.off('parentError', onParentError);
    };
    const onFinish = (e: { output: unknown }) => (done(), resolve(e.output));
    const onError = (e: { error: unknown }) => (done(), reject(e.error));
    const onCancelled = () => (done(), reject(cancelled));
    const onParentError = () => (done(), reject(parentError));
    p.on('finish', onFinish);
    p.on('ramus:error', onError);
    p.on('cancelled', onCancelled);
    p.on('parentError', onParentError);
  });
}

/** A parent's output, or its failure, for the placeholder that stands for it. */
function parentOutcome(p: DagNodeRunner<any, any, any, any>): Promise<unknown> {
  return outcomeOf(p, new ParentFailed(`${p.name} was cancelled`), new ParentFailed(`a parent of ${p.name} failed`));
}
