import { EventEmitter } from 'node:events';

import { currentStep, type StepFrame, type StepOwner } from './context';
import type { Tools } from './dag-types';
import { CancelledError } from './errors';
import { DurableRun, errorText, storable, trackDurable, untrackDurable, type RunEnd } from './durable';
import { plainErrors } from './errors';
import type { NativeStore } from './native';
import { newRunId } from './native';
import { activeTraceparent, tracingOn } from './tracing';
import { DataCode, reportListenerError, W_DATA, type RamusEvent, type WireBatch, type WireEvent } from './events';

/** The binding's per-run surface both runners share (see src/lib.rs and src/machine.rs). */
export interface NativeRunCore {
  runId(): string;
  stepId(slot: number): string;
  setObserve(on: boolean): void;
  customEvent(slot: number, type: string, data?: string | null): void;
  drainEvents(): string | null;
  storeFlush(snapshot?: string | null): void;
  storeEnd(status: string, output?: string | null, error?: string | null): void;
  trace(name: string, traceparent?: string | null, attributes?: string | null): void;
  traceparent(slot?: number | null): string | null;
}

/** What a runner call receives besides its inputs; also the async-context frame of its step. */
export class StepArgs implements StepFrame {
  context: any;
  rootInput: any;
  tools: Tools;
  // Own properties, as plain objects had them in the original: destructuring and spreading
  // (`{ ...args }`) both keep working.
  isCancelled: () => boolean;
  exitIfCancelled: () => void;
  emit: (type: string, data?: unknown) => void;
  readonly owner: RunnerBase<any>;
  readonly slot: number;

  constructor(owner: RunnerBase<any>, slot: number) {
    this.context = owner.context;
    this.rootInput = owner.rootInput;
    this.tools = owner.tools;
    this.isCancelled = () => owner.slotCancelled(slot);
    this.exitIfCancelled = () => {
      if (owner.slotCancelled(slot)) throw new CancelledError();
    };
    this.emit = (type, data) => owner.customEvent(slot, type, data);
    this.owner = owner;
    this.slot = slot;
  }
}

/** Finished-promise states. */
const PENDING = 0;
const RESOLVED = 1;
const REJECTED = 2;
/** Ended, waiting for its records to be committed before `finished` settles (batched). */
const SETTLING = 3;

/**
 * What DAG and state machine runners share: the `finished` promise, listeners, the event
 * stream (observation is switched on by the first listener, or inherited from the step a
 * run is nested in), forwarding to the enclosing run, and the runs nested in its steps.
 */
export abstract class RunnerBase<Out> extends EventEmitter implements StepOwner {
  readonly name: string;
  readonly context: any;
  readonly rootInput: unknown;
  readonly tools: Tools;
  /** The step this run was started in, if any. */
  protected readonly parentFrame: StepFrame | undefined;
  protected observed = false;
  #customData: unknown[] = [];
  #children: Map<number, Set<{ cancel(): void }>> | undefined;
  #outcome = PENDING;
  #value: unknown;
  #finished: Promise<Out> | undefined;
  #settle: { resolve(v: Out): void; reject(e: unknown): void } | undefined;
  /** Set when the run is stored (started through an `Engine`, or nested in such a run). */
  #durable: DurableRun | undefined;
  /** A value the store could not hold: the run fails with it. */
  #storageError: unknown;

  protected constructor(name: string, context: unknown, rootInput: unknown, tools: Tools | undefined, stateTypes: readonly string[]) {
    super();
    this.name = name;
    this.context = context;
    this.rootInput = rootInput;
    this.parentFrame = currentStep.getStore();
    this.tools = tools ?? (this.parentFrame?.owner.tools as Tools | undefined) ?? {};
    this.on('newListener', (type: string | symbol) => {
      if (type === 'event' || stateTypes.includes(type as string)) this.observe();
    });
  }

  /** The binding's run object. */
  protected abstract get core(): NativeRunCore;

  /**
   * The run id (UUIDv7) its events carry; a run nested in a step shares its outer run's.
   * For a run started through an `Engine`, the id to `resume`, `send` to and read back.
   */
  get runId(): string {
    return this.#durable?.runId ?? this.core.runId();
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

  /** Whether `finished` has settled. */
  protected get settled(): boolean {
    return this.#outcome !== PENDING;
  }

  /**
   * @internal Make the run durable: the binding writes its steps to `store` from now on.
   * `row` describes the run (JSON, see `RunWriter::open` in src/store.rs); `resume` for a
   * stored run continuing here; `output` a restored machine's last output (JSON).
   */
  attachDurable(store: NativeStore, runId: string, row: string, resume: boolean, sync: boolean, output?: string, events?: string): void {
    plainErrors(() => this.attachNative(store, row, resume, sync, output, events));
    this.#durable = new DurableRun(store, runId, sync);
    trackDurable(store, this);
  }

  /** The binding call that attaches the store (its shape differs per run kind). */
  protected abstract attachNative(store: NativeStore, row: string, resume: boolean, sync: boolean, output?: string, events?: string): void;

  /**
   * A run started inside a step of a stored run is stored too, as its own row linked to
   * that step. Called by subclasses once their native run exists.
   */
  protected nestDurable(kind: 'dag' | 'machine', input: unknown): void {
    const frame = this.parentFrame;
    const parent = frame?.owner.durableParent();
    if (!frame || !parent || this.#durable) return;
    const runId = newRunId();
    const row = {
      id: runId,
      name: this.name,
      kind,
      tags: [],
      parentRunId: parent.runId,
      parentStepId: frame.owner.stepIdentity(frame.slot),
    };
    const json = `${JSON.stringify(row).slice(0, -1)},"input":${storable(input, 'input') ?? 'null'}}`;
    this.attachDurable(parent.store, runId, json, false, parent.sync);
  }

  /** How a finished run is stored (a machine resting in a final error state: `error`). */
  protected endStatus(): RunEnd['status'] {
    return 'finished';
  }

  /** The run's restorable state as JSON text, written with each batch. */
  protected snapshot(): string | undefined {
    return undefined;
  }

  /**
   * Called after every driving call of a durable run, before any runner it launched
   * starts: a machine notes its context here while no state runs (a state's runner may
   * change the context before the batch is written, and must not see those changes again
   * after a restore). A DAG's snapshot is taken when its batch is written.
   */
  protected stepBoundary(): void {}


  /** @internal Whether the run is stored (started through an `Engine` with durability). */
  get isStored(): boolean {
    return this.#durable !== undefined;
  }

  /** The JSON of a value the run must store; throws a `StorageError` naming its path. */
  protected storeJson(value: unknown, path: string): string | undefined {
    return this.#durable ? storable(value, path) : undefined;
  }

  /** The JSON of an error for the run's record and span (undefined when neither exists). */
  protected storeError(err: unknown): string | undefined {
    return this.#durable || this.#traced ? errorText(err) : undefined;
  }

  #traced = false;

  /**
   * Record spans when tracing is configured: under the span of the step this run is
   * nested in, the `traceparent` option, or the caller's active OpenTelemetry span. Called
   * by subclasses once their native run exists.
   */
  protected startTrace(traceparent: string | undefined, attributes: () => string | undefined): void {
    if (!tracingOn()) return;
    const frame = this.parentFrame;
    const parent = traceparent ?? (frame ? frame.owner.stepTraceparent(frame.slot) : activeTraceparent());
    this.core.trace(this.name, parent, attributes());
    this.#traced = true;
  }

  /** @internal The traceparent of a step's span, for runs started inside it. */
  stepTraceparent(slot: number): string | undefined {
    return this.#traced ? (this.core.traceparent(slot) ?? undefined) : activeTraceparent();
  }

  /**
   * After a driving call: have the binding write what it recorded. In `'sync'` (or `now`)
   * it is committed before this returns; in `'batched'` all a turn of the event loop
   * produced is written at once, at the end of the turn.
   */
  protected persist(now = false): void {
    const durable = this.#durable;
    if (!durable || this.#outcome !== PENDING) return;
    try {
      this.stepBoundary();
    } catch (err) {
      this.failStorage(err);
      return;
    }
    if (now || durable.sync) {
      this.#write();
    } else if (!durable.scheduled) {
      durable.scheduled = true;
      setImmediate(() => {
        durable.scheduled = false;
        // Not after the engine closed (detached) or the run ended (its end wrote everything).
        if (this.#outcome === PENDING && this.#durable === durable) this.#write();
      });
    }
  }

  #write(): void {
    try {
      this.core.storeFlush(this.snapshot());
    } catch (err) {
      this.failStorage(err);
    }
  }

  /**
   * @internal The engine closes: write what waits, then stop writing. The run stays in the
   * database as it is (resumable); what it does from now on is not stored.
   */
  detachDurable(): void {
    this.flushDurable();
    if (this.#durable) untrackDurable(this.#durable.store, this);
    this.#durable = undefined;
  }

  /** @internal Write what waits for the end of the turn (`engine.flush()`). */
  flushDurable(): void {
    if (this.#durable && this.#outcome === PENDING) this.#write();
  }

  /** The run cannot be stored any more: it stops, and `finished` rejects with the reason. */
  protected failStorage(err: unknown): void {
    if (this.#storageError !== undefined || this.#outcome !== PENDING) return;
    this.#storageError = err;
    queueMicrotask(() => this.cancel());
  }

  /**
   * Store how the run ended, with its last snapshot, committed (in `sync`) before
   * `finished` settles. Returns the `StorageError` when the output or the context cannot
   * be stored: the run then ends as an error instead.
   */
  #storeEnd(end: RunEnd): unknown {
    const core = this.core;
    let problem: unknown;
    let snapshot: string | undefined;
    let output: string | undefined;
    try {
      if (end.status === 'finished') output = storable(end.output, 'output');
      snapshot = this.snapshot();
    } catch (err) {
      problem = err;
    }
    try {
      if (problem !== undefined) core.storeEnd('error', undefined, errorText(problem));
      else if (end.status === 'error') core.storeEnd('error', undefined, errorText(end.error));
      else core.storeEnd(end.status, output, undefined);
      core.storeFlush(snapshot);
      untrackDurable(this.#durable!.store, this);
    } catch (err) {
      // The database itself failed (closed, disk full): the caller learns it from `finished`.
      problem ??= err;
    }
    return problem;
  }

  protected resolveFinished(value: Out): void {
    if (this.#outcome !== PENDING) return;
    const durable = this.#durable;
    if (durable) {
      const problem = this.#storeEnd({ status: this.endStatus(), output: value });
      if (problem !== undefined) {
        this.#storageError = problem;
        this.#reject(problem, true);
        return;
      }
      if (!durable.sync) {
        // A batched run settles once its records are committed (so a failed write
        // reaches `finished`), waiting off the JS thread.
        this.#outcome = SETTLING;
        durable.store.flushAsync().then(
          () => this.#resolve(value),
          (err: unknown) => this.#reject(new Error((err as Error).message), true),
        );
        return;
      }
    }
    this.#resolve(value);
  }

  #resolve(value: Out): void {
    this.#outcome = RESOLVED;
    this.#value = value;
    this.#releaseFromParent();
    this.#settle?.resolve(value);
    this.emitSafely('finish', value);
  }

  protected rejectFinished(error: unknown, emitError: boolean): void {
    if (this.#outcome !== PENDING) return;
    if (this.#storageError !== undefined) {
      error = this.#storageError;
      emitError = true;
    }
    const durable = this.#durable;
    if (durable) {
      this.#storeEnd(emitError ? { status: 'error', error } : { status: 'cancelled' });
      if (!durable.sync) {
        this.#outcome = SETTLING;
        // The run's own error says more than a failed write of its end would.
        const done = () => this.#reject(error, emitError);
        durable.store.flushAsync().then(done, done);
        return;
      }
    }
    this.#reject(error, emitError);
  }

  #reject(error: unknown, emitError: boolean): void {
    this.#outcome = REJECTED;
    this.#value = error;
    this.#releaseFromParent();
    if (emitError) this.emitSafely('ramus:error', error);
    else this.emitSafely('cancelled');
    this.#settle?.reject(error);
  }

  /** Register with the enclosing step, so cancelling it cancels this run. */
  protected attachToParent(): void {
    this.parentFrame?.owner.adoptChild(this.parentFrame.slot, this);
  }

  #releaseFromParent(): void {
    this.parentFrame?.owner.releaseChild(this.parentFrame.slot, this);
  }

  abstract cancel(): void;

  /** Cancel runs nested in one step, or in all steps. */
  protected cancelChildren(slot?: number): void {
    const children = this.#children;
    if (!children) return;
    const sets = slot === undefined ? [...children.values()] : [children.get(slot) ?? new Set()];
    if (slot === undefined) this.#children = undefined;
    else children.delete(slot);
    for (const set of sets) for (const child of set) child.cancel();
  }

  protected observe(): void {
    if (this.observed) return;
    this.observed = true;
    this.core.setObserve(true);
  }

  protected emitSafely(type: string, ...args: unknown[]): void {
    try {
      this.emit(type, ...args);
    } catch (err) {
      reportListenerError(err);
    }
  }

  /** Turn the events the core recorded into public events and dispatch them. */
  protected deliverEvents(): void {
    const json = this.core.drainEvents();
    if (json == null) return;
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
        sourceNode: this.sourceNode(w),
        time: w[5],
        data,
      };
      this.onEvent(event, w);
      this.emitSafely('event', event);
      this.parentFrame?.owner.forwardEvent(event);
    }
  }

  /** The `data` of a core event, from the values this runner holds. */
  protected abstract eventData(w: WireEvent): unknown;

  /** The `sourceNode` of a core event: the node or state name, '' for run events. */
  protected abstract sourceNode(w: WireEvent): string;

  /** Runner-specific listeners (state changes) for one event. */
  protected abstract onEvent(event: RamusEvent, w: WireEvent): void;

  // ---- StepOwner: what runs started inside a step see ----

  /** @internal */
  runIdentity(): string {
    return this.core.runId();
  }

  /** @internal */
  stepIdentity(slot: number): string {
    return this.core.stepId(slot);
  }

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
  adoptChild(slot: number, child: { cancel(): void }): void {
    this.#children ??= new Map();
    let set = this.#children.get(slot);
    if (!set) this.#children.set(slot, (set = new Set()));
    set.add(child);
  }

  /** @internal */
  releaseChild(slot: number, child: { cancel(): void }): void {
    const set = this.#children?.get(slot);
    if (set?.delete(child) && set.size === 0) this.#children!.delete(slot);
  }

  /** @internal */
  abstract slotCancelled(slot: number): boolean;

  /** @internal */
  /** @internal The durable writer of the run, for runs nested in its steps. */
  durableParent(): DurableRun | undefined {
    return this.#durable;
  }

  /** @internal */
  customEvent(slot: number, type: string, data: unknown): void {
    if (typeof type !== 'string' || type === '') throw new TypeError('emit(type, data): type must be a non-empty string');
    if (!this.observed && !this.#durable && !this.#traced) return;
    // A durable run stores the data: what JSON cannot hold fails the emit, naming the path.
    const json = this.storeJson(data, `data of event '${type}'`);
    if (this.observed) this.#customData.push(data);
    this.core.customEvent(slot, type, json);
    if (this.observed) this.deliverEvents();
    this.persist();
  }
}

/** Call a step's runner inside its async-context frame; `settle(outcome, value)` gets the result. */
export function callInStep(
  args: StepArgs,
  run: (args: any) => unknown,
  settle: (failed: boolean, value: unknown) => void,
): void {
  let result: unknown;
  try {
    result = currentStep.run(args, run, args);
  } catch (err) {
    settle(true, err);
    return;
  }
  if (result !== null && (typeof result === 'object' || typeof result === 'function') && typeof (result as PromiseLike<unknown>).then === 'function') {
    (result as PromiseLike<unknown>).then(
      (v) => settle(false, v),
      (err) => settle(true, err),
    );
  } else {
    settle(false, result);
  }
}
