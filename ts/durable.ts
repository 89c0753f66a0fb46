import type { NativeStore } from './native';

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
  // Scalars need no checking: the replacer (a call per value) is for objects.
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return JSON.stringify(value);
    case 'number':
      return Number.isFinite(value) ? String(value) : 'null';
  }
  try {
    return JSON.stringify(value, replacer);
  } catch (err) {
    if (err !== BAD && !(err instanceof TypeError)) throw err;
    throw new StorageError(findBad(value, path, new Set()) ?? `${path}: ${(err as Error).message ?? 'cannot be stored'}`);
  }
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

/** How a run ended, for its row. */
export interface RunEnd {
  status: 'finished' | 'error' | 'cancelled';
  output?: unknown;
  error?: unknown;
}

/** An error as stored: JSON text of `{ name, message, stack, …own fields }` (never throws). */
export function errorText(err: unknown): string {
  const value = err instanceof Error ? errorJson(err) : err;
  try {
    return storable(value, 'error') ?? 'null';
  } catch {
    // Own fields JSON cannot hold: keep what identifies the error.
    return JSON.stringify(err instanceof Error ? { name: err.name, message: err.message, stack: err.stack } : { message: String(err) });
  }
}

/**
 * A run's link to the store. The records themselves are made in Rust, from the events the
 * core records and the JSON the face passes with its calls; this only says where and how
 * they are written, and holds what the face must remember between writes.
 */
export class DurableRun {
  /** A batched write waits for the next turn of the event loop (setImmediate). */
  scheduled = false;

  constructor(
    readonly store: NativeStore,
    /** The run's id in the store (a nested run has its own, unlike its events' runId). */
    readonly runId: string,
    /** Each write waits for its commit (`durability: 'sync'`). */
    readonly sync: boolean,
  ) {}
}

/** What an engine does with the durable runs writing to its store (nested ones included). */
export interface DurableRunner {
  flushDurable(): void;
  detachDurable(): void;
}

const byStore = new WeakMap<NativeStore, Set<DurableRunner>>();

/** A run that writes to `store` until it ends or is detached. */
export function trackDurable(store: NativeStore, run: DurableRunner): void {
  let set = byStore.get(store);
  if (!set) byStore.set(store, (set = new Set()));
  set.add(run);
}

export function untrackDurable(store: NativeStore, run: DurableRunner): void {
  byStore.get(store)?.delete(run);
}

/** The runs writing to `store` now: top-level runs of an engine and the runs nested in them. */
export function durableRunsOf(store: NativeStore): DurableRunner[] {
  return [...(byStore.get(store) ?? [])];
}
