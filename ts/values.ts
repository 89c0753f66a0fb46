/** Thrown when a value a durable run must store is not JSON: the message names its path. */
export class StorageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StorageError';
  }
}

/** What a function, and a value JSON would lose, become in a definition sent to Rust. */
const FN = '\u0000fn';

/** A value as a definition sends it: what JSON cannot hold becomes a marker Rust reports precisely. */
function marked(v: unknown): unknown {
  switch (typeof v) {
    case 'function':
      return FN;
    case 'bigint':
      return `\u0000bigint:${v}`;
    case 'symbol':
      return '\u0000symbol';
    case 'number':
      return Number.isFinite(v) ? v : `\u0000num:${v}`;
    default:
      return v;
  }
}

/** `JSON.stringify` of a definition: functions and values JSON cannot hold become markers Rust reports precisely. */
export function definitionJson(config: unknown): string {
  return JSON.stringify(config, (_key, v: unknown) => marked(v));
}

/** A DAG config as sent to Rust, with what the face needs of its nodes, by node id. */
export interface DagText {
  json: string;
  /** Node names in the order of the text, which is the order the core numbers nodes in. */
  names: string[];
  /** Each node's `run` function, or undefined. */
  runs: unknown[];
}

/**
 * {@link definitionJson} of a DAG config that also collects its node names and `run` functions as
 * `JSON.stringify` meets them, so they are exactly the nodes the text holds, in its order (a node
 * whose value JSON leaves out is not one). Asking Rust for the names afterwards, and looking each
 * node up by such a name (a string V8 had to intern first), cost about as much as the stringify.
 */
export function dagJson(config: object): DagText {
  const names: string[] = [];
  const runs: unknown[] = [];
  // The replacer's `this` is the object whose property it is given: the root (after toJSON), the
  // nodes object while its entries are given, and the node whose fields are given.
  let root: unknown;
  let nodes: unknown;
  let node: unknown;
  let first = true;
  const json = JSON.stringify(config, function (this: unknown, key: string, v: unknown) {
    const out = marked(v);
    if (this === node) {
      if (key === 'run' && typeof v === 'function') runs[runs.length - 1] = v;
    } else if (this === nodes) {
      if (out !== undefined) {
        names.push(key);
        runs.push(undefined);
        node = out;
      }
    } else if (this === root) {
      // The nodes end where the root's next field starts (an object met again there is not a node).
      nodes = key === 'nodes' ? out : undefined;
      node = undefined;
    } else if (first) {
      root = out;
    }
    first = false;
    return out;
  });
  return { json, names, runs };
}

function isPlain(value: object): boolean {
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null || Array.isArray(value);
}

/** How an Error is stored: name, message, stack and its own enumerable fields (a cause that loops back is left out). */
export function errorJson(err: Error, seen: Set<object> = new Set()): Record<string, unknown> {
  seen.add(err);
  const out: Record<string, unknown> = { name: read(() => err.name), message: read(() => err.message) };
  const stack = read(() => err.stack);
  if (stack !== undefined) out.stack = stack;
  for (const key of read(() => Object.keys(err)) ?? []) {
    if (key in out) continue;
    const v = read(() => (err as unknown as Record<string, unknown>)[key]);
    if (v instanceof Error) {
      if (!seen.has(v)) out[key] = errorJson(v, seen);
    } else out[key] = v;
  }
  return out;
}

/** A property read that may throw (a getter, a Proxy trap): undefined then. */
function read<T>(f: () => T): T | undefined {
  try {
    return f();
  } catch {
    return undefined;
  }
}

/** Thrown inside the replacer to stop `JSON.stringify`; the path is found afterwards. */
const BAD = Symbol('not storable');

function replacer(this: unknown, _key: string, value: unknown): unknown {
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
  if (value === null || typeof value !== 'object' || value instanceof Error) return undefined;
  if (typeof (value as { toJSON?: unknown }).toJSON === 'function') return undefined;
  if (seen.has(value)) return `${path}: circular reference`;
  seen.add(value);
  const keys = Array.isArray(value) ? value.map((_, i) => i) : Object.keys(value);
  for (const k of keys) {
    let v: unknown;
    try {
      v = (value as Record<string | number, unknown>)[k];
    } catch (err) {
      return `${path}${typeof k === 'number' ? `[${k}]` : segment(k)}: could not be read (${(err as Error)?.message ?? String(err)})`;
    }
    // Like JSON.stringify, an undefined property is left out rather than an error.
    if (v === undefined) continue;
    const bad = findBad(v, path + (typeof k === 'number' ? `[${k}]` : segment(k)), seen);
    if (bad) return bad;
  }
  seen.delete(value);
  return undefined;
}

/**
 * `JSON.stringify` that refuses what JSON cannot hold (functions, BigInt, symbols, cycles,
 * class instances, values that throw when read) instead of dropping it, naming the path:
 * `context.user.session: functions cannot be stored`. `undefined` at the top is `undefined`.
 */
export function storable(value: unknown, path: string): string | undefined {
  if (value === undefined) return undefined;
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
    let where: string | undefined;
    try {
      where = findBad(value, path, new Set());
    } catch {
      // A Proxy that traps everything: say what we know.
    }
    const why = err === BAD ? 'cannot be stored' : err instanceof RangeError ? 'nested too deeply to store' : `could not be read (${read(() => (err as Error).message) ?? String(err)})`;
    throw new StorageError(where ?? `${path}: ${why}`);
  }
}

/** An error as stored: JSON text of `{ name, message, stack, …own fields }` (never throws). */
export function errorText(err: unknown): string {
  try {
    const value = err instanceof Error ? errorJson(err) : err;
    return storable(value, 'error') ?? 'null';
  } catch {
    // Own fields JSON cannot hold: keep what identifies the error.
    const e = err as Error;
    const fallback = err instanceof Error ? { name: read(() => e.name), message: read(() => e.message) } : { message: read(() => String(err)) ?? 'an unreadable error' };
    try {
      return JSON.stringify(fallback);
    } catch {
      return '{"message":"an unreadable error"}';
    }
  }
}
