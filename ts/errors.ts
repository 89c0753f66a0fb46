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

/** Errors from the binding carry napi's `code` field; users get plain Errors with the message. */
export function plainErrors<T>(f: () => T): T {
  try {
    return f();
  } catch (err) {
    throw new Error((err as Error).message);
  }
}
