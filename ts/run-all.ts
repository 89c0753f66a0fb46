import type { Duration } from './machine-types';
import { parseDuration } from './machine';

/** How one child of `runAll` ended. */
export type RunAllResult<T = unknown> =
  | { status: 'fulfilled'; value: T }
  | { status: 'rejected'; reason: unknown }
  | { status: 'timedOut' };

/** A child run: a `DagRunner` or `StateMachineRunner` (started or not). */
export interface ChildRun<T = unknown> {
  run(): Promise<unknown>;
  readonly finished: Promise<T>;
  cancel(): void;
}

/**
 * Run children in parallel; at `timeout`, cancel the unfinished ones and resolve with what
 * came back, in input order. Never rejects because a child failed.
 */
export function runAll<T = unknown>(children: ReadonlyArray<ChildRun<T>>, options: { timeout?: Duration } = {}): Promise<Array<RunAllResult<T>>> {
  const results = new Array<RunAllResult<T> | undefined>(children.length);
  let pending = children.length;
  return new Promise((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    const finish = () => {
      if (timer) clearTimeout(timer);
      resolve(Array.from(results, (r) => r ?? { status: 'timedOut' }));
    };
    if (pending === 0) {
      finish();
      return;
    }
    if (options.timeout !== undefined) {
      let ms: number;
      try {
        ms = parseDuration(options.timeout);
      } catch (err) {
        reject(err);
        return;
      }
      timer = setTimeout(() => {
        timer = undefined;
        children.forEach((child, i) => {
          if (!results[i]) child.cancel();
        });
        finish();
      }, ms);
    }
    children.forEach((child, i) => {
      child.finished.then(
        (value) => {
          results[i] ??= { status: 'fulfilled', value };
          if (--pending === 0) finish();
        },
        (reason) => {
          results[i] ??= { status: 'rejected', reason };
          if (--pending === 0) finish();
        },
      );
      void child.run().catch(() => {});
    });
  });
}
