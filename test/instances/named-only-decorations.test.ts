import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

// Found by hostile probing (round nine, stranger): an app that registers only named instances
// has no `app.db` and no `app.pgPool` (they are the instance without a name), though the types
// declare them, as Fastify decorations are; the core README did not say so. It now does (`app.db`
// section), and this pins what it says: both absent, `app.dbs.<name>` and
// `app.pgPools.get(name)` there, `request.db` refused with its code.

let db: TestDatabase
let app: FastifyInstance | undefined
beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  await app?.close()
  app = undefined
})
afterAll(() => db.drop())

describe('an app with only a named instance', () => {
  test('app.db and app.pgPool are absent; app.dbs.<name> and app.pgPools.get(name) serve; request.db refuses with a code', async () => {
    const instance = Fastify()
    app = instance
    await instance.register(pgPoolCore, { name: 'reporting', connection: db.url, pool: { max: 1 } })
    instance.get('/default', async (request) => request.db`select 1`)
    expect((await instance.inject('/default')).json().code).toBe('FST_PG_POOL_UNKNOWN_INSTANCE')
    expect(instance.hasDecorator('db')).toBe(false)
    expect(instance.hasDecorator('pgPool')).toBe(false)
    const reporting = instance.dbs.reporting
    expect(reporting).toBeDefined()
    expect(await reporting?.unsafe('select 1 as one')).toEqual([{ one: 1 }])
    expect(instance.pgPools.get('reporting')?.stats().max).toBe(1)
  })
})
