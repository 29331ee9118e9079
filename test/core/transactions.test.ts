import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor } from '../support/database.js'
import { listen, startRequest } from '../support/http.js'

let db: TestDatabase
let current: TestApp
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table parent (id int primary key)`
  await db.sql`create table child (
    id int primary key,
    parent_id int references parent (id) deferrable initially deferred)`
  await db.sql`create table note (body text not null)`
})
beforeEach(async () => {
  await db.sql`truncate note, child, parent`
  current = await coreApp(db.url, { max: 2 })
})
afterEach(() => current.app.close())
afterAll(() => db.drop())

const notes = async () => (await db.sql<{ body: string }[]>`select body from note order by body`).map((r) => r.body)
const tx = { config: { db: { transaction: true } } } as const

describe('route transactions', () => {
  test('success commits before the response is sent', async () => {
    current.app.post('/ok', tx, async (request) => {
      await request.db`insert into note values ('a')`
      await request.db`insert into note values ('b')`
      return { ok: true }
    })
    const res = await current.app.inject({ method: 'POST', url: '/ok' })
    expect(res.statusCode).toBe(200)
    expect(await notes()).toEqual(['a', 'b'])
  })

  test('a deferred constraint failing at COMMIT gives a 5xx and leaves no row', async () => {
    current.app.post('/orphan', tx, async (request) => {
      await request.db`insert into note values ('orphan')`
      await request.db`insert into child values (1, 999)`
      return { ok: true }
    })
    const res = await current.app.inject({ method: 'POST', url: '/orphan' })
    expect(res.statusCode).toBe(500)
    expect(res.json()).toMatchObject({ code: 'FST_PG_POOL_COMMIT_FAILED' })
    expect(res.body).not.toContain('"ok":true')
    expect(await notes()).toEqual([])
    expect(await db.sql`select * from child`).toHaveLength(0)
  })

  test('a handler that replies 409 without throwing is rolled back', async () => {
    current.app.post('/conflict', tx, async (request, reply) => {
      await request.db`insert into note values ('conflict')`
      return reply.code(409).send({ message: 'conflict' })
    })
    const res = await current.app.inject({ method: 'POST', url: '/conflict' })
    expect(res.statusCode).toBe(409)
    expect(await notes()).toEqual([])
  })

  test('a handler that throws is rolled back', async () => {
    current.app.post('/throws', tx, async (request) => {
      await request.db`insert into note values ('throws')`
      throw new Error('boom')
    })
    const res = await current.app.inject({ method: 'POST', url: '/throws' })
    expect(res.statusCode).toBe(500)
    expect(await notes()).toEqual([])
  })

  test('a swallowed query error makes COMMIT answer ROLLBACK: the client gets a 5xx', async () => {
    current.app.post('/swallow', tx, async (request) => {
      await request.db`insert into note values ('before')`
      await request.db`insert into note values (null)`.catch(() => {})
      return { ok: true }
    })
    const res = await current.app.inject({ method: 'POST', url: '/swallow' })
    expect(res.statusCode).toBe(500)
    expect(res.json()).toMatchObject({ code: 'FST_PG_POOL_COMMIT_FAILED' })
    expect(await notes()).toEqual([])
  })

  test('an onSend hook that throws after the commit does not commit twice or leak', async () => {
    let runs = 0
    current.app.addHook('onSend', async (_request, reply, payload) => {
      runs++
      if (reply.statusCode === 200) throw new Error('late failure')
      return payload
    })
    current.app.post('/late', tx, async (request) => {
      await request.db`insert into note values ('late')`
      return { ok: true }
    })
    const res = await current.app.inject({ method: 'POST', url: '/late' })
    expect(res.statusCode).toBe(500)
    expect(runs).toBe(2)
    expect(await notes()).toEqual(['late'])
    expect(current.app.pgPool.stats().leased).toBe(0)
  })

  test('isolation level and read-only mode reach the server', async () => {
    current.app.get(
      '/ro',
      { config: { db: { transaction: { isolation: 'serializable', readOnly: true } } } },
      async (request) => {
        const [row] = await request.db`select current_setting('transaction_isolation') as iso,
          current_setting('transaction_read_only') as ro`
        return row
      },
    )
    current.app.post(
      '/ro-write',
      { config: { db: { transaction: { readOnly: true } } } },
      async (request) => request.db`insert into note values ('x')`,
    )
    expect((await current.app.inject('/ro')).json()).toEqual({ iso: 'serializable', ro: 'on' })
    expect((await current.app.inject({ method: 'POST', url: '/ro-write' })).statusCode).toBe(500)
    expect(await notes()).toEqual([])
  })

  test('savepoints roll back alone inside a route transaction', async () => {
    current.app.post('/savepoint', tx, async (request) => {
      await request.db`insert into note values ('outer')`
      await request.db
        .savepoint(async (sp) => {
          await sp`insert into note values ('inner')`
          throw new Error('undo inner')
        })
        .catch(() => {})
      await request.db.savepoint(async (sp) => sp`insert into note values ('kept')`)
      await expect(request.db.begin(async () => {})).rejects.toMatchObject({
        code: 'FST_PG_POOL_NESTED_TRANSACTION',
      })
      return { ok: true }
    })
    expect((await current.app.inject({ method: 'POST', url: '/savepoint' })).statusCode).toBe(200)
    expect(await notes()).toEqual(['kept', 'outer'])
  })

  test('a client that hangs up mid-transaction is rolled back', async () => {
    current.app.get('/abandon', tx, async (request) => {
      await request.db`insert into note values ('abandoned')`
      await request.db`select pg_sleep(5)`
      return { ok: true }
    })
    const base = await listen(current.app)
    const client = startRequest(`${base}/abandon`)
    expect(await waitFor(async () => (await db.running(current.applicationName, '%pg_sleep(5)%')) === 1)).toBe(true)
    client.abort()
    expect(await client.done).toBe('aborted')
    expect(await waitFor(() => current.app.pgPool.stats().leased === 0, 3_000)).toBe(true)
    expect(await notes()).toEqual([])
    expect(await db.running(current.applicationName, '%pg_sleep%')).toBe(0)
  })

  test('postgres.js begin() on request.db commits and rolls back on the request connection', async () => {
    current.app.post('/begin', async (request) => {
      await request.db.begin(async (sql) => {
        await sql`insert into note values ('begin-ok')`
      })
      await request.db
        .begin(async (sql) => {
          await sql`insert into note values ('begin-undone')`
          throw new Error('undo')
        })
        .catch(() => {})
      return { ok: true }
    })
    expect((await current.app.inject({ method: 'POST', url: '/begin' })).statusCode).toBe(200)
    expect(await notes()).toEqual(['begin-ok'])
  })

  test('app.db.transaction commits on success and rolls back on throw', async () => {
    await current.app.db.transaction(async (sql) => {
      await sql`insert into note values ('job')`
    })
    await expect(
      current.app.db.transaction(
        async (sql) => {
          await sql`insert into note values ('job-undone')`
          throw new Error('undo')
        },
        { isolation: 'repeatable read' },
      ),
    ).rejects.toThrow('undo')
    expect(await notes()).toEqual(['job'])
    expect(current.app.pgPool.stats().leased).toBe(0)
  })

  test('an invalid transaction option fails when the route is declared', async () => {
    expect(() =>
      current.app.get(
        '/bad',
        { config: { db: { transaction: { isolation: 'chaos' as 'serializable' } } } },
        async () => 'x',
      ),
    ).toThrow(/FST_PG_POOL_INVALID_OPTION|isolation/)
  })
})
