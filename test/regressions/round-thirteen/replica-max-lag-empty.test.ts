// DEFECT (probe-options, medium). What the user does: gives `replica.maxLag` built from the
// environment, e.g. `maxLag: { seconds: process.env.MAX_LAG ? Number(process.env.MAX_LAG) :
// undefined }`, with the variable unset (or `maxLag: {}`). What they see: register accepts it, and
// the replicas get reads however far behind they are: maxLag resolves to `{ bytes: Infinity,
// seconds: Infinity }` (app.pgPool's replica view says so), the default 5 s bound is gone without a
// word, and a replica hours behind serves every read-only route. What they should see: an option
// given as `undefined` is "not given" (the suite's rule, test/options/undefined-options.test.ts):
// `{ seconds: undefined }` bounds lag at the default 5 s; and a maxLag that bounds nothing (`{}`)
// is refused at register with FST_PG_POOL_INVALID_OPTION naming replica.maxLag (or also defaults).
// Cause: packages/core/src/options.ts resolveReplicas: `seconds: lag.seconds ?? (given.maxLag ===
// undefined ? DEFAULT_MAX_LAG_SECONDS : Number.POSITIVE_INFINITY)`: any maxLag object given, even
// one with neither bound, turns the seconds bound off (bytes defaults to Infinity). Suggested fix:
// default seconds to 5 unless `bytes` was given (a number), and refuse a maxLag with neither.
// Round thirteen: failed on a718e61 (the code before its fix, both servers); passes after it.

import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'

let db: TestDatabase
let app: FastifyInstance | undefined
beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  await app?.close()
  app = undefined
})
afterAll(() => db?.drop())

async function replicaMaxLag(maxLag: unknown): Promise<unknown> {
  app = Fastify()
  const outcome = await app
    .register(pgPoolCore, {
      connection: db.url,
      pool: { lazy: true },
      replicas: [db.directUrl],
      replica: { lagInterval: 60_000, maxLag: maxLag as never },
    })
    .then(
      () => undefined,
      (error: unknown) => error,
    )
  if (outcome !== undefined) return outcome
  return app.pgPools.all()[1]?.replica()?.maxLag
}

describe('a replica.maxLag without a bound', () => {
  test('held: no maxLag bounds lag at 5 s', async () => {
    expect(await replicaMaxLag(undefined)).toEqual({ bytes: Number.POSITIVE_INFINITY, seconds: 5 })
  })

  test('{ seconds: undefined } is as if seconds were not given: the default bound', async () => {
    // Fails: { bytes: Infinity, seconds: Infinity }.
    expect(await replicaMaxLag({ seconds: undefined })).toEqual({ bytes: Number.POSITIVE_INFINITY, seconds: 5 })
  })

  test('{ bytes: undefined, seconds: undefined } (both from unset variables) keeps a bound', async () => {
    const resolved = await replicaMaxLag({ bytes: undefined, seconds: undefined })
    const bounded =
      resolved instanceof Error
        ? (resolved as { code?: string }).code === 'FST_PG_POOL_INVALID_OPTION'
        : Number.isFinite((resolved as { seconds: number }).seconds) ||
          Number.isFinite((resolved as { bytes: number }).bytes)
    // Fails: resolved to { bytes: Infinity, seconds: Infinity }, no error.
    expect({ resolved, bounded }).toMatchObject({ bounded: true })
  })

  test('{} is refused or keeps a bound', async () => {
    const resolved = await replicaMaxLag({})
    const bounded =
      resolved instanceof Error
        ? (resolved as { code?: string }).code === 'FST_PG_POOL_INVALID_OPTION'
        : Number.isFinite((resolved as { seconds: number }).seconds) ||
          Number.isFinite((resolved as { bytes: number }).bytes)
    expect({ resolved, bounded }).toMatchObject({ bounded: true })
  })
})
