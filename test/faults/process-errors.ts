import { afterAll, beforeAll, expect } from 'vitest'

/**
 * Collects every uncaught exception and unhandled rejection while the calling file runs and
 * fails the file if there was any: a database fault must never reach the process.
 */
export function failOnProcessErrors(): unknown[] {
  const seen: unknown[] = []
  const collect = (error: unknown) => {
    seen.push(error)
    console.error('[process error]', error instanceof Error ? error.stack : error)
  }
  beforeAll(() => {
    process.on('uncaughtException', collect)
    process.on('unhandledRejection', collect)
  })
  afterAll(() => {
    process.off('uncaughtException', collect)
    process.off('unhandledRejection', collect)
    expect(seen.map(String)).toEqual([])
  })
  return seen
}

export interface Deferred<T> {
  readonly promise: Promise<T>
  resolve(value: T): void
}

export function deferred<T = void>(): Deferred<T> {
  let resolve!: (value: T) => void
  const promise = new Promise<T>((r) => {
    resolve = r
  })
  return { promise, resolve }
}

/** Small timeouts so that every fault settles in about a second. */
export const fastTimeouts = { connectTimeout: 500, acquireTimeout: 500, statementTimeout: 1_000 } as const
