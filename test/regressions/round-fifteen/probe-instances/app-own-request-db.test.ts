import pgPoolCore, { type RequestDb } from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../../support/database.js'

// What the user does: moves an app that decorated requests with a `db` of its own (the common
// `app.decorateRequest('db', null)` + an onRequest hook that sets a knex or pg client there) to
// the pool, registering the core beside it, plus a named instance.
// What they should get: the registration refused, as when the app has an `app.db` of its own
// (Fastify's FST_ERR_DEC_ALREADY_PRESENT naming `db`): two things cannot both be `request.db`.
// What they got: the core takes the app's decorator for its own wiring and skips it: the app
// starts, `request.db` stays the app's (null here), `request.dbs` is undefined, and none of the
// core's request hooks run (no route transactions, no lease returned by the request's end).

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

for (const decorator of ['db', 'dbs']) {
  test(`an app with a request decorator named ${decorator} of its own: registering the core is refused`, async () => {
    app = Fastify()
    app.decorateRequest(decorator, null)
    const instance = app
    const outcome = await (async () => {
      try {
        await instance.register(pgPoolCore, { connection: db.url })
        await instance.register(pgPoolCore, { name: 'other', connection: db.url })
        instance.get('/', async (request) => {
          const [main] = await request.db<{ one: number }[]>`select 1 as one`
          const [other] = await ((request.dbs as Record<string, RequestDb>).other as RequestDb)<
            { two: number }[]
          >`select 2 as two`
          return { ...main, ...other }
        })
        await instance.ready()
      } catch (error) {
        return { refused: (error as { code?: string }).code }
      }
      const res = await instance.inject('/')
      return { refused: undefined, status: res.statusCode, body: res.json() }
    })()
    expect(outcome).toEqual({ refused: 'FST_ERR_DEC_ALREADY_PRESENT' })
  })
}
