/**
 * Thrown by `exitIfCancelled()` inside a runner whose run was cancelled, and the reason a
 * cancelled run's `finished` rejects with. The engine does not count it as a failure.
 */
export class CancelledError extends Error {
  constructor(message = 'Cancelled') {
    super(message);
    this.name = 'CancelledError';
  }
}

/** A state's `timeout` or a DAG node's fell due: the error the step fails (or moves) with. */
export class TimeoutError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TimeoutError';
  }
}

/** `resume` of a run another live engine holds: who holds it, and until when. */
export class LeaseHeldError extends Error {
  readonly code = 'ERR_LEASE_HELD';
  constructor(
    message: string,
    readonly runId: string,
    readonly holder: string,
    readonly expiresAt: number,
  ) {
    super(message);
    this.name = 'LeaseHeldError';
  }
}

/** A run this engine held was taken over by another engine (its lease had expired): it stops here. */
export class LeaseLostError extends Error {
  readonly code = 'ERR_LEASE_LOST';
  constructor(message: string) {
    super(message);
    this.name = 'LeaseLostError';
  }
}

/** `start` with an `idempotencyKey` that names a run not live in this engine: that run's id. */
export class DuplicateRunError extends Error {
  readonly code = 'ERR_DUPLICATE_RUN';
  constructor(
    message: string,
    readonly runId: string,
  ) {
    super(message);
    this.name = 'DuplicateRunError';
  }
}
