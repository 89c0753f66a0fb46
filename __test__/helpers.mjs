// Shared helpers for the Ramus test-suite. Nothing here touches the engine.

export const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** A promise with its resolve/reject exposed. */
export function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Let queued microtasks, immediates and short native hops run (several macrotask turns). */
export async function settle(turns = 10) {
  for (let i = 0; i < turns; i++) {
    await new Promise((r) => setImmediate(r));
  }
  await sleep(5);
}

/** Resolve with the promise's value, or fail with a clear message if it does not settle within `ms`. */
export function within(promise, ms, label) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${label}: did not settle within ${ms}ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Settle state of a promise without awaiting it: 'pending' | 'fulfilled' | 'rejected'. */
export async function promiseState(promise) {
  const marker = Symbol('pending');
  const winner = await Promise.race([
    promise.then(
      () => 'fulfilled',
      () => 'rejected'
    ),
    settle(3).then(() => marker),
  ]);
  return winner === marker ? 'pending' : winner;
}

/** Record every 'event' emitted by a runner. */
export function collectEvents(runner) {
  const events = [];
  runner.on('event', (e) => events.push(e));
  return events;
}

/** Milliseconds since the epoch encoded in the first 48 bits of a UUIDv7. */
export function uuidV7Millis(id) {
  return parseInt(id.replace(/-/g, '').slice(0, 12), 16);
}

/** Wait until `fn()` is truthy (polls), failing with `label` after `ms`. */
export async function waitUntil(fn, label, ms = 3000) {
  const start = Date.now();
  while (!fn()) {
    if (Date.now() - start > ms) {
      throw new Error(`timed out waiting for: ${label}`);
    }
    await sleep(2);
  }
}

/** Track the maximum number of concurrently active sections. */
export function concurrencyTracker() {
  let active = 0;
  const t = {
    max: 0,
    get active() {
      return active;
    },
    enter() {
      active += 1;
      t.max = Math.max(t.max, active);
    },
    leave() {
      active -= 1;
    },
  };
  return t;
}

// ---- State machine helpers (added for the machine*.test.mjs files) ----

const escapeRegExp = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** A RegExp matching exactly `msg` (for `toThrow`). */
export const exactMessage = (msg) => new RegExp(`^${escapeRegExp(msg)}$`);

/** Call `fn`, expect it to throw a plain Error (name 'Error') with exactly `msg`; returns the error. */
export function expectPlainThrow(fn, msg) {
  let caught;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  if (caught === undefined) throw new Error(`expected to throw "${msg}", but it did not throw`);
  if (!(caught instanceof Error)) throw new Error(`expected an Error, got ${String(caught)}`);
  if (caught.message !== msg) throw new Error(`expected message "${msg}", got "${caught.message}"`);
  if (caught.name !== 'Error') throw new Error(`expected a plain Error, got name "${caught.name}"`);
  return caught;
}

/** Record every 'state_machine:state' payload of a machine runner as "status@state" strings and raw payloads. */
export function statusLog(runner) {
  const raw = [];
  runner.on('state_machine:state', (s) => raw.push(s));
  return {
    raw,
    get seq() {
      return raw.map((s) => `${s.machineState}@${s.state}`);
    },
  };
}

/** Wait until a machine runner's machineStatus is `status` (and optionally its state is `state`). */
export function waitForStatus(runner, status, state, ms = 3000) {
  return waitUntil(
    () => runner.machineStatus === status && (state === undefined || runner.state === state),
    `machineStatus ${status}${state ? ` at ${state}` : ''} (now ${runner.machineStatus} at ${runner.state})`,
    ms
  );
}

/** Attach handlers to a promise now and read its outcome later (avoids unhandled rejections). */
export function outcome(promise) {
  const o = { settled: false, status: 'pending', value: undefined, reason: undefined };
  o.promise = Promise.resolve(promise).then(
    (value) => Object.assign(o, { settled: true, status: 'fulfilled', value }),
    (reason) => Object.assign(o, { settled: true, status: 'rejected', reason })
  );
  return o;
}

/**
 * Guard a machine runner against a runaway synchronous loop in the engine (which would block the
 * test worker forever): after `max` 'running' statuses it cancels the runner. Assert
 * `guard.tripped` is false to report such a loop as a normal test failure.
 */
export function loopGuard(runner, max = 25) {
  const guard = { tripped: false, runs: 0 };
  runner.on('state_machine:state', (s) => {
    if (s.machineState !== 'running') return;
    guard.runs += 1;
    if (guard.runs > max && !guard.tripped) {
      guard.tripped = true;
      runner.cancel();
    }
  });
  return guard;
}

export const RUNAWAY = 'runaway loop: the engine kept re-running states (guard cancelled the machine)';
