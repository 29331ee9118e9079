// DEFECT (probe-options, low). What the user does: gives `replicas` an array with holes: built by
// index from a configuration (`replicas[i] = url` for the replicas that are set, say
// `replicas[1]` only), `new Array(n)` filled later, or an entry removed with `delete`. What they
// see: register fails with an uncoded TypeError, "Cannot read properties of undefined (reading
// 'view')", naming no option. What they should see: FST_PG_POOL_INVALID_OPTION naming the hole
// (`replicas[0]: expected a URL or options, got undefined`), as an explicit `undefined` entry is
// refused. Cause: packages/core/src/options.ts resolveReplicas `targets.map(...)` skips holes (so
// no entry is checked and the result keeps the hole); packages/core/src/plugin.ts then spreads
// `[primary, ...replicas]` (the hole becomes undefined) and reads `unit.view`. Suggested fix:
// iterate with an index (`Array.from(targets, ...)` or a for loop), which reads a hole as
// undefined and refuses it named.
// Round thirteen: failed on a718e61 (the code before its fix, both servers); passes after it.

import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db?.drop())

async function registerError(replicas: unknown[]): Promise<unknown> {
  const app = Fastify()
  try {
    await app.register(pgPoolCore, { connection: db.url, pool: { lazy: true }, replicas: replicas as string[] })
    await app.ready()
    return 'registered'
  } catch (error) {
    return error
  } finally {
    await app.close()
  }
}

describe('replicas with holes', () => {
  test('held: an explicit undefined entry is refused, named', async () => {
    expect(await registerError([undefined, db.directUrl])).toMatchObject({
      code: 'FST_PG_POOL_INVALID_OPTION',
      message: expect.stringContaining('replicas[0]'),
    })
  })

  test('a hole (replicas[1] set only) is refused the same way', async () => {
    const replicas: string[] = []
    replicas[1] = db.directUrl
    // Fails: TypeError "Cannot read properties of undefined (reading 'view')", no code.
    expect(await registerError(replicas)).toMatchObject({
      code: 'FST_PG_POOL_INVALID_OPTION',
      message: expect.stringContaining('replicas[0]'),
    })
  })

  test('new Array(1) is refused, named', async () => {
    expect(await registerError(new Array(1))).toMatchObject({
      code: 'FST_PG_POOL_INVALID_OPTION',
      message: expect.stringContaining('replicas[0]'),
    })
  })
})
