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
