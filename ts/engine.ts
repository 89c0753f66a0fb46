import { RunFlag } from '../index.js';
import { CompiledDag, DagRunner } from './dag';
import { noticeOnExit } from './exit-notice';
import type { Dag, Tools } from './dag-types';
import type { Definition, Durability, EngineOptions, EngineRunOf, RegisteredCondition, RegisteredKeys, RegisteredPredicate, RegisteredRunner, RegisteredRunnerArgs } from './engine-types';
import type { EnqueueOptions, ForkOptions, RegistryEntry, RunFilter, Startable, StartOptions, StartOptionsOf, Storable, StoredRun, StoredStep, WorkOptions } from './engine-types';
import { inspect, type InspectOptions, type Inspector } from './inspect/server';
import { CompiledMachine, parseDuration, StateMachineRunner } from './machine';
import type { Duration, StateMachine, TransitionGuard } from './machine-types';
import { native, plain, type NativeDefinition, type NativeEngine, type NativeStore } from './native';
import { runnerAt, type EngineLink, type Plan, type RunnerBase } from './runner';
import type { Semaphore } from './semaphore';
import { CancelledError, DuplicateRunError, LeaseHeldError, LeaseLostError } from './errors';
import { Worker } from './worker';
import { StoreLimits, type LimitState } from './limits';
import { definitionJson, storable } from './values';

export type * from './engine-types';

export type EngineRun = DagRunner<any, any, any> | StateMachineRunner<any, any, any, any, any>;

/** Errors that mean a queued run can never start from what was stored: it fails rather than being claimed again. */
const FAILS_QUEUED = new Set(['ERR_INPUT_SCHEMA', 'ERR_NO_DEFINITION', 'ERR_INVALID_ARGUMENT', 'ERR_STORAGE', 'ERR_DEFINITION_NOT_STORABLE']);

/** A native `ERR_LEASE_HELD` as a `LeaseHeldError` with its holder and expiry. */
function leaseHeld<T>(f: () => T): T {
  try {
    return f();
  } catch (err) {
    const m = (err as { code?: string })?.code === 'ERR_LEASE_HELD' && /^Run (\S+) is held by (.+) until (\S+) \(its lease\)/.exec(String((err as Error).message));
    if (m) throw new LeaseHeldError((err as Error).message, m[1]!, m[2]!, Date.parse(m[3]!));
    throw err;
  }
}

function checkDurability(d: unknown): Durability {
  if (d === 'sync' || d === 'batched' || d === 'off') return d;
  throw new TypeError(`durability must be 'sync', 'batched' or 'off', got ${JSON.stringify(d)}`);
}

/** A stored definition made runnable: its compiled form with the registered functions. */
interface Loaded {
  dag?: CompiledDag;
  machine?: CompiledMachine;
  config: Definition;
}

/** The options every run of an engine gets. */
type Common = { input: unknown; context: unknown; tools: EngineOptions['tools']; cache?: EngineOptions['cache']; name?: string; semaphores?: StartOptions['semaphores']; traceparent?: string; keepAlive?: boolean; clock: { id: number } };

/** `{...fields, key: <json>}` without parsing JSON texts that are already JSON. */
function withJson(fields: object, raw: Record<string, string | undefined>): string {
  let s = JSON.stringify(fields).slice(0, -1);
  for (const [k, v] of Object.entries(raw)) if (v !== undefined) s += `${s.length > 1 ? ',' : ''}"${k}":${v}`;
  return `${s}}`;
}

/**
 * Durable runs over an embedded SQLite store: runs started here are written as they go,
 * can be resumed in another process, take events while nobody runs them, and can be read
 * back. See docs/durability.md.
 *
 * `R` is the registry as the engine's type knows it (what `register` calls chained on it
 * added): stored definitions started or defined on it must name its keys, and their runs'
 * outputs come from its runners. `T` is the type of the tools its runners receive.
 */
export class Engine<R extends object = {}, T extends Tools = Tools> {
  /** The database path. */
  readonly db: string;
  readonly durability: Durability;
  #native: NativeEngine;
  #store: NativeStore;
  #tools: Tools;
  #cache: EngineOptions['cache'];
  #leaseMs = 30_000;
  #heartbeat: ReturnType<typeof setInterval> | undefined;
  #clock: number;
  #runners = new Map<string, RegisteredRunner | RegisteredCondition | RegisteredPredicate>();
  #live = new Map<string, EngineRun>();
  #loaded = new Map<string, Loaded>();
  #closed = false;
  readonly #workers = new Set<Worker>();
  #pollMs: number;
  #limiter: StoreLimits | undefined;
  /** Every stored run writing to this engine's store, nested ones included, by row id. */
  readonly #runs = new Map<string, RunnerBase<any>>();
  readonly #link: EngineLink;

  constructor(options: EngineOptions<T> = {}) {
    if (options === null || typeof options !== 'object') throw new TypeError('Engine options must be an object');
    this.db = options.db ?? './ramus.sqlite';
    if (typeof this.db !== 'string' || this.db === '') throw new TypeError('Engine db must be a file path, ":memory:" or a postgres:// URL');
    this.durability = checkDurability(options.durability ?? 'batched');
    this.#tools = (options.tools ?? {}) as Tools;
    this.#cache = options.cache;
    this.#clock = options.clock?.id ?? 0;
    if (options.fsync !== undefined && typeof options.fsync !== 'boolean') throw new TypeError(`Engine fsync must be true or false, got ${String(options.fsync)}`);
    this.#pollMs = options.pollInterval ?? 500;
    this.#native = plain(() => new native.NativeEngine(this.db, options.fsync === true, this.#pollMs, (json) => this.#deliver(json)));
    this.#store = this.#native.store;
    const leaseMs = options.leaseMs ?? 30_000;
    if (typeof leaseMs !== 'number' || !(leaseMs > 0)) throw new TypeError(`Engine leaseMs must be a positive number of ms, got ${String(leaseMs)}`);
    this.#native.setLeaseMs(leaseMs);
    this.#leaseMs = leaseMs;
    const runs = this.#runs;
    const eng = this.#native;
    this.#link = {
      store: this.#store,
      track: (r) => {
        const row = native.rowId(r.key)!;
        runs.set(row, r);
        // Events other processes store for a live machine reach it (nested ones too).
        if (r instanceof StateMachineRunner) eng.watch(r.key, row);
      },
      untrack: (r) => {
        const row = native.rowId(r.key);
        if (!row) return;
        runs.delete(row);
        eng.unwatch(row);
        eng.letGo(row);
        // Ended: events for it are refused as the store refuses them, even while its end is
        // still being committed.
        if (this.#live.get(row) === r) this.#live.delete(row);
      },
      compile: (config) => this.#loadStartable(config as Startable<string>, undefined, 'addNodes').loaded.dag!,
    };
  }

  // ---- definitions ----

  /**
   * Register serializable runners (and transition conditions and `retryOn` predicates, whose
   * parameters are then annotated) by key. Returns this engine, typed with the new keys.
   */
  register<const K extends string, F extends RegisteredRunner<T>>(key: K, fn: F): Engine<R & { [k in K]: F }, T>;
  register<const K extends string, F extends RegisteredCondition | RegisteredPredicate>(key: K, fn: F): Engine<R & { [k in K]: F }, T>;
  // All runners: each is typed by context. Else each entry is checked apart (`RegistryEntry`).
  register<const M extends Record<string, RegisteredRunner<T>>>(registry: M): Engine<R & M, T>;
  register<const M extends Record<string, unknown>>(registry: { [k in keyof M]: RegistryEntry<M[k], T> }): Engine<R & M, T>;
  register(keyOrRegistry: string | Record<string, unknown>, fn?: unknown): unknown {
    if (typeof keyOrRegistry === 'string') {
      if (keyOrRegistry === '') throw new TypeError('register(key, fn): key must be a non-empty string');
      if (typeof fn !== 'function') throw new TypeError(`register('${keyOrRegistry}', fn): fn must be a function`);
      this.#runners.set(keyOrRegistry, fn as RegisteredRunner);
      this.#native.register([keyOrRegistry]);
      // Loaded definitions hold the functions registered when they were loaded.
      this.#loaded.clear();
      return this;
    }
    if (keyOrRegistry === null || typeof keyOrRegistry !== 'object') throw new TypeError('register() takes a key and a function, or an object of them');
    for (const [key, f] of Object.entries(keyOrRegistry)) this.register(key, f as RegisteredRunner<T>);
    return this;
  }

  /** Store a definition made only of registered runners; a new version only when the content differs from the latest. */
  define(config: Storable<RegisteredKeys<R>>): { name: string; version: number; created: boolean } {
    this.#open();
    if (config === null || typeof config !== 'object') throw new TypeError('A definition must be an object with a name and nodes');
    return this.#define(definitionJson(config));
  }

  #define(json: string): { name: string; version: number; created: boolean } {
    return JSON.parse(plain(() => this.#native.define(json))) as { name: string; version: number; created: boolean };
  }

  /** A stored definition's runnable form, made once per version (and per registry change). */
  #load(name: string, version?: number): Loaded & { version: number } {
    const def = plain(() => this.#native.load(name, version));
    version ??= plain(() => this.#native.latestVersion(name)) ?? 0;
    const key = `${name}@${version}`;
    let loaded = this.#loaded.get(key);
    if (!loaded) {
      const config = (JSON.parse(this.#store.definition(name, version)!) as { config: Definition }).config;
      const runs = this.#registered(def, []);
      const lookup = (k: string): unknown => this.#runners.get(k);
      if (def.kind === 'machine') {
        const conditions = this.#registeredConditions(def, []);
        loaded = { config, machine: new CompiledMachine(config as unknown as StateMachine<any, any>, undefined, def, runs, conditions, lookup) };
      } else {
        loaded = { config, dag: new CompiledDag(config as unknown as Dag<any, any>, def, runs as Array<(a: any) => unknown>, lookup) };
      }
      this.#loaded.set(key, loaded);
    }
    return { ...loaded, version };
  }

  /** `runs` with the registered runners its nodes name (an inline config may mix both). */
  #registered(def: NativeDefinition, runs: Array<((a: any) => unknown) | undefined>): Array<((a: any) => unknown) | undefined> {
    (JSON.parse(def.runners()) as Array<[string, unknown] | null>).forEach((r, i) => {
      if (!r) return;
      const fn = this.#runners.get(r[0]) as RegisteredRunner;
      const args = r[1] ?? undefined;
      runs[i] = (a: Record<string, unknown>) => {
        a.args = args;
        return fn(a as unknown as RegisteredRunnerArgs);
      };
    });
    return runs;
  }

  /** `conditions` with the registered ones its transitions name. */
  #registeredConditions(def: NativeDefinition, conditions: Array<TransitionGuard<any, any> | undefined>): Array<TransitionGuard<any, any> | undefined> {
    (JSON.parse(def.conditions()) as Array<string | null>).forEach((k, i) => {
      const cond = k === null ? undefined : (this.#runners.get(k) as RegisteredCondition | undefined);
      if (cond) conditions[i] = (g: Parameters<RegisteredCondition>[0], e?: Parameters<RegisteredCondition>[1]) => cond(g, e) as boolean;
    });
    return conditions;
  }

  // ---- runs ----

  /**
   * Start a run of a stored definition (by name) or of a config. A config made of
   * registered runners is defined (stored) first, so the run can be resumed; a config with
   * inline `run` functions is recorded but cannot be resumed in another process.
   */
  start<Out = unknown>(name: string, options?: StartOptions): EngineRun & { readonly finished: Promise<Out> };
  start<const D extends Startable<RegisteredKeys<R>>>(definition: D, options?: StartOptionsOf<D>): EngineRunOf<D, R>;
  start(definition: string | Startable<string>, options: StartOptions<any> = {}): unknown {
    this.#open();
    if (options === null || typeof options !== 'object') throw new TypeError('start(definition, options): options must be an object');
    const durability = checkDurability(options.durability ?? this.durability);
    const { loaded, stored } = this.#loadStartable(definition, options.version, 'start');
    const def = (loaded.dag?.native ?? loaded.machine!.native) as NativeDefinition;
    let runner: EngineRun;
    if (durability === 'off') {
      if (options.idempotencyKey !== undefined) throw new TypeError("start({ idempotencyKey }): a run with durability 'off' is not stored, so its key could not be found again");
      const common = this.#common(options, this.#context(loaded, def, options.context));
      runner = loaded.machine ? new StateMachineRunner({ ...common, config: loaded.config as never, compiled: loaded.machine } as never) : new DagRunner({ ...common, dag: loaded.dag!, exactName: true } as never);
    } else {
      let runId: string | undefined;
      if (options.idempotencyKey !== undefined) {
        if (!stored) throw new TypeError('start({ idempotencyKey }): only runs of stored definitions (registered runners) take an idempotency key');
        // Created and held in one step, so two processes starting one key make one run.
        const q = this.#enqueueNative(loaded, def, options, true);
        if (!q.created) {
          const live = this.#live.get(q.runId);
          if (live) return live;
          throw new DuplicateRunError(`start({ idempotencyKey: ${JSON.stringify(options.idempotencyKey)} }): run ${q.runId} already has this key and is not live in this engine (engine.run(id) reads it)`, q.runId);
        }
        runId = q.runId;
      }
      runner = this.#startStored(loaded, def, options, durability, stored, runId);
    }
    this.#track(runner);
    runner.startSoon();
    return runner;
  }

  /** A definition by name or a config, made runnable; `stored`: whether its runs can be resumed. */
  #loadStartable(definition: string | Startable<string>, version: number | undefined, what: string): { loaded: Loaded; stored: boolean } {
    if (typeof definition === 'string') return { loaded: this.#load(definition, version), stored: true };
    if (definition === null || typeof definition !== 'object') throw new TypeError(`${what}() takes a definition name or a DAG or machine config`);
    // A config of registered runners is stored (so its runs can be resumed); one with
    // functions runs from its own code.
    const json = definitionJson(definition);
    if (!json.includes('\\u0000fn')) {
      const v = this.#define(json);
      return { loaded: this.#load(v.name, v.version), stored: true };
    }
    const machine = (definition as { initial?: unknown }).initial !== undefined;
    const lookup = (k: string): unknown => this.#runners.get(k);
    const loaded: Loaded = machine
      ? { config: definition as Definition, machine: new CompiledMachine(definition as StateMachine<any, any>, undefined, undefined, undefined, undefined, lookup) }
      : { config: definition as Definition, dag: definition instanceof CompiledDag ? definition : new CompiledDag(definition as Dag<any, any>, undefined, undefined, lookup) };
    // Its nodes that name registered runners (and conditions) run those.
    const m = loaded.machine;
    if (m) {
      this.#registered(m.native, m.runs as Array<((a: any) => unknown) | undefined>);
      this.#registeredConditions(m.native, m.conditions as Array<TransitionGuard<any, any> | undefined>);
    } else this.#registered(loaded.dag!.native, loaded.dag!.runners as Array<((a: any) => unknown) | undefined>);
    return { loaded, stored: false };
  }

  /** The context a run starts with: given, or the definition's. */
  #context(loaded: Loaded, def: NativeDefinition, given: unknown): unknown {
    return given ?? (def.contextFn ? (loaded.config as { context?: () => unknown }).context!() : def.context ? JSON.parse(def.context) : undefined);
  }

  /** Create a stored run (`runId`: a row already made and held here: claimed from the queue, or enqueued by `start`). */
  #startStored(loaded: Loaded, def: NativeDefinition, options: StartOptions<any> & Pick<WorkOptions, 'tools' | 'semaphores'>, durability: Durability, stored: boolean, runId?: string): EngineRun {
    const context = this.#context(loaded, def, options.context);
    const common = this.#common(options, context);
    const input = storable(options.input, 'input');
    plain(() => def.checkInput(input));
    const flags = (common.semaphores?.length ? RunFlag.Semaphores : 0) | (options.keepAlive ? RunFlag.KeepAlive : 0);
    const tags = options.tags ?? (loaded.config as { tags?: string[] }).tags ?? [];
    const info = storable(options.info ?? (loaded.config as { info?: object }).info, 'info');
    // A context JSON cannot hold fails the run (stored as an error), as a later one would.
    let contextJson: string | undefined;
    let bad: unknown;
    try {
      contextJson = storable(context, 'context') ?? '{}';
    } catch (err) {
      bad = err;
    }
    const opts = withJson({ runId: runId ?? native.newRunId(), name: options.name, tags, traceparent: options.traceparent, stored, claimed: runId !== undefined }, { input, context: contextJson, info });
    const key = plain(() => this.#native.start(def, flags, this.#clock, durability === 'sync', opts));
    const runner = this.#create(loaded, common, key);
    if (bad !== undefined) runner.failStorage(bad);
    return runner;
  }

  /** Queue a run of `def` (`claim`: held here from the start); its tags and info default to the definition's, as a started run's do. */
  #enqueueNative(loaded: Loaded, def: NativeDefinition, options: EnqueueOptions<any> | StartOptions<any>, claim: boolean): { runId: string; created: boolean } {
    const config = loaded.config as { tags?: string[]; info?: object };
    const o = { ...options, tags: options.tags ?? config.tags, info: options.info ?? config.info } as EnqueueOptions<any> & StartOptions<any>;
    const input = storable(o.input, 'input');
    plain(() => def.checkInput(input));
    let runAt: number | undefined;
    if (o.runAt !== undefined) {
      runAt = o.runAt instanceof Date ? o.runAt.getTime() : o.runAt;
      if (typeof runAt !== 'number' || !Number.isFinite(runAt)) throw new TypeError(`enqueue({ runAt }): must be a Date or a time in ms, got ${String(o.runAt)}`);
    }
    if (o.priority !== undefined && !Number.isInteger(o.priority)) throw new TypeError(`enqueue({ priority }): must be an integer, got ${String(o.priority)}`);
    for (const k of ['idempotencyKey', 'concurrencyKey'] as const) {
      if (o[k] !== undefined && (typeof o[k] !== 'string' || o[k] === '')) throw new TypeError(`enqueue({ ${k} }): must be a non-empty string`);
    }
    if (o.tags !== undefined && (!Array.isArray(o.tags) || o.tags.some((t) => typeof t !== 'string'))) throw new TypeError('enqueue({ tags }): must be an array of strings');
    const fields = { name: o.name, tags: o.tags ?? [], priority: o.priority ?? 0, runAt, idempotencyKey: o.idempotencyKey, concurrencyKey: o.concurrencyKey };
    const json = withJson(fields, { input, context: storable(o.context, 'context'), info: storable(o.info, 'info') });
    return JSON.parse(plain(() => this.#native.enqueue(def, json, claim, this.#clock))) as { runId: string; created: boolean };
  }

  /**
   * Queue a run of a stored definition (by name, or a config of registered runners, which
   * is defined first) for a worker (`engine.work()`, in this process or any other on the
   * store) to start. With an `idempotencyKey` a second enqueue returns the first run,
   * `created: false`.
   */
  enqueue(definition: string | Startable<RegisteredKeys<R>>, options: EnqueueOptions = {}): { runId: string; created: boolean } {
    this.#open();
    if (options === null || typeof options !== 'object') throw new TypeError('enqueue(definition, options): options must be an object');
    const { loaded, stored } = this.#loadStartable(definition, options.version, 'enqueue');
    if (!stored) throw new TypeError('enqueue(): a queued run is started by a worker from a stored definition; its nodes must name registered runners, not inline run functions');
    const def = (loaded.dag?.native ?? loaded.machine!.native) as NativeDefinition;
    const q = this.#enqueueNative(loaded, def, options, false);
    // A worker here takes it now rather than at its next poll.
    if (q.created) for (const w of this.#workers) w.wake();
    return q;
  }

  /**
   * Start a run of a stored definition at every tick of a cron expression (`'0 9 * * 1'`:
   * Mondays at 9; five fields, or `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`)
   * in an IANA `timezone` (default UTC). Each tick's run is enqueued by the first worker
   * (`engine.work()`, any process) that finds the tick due, once however many look; ticks
   * missed while no worker ran are not made up. `name` names the schedule and, unless
   * `definition` is given, the definition. Scheduling a name again replaces it. Returns
   * its next tick.
   */
  schedule(name: string, options: { cron: string; timezone?: string; definition?: string; input?: unknown; context?: unknown; tags?: string[]; priority?: number }): { name: string; next: Date | null } {
    this.#open();
    if (typeof name !== 'string' || name === '') throw new TypeError('schedule(name, options): name must be a non-empty string');
    if (options === null || typeof options !== 'object' || typeof options.cron !== 'string') throw new TypeError(`schedule('${name}', options): options.cron must be a cron expression such as '0 9 * * 1'`);
    if (options.timezone !== undefined && typeof options.timezone !== 'string') throw new TypeError(`schedule('${name}', options): timezone must be an IANA name such as 'Europe/Paris'`);
    if (options.priority !== undefined && !Number.isInteger(options.priority)) throw new TypeError(`schedule('${name}', options): priority must be an integer`);
    const json = withJson({ tags: options.tags ?? [], priority: options.priority ?? 0 }, { input: storable(options.input, 'input'), context: storable(options.context, 'context') });
    const next = plain(() => this.#native.schedule(name, options.definition ?? name, options.cron, options.timezone, json, this.#clock));
    return { name, next: next == null ? null : new Date(next) };
  }

  /** Remove a schedule; the runs it started stay. */
  unschedule(name: string): void {
    this.#open();
    plain(() => this.#native.unschedule(name));
  }

  /** Every schedule with its next tick. */
  schedules(): Array<{ name: string; definition: string; cron: string; timezone: string | null; input: unknown; tags: string[]; priority: number; next: Date | null }> {
    return (JSON.parse(plain(() => this.#native.schedules())) as Array<{ next: number | null } & Record<string, unknown>>).map((s) => ({ ...s, next: s.next == null ? null : new Date(s.next) })) as never;
  }

  /**
   * Work on this engine's store: claim queued runs, runs whose timers fell due, runs that
   * received events and runs whose holders stopped, up to `concurrency` at a time, and run
   * them here. Any number of workers, in any number of processes, share the store.
   */
  work(options: WorkOptions = {}): Worker {
    this.#open();
    const worker: Worker = new Worker(
      {
        claim: async (names, limit, agingMs, skip) => JSON.parse(await this.#native.claimWork(names, limit, this.#clock, agingMs, skip)) as Array<[string, boolean, number]>,
        start: (runId, o, priority) => {
          const q = JSON.parse(plain(() => this.#native.queuedStart(runId))) as { definition: string; version: number | null; name: string; input: unknown; context: unknown; tags: string[]; info: object | null };
          let runner: EngineRun;
          try {
            const loaded = this.#load(q.definition, q.version ?? undefined);
            const def = (loaded.dag?.native ?? loaded.machine!.native) as NativeDefinition;
            runner = this.#startStored(loaded, def, { input: q.input ?? undefined, context: q.context ?? undefined, tags: q.tags, info: q.info ?? undefined, name: q.name, tools: o.tools, semaphores: o.semaphores, priority } as StartOptions, this.durability, true, runId);
          } catch (err) {
            // It cannot start from what was stored (its input no longer fits, say): it fails
            // rather than being claimed again by every worker. Only for what the stored row
            // or definition makes impossible; a store or lease error passes, and the run is
            // claimed again.
            const code = (err as { code?: string })?.code;
            if (code === undefined || FAILS_QUEUED.has(code)) plain(() => this.#native.failQueued(runId, JSON.stringify({ name: (err as Error)?.name ?? 'Error', message: (err as Error)?.message ?? String(err) }), this.#clock));
            throw err;
          }
          this.#track(runner);
          runner.startSoon();
          return runner;
        },
        resume: (runId, o, priority) => this.resume(runId, { tools: o.tools, semaphores: o.semaphores, priority } as Parameters<Engine['resume']>[1]),
        handBack: (runId, run) => {
          if (run && !run.released) {
            run.flushNow();
            // No longer live here: released without an end (nothing more is written).
            run.release();
          }
          this.#store.flush();
          plain(() => this.#native.handBack(runId));
        },
        now: () => native.clockNow(this.#clock),
        stopped: (w) => this.#workers.delete(w),
      },
      options,
    );
    this.#workers.add(worker);
    return worker;
  }

  #common(options: Pick<StartOptions, 'input' | 'tools' | 'name' | 'semaphores' | 'traceparent' | 'keepAlive'>, context: unknown): Common {
    return {
      input: options.input,
      context,
      tools: options.tools ? { ...this.#tools, ...options.tools } : this.#tools,
      cache: this.#cache,
      name: options.name,
      semaphores: this.#semaphores(options.semaphores, (options as { priority?: number }).priority),
      traceparent: options.traceparent,
      keepAlive: options.keepAlive,
      clock: { id: this.#clock },
    };
  }

  /** A run's semaphores: its own, and the store's limits (in line by `priority`) when any key has one. */
  #semaphores(own: Semaphore[] | undefined, priority = 0): Semaphore[] | undefined {
    this.#limiter ??= new StoreLimits(this.#native, this.#clock);
    if (!this.#limiter.active()) return own;
    const limiter = this.#limiter.forRun(priority);
    return own?.length ? [...own, limiter] : [limiter];
  }

  /**
   * Set limits shared by every run in every process on this store: `{ key: {
   * concurrency?, rate? } }` (`rate`: `'60/min'`, `'10/5s'` or `{ count, per }` in ms; a
   * key set to `null` is no longer limited). A key is a node's or state's `semaphoreKey`
   * (its steps take a slot), or `workflow:<name>` and `'*'` (queued runs of that
   * definition, or of any, that workers start: counted over runs in progress). Runs
   * started from then on (here at once, elsewhere within a second) hold to them. Without
   * arguments: every limit with the slots held now.
   */
  limits(): LimitState[];
  limits(limits: Record<string, { concurrency?: number; rate?: string | { count: number; per: number } } | null>): void;
  limits(limits?: Record<string, { concurrency?: number; rate?: string | { count: number; per: number } } | null>): LimitState[] | void {
    this.#open();
    this.#limiter ??= new StoreLimits(this.#native, this.#clock);
    if (limits === undefined) return this.#limiter.read();
    if (limits === null || typeof limits !== 'object' || Array.isArray(limits)) throw new TypeError('engine.limits(limits): limits must be an object { key: { concurrency?, rate? } }');
    plain(() => this.#native.setLimits(JSON.stringify(limits), this.#clock));
    this.#limiter.read();
  }

  #create(loaded: Loaded, common: Common, key: number, plan?: Plan): EngineRun {
    const link = this.#link;
    if (loaded.machine) return new StateMachineRunner({ ...common, config: loaded.config as never, compiled: loaded.machine } as never, { key, link, plan });
    return new DagRunner({ ...common, dag: loaded.dag! }, { key, link, plan });
  }

  #track(runner: EngineRun): void {
    const runId = runner.runId;
    this.#live.set(runId, runner);
    // A third of a lease apart, so a live engine never lets its leases lapse.
    this.#heartbeat ??= setInterval(() => this.#renew(), Math.max(1, this.#leaseMs / 3)).unref();
    noticeOnExit(this, runner, () => this.#closed);
    const done = () => this.#live.delete(runId);
    runner.finished.then(done, done);
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
    const durability = checkDurability(options.durability ?? this.durability);
    const flags = (this.#semaphores(options.semaphores, (options as { priority?: number }).priority)?.length ? RunFlag.Semaphores : 0) | (options.keepAlive ? RunFlag.KeepAlive : 0);
    const plan = JSON.parse(leaseHeld(() => plain(() => this.#native.resume(runId, flags, this.#clock, durability === 'sync')))) as Plan & Record<string, any>;
    const loaded = this.#load(plan.definition.name, plan.definition.version);
    const runner = this.#create(loaded, this.#common({ ...options, input: plan.input ?? undefined, name: plan.name }, plan.context ?? undefined), plan.run, plan);
    this.#track(runner);
    runner.startSoon();
    return runner as EngineRun & { readonly finished: Promise<Out> };
  }

  /**
   * Fork a stored run at one of its steps: a new run, whose row names the run and step it
   * came from, starts from the state the old one was in when that step started, and runs
   * here. A machine enters that step's state again with the context it had then (or
   * `context`) and its queued events; a DAG keeps the outputs of the nodes whose steps came
   * before and finished, and `output` sets the step's own node's output instead of running
   * it. The old run is not touched; it may have finished, failed or been cancelled.
   */
  async fork<Out = unknown>(runId: string, options: ForkOptions, runOptions: Pick<StartOptions, 'tools' | 'semaphores' | 'keepAlive' | 'durability'> = {}): Promise<EngineRun & { readonly finished: Promise<Out> }> {
    this.#open();
    if (options === null || typeof options !== 'object' || typeof options.atStep !== 'string' || options.atStep === '') {
      throw new TypeError('fork(runId, { atStep }): atStep must be the id of one of the run\'s steps (engine.steps(runId))');
    }
    const parts = (['input', 'context', 'output'] as const).flatMap((k) => (options[k] === undefined ? [] : [`${JSON.stringify(k)}:${storable(options[k], k)}`]));
    const json = `{"atStep":${JSON.stringify(options.atStep)}${parts.map((p) => `,${p}`).join('')}}`;
    const id = plain(() => this.#native.fork(runId, json, this.#clock));
    return this.#resumeClaimed<Out>(id, runOptions);
  }

  /**
   * Run one node of a stored DAG run again, or give it `output` instead, and then every
   * node downstream of it; every other node keeps its output. The run continues here, in
   * place: its earlier steps stay, set aside (`supersededAt`). For runs that ended
   * (finished, failed, cancelled: a cancelled node can be rerun) or that no live engine
   * holds. A run still running in this engine reruns the node while it goes on
   * (`DagRunner.rerunNode`; `runOptions` then do not apply) and is returned as it is.
   */
  async rerun<Out = unknown>(runId: string, options: { node: string; output?: unknown }, runOptions: Pick<StartOptions, 'tools' | 'semaphores' | 'keepAlive' | 'durability'> = {}): Promise<EngineRun & { readonly finished: Promise<Out> }> {
    this.#open();
    if (options === null || typeof options !== 'object' || typeof options.node !== 'string') throw new TypeError('rerun(runId, { node }): node must be the name of a node of the run');
    const live = this.#live.get(runId);
    if (live instanceof DagRunner && !live.settled) {
      live.rerunNode(options.node, options.output === undefined ? {} : { output: options.output });
      return live as EngineRun & { readonly finished: Promise<Out> };
    }
    this.#notLive(runId, 'rerun');
    const output = options.output === undefined ? '' : `,"output":${storable(options.output, 'output')}`;
    plain(() => this.#native.rerun(runId, `{"node":${JSON.stringify(options.node)}${output}}`, this.#clock));
    return this.#resumeClaimed<Out>(runId, runOptions);
  }

  /**
   * Cancel one node of a DAG run live in this engine, and everything downstream of it; the
   * rest of the run goes on (see `DagRunner.cancelNode`). `rerun` brings the node back.
   */
  cancelNode(runId: string, node: string): void {
    this.#open();
    const live = this.#live.get(runId) ?? (this.#runs.get(runId) as EngineRun | undefined);
    if (!live) throw Object.assign(new Error(`cancelNode: run ${runId} is not running in this engine (cancel a node of a run that ended? rerun it instead)`), { code: 'ERR_NOT_LIVE' });
    if (!(live instanceof DagRunner)) throw Object.assign(new Error(`cancelNode: run ${runId} is a state machine; only DAG runs have nodes to cancel`), { code: 'ERR_INVALID_ARGUMENT' });
    live.cancelNode(node);
  }

  /**
   * Merge `patch` into a stored DAG run's root input and run again only the nodes whose
   * `uses` names a key that changed (and what depends on them); the rest keep their outputs.
   * The run continues here, in place, as with `rerun`.
   */
  async updateInput<Out = unknown>(runId: string, patch: Record<string, unknown>, runOptions: Pick<StartOptions, 'tools' | 'semaphores' | 'keepAlive' | 'durability'> = {}): Promise<EngineRun & { readonly finished: Promise<Out>; readonly rerun: string[] }> {
    this.#open();
    if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) throw new TypeError('updateInput(runId, patch): patch must be an object of root-input keys');
    this.#notLive(runId, 'updateInput');
    const rerun = plain(() => this.#native.updateInput(runId, storable(patch, 'patch')!, this.#clock));
    const run = await this.#resumeClaimed<Out>(runId, runOptions);
    return Object.assign(run, { rerun });
  }

  /** Resume a run this engine just claimed and rewrote; if it cannot run here, it is handed back for any engine to take. */
  async #resumeClaimed<Out>(runId: string, runOptions: Pick<StartOptions, 'tools' | 'semaphores' | 'keepAlive' | 'durability'>): Promise<EngineRun & { readonly finished: Promise<Out> }> {
    try {
      return await this.resume<Out>(runId, runOptions);
    } catch (err) {
      try {
        this.#native.handBack(runId);
      } catch {
        // the store is gone: its lease lapses
      }
      throw err;
    }
  }

  /** Refuse to rewrite a run live here (also one whose start waits for the caller's turn: it has no row yet). */
  #notLive(runId: string, what: string): void {
    if (!this.#live.has(runId)) return;
    throw Object.assign(new Error(`${what}: run ${runId} is running in this engine; rerun its nodes once it has ended`), { code: 'ERR_NOT_RESUMABLE' });
  }

  /** A machine run's context as it was when one of its steps started (stored as JSON Patches). */
  contextAt<Ctx = Record<string, unknown>>(runId: string, stepId: string): Ctx {
    this.#open();
    return JSON.parse(plain(() => this.#native.contextAt(runId, stepId))) as Ctx;
  }

  /**
   * Resume every run that has not ended (optionally only those with `name`), the ones whose
   * timers fell due first, in due order. For a process that starts after others stopped.
   */
  async resumeAll(filter: { name?: string } = {}, options: Pick<StartOptions, 'tools' | 'semaphores' | 'keepAlive' | 'durability'> = {}): Promise<EngineRun[]> {
    this.#open();
    const ids = plain(() => this.#native.resumable(filter.name)).filter((id) => !this.#live.has(id));
    const runs: EngineRun[] = [];
    const errors: unknown[] = [];
    for (const id of ids) {
      try {
        runs.push(await this.resume(id, options));
      } catch (err) {
        errors.push(err);
      }
    }
    if (errors.length > 0) throw new AggregateError(errors, `${errors.length} of ${ids.length} runs could not be resumed: ${(errors[0] as Error).message}`);
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
    let live = this.#live.get(runId) ?? (this.#runs.get(runId) as EngineRun | undefined);
    // Ended, its end on its way to the store: refused as the store refuses it.
    if (live && !live.released && native.hasEnded(live.key)) live = undefined;
    if (!live) return plain(() => this.#native.sendStored(runId, event.type, data, event.queue === true));
    if (!(live instanceof StateMachineRunner)) throw new Error(`Run ${runId} is a DAG; only state machines take events`);
    let id: string;
    try {
      // Kept in the log (already taken) when the run is stored.
      id = native.rowId(live.key) ? plain(() => this.#native.recordEvent(runId, event.type, data, event.queue === true)) : native.newRunId();
    } catch (err) {
      // Another engine on the file pruned it: it ends here too.
      if (this.run(runId)) throw err;
      this.#gone(runId, live);
      return plain(() => this.#native.sendStored(runId, event.type, data, event.queue === true));
    }
    live.send(event);
    return id;
  }

  /** Renew this engine's leases; a run another engine took over meanwhile stops here. */
  #renew(): void {
    if (this.#closed) return;
    let lost: string[];
    try {
      lost = this.#native.renewLeases(this.#clock);
    } catch {
      return; // the store is busy or gone: the next beat tries again
    }
    for (const id of lost) {
      const run = this.#live.get(id);
      if (run) run.failStorage(new LeaseLostError(`Run ${id} is no longer held by this engine: another engine took it over after its lease expired`));
    }
  }

  /**
   * Send one event to every machine run that waits for an event and matches `filter` (its
   * `name`, every one of its `tags`): the seed's "all dormant workflows of this user".
   * Runs live here take it at once; the others find it stored (their holders look for it,
   * or a later `resume` delivers it). Written in one commit. Resolves with how many runs
   * it was sent to.
   */
  async sendWhere(filter: { name?: string; tags?: string[] }, event: { type: string; data?: unknown; queue?: boolean }): Promise<number> {
    this.#open();
    if (filter === null || typeof filter !== 'object') throw new TypeError('sendWhere(filter, event): filter must be an object { name?, tags? }');
    if (event === null || typeof event !== 'object' || typeof event.type !== 'string' || event.type === '') {
      throw new TypeError('sendWhere(filter, event): event.type must be a non-empty string');
    }
    const data = storable(event.data, 'event.data');
    const rows = this.waiting({ name: filter.name, tags: filter.tags });
    const live: StateMachineRunner[] = [];
    const pending: string[] = [];
    const taken: string[] = [];
    for (const row of rows) {
      const r = this.#live.get(row.id);
      if (r instanceof StateMachineRunner && !r.released && !native.hasEnded(r.key)) {
        live.push(r);
        taken.push(row.id);
      } else pending.push(row.id);
    }
    if (rows.length === 0) return 0;
    plain(() => this.#native.recordEvents(pending, taken, event.type, data, event.queue === true));
    for (const r of live) r.send(event);
    return rows.length;
  }

  /** A live run whose row was deleted: it is no longer stored, and ends (cancelled). */
  #gone(row: string, run: RunnerBase<any>): void {
    this.#runs.delete(row);
    this.#live.delete(row);
    if (!run.released) {
      native.detachStore(run.key);
      run.detach();
      run.cancel();
    }
  }

  /** Events other processes stored for runs live here: `[[run, id, type, data, queue], …]`. */
  #deliver(json: string): void {
    for (const [run, id, type, data, queue] of JSON.parse(json) as Array<[number, string, string, unknown, boolean]>) {
      const r = runnerAt(run);
      if (r instanceof StateMachineRunner) r.send({ type, data: data ?? undefined, queue }, id);
    }
  }

  /**
   * The outcome of a run, wherever it runs: resolves with its output when it finishes,
   * rejects with its error when it fails (a `CancelledError` when it was cancelled). A
   * run live here settles with it; another is looked for in the store every
   * `pollInterval` (only when something was committed since), so a producer can wait for
   * what it enqueued.
   */
  async result<Out = unknown>(runId: string): Promise<Out> {
    this.#open();
    let seen = -1;
    for (;;) {
      const live = this.#live.get(runId);
      if (live) return (await live.finished) as Out;
      const version = plain(() => this.#store.dataVersion());
      if (version !== seen) {
        seen = version;
        const row = this.run(runId);
        if (!row) throw new Error(`No run ${runId} in ${this.db}`);
        if (row.status === 'finished') return row.output as Out;
        if (row.status === 'error') {
          const e = row.error as { name?: string; message?: string } | null;
          throw Object.assign(new Error(e?.message ?? 'failed'), e && typeof e === 'object' ? e : {});
        }
        if (row.status === 'cancelled') throw new CancelledError(`Run ${runId} was cancelled`);
      }
      if (this.#closed) throw new Error(`The engine on ${this.db} is closed`);
      await new Promise((r) => setTimeout(r, this.#pollMs));
    }
  }

  /** The live run with this id in this engine, if any. */
  get(runId: string): EngineRun | undefined {
    return this.#live.get(runId);
  }

  // ---- reading the log ----

  #read<T>(f: (s: NativeStore) => string | null): T {
    const json = plain(() => f(this.#store));
    return (json == null ? undefined : JSON.parse(json)) as T;
  }

  /** Runs, newest first. */
  runs(filter: RunFilter = {}): StoredRun[] {
    return this.#read((s) => s.runs(JSON.stringify(filter)));
  }

  /** Runs waiting for an event, newest first. */
  waiting(filter: Omit<RunFilter, 'status'> = {}): StoredRun[] {
    return this.#read((s) => s.waiting(JSON.stringify(filter)));
  }

  /** One run with its snapshot, or undefined. */
  run(runId: string): StoredRun | undefined {
    return this.#read((s) => s.run(runId));
  }

  /** A run's steps in order. */
  steps(runId: string): StoredStep[] {
    return this.#read((s) => s.steps(runId));
  }

  /** A machine run's transitions in order. */
  transitions(runId: string): Array<{ id: string; seq: number; from: string | null; to: string; eventType: string | null; eventData: unknown; time: number }> {
    return this.#read((s) => s.transitions(runId));
  }

  /** The custom events runners of a run emitted. */
  events(runId: string): Array<{ id: string; stepId: string | null; type: string; sourceNode: string | null; data: unknown; time: number }> {
    return this.#read((s) => s.events(runId));
  }

  /** A machine run's durable timers (delays and timeouts), armed and fired, in due order. */
  timers(runId: string): Array<{ id: string; kind: 'delay' | 'timeout'; dueAt: number; firedAt: number | null }> {
    return this.#read((s) => s.timers(runId));
  }

  /** Events sent to a run (`send`) that it has not taken yet, oldest first. */
  pendingEvents(runId: string): Array<{ id: string; type: string; data: unknown; queue: boolean; createdAt: number }> {
    return this.#read((s) => s.pendingEvents(runId));
  }

  /** Runs started inside a run's steps. */
  children(runId: string): StoredRun[] {
    return this.#read((s) => s.children(runId));
  }

  /**
   * Delete runs created before `olderThan` (a Date, a time in ms, or an age such as
   * `'30d'`), only those with `status` if given, with everything stored about them.
   * Runs live here that are deleted end (cancelled). Returns how many runs were deleted.
   */
  prune(options: { olderThan: Date | number | Duration; status?: StoredRun['status'] }): number {
    this.#open();
    if (options === null || typeof options !== 'object') throw new TypeError('prune({ olderThan, status? }): options must be an object');
    const { olderThan } = options;
    let before: number;
    if (olderThan instanceof Date) before = olderThan.getTime();
    else if (typeof olderThan === 'number') before = olderThan;
    else if (typeof olderThan === 'string') before = native.clockNow(this.#clock) - parseDuration(olderThan);
    else throw new TypeError("prune({ olderThan }): olderThan must be a Date, a time in ms or an age such as '30d'");
    if (!Number.isFinite(before)) throw new TypeError(`prune({ olderThan }): invalid time ${String(olderThan)}`);
    this.flush();
    const n = plain(() => this.#store.prune(before, options.status));
    // Runs live here whose rows were deleted end now (cancelled), no longer stored.
    for (const [row, run] of [...this.#runs]) if (!this.run(row)) this.#gone(row, run);
    return n;
  }

  /** Serve the inspector on this engine's database (127.0.0.1, a free port unless one is given). See docs/inspector.md. */
  async inspect(options: Omit<InspectOptions, 'db'> = {}): Promise<Inspector> {
    this.#open();
    if (this.db === ':memory:') throw new Error('The inspector reads a database file; an engine on :memory: has none to show');
    this.flush();
    // The page's forks and reruns run here, where the runners are; their outcome is on the page.
    const settle = (run: EngineRun): string => {
      run.finished.catch(() => {});
      return run.runId;
    };
    return inspect({
      ...options,
      db: this.db,
      actions: {
        fork: async (runId, o) => settle(await this.fork(runId, o)),
        rerun: async (runId, o) => settle(await this.rerun(runId, o)),
        cancelNode: (runId, node) => this.cancelNode(runId, node),
      },
    });
  }

  /** Write what live runs (and the runs nested in them) collected, and wait until everything written so far is committed. */
  flush(): void {
    for (const run of [...this.#live.values()]) run.startNow();
    for (const run of [...this.#runs.values()]) run.flushNow();
    plain(() => this.#store.flush());
  }

  /** Flush and release the database. Live runs stay stored as they are and can be resumed. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#heartbeat) clearInterval(this.#heartbeat);
    // A claim that is out is waited for: its runs are handed back before the store closes.
    const claims = [...this.#workers].map((w) => w.closed());
    this.#workers.clear();
    await Promise.all(claims);
    for (const run of [...this.#live.values()]) run.startNow();
    for (const run of [...this.#runs.values()]) {
      run.flushNow();
      native.detachStore(run.key);
      run.detach();
    }
    this.#live.clear();
    plain(() => this.#native.close());
  }

  #open(): void {
    if (this.#closed) throw new Error(`The engine on ${this.db} is closed`);
  }
}

