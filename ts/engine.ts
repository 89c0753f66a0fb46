import { analyzeDag, CompiledDag, DagRunner } from './dag';
import type { Dag, NodeArgs, Tools } from './dag-types';
import { durableRunsOf, ENGINE, storable, type EngineInit, type MachineRestore } from './durable';
import { plainErrors } from './errors';
import { compile, parseDuration, StateMachineRunner } from './machine';
import type { Duration, MachineEvent, StateArgs, StateMachine } from './machine-types';
import { inspect, type InspectOptions, type Inspector } from './inspect/server';
import { NativeStore, newRunId } from './native';
import type { Semaphore } from './semaphore';

/** How runs are written: see docs/durability.md. */
export type Durability = 'sync' | 'batched' | 'off';

export interface EngineOptions {
  /** The SQLite file (created if missing), or `':memory:'`. Default `'./ramus.sqlite'`. */
  db?: string;
  /** The default for runs started by this engine. Default `'batched'`. */
  durability?: Durability;
  /** Handed to every runner; never stored. */
  tools?: Tools;
  /** How often live runs look for events sent from other processes (ms). Default 500. */
  pollInterval?: number;
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
}

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

export type EngineRun = DagRunner<any, any, any> | StateMachineRunner<any, any, any, any>;

/** What runs: a machine config, a DAG config, or a DAG compiled once for many runs. */
type Runnable = Dag<any, any> | StateMachine<any, any> | CompiledDag;

function plain(config: Runnable): { tags?: string[]; info?: object } {
  return config instanceof CompiledDag ? config.config : config;
}

const TERMINAL = new Set(['finished', 'error', 'cancelled']);

function isMachine(config: object): boolean {
  return (config as { initial?: unknown }).initial !== undefined;
}

function checkDurability(d: unknown): Durability {
  if (d === 'sync' || d === 'batched' || d === 'off') return d;
  throw new TypeError(`durability must be 'sync', 'batched' or 'off', got ${JSON.stringify(d)}`);
}

/**
 * Durable runs over an embedded SQLite store: runs started here are written as they go,
 * can be resumed in another process, take events while nobody runs them, and can be read
 * back. See docs/durability.md.
 */
export class Engine {
  /** The database path. */
  readonly db: string;
  readonly durability: Durability;
  #store: NativeStore;
  #tools: Tools;
  #runners = new Map<string, RegisteredRunner>();
  #live = new Map<string, EngineRun>();
  #pollInterval: number;
  #poll: NodeJS.Timeout | undefined;
  /** Stored events already handed to each live run (their delivery may not be committed yet). */
  #taken = new Map<string, Set<string>>();
  #closed = false;
  /** Stored definitions made runnable, by `name@version`: a DAG compiles once per version. */
  #loaded = new Map<string, Runnable>();

  constructor(options: EngineOptions = {}) {
    if (options === null || typeof options !== 'object') throw new TypeError('Engine options must be an object');
    this.db = options.db ?? './ramus.sqlite';
    if (typeof this.db !== 'string' || this.db === '') throw new TypeError('Engine db must be a file path or ":memory:"');
    this.durability = checkDurability(options.durability ?? 'batched');
    this.#tools = options.tools ?? {};
    this.#pollInterval = options.pollInterval ?? 500;
    // The store is opened for writing even when the default durability is 'off': a run
    // may still ask for 'sync' or 'batched', and reads need the schema.
    this.#store = plainErrors(() => new NativeStore(this.db, 'batched'));
  }

  // ---- definitions ----

  /** Register serializable runners (and transition conditions) by key. */
  register(key: string, fn: RegisteredRunner | RegisteredCondition): this;
  register(registry: Record<string, RegisteredRunner | RegisteredCondition>): this;
  register(keyOrRegistry: string | Record<string, RegisteredRunner | RegisteredCondition>, fn?: RegisteredRunner | RegisteredCondition): this {
    if (typeof keyOrRegistry === 'string') {
      if (keyOrRegistry === '') throw new TypeError('register(key, fn): key must be a non-empty string');
      if (typeof fn !== 'function') throw new TypeError(`register('${keyOrRegistry}', fn): fn must be a function`);
      this.#runners.set(keyOrRegistry, fn as RegisteredRunner);
      // Loaded definitions hold the functions registered when they were loaded.
      this.#loaded.clear();
      return this;
    }
    if (keyOrRegistry === null || typeof keyOrRegistry !== 'object') throw new TypeError('register() takes a key and a function, or an object of them');
    for (const [key, f] of Object.entries(keyOrRegistry)) this.register(key, f);
    return this;
  }

  /**
   * Store a definition made only of registered runners. Returns its version: a new one
   * only when the content differs from the latest.
   */
  define(config: Definition): { name: string; version: number; created: boolean } {
    this.#open();
    return this.#define(config, undefined);
  }

  /** `define`, given the config's JSON when the caller has it already. */
  #define(config: Definition, json: string | undefined): { name: string; version: number; created: boolean } {
    const kind = this.#validate(config);
    json ??= storable(config, `definition ${config.name}`)!;
    const v = JSON.parse(plainErrors(() => this.#store.putDefinition(config.name, kind, json))) as { name: string; version: number; created: boolean };
    return { name: v.name, version: v.version, created: v.created };
  }

  /** Check a definition: JSON only, known runner keys, a valid graph. Returns its kind. */
  #validate(config: Definition): 'dag' | 'machine' {
    if (config === null || typeof config !== 'object') throw new TypeError('A definition must be an object with a name and nodes');
    if (typeof config.name !== 'string' || config.name === '') throw new TypeError('A definition needs a name');
    if (config.nodes === null || typeof config.nodes !== 'object') throw new TypeError(`Definition '${config.name}' has no nodes`);
    for (const [node, spec] of Object.entries(config.nodes as Record<string, { run?: unknown; runner?: unknown }>)) {
      if (spec !== null && typeof spec === 'object' && typeof spec.run === 'function') {
        throw new TypeError(
          `Definition '${config.name}' cannot be stored: node '${node}' has an inline run function; name a registered runner instead (runner: 'key', args: {…})`,
        );
      }
    }
    const materialized = this.#materialize(config, `Definition '${config.name}'`);
    if (isMachine(config)) {
      compile(materialized as StateMachine<any, any>, undefined);
      return 'machine';
    }
    analyzeDag((materialized as Dag<any, any>).nodes);
    return 'dag';
  }

  #runner(key: unknown, where: string): RegisteredRunner {
    const fn = typeof key === 'string' ? this.#runners.get(key) : undefined;
    if (!fn) {
      const known = [...this.#runners.keys()];
      throw new Error(`${where} names runner '${String(key)}', which is not registered in this engine (registered: ${known.length ? known.join(', ') : 'none'})`);
    }
    return fn;
  }

  /** A stored definition with its runner keys replaced by the registered functions. */
  #materialize(config: Definition, what: string): Dag<any, any> | StateMachine<any, any> {
    const nodes: Record<string, unknown> = {};
    const machine = isMachine(config);
    for (const [name, spec] of Object.entries(config.nodes as Record<string, Record<string, unknown>>)) {
      if (spec === null || typeof spec !== 'object') {
        nodes[name] = spec;
        continue;
      }
      const node: Record<string, unknown> = { ...spec };
      if (spec.runner !== undefined || !machine) {
        const fn = this.#runner(spec.runner, `${what}: node '${name}'`);
        const args = spec.args;
        node.run = (a: Record<string, unknown>) => {
          a.args = args;
          return fn(a as unknown as RegisteredRunnerArgs);
        };
      }
      if (machine && spec.transition !== null && typeof spec.transition === 'object') {
        const transitions: Record<string, unknown> = {};
        for (const [event, value] of Object.entries(spec.transition as Record<string, unknown>)) {
          const one = (t: unknown): unknown => {
            if (t === null || typeof t !== 'object' || typeof (t as StoredTransition).condition !== 'string') return t;
            const key = (t as StoredTransition).condition!;
            const cond = this.#runner(key, `${what}: state '${name}' transition '${event}' condition`) as unknown as RegisteredCondition;
            return { ...(t as object), condition: (g: never, e: never) => cond(g, e) };
          };
          transitions[event] = Array.isArray(value) ? value.map(one) : one(value);
        }
        node.transition = transitions;
      }
      nodes[name] = node;
    }
    const context = config.context;
    return {
      ...config,
      context: context === undefined ? undefined : () => structuredClone(context),
      nodes,
    } as unknown as Dag<any, any>;
  }

  /** A config's JSON when it can be stored (runners by key, no functions), else undefined. */
  #configJson(config: object): string | undefined {
    try {
      return storable(config, 'config');
    } catch {
      return undefined;
    }
  }

  // ---- runs ----

  /**
   * Start a run of a stored definition (by name) or of a config. A config made of
   * registered runners is defined (stored) first, so the run can be resumed; a config with
   * inline `run` functions is recorded but cannot be resumed in another process.
   */
  start<Out = unknown>(definition: string | Definition | Dag<any, any, any> | StateMachine<any, any, any>, options: StartOptions = {}): EngineRun & { readonly finished: Promise<Out> } {
    this.#open();
    if (options === null || typeof options !== 'object') throw new TypeError('start(definition, options): options must be an object');
    const durability = checkDurability(options.durability ?? this.durability);
    let config: Runnable;
    const json = definition !== null && typeof definition === 'object' ? this.#configJson(definition) : undefined;
    let defName: string | null = null;
    let version: number | null = null;
    if (typeof definition === 'string') {
      version = options.version ?? plainErrors(() => this.#store.latestVersion(definition)) ?? null;
      if (version === null) throw new Error(`No definition named '${definition}' in ${this.db}`);
      config = this.#load(definition, version);
      defName = definition;
    } else if (json !== undefined) {
      const v = this.#define(definition as Definition, json);
      config = this.#load(v.name, v.version, definition as Definition);
      defName = v.name;
      version = v.version;
    } else {
      config = definition as Runnable;
      if (config === null || typeof config !== 'object') throw new TypeError('start() takes a definition name or a DAG or machine config');
    }
    const runId = newRunId();
    const runner = this.#create(config, runId, options, {});
    if (durability !== 'off') {
      const row = {
        id: runId,
        name: runner.name,
        kind: isMachine(config) ? 'machine' : 'dag',
        definitionName: defName,
        definitionVersion: version,
        tags: options.tags ?? plain(config).tags ?? [],
        parentRunId: null,
        parentStepId: null,
      };
      const json =
        JSON.stringify(row).slice(0, -1) +
        `,"input":${storable(options.input, 'input') ?? 'null'},"info":${storable(options.info ?? plain(config).info, 'info') ?? 'null'}}`;
      runner.attachDurable(this.#store, runId, json, false, durability === 'sync');
    }
    this.#track(runId, runner);
    void runner.run();
    return runner as EngineRun & { readonly finished: Promise<Out> };
  }

  /** A stored definition's runnable form, made once per version (and per registry change). */
  #load(name: string, version: number, config?: Definition): Runnable {
    const key = `${name}@${version}`;
    let loaded = this.#loaded.get(key);
    if (!loaded) {
      config ??= this.#definition(name, version).config;
      const materialized = this.#materialize(config, `Definition '${name}' (version ${version})`);
      loaded = isMachine(config) ? materialized : new CompiledDag(materialized as Dag<any, any>);
      this.#loaded.set(key, loaded);
    }
    return loaded;
  }

  #definition(name: string, version: number | undefined): { config: Definition; version: number } {
    const json = plainErrors(() => this.#store.definition(name, version));
    if (json == null) {
      throw new Error(version === undefined ? `No definition named '${name}' in ${this.db}` : `No version ${version} of definition '${name}' in ${this.db}`);
    }
    const d = JSON.parse(json) as { config: Definition; version: number };
    return { config: d.config, version: d.version };
  }

  #create(config: Runnable, runId: string, options: StartOptions, init: Omit<EngineInit, 'runId'>): EngineRun {
    const common = {
      input: options.input,
      context: options.context,
      tools: options.tools ? { ...this.#tools, ...options.tools } : this.#tools,
      name: options.name,
      semaphores: options.semaphores,
      traceparent: options.traceparent,
      [ENGINE]: { runId, ...init } satisfies EngineInit,
    };
    return isMachine(config)
      ? new StateMachineRunner({ ...common, config: config as StateMachine<any, any>, keepAlive: options.keepAlive })
      : new DagRunner({ ...common, dag: config as Dag<any, any> | CompiledDag });
  }

  #track(runId: string, runner: EngineRun): void {
    this.#live.set(runId, runner);
    const done = () => {
      this.#live.delete(runId);
      this.#taken.delete(runId);
    };
    runner.finished.then(done, done);
    if (runner instanceof StateMachineRunner) this.#startPolling();
  }

  /**
   * Continue a stored run in this process: a DAG keeps the outputs of its finished nodes
   * (nodes that were running when the process stopped run again); a machine continues from
   * its last snapshot with its context, queued events and timers, then takes the events
   * sent while nobody ran it.
   */
  async resume<Out = unknown>(runId: string, options: Pick<StartOptions, 'tools' | 'semaphores' | 'keepAlive' | 'durability'> = {}): Promise<EngineRun & { readonly finished: Promise<Out> }> {
    this.#open();
    const live = this.#live.get(runId);
    if (live) return live as EngineRun & { readonly finished: Promise<Out> };
    const row = this.run(runId);
    if (!row) throw new Error(`No run '${runId}' in ${this.db}`);
    if (TERMINAL.has(row.status)) throw new Error(`Run ${runId} (${row.name}) has already ended (${row.status}); only runs that have not ended can be resumed`);
    if (row.parentRunId) throw new Error(`Run ${runId} (${row.name}) was started inside run ${row.parentRunId}; resume that run, whose step starts it again`);
    if (!row.definitionName || row.definitionVersion == null) {
      throw new Error(
        `Run ${runId} (${row.name}) was started from a config with inline run functions, so it cannot be resumed; define it with registered runners (engine.define) to make its runs resumable`,
      );
    }
    const config = this.#load(row.definitionName, row.definitionVersion);
    const durability = checkDurability(options.durability ?? this.durability);
    const interrupted = plainErrors(() => this.#store.openSteps(runId));
    const snapshot = (row.snapshot ?? null) as (Omit<MachineRestore, 'core'> & { core: unknown }) | null;
    const machine = isMachine(config);
    const init: Omit<EngineInit, 'runId'> = {};
    if (machine && snapshot?.core) init.machine = { ...snapshot, core: JSON.stringify(snapshot.core) };
    const runner = this.#create(config, runId, { ...options, input: row.input ?? undefined, context: snapshot?.context ?? undefined, name: row.name }, init);
    if (interrupted.length > 0) plainErrors(() => this.#store.interruptSteps(interrupted));
    this.#cancelChildren(runId);
    if (durability !== 'off') {
      // A machine continues with the input of the state it is in and its last output.
      const current = machine && init.machine ? init.machine.input : row.input;
      const json = JSON.stringify({ id: runId, name: row.name, kind: row.kind, input: current ?? null });
      const output = machine && init.machine ? storable(init.machine.output, 'output') : undefined;
      // The events the machine holds, for the transitions they will cause.
      const events = init.machine
        ? JSON.stringify(init.machine.events.map(([handle, e]) => [handle, e.type, storable(e.data, `data of event '${e.type}'`) ?? null]))
        : undefined;
      runner.attachDurable(this.#store, runId, json, true, durability === 'sync', output, events);
    }
    if (runner instanceof DagRunner) runner.restoreFromStore(this.#store, runId);
    this.#track(runId, runner);
    if (runner instanceof StateMachineRunner) {
      const timers = JSON.parse(this.#store.timers(runId)) as Array<{ id: string; dueAt: number; payload: { timer?: number } | null; firedAt: number | null }>;
      for (const t of timers) {
        if (t.firedAt === null && typeof t.payload?.timer === 'number') runner.restoreTimer(t.payload.timer, t.dueAt, t.id);
      }
    }
    void runner.run();
    if (runner instanceof StateMachineRunner) this.#deliverPending(runId, runner);
    return runner as EngineRun & { readonly finished: Promise<Out> };
  }

  /** Runs started inside a run's steps that had not ended: their steps run them again. */
  #cancelChildren(runId: string): void {
    const children = JSON.parse(this.#store.children(runId)) as StoredRun[];
    for (const child of children) {
      if (TERMINAL.has(child.status)) continue;
      this.#cancelChildren(child.id);
      this.#store.interruptSteps(this.#store.openSteps(child.id));
      this.#store.endRun(
        child.id,
        'cancelled',
        JSON.stringify({ name: 'Interrupted', message: 'the process stopped while this run ran; the step that started it runs again on resume' }),
      );
    }
  }

  /**
   * Resume every run that has not ended (optionally only those with `name`), the ones whose
   * timers fell due first, in due order. For a process that starts after others stopped.
   */
  async resumeAll(filter: { name?: string } = {}, options: Pick<StartOptions, 'tools' | 'semaphores' | 'keepAlive' | 'durability'> = {}): Promise<EngineRun[]> {
    this.#open();
    const rows: StoredRun[] = [];
    for (const status of ['running', 'waitingForEvent', 'sleeping'] as const) {
      rows.push(...this.runs({ name: filter.name, status }).filter((r) => !r.parentRunId && !this.#live.has(r.id)));
    }
    const due = new Map<string, number>();
    for (const t of JSON.parse(this.#store.dueTimers(Number.MAX_SAFE_INTEGER)) as Array<{ runId: string; dueAt: number }>) {
      if (!due.has(t.runId)) due.set(t.runId, t.dueAt);
    }
    rows.sort((a, b) => (due.get(a.id) ?? Infinity) - (due.get(b.id) ?? Infinity) || a.createdAt - b.createdAt);
    const runs: EngineRun[] = [];
    const errors: unknown[] = [];
    for (const row of rows) {
      try {
        runs.push(await this.resume(row.id, options));
      } catch (err) {
        errors.push(err);
      }
    }
    if (errors.length > 0) throw new AggregateError(errors, `${errors.length} of ${rows.length} runs could not be resumed: ${(errors[0] as Error).message}`);
    return runs;
  }

  /**
   * Send an event to a machine run. A run live in this engine takes it now; otherwise it is
   * stored, and the run takes it when it is resumed (or at once, when another process runs
   * it: live runs look for stored events every `pollInterval`). Returns the event id.
   */
  send(runId: string, event: { type: string; data?: unknown; queue?: boolean }): string {
    this.#open();
    if (event === null || typeof event !== 'object' || typeof event.type !== 'string' || event.type === '') {
      throw new TypeError('send(runId, event): event.type must be a non-empty string');
    }
    const data = storable(event.data, 'event.data');
    const live = this.#live.get(runId);
    if (live) {
      if (!(live instanceof StateMachineRunner)) throw new Error(`Run ${runId} is a DAG; only state machines take events`);
      // Kept in the log (already taken) when the run is stored; a run with durability 'off' has no row.
      const id = live.isStored ? plainErrors(() => this.#store.sendEvent(runId, event.type, data, event.queue === true, true)) : newRunId();
      live.send(event);
      return id;
    }
    const row = this.run(runId);
    if (!row) throw new Error(`No run '${runId}' in ${this.db}`);
    if (row.kind !== 'machine') throw new Error(`Run ${runId} (${row.name}) is a DAG; only state machines take events`);
    if (TERMINAL.has(row.status)) throw new Error(`Run ${runId} (${row.name}) has already ended (${row.status}); it takes no more events`);
    return plainErrors(() => this.#store.sendEvent(runId, event.type, data, event.queue === true, false));
  }

  #deliverPending(runId: string, runner: StateMachineRunner<any, any, any, any>): void {
    const pending = JSON.parse(this.#store.pendingEvents(runId)) as Array<{ id: string; type: string; data: unknown; queue: boolean }>;
    let taken = this.#taken.get(runId);
    for (const e of pending) {
      if (!taken) this.#taken.set(runId, (taken = new Set()));
      if (taken.has(e.id)) continue;
      taken.add(e.id);
      runner.deliverStored(e.id, { type: e.type, data: e.data ?? undefined, queue: e.queue });
    }
  }

  #startPolling(): void {
    if (this.#poll || this.#pollInterval <= 0) return;
    this.#poll = setInterval(() => {
      let machines = 0;
      for (const [runId, runner] of this.#live) {
        if (!(runner instanceof StateMachineRunner)) continue;
        machines++;
        try {
          this.#deliverPending(runId, runner);
        } catch {
          // The database is busy or closed: the next tick tries again.
        }
      }
      if (machines === 0) this.#stopPolling();
    }, this.#pollInterval);
    this.#poll.unref();
  }

  #stopPolling(): void {
    if (this.#poll) clearInterval(this.#poll);
    this.#poll = undefined;
  }

  /** The live run with this id in this engine, if any. */
  get(runId: string): EngineRun | undefined {
    return this.#live.get(runId);
  }

  // ---- reading the log ----

  /** Runs, newest first. */
  runs(filter: RunFilter = {}): StoredRun[] {
    return JSON.parse(plainErrors(() => this.#store.runs(JSON.stringify(filter)))) as StoredRun[];
  }

  /** Runs waiting for an event, newest first. */
  waiting(filter: Omit<RunFilter, 'status'> = {}): StoredRun[] {
    return JSON.parse(plainErrors(() => this.#store.waiting(JSON.stringify(filter)))) as StoredRun[];
  }

  /** One run with its snapshot, or undefined. */
  run(runId: string): StoredRun | undefined {
    const json = plainErrors(() => this.#store.run(runId));
    return json == null ? undefined : (JSON.parse(json) as StoredRun);
  }

  /** A run's steps in order. */
  steps(runId: string): StoredStep[] {
    return JSON.parse(plainErrors(() => this.#store.steps(runId))) as StoredStep[];
  }

  /** A machine run's transitions in order. */
  transitions(runId: string): Array<{ id: string; seq: number; from: string | null; to: string; eventType: string | null; eventData: unknown; time: number }> {
    return JSON.parse(plainErrors(() => this.#store.transitions(runId)));
  }

  /** The custom events runners of a run emitted. */
  events(runId: string): Array<{ id: string; stepId: string | null; type: string; sourceNode: string | null; data: unknown; time: number }> {
    return JSON.parse(plainErrors(() => this.#store.events(runId)));
  }

  /** A machine run's durable timers (delays and timeouts), armed and fired, in due order. */
  timers(runId: string): Array<{ id: string; kind: 'delay' | 'timeout'; dueAt: number; firedAt: number | null }> {
    return JSON.parse(plainErrors(() => this.#store.timers(runId)));
  }

  /** Events sent to a run (`send`) that it has not taken yet, oldest first. */
  pendingEvents(runId: string): Array<{ id: string; type: string; data: unknown; queue: boolean; createdAt: number }> {
    return JSON.parse(plainErrors(() => this.#store.pendingEvents(runId)));
  }

  /** Runs started inside a run's steps. */
  children(runId: string): StoredRun[] {
    return JSON.parse(plainErrors(() => this.#store.children(runId))) as StoredRun[];
  }

  /**
   * Delete runs created before `olderThan` (a Date, a time in ms, or an age such as
   * `'30d'`), only those with `status` if given, with everything stored about them.
   * Returns how many runs were deleted.
   */
  prune(options: { olderThan: Date | number | Duration; status?: StoredRun['status'] }): number {
    this.#open();
    if (options === null || typeof options !== 'object') throw new TypeError('prune({ olderThan, status? }): options must be an object');
    const { olderThan } = options;
    let before: number;
    if (olderThan instanceof Date) before = olderThan.getTime();
    else if (typeof olderThan === 'number') before = olderThan;
    else if (typeof olderThan === 'string') before = Date.now() - parseDuration(olderThan);
    else throw new TypeError("prune({ olderThan }): olderThan must be a Date, a time in ms or an age such as '30d'");
    if (!Number.isFinite(before)) throw new TypeError(`prune({ olderThan }): invalid time ${String(olderThan)}`);
    return plainErrors(() => this.#store.prune(before, options.status));
  }

  /**
   * Serve the inspector on this engine's database (127.0.0.1, a free port unless one is
   * given); resolves with its `url` and a `close()`. See docs/inspector.md.
   */
  async inspect(options: Omit<InspectOptions, 'db'> = {}): Promise<Inspector> {
    this.#open();
    if (this.db === ':memory:') throw new Error('The inspector reads a database file; an engine on :memory: has none to show');
    this.flush();
    return inspect({ ...options, db: this.db });
  }

  /** Write what live runs (and the runs nested in them) collected, and wait until everything written so far is committed. */
  flush(): void {
    for (const run of durableRunsOf(this.#store)) run.flushDurable();
    plainErrors(() => this.#store.flush());
  }

  /** Flush and release the database. Live runs stay stored as they are and can be resumed. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#stopPolling();
    for (const run of durableRunsOf(this.#store)) run.detachDurable();
    this.#live.clear();
    plainErrors(() => this.#store.close());
  }

  #open(): void {
    if (this.#closed) throw new Error(`The engine on ${this.db} is closed`);
  }
}
