import { Op, RunEnd, RunFlag, StepOutcome } from '../index.js';
import type { Dag, DagNodes, DagNodeState, DagRunnerOptions, NodeArgs, NodeResultCache, Tools } from './dag-types';
import { CancelledError, TimeoutError } from './errors';
import { DataCode, W_ARG, W_DATA, W_STATE, type RamusEvent, type WireEvent } from './events';
import { native, plain, type NativeDefinition } from './native';
import { cachedCall, drive, failureOutcome, retryPredicates, RunnerBase, stepArgs, type EngineInit, type Plan } from './runner';
import { dagJson, definitionJson, errorText, StorageError } from './values';
import { derivedRunner } from './expand';

/** The node states by the binding's codes (`NodeState` in ramus-core). */
const NODE_STATES = native.nodeStates() as DagNodeState[];

/**
 * Validate a nodes record: returns its root and leaf node names, or throws
 * `Node 'a' has unknown parent 'b'` / `Cycle detected: a -> b -> a`. Linear in nodes plus edges.
 */
export function analyzeDag(nodes: DagNodes<any, any>): { rootNodes: string[]; leafNodes: string[] } {
  if (nodes === null || typeof nodes !== 'object') throw new TypeError('DAG nodes must be an object of named nodes');
  return plain(() => native.analyzeDag(definitionJson({ name: '', nodes })));
}

/** A DAG analyzed and compiled once (in Rust), for many runs. */
export class CompiledDag<Ctx extends object = any, Root = unknown, Out = unknown> {
  readonly config: Dag<Ctx, Root, Out>;
  /** @internal */ readonly native: NativeDefinition;
  /** @internal */ readonly names: string[];
  /** @internal */ readonly runners: Array<(args: NodeArgs<any, any, any>) => unknown>;
  /** @internal Compressed parent lists (see `NativeDefinition.parentTable`). */
  readonly parentTable: Uint32Array;
  /** @internal */ readonly leaves: Uint32Array;
  /** @internal Per node, its `retry.retryOn`. */
  readonly retryOn: Array<((error: unknown) => boolean) | undefined> | undefined;
  /** @internal Nodes retry or time out: an attempt may report after it is over. */
  readonly timed: boolean;
  #index: Map<string, number> | undefined;
  #sharedShape: Uint8Array | undefined;

  constructor(dag: Dag<Ctx, Root, Out>, definition?: NativeDefinition, runners?: Array<(args: any) => unknown>, lookup?: (key: string) => unknown) {
    if (dag === null || typeof dag !== 'object') throw new TypeError('A DAG must be an object with a name and nodes');
    this.config = dag;
    if (definition) {
      this.native = definition;
      this.names = definition.names();
      this.runners = runners ?? this.names.map((n) => dag.nodes[n]!.run as (args: NodeArgs<any, any, any>) => unknown);
    } else {
      // What JSON.stringify throws (a cycle, a getter) is rethrown as the definition's error, as before.
      const text = plain(() => dagJson(dag));
      this.native = plain(() => new native.NativeDefinition('dag', text.json));
      this.names = text.names;
      this.runners = runners ?? (text.runs as Array<(args: any) => unknown>);
    }
    this.parentTable = this.native.parentTable();
    this.leaves = this.native.leaves();
    for (const i of this.native.derivedNodes()) {
      const name = this.names[i]!;
      const nest = (config: object, input: unknown, tools: unknown) => new DagRunner({ dag: config as Dag<any, any>, input, ...(tools === undefined ? {} : { tools: tools as Tools }) }).run();
      this.runners[i] = derivedRunner(name, dag.nodes[name] as Record<string, any>, lookup, nest) as unknown as (args: NodeArgs<any, any, any>) => unknown;
    }
    this.retryOn = retryPredicates(this.names, dag.nodes, lookup);
    this.timed = this.native.usesTimers();
  }

  /** Roots and leaves by name. */
  get info(): { rootNodes: string[]; leafNodes: string[] } {
    return {
      rootNodes: Array.from(this.native.roots(), (i) => this.names[i]!),
      leafNodes: Array.from(this.leaves, (i) => this.names[i]!),
    };
  }

  /** @internal The id of a node by name. */
  nodeId(name: string): number | undefined {
    this.#index ??= new Map(this.names.map((n, i) => [n, i]));
    return this.#index.get(name);
  }

  /**
   * @internal Per node, 1 when its input is built as an ordinary object literal: it has one
   * parent, and that parent has at least {@link SHARED_SHAPE_MIN} such children, so their inputs
   * share one hidden class (a fan-out's branches). Other inputs are dictionaries: one hidden class
   * per distinct parent name would be a million of them in a million-node chain.
   */
  get sharedShape(): Uint8Array {
    if (this.#sharedShape) return this.#sharedShape;
    const table = this.parentTable;
    const n = this.names.length;
    const children = new Uint32Array(n);
    for (let i = 0; i < n; i++) if (table[i + 1]! - table[i]! === 1) children[table[table[i]!]!]!++;
    const shared = new Uint8Array(n);
    let shapes = 0;
    for (let p = 0; p < n && shapes < SHARED_SHAPES_MAX; p++) {
      if (children[p]! >= SHARED_SHAPE_MIN && this.names[p] !== '__proto__') {
        children[p] = 0xffffffff;
        shapes++;
      }
    }
    for (let i = 0; i < n; i++) if (table[i + 1]! - table[i]! === 1 && children[table[table[i]!]!] === 0xffffffff) shared[i] = 1;
    return (this.#sharedShape = shared);
  }
}

/**
 * Inputs of one parent's single-parent children share a hidden class from this many children on
 * (a dictionary-mode object with one key costs ten times an object literal's).
 */
const SHARED_SHAPE_MIN = 16;
/** At most this many such parents per DAG: each adds a transition from the empty object's hidden class. */
const SHARED_SHAPES_MAX = 256;

/** Set an own property, even one named `__proto__` (which plain assignment would turn into a prototype change). */
function setKey(obj: Record<string, unknown>, key: string, value: unknown): void {
  if (key === '__proto__') Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
  else obj[key] = value;
}

/**
 * A DAG run's name: as in the original, the `name` option prefixes the DAG's ('n: d'). An
 * engine's runs keep the name `start` was given: the store lists and resumes them by it.
 */
function runName(options: DagRunnerOptions<any, any, any>, dagName: string, init: EngineInit | undefined): string {
  if (options.name === undefined) return dagName;
  if (init || (options as { exactName?: boolean }).exactName) return options.name;
  return `${options.name}: ${dagName}`;
}

/**
 * Runs one DAG. The Rust engine decides what runs when; this class calls the runners on
 * the JS thread and reports each result back.
 */
export class DagRunner<Ctx extends object = any, Root = unknown, Out = unknown> extends RunnerBase<Out> {
  readonly dag: CompiledDag<Ctx, Root, Out>;
  declare readonly context: Ctx;
  /** The run's input. */
  readonly input: Root;
  /** The run's output once it finished. */
  output: Out | undefined;
  #outputs: unknown[];
  #shared: Uint8Array;
  #errors: unknown[] = [];
  #failedNode = -1;
  #autorun: ((node: string) => boolean) | undefined;
  #cache: NodeResultCache | undefined;
  #nodeWaiters: Map<number, Array<(ran: boolean) => void>> | undefined;
  #started = false;
  /** A node ran again: an abandoned attempt may report after its node moved on. */
  #reran = false;

  constructor(options: DagRunnerOptions<Ctx, Root, Out>, init?: EngineInit) {
    if (options === null || typeof options !== 'object') throw new TypeError('DagRunner options must be an object');
    const dag = options.dag instanceof CompiledDag ? options.dag : new CompiledDag(options.dag);
    super(dag.native, options.context ?? dag.config.context?.() ?? {}, options.input, { ...options, name: runName(options, dag.config.name, init) }, ['dag:state']);
    this.dag = dag;
    this.input = options.input;
    this.#autorun = options.autorun;
    this.#cache = options.cache;
    this.#outputs = new Array(dag.names.length);
    this.#shared = dag.sharedShape;
    this.begin(init, options.autorun ? RunFlag.Stepwise : 0, options.clock?.id ?? 0, { name: this.name });
  }

  /** Start the run (once); resolves like `finished`. */
  run(): Promise<Out> {
    const finished = this.finished;
    this.#start();
    return finished;
  }

  #start(): void {
    if (this.#started) return;
    this.#started = true;
    if (this.settleMemo()) return;
    drive(() => this.command(Op.Start));
  }

  protected restoreValues(plan: Plan): void {
    for (const [node, v] of plan.dag?.finished ?? []) this.#outputs[node] = v;
    for (const [node, v] of plan.dag?.failed ?? []) this.#errors[node] = v;
  }

  /** A node's state. */
  nodeState(name: string): DagNodeState {
    const id = this.#nodeId(name);
    if (this.final !== undefined) return NODE_STATES[this.final.charCodeAt(36 + id) - 48]!;
    return NODE_STATES[native.nodeState(this.key, id)]!;
  }

  /**
   * Grow the DAG while it runs: `nodes` are added (their parents may be nodes it had or
   * nodes added with them; no cycles); those whose parents have finished start now, the
   * others when their parents settle, and the run's output takes the new leaves. A durable
   * run of a stored definition goes on under a new version of it (nodes must name
   * registered runners), so a resume after a crash runs the larger graph. Not for a run
   * that ended, nor for DAGs whose nodes retry or time out.
   */
  addNodes(nodes: DagNodes<Ctx, Root>): void {
    if (nodes === null || typeof nodes !== 'object') throw new TypeError('addNodes(nodes): nodes must be an object of named nodes');
    if (this.settled) throw new Error('addNodes: the run has ended; nodes can be added only while it runs');
    const have = this.dag.config.nodes;
    for (const name of Object.keys(nodes)) {
      if (Object.prototype.hasOwnProperty.call(have, name)) throw new Error(`addNodes: DAG '${this.dag.config.name}' already has a node '${name}'`);
    }
    const config = { ...this.dag.config, nodes: { ...have, ...nodes } } as Dag<Ctx, Root, Out>;
    // An engine stores a grown graph of registered runners under a name of this run's own,
    // so the definition other runs start from stays as it was.
    const own = this.engine && this.runId ? { ...config, name: `${this.dag.config.name.replace(/ \(grown in run [^)]*\)$/, '')} (grown in run ${this.runId})` } : config;
    const grown = (this.engine ? this.engine.compile(own) : new CompiledDag(config)) as CompiledDag<Ctx, Root, Out>;
    plain(() => native.stageGraph(this.key, grown.native));
    (this as { dag: CompiledDag<Ctx, Root, Out> }).dag = grown;
    this.#shared = grown.sharedShape;
    drive(() => this.command(Op.Grow));
  }

  /**
   * Cancel one node and everything downstream of it, whether waiting or running (a running
   * step sees `isCancelled()`; what it returns later is ignored); the other nodes go on, and
   * the run finishes without the cancelled leaves' outputs. A durable run's cancelled node
   * can be run again later with `engine.rerun`.
   */
  cancelNode(name: string): void {
    const id = this.#nodeId(name);
    this.#start();
    drive(() => this.command(Op.CancelNode, id));
  }

  /**
   * Run one node again while the run goes on, and everything downstream of it, each as a
   * new attempt (a running attempt of those nodes sees `isCancelled()`; what it returns
   * later is ignored); every other node keeps its output. With `output`, the node takes
   * it instead of running, and its downstream runs on it. A cancelled node comes back
   * this way. For a run that ended, use `engine.rerun`.
   */
  rerunNode(name: string, options: { output?: unknown } = {}): void {
    const id = this.#nodeId(name);
    if (options === null || typeof options !== 'object') throw new TypeError('rerunNode(name, options): options must be an object');
    if (this.settled) throw Object.assign(new Error(`rerunNode: run ${this.runId} has ended; rerun its node with engine.rerun`), { code: 'ERR_NOT_LIVE' });
    const given = 'output' in options;
    let json: string | undefined;
    if (given && this.json) {
      const text = this.valueJson(options.output, `${name}.output`);
      if (text instanceof StorageError) throw text;
      json = text;
    }
    this.#start();
    this.#reran = true;
    drive(() => {
      if (given) this.#outputs[id] = options.output;
      this.command(Op.Rerun, id, given ? 1 : 0, json);
    });
  }

  /**
   * Stepwise mode: run one ready node. Resolves true once it settled, false when it is not
   * ready (waiting for parents, or already run).
   */
  runNode(name: string): Promise<boolean> {
    let id: number;
    try {
      id = this.#nodeId(name);
    } catch (err) {
      return Promise.reject(err);
    }
    this.#start();
    if (this.nodeState(name) !== 'ready') return Promise.resolve(false);
    const done = new Promise<boolean>((resolve) => {
      this.#nodeWaiters ??= new Map();
      const list = this.#nodeWaiters.get(id);
      if (list) list.push(resolve);
      else this.#nodeWaiters.set(id, [resolve]);
    });
    drive(() => this.command(Op.RunNode, id));
    return done;
  }

  #nodeId(name: string): number {
    const id = this.dag.nodeId(name);
    if (id === undefined) throw new Error(`DAG '${this.dag.config.name}' has no node '${name}'`);
    return id;
  }

  protected semaphoreKey(node: number): string {
    const n = this.dag.config.nodes[this.dag.names[node]!];
    return n?.semaphoreKey ?? n?.category ?? '';
  }

  /** @internal A step slot is its node, or for a later attempt `attempt * nodes + node`. */
  launch(slot: number, node: number, _budget: number, attempt: number): void {
    // A listener may have cancelled the run while this batch was being delivered.
    if (this.settled) return;
    const args = stepArgs(this, slot, this.#buildInput(node), attempt);
    const run = this.dag.runners[node]!;
    if (this.#cache) {
      const name = this.dag.names[node]!;
      const spec = this.dag.config.nodes[name] as { cache?: unknown; runner?: string; args?: unknown };
      if (spec.cache !== false) return cachedCall(this, slot, this.#cache, { definition: this.dag.config.name, node: name, spec, run, args });
    }
    this.call(slot, run, args);
  }

  /** @internal */
  override timedOut(node: number): void {
    this.#errors[node] = new TimeoutError(native.message(this.key) ?? `Node ${this.dag.names[node]} timed out`);
  }

  /** @internal */
  override retryPredicate(node: number): ((error: unknown) => boolean) | undefined {
    return this.dag.retryOn?.[node];
  }

  /** @internal Stepwise: a node is ready; `autorun` may start it at once. */
  override ready(slot: number): void {
    if (this.#autorun!(this.dag.names[slot % this.dag.names.length]!)) drive(() => this.command(Op.RunNode, slot));
  }

  protected reported(slot: number, outcome: number, value: unknown): void {
    const n = this.dag.names.length;
    const node = slot < n ? slot : slot % n;
    // An attempt that timed out: its node has moved on, and its values must not overwrite.
    if ((this.dag.timed || this.#reran) && native.isCancelled(this.key, slot)) return;
    const waiters = this.#nodeWaiters?.get(node);
    if (waiters) {
      this.#nodeWaiters!.delete(node);
      for (const w of waiters) w(true);
    }
    let json: string | StorageError | undefined;
    if (outcome === StepOutcome.Ok || outcome === StepOutcome.Cached) {
      this.#outputs[node] = value;
      json = this.json ? this.valueJson(value, `${this.dag.names[node]}.output`) : undefined;
      if (json instanceof StorageError) {
        // An output JSON cannot hold fails the node with the error naming the path.
        this.#outputs[node] = undefined;
        value = json;
        outcome = StepOutcome.Error;
      }
    }
    if (outcome === StepOutcome.Error) {
      this.#errors[node] = value;
      json = this.json ? errorText(value) : undefined;
      outcome = failureOutcome(this.dag.retryOn?.[node], value);
    }
    this.reportStep(slot, outcome, -1, json as string | undefined, this.sync ? this.contextJson() : undefined);
  }

  protected override flushContext(): string | undefined {
    return this.contextJson();
  }

  /** @internal */
  ended(end: number, failedNode: number, notices: Array<() => void>): boolean {
    // A batched run's end was written with the context of its last flush: write the one it
    // ended with (before `finished` waits for the commit).
    if (this.stored && !this.sync) this.flushNow();
    if (this.#nodeWaiters) {
      // Nodes that will never settle now (cancelled before they ran) answer their runNode.
      for (const [slot, waiters] of this.#nodeWaiters) {
        if (native.nodeState(this.key, slot) !== 3) for (const w of waiters) w(false);
      }
    }
    this.#failedNode = failedNode;
    if (end !== RunEnd.Finished) this.abortWaiting();
    if (end === RunEnd.Finished) {
      this.output = this.#buildOutput();
      const output = this.output as Out;
      notices.push(() => this.resolveFinished(output));
    } else if (end === RunEnd.Failed) {
      const error = this.#errors[this.#failedNode];
      notices.push(() => this.rejectFinished(error, true));
    } else {
      notices.push(() => this.rejectFinished(this.storageError ?? new CancelledError(), this.storageError !== undefined));
    }
    return true;
  }

  /**
   * Inputs are plain objects, built in V8's dictionary mode (made without a prototype, then
   * given Object.prototype): a DAG of a million differently named parents then does not
   * grow a million hidden-class transitions. The branches of a fan-out are the exception
   * (`CompiledDag.sharedShape`): their inputs all have the one key, so they share one.
   */
  #buildInput(slot: number): Record<string, unknown> {
    const table = this.dag.parentTable;
    const start = table[slot]!;
    const end = table[slot + 1]!;
    if (start === end) return {};
    const names = this.dag.names;
    const outputs = this.#outputs;
    if (this.#shared[slot] === 1) {
      const parent = table[start]!;
      const input: Record<string, unknown> = {};
      input[names[parent]!] = outputs[parent];
      return input;
    }
    const input: Record<string, unknown> = Object.setPrototypeOf(Object.create(null), Object.prototype);
    for (let k = start; k < end; k++) setKey(input, names[table[k]!]!, outputs[table[k]!]);
    return input;
  }

  #buildOutput(): Out {
    const leaves = this.dag.leaves;
    if (leaves.length === 1) return this.#outputs[leaves[0]!] as Out;
    const out: Record<string, unknown> = {};
    for (const leaf of leaves) setKey(out, this.dag.names[leaf]!, this.#outputs[leaf]);
    return out as Out;
  }

  protected nodeName(node: number): string {
    return this.dag.names[node]!;
  }

  protected eventData(w: WireEvent): unknown {
    const node = w[4];
    switch (w[W_DATA] as DataCode) {
      case DataCode.RunInput:
        return { input: this.input };
      case DataCode.RunOutput:
        return { output: this.output };
      case DataCode.RunError:
        return { error: this.#errors[this.#failedNode] };
      case DataCode.NodeInput:
        return { input: this.#buildInput(node) };
      case DataCode.NodeOutput:
        return { output: this.#outputs[node] };
      case DataCode.CachedOutput:
        return { output: this.#outputs[node], cached: true };
      case DataCode.NodeError:
        return { error: this.#errors[node] };
      case DataCode.Retry:
        return { error: this.#errors[node], attempt: w[W_ARG], delay: Number(w[W_STATE]) };
      case DataCode.State:
        return { state: w[W_STATE] };
      default:
        return undefined;
    }
  }

  protected onEvent(event: RamusEvent, w: WireEvent): void {
    if (w[W_DATA] === DataCode.State) this.emitSafely('dag:state', { sourceNode: event.sourceNode, state: w[W_STATE] });
  }
}

/** Run a DAG and resolve with its output. */
export function runDag<Ctx extends object, Root, Out>(options: DagRunnerOptions<Ctx, Root, Out>): Promise<Out> {
  try {
    return new DagRunner(options).run();
  } catch (err) {
    return Promise.reject(err);
  }
}
