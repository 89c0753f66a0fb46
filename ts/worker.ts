import { EventEmitter } from 'node:events';
import type { EngineRun } from './engine';
import type { WorkOptions } from './engine-types';
import { parseDuration } from './machine';
import { StateMachineRunner } from './machine';

/** What a worker needs of its engine (the claims themselves are decided in the store). */
export interface WorkerHost {
  /** Claim up to `limit` runs: `[runId, queued]`, runs to resume first. */
  claim(names: string[] | undefined, limit: number, agingMs: number, skip: string[]): Promise<Array<[string, boolean, number]>>;
  /** Start a claimed queued run (`priority`: its steps wait for limits in line by it). */
  start(runId: string, options: WorkOptions, priority: number): EngineRun;
  /** Resume a claimed stored run. */
  resume(runId: string, options: WorkOptions, priority: number): Promise<EngineRun>;
  /** Give a claimed run back to the store (`run`: its live form here, if it has one). */
  handBack(runId: string, run?: EngineRun): void;
  /** The time on the engine's clock (ms). */
  now(): number;
  /** The worker stopped. */
  stopped(worker: Worker): void;
}

/** How long freed slots wait for others before they are filled together (ms). */
const FILL_MS = 3;

/** How long a run this worker could not start is left to other workers (ms). */
const SKIP_MS = 60_000;

/**
 * Takes runs from an engine's store and runs them: queued runs (`engine.enqueue`), runs
 * whose timers fell due, runs that received events and runs whose holder stopped or died.
 * Any number of workers, in any number of processes, share one store: each run is held
 * by one of them at a time (its lease). Made by `engine.work()`.
 *
 * Emits `error` (a run it claimed could not start here; another worker may take it after
 * a minute) when listened to; otherwise such errors become process warnings.
 */
export class Worker extends EventEmitter {
  readonly #host: WorkerHost;
  readonly #options: WorkOptions;
  readonly #concurrency: number;
  readonly #pollMs: number;
  readonly #idleMs: number;
  readonly #agingMs: number;
  /** Runs held, with what they looked like when first seen idle. */
  readonly #held = new Map<string, { run?: EngineRun; idle?: { at: number; event: unknown; state: string } }>();
  readonly #skip = new Map<string, number>();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #soon = false;
  #claiming: Promise<void> | undefined;
  #stopping: Promise<void> | undefined;
  #stopped = false;

  /** @internal Made by `engine.work()`. */
  constructor(host: WorkerHost, options: WorkOptions = {}) {
    super();
    if (options === null || typeof options !== 'object') throw new TypeError('work(options): options must be an object');
    const { concurrency = 10, pollInterval = 200, idleAfter = 1000, aging = '1m', names } = options;
    if (!Number.isInteger(concurrency) || concurrency < 1) throw new TypeError(`work({ concurrency }): must be a positive integer, got ${String(concurrency)}`);
    if (!(pollInterval > 0)) throw new TypeError(`work({ pollInterval }): must be a positive number of ms, got ${String(pollInterval)}`);
    if (!(idleAfter >= 0)) throw new TypeError(`work({ idleAfter }): must be a number of ms, got ${String(idleAfter)}`);
    if (names !== undefined && (!Array.isArray(names) || names.some((n) => typeof n !== 'string'))) throw new TypeError('work({ names }): must be an array of definition names');
    this.#agingMs = typeof aging === 'number' ? aging : parseDuration(aging);
    if (!(this.#agingMs > 0)) throw new TypeError(`work({ aging }): must be a positive duration, got ${String(aging)}`);
    this.#host = host;
    this.#options = options;
    this.#concurrency = concurrency;
    this.#pollMs = pollInterval;
    this.#idleMs = idleAfter;
    this.#later(0);
  }

  /** How many runs this worker holds now. */
  get running(): number {
    return this.#held.size;
  }

  /** The ids of the runs this worker holds now. */
  get runIds(): string[] {
    return [...this.#held.keys()];
  }

  /**
   * Look for work now rather than at the next poll: hands idle runs back, then claims as
   * many runs as there are free slots and starts them. Resolves with how many it started.
   */
  async poll(): Promise<number> {
    // After a claim that is out (the poll timer's, a freed slot's): it changes what is free.
    while (this.#claiming) await this.#claiming;
    if (this.#stopped || this.#stopping) return 0;
    this.#handBackIdle(false);
    const free = this.#concurrency - this.#held.size;
    if (free <= 0) return 0;
    const now = this.#host.now();
    for (const [id, until] of this.#skip) if (until <= now) this.#skip.delete(id);
    let claimed: Array<[string, boolean, number]>;
    // One claim at a time: the slots it fills are known only when it answers.
    let done!: () => void;
    this.#claiming = new Promise<void>((r) => (done = r));
    try {
      claimed = await this.#host.claim(this.#options.names, free, this.#agingMs, [...this.#skip.keys()]);
    } catch (err) {
      this.#report(err);
      return 0;
    } finally {
      this.#claiming = undefined;
      done();
    }
    if (this.#stopped || this.#stopping) {
      // Stopped or closed while the claim was out: hand its runs straight back.
      for (const [id] of claimed) {
        try {
          this.#host.handBack(id);
        } catch {
          // The store closed too: the lease lapses by itself.
        }
      }
      return 0;
    }
    let started = 0;
    // Held from now, so that a poll while these start counts their slots.
    for (const [id] of claimed) this.#held.set(id, {});
    for (const [id, queued, priority] of claimed) {
      try {
        const run = queued ? this.#host.start(id, this.#options, priority) : await this.#host.resume(id, this.#options, priority);
        this.#held.set(id, { run });
        started++;
        const done = () => {
          if (this.#held.get(id)?.run === run) this.#held.delete(id);
          this.#fill();
        };
        run.finished.then(done, done);
      } catch (err) {
        this.#held.delete(id);
        this.#skip.set(id, now + SKIP_MS);
        try {
          this.#host.handBack(id);
        } catch {
          // Its lease lapses by itself.
        }
        const message = (err as Error)?.message ?? String(err);
        this.#report(Object.assign(new Error(`Run ${id} could not start in this worker: ${message}`, { cause: err }), { runId: id, code: (err as { code?: string })?.code }));
      }
    }
    // A full claim may have left more behind: look again when a slot frees (`#fill`).
    return started;
  }

  /**
   * Stop taking work, and let go of what this worker holds: runs that are running finish
   * their steps (and the run, unless it comes to rest first); machines at rest (waiting
   * for an event, or sleeping) are handed back at once, for another worker to take.
   * Resolves when it holds nothing.
   */
  stop(): Promise<void> {
    this.#stopping ??= new Promise<void>((resolve) => {
      if (this.#timer) clearTimeout(this.#timer);
      const check = () => {
        this.#handBackIdle(true);
        if (this.#held.size === 0) {
          this.#stopped = true;
          this.#host.stopped(this);
          resolve();
        } else setTimeout(check, 10);
      };
      check();
    });
    return this.#stopping;
  }

  /** @internal The engine closes (its leases go back with it): resolves once no claim is out. */
  async closed(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#held.clear();
    while (this.#claiming) await this.#claiming;
  }

  /** @internal Work was enqueued here: look for it soon. */
  wake(): void {
    this.#fill();
  }

  /**
   * A slot freed, or work came: look for work in a few ms, so that runs ending close
   * together share one claim (a claim is a store transaction) instead of one each.
   */
  #fill(): void {
    if (this.#soon || this.#stopped || this.#stopping) return;
    this.#soon = true;
    setTimeout(() => {
      this.#soon = false;
      void this.poll();
    }, FILL_MS).unref?.();
  }

  #later(ms: number): void {
    if (this.#stopped || this.#stopping) return;
    this.#timer = setTimeout(() => {
      void this.poll().finally(() => this.#later(this.#pollMs));
    }, ms);
    // Polling alone does not keep the process alive; the runs it holds do, as any run's.
    this.#timer.unref?.();
  }

  /**
   * Hand back machines at rest: seen resting (same state, same last event) for
   * `idleAfter`, or at once when stopping. A run whose steps are running is never handed
   * back: only a resting machine has nothing in flight.
   */
  #handBackIdle(now: boolean): void {
    const t = this.#host.now();
    for (const [id, h] of this.#held) {
      const run = h.run;
      if (!(run instanceof StateMachineRunner) || run.released) continue;
      const status = run.machineStatus;
      if (status !== 'waitingForEvent' && status !== 'sleeping') {
        h.idle = undefined;
        continue;
      }
      const event = run.currentState.event;
      if (!now && (!h.idle || h.idle.event !== event || h.idle.state !== run.state)) {
        h.idle = { at: t, event, state: run.state };
        if (this.#idleMs > 0) continue;
      }
      if (now || t - h.idle!.at >= this.#idleMs) {
        this.#held.delete(id);
        try {
          this.#host.handBack(id, run);
        } catch (err) {
          this.#report(err);
        }
      }
    }
  }

  #report(err: unknown): void {
    if (this.listenerCount('error') > 0) this.emit('error', err);
    else process.emitWarning(`ramus worker: ${(err as Error)?.message ?? String(err)}`);
  }
}
