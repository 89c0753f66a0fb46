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

/** The shape the binding sends events in (see `events_json` in src/lib.rs). */
export interface WireEvent {
  id: string;
  type: string;
  runId: string;
  stepId: string;
  parentStepId: string | null;
  source: string;
  sourceNode: string;
  time: number;
  node: number;
  data: number;
  state: string;
  /** For machine status events: the state the machine is in. */
  arg: number;
}

/** What a wire event's `data` code refers to (`DataRef` in ramus-core). */
export const enum DataCode {
  None = 0,
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
}

/** Rethrow a listener's exception outside the engine's call stack, so a faulty listener
 * is reported the way Node reports any uncaught exception without corrupting the run. */
export function reportListenerError(err: unknown): void {
  process.nextTick(() => {
    throw err;
  });
}
