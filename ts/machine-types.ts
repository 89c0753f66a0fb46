import type { Duration, NodeArgs, NodeResultCache, Retry, StepCache, Tools } from './dag-types';
import type { TransitionTo } from './machine';
import type { Semaphore } from './semaphore';

export type { Duration };

/** What a machine is doing. */
export type MachineStatus =
  | 'initial'
  | 'ready'
  | 'pendingSemaphore'
  | 'running'
  | 'waitingForEvent'
  | 'sleeping'
  | 'final'
  | 'error'
  | 'cancelled';

/** An event sent to a machine. */
export interface MachineEvent<D = unknown, T extends string = string> {
  type: T;
  data: D;
}

/** A machine's events: the `data` of each event type. */
export type EventMap = Record<string, unknown>;

/** The events of an event map as `{ type, data }` values, one type per event (`''` is no event). */
export type EventOf<M> = { [K in Exclude<keyof M & string, ''>]: MachineEvent<M[K], K> }[Exclude<keyof M & string, ''>];

/** What `send` takes for an event map: `data` is required when the event's data cannot be undefined. */
export type SendEvent<M> = {
  [K in Exclude<keyof M & string, ''>]: { type: K; queue?: boolean } & (undefined extends M[K] ? { data?: M[K] } : { data: M[K] });
}[Exclude<keyof M & string, ''>];

/** What a transition condition sees. */
export interface TransitionGuardInput<Ctx, Root, In = any, Out = any, M = EventMap> {
  context: Ctx;
  input: In;
  output: Out;
  rootInput: Root;
  event?: EventOf<M>;
}

/** A transition condition: true (or an object without `transition: false`) takes the transition. */
export type TransitionGuard<Ctx, Root, M = EventMap> = (
  g: TransitionGuardInput<Ctx, Root, any, any, M>,
  event?: EventOf<M>,
) => boolean | { transition?: boolean } | undefined | null;

/** `K`: the registered keys a machine stored by an `Engine` names (never: a machine of inline code). */
export interface Transition<Ctx, Root, S extends string = string, M = EventMap, K extends string = never> {
  /** The state to go to. */
  state: NoInfer<S>;
  /** A stored machine names a registered condition instead of holding one. (A template
   * type, so that a condition function is no candidate when `defineMachine` infers `K`.) */
  condition?: [K] extends [never] ? TransitionGuard<Ctx, Root, M> : `${K}`;
  /** Wait this long before moving; an event that another transition takes pre-empts the wait. */
  delay?: Duration;
}

/** What a state's runner receives. */
export interface StateArgs<Ctx, Root, In = any, T = Tools, M = EventMap> extends NodeArgs<Ctx, Root, In, T> {
  /** The state the machine came from. */
  previousState?: string;
  /** The event that caused the transition into this state, if any. */
  event?: EventOf<M>;
}

/**
 * A state. With registered keys (`K`), the machine is stored by an `Engine` as JSON, so its
 * states name registered runners (`runner`) instead of holding code: a `run` there would not
 * be stored, and a machine mixing both would not be resumable.
 */
export interface StateNode<Ctx, Root, S extends string = string, M = EventMap, T = Tools, K extends string = never> {
  run?: [K] extends [never] ? (args: StateArgs<Ctx, Root, any, T, M>) => unknown : never;
  /** The registered runner of this state, and the JSON `args` it receives. */
  runner?: K;
  args?: unknown;
  /** A state name (always go there), or transitions by event type (`''` fires without an event). */
  transition?: NoInfer<S> | { [E in keyof M | '']?: NoInfer<S> | Transition<Ctx, Root, S, M, K> | Array<Transition<Ctx, Root, S, M, K>> };
  /** Resting here finishes the machine. */
  final?: boolean;
  /** Where this state goes when its run throws (overrides the machine's `errorState`). */
  errorState?: NoInfer<S>;
  semaphoreKey?: string;
  /** Another name for `semaphoreKey` (a step's category, e.g. 'llm'): the key its limits are kept under. */
  category?: string;
  /** How often this state may run in one machine run. */
  maxVisits?: number;
  /** When the state's run, or its wait for an event, lasts longer than `after`, move to `state`
   * with a `TimeoutError` as input. */
  timeout?: { after: Duration; state: NoInfer<S> };
  /** Run the state again when it fails, before its error state (or halt) applies. */
  retry?: Retry;
  /** Keep its output in the run's `cache` (states are cached only when they say so). */
  cache?: StepCache<Ctx, Root> | boolean;
  tags?: string[];
  info?: object;
}

/**
 * A machine config. `M` maps its event types to their data, `T` types its tools, `Out` is
 * the run's output (carried by `defineMachine`), and `K` the registered keys it names.
 */
export interface StateMachine<Ctx extends object, Root, S extends string = string, M = EventMap, T = Tools, Out = unknown, K extends string = never> {
  name: string;
  initial: NoInfer<S>;
  /** A stored machine's context is the object itself (copied per run). */
  context?: [K] extends [never] ? () => Ctx : Ctx;
  /** Where any state goes when its run throws. */
  errorState?: NoInfer<S>;
  /** Loop guard: state runs beyond this are an error. */
  maxSteps?: number;
  tags?: string[];
  info?: object;
  description?: string;
  inputSchema?: object;
  nodes: { [N in S]: StateNode<Ctx, Root, S, M, T, K> };
  /** Phantom: the run's output type, carried by `defineMachine`. */
  readonly __output?: Out;
}

/** Any machine config, of inline code or of registered keys. */
export type AnyStateMachine = StateMachine<any, any, string, any, any, any, never> | StateMachine<any, any, string, any, any, any, string>;

export interface StateMachineRunnerOptions<Ctx extends object, Root, S extends string = string, M = EventMap, Out = unknown> {
  config: StateMachine<Ctx, Root, S, M, any, Out>;
  input: Root;
  context?: Ctx;
  tools?: Tools;
  /** Start in another state than `config.initial`. */
  initial?: S;
  /** Where the outputs of states with a `cache` field are cached: see `memoryCache`, `sqliteCache`… */
  cache?: NodeResultCache;
  /** The run's name in events; defaults to the machine's name. */
  name?: string;
  semaphores?: Semaphore[];
  /** Let pending delays and timeouts keep the process alive (by default they do not). */
  keepAlive?: boolean;
  /** The W3C traceparent the run's span joins (default: the caller's active span); see `configureTracing`. */
  traceparent?: string;
  /** Where time comes from (default the system clock); a `TestClock` in tests. */
  clock?: { readonly id: number };
}

/** The state a machine is in, with what brought it there. */
export interface CurrentState<S extends string = string, M = EventMap> {
  state: S;
  previousState?: S;
  input: unknown;
  event?: EventOf<M>;
  output: unknown;
}

/** The output of a state that runs a registered runner: the `Engine` that runs it knows its type. */
export interface RunnerOutput<K extends string> {
  readonly __runner: K;
}

/** A state's output: its run's (or registered runner's); a state without either passes on its input (unknown here). */
type StateOutput<N> = N extends { run: (...args: any) => infer R } ? Chosen<Awaited<R>> : N extends { runner: infer K extends string } ? RunnerOutput<K> : unknown;
type Chosen<R> = R extends TransitionTo<any, infer O> ? O : R;

/** A machine's output, from its nodes' types: the outputs of its final states. */
export type MachineOutput<N> = OrUnknown<{ [K in keyof N]: N[K] extends { final: infer F } ? (true extends F ? StateOutput<N[K]> : never) : never }[keyof N]>;
type OrUnknown<T> = [T] extends [never] ? unknown : T;

/** The event map of a machine's nodes: the event types of their transitions (data unknown). */
export type NodesEvents<N> = Record<Exclude<{ [K in keyof N]: N[K] extends { transition?: infer T } ? (T extends string ? never : keyof T & string) : never }[keyof N], ''>, unknown>;

/** What `defineMachine` reads of each state: the fields the run's output comes from. */
type Captured<N> = { [K in keyof N]: { [F in keyof N[K] & ('run' | 'runner' | 'final')]: N[K][F] } };

/**
 * Identity helper that types a machine literal: the state names are inferred from `nodes`,
 * so `initial`, `errorState`, transition targets and timeout states must name real states;
 * the event types from the transitions (or `Events`, which then types their data too), so
 * `send` takes only those; and the run's output from the final states. States may name
 * registered runners (`runner: 'draft'`) instead of holding code: the machine is then for
 * an `Engine`, which stores it.
 *
 * ```ts
 * const config = defineMachine<{ n: number }, string>()({
 *   name: 'm', initial: 'a',
 *   nodes: { a: { transition: 'b' }, b: { final: true } },   // transition: 'c' would not compile
 * });
 * ```
 */
export function defineMachine<Ctx extends object, Root, Events extends EventMap = EventMap, T extends Tools = Tools>() {
  // `Ev` collects the event types of the transitions when `Events` is not given; `N` what the
  // output is computed from, without taking the place of the checked node types.
  return <const S extends string, const Ev extends string = never, const K extends string = never, N = unknown>(
    config: StateMachine<Ctx, Root, S, string extends keyof Events ? Record<Ev, unknown> : Events, T, unknown, K> & { nodes: Captured<N> },
  ): StateMachine<Ctx, Root, S, string extends keyof Events ? Record<Exclude<Ev, ''>, unknown> : Events, T, MachineOutput<N>, K> => config as never;
}
