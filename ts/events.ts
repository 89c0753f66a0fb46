/** The event types the engine emits for state machine runs. */
export type MachineEventType =
  | 'state_machine:start'
  | 'state_machine:node_start'
  | 'state_machine:node_finish'
  | 'state_machine:transition'
  | 'state_machine:status'
  | 'state_machine:finish'
  | 'state_machine:error';

/** The event types the engine emits for DAG runs. */
export type DagEventType =
  | 'dag:start'
  | 'dag:node_start'
  | 'dag:node_finish'
  | 'dag:node_error'
  | 'dag:node_state'
  | 'dag:finish'
  | 'dag:error';

/** One fact recorded by a run. Custom events emitted by runners use their own `type`. */
export interface RamusEvent<T extends string = string, D = unknown> {
  /** UUIDv7 of the event. */
  id: string;
  type: T;
  /** UUIDv7 of the run; runs started inside a step share the outer run's id. */
  runId: string;
  /** The step the event belongs to: a node's step, or the run's own step. */
  stepId: string;
  /** The parent of `stepId`: the run's step for node events; for run events, the step that
   * started the run (null at top level). */
  parentStepId: string | null;
  /** The run's name. */
  source: string;
  /** The node's name, or '' for run-level events. */
  sourceNode: string;
  /** Milliseconds since the Unix epoch. */
  time: number;
  data: D;
}

/**
 * What `on('ramus:error')` listeners receive, as in the original. `fatal` is true when the
 * run as a whole failed (`finished` rejects with `error`), false when a machine state failed
 * and the machine went on to its error state.
 */
export interface RamusErrorEvent {
  error: unknown;
  fatal: boolean;
}

/**
 * One event as the binding sends it (see `events_json` in src/lib.rs):
 * `[id, type, step, parentStep, node, time, data, state, arg]`, where `step`/`parentStep`
 * index the drain's step-id table (-1: none), `node` is the DAG node or machine step slot
 * (-1 for run events), `data` a `DataCode`, `state` a node state or machine status, and
 * `arg` the machine's state id for status events.
 */
export type WireEvent = [string, string, number, number, number, number, number, string, number];

/** One drain of events: the run id, the step-id table, and the events. */
export interface WireBatch {
  r: string;
  s: string[];
  e: WireEvent[];
}

/** Positions in a `WireEvent`. */
export const W_NODE = 4;
export const W_DATA = 6;
export const W_STATE = 7;
export const W_ARG = 8;

/** What a wire event's `data` code refers to (`DataRef` in ramus-core). */
export const enum DataCode {
  RunInput = 1,
  RunOutput = 2,
  RunError = 3,
  NodeInput = 4,
  NodeOutput = 5,
  NodeError = 6,
  State = 7,
  Custom = 8,
  Status = 9,
  Transition = 10,
  /** `{ error, attempt, delay }`: `attempt` in `arg`, the delay (ms) in `state`. */
  Retry = 11,
  /** `{ output, cached: true }`. */
  CachedOutput = 12,
}

/** Rethrow a listener's exception outside the engine's call stack, so a faulty listener
 * is reported the way Node reports any uncaught exception without corrupting the run. */
export function reportListenerError(err: unknown): void {
  process.nextTick(() => {
    throw err;
  });
}
