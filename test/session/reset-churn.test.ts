import type { FastifyInstance, FastifyRequest } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor } from '../support/database.js'

// Hostile probing of the session reset: requests that each leave something behind, many at once on
// one or two connections, so that the reset fails and connections are retired over and over. Every
// request is served, every session clean, never more backends than max, stats consistent.

let db: TestDatabase
let current: TestApp | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table ledger (id serial primary key, note text)`
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(async () => {
  await db.drop()
})

async function state(request: FastifyRequest) {
  const [row] = await request.db<Record<string, unknown>[]>`
    select pg_backend_pid() as pid, current_user as "user",
      current_setting('search_path') as "searchPath",
      current_setting('statement_timeout') as "statementTimeout",
      (select count(*)::int from pg_prepared_statements where from_sql) as "fromSql",
      (select count(*)::int from pg_prepared_statements where from_sql and left(name, 22) = 'fastify_pg_pool_reset_') as "check",
      (select count(*)::int from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()) as locks,
      (select count(*)::int from pg_listening_channels()) as listening,
      (select count(*)::int from pg_class where relnamespace = pg_my_temp_schema()) as temps,
      coalesce(current_setting('app.leak', true), '') as leak`
  return row as Record<string, unknown>
}

const cleanState = {
  user: 'postgres',
  searchPath: '"$user", public',
  fromSql: 1,
  check: 1,
  locks: 0,
  listening: 0,
  temps: 0,
  leak: '',
}

const dirty = [
  'deallocate all',
  'discard all',
  'prepare p1 as select 1',
  "set app.leak = 'x'",
  'select pg_advisory_lock(77)',
  'listen chan',
  'create temp table tt (x int)',
  'discard plans',
  'set search_path = pg_catalog',
  'set role to postgres',
]

function routes(app: FastifyInstance) {
  app.post('/dirty/:n', async (request) => {
    const n = Number((request.params as { n: string }).n)
    await request.db.unsafe(dirty[n % dirty.length] as string)
    await request.db.unsafe(dirty[(n * 7 + 3) % dirty.length] as string).catch(() => {})
    return { ok: true }
  })
  app.post('/dirty-tx/:n', { config: { db: { transaction: true } } }, async (request) => {
    const n = Number((request.params as { n: string }).n)
    const stmt = dirty[n % dirty.length] as string
    await request.db`insert into ledger (note) values (${`tx-${n}`})`
    if (stmt === 'discard all') await request.db.unsafe('deallocate all')
    else await request.db.unsafe(stmt)
    return { ok: true }
  })
  app.get('/state', async (request) => state(request))
}

async function backends(name: string) {
  return db.countConnections(name)
}

for (const max of [1, 2]) {
  describe(`churn with max ${max}`, () => {
    test('every request is served, every state clean, the pool back within max', async () => {
      current = await coreApp(db.url, { max })
      const { app, applicationName } = current
      routes(app)
      await app.ready()
      const results: { url: string; status: number; body: string }[] = []
      const jobs: Promise<void>[] = []
      for (let i = 0; i < 120; i++) {
        const url = i % 3 === 0 ? `/dirty/${i}` : i % 3 === 1 ? `/dirty-tx/${i}` : '/state'
        const method = url === '/state' ? 'GET' : 'POST'
        jobs.push(
          app.inject({ method, url }).then((r) => {
            results.push({ url, status: r.statusCode, body: r.body })
          }),
        )
        if (i % 10 === 9) await Promise.all(jobs.splice(0))
      }
      await Promise.all(jobs)
      const failed = results.filter((r) => r.status !== 200)
      expect(failed, JSON.stringify(failed.slice(0, 5))).toEqual([])
      for (const r of results.filter((r) => r.url === '/state')) {
        expect(JSON.parse(r.body)).toMatchObject(cleanState)
      }
      // A retired connection's backend takes a moment to exit after its socket is closed, so the
      // count is read once the pool is at rest (not sampled while it churns: that would time the machine).
      expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
      expect(app.pgPool.stats().open).toBeLessThanOrEqual(max)
      expect(await waitFor(async () => (await backends(applicationName)) <= max)).toBe(true)
      const rows = await db.sql`select count(*)::int as n from ledger where note like 'tx-%'`
      expect(rows[0]?.n).toBe(40)
      await db.sql`truncate ledger`
      // After everything, still serves.
      const after = await app.inject('/state')
      expect(after.statusCode).toBe(200)
      expect(after.json()).toMatchObject(cleanState)
    })
  })
}
