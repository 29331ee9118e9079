/**
 * Time for the pool's state machines: the system's in production, a fake in unit tests, so that
 * timeouts, hand-offs and backoff are tested in milliseconds and never depend on the machine.
 */
export interface Clock {
  /** Milliseconds on a monotonic scale (only differences mean anything). */
  now(): number
  /** Runs `fn` once after `ms`; never keeps the process alive. */
  setTimeout(fn: () => void, ms: number): TimerHandle
  clearTimeout(handle: TimerHandle | undefined): void
}

/** Opaque to callers: what `setTimeout` returned. */
export type TimerHandle = object

export const systemClock: Clock = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout | undefined),
}
