// First: a machine without a native engine gets an error naming its platform (see load-addon.ts).
import './load-addon';
import type { Duration } from './machine-types';
import { parseDuration } from './machine';
import { native } from './native';
import { dispatch, drive } from './runner';

/** Where a `TestClock` starts unless told otherwise: 2026-01-01T00:00:00Z. */
export const TEST_CLOCK_START = Date.UTC(2026, 0, 1);

/**
 * A clock that moves only when the test moves it. Pass it as `clock` to `new Engine`,
 * `runDag` or `new StateMachineRunner`: their delays, timeouts and retry waits fire when
 * `advance` reaches them, in due order, and a month-long agent is tested in milliseconds.
 *
 * ```ts
 * const clock = new TestClock();
 * const engine = new Engine({ db: ':memory:', clock });
 * await clock.advance('30d');
 * ```
 */
export class TestClock {
  /** @internal The clock's id in the native runtime. */
  readonly id: number;

  constructor(start: number | Date = TEST_CLOCK_START) {
    this.id = native.clockCreate(typeof start === 'number' ? start : start.getTime());
  }

  /** The clock's time, in ms since the epoch. */
  now(): number {
    return native.clockNow(this.id);
  }

  /** When the next timer falls due, or undefined. */
  next(): number | undefined {
    const t = native.clockNext(this.id);
    return t < 0 ? undefined : t;
  }

  /**
   * Move forward by `by`, firing every timer that falls due on the way, earliest first; after
   * each, what it started runs (promises settle, further timers arm) before the next fires.
   */
  async advance(by: Duration): Promise<void> {
    const target = this.now() + parseDuration(by);
    await this.#settle();
    for (;;) {
      const n = native.clockFire(this.id, target);
      if (n < 0) break;
      drive(() => dispatch(n));
      await this.#settle();
    }
    native.clockSet(this.id, target);
    await this.#settle();
  }

  /** Move to a time (never backwards), firing what falls due on the way. */
  async advanceTo(time: number | Date): Promise<void> {
    await this.advance(Math.max(0, (typeof time === 'number' ? time : time.getTime()) - this.now()));
  }

  /**
   * Let promises and what they start settle: a few turns of the event loop, and the commits
   * that steps of sync runs wait for.
   */
  async #settle(): Promise<void> {
    for (let i = 0; i < 3 || native.heldSteps(); i++) await new Promise<void>((r) => setImmediate(r));
  }
}

/** How many runs the native engine holds live in this thread now: runs that ended were let go. */
export function liveRuns(): number {
  return native.liveRuns();
}
