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
