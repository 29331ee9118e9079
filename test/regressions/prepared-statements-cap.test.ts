import type { FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

// Found by hostile probing (round nine, growth): postgres.js prepares one named statement per
// distinct statement text and keeps it for the connection's life; nothing bounded them (only
// maxLifetime, 30 min, 0 = never). 1000 requests with distinct texts on one connection left 1004
// statements in pg_prepared_statements, 1000 more 2004, the backend's memory growing 6-8 kB per
// statement, and every session reset reading them all. `pool.maxPreparedStatements` (default 500)
// now retires a connection once that many were prepared on it (close reason 'statements'). The
// first test failed before the fix (the session kept every statement).

let db: TestDatabase
const apps: FastifyInstance[] = []
beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  await Promise.all(apps.splice(0).map((app) => app.close()))
})
afterAll(() => db.drop())

async function appWith(pool: Record<string, unknown>) {
  const { app } = await coreApp(db.directUrl, { max: 1, ...pool })
  apps.push(app)
  const closes: string[] = []
  app.pgPool.on('close', (reason) => closes.push(reason))
  // An identifier chosen per request (a dynamic ORDER BY column, an IN list of varying length):
  // a distinct statement text each time.
  app.get<{ Params: { n: string } }>(
    '/column/:n',
    async (request) => request.db`select 1 as ${request.db(`c${request.params.n}`)}`,
  )
  app.get('/same/:n', async (request) => request.db`select ${Number((request.params as { n: string }).n)}::int as n`)
  app.get('/session', async (request) => {
    const [row] = await request.db<{ prepared: number; pid: number }[]>`
      select (select count(*)::int from pg_catalog.pg_prepared_statements where not from_sql) as prepared,
             pg_catalog.pg_backend_pid() as pid`
    return row
  })
  const run = async (path: string, from: number, to: number) => {
    for (let n = from; n < to; n++) expect((await app.inject(`${path}/${n}`)).statusCode).toBe(200)
  }
  const session = async () => (await app.inject('/session')).json<{ prepared: number; pid: number }>()
  return { app, closes, run, session }
}

describe('pool.maxPreparedStatements', () => {
  test('distinct statement texts: a connection is retired once it holds the cap, the session never holds more', async () => {
    const { closes, run, session } = await appWith({ maxPreparedStatements: 50 })
    const first = await session()
    let most = 0
    for (let batch = 0; batch < 6; batch++) {
      await run('/column', batch * 20, batch * 20 + 20)
      most = Math.max(most, (await session()).prepared)
    }
    expect(most).toBeLessThanOrEqual(50)
    expect(closes.filter((reason) => reason === 'statements').length).toBeGreaterThanOrEqual(2)
    expect((await session()).pid).not.toBe(first.pid)
  })

  test('the same text run again prepares nothing more: the connection stays', async () => {
    const { closes, run, session } = await appWith({ maxPreparedStatements: 50 })
    const first = await session()
    await run('/same', 0, 200)
    const after = await session()
    expect(after.pid).toBe(first.pid)
    expect(closes).toEqual([])
  })

  test('0 disables it: the session keeps every statement', async () => {
    const { closes, run, session } = await appWith({ maxPreparedStatements: 0 })
    const first = await session()
    await run('/column', 0, 120)
    const after = await session()
    expect(after.pid).toBe(first.pid)
    expect(after.prepared).toBeGreaterThanOrEqual(120)
    expect(closes).toEqual([])
  })

  test('the default is 500; a bad value is refused at register with a coded error', async () => {
    const { app } = await appWith({})
    expect(app.pgPool.options.maxPreparedStatements).toBe(500)
    for (const bad of [-1, 1.5, '10', Number.NaN]) {
      await expect(coreApp(db.directUrl, { max: 1, maxPreparedStatements: bad as never })).rejects.toMatchObject({
        code: 'FST_PG_POOL_INVALID_OPTION',
        message: expect.stringContaining('pool.maxPreparedStatements'),
      })
    }
  })
})
