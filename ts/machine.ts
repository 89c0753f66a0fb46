import { ENGINE, storable, StorageError, type EngineInit, type RunEnd } from './durable';
import { nodeAttributes } from './tracing';
import { CancelledError, plainErrors } from './errors';
import { DataCode, W_ARG, W_DATA, W_NODE, W_STATE, type RamusEvent, type WireEvent } from './events';
import type {
  CurrentState,
  Duration,
  MachineEvent,
  MachineStatus,
  StateMachine,
  StateMachineRunnerOptions,
  TransitionGuard,
} from './machine-types';
import { NativeMachine, NativeMachineRun, parseDurationMs, type NativeStore } from './native';
import { callInStep, RunnerBase, StepArgs } from './runner-base';
import { SlotRequest, type Semaphore } from './semaphore';

/** The input a state gets when its `timeout` fires. */
export class TimeoutError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TimeoutError';
  }
}

/** Milliseconds of a duration (`250`, `'250ms'`, `'90s'`, `'15m'`, `'2h'`, `'30d'`). */
export function parseDuration(value: Duration): number {
  if (typeof value === 'number') {
    // Beyond 2^53 ms numbers stop being exact integers: no real delay is that long.
    if (!Number.isFinite(value) || value < 0 || value > 2 ** 53) throw new Error(`Invalid duration: ${value}`);
    return value;
  }
  return plainErrors(() => parseDurationMs(String(value)));
}

/** A state's own choice of next state, returned from its `run`. */
export class TransitionTo<S extends string = string, O = unknown> {
  constructor(
    readonly state: S,
    readonly output?: O,
    readonly delay?: Duration,
  ) {}
}

/** Return this from a state's `run` to choose the next state (validated against the machine). */
export function transitionTo<S extends string, O>(state: S, output?: O, options?: { delay?: Duration }): TransitionTo<S, O> {
  return new TransitionTo(state, output, options?.delay);
}

type Row = [string, boolean, boolean, string | null, number | null, [string, string] | null, string | null, Array<[string, string, boolean, string | null]>];

/** A machine config compiled once; cached per config object. */
class CompiledMachine {
  readonly native: NativeMachine;
  readonly names: string[];
  readonly runs: Array<((args: any) => unknown) | undefined>;
  readonly isFinal: boolean[];
  readonly timeouts: Array<Duration | undefined>;
  readonly semaphoreKeys: Array<string | null>;
  /** Event types each state has transitions for (without ''), by state id. */
  readonly events: string[][] = [];
  /** Conditions by transition id (declaration order, state by state). */
  readonly conditions: Array<TransitionGuard<any, any> | undefined> = [];

  constructor(config: StateMachine<any, any>, initial: string | undefined) {
    const nodes = config.nodes;
    if (nodes === null || typeof nodes !== 'object') throw new TypeError('State machine nodes must be an object of named states');
    this.names = Object.keys(nodes);
    const rows: Row[] = [];
    for (const name of this.names) {
      const node = (nodes as Record<string, any>)[name];
      if (node === null || typeof node !== 'object') throw new TypeError(`State ${name} must be an object`);
      if (node.run !== undefined && typeof node.run !== 'function') throw new TypeError(`State ${name} run must be a function`);
      const transitions: Row[7] = [];
      const t = node.transition;
      if (typeof t === 'string') {
        transitions.push(['', t, false, null]);
        this.conditions.push(undefined);
      } else if (t !== undefined && t !== null) {
        if (typeof t !== 'object') throw new TypeError(`State ${name} transition must be a state name or an object of events`);
        for (const [event, value] of Object.entries(t)) {
          for (const item of Array.isArray(value) ? value : [value]) {
            if (typeof item === 'string') {
              transitions.push([event, item, false, null]);
              this.conditions.push(undefined);
              continue;
            }
            if (item === null || typeof item !== 'object' || typeof item.state !== 'string') {
              throw new TypeError(`State ${name} transition for event '${event}' must name a state`);
            }
            if (item.condition !== undefined && typeof item.condition !== 'function') {
              throw new TypeError(`State ${name} transition to ${item.state}: condition must be a function`);
            }
            transitions.push([event, item.state, typeof item.condition === 'function', item.delay == null ? null : String(item.delay)]);
            this.conditions.push(item.condition);
          }
        }
      }
      this.events.push([...new Set(transitions.map((t) => t[0]).filter((e) => e !== ''))]);
      const timeout = node.timeout;
      if (timeout != null && (typeof timeout !== 'object' || typeof timeout.state !== 'string')) {
        throw new TypeError(`State ${name} timeout must be { after, state }`);
      }
      rows.push([
        name,
        typeof node.run === 'function',
        node.final === true,
        node.errorState ?? null,
        node.maxVisits ?? null,
        timeout ? [String(timeout.after), timeout.state] : null,
        node.semaphoreKey ?? null,
        transitions,
      ]);
    }
    const spec = [String(config.name ?? ''), config.initial || initial || null, config.errorState ?? null, config.maxSteps ?? null, rows];
    this.native = plainErrors(() => new NativeMachine(JSON.stringify(spec)));
    this.runs = this.names.map((n) => (nodes as Record<string, any>)[n].run);
    this.isFinal = rows.map((r) => r[2]);
    this.timeouts = this.names.map((n) => (nodes as Record<string, any>)[n].timeout?.after);
    this.semaphoreKeys = rows.map((r) => r[6]);
  }
}

const compiled = new WeakMap<object, Map<string, CompiledMachine>>();

/** Compile once per config object (and per `initial` the caller supplies when the config has none). */
export function compile(config: StateMachine<any, any>, initial: string | undefined): CompiledMachine {
  if (config === null || typeof config !== 'object') throw new TypeError('A state machine config must be an object');
  const supplied = config.initial ? '' : (initial ?? '');
  let byInitial = compiled.get(config);
  if (!byInitial) compiled.set(config, (byInitial = new Map()));
  let m = byInitial.get(supplied);
  if (!m) {
    m = new CompiledMachine(config, supplied || undefined);
    byInitial.set(supplied, m);
  }
  return m;
}

// Action codes, five numbers per action (see src/machine.rs).
const ACT_RUN = 1;
const ACT_ACQUIRE = 2;
const ACT_ERRORED = 3;
const ACT_TRANSITIONED = 4;
const ACT_ARM = 5;
const ACT_CLEAR = 6;
const ACT_DROP = 7;
const ACT_FINISHED = 8;

/** Status names by the binding's status codes (see `status_code` in src/machine.rs). */
const MACHINE_STATUSES: readonly MachineStatus[] = [
  'initial',
  'ready',
  'pendingSemaphore',
  'running',
  'waitingForEvent',
  'sleeping',
  'final',
  'error',
  'cancelled',
];

const INPUT_ERROR = 1;
const MAX_TIMER_MS = 2 ** 31 - 1;
const INPUT_TIMEOUT = 2;

/** The arguments of one state run. */
class MachineStateArgs extends StepArgs {
  input: unknown;
  previousState: string | undefined;
  event: MachineEvent | undefined;

  constructor(owner: StateMachineRunner<any, any, any>, slot: number, input: unknown, previousState: string | undefined, event: MachineEvent | undefined) {
    super(owner, slot);
    this.input = input;
    this.previousState = previousState;
    this.event = event;
  }
}

/**
 * Runs one state machine. The Rust core owns the machine's state, transitions, queue and
 * timers; this class calls state runners and conditions and keeps the JS values.
 */
export class StateMachineRunner<Ctx extends object = any, Root = unknown, Out = unknown, S extends string = string> extends RunnerBase<Out> {
  readonly config: StateMachine<Ctx, Root, S>;
  declare readonly context: Ctx;
  #m: CompiledMachine;
  #core: NativeMachineRun;
  #semaphores: Semaphore[];
  #keepAlive: boolean;
  #input: unknown;
  #output: unknown;
  /** The current state's own output (undefined until it ran). */
  #stateOutput: unknown;
  #event: MachineEvent | undefined;
  #previous = -1;
  #lastError: unknown;
  #events = new Map<number, MachineEvent>();
  #nextHandle = 0;
  /** The state of each recent visit's slot (older ones are dropped as the machine moves on). */
  #slotState = new Map<number, number>();
  #statusCode = 0;
  #current: number;
  #canStep = true;
  /** Set while the core calls back into a condition: the runner must not be re-entered then. */
  #inCore = false;
  #depth = 0;
  #scratch: number[][] = [];
  #notices: Array<() => void> = [];
  #activeSlot = -1;
  #timers = new Map<number, NodeJS.Timeout>();
  #slotRequests = new Map<number, SlotRequest>();
  #transitionData: unknown[] = [];
  #queue: Array<[number, boolean, unknown]> = [];
  #pumping = false;
  #transitioned = false;
  #stepWaiters: Array<(transitioned: boolean) => void> = [];
  #runWaiters: Array<() => void> = [];
  #guard: (transition: number, handle: number) => number;
  /** Where the core writes its actions, five numbers each; reused for every call. */
  #buf = new Float64Array(2 + 5 * 32);
  #resting = true;
  /** Durable runs: the context (JSON) when the last state started, or now if none runs. */
  #boundaryContext: string | undefined;
  /** Durable runs: state runs held back until the step's records are written. */
  #deferred: Array<[number, number]> = [];

  constructor(options: StateMachineRunnerOptions<Ctx, Root, S>) {
    if (options === null || typeof options !== 'object') throw new TypeError('StateMachineRunner options must be an object');
    const m = compile(options.config, options.initial);
    super(
      options.name ?? options.config.name,
      options.context ?? options.config.context?.() ?? {},
      options.input,
      options.tools,
      ['state_machine:state'],
    );
    this.config = options.config;
    this.#m = m;
    this.#semaphores = options.semaphores ?? [];
    this.#keepAlive = options.keepAlive === true;
    this.#input = options.input;
    const parent = this.parentFrame;
    const init = (options as { [ENGINE]?: EngineInit })[ENGINE];
    const restore = init?.machine;
    this.#core = plainErrors(
      () =>
        new NativeMachineRun(
          m.native,
          this.#semaphores.length > 0 ? 1 : 0,
          parent?.owner.runIdentity() ?? init?.runId,
          parent ? parent.owner.stepIdentity(parent.slot) : undefined,
          options.initial,
          restore?.core,
        ),
    );
    this.#current = m.native.stateId(options.initial ?? options.config.initial ?? '');
    if (restore) {
      this.#input = restore.input;
      this.#output = restore.output;
      this.#stateOutput = restore.stateOutput;
      this.#event = restore.event;
      for (const [handle, event] of restore.events) {
        this.#events.set(handle, event);
        this.#nextHandle = Math.max(this.#nextHandle, handle);
      }
      const previous = (JSON.parse(restore.core) as { previous: string | null }).previous;
      this.#previous = previous === null ? -1 : m.native.stateId(previous);
      // Load the restored status and state into the face's mirror of them.
      this.#take(this.#core.more(this.#buf));
    }
    if (parent?.owner.isObserved()) this.observe();
    this.startTrace(options.traceparent, () => nodeAttributes(options.config.nodes as Record<string, { tags?: unknown; info?: unknown }>));
    this.nestDurable('machine', this.#input);
    this.#guard = (transition, handle) => {
      const condition = this.#m.conditions[transition]!;
      const event = handle >= 0 ? this.#events.get(handle) : undefined;
      try {
        const r = condition(
          { context: this.context, input: this.#input, output: this.#output, rootInput: this.rootInput, event },
          event,
        );
        return r === true || (r !== null && typeof r === 'object' && r.transition !== false) ? 1 : 0;
      } catch (err) {
        this.#lastError = err;
        return 2;
      }
    };
  }

  protected get core(): NativeMachineRun {
    return this.#core;
  }

  protected override endStatus(): RunEnd['status'] {
    return this.machineStatus === 'error' ? 'error' : 'finished';
  }

  protected override stepBoundary(): void {
    if (this.#activeSlot < 0 || this.#deferred.length > 0) this.#boundaryContext = storable(this.context, 'context') ?? '{}';
  }

  protected override snapshot(): string {
    // The context as it was when the running state started: its own changes must not get
    // into a snapshot it will run again from. Everything else (the queue, timers, events
    // sent meanwhile) is taken as it is now.
    const between = this.#activeSlot < 0 || this.#deferred.length > 0;
    const context = between || this.#boundaryContext === undefined ? storable(this.context, 'context') ?? '{}' : this.#boundaryContext;
    let out = `{"core":${this.#core.snapshot()},"context":${context},"events":${storable([...this.#events], 'queued events')}`;
    // An undefined value is left out, so it comes back undefined (not null).
    const add = (key: string, value: unknown, path: string) => {
      const json = storable(value, path);
      if (json !== undefined) out += `,"${key}":${json}`;
    };
    add('input', this.#input, `input of state ${this.state}`);
    add('output', this.#output, 'output');
    add('stateOutput', this.#stateOutput, `output of state ${this.state}`);
    add('event', this.#event, 'event');
    return `${out}}`;
  }


  /** @internal Re-arm a stored timer after a restore (fires at once when already due). */
  restoreTimer(timer: number, at: number, rowId: string): void {
    this.#core.storeTimerRow(timer, rowId);
    this.#arm(timer, at);
  }

  /** @internal Deliver an event stored for this run (`engine.send` from another process). */
  deliverStored(id: string, event: { type: string; data?: unknown; queue?: boolean }): void {
    this.#core.storeDelivered(id);
    this.send(event);
  }

  protected override attachNative(store: NativeStore, row: string, resume: boolean, sync: boolean, output?: string, events?: string): void {
    this.#core.attachStore(store, row, resume, sync, output, events);
  }

  /** The current state's name. */
  get state(): S {
    return this.#m.names[this.#current] as S;
  }

  get machineStatus(): MachineStatus {
    return MACHINE_STATUSES[this.#statusCode]!;
  }

  /** The current state, its input and output, and how the machine got there. */
  get currentState(): CurrentState<S> {
    return {
      state: this.state,
      previousState: this.#previous >= 0 ? (this.#m.names[this.#previous] as S) : undefined,
      input: this.#input,
      event: this.#event,
      output: this.#stateOutput,
    };
  }

  /** The last output of a state. */
  get output(): unknown {
    return this.#output;
  }

  /** Whether `step()` would run a state now. */
  canStep(): boolean {
    return this.#canStep;
  }

  /** Event types the current state has transitions for. */
  availableEvents(): string[] {
    return [...this.#m.events[this.#current]!];
  }

  /** Run the current state once; resolves true when the machine took (or scheduled) a transition. */
  step(): Promise<boolean> {
    if (!this.#canStep) return Promise.resolve(false);
    this.attachToParent();
    return new Promise<boolean>((resolve) => {
      this.#stepWaiters.push(resolve);
      this.#transitioned = false;
      this.#drive(this.#core.step(this.#buf));
    });
  }

  /**
   * Step until the machine rests (waiting for an event, sleeping, final, halted, cancelled).
   * From then on it keeps going by itself when an event, a delay or a timeout moves it.
   */
  run(): Promise<void> {
    this.#core.setAuto(true);
    this.attachToParent();
    return new Promise<void>((resolve) => {
      this.#runWaiters.push(resolve);
      this.#drive(this.#core.step(this.#buf));
    });
  }

  /** Send an event: handled now, after the running state, later (`queue: true`), or dropped. */
  send(event: { type: string; data?: unknown; queue?: boolean }): void {
    if (event === null || typeof event !== 'object' || typeof event.type !== 'string' || event.type === '') {
      throw new TypeError('send(event): event.type must be a non-empty string');
    }
    if (this.#inCore) {
      // Called from a transition condition: deliver once the core is done with this step.
      queueMicrotask(() => this.send(event));
      return;
    }
    const data = this.storeJson(event.data, `data of event '${event.type}'`);
    const handle = ++this.#nextHandle;
    this.#events.set(handle, { type: event.type, data: event.data });
    this.#drive(this.#callCore(() => this.#core.send(handle, event.type, event.queue === true, this.#guard, this.#buf, data)));
  }

  /** Stop: a running state finishes and takes its transition, then nothing more runs. */
  cancel(): void {
    if (this.#inCore) {
      queueMicrotask(() => this.cancel());
      return;
    }
    if (!this.#core.cancel()) return;
    this.#drive(this.#core.more(this.#buf));
    this.cancelChildren();
    this.rejectFinished(new CancelledError(), false);
    this.#wakeWaiters();
  }

  /** @internal */
  slotCancelled(slot: number): boolean {
    return this.#core.isCancelled(slot);
  }

  // ---- driving ----

  /** Apply a core result now if already inside the pump, else pump the state completions. */
  #drive(r: number): void {
    if (this.#pumping) {
      this.#take(r);
      return;
    }
    this.#pumping = true;
    try {
      this.#take(r);
      for (let done = this.#queue.shift(); done; done = this.#queue.shift()) {
        this.#take(this.#stateDone(done[0], done[1], done[2]));
      }
    } finally {
      this.#pumping = false;
    }
    if (this.#resting) this.#wakeWaiters();
  }

  #wakeWaiters(): void {
    const moved = this.#transitioned || MACHINE_STATUSES[this.#statusCode] === 'sleeping';
    const steps = this.#stepWaiters;
    this.#stepWaiters = [];
    for (const w of steps) w(moved);
    const runs = this.#runWaiters;
    this.#runWaiters = [];
    for (const w of runs) w();
  }

  /**
   * Apply the actions a core call wrote into the buffer; `r` is `count * 8 + 4 * canStep +
   * 2 * resting + more` (see src/machine.rs). They are copied out first: applying one may call back into
   * the core, which reuses the buffer. `skipRun` drops a state run the face must not start.
   */
  #take(r: number, skipRun = false): void {
    if (r < 0) return;
    this.#depth++;
    try {
      for (;;) {
        const b = this.#buf;
        this.#statusCode = b[0]!;
        this.#current = b[1]!;
        this.#canStep = (r & 4) !== 0;
        this.#resting = (r & 2) !== 0;
        const count = r >>> 3;
        if (count === 1) {
          this.#act(b[2]!, b[3]!, b[4]!, b[5]!, b[6]!, skipRun);
        } else if (count > 1) {
          // One scratch array per nesting depth: no allocation per call.
          const a = (this.#scratch[this.#depth] ??= []);
          const len = count * 5;
          for (let k = 0; k < len; k++) a[k] = b[2 + k]!;
          for (let k = 0; k < len; k += 5) this.#act(a[k]!, a[k + 1]!, a[k + 2]!, a[k + 3]!, a[k + 4]!, skipRun);
        }
        if ((r & 1) === 0) break;
        r = this.#core.more(this.#buf);
      }
    } finally {
      this.#depth--;
    }
    // Events and listeners only at the outermost level, once every action is applied: a
    // listener that calls back into the runner then sees a consistent machine.
    if (this.#depth === 0) {
      if (this.observed) this.deliverEvents();
      this.persist();
      if (this.#deferred.length > 0) {
        const runs = this.#deferred;
        this.#deferred = [];
        for (const [state, slot] of runs) this.#runState(state, slot);
      }
      const notices = this.#notices;
      if (notices.length > 0) {
        this.#notices = [];
        for (const notice of notices) notice();
      }
    }
  }

  /** Call into the core where it may call transition conditions back. */
  #callCore(call: () => number): number {
    this.#inCore = true;
    try {
      return call();
    } finally {
      this.#inCore = false;
    }
  }

  #act(kind: number, a: number, b: number, c: number, d: number, skipRun: boolean): void {
    switch (kind) {
      case ACT_RUN:
        // A durable run stores the step (and the context as it is before the state runs)
        // first: a runner's synchronous part must not reach the snapshot of its own start.
        if (skipRun) break;
        this.#slotState.set(b, a);
        this.#slotState.delete(b - 2);
        this.#activeSlot = b;
        if (this.isStored) this.#deferred.push([a, b]);
        else this.#runState(a, b);
        break;
      case ACT_ACQUIRE:
        this.#acquire(a, b);
        break;
      case ACT_ERRORED: {
        if (b === 1) this.#lastError = new Error(this.#core.message ?? 'state machine error');
        const error = this.#lastError;
        if (a === 1) this.#notices.push(() => this.rejectFinished(error, true));
        else this.#notices.push(() => this.emitSafely('ramus:error', error));
        break;
      }
      case ACT_TRANSITIONED:
        this.#transition(a, b, c, d);
        break;
      case ACT_ARM:
        this.#arm(a, b);
        break;
      case ACT_CLEAR: {
        const timer = this.#timers.get(a);
        if (timer) clearTimeout(timer);
        this.#timers.delete(a);
        break;
      }
      case ACT_DROP:
        this.#events.delete(a);
        break;
      case ACT_FINISHED: {
        const output = this.#output as Out;
        this.#notices.push(() => this.resolveFinished(output));
        break;
      }
    }
  }

  #runState(state: number, slot: number): void {
    const run = this.#m.runs[state];
    if (!run) {
      // A state without run passes its input on as its output.
      this.#queue.push([slot, false, this.#input]);
      return;
    }
    const prev = this.#previous >= 0 ? this.#m.names[this.#previous] : undefined;
    const args = new MachineStateArgs(this, slot, this.#input, prev, this.#event);
    callInStep(args, run, (failed, value) => {
      this.#queue.push([slot, failed, value]);
      if (!this.#pumping) this.#drive(-1);
    });
  }

  #stateDone(slot: number, failed: boolean, value: unknown): number {
    const request = this.#slotRequests.get(slot);
    if (request) {
      this.#slotRequests.delete(slot);
      request.release();
    }
    // A run that timed out no longer counts: its result must not touch the machine.
    if (slot !== this.#activeSlot) return -1;
    this.#activeSlot = -1;
    if (failed && value instanceof CancelledError) {
      this.#notices.push(() => this.rejectFinished(value, false));
      return this.#callCore(() => this.#core.stateDone(slot, 3, 0, -1, this.#guard, this.#buf));
    }
    if (failed) return this.#stateFailed(slot, value);
    if (value instanceof TransitionTo) {
      let target: number;
      let delay = -1;
      try {
        target = this.#core.resolveChoice(value.state);
        if (value.delay !== undefined) delay = parseDuration(value.delay);
      } catch (err) {
        return this.#stateFailed(slot, err instanceof Error ? new Error(err.message) : err);
      }
      const json = this.#outputJson(value.output);
      if (json instanceof StorageError) return this.#stateFailed(slot, json);
      this.#output = this.#stateOutput = value.output;
      return this.#callCore(() => this.#core.stateDone(slot, 2, target, delay, this.#guard, this.#buf, json));
    }
    const json = this.#outputJson(value);
    if (json instanceof StorageError) return this.#stateFailed(slot, json);
    this.#output = this.#stateOutput = value;
    return this.#callCore(() => this.#core.stateDone(slot, 0, 0, -1, this.#guard, this.#buf, json));
  }

  /** A durable state's output as JSON, or the `StorageError` that fails the state. */
  #outputJson(value: unknown): string | undefined | StorageError {
    try {
      return this.storeJson(value, `${this.state}.output`);
    } catch (err) {
      if (err instanceof StorageError) return err;
      throw err;
    }
  }

  #stateFailed(slot: number, error: unknown): number {
    this.#lastError = error;
    return this.#callCore(() => this.#core.stateDone(slot, 1, 0, -1, this.#guard, this.#buf, this.storeError(error)));
  }

  #acquire(state: number, slot: number): void {
    const request = new SlotRequest(this.#semaphores, this.#m.semaphoreKeys[state]!);
    this.#slotRequests.set(slot, request);
    request.acquire().then(
      () => {
        if (!this.#core.semaphoreAcquired(slot)) {
          this.#slotRequests.delete(slot);
          request.abort();
        } else {
          this.#drive(this.#core.more(this.#buf));
        }
      },
      (err) => {
        this.#slotRequests.delete(slot);
        if (!this.#core.semaphoreAcquired(slot)) return;
        // The state never ran: its semaphore's failure is its failure.
        this.#slotState.set(slot, state);
        this.#activeSlot = slot;
        this.#queue.push([slot, true, err]);
        if (this.#pumping) this.#take(this.#core.more(this.#buf), true);
        else {
          this.#pumping = true;
          try {
            this.#take(this.#core.more(this.#buf), true);
          } finally {
            this.#pumping = false;
          }
          this.#drive(-1);
        }
      },
    );
  }

  #transition(from: number, to: number, handle: number, input: number): void {
    const event = handle >= 0 ? this.#events.get(handle) : undefined;
    if (handle >= 0) this.#events.delete(handle);
    let value: unknown;
    if (input === INPUT_ERROR) value = this.#lastError;
    else if (input === INPUT_TIMEOUT) {
      const after = this.#m.timeouts[from];
      value = new TimeoutError(`State ${this.#m.names[from]} timed out after ${typeof after === 'number' ? `${after}ms` : after}`);
      // The abandoned run and what it started stop here.
      if (this.#activeSlot >= 0) this.cancelChildren(this.#activeSlot);
      this.#activeSlot = -1;
    } else value = this.#output;
    if (this.observed) {
      this.#transitionData.push({
        from: this.#m.names[from],
        to: this.#m.names[to],
        event: event?.type ?? null,
        input: this.#input,
        output: this.#output,
        final: this.#m.isFinal[to],
      });
    }
    this.#previous = from;
    this.#input = value;
    this.#event = event;
    // A final state without a run passes its input on as the machine's output.
    this.#stateOutput = undefined;
    if (this.#m.isFinal[to] && !this.#m.runs[to]) this.#output = this.#stateOutput = value;
    this.#transitioned = true;
  }

  /** Node's timers hold at most 2^31-1 ms (~24.8 days); longer delays re-arm in hops. */
  #arm(timer: number, at: number): void {
    const wait = Math.max(0, at - Date.now());
    const handle = setTimeout(() => {
      if (wait > MAX_TIMER_MS) {
        this.#arm(timer, at);
        return;
      }
      this.#timers.delete(timer);
      this.#drive(this.#core.timerFired(timer, this.#buf));
    }, Math.min(wait, MAX_TIMER_MS));
    if (!this.#keepAlive) handle.unref();
    this.#timers.set(timer, handle);
  }

  protected eventData(w: WireEvent): unknown {
    switch (w[W_DATA] as DataCode) {
      case DataCode.RunInput:
        return { input: this.rootInput };
      case DataCode.RunOutput:
        return { output: this.#output };
      case DataCode.RunError:
      case DataCode.NodeError:
        return { error: this.#lastError };
      case DataCode.NodeInput:
        return { input: this.#input };
      case DataCode.NodeOutput:
        return { output: this.#output };
      case DataCode.Status:
        return { status: w[W_STATE] };
      case DataCode.Transition:
        return this.#transitionData.shift();
      default:
        return undefined;
    }
  }

  protected sourceNode(w: WireEvent): string {
    const state = w[W_NODE] >= 0 ? this.#slotState.get(w[W_NODE]) : undefined;
    return state === undefined ? '' : this.#m.names[state]!;
  }

  protected onEvent(_event: RamusEvent, w: WireEvent): void {
    if (w[W_DATA] === DataCode.Status) {
      this.emitSafely('state_machine:state', { machineState: w[W_STATE], state: this.#m.names[w[W_ARG]]! });
    }
  }
}
