import { MoveInput, Op, RunEnd, StatusFlag, StepOutcome } from '../index.js';
import { CancelledError, TimeoutError } from './errors';
import { DataCode, W_ARG, W_DATA, W_STATE, type RamusErrorEvent, type RamusEvent, type WireEvent } from './events';
import type { CurrentState, Duration, EventMap, MachineEvent, MachineStatus, SendEvent, StateMachine, StateMachineRunnerOptions, TransitionGuard } from './machine-types';
import { call, io, native, plain, type NativeDefinition } from './native';
import type { NodeResultCache } from './cache';
import { cachedCall, callNative, dispatch, drive, failureOutcome, outsideNative, retryPredicates, RunnerBase, settle, stepArgs, type EngineInit, type Plan } from './runner';
import { definitionJson, errorText, storable, StorageError } from './values';

export { TimeoutError };

/** Milliseconds of a duration (`250`, `'250ms'`, `'90s'`, `'15m'`, `'2h'`, `'30d'`). */
export function parseDuration(value: Duration): number {
  if (typeof value === 'number') {
    // Beyond 2^53 ms numbers stop being exact integers: no real delay is that long.
    if (!Number.isFinite(value) || value < 0 || value > 2 ** 53) throw new Error(`Invalid duration: ${value}`);
    return value;
  }
  return plain(() => native.parseDurationMs(String(value)));
}

/** A state's own choice of next state, returned from its `run`. */
export class TransitionTo<S extends string = string, O = unknown> {
  /** Types only: an output that merely looks like one (`{ state, output }`) is not a choice. */
  private declare readonly __chosen: true;
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

/** Status names by the binding's status codes (`MachineStatus::ALL` in ramus-core). */
const MACHINE_STATUSES = native.machineStatuses() as MachineStatus[];

/** A machine config compiled once (in Rust), with the functions the face calls. */
export class CompiledMachine {
  readonly native: NativeDefinition;
  readonly names: string[];
  readonly runs: Array<((args: any) => unknown) | undefined>;
  /** Conditions by transition id (declaration order, state by state). */
  readonly conditions: Array<TransitionGuard<any, any> | undefined>;
  /** Per state, the eventless conditions to evaluate after a run (see `NativeDefinition.guardTable`). */
  readonly guards: Int32Array;
  /** Per state, where the face may move by itself (see `NativeDefinition.localMoves`). */
  readonly local: Int32Array;
  /** Per state: 1 final, 2 has a runner. */
  readonly flags: Uint8Array;
  readonly semaphoreKeys: string[];
  /** Per state, its `retry.retryOn`. */
  readonly retryOn: Array<((error: unknown) => boolean) | undefined> | undefined;

  constructor(
    config: StateMachine<any, any>,
    initial: string | undefined,
    definition?: NativeDefinition,
    runs?: Array<((args: any) => unknown) | undefined>,
    conditions?: Array<TransitionGuard<any, any> | undefined>,
    lookup?: (key: string) => unknown,
  ) {
    this.native = definition ?? plain(() => new native.NativeDefinition('machine', definitionJson(config), initial));
    this.names = this.native.names();
    const nodes = (config.nodes ?? {}) as Record<string, any>;
    this.runs = runs ?? this.names.map((n) => nodes[n]?.run);
    this.semaphoreKeys = this.names.map((n) => nodes[n]?.semaphoreKey ?? nodes[n]?.category ?? '');
    // The core says where each inline condition is: the face does not walk the config again.
    this.conditions =
      conditions ??
      (JSON.parse(this.native.inlineConditions()) as Array<[string, string, number | null] | null>).map((at) => {
        if (!at) return undefined;
        const entry = nodes[at[0]].transition[at[1]];
        return (at[2] === null ? entry : entry[at[2]]).condition;
      });
    this.guards = this.native.guardTable();
    this.local = this.native.localMoves();
    this.flags = this.native.stateFlags();
    this.retryOn = retryPredicates(this.names, nodes, lookup);
  }
}

const compiled = new WeakMap<object, Map<string, CompiledMachine>>();

/** Compile once per config object (and per `initial` the caller supplies). */
export function compile(config: StateMachine<any, any>, initial: string | undefined): CompiledMachine {
  if (config === null || typeof config !== 'object') throw new TypeError('A state machine config must be an object');
  let byInitial = compiled.get(config);
  if (!byInitial) compiled.set(config, (byInitial = new Map()));
  let m = byInitial.get(initial ?? '');
  if (!m) byInitial.set(initial ?? '', (m = new CompiledMachine(config, initial)));
  return m;
}

/**
 * Runs one state machine. The Rust engine owns the machine's state, transitions, queue and
 * timers; this class calls state runners and conditions and keeps the JS values.
 */
export class StateMachineRunner<Ctx extends object = any, Root = unknown, Out = unknown, S extends string = string, M = EventMap> extends RunnerBase<Out> {
  readonly config: StateMachine<Ctx, Root, S, M, any, Out>;
  declare readonly context: Ctx;
  #m: CompiledMachine;
  #input: unknown;
  #output: unknown;
  /** The current state's own output (undefined until it ran). */
  #stateOutput: unknown;
  #event: MachineEvent | undefined;
  #previous = -1;
  #lastError: unknown;
  #events = new Map<number, MachineEvent>();
  #nextHandle = 0;
  #status = 0;
  #current: number;
  #flags = StatusFlag.CanStep | StatusFlag.Resting;
  #transitioned = false;
  #transitionData: unknown[] = [];
  #stepWaiters: Array<(moved: boolean) => void> = [];
  #runWaiters: Array<() => void> = [];
  /** Steps the core lets this face run by itself before it reports them (`Rec.Run`'s budget). */
  #budget = 0;
  #cache: NodeResultCache | undefined;
  /** The condition results of the steps run by itself, not yet reported. */
  #local: number[] = [];

  constructor(options: StateMachineRunnerOptions<Ctx, Root, S, M, Out>, init?: EngineInit) {
    if (options === null || typeof options !== 'object') throw new TypeError('StateMachineRunner options must be an object');
    const m = (options as { compiled?: CompiledMachine }).compiled ?? compile(options.config as StateMachine<any, any>, options.initial);
    super(m.native, options.context ?? options.config.context?.() ?? {}, options.input, { ...options, name: options.name ?? options.config.name }, ['state_machine:state']);
    this.config = options.config;
    this.#cache = options.cache;
    this.#m = m;
    this.#input = options.input;
    this.#current = options.initial !== undefined ? m.native.stateId(options.initial) : m.native.stateId(options.config.initial ?? '');
    this.begin(init, 0, options.clock?.id ?? 0, { name: this.name, initial: options.initial });
  }

  protected restoreValues(plan: Plan): void {
    const r = plan.machine;
    if (r) {
      this.#input = r.input;
      this.#output = r.output;
      this.#stateOutput = r.stateOutput;
      this.#event = r.event;
      for (const [handle, e] of r.events ?? []) {
        this.#events.set(handle, e);
        this.#nextHandle = Math.max(this.#nextHandle, handle);
      }
      this.#previous = r.previous == null ? -1 : this.#m.native.stateId(r.previous);
      // A fork's output for the state it starts in (`engine.fork(…, { output })`).
      if (r.given !== undefined) this.#given = { value: r.given };
    }
    if (plan.status) [this.#status, this.#current] = plan.status;
    // Events sent while nobody ran it: taken once it starts.
    this.#pending = plan.pending;
  }

  #pending: Plan['pending'] | undefined;
  /** The output the next step takes instead of running (a fork's). */
  #given: { value: unknown } | undefined;

  /** The current state's name. */
  get state(): S {
    return this.#m.names[this.#current] as S;
  }

  get machineStatus(): MachineStatus {
    return MACHINE_STATUSES[this.#status]!;
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
    return (this.#flags & StatusFlag.CanStep) !== 0 && this.final === undefined;
  }

  /** Event types the current state has transitions for. */
  availableEvents(): string[] {
    return this.#m.native.availableEvents(this.#current);
  }

  /** Run the current state once; resolves true when the machine took (or scheduled) a transition. */
  step(): Promise<boolean> {
    if (!this.canStep()) return Promise.resolve(false);
    return new Promise<boolean>((resolve) => {
      this.#stepWaiters.push(resolve);
      this.#transitioned = false;
      drive(() => this.command(Op.Step));
    });
  }

  /**
   * Step until the machine rests (waiting for an event, sleeping, final, halted, cancelled).
   * From then on it keeps going by itself when an event, a delay or a timeout moves it.
   */
  run(): Promise<void> {
    if (this.settleMemo()) return Promise.resolve();
    return new Promise<void>((resolve) => {
      this.#runWaiters.push(resolve);
      drive(() => this.command(Op.Start));
      const pending = this.#pending;
      this.#pending = undefined;
      for (const [id, type, data, queue] of pending ?? []) (this as StateMachineRunner).send({ type, data: data ?? undefined, queue }, id);
      // Already resting (started before): Start changed nothing, so no status came. Before
      // the first status (still 'initial'), `#flags` are the initial ones, not the engine's.
      if (this.#status !== 0 || this.final !== undefined) this.#wake();
    });
  }

  /** Send an event: handled now, after the running state, later (`queue: true`), or dropped. */
  send(event: SendEvent<M>, storedId?: string): void {
    if (event === null || typeof event !== 'object' || typeof event.type !== 'string' || event.type === '') {
      throw new TypeError('send(event): event.type must be a non-empty string');
    }
    if (outsideNative(() => this.send(event, storedId))) return;
    if (this.final !== undefined) return;
    this.startNow();
    const data = this.json ? storable(event.data, `data of event '${event.type}'`) : undefined;
    const handle = ++this.#nextHandle;
    this.#events.set(handle, { type: event.type, data: event.data });
    this.flushLocal();
    if (storedId !== undefined) native.delivered(this.key, storedId);
    // The snapshot keeps the context of the running state's start: a state that runs now
    // runs again after a restore, from there.
    const context = this.#flags & StatusFlag.Resting ? this.contextJson() : undefined;
    drive(() => dispatch(callNative(() => native.send(this.key, handle, event.type, event.queue === true, data, context))));
  }

  protected semaphoreKey(node: number): string {
    return this.#m.semaphoreKeys[node]!;
  }

  /** @internal */
  launch(slot: number, state: number, budget: number, attempt: number): void {
    this.#budget = budget;
    const given = this.#given;
    if (given) {
      this.#given = undefined;
      settle(this, slot, StepOutcome.Ok, given.value);
      return;
    }
    const run = this.#m.runs[state];
    if (!run) {
      // A state without run passes its input on as its output.
      settle(this, slot, StepOutcome.Ok, this.#input);
      return;
    }
    const args = stepArgs(this, slot, this.#input, attempt);
    args.previousState = this.#previous >= 0 ? this.#m.names[this.#previous] : undefined;
    args.event = this.#event;
    const spec = this.#cache && (this.config.nodes as Record<string, { cache?: unknown } | undefined>)[this.#m.names[state]!];
    // A `transitionTo` is a choice, not an output to keep.
    if (spec && spec.cache !== undefined && spec.cache !== false) {
      cachedCall(this, slot, this.#cache!, { definition: this.#m.native.name, node: this.#m.names[state]!, spec, run, args }, (v) => !(v instanceof TransitionTo));
    } else this.call(slot, run, args);
  }

  protected reported(slot: number, outcome: number, value: unknown): void {
    if (outcome === StepOutcome.Cancelled) {
      this.reportStep(slot, outcome, -1);
      return;
    }
    if (outcome === StepOutcome.Error) {
      this.#fail(slot, value);
      return;
    }
    let chose: boolean;
    try {
      chose = value instanceof TransitionTo;
    } catch (err) {
      // An output whose prototype cannot be read (a Proxy that throws) fails the state.
      this.#fail(slot, err);
      return;
    }
    if (chose) {
      const to = value as TransitionTo;
      const json = this.json ? this.valueJson(to.output, `${this.state}.output`) : undefined;
      if (json instanceof StorageError) return this.#fail(slot, json);
      this.#output = this.#stateOutput = to.output;
      this.flushLocal();
      const d = to.delay;
      drive(() =>
        dispatch(callNative(() => native.choose(this.key, slot, String(to.state), typeof d === 'number' ? d : undefined, d === undefined || typeof d === 'number' ? undefined : String(d), json, this.contextJson()))),
      );
      return;
    }
    const json = this.json ? this.valueJson(value, `${this.state}.output`) : undefined;
    if (json instanceof StorageError) return this.#fail(slot, json);
    this.#output = this.#stateOutput = value;
    const answer = (this.#flags & StatusFlag.Queued) !== 0 ? -1 : this.#evaluateGuards();
    if (this.#budget > 0 && answer > -3 && outcome === StepOutcome.Ok) {
      // A move the core lets the face take by itself: the next step starts without a call
      // into the binding, which hears of it with the next report.
      const at = this.#m.local[this.#current]!;
      const to = this.#m.local[answer >= 0 ? at + answer : this.#m.local[this.#current + 1]! - 1]!;
      if (to >= 0) {
        this.#local.push(answer);
        this.moved(this.#current, to, -1, MoveInput.Output);
        this.launch(slot + 1, to, this.#budget - 1, 1);
        return;
      }
    }
    this.reportStep(slot, outcome, answer, json, this.contextJson());
  }

  /** @internal Tell the core of the steps run by itself; from now on it decides again. */
  override flushLocal(): void {
    this.#budget = 0;
    const n = this.#local.length;
    if (n === 0) return;
    io[0] = Op.Local;
    io[1] = this.key;
    io[2] = n;
    for (let i = 0; i < n; i++) io[5 + i] = this.#local[i]!;
    this.#local.length = 0;
    dispatch(callNative(call));
  }

  #fail(slot: number, error: unknown): void {
    this.#lastError = error;
    this.reportStep(slot, failureOutcome(this.#m.retryOn?.[this.#current], error), -1, this.json ? errorText(error) : undefined, this.contextJson());
  }

  /**
   * The eventless conditions of the state that just ran, in the order the core would ask
   * them, evaluated up to the first that holds: the answer travels with the step's report
   * (the index of the one that held, -2 none, -3-k the k-th threw), so the core needs no
   * call back into JS for them.
   */
  #evaluateGuards(): number {
    const table = this.#m.guards;
    const start = table[this.#current]!;
    const end = table[this.#current + 1]!;
    for (let k = start; k < end; k++) {
      const r = this.guard(table[k]!, -1);
      if (r === 1) return k - start;
      if (r === 2) return -3 - (k - start);
    }
    return start === end ? -1 : -2;
  }

  /** @internal */
  override retryPredicate(state: number): ((error: unknown) => boolean) | undefined {
    return this.#m.retryOn?.[state];
  }

  /** @internal A timed-out attempt that its `retryOn` retries: its error, for the retry's event. */
  override timedOut(state: number): void {
    this.#lastError = new TimeoutError(native.message(this.key) ?? `State ${this.#m.names[state]} timed out`);
  }

  /** @internal Evaluate a condition: 1 holds, 0 does not, 2 it threw (the error is kept). */
  override guard(transition: number, handle: number): number {
    const condition = this.#m.conditions[transition];
    if (!condition) return 1;
    const event = handle >= 0 ? this.#events.get(handle) : undefined;
    try {
      const r = condition({ context: this.context, input: this.#input, output: this.#output, rootInput: this.rootInput, event }, event);
      return r === true || (r !== null && typeof r === 'object' && r.transition !== false) ? 1 : 0;
    } catch (err) {
      this.#lastError = err;
      return 2;
    }
  }

  /** @internal */
  override moved(from: number, to: number, handle: number, input: number): void {
    const event = handle >= 0 ? this.#events.get(handle) : undefined;
    if (handle >= 0) this.#events.delete(handle);
    let value: unknown;
    if (input === MoveInput.Error) value = this.#lastError;
    else if (input === MoveInput.Timeout) value = new TimeoutError(native.message(this.key) ?? `State ${this.#m.names[from]} timed out`);
    else value = this.#output;
    if (this.observed) {
      this.#transitionData.push({ from: this.#m.names[from], to: this.#m.names[to], event: event?.type ?? null, input: this.#input, output: this.#output, final: (this.#m.flags[to]! & 1) !== 0 });
    }
    this.#previous = from;
    this.#input = value;
    this.#event = event;
    this.#stateOutput = undefined;
    // A final state without a run passes its input on as the machine's output.
    if (this.#m.flags[to] === 1) this.#output = this.#stateOutput = value;
    this.#current = to;
    this.#transitioned = true;
  }

  /** @internal */
  override failed(halted: boolean, hasMessage: boolean, notices: Array<() => void>): void {
    if (hasMessage) this.#lastError = new Error(native.message(this.key) ?? 'state machine error');
    const error = this.#lastError;
    // A halt rejects `finished` (its end follows), which emits the error itself as fatal;
    // a move to an error state is the machine handling it.
    if (!halted) notices.push(() => this.emitSafely('ramus:error', { error, fatal: false } satisfies RamusErrorEvent));
  }

  /** @internal */
  override dropEvent(handle: number): void {
    this.#events.delete(handle);
  }

  /** @internal */
  override status(status: number, current: number, flags: number, notices: Array<() => void>): boolean {
    this.#status = status;
    this.#current = current;
    this.#flags = flags;
    if (flags & StatusFlag.Resting) notices.push(() => this.#wake());
    return (flags & StatusFlag.Done) !== 0;
  }

  #wake(): void {
    if (!(this.#flags & StatusFlag.Resting) && this.final === undefined) return;
    const moved = this.#transitioned || this.machineStatus === 'sleeping';
    const steps = this.#stepWaiters.splice(0);
    for (const w of steps) w(moved);
    const runs = this.#runWaiters.splice(0);
    for (const w of runs) w();
  }

  /** @internal */
  ended(end: number, _failedNode: number, notices: Array<() => void>): boolean {
    if (end === RunEnd.Finished) {
      const output = this.#output as Out;
      notices.push(() => this.resolveFinished(output));
    } else if (end === RunEnd.Failed) {
      const error = this.#lastError;
      notices.push(() => this.rejectFinished(error, true));
    } else {
      this.abortWaiting();
      notices.push(() => this.rejectFinished(this.storageError ?? new CancelledError(), this.storageError !== undefined));
    }
    return false;
  }

  protected override flushContext(): string | undefined {
    return undefined;
  }

  protected nodeName(node: number): string {
    return this.#m.names[node]!;
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
      case DataCode.Retry:
        return { error: this.#lastError, attempt: w[W_ARG], delay: Number(w[W_STATE]) };
      case DataCode.NodeInput:
        return { input: this.#input };
      case DataCode.NodeOutput:
        return { output: this.#output };
      case DataCode.CachedOutput:
        return { output: this.#output, cached: true };
      case DataCode.Status:
        return { status: w[W_STATE] };
      case DataCode.Transition:
        return this.#transitionData.shift();
      default:
        return undefined;
    }
  }

  protected onEvent(_event: RamusEvent, w: WireEvent): void {
    if (w[W_DATA] === DataCode.Status) this.emitSafely('state_machine:state', { machineState: w[W_STATE], state: this.#m.names[w[W_ARG]]! });
  }
}

