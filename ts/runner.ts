import { EventEmitter } from 'node:events';

import { Io, Op, Rec, ResponseFlag, RunFlag, StepOutcome } from '../index.js';
import { callIn, currentFrame, type StepFrame, type StepOwner } from './context';
import { stepCacheKey, type NodeResultCache } from './cache';
import type { StepCache, Tools } from './dag-types';
import { CancelledError, TimeoutError } from './errors';
import { reportListenerError, W_DATA, DataCode, type RamusErrorEvent, type RamusEvent, type WireBatch, type WireEvent } from './events';
import { call, hooks, io, native, plain, rethrown, type NativeDefinition, type NativeStore } from './native';
import { SlotRequest, type Semaphore } from './semaphore';
import { activeTraceparent } from './tracing';
import { errorText, storable, StorageError } from './values';

/** Live runners by their index in the native runtime. */
const runs: Array<RunnerBase<any> | undefined> = [];

// ---- the pump ----------------------------------------------------------------------------
// Every entry into the engine (start, a step's result, an event, a timer) goes through
// `drive`: results that arrive while records are applied are queued and reported in order
// afterwards, so a million synchronous runners in a chain do not grow the stack.

const completions: unknown[] = [];
let head = 0;
let tail = 0;
let pumping = false;
/** Set while the binding may call a condition back: nothing may call into it then. */
let inNative = false;

export function drive(f: () => void): void {
  if (pumping) {
    f();
    return;
  }
  pumping = true;
  try {
    f();
    while (head < tail) {
      const r = completions[head] as RunnerBase<any>;
      const slot = completions[head + 1] as number;
      const outcome = completions[head + 2] as number;
      const value = completions[head + 3];
      // Not kept alive by the queue once reported.
      completions[head] = completions[head + 3] = undefined;
      head += 4;
      r.report(slot, outcome, value);
    }
  } finally {
    pumping = false;
    head = tail = 0;
  }
}

const nothing = (): void => {};

/** How a step that threw `err` ended: a `CancelledError` is not a failure. */
function failure(err: unknown): number {
  try {
    return err instanceof CancelledError ? StepOutcome.Cancelled : StepOutcome.Error;
  } catch {
    return StepOutcome.Error;
  }
}

export function settle(r: RunnerBase<any>, slot: number, outcome: number, value: unknown): void {
  completions[tail] = r;
  completions[tail + 1] = slot;
  completions[tail + 2] = outcome;
  completions[tail + 3] = value;
  tail += 4;
  if (!pumping) drive(nothing);
}

/** Call into the binding where it may call a condition back. */
export function callNative(f: () => number): number {
  inNative = true;
  try {
    return f();
  } catch (err) {
    throw rethrown(err);
  } finally {
    inNative = false;
  }
}

/** Run `f` now, or once the binding has returned when a condition calls it. */
export function outsideNative(f: () => void): boolean {
  if (!inNative) return false;
  queueMicrotask(f);
  return true;
}

const scratch: Int32Array[] = [];
const noticeLists: Array<Array<() => void>> = [];
let depth = 0;

/** Apply the records of the last call into the binding (`n` ints at `io[Io.Records]`). */
export function dispatch(n: number): void {
  for (;;) {
    const flags = io[1]!;
    if (flags & ResponseFlag.Yield) {
      // A long synchronous loop: let timers, I/O and cancel() in before the next steps.
      // The whole response waits, so its records still apply in order.
      const parts = [io.slice(Io.Records, Io.Records + n)];
      for (let f = flags; f & ResponseFlag.More; f = io[1]!) {
        n = native.more();
        parts.push(io.slice(Io.Records, Io.Records + n));
      }
      // What the runs do meanwhile (a cancel, an event) may void the steps the core let a
      // machine run by itself: those launched late report each one.
      for (const p of parts) for (let i = 0; i < p.length; i += p[i]! >> 8) if ((p[i]! & 0xff) === Rec.Run) p[i + 4] = 0;
      setImmediate(() => drive(() => parts.forEach((p) => apply(p, p.length))));
      return;
    }
    // Copy out first: what runs below calls into the binding, which reuses `io`.
    const buf = (scratch[depth] ??= new Int32Array(Io.Size));
    for (let i = 0; i < n; i++) buf[i] = io[Io.Records + i]!;
    depth++;
    try {
      apply(buf, n);
    } finally {
      depth--;
    }
    if (!(flags & ResponseFlag.More)) return;
    n = native.more();
  }
}

function apply(buf: Int32Array, n: number): void {
  const notices = (noticeLists[depth] ??= []);
  let released: RunnerBase<any>[] | undefined;
  // A record's first int is its code, with its length in ints above the low byte.
  for (let i = 0; i < n; i += buf[i]! >> 8) {
    const r = runs[buf[i + 1]!];
    if (!r) continue;
    switch (buf[i]! & 0xff) {
      case Rec.Moved:
        r.moved(buf[i + 2]!, buf[i + 3]!, buf[i + 4]!, buf[i + 5]!);
        break;
      case Rec.Failed:
        r.failed(buf[i + 2] === 1, buf[i + 3] === 1, notices);
        break;
      case Rec.Drop:
        r.dropEvent(buf[i + 2]!);
        break;
      case Rec.Ended:
        if (r.ended(buf[i + 2]!, buf[i + 3]!, notices)) (released ??= []).push(r);
        break;
      case Rec.Status:
        if (r.status(buf[i + 2]!, buf[i + 3]!, buf[i + 4]!, notices)) (released ??= []).push(r);
        break;
      case Rec.Events:
        r.deliverEvents();
        break;
      case Rec.StorageFailed:
        r.storageFailed(notices);
        break;
      case Rec.Flush:
        r.scheduleFlush();
        break;
      case Rec.TimedOut:
        r.timedOut(buf[i + 3]!);
        break;
    }
  }
  // How the runs' promises settle, after their events reached the listeners.
  if (notices.length > 0) {
    for (let k = 0; k < notices.length; k++) notices[k]!();
    notices.length = 0;
  }
  // Then the steps to launch, in order.
  for (let i = 0; i < n; i += buf[i]! >> 8) {
    const code = buf[i]! & 0xff;
    if (code > Rec.Ready) continue;
    const r = runs[buf[i + 1]!];
    if (!r || r.released) continue;
    if (code === Rec.Run) r.launch(buf[i + 2]!, buf[i + 3]!, buf[i + 4]!, buf[i + 5]!);
    else if (code === Rec.Acquire) r.acquire(buf[i + 2]!, buf[i + 3]!);
    else r.ready(buf[i + 2]!, buf[i + 3]!);
  }
  if (released) for (const r of released) r.release();
}

hooks.guard = (run, transition, handle) => runs[run]?.guard(transition, handle) ?? 1;
hooks.retryTimeout = (run, step, message) => {
  const on = runs[run]?.retryPredicate(step);
  return on && failureOutcome(on, new TimeoutError(message)) === StepOutcome.Error ? 1 : 0;
};
hooks.wake = (count) => drive(() => dispatch(count));

// ---- runners -----------------------------------------------------------------------------

/** Finished-promise states. */
const PENDING = 0;
const SETTLING = 1;
const RESOLVED = 2;
const REJECTED = 3;

/** How an engine's runs reach its store (set by `Engine` on the runs it starts). */
export interface EngineLink {
  readonly store: NativeStore;
  track(r: RunnerBase<any>): void;
  untrack(r: RunnerBase<any>): void;
  /** A DAG config made runnable as the engine makes its configs (registered runners bound; stored when it names only those). */
  compile(config: object): import('./dag').CompiledDag;
}

/** What an `Engine` passes to the runners it creates or resumes. */
export interface EngineInit {
  key: number;
  link: EngineLink;
  plan?: Plan;
}

/** The live runner at an index of the native runtime. */
export function runnerAt(index: number): RunnerBase<any> | undefined {
  return runs[index];
}

/**
 * What a runner call receives. Own properties of an object literal, as plain objects had
 * them in the original: destructuring and spreading (`{ ...args }`) both keep working.
 */
export function stepArgs(owner: RunnerBase<any>, slot: number, input: unknown, attempt: number): Record<string, unknown> {
  return {
    attempt,
    context: owner.context,
    input,
    rootInput: owner.rootInput,
    tools: owner.tools,
    isCancelled: () => owner.slotCancelled(slot),
    exitIfCancelled: () => {
      if (owner.slotCancelled(slot)) throw new CancelledError();
    },
    emit: (type: string, data?: unknown, options?: EmitOptions) => owner.customEvent(slot, type, data, options?.store !== false),
  };
}

/**
 * Per node or state, the `retryOn` of its `retry`: the config's function, or a registered
 * one by key (`lookup`). Undefined when none has one.
 */
export function retryPredicates(names: string[], nodes: Record<string, any>, lookup?: (key: string) => unknown): Array<((error: unknown) => boolean) | undefined> | undefined {
  let out: Array<((error: unknown) => boolean) | undefined> | undefined;
  names.forEach((name, i) => {
    const on: unknown = nodes[name]?.retry?.retryOn;
    if (on === undefined || on === null) return;
    const fn = typeof on === 'string' ? lookup?.(on) : on;
    if (typeof fn !== 'function') throw new Error(`retryOn '${String(on)}' of '${name}' is not a registered function`);
    (out ??= new Array(names.length))[i] = fn as (error: unknown) => boolean;
  });
  return out;
}

/** How a failed step is reported: `Fatal` when its `retryOn` declines the error (or throws). */
export function failureOutcome(retryOn: ((error: unknown) => boolean) | undefined, error: unknown): number {
  if (!retryOn) return StepOutcome.Error;
  try {
    return retryOn(error) ? StepOutcome.Error : StepOutcome.Fatal;
  } catch {
    return StepOutcome.Fatal;
  }
}

/** `emit(type, data, { store: false })`: for listeners and streams only (tokens), not the database or spans. */
export interface EmitOptions {
  store?: boolean;
}

/**
 * Run a step through the run's cache: its entry's output (`Cached`), or the runner's, which
 * is then kept (unless it is no JSON, or a machine's `transitionTo`: `keep` says). The result
 * is reported through the pump, as `RunnerBase.call` reports it.
 */
export function cachedCall(
  owner: RunnerBase<any>,
  slot: number,
  cache: NodeResultCache,
  step: { definition: string; node: string; spec: { cache?: unknown; runner?: string; args?: unknown; run?: unknown }; run: (args: any) => unknown; args: Record<string, unknown> },
  keep: (value: unknown) => boolean = () => true,
): void {
  lookUpOrRun(owner, slot, cache, step, keep).then(
    (r) => settle(owner, slot, r.outcome, r.value),
    (err: unknown) => settle(owner, slot, failure(err), err),
  );
}

async function lookUpOrRun(
  owner: RunnerBase<any>,
  slot: number,
  cache: NodeResultCache,
  step: Parameters<typeof cachedCall>[3],
  keep: (value: unknown) => boolean,
): Promise<{ outcome: number; value: unknown }> {
  const c = (typeof step.spec.cache === 'object' && step.spec.cache !== null ? step.spec.cache : {}) as StepCache;
  const a = step.args;
  const key =
    typeof c.key === 'function'
      ? String(c.key({ input: a.input, rootInput: a.rootInput, args: step.spec.args, context: a.context }))
      : (c.key ??
        stepCacheKey({
          definition: step.definition,
          node: step.node,
          runner: typeof step.spec.runner === 'string' ? `runner:${step.spec.runner}` : String(step.spec.run ?? step.run),
          args: step.spec.args,
          input: a.input,
          rootInput: a.rootInput,
          version: c.version,
        }));
  const now = owner.now();
  const hit = await cache.get(step.node, key, { now });
  if (typeof hit === 'string') return { outcome: StepOutcome.Cached, value: JSON.parse(hit) };
  const value = await callIn(owner, slot, step.run, a);
  const text = keep(value) ? JSON.stringify(value) : undefined;
  const ttl = c.ttl === undefined ? undefined : typeof c.ttl === 'number' ? c.ttl : plain(() => native.parseDurationMs(String(c.ttl)));
  if (text !== undefined) await cache.set(step.node, key, text, { ttl, now });
  return { outcome: StepOutcome.Ok, value };
}

/** Options every runner takes. */
export interface RunOptionsBase {
  name?: string;
  tools?: Tools;
  semaphores?: Semaphore[];
  traceparent?: string;
  clock?: { readonly id: number };
}

/**
 * What DAG and state machine runners share: their run in the native runtime, the
 * `finished` promise, listeners and the event stream, and the calls of their runners.
 */
export abstract class RunnerBase<Out> extends EventEmitter implements StepOwner {
  readonly name: string;
  readonly context: any;
  readonly rootInput: unknown;
  readonly tools: Tools;
  /** @internal The packed key of the run in the native runtime. */
  key = -1;
  protected readonly def: NativeDefinition;
  /** The step this run was started in, if any. */
  protected readonly parentFrame: StepFrame | undefined;
  protected observed = false;
  /** Values cross as JSON: the run is stored or traced. */
  protected json = false;
  protected sync = false;
  protected engine: EngineLink | undefined;
  protected readonly semaphores: Semaphore[];
  protected readonly keepAlive: boolean;
  #customData: unknown[] = [];
  #outcome = PENDING;
  #value: unknown;
  #finished: Promise<Out> | undefined;
  #settle: { resolve(v: Out): void; reject(e: unknown): void } | undefined;
  /** Semaphore claims by step slot; `running` once the step was let run with them. */
  #slotRequests: Map<number, { request: SlotRequest; running: boolean }> | undefined;
  /** Semaphore keys the steps this run is nested in hold. */
  #heldAbove: ReadonlySet<string> | undefined;
  #flushScheduled = false;
  #startSoon: ReturnType<typeof setImmediate> | undefined;
  #clock = 0;
  /** After release: the run id and (DAGs) node states, as the binding handed them over. */
  protected final: string | undefined;
  protected storageError: unknown;
  #traceparent: string | undefined;

  protected constructor(def: NativeDefinition, context: unknown, rootInput: unknown, options: RunOptionsBase & { keepAlive?: boolean }, stateTypes: readonly string[]) {
    super();
    this.def = def;
    this.name = options.name ?? def.name;
    this.context = context;
    this.rootInput = rootInput;
    this.parentFrame = currentFrame();
    this.tools = options.tools ?? (this.parentFrame?.owner.tools as Tools | undefined) ?? {};
    // Nested runs take their slots where the step that started them does; a key that
    // step (or one above it) already holds is not taken again, so a nested step never
    // waits on a slot its own parent holds.
    const parent = this.parentFrame?.owner as RunnerBase<any> | undefined;
    this.semaphores = options.semaphores ?? parent?.semaphores ?? [];
    this.#heldAbove = parent?.keysHeldAt(this.parentFrame!.slot);
    this.keepAlive = options.keepAlive === true;
    this.#traceparent = options.traceparent;
    this.on('newListener', (type: string | symbol) => {
      if (type === 'event' || stateTypes.includes(type as string)) this.observe();
    });
  }

  /** The flags the run is created with. */
  private flags(extra: number): number {
    let f = extra;
    if (this.parentFrame?.owner.isObserved()) {
      this.observed = true;
      f |= RunFlag.Observe;
    }
    if (this.semaphores.length > 0) f |= RunFlag.Semaphores;
    if (this.keepAlive) f |= RunFlag.KeepAlive;
    return f;
  }

  /**
   * Take the run an `Engine` created (`init`), or create it (a plain or nested run) after
   * checking the input against the definition's `inputSchema`.
   */
  protected begin(init: EngineInit | undefined, extraFlags: number, clock: number, options: Record<string, unknown>): void {
    this.#clock = clock;
    if (init) {
      this.engine = init.link;
      this.adopt(init.key);
      if (init.plan) this.restoreValues(init.plan);
      if (this.observed) native.setObserve(this.key, true);
      return;
    }
    if (this.def.hasInputSchema) plain(() => this.def.checkInput(JSON.stringify(this.rootInput)));
    this.#create(this.flags(extraFlags), clock, options);
  }

  #create(flags: number, clock: number, options: Record<string, unknown>): void {
    const parent = this.parentFrame;
    const traceparent = this.#traceparent ?? (parent ? undefined : activeTraceparent());
    const opts: Record<string, unknown> = { ...options, traceparent };
    parent?.owner.flushLocal();
    if (parent && (native.runFlags(parent.owner.key) & 4) !== 0) {
      // Nested in a stored run: stored too, with its input.
      opts.input = rawJson(storable(this.rootInput, 'input'));
    }
    this.adopt(plain(() => native.createRun(this.def, flags, parent ? parent.owner.key : -1, parent?.slot ?? 0, clock, JSON.stringify(opts))));
    // A step that ran again after a restart starts a run it had started before: that run
    // continues from its own records, or, if it had ended, ends the same way again.
    if (native.runFlags(this.key) & 8) this.continueFrom(JSON.parse(native.takePlan(this.key)!) as Plan);
  }

  /** @internal Take a stored run's values (its context, and what each kind keeps). */
  continueFrom(plan: Plan): void {
    if (plan.done) {
      this.memo = plan.done;
      return;
    }
    if (plan.context && typeof this.context === 'object' && this.context !== null) {
      for (const k of Object.keys(this.context)) delete this.context[k];
      Object.assign(this.context, plan.context);
    }
    this.restoreValues(plan);
  }

  /** A nested run that had ended before a restart: how it ended. */
  protected memo: Plan['done'];

  /** Restore what each kind keeps from a plan (see `face_plan` in src/engine.rs). */
  protected abstract restoreValues(plan: Plan): void;

  /** A run that ended before a restart settles as it ended, without running again. */
  protected settleMemo(): boolean {
    const done = this.memo;
    if (!done) return false;
    this.memo = undefined;
    if (done.status === 'finished') this.resolveFinished(done.output as Out);
    else if (done.status === 'error') {
      const e = done.error as { name?: string; message?: string } | null;
      const err = Object.assign(new Error(e?.message ?? 'failed'), e && typeof e === 'object' ? e : {});
      this.rejectFinished(err, true);
    } else this.rejectFinished(new CancelledError(), false);
    this.release();
    return true;
  }

  /** @internal Take a run created by the binding. */
  adopt(key: number): void {
    this.key = key;
    runs[key & 0xffffff] = this;
    this.#readFlags();
    // A run nested in a stored run is stored too (the binding decided): it joins the engine.
    this.engine ??= (this.parentFrame?.owner as RunnerBase<any> | undefined)?.engine;
    if (this.engine && this.stored) this.engine.track(this);
    else this.engine = undefined;
  }

  #readFlags(): void {
    const f = native.runFlags(this.key);
    this.json = (f & 1) !== 0;
    this.sync = (f & 2) !== 0;
    this.stored = (f & 4) !== 0;
  }

  /** Whether the run is written to a store. */
  protected stored = false;

  /** @internal The engine closed: the run goes on in memory, no longer stored. */
  detach(): void {
    if (this.final === undefined && this.key >= 0) this.#readFlags();
    this.engine = undefined;
  }

  /** The run id (UUIDv7) its events carry; a run nested in a step shares its outer run's. */
  get runId(): string {
    return this.final !== undefined ? this.final.slice(0, 36) : (native.runId(this.key) ?? '');
  }

  /** Resolves with the output, or rejects with the error (or a `CancelledError`). */
  get finished(): Promise<Out> {
    if (!this.#finished) {
      if (this.#outcome === RESOLVED) this.#finished = Promise.resolve(this.#value as Out);
      else if (this.#outcome === REJECTED) this.#finished = Promise.reject(this.#value);
      else this.#finished = new Promise<Out>((resolve, reject) => (this.#settle = { resolve, reject }));
    }
    return this.#finished;
  }

  /** @internal Whether the native run was let go. */
  get released(): boolean {
    return this.final !== undefined;
  }

  /** @internal Whether `finished` has settled (or is settling). */
  get settled(): boolean {
    return this.#outcome !== PENDING;
  }

  /** Send a command (an op and its arguments, and a value as JSON for the sinks) to the run. */
  protected command(op: number, a = 0, b = 0, value?: string): void {
    this.#call(op, a, b, -1, value);
  }

  /** Start the run (once); resolves like `finished`. */
  abstract run(): Promise<unknown>;

  /** @internal The time on the run's clock (ms). */
  now(): number {
    return native.clockNow(this.#clock);
  }

  /**
   * @internal An Engine's run starts once its caller's turn is over, so that a listener
   * attached right after `start()` (or `await resume()`) sees its first events. Whatever
   * reaches the run earlier starts it first; a cancel ends it without running a step.
   */
  startSoon(): void {
    this.#startSoon = setImmediate(() => this.startNow());
  }

  /** @internal Start a run whose start was deferred (see `startSoon`) now. */
  startNow(): void {
    if (this.#dropStart()) void this.run();
  }

  #dropStart(): boolean {
    if (this.#startSoon === undefined) return false;
    clearImmediate(this.#startSoon);
    this.#startSoon = undefined;
    return true;
  }

  /** Send the op in `io` to the binding with the values a stored or traced run needs. */
  #call(op: number, a = 0, b = 0, c = -1, value?: string, context?: string): void {
    if (this.#startSoon !== undefined && this.#dropStart() && op !== Op.Cancel) void this.run();
    if (this.key < 0 || this.final !== undefined) {
      this.lastIgnored = true;
      return;
    }
    this.flushLocal();
    io[0] = op;
    io[1] = this.key;
    io[2] = a;
    io[3] = b;
    io[4] = c;
    const n = this.json ? callNative(() => native.callWith(value, context)) : callNative(call);
    this.lastIgnored = (io[1] & ResponseFlag.Ignored) !== 0;
    dispatch(n);
  }

  /** Whether the binding ignored the last command (it no longer applied). */
  protected lastIgnored = false;

  /** @internal Report a step's result to the engine. */
  report(slot: number, outcome: number, value: unknown): void {
    this.#slotRequests?.get(slot)?.request.release();
    this.#slotRequests?.delete(slot);
    if (this.final !== undefined) return;
    this.reported(slot, outcome, value);
  }

  /** Report a step's result: the op and the values that go with it (see subclasses). */
  protected reportStep(slot: number, outcome: number, guards: number, value?: string, context?: string): void {
    this.#call(Op.Complete, slot, outcome, guards, value, context);
  }

  protected abstract reported(slot: number, outcome: number, value: unknown): void;

  /** The JSON of a step's value for the sinks, or the `StorageError` that fails the step. */
  protected valueJson(value: unknown, path: string): string | StorageError | undefined {
    if (!this.json) return undefined;
    try {
      return storable(value, path);
    } catch (err) {
      if (err instanceof StorageError) return err;
      return new StorageError(`${path}: ${(err as Error)?.message}`);
    }
  }

  /** The context as JSON for a stored run's snapshot; a context JSON cannot hold stops the run. */
  protected contextJson(): string | undefined {
    if (!this.engine) return undefined;
    try {
      return storable(this.context, 'context') ?? '{}';
    } catch (err) {
      this.failStorage(err);
      return undefined;
    }
  }

  /** @internal */
  scheduleFlush(): void {
    if (this.#flushScheduled || !this.engine) return;
    this.#flushScheduled = true;
    setImmediate(() => {
      this.#flushScheduled = false;
      this.flushNow();
    });
  }

  /** @internal Write what a batched run collected (`engine.flush()`, the end of a turn). */
  flushNow(): void {
    if (this.final !== undefined || this.key < 0 || !this.engine) return;
    try {
      native.flushRun(this.key, this.flushContext());
    } catch (err) {
      this.failStorage(rethrown(err));
    }
  }

  /** The context a flush writes (DAGs: now; machines keep the one of their last boundary). */
  protected flushContext(): string | undefined {
    return undefined;
  }

  /** @internal The run cannot be stored any more: it stops, and `finished` rejects with the reason. */
  failStorage(err: unknown): void {
    if (this.storageError !== undefined || this.settled) return;
    this.storageError = err;
    queueMicrotask(() => drive(() => dispatch(native.failStorage(this.key, errorText(err)))));
  }

  /** @internal The binding could not write the run's records. */
  storageFailed(notices: Array<() => void>): void {
    const message = native.message(this.key) ?? 'the run could not be stored';
    this.storageError ??= new Error(message);
    notices.push(() => this.rejectFinished(this.storageError, true));
  }

  // ---- records ----

  /** @internal The machine moved (machines only). */
  moved(_from: number, _to: number, _handle: number, _input: number): void {}
  /** @internal A machine state failed. */
  failed(_halted: boolean, _hasMessage: boolean, _notices: Array<() => void>): void {}
  /** @internal Forget an event's data. */
  dropEvent(_handle: number): void {}
  /** @internal A machine's status; returns true when the run may be released. */
  status(_status: number, _current: number, _flags: number, _notices: Array<() => void>): boolean {
    return false;
  }
  /** @internal The run ended (`failedNode`: a DAG's failing node); returns true when it may be released now. */
  abstract ended(end: number, failedNode: number, notices: Array<() => void>): boolean;
  /** @internal Stepwise DAGs: a node is ready. */
  ready(_slot: number, _node: number): void {}
  /** @internal Call a step's runner (`budget`, `attempt`: see `Rec.Run`). */
  abstract launch(slot: number, node: number, budget: number, attempt: number): void;
  /** @internal A step's attempt ran past its timeout (a DAG node's; a state's that is retried). */
  timedOut(_node: number): void {}
  /** @internal The `retryOn` of a node or state. */
  retryPredicate(_step: number): ((error: unknown) => boolean) | undefined {
    return undefined;
  }
  /** @internal Report the steps a machine ran by itself before anything else reaches the run. */
  flushLocal(): void {}
  /** @internal A condition the core asks about (machines). */
  guard(_transition: number, _handle: number): number {
    return 1;
  }

  /** @internal Let the native run go: the binding frees it now. */
  release(): void {
    if (this.final !== undefined) return;
    this.engine?.untrack(this);
    this.final = native.release(this.key) ?? '';
    if (runs[this.key & 0xffffff] === this) runs[this.key & 0xffffff] = undefined;
  }

  /** @internal The semaphore keys held where step `slot` of this run runs (for runs nested in it). */
  keysHeldAt(slot: number): ReadonlySet<string> | undefined {
    const claim = this.#slotRequests?.get(slot);
    if (!claim?.running) return this.#heldAbove;
    return new Set([...(this.#heldAbove ?? []), claim.request.key]);
  }

  /** @internal Take the semaphore slots of a step, then tell the engine. */
  acquire(slot: number, node: number): void {
    const key = this.semaphoreKey(node);
    if (this.#heldAbove?.has(key)) {
      // Counted already by the step this run is nested in.
      queueMicrotask(() => drive(() => this.#call(Op.Acquired, slot)));
      return;
    }
    const request = new SlotRequest(this.semaphores, key);
    const claim = { request, running: false };
    (this.#slotRequests ??= new Map()).set(slot, claim);
    request.acquire().then(
      () =>
        drive(() => {
          claim.running = true;
          this.#call(Op.Acquired, slot);
          if (this.lastIgnored) {
            this.#slotRequests?.delete(slot);
            request.abort();
          }
        }),
      (err) =>
        drive(() => {
          // The step never ran: its semaphore's failure is its failure. Marked first: the
          // Acquired call may hand out the step's Run record at once.
          this.#slotRequests?.delete(slot);
          this.skipLaunch = slot;
          this.#call(Op.Acquired, slot);
          if (this.lastIgnored) this.skipLaunch = -1;
          else this.acquireFailed(slot, err);
        }),
    );
  }

  /**
   * The run ended: steps still waiting for slots will never run, so what they took goes
   * back now (running steps keep theirs until they return).
   */
  protected abortWaiting(): void {
    if (!this.#slotRequests) return;
    for (const [slot, claim] of this.#slotRequests) {
      if (claim.running) continue;
      this.#slotRequests.delete(slot);
      claim.request.abort();
    }
  }

  /** A step whose semaphore failed: it fails with that error (the run was told it runs). */
  protected acquireFailed(slot: number, err: unknown): void {
    settle(this, slot, StepOutcome.Error, err);
  }

  /** A slot whose Run record must not call its runner (its semaphore failed). */
  protected skipLaunch = -1;

  protected abstract semaphoreKey(node: number): string;

  /** Call a runner in its step's frame; the result is reported through the pump. */
  protected call(slot: number, fn: (args: any) => unknown, args: Record<string, unknown>): void {
    if (this.skipLaunch === slot) {
      this.skipLaunch = -1;
      return;
    }
    let result: unknown;
    let then: unknown;
    try {
      result = callIn(this, slot, fn, args);
      // A result whose `then` cannot even be read (a Proxy that throws) fails the step.
      then = result !== null && (typeof result === 'object' || typeof result === 'function') ? (result as PromiseLike<unknown>).then : undefined;
    } catch (err) {
      settle(this, slot, failure(err), err);
      return;
    }
    if (typeof then === 'function') {
      try {
        then.call(
          result,
          (v: unknown) => settle(this, slot, StepOutcome.Ok, v),
          (err: unknown) => settle(this, slot, failure(err), err),
        );
      } catch (err) {
        settle(this, slot, failure(err), err);
      }
    } else {
      settle(this, slot, StepOutcome.Ok, result);
    }
  }

  /** @internal */
  slotCancelled(slot: number): boolean {
    if (this.final !== undefined) return true;
    this.flushLocal();
    return native.isCancelled(this.key, slot);
  }

  /** Cancel the run. */
  cancel(): void {
    if (outsideNative(() => this.cancel())) return;
    drive(() => this.#call(Op.Cancel));
  }

  /**
   * The run's events from now on (those of runs nested in it included) as an async
   * iterable that ends when the run ends, throwing its error if it failed. `types` keeps
   * only those event types.
   */
  stream(options: { types?: readonly string[] } = {}): AsyncIterableIterator<RamusEvent> {
    const types = options.types && new Set(options.types);
    const queue: RamusEvent[] = [];
    let wake: (() => void) | undefined;
    let ended = false;
    const onEvent = (e: RamusEvent): void => {
      if (types && !types.has(e.type)) return;
      queue.push(e);
      wake?.();
    };
    this.on('event', onEvent);
    const finished = this.finished;
    const end = (): void => {
      ended = true;
      wake?.();
    };
    finished.then(end, end);
    const off = (): unknown => this.off('event', onEvent);
    return (async function* () {
      try {
        for (;;) {
          while (queue.length > 0) yield queue.shift()!;
          if (ended) break;
          await new Promise<void>((r) => (wake = r));
          wake = undefined;
        }
        await finished;
      } finally {
        off();
      }
    })();
  }

  // ---- how the run ends ----

  protected resolveFinished(value: Out): void {
    if (this.#outcome !== PENDING) return;
    if (this.storageError !== undefined) {
      this.rejectFinished(this.storageError, true);
      return;
    }
    this.#whenCommitted(() => this.#resolve(value), (err) => this.#reject(rethrown(err), true));
  }

  protected rejectFinished(error: unknown, emitError: boolean): void {
    if (this.#outcome !== PENDING) return;
    if (this.storageError !== undefined) {
      error = this.storageError;
      emitError = true;
    }
    // The run's own error says more than a failed write of its end would.
    const done = () => this.#reject(error, emitError);
    this.#whenCommitted(done, done);
  }

  /** A stored run settles once its records are committed (waiting off the JS thread). */
  #whenCommitted(ok: () => void, failed: (err: unknown) => void): void {
    if (!this.engine) {
      ok();
      return;
    }
    this.#outcome = SETTLING;
    this.engine.store.flushAsync().then(ok, failed);
  }

  #resolve(value: Out): void {
    this.#outcome = RESOLVED;
    this.#value = value;
    this.#settle?.resolve(value);
    this.emitSafely('finish', value);
  }

  #reject(error: unknown, emitError: boolean): void {
    this.#outcome = REJECTED;
    this.#value = error;
    // Only a failure of the whole run rejects `finished`: fatal by definition.
    if (emitError) this.emitSafely('ramus:error', { error, fatal: true } satisfies RamusErrorEvent);
    else this.emitSafely('cancelled');
    this.#settle?.reject(error);
  }

  // ---- events ----

  protected observe(): void {
    if (this.observed) return;
    this.observed = true;
    if (this.key >= 0 && this.final === undefined) {
      this.flushLocal();
      native.setObserve(this.key, true);
    }
  }

  protected emitSafely(type: string, ...args: unknown[]): void {
    try {
      this.emit(type, ...args);
    } catch (err) {
      reportListenerError(err);
    }
  }

  /** @internal Turn the events the core recorded into public events and dispatch them. */
  deliverEvents(): void {
    const json = native.drainEvents(this.key);
    if (json == null || !this.observed) return;
    const batch = JSON.parse(json) as WireBatch;
    const steps = batch.s;
    for (const w of batch.e) {
      const data = w[W_DATA] === DataCode.Custom ? this.#customData.shift() : this.eventData(w);
      const event: RamusEvent = {
        id: w[0],
        type: w[1],
        runId: batch.r,
        stepId: steps[w[2]]!,
        parentStepId: w[3] < 0 ? null : steps[w[3]]!,
        source: this.name,
        sourceNode: w[4] >= 0 ? this.nodeName(w[4]) : '',
        time: w[5],
        data,
      };
      this.onEvent(event, w);
      this.emitSafely('event', event);
      this.parentFrame?.owner.forwardEvent(event);
    }
  }

  protected abstract nodeName(node: number): string;
  protected abstract eventData(w: WireEvent): unknown;
  protected abstract onEvent(event: RamusEvent, w: WireEvent): void;

  /** @internal */
  isObserved(): boolean {
    return this.observed;
  }

  /** @internal Events of runs nested in this run's steps. */
  forwardEvent(event: RamusEvent): void {
    this.emitSafely('event', event);
    this.parentFrame?.owner.forwardEvent(event);
  }

  /** @internal */
  customEvent(slot: number, type: string, data: unknown, store = true): void {
    if (typeof type !== 'string' || type === '') throw new TypeError('emit(type, data): type must be a non-empty string');
    if (!this.observed && !(this.json && store)) return;
    if (this.final !== undefined) return;
    // A stored run stores the data: what JSON cannot hold fails the emit, naming the path.
    const json = this.json && store ? storable(data, `data of event '${type}'`) : undefined;
    if (this.observed) this.#customData.push(data);
    drive(() => dispatch(plain(() => native.customEvent(this.key, slot, type, json, store))));
  }
}

/** How a stored run continues (see `face_plan` in src/engine.rs). */
export interface Plan {
  done?: { status: string; output: unknown; error: unknown };
  dag?: { finished: Array<[number, unknown]>; failed: Array<[number, unknown]> };
  machine?: { input?: unknown; output?: unknown; stateOutput?: unknown; given?: unknown; event?: { type: string; data: unknown }; events?: Array<[number, { type: string; data: unknown }]>; previous?: string | null };
  /** A resumed machine's status code and current state before it starts again. */
  status?: [number, number];
  context?: unknown;
  pending: Array<[string, string, unknown, boolean]>;
}

/** A JSON text as the value it encodes inside other JSON (`undefined` stays absent). */
export function rawJson(text: string | undefined): unknown {
  return text === undefined ? undefined : JSON.parse(text);
}
