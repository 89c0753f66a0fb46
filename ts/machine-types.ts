import type { Duration, NodeArgs, NodeResultCache, Retry, StepCache, Tools } from './dag-types';
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
export interface MachineEvent<D = unknown> {
  type: string;
  data: D;
}

/** What a transition condition sees. */
export interface TransitionGuardInput<Ctx, Root, In = any, Out = any> {
  context: Ctx;
  input: In;
  output: Out;
  rootInput: Root;
  event?: MachineEvent;
}

/** A transition condition: true (or an object without `transition: false`) takes the transition. */
export type TransitionGuard<Ctx, Root> = (
  g: TransitionGuardInput<Ctx, Root>,
  event?: MachineEvent,
) => boolean | { transition?: boolean } | undefined | null;

export interface Transition<Ctx, Root, S extends string = string> {
  /** The state to go to. */
  state: NoInfer<S>;
  condition?: TransitionGuard<Ctx, Root>;
  /** Wait this long before moving; an event that another transition takes pre-empts the wait. */
  delay?: Duration;
}

/** What a state's runner receives. */
export interface StateArgs<Ctx, Root, In = any> extends NodeArgs<Ctx, Root, In> {
  /** The state the machine came from. */
  previousState?: string;
  /** The event that caused the transition into this state, if any. */
  event?: MachineEvent;
}

export interface StateNode<Ctx, Root, S extends string = string> {
  run?: (args: StateArgs<Ctx, Root>) => unknown;
  /** A state name (always go there), or transitions by event type (`''` fires without an event). */
  transition?: NoInfer<S> | Record<string, NoInfer<S> | Transition<Ctx, Root, S> | Array<Transition<Ctx, Root, S>>>;
  /** Resting here finishes the machine. */
  final?: boolean;
  /** Where this state goes when its run throws (overrides the machine's `errorState`). */
  errorState?: NoInfer<S>;
  semaphoreKey?: string;
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

export interface StateMachine<Ctx extends object, Root, S extends string = string> {
  name: string;
  initial: NoInfer<S>;
  context?: () => Ctx;
  /** Where any state goes when its run throws. */
  errorState?: NoInfer<S>;
  /** Loop guard: state runs beyond this are an error. */
  maxSteps?: number;
  tags?: string[];
  info?: object;
  description?: string;
  inputSchema?: object;
  nodes: { [K in S]: StateNode<Ctx, Root, S> };
}

export interface StateMachineRunnerOptions<Ctx extends object, Root, S extends string = string> {
  config: StateMachine<Ctx, Root, S>;
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
export interface CurrentState<S extends string = string> {
  state: S;
  previousState?: S;
  input: unknown;
  event?: MachineEvent;
  output: unknown;
}

/**
 * Identity helper that types a machine literal: the state names are inferred from `nodes`,
 * so `initial`, `errorState`, transition targets and timeout states must name real states.
 *
 * ```ts
 * const config = defineMachine<{ n: number }, string>()({
 *   name: 'm', initial: 'a',
 *   nodes: { a: { transition: 'b' }, b: { final: true } },   // transition: 'c' would not compile
 * });
 * ```
 */
export function defineMachine<Ctx extends object, Root>() {
  return <const S extends string>(config: StateMachine<Ctx, Root, S>): StateMachine<Ctx, Root, S> => config;
}
