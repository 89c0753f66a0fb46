import { createHash } from 'node:crypto';

import { currentStep } from './context';
import type { DagNodeState, DagRunnerOptions, Dag, DagNodes, NodeArgs, NodeResultCache } from './dag-types';
import { CancelledError, plainErrors } from './errors';
import { ENGINE, storable, StorageError, type EngineInit } from './durable';
import { nodeAttributes } from './tracing';
import { DataCode, W_DATA, W_NODE, W_STATE, type RamusEvent, type WireEvent } from './events';
import { analyzeDagSpecs, NativeDag, NativeDagRun, type NativeStore } from './native';
import { callInStep, RunnerBase, StepArgs } from './runner-base';
import { SlotRequest, type Semaphore } from './semaphore';

/** Node rows as the binding reads them: `[name, parents, tolerateParentErrors, semaphoreKey]`. */
type SpecRow = [string, string[] | null, boolean, string | null];

function specRows(nodes: DagNodes<any, any>, requireRun: boolean): { names: string[]; rows: SpecRow[] } {
  if (nodes === null || typeof nodes !== 'object') throw new TypeError('DAG nodes must be an object of named nodes');
  const names = Object.keys(nodes);
  const rows = new Array<SpecRow>(names.length);
  for (let i = 0; i < names.length; i++) {
    const name = names[i]!;
    const node = nodes[name];
    if (node === null || typeof node !== 'object') throw new TypeError(`Node '${name}' must be an object`);
    if (requireRun && typeof node.run !== 'function') throw new TypeError(`Node '${name}' has no run function`);
    const parents = node.parents;
    if (parents !== undefined && parents !== null) {
      if (!Array.isArray(parents)) throw new TypeError(`Node '${name}' parents must be an array of node names`);
      for (const p of parents) {
        if (typeof p !== 'string') throw new TypeError(`Node '${name}' has a parent that is not a node name: ${String(p)}`);
      }
    }
    const key = node.semaphoreKey;
    if (key !== undefined && typeof key !== 'string') throw new TypeError(`Node '${name}' semaphoreKey must be a string`);
    rows[i] = [name, parents ?? null, node.tolerateParentErrors === true, key ?? null];
  }
  return { names, rows };
}

/**
 * Validate a nodes record: returns its root and leaf node names, or throws
 * `Node 'a' has unknown parent 'b'` / `Cycle detected: a -> b -> a`. Linear in nodes plus edges.
 */
export function analyzeDag(nodes: DagNodes<any, any>): { rootNodes: string[]; leafNodes: string[] } {
  const rows = JSON.stringify(specRows(nodes, false).rows);
  return plainErrors(() => analyzeDagSpecs(rows));
}

/** A DAG analyzed and compiled once, for many runs. */
export class CompiledDag<Ctx extends object = any, Root = unknown, Out = unknown> {
  readonly config: Dag<Ctx, Root, Out>;
  /** @internal */ readonly native: NativeDag;
  /** @internal */ readonly names: string[];
  /** @internal */ readonly runners: Array<NodeArgsRunner>;
  /** @internal */ readonly semaphoreKeys: Array<string | null>;
  /** @internal Compressed parent lists (see `NativeDag.parentTable`). */
  readonly parentTable: Uint32Array;
  /** @internal */ readonly leaves: Uint32Array;
  #index: Map<string, number> | undefined;

  constructor(dag: Dag<Ctx, Root, Out>) {
    if (dag === null || typeof dag !== 'object') throw new TypeError('A DAG must be an object with a name and nodes');
    const { names, rows } = specRows(dag.nodes, true);
    this.config = dag;
    const json = JSON.stringify(rows);
    this.native = plainErrors(() => new NativeDag(String(dag.name ?? ''), json));
    this.names = names;
    this.runners = names.map((n) => dag.nodes[n]!.run);
    this.semaphoreKeys = rows.map((r) => r[3]);
    this.parentTable = this.native.parentTable();
    this.leaves = this.native.leaves();
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
}

type NodeArgsRunner = (args: NodeArgs<any, any, any>) => unknown;

const OK = 0;
const FAILED = 1;
const CANCELLED = 2;
const STATUS_FINISHED = 2;
const STATUS_FAILED = 3;
const STATUS_CANCELLED = 4;
const COUNT_MASK = 0xffffff;
const NODE_MASK = 0x3fffffff;
/** A node output JSON cannot hold (see `#valueJson`). */
const STORAGE_FAILED = '\0storage';

/** Set an own property, even one named `__proto__` (which plain assignment would turn into a prototype change). */
function setKey(obj: Record<string, unknown>, key: string, value: unknown): void {
  if (key === '__proto__') Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
  else obj[key] = value;
}

const attributeCache = new WeakMap<CompiledDag<any, any, any>, string | undefined>();

/** Span attributes from the nodes' `tags` and `info`, once per compiled DAG. */
function dagAttributes(dag: CompiledDag<any, any, any>): string | undefined {
  if (!attributeCache.has(dag)) attributeCache.set(dag, nodeAttributes(dag.config.nodes));
  return attributeCache.get(dag);
}

/** The arguments of one node call. */
class DagNodeArgs extends StepArgs implements NodeArgs<any, any, any> {
  input: any;

  constructor(owner: DagRunner<any, any, any>, slot: number, input: unknown) {
    super(owner, slot);
    this.input = input;
  }
}

/**
 * Runs one DAG. The Rust core decides what runs when; this class calls the runners on the
 * JS thread and reports each outcome back in one synchronous call.
 */
export class DagRunner<Ctx extends object = any, Root = unknown, Out = unknown> extends RunnerBase<Out> {
  readonly dag: CompiledDag<Ctx, Root, Out>;
  declare readonly context: Ctx;
  /** The run's input. */
  readonly input: Root;
  /** The run's output once it finished. */
  output: Out | undefined;

  #core: NativeDagRun;
  #buf: Uint32Array;
  #outputs: unknown[];
  #errors: unknown[] = [];
  #queue: number[] = [];
  #queueHead = 0;
  #pumping = false;
  #semaphores: Semaphore[];
  #slotRequests: Array<SlotRequest | undefined> | undefined;
  #autorun: (() => boolean) | undefined;
  #cache: NodeResultCache | undefined;
  #nodeWaiters: Map<number, Array<(ran: boolean) => void>> | undefined;
  /** 1 while a node's runner is executing (the core marks such nodes cancelled on failure). */
  #running: Uint8Array;

  constructor(options: DagRunnerOptions<Ctx, Root, Out>) {
    if (options === null || typeof options !== 'object') throw new TypeError('DagRunner options must be an object');
    const dag = options.dag instanceof CompiledDag ? options.dag : new CompiledDag(options.dag);
    super(
      options.name ?? dag.config.name,
      options.context ?? dag.config.context?.() ?? {},
      options.input,
      options.tools,
      ['dag:state'],
    );
    this.dag = dag;
    this.input = options.input;
    this.#semaphores = options.semaphores ?? [];
    this.#autorun = options.autorun;
    this.#cache = options.cache;
    const flags =
      (dag.config.tolerateFailures ? 1 : 0) | (options.autorun ? 2 : 0) | (this.#semaphores.length > 0 ? 4 : 0);
    const parent = this.parentFrame;
    const init = (options as { [ENGINE]?: EngineInit })[ENGINE];
    this.#core = new NativeDagRun(
      dag.native,
      flags,
      parent?.owner.runIdentity() ?? init?.runId,
      parent ? parent.owner.stepIdentity(parent.slot) : undefined,
    );
    const n = dag.names.length;
    this.#buf = new Uint32Array(n);
    this.#outputs = new Array(n);
    this.#running = new Uint8Array(n);
    if (parent?.owner.isObserved()) this.observe();
    this.startTrace(options.traceparent, () => dagAttributes(dag));
    this.nestDurable('dag', this.input);
  }

  protected override snapshot(): string {
    return `{"context":${storable(this.context, 'context') ?? 'null'}}`;
  }

  protected override attachNative(store: NativeStore, row: string, resume: boolean, sync: boolean): void {
    // (A DAG holds no events or last output: `output` and `events` are a machine's.)
    this.#core.attachStore(store, row, resume, sync);
  }

  /**
   * @internal Before `run`: the nodes that finished in an earlier process keep their stored
   * outputs; with `tolerateFailures`, those that failed stay failed (their errors as stored).
   */
  restoreFromStore(store: NativeStore, runId: string): void {
    type Rows = Array<[number, unknown?]>;
    const rows = JSON.parse(plainErrors(() => this.#core.restoreFromStore(store, runId))) as { ok: Rows; err: Rows };
    for (const row of rows.ok) this.#outputs[row[0]] = row[1];
    for (const row of rows.err) this.#errors[row[0]] = row[1];
  }

  protected get core(): NativeDagRun {
    return this.#core;
  }

  /** Start the run (once); resolves like `finished`. */
  run(): Promise<Out> {
    const finished = this.finished;
    this.#start();
    return finished;
  }

  #start(): void {
    if (this.#core.status !== 0) return;
    this.attachToParent();
    this.#drive(this.#core.start(this.#buf));
  }

  /** Stop the run: nodes not started never will; running nodes see `isCancelled()` turn true. */
  cancel(): void {
    if (!this.#core.cancel()) return;
    if (this.observed) this.deliverEvents();
    this.cancelChildren();
    this.#end(STATUS_CANCELLED);
  }

  /** A node's state. */
  nodeState(name: string): DagNodeState {
    return this.#core.nodeState(this.#nodeId(name)) as DagNodeState;
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
    const r = this.#core.runNode(id, this.#buf);
    if ((r & COUNT_MASK) === 0) return Promise.resolve(false);
    const done = new Promise<boolean>((resolve) => {
      this.#nodeWaiters ??= new Map();
      const list = this.#nodeWaiters.get(id);
      if (list) list.push(resolve);
      else this.#nodeWaiters.set(id, [resolve]);
    });
    this.#drive(r);
    return done;
  }

  /** @internal */
  slotCancelled(slot: number): boolean {
    return this.#core.isCancelled(slot);
  }

  // ---- driving ----

  #nodeId(name: string): number {
    const id = this.dag.nodeId(name);
    if (id === undefined) throw new Error(`DAG '${this.dag.config.name}' has no node '${name}'`);
    return id;
  }

  /** Apply a core result now if already inside the pump, else start pumping with it. */
  #drive(result: number): void {
    if (this.#pumping) {
      this.#apply(result);
      return;
    }
    this.#pumping = true;
    try {
      this.#apply(result);
      this.#pumpQueue();
    } finally {
      this.#pumping = false;
    }
  }

  /**
   * Outcomes are queued and fed to the core in a loop rather than recursively, so a
   * million synchronous runners in a chain do not grow the stack.
   */
  #settleNode(slot: number, outcome: number, value: unknown): void {
    this.#running[slot] = 0;
    if (outcome === OK) this.#outputs[slot] = value;
    else if (outcome === FAILED) this.#errors[slot] = value;
    const request = this.#slotRequests?.[slot];
    if (request) {
      this.#slotRequests![slot] = undefined;
      request.release();
    }
    this.#queue.push(slot, outcome);
    if (this.#pumping) return;
    this.#pumping = true;
    try {
      this.#pumpQueue();
    } finally {
      this.#pumping = false;
    }
  }

  #pumpQueue(): void {
    const queue = this.#queue;
    while (this.#queueHead < queue.length) {
      const slot = queue[this.#queueHead++]!;
      let outcome = queue[this.#queueHead++]!;
      const waiters = this.#nodeWaiters?.get(slot);
      if (waiters) {
        this.#nodeWaiters!.delete(slot);
        for (const w of waiters) w(true);
      }
      let json: string | undefined;
      if (this.isStored) {
        json = this.#valueJson(slot, outcome);
        if (json === STORAGE_FAILED) {
          outcome = FAILED;
          json = this.storeError(this.#errors[slot]);
        }
      } else if (outcome === FAILED) {
        json = this.storeError(this.#errors[slot]); // for the node's span, when traced
      }
      this.#apply(this.#core.complete(slot, outcome, this.#buf, json));
    }
    queue.length = 0;
    this.#queueHead = 0;
  }

  /**
   * The JSON of a durable node's output or error. An output JSON cannot hold makes the node
   * fail with the `StorageError` naming the path (`STORAGE_FAILED`; the error is kept).
   */
  #valueJson(slot: number, outcome: number): string | undefined {
    if (outcome === OK) {
      try {
        return this.storeJson(this.#outputs[slot], `${this.dag.names[slot]}.output`);
      } catch (err) {
        if (!(err instanceof StorageError)) throw err;
        this.#errors[slot] = err;
        this.#outputs[slot] = undefined;
        return STORAGE_FAILED;
      }
    }
    return outcome === FAILED ? this.storeError(this.#errors[slot]) : undefined;
  }

  #apply(result: number): void {
    const count = result & COUNT_MASK;
    const status = result >>> 24;
    // Copy out before anything runs: listeners and runners may call back into the core,
    // which reuses the buffer.
    let single = 0;
    let many: Uint32Array | undefined;
    if (count === 1) single = this.#buf[0]!;
    else if (count > 1) many = this.#buf.slice(0, count);
    if (status === STATUS_FINISHED && !this.settled) this.output = this.#buildOutput();
    if (this.observed) this.deliverEvents();
    // Written (in 'sync': committed) before the nodes it launches start.
    this.persist();
    if (count === 1) this.#launch(single);
    else if (many) for (let k = 0; k < count; k++) this.#launch(many[k]!);
    if (status >= STATUS_FINISHED) this.#end(status);
  }

  #launch(entry: number): void {
    // A listener may have cancelled the run while this batch was being delivered.
    if (this.settled) return;
    const slot = entry & NODE_MASK;
    const kind = entry >>> 30;
    if (kind === 0) this.#call(slot);
    else if (kind === 1) this.#acquire(slot);
    else if (this.#autorun!()) this.#apply(this.#core.runNode(slot, this.#buf));
  }

  #call(slot: number): void {
    this.#running[slot] = 1;
    const args = new DagNodeArgs(this, slot, this.#buildInput(slot));
    if (this.#cache) {
      this.#callCached(args, this.#cache);
      return;
    }
    callInStep(args, this.dag.runners[slot]!, (failed, value) =>
      this.#settleNode(slot, failed ? (value instanceof CancelledError ? CANCELLED : FAILED) : OK, value),
    );
  }

  async #callCached(args: DagNodeArgs, cache: NodeResultCache): Promise<void> {
    const slot = args.slot;
    const name = this.dag.names[slot]!;
    const run = this.dag.runners[slot]!;
    try {
      const key = createHash('sha256')
        .update(String(run))
        .update('\0')
        .update(JSON.stringify(args.input) ?? '')
        .update('\0')
        .update(JSON.stringify(this.input) ?? '')
        .digest('hex');
      const hit = await cache.get(name, key);
      if (typeof hit === 'string') {
        this.#settleNode(slot, OK, JSON.parse(hit));
        return;
      }
      const output = await currentStep.run(args, run, args);
      const text = JSON.stringify(output);
      if (text !== undefined) await cache.set(name, key, text);
      this.#settleNode(slot, OK, output);
    } catch (err) {
      this.#settleNode(slot, err instanceof CancelledError ? CANCELLED : FAILED, err);
    }
  }

  #acquire(slot: number): void {
    const request = new SlotRequest(this.#semaphores, this.dag.semaphoreKeys[slot]!);
    (this.#slotRequests ??= [])[slot] = request;
    request.acquire().then(
      () => {
        const r = this.#core.acquired(slot, this.#buf);
        if ((r & COUNT_MASK) === 0) request.abort();
        else this.#drive(r);
      },
      (err) => {
        // The node never started: report the semaphore's failure as the node's.
        const r = this.#core.acquired(slot, this.#buf);
        if ((r & COUNT_MASK) === 0) return;
        this.#drive(r & ~COUNT_MASK);
        this.#settleNode(slot, FAILED, err);
      },
    );
  }

  /**
   * Inputs are plain objects, built in V8's dictionary mode (made without a prototype, then
   * given Object.prototype): a DAG of a million differently named parents then does not
   * grow a million hidden-class transitions, which made `{}` 3x slower per node at 100k and
   * worse beyond.
   */
  #buildInput(slot: number): Record<string, unknown> {
    const table = this.dag.parentTable;
    const start = table[slot]!;
    const end = table[slot + 1]!;
    if (start === end) return {};
    const names = this.dag.names;
    const outputs = this.#outputs;
    const input: Record<string, unknown> = Object.setPrototypeOf(Object.create(null), Object.prototype);
    for (let k = start; k < end; k++) {
      const p = table[k]!;
      setKey(input, names[p]!, outputs[p]);
    }
    return input;
  }

  #buildOutput(): Out {
    const leaves = this.dag.leaves;
    if (leaves.length === 1) return this.#outputs[leaves[0]!] as Out;
    const out: Record<string, unknown> = {};
    for (const leaf of leaves) setKey(out, this.dag.names[leaf]!, this.#outputs[leaf]);
    return out as Out;
  }

  #end(status: number): void {
    if (this.settled) return;
    if (this.#nodeWaiters) {
      // Nodes that will never settle now (cancelled before they ran) answer their runNode.
      for (const [slot, waiters] of this.#nodeWaiters) {
        if (!this.#running[slot]) for (const w of waiters) w(false);
      }
    }
    if (status !== STATUS_FINISHED && this.#slotRequests) {
      // Nodes still waiting for slots will never run: give back what they took. Running
      // nodes keep theirs until they end.
      for (let slot = 0; slot < this.#slotRequests.length; slot++) {
        if (!this.#running[slot]) this.#slotRequests[slot]?.abort();
      }
    }
    if (status === STATUS_FAILED) this.cancelChildren();
    if (status === STATUS_FINISHED) this.resolveFinished(this.output as Out);
    else if (status === STATUS_FAILED) this.rejectFinished(this.#errors[this.#core.failedNode], true);
    else this.rejectFinished(new CancelledError(), false);
  }

  protected eventData(w: WireEvent): unknown {
    const node = w[W_NODE];
    switch (w[W_DATA] as DataCode) {
      case DataCode.RunInput:
        return { input: this.input };
      case DataCode.RunOutput:
        return { output: this.output };
      case DataCode.RunError:
        return { error: this.#errors[this.#core.failedNode] };
      case DataCode.NodeInput:
        return { input: this.#buildInput(node) };
      case DataCode.NodeOutput:
        return { output: this.#outputs[node] };
      case DataCode.NodeError:
        return { error: this.#errors[node] };
      case DataCode.State:
        return { state: w[W_STATE] };
      default:
        return undefined;
    }
  }

  protected sourceNode(w: WireEvent): string {
    return w[W_NODE] >= 0 ? this.dag.names[w[W_NODE]]! : '';
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
