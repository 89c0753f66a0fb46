import { AsyncLocalStorage } from 'node:async_hooks';

/** What a running step exposes to runs started inside it. */
export interface StepOwner {
  readonly key: number;
  readonly tools: unknown;
  isObserved(): boolean;
  forwardEvent(event: import('./events').RamusEvent): void;
  flushLocal(): void;
}

/** The step a piece of code runs in: set around every runner call. */
export interface StepFrame {
  readonly owner: StepOwner;
  readonly slot: number;
}

/**
 * Carries the current step through `await`s so that `runDag(...)` inside a runner nests
 * under it without the runner passing anything.
 */
const currentStep = new AsyncLocalStorage<StepFrame>();

/** The step whose runner is executing synchronously right now. */
let syncOwner: StepOwner | undefined;
let syncSlot = 0;

let acrossAwaits = true;

/**
 * Whether runs started inside a step after an `await` find that step (the default).
 * Turning it off skips `AsyncLocalStorage`, which on Node 20 slows every promise in the
 * process; runs started in a step's synchronous part still nest.
 */
export function nestAcrossAwaits(on: boolean): void {
  acrossAwaits = on;
}

/** The step the calling code runs in, if any. */
export function currentFrame(): StepFrame | undefined {
  if (syncOwner) return { owner: syncOwner, slot: syncSlot };
  return acrossAwaits ? currentStep.getStore() : undefined;
}

/** Call a step's runner inside its frame. */
export function callIn<A, T>(owner: StepOwner, slot: number, fn: (arg: A) => T, arg: A): T {
  const outerOwner = syncOwner;
  const outerSlot = syncSlot;
  syncOwner = owner;
  syncSlot = slot;
  try {
    return acrossAwaits ? currentStep.run({ owner, slot }, fn, arg) : fn(arg);
  } finally {
    syncOwner = outerOwner;
    syncSlot = outerSlot;
  }
}
