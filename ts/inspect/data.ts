// What the inspector's API serves, computed from the store's JSON reads. Kept apart from the
// HTTP plumbing so the shapes can be tested (and reused by another server) on their own.
import type { NativeStore } from '../native';

export const RUN_STATUSES = ['pending', 'running', 'waitingForEvent', 'sleeping', 'finished', 'error', 'cancelled'] as const;

/** A UUID in the lowercase hyphenated form the store writes. */
export const ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type Obj = { [k: string]: Json };

export interface StepRow {
  id: string;
  runId: string;
  seq: number;
  node: string;
  parentStepId: string | null;
  input: Json;
  output: Json;
  error: Json;
  status: string;
  attempt: number;
  startedAt: number | null;
  endedAt: number | null;
}

export interface TransitionRow {
  id: string;
  stepId: string | null;
  seq: number;
  from: string | null;
  to: string;
  eventType: string | null;
  eventData: Json;
  time: number;
}

export interface RunRow {
  id: string;
  name: string;
  kind: string;
  status: string;
  definitionName: string | null;
  definitionVersion: number | null;
  [k: string]: Json | undefined;
}

/** What a waiting machine can be sent, and where that list came from. */
export interface Accepts {
  /** The state the machine rests in (the last transition's target). */
  state: string | null;
  /** Event types with a transition out of that state. */
  events: string[];
  /** `definition`: from the stored config; `history`: event types seen leaving the state
   * in this run (the run has no stored definition); `none`: nothing known. */
  source: 'definition' | 'history' | 'none';
}

/** The step list a run page draws: everything but the (possibly large) values, which the
 * step endpoint serves one step at a time. */
export interface StepSummary {
  id: string;
  seq: number;
  node: string;
  parentStepId: string | null;
  status: string;
  attempt: number;
  startedAt: number | null;
  endedAt: number | null;
  errorMessage?: string;
  /** DAGs without a stored definition: the parents the node took (its input's keys). */
  parents?: string[];
}

export function summarizeStep(s: StepRow): StepSummary {
  const out: StepSummary = {
    id: s.id,
    seq: s.seq,
    node: s.node,
    parentStepId: s.parentStepId,
    status: s.status,
    attempt: s.attempt,
    startedAt: s.startedAt,
    endedAt: s.endedAt,
  };
  const message = errorMessage(s.error);
  if (message !== undefined) out.errorMessage = message;
  return out;
}

function withParents(summary: StepSummary, input: Json | undefined): StepSummary {
  if (input !== null && typeof input === 'object' && !Array.isArray(input)) summary.parents = Object.keys(input);
  return summary;
}

function errorMessage(e: Json): string | undefined {
  if (e === null || e === undefined) return undefined;
  if (typeof e === 'object' && !Array.isArray(e) && typeof e['message'] === 'string') return e['message'];
  return typeof e === 'string' ? e : JSON.stringify(e);
}

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * The event types a machine config lets `state` take. A state's `transition` is a target
 * name (no event), or an object keyed by event type (`''` = no event) — see API.md.
 * `transitions` is accepted too, for configs written in that spelling.
 */
export function eventsOf(config: unknown, state: string): string[] | undefined {
  if (!isObj(config) || !isObj(config['nodes'])) return undefined;
  const node = config['nodes'][state];
  if (!isObj(node)) return undefined;
  const t = node['transition'] ?? node['transitions'];
  if (!isObj(t)) return [];
  return Object.keys(t).filter((k) => k !== '');
}

export function acceptedEvents(run: RunRow, transitions: TransitionRow[], config: unknown, steps: Array<{ node: string }> = []): Accepts {
  if (run.kind !== 'machine') return { state: null, events: [], source: 'none' };
  // The last transition's target; a machine that has not moved yet rests in its first state.
  const state = transitions.length > 0 ? transitions[transitions.length - 1]!.to : (steps[steps.length - 1]?.node ?? null);
  if (state === null) return { state, events: [], source: 'none' };
  const fromConfig = config === undefined ? undefined : eventsOf(config, state);
  if (fromConfig !== undefined) return { state, events: fromConfig, source: 'definition' };
  const seen = new Set<string>();
  for (const t of transitions) if (t.from === state && t.eventType) seen.add(t.eventType);
  return { state, events: [...seen], source: seen.size > 0 ? 'history' : 'none' };
}

/** Reads one run's page data. Steps are parsed once per database change and kept, because a
 * 10k-step run is re-read whenever anything in the file changes. */
export class RunReader {
  #cache = new Map<string, { version: number; steps: StepRow[] }>();

  constructor(private readonly store: NativeStore) {}

  steps(runId: string, version: number): StepRow[] {
    const hit = this.#cache.get(runId);
    if (hit && hit.version === version) return hit.steps;
    const steps = JSON.parse(this.store.steps(runId)) as StepRow[];
    this.#cache.set(runId, { version, steps });
    // A handful of recently viewed runs is all a browser tab needs.
    if (this.#cache.size > 8) this.#cache.delete(this.#cache.keys().next().value!);
    return steps;
  }

  /** The run page, or undefined for an unknown run. */
  run(runId: string, version: number): Obj | undefined {
    const text = this.store.run(runId);
    if (text === null) return undefined;
    const run = JSON.parse(text) as RunRow;
    // Engine-private and possibly large; the inspector draws from the other columns.
    delete run['snapshot'];
    const transitions = JSON.parse(this.store.transitions(runId)) as TransitionRow[];
    let definition: Obj | null = null;
    if (run.definitionName) {
      const d = this.store.definition(run.definitionName, run.definitionVersion ?? undefined);
      if (d !== null) definition = JSON.parse(d) as Obj;
    }
    const steps = this.steps(runId, version);
    return {
      run: run as unknown as Obj,
      // A DAG without a stored definition has no `parents` to draw: its steps' inputs say
      // which parents each node took.
      steps: steps.map((s) => withParents(summarizeStep(s), run.kind === 'dag' && !definition ? s.input : undefined)) as unknown as Json,
      transitions: transitions as unknown as Json,
      events: JSON.parse(this.store.events(runId)) as Json,
      pendingEvents: JSON.parse(this.store.pendingEvents(runId)) as Json,
      timers: JSON.parse(this.store.timers(runId)) as Json,
      lease: JSON.parse(this.store.lease(runId) ?? 'null') as Json,
      children: JSON.parse(this.store.children(runId)) as Json,
      definition,
      accepts: acceptedEvents(run, transitions, definition?.['config'], steps) as unknown as Json,
    };
  }

  /** One step with its values and the custom events it emitted. */
  step(runId: string, stepId: string, version: number): Obj | undefined {
    const step = this.steps(runId, version).find((s) => s.id === stepId);
    if (!step) return undefined;
    const events = (JSON.parse(this.store.events(runId)) as Array<{ stepId: string | null }>).filter(
      (e) => e.stepId === stepId,
    );
    const children = (JSON.parse(this.store.children(runId)) as Array<{ parentStepId: string | null }>).filter(
      (r) => r.parentStepId === stepId,
    );
    // A machine step's context, rebuilt from the patches its steps store (DAG nodes share
    // the run's context, and steps recorded before schema 7 kept none).
    let context: Json | undefined;
    try {
      context = JSON.parse(this.store.contextAt(runId, stepId)) as Json;
    } catch {
      context = undefined;
    }
    const row = (context === undefined ? step : { ...step, context }) as unknown as Obj;
    return { step: row, events: events as unknown as Json, children: children as unknown as Json };
  }
}
