// DEFECT (probe-options, medium). What the user does: sets a long duration that register accepts,
// at or near the documented maximum (2147483647 ms, MAX_DURATION_MS): `pool.statementTimeout:
// 2147483647` (INT_MAX, a common way to say "as long as possible" for a reporting service), or a
// `connectTimeout` that long, and uses `app.db.listen()`. What they see: every `listen()` rejects
// at once with FST_PG_POOL_CONNECT_FAILED "Could not connect to the database" (its cause the
// LISTEN_TIMEOUT "no answer within 2147489647 ms"), and Node prints a TimeoutOverflowWarning: the
// LISTEN connection's deadline is connectTimeout + statementTimeout + 1 s, past what a Node timer
// can wait, so the timer fires after 1 ms. The database is up; nothing is wrong but the sum. What they should see:
// listen() working (the sum capped at MAX_DURATION_MS), or the combination refused at register
// with FST_PG_POOL_INVALID_OPTION. Cause: packages/core/src/plugin.ts:220 `listenTimeout:
// options.connectTimeout + options.statementTimeout + 1_000`, used as a timer delay in
// packages/core/src/listener.ts:226 (#withinListenTimeout); each part is checked to be at most
// MAX_DURATION_MS (test/regressions/durations-past-timer-range.test.ts), their sum is not.
// Suggested fix: Math.min(MAX_DURATION_MS, ...) for every sum of durations used as a delay (the
// listener's, and any other deadline built from two options).
// Failed on a718e61: expected { …(2) } to deeply equal { outcome: 'listening', warnings: [] } (statementTimeout and
// connectTimeout at MAX_DURATION_MS).

import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'

const MAX_DURATION_MS = 2 ** 31 - 1

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db?.drop())

async function listenOutcome(pool: Record<string, unknown>): Promise<unknown> {
  const app = Fastify()
  try {
    await app.register(pgPoolCore, { connection: db.url, pool: { max: 1, ...pool } })
    await app.ready()
    const warnings: string[] = []
    const onWarning = (warning: Error) => warnings.push(warning.name)
    process.on('warning', onWarning)
    try {
      const outcome = await app.db
        .listen('probe_options_channel', () => {})
        .then(
          async (subscription) => {
            await subscription.unlisten()
            return 'listening'
          },
          (error: { code?: string; message?: string }) => `${error.code}: ${error.message}`,
        )
      return { outcome, warnings }
    } finally {
      process.off('warning', onWarning)
    }
  } finally {
    await app.close()
  }
}

describe('listen() with long durations the options accept', () => {
  test('held: the default durations listen', async () => {
    expect(await listenOutcome({})).toEqual({ outcome: 'listening', warnings: [] })
  })

  test('pool.statementTimeout at MAX_DURATION_MS: listen() works', async () => {
    // Fails: { outcome: 'FST_PG_POOL_CONNECT_FAILED: Could not connect to the database',
    // warnings: ['TimeoutOverflowWarning'] }.
    expect(await listenOutcome({ statementTimeout: MAX_DURATION_MS })).toEqual({ outcome: 'listening', warnings: [] })
  })

  test('pool.connectTimeout at MAX_DURATION_MS: listen() works', async () => {
    expect(await listenOutcome({ connectTimeout: MAX_DURATION_MS })).toEqual({ outcome: 'listening', warnings: [] })
  })
})
