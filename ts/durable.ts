import type { RamusEvent } from './events';
import type { NativeSink, NativeStore } from './native';

/** Thrown when a value a durable run must store is not JSON: the message names its path. */
export class StorageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StorageError';
  }
}

/** How an Error is stored: name, message, stack and its own enumerable fields. */
export function errorJson(err: Error): Record<string, unknown> {
  const out: Record<string, unknown> = { name: err.name, message: err.message };
  if (err.stack !== undefined) out.stack = err.stack;
  for (const key of Object.keys(err)) if (!(key in out)) out[key] = (err as unknown as Record<string, unknown>)[key];
  return out;
}

function isPlain(value: object): boolean {
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null || Array.isArray(value);
}

/** Thrown inside the replacer to stop `JSON.stringify`; the path is found afterwards. */
const BAD = Symbol('not storable');

function replacer(_key: string, value: unknown): unknown {
  switch (typeof value) {
    case 'function':
    case 'bigint':
    case 'symbol':
      throw BAD;
    case 'object':
      if (value === null || isPlain(value)) return value;
      if (value instanceof Error) return errorJson(value);
      throw BAD;
    default:
      return value;
  }
}

function describe(value: unknown): string | undefined {
  switch (typeof value) {
    case 'function':
      return 'functions cannot be stored';
    case 'bigint':
      return 'BigInt values cannot be stored';
    case 'symbol':
      return 'symbols cannot be stored';
    case 'object':
      if (value === null || isPlain(value) || value instanceof Error) return undefined;
      return `${value.constructor?.name ?? 'class'} instances cannot be stored (only plain objects, arrays and JSON values)`;
    default:
      return undefined;
  }
}

function segment(key: string): string {
  return /^[A-Za-z_$][\w$]*$/.test(key) ? `.${key}` : `[${JSON.stringify(key)}]`;
}

/** The first path under `value` JSON cannot hold, with the reason. Depth-first, like JSON.stringify. */
function findBad(value: unknown, path: string, seen: Set<object>): string | undefined {
  const why = describe(value);
  if (why) return `${path}: ${why}`;
  if (value === null || typeof value !== 'object') return undefined;
  if (value instanceof Error) return undefined;
  if (typeof (value as { toJSON?: unknown }).toJSON === 'function') return undefined;
  if (seen.has(value)) return `${path}: circular reference`;
  seen.add(value);
  const entries = Array.isArray(value) ? value.map((v, i) => [`[${i}]`, v] as const) : Object.entries(value).map(([k, v]) => [segment(k), v] as const);
  for (const [seg, v] of entries) {
    // Like JSON.stringify, an undefined property is left out rather than an error.
    if (v === undefined) continue;
    const bad = findBad(v, path + seg, seen);
    if (bad) return bad;
  }
  seen.delete(value);
  return undefined;
}

/**
 * `JSON.stringify` that refuses what JSON cannot hold (functions, BigInt, symbols, cycles,
 * class instances) instead of dropping it, naming the path: `context.user.session:
 * functions cannot be stored`. `undefined` at the top is `undefined` (stored as NULL).
 */
export function storable(value: unknown, path: string): string | undefined {
  if (value === undefined) return undefined;
  try {
    return JSON.stringify(value, replacer);
  } catch (err) {
    if (err !== BAD && !(err instanceof TypeError)) throw err;
    throw new StorageError(findBad(value, path, new Set()) ?? `${path}: ${(err as Error).message ?? 'cannot be stored'}`);
  }
}

/** The top-level keys of event data whose values are user data, named in error paths. */
function label(event: RamusEvent): string {
  const node = event.sourceNode ? `${event.source}.${event.sourceNode}` : event.source;
  return `${event.type} of ${node}`;
}

/**
 * What an `Engine` passes to the runners it creates (kept off the public option types):
 * the run id to use, and what a restore brings back.
 */
export const ENGINE = Symbol('ramus.engine');

/** The engine's part of a runner's options. */
export interface EngineInit {
  runId: string;
  /** DAG: outputs of the nodes that finished before, by node name. */
  finished?: Map<string, unknown>;
  /** Machine: the snapshot the run continues from. */
  machine?: MachineRestore;
}

/** A machine run's snapshot as stored in `runs.snapshot`. */
export interface MachineRestore {
  /** The core's `MachineSnapshot`, as JSON text. */
  core: string;
  context: unknown;
  input: unknown;
  output: unknown;
  stateOutput: unknown;
  event?: { type: string; data: unknown };
  /** Data of events the core still holds, by handle. */
  events: Array<[number, { type: string; data: unknown }]>;
}

/** A timer change for the `timers` table. */
export type TimerOp = ['arm', string, 'delay' | 'timeout', number, unknown] | ['fired', string, number] | ['clear', string];

/** How a run ended, for its row. */
export interface RunEnd {
  status: 'finished' | 'error' | 'cancelled';
  output?: unknown;
  error?: unknown;
}

/**
 * The durable side of one run: collects what a drain of the core's events produced and
 * hands it to the binding's sink in one call (`persist`), which turns it into store
 * records in Rust. Only checked JSON text crosses.
 */
export class DurableRun {
  #events: string[] = [];
  #timers: TimerOp[] = [];
  #delivered: string[] = [];
  #end: string | undefined;

  constructor(
    readonly store: NativeStore,
    readonly sink: NativeSink,
    /** The run's id in the store (a nested run has its own, unlike its events' runId). */
    readonly runId: string,
    /** Each batch waits for its commit (`durability: 'sync'`). */
    readonly sync: boolean,
  ) {}

  /** A batched write waits for the next turn of the event loop (setImmediate). */
  scheduled = false;
  /** The snapshot taken at the last step boundary, for runs that must not be snapshotted between. */
  boundary: string | undefined;

  get pending(): boolean {
    return this.#events.length > 0 || this.#timers.length > 0 || this.#delivered.length > 0 || this.#end !== undefined;
  }

  /** Enough collected that a batched run writes now rather than at the end of the turn. */
  get full(): boolean {
    return this.#events.length >= 4096;
  }

  event(event: RamusEvent): void {
    const data = storable(event.data, label(event)) ?? 'null';
    this.#events.push(
      `[${JSON.stringify(event.type)},"${event.stepId}",${event.parentStepId ? `"${event.parentStepId}"` : 'null'},${JSON.stringify(event.sourceNode)},${event.time},${data}]`,
    );
  }

  timer(op: TimerOp): void {
    this.#timers.push(op);
  }

  delivered(id: string): void {
    this.#delivered.push(id);
  }

  end(end: RunEnd): void {
    const parts = [`"status":"${end.status}"`, `"time":${Date.now()}`];
    if (end.status === 'finished') {
      const output = storable(end.output, 'output');
      if (output !== undefined) parts.push(`"output":${output}`);
    } else if (end.error !== undefined) {
      parts.push(`"error":${storable(end.error instanceof Error ? errorJson(end.error) : end.error, 'error') ?? 'null'}`);
    }
    this.#end = `{${parts.join(',')}}`;
  }

  /** Write what was collected, with the run's snapshot (JSON text) when given. */
  flush(snapshot: string | undefined): void {
    let batch = `{"e":[${this.#events.join(',')}]`;
    if (snapshot !== undefined) batch += `,"snap":${snapshot}`;
    if (this.#timers.length > 0) batch += `,"timers":${JSON.stringify(this.#timers)}`;
    if (this.#delivered.length > 0) batch += `,"delivered":${JSON.stringify(this.#delivered)}`;
    if (this.#end !== undefined) batch += `,"end":${this.#end}`;
    batch += '}';
    this.#events = [];
    this.#timers = [];
    this.#delivered = [];
    this.#end = undefined;
    this.sink.persist(batch);
  }
}
