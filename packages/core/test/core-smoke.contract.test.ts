import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName, waitUntil } from '../../../test/support/database.js'
import { listen, startRequest } from '../../../test/support/http.js'
import pgPoolCore from '../src/index.js'

// A smoke of the core on whatever postgres.js resolves: the companion of the adapter's contract
// test, run with it by .ci/steps/postgres-versions.mjs on each postgres.js version. It imports the
// core's source, so the postgres.js under test is the one the core itself runs on.

let db: TestDatabase
let app: FastifyInstance | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table smoke_items (id int primary key, name text not null, tags text[] not null default '{}')`
  await db.sql`insert into smoke_items select g, 'item ' || g from generate_series(1, 10) g`
})
afterEach(async () => {
  await app?.close()
  app = undefined
})
afterAll(() => db.drop())

async function smokeApp(): Promise<{ app: FastifyInstance; name: string }> {
  const name = uniqueName('fpp-smoke')
  const instance = Fastify()
  await instance.register(pgPoolCore, { connection: db.directUrl, pool: { max: 2, applicationName: name } })
  app = instance
  return { app: instance, name }
}

describe('the core on this postgres.js', () => {
  test('queries, array types, cursors and route transactions', async () => {
    const { app } = await smokeApp()
    app.get<{ Params: { id: string } }>('/items/:id', async (request, reply) => {
      const [row] = await request.db<{ id: number; name: string }[]>`
        select id, name from smoke_items where id = ${Number(request.params.id)}`
      return row ?? reply.code(404).send({ missing: true })
    })
    app.get('/arrays', async (request) => {
      const [row] = await request.db`select ${[1, 2, 3]}::int[] as ints, ${['a', 'b,c']}::text[] as texts`
      return row
    })
    app.get('/cursor', async (request) => {
      let sum = 0
      for await (const rows of request.db<{ id: number }[]>`select id from smoke_items order by id`.cursor(3)) {
        for (const row of rows) sum += row.id
      }
      return { sum }
    })
    app.post<{ Params: { id: string }; Querystring: { fail?: string } }>(
      '/items/:id/tag',
      { config: { db: { transaction: true } } },
      async (request) => {
        const [row] = await request.db<{ tags: string[] }[]>`
          update smoke_items set tags = array_append(tags, ${'tagged'})
          where id = ${Number(request.params.id)} returning tags`
        if (request.query.fail) throw new Error('roll back')
        return row
      },
    )

    expect((await app.inject('/items/3')).json()).toEqual({ id: 3, name: 'item 3' })
    expect((await app.inject('/items/30')).statusCode).toBe(404)
    expect((await app.inject('/arrays')).json()).toEqual({ ints: [1, 2, 3], texts: ['a', 'b,c'] })
    expect((await app.inject('/cursor')).json()).toEqual({ sum: 55 })
    const tagged = await app.inject({ method: 'POST', url: '/items/4/tag' })
    expect(tagged.json()).toEqual({ tags: ['tagged'] })
    expect((await app.inject({ method: 'POST', url: '/items/5/tag?fail=1' })).statusCode).toBe(500)
    expect(await db.sql`select id, tags from smoke_items where id in (4, 5) order by id`).toEqual([
      { id: 4, tags: ['tagged'] },
      { id: 5, tags: [] },
    ])
    const [one] = await app.db<{ one: number }[]>`select 1 as one`
    expect(one).toEqual({ one: 1 })
    expect(app.pgPool.stats().leased).toBe(0)
  })

  test('a client that hangs up cancels its statement, and the connection serves the next request', async () => {
    const { app, name } = await smokeApp()
    app.get('/slow', async (request) => {
      await request.db`select pg_sleep(30) as smoke_slow`
      return 'never'
    })
    app.get('/pid', async (request) => {
      const [row] = await request.db<{ n: number }[]>`select 1 as n`
      return row
    })
    const base = await listen(app)
    const slow = startRequest(`${base}/slow`)
    await waitUntil(async () => (await db.running(name, '%smoke_slow%')) === 1, 'the statement to run')
    slow.abort()
    expect(await slow.done).toBe('aborted')
    await waitUntil(async () => (await db.running(name, '%smoke_slow%')) === 0, 'the statement to be cancelled')
    await waitUntil(() => app.pgPool.stats().leased === 0, 'the lease to come back')
    const next = await fetch(`${base}/pid`)
    expect(next.status).toBe(200)
    expect(await next.json()).toEqual({ n: 1 })
  })
})
