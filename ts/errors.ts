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
