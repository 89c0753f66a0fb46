// The napi-generated loader (../index.js) picks the addon for this platform. Codes that
// cross the boundary are const enums generated from Rust into ../index.d.ts.
import * as addon from '../index.js';
import { Io } from '../index.js';
import { StorageError } from './values';

export const native = addon;
export type { NativeDefinition, NativeEngine, NativeStore } from '../index.js';

/**
 * The buffer requests and records cross in: the face writes an op and its integers, calls
 * `native.call()`, and reads the records back (see `Rec` in src/lib.rs).
 */
export const io = new Int32Array(Io.Size);

/** Hooks the runners install: a condition or a timeout's `retryOn` the core asks, and timers that fired. */
export const hooks = {
  guard: (_run: number, _transition: number, _handle: number): number => 1,
  retryTimeout: (_run: number, _step: number, _message: string): number => 0,
  wake: (_count: number): void => {},
};

addon.init(
  io,
  (run, transition, handle) => hooks.guard(run, transition, handle),
  (run, step, message) => hooks.retryTimeout(run, step, message),
);
/** `native.call` without napi-rs's wrapper: the one crossing of every step. */
export const call = addon.fastCall() as () => number;
addon.initTimers((count) => hooks.wake(count));

/** Errors from the binding carry the engine's code (`ERR_…`); users get plain Errors. */
export function plain<T>(f: () => T): T {
  try {
    return f();
  } catch (err) {
    throw rethrown(err);
  }
}

export function rethrown(err: unknown): Error {
  const e = err as Error & { code?: string };
  // A definition holding what JSON cannot (a BigInt in `args`) is a storage error, named so.
  const out = (e.code === 'ERR_DEFINITION_NOT_JSON' ? new StorageError(e.message) : new Error(e.message)) as Error & { code?: string };
  if (typeof e.code === 'string' && e.code.startsWith('ERR_')) out.code = e.code;
  return out;
}
