import { AsyncLocalStorage } from 'node:async_hooks';
import type { RamusEvent } from './events';

/**
 * What a running step exposes to runs started inside it: the identity they nest under and
 * the listeners their events must reach.
 */
export interface StepOwner {
  runIdentity(): string;
  stepIdentity(slot: number): string;
  isObserved(): boolean;
  forwardEvent(event: RamusEvent): void;
  adoptChild(slot: number, child: { cancel(): void }): void;
  releaseChild(slot: number, child: { cancel(): void }): void;
  readonly tools: unknown;
  /** The durable writer of the owning run, when it is stored: runs nested in it are too. */
  durableParent(): import('./durable').DurableRun | undefined;
  /** The W3C traceparent of a step's span, when the owning run records spans. */
  stepTraceparent(slot: number): string | undefined;
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
export const currentStep = new AsyncLocalStorage<StepFrame>();
