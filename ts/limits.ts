import { native } from './native';
import type { Semaphore, SlotTaker } from './semaphore';

const newId = (): string => native.newRunId();
const NOTHING = (): void => {};

/** One limit on the store, with the slots its steps hold now (`engine.limits()`). */
export interface LimitState {
  key: string;
  concurrency: number | null;
  rate: { count: number; per: number } | null;
  /** Slots held now, in every process on the store. */
  running: number;
  /** Steps waiting for a slot now, in every process on the store. */
  waiting: number;
}

/** What the limiter needs of its engine's binding. */
interface LimitsNative {
  acquireSlot(key: string, waiter: string, priority: number, clock: number): number;
  stopWaiting(waiter: string): void;
  releaseSlot(key: string): void;
  limits(clock: number): string;
}

/** How often the keys with limits are read again: a limit set elsewhere applies within this. */
const REFRESH_MS = 1000;
/** How long a step waiting for a slot held in another process waits before it looks again. */
const POLL_MS = 25;

/**
 * The store's limits as a `Semaphore` its engine adds to each run: a step whose key has
 * a limit takes a slot in the store (the check and the take are one transaction of the
 * store's writer, so processes never both take the last slot); other keys pass at once.
 * Slots given back here wake the steps waiting here at once; slots held elsewhere are
 * looked for again every 25 ms, or when the limit's rate allows the next.
 */
export class StoreLimits implements Semaphore, SlotTaker {
  readonly #native: LimitsNative;
  readonly #clock: number;
  #keys = new Set<string>();
  #readAt = -Infinity;
  readonly #waiters = new Map<string, Set<() => void>>();

  constructor(native: LimitsNative, clock: number) {
    this.#native = native;
    this.#clock = clock;
  }

  /** The limits on the store, read now. */
  read(): LimitState[] {
    const all = JSON.parse(this.#native.limits(this.#clock)) as LimitState[];
    this.#keys = new Set(all.filter((l) => l.concurrency !== null || l.rate !== null).map((l) => l.key));
    this.#readAt = Date.now();
    return all;
  }

  /** Whether any key has a limit (read again at most every second). */
  active(): boolean {
    if (Date.now() - this.#readAt > REFRESH_MS) this.read();
    return this.#keys.size > 0;
  }

  /** A slot of `key` (waiting in line at priority 0); give it back with `release(key)`. */
  async acquire(key: string): Promise<void> {
    const back = await this.take(key, () => false);
    const list = this.#direct.get(key) ?? [];
    list.push(back);
    this.#direct.set(key, list);
  }

  /** Give back a slot taken with `acquire(key)`. */
  release(key: string): void {
    this.#direct.get(key)?.shift()?.();
  }

  /** Slots taken with `acquire`, by key, in order. */
  readonly #direct = new Map<string, Array<() => void>>();

  /** This limiter for the steps of a run of `priority`: they wait in line by it. */
  forRun(priority: number): Semaphore & SlotTaker {
    if (priority === 0) return this;
    return {
      acquire: (key) => this.acquire(key),
      release: (key) => this.release(key),
      take: (key, aborted) => this.take(key, aborted, priority),
    };
  }

  /**
   * Take a slot of `key`, waiting in the store's line of waiters (higher priorities
   * first, then the longest waiting, across processes); resolves with its release. A
   * key without a limit passes at once, with a release that gives back nothing. A wait
   * whose request was aborted leaves the line and resolves with a no-op.
   */
  async take(key: string, aborted: () => boolean, priority = 0): Promise<() => void> {
    if (!this.active() || !this.#keys.has(key)) return NOTHING;
    const waiter = newId();
    for (;;) {
      if (aborted()) {
        this.#native.stopWaiting(waiter);
        return NOTHING;
      }
      const r = this.#native.acquireSlot(key, waiter, priority, this.#clock);
      if (r === 0) {
        let given = false;
        return () => {
          if (given) return;
          given = true;
          this.#native.releaseSlot(key);
          for (const wake of [...(this.#waiters.get(key) ?? [])]) wake();
        };
      }
      await new Promise<void>((resolve) => {
        const waiters = this.#waiters.get(key) ?? new Set();
        this.#waiters.set(key, waiters);
        const wake = () => {
          clearTimeout(timer);
          waiters.delete(wake);
          resolve();
        };
        const timer = setTimeout(wake, r > 0 ? Math.min(r, POLL_MS * 4) : POLL_MS);
        waiters.add(wake);
      });
    }
  }
}
