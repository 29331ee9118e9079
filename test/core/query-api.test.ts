import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor } from '../support/database.js'

type Db = TestApp['app']['db']
let db: TestDatabase
let current: TestApp
const scenarios = new Map<string, (sql: Db) => Promise<unknown>>()
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table person (id serial primary key, name text, tags text[], data jsonb)`
  current = await coreApp(db.url, { max: 2 })
  current.app.get<{ Params: { name: string } }>('/run/:name', async (request) => {
    const scenario = scenarios.get(request.params.name) as (sql: Db) => Promise<unknown>
    return { value: await scenario(request.db as unknown as Db) }
  })
})
afterAll(async () => {
  await current.app.close()
  await db.drop()
})

/** Runs `fn` inside a request and returns what it returned (as JSON). */
async function inRequest<T>(fn: (sql: Db) => Promise<T>): Promise<T> {
  const name = Math.random().toString(36).slice(2)
  scenarios.set(name, fn)
  const res = await current.app.inject(`/run/${name}`)
  expect(res.statusCode, res.body).toBe(200)
  return res.json().value
}

describe('request.db speaks postgres.js', () => {
  test('helpers: identifiers, insert objects, value lists, json, arrays', async () => {
    const rows = await inRequest(async (sql) => {
      await sql`insert into ${sql('person')} ${sql([
        { name: 'ada', tags: sql.array(['math']), data: sql.json({ born: 1815 }) },
        { name: 'alan', tags: sql.array(['cs', 'math']), data: sql.json({ born: 1912 }) },
      ])}`
      return sql`select name, tags, data from person where name in ${sql(['ada', 'alan'])} order by name`
    })
    expect(rows).toEqual([
      { name: 'ada', tags: ['math'], data: { born: 1815 } },
      { name: 'alan', tags: ['cs', 'math'], data: { born: 1912 } },
    ])
  })

  test('unsafe with and without parameters', async () => {
    expect(
      await inRequest(async (sql) => [
        ...(await sql.unsafe('select 1 as a')),
        ...(await sql.unsafe('select $1::int as b', [2])),
      ]),
    ).toEqual([{ a: 1 }, { b: 2 }])
  })

  test('values(), raw result metadata, cursor and forEach', async () => {
    const result = await inRequest(async (sql) => {
      const values = await sql`select 1 as a, 2 as b`.values()
      const seen: number[] = []
      for await (const batch of sql`select generate_series(1, 5) as n`.cursor(2)) {
        seen.push(...batch.map((r) => r.n as number))
      }
      const each: number[] = []
      await sql`select generate_series(1, 3) as n`.forEach((row) => {
        each.push(row.n as number)
      })
      const meta = await sql`select 1 as x`
      return { values, seen, each, count: meta.count, command: meta.command }
    })
    expect(result).toEqual({ values: [[1, 2]], seen: [1, 2, 3, 4, 5], each: [1, 2, 3], count: 1, command: 'SELECT' })
    expect(current.app.pgPool.stats().leased).toBe(0)
  })

  test('a cursor left early still returns the lease', async () => {
    const first = await inRequest(async (sql) => {
      for await (const [row] of sql`select generate_series(1, 100) as n`.cursor(1)) return row?.n
      return null
    })
    expect(first).toBe(1)
    expect(await waitFor(() => current.app.pgPool.stats().leased === 0, 2_000)).toBe(true)
  })

  test('file() and notify()', async () => {
    const path = fileURLToPath(new URL('./fixtures/answer.sql', import.meta.url))
    const result = await inRequest(async (sql) => {
      const [row] = await sql.file(path, [2])
      const notified = await sql.notify('fpp_channel', 'hello')
      return { answer: row?.answer, notified: notified.command }
    })
    expect(result).toEqual({ answer: 42, notified: 'SELECT' })
  })

  test('file() without parameters runs a file of several statements, as postgres.js does (simple protocol)', async () => {
    const path = fileURLToPath(new URL('./fixtures/two-inserts.sql', import.meta.url))
    await inRequest(async (sql) => {
      await sql.file(path)
      return null
    })
    const rows = await db.sql`select name from person where name like 'from-file-%' order by name`
    expect(rows.map((r) => r.name)).toEqual(['from-file-1', 'from-file-2'])
  })

  test('query errors reach the handler as postgres.js errors and leave the lease healthy', async () => {
    const outcome = await inRequest(async (sql) => {
      const error = await sql`select * from missing_table`.catch((e: { code: string }) => e.code)
      const [row] = await sql`select 1 as still`
      return { error, row }
    })
    expect(outcome).toEqual({ error: '42P01', row: { still: 1 } })
    expect(current.app.pgPool.stats()).toMatchObject({ leased: 0 })
  })

  test('concurrent queries of one request share its single connection', async () => {
    const pids = await inRequest(async (sql) => {
      const rows = await Promise.all(
        Array.from({ length: 5 }, () => sql<{ pid: number }[]>`select pg_backend_pid() as pid`),
      )
      return [...new Set(rows.map(([r]) => r?.pid))]
    })
    expect(pids).toHaveLength(1)
  })

  test('app.db runs each query on a lease and returns it', async () => {
    const { app } = current
    const [a, b] = await Promise.all([app.db`select pg_sleep(0.1), 1 as a`, app.db`select pg_sleep(0.1), 2 as b`])
    expect([a[0]?.a, b[0]?.b]).toEqual([1, 2])
    expect(app.pgPool.stats()).toMatchObject({ leased: 0, open: 2 })
    expect(await app.db.unsafe('select 3 as c')).toEqual([{ c: 3 }])
    await expect(app.db`select * from nope`).rejects.toMatchObject({ code: '42P01' })
    expect(app.pgPool.stats().leased).toBe(0)
  })
})
