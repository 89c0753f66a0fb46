import { reportListenerError } from './events';
import { native } from './native';

/** Anything a run can take slots from: `LocalSemaphore`, or your own (e.g. a shared one). */
export interface Semaphore {
  acquire(key: string): Promise<void>;
  release(key: string): void | Promise<void>;
}

/**
 * Keyed counting semaphores in this process. The counting lives in the Rust core; this
 * class only keeps the promise resolvers of the waiters.
 */
export class LocalSemaphore implements Semaphore {
  #core: InstanceType<typeof native.NativeSemaphore>;
  #waiters = new Map<number, () => void>();

  /** `limits`: maximum concurrent holders per key. Keys not listed are unlimited. */
  constructor(limits: Record<string, number> = {}) {
    this.#core = new native.NativeSemaphore(limits);
  }

  /** Resolves once a slot of `key` is held. Pair every acquire with a `release`. */
  acquire(key: string): Promise<void> {
    const waiter = this.#core.acquire(key);
    if (waiter === 0) return Promise.resolve();
    return new Promise<void>((resolve) => this.#waiters.set(waiter, resolve));
  }

  /** Give a slot of `key` back; the longest waiter, if any, gets it. */
  release(key: string): void {
    this.#wake(this.#core.release(key));
  }

  /** Change (or create) the limit of `key`; raising it wakes waiters in order. */
  setLimit(key: string, limit: number): void {
    for (const waiter of this.#core.setLimit(key, limit)) this.#wake(waiter);
  }

  /** Slots of `key` held now. */
  current(key: string): number {
    return this.#core.current(key);
  }

  /**
   * Every key with a limit: `{ limit, current, pending }` (`pending`: acquires waiting),
   * read from the core at each access. The original kept its counting in this map; here it
   * is a snapshot, so changing it changes nothing.
   */
  get counts(): ReadonlyMap<string, SemaphoreCount> {
    return new Map(this.#core.counts().map((c) => [c.key, { limit: c.limit, current: c.current, pending: c.pending }]));
  }

  /** Run `fn` while holding a slot of `key`; the slot is released even if `fn` throws. */
  async run<T>(key: string, fn: () => T | Promise<T>): Promise<T> {
    await this.acquire(key);
    try {
      return await fn();
    } finally {
      this.release(key);
    }
  }

  #wake(waiter: number): void {
    if (waiter === 0) return;
    const resolve = this.#waiters.get(waiter);
    this.#waiters.delete(waiter);
    resolve?.();
  }
}

/** One key of `LocalSemaphore.counts`. */
export interface SemaphoreCount {
  readonly limit: number;
  /** Slots held now. */
  readonly current: number;
  /** Acquires waiting for a slot. */
  readonly pending: number;
}

/** Gives back the slots `acquireSemaphores` took; settles once every release has. */
export type SemaphoreReleaser = () => Promise<void>;

/**
 * Take a slot of `key` in every semaphore at once (as a node with `semaphoreKey` does), for
 * code that rate-limits its own work. If one acquisition fails, the slots already taken go
 * back, those granted later go back as they arrive, and the error is thrown.
 */
export async function acquireSemaphores(semaphores: readonly Semaphore[], key: string): Promise<SemaphoreReleaser> {
  await new SlotRequest(semaphores, key).acquire();
  return async () => {
    await Promise.all(semaphores.map((s) => s.release(key)));
  };
}

/** Release a slot; a custom semaphore whose release fails is reported, not left unhandled. */
function giveBack(s: Semaphore, key: string): void {
  try {
    const done = s.release(key);
    if (done && typeof (done as Promise<void>).then === 'function') (done as Promise<void>).then(undefined, reportListenerError);
  } catch (err) {
    reportListenerError(err);
  }
}

/**
 * One node's claim on a slot of `key` in every semaphore of its run. Slots taken are given
 * back by `release()`; after `abort()` (the node will never run) the slots taken so far go
 * back at once and those granted later go back as they arrive, so a cancelled node does not
 * sit on one semaphore while waiting for another.
 */
export class SlotRequest {
  readonly #semaphores: readonly Semaphore[];
  readonly #key: string;

  /** The key it takes slots of. */
  get key(): string {
    return this.#key;
  }
  /** How to give back each slot held. */
  #held: Array<() => void> = [];
  #aborted = false;

  constructor(semaphores: readonly Semaphore[], key: string) {
    this.#semaphores = semaphores;
    this.#key = key;
  }

  /** Resolves once every slot is held; rejects (after giving back what it took) if one acquisition fails. */
  async acquire(): Promise<void> {
    try {
      await Promise.all(
        this.#semaphores.map(async (s) => {
          let back: () => void;
          // A semaphore that gives each take its own release (the store's limits) is asked
          // so, and told when this request no longer wants the slot.
          const takes = (s as Partial<SlotTaker>).take;
          if (typeof takes === 'function') back = await takes.call(s, this.#key, () => this.#aborted);
          else {
            await s.acquire(this.#key);
            back = () => giveBack(s, this.#key);
          }
          if (this.#aborted) back();
          else this.#held.push(back);
        }),
      );
    } catch (err) {
      this.abort();
      throw err;
    }
  }

  /** Give back every slot held. */
  release(): void {
    const held = this.#held;
    this.#held = [];
    for (const back of held) back();
  }

  /** Give back what is held and refuse what comes later. */
  abort(): void {
    this.#aborted = true;
    this.release();
  }
}

/**
 * @internal A semaphore whose every take has its own release, and whose waits stop when
 * the request is aborted (`aborted()`): a step's release gives back the slot that step
 * took, never another's.
 */
export interface SlotTaker {
  take(key: string, aborted: () => boolean): Promise<() => void>;
}
