import { spawnSync } from 'node:child_process'
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import type { FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { parseExposition } from '../metrics/exposition.js'
import { coreApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor } from '../support/database.js'

// Hostile probing (round nine, second round): retirement by maxPreparedStatements under load,
// transactions, onConnect, storms, PgBouncer and the reset modes. Attacks that held.

let db: TestDatabase
const apps: FastifyInstance[] = []
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table ledger (n int primary key)`
})
afterEach(async () => {
  await Promise.all(apps.splice(0).map((app) => app.close()))
})
afterAll(() => db.drop())

const PROBE_SQL = `select pg_catalog.pg_backend_pid() as pid, pg_catalog.current_setting('work_mem') as work_mem,
  (select count(*)::int from pg_catalog.pg_prepared_statements where not from_sql) as n`

describe('retirement for statements: correctness (held)', () => {
  test('a route transaction running past the cap commits whole; the connection goes only afterwards', async () => {
    const { app } = await coreApp(db.directUrl, { max: 1, maxPreparedStatements: 3 })
    apps.push(app)
    const closes: string[] = []
    app.pgPool.on('close', (reason) => closes.push(reason))
    app.post<{ Params: { base: string } }>(
      '/write/:base',
      { config: { db: { transaction: true } } },
      async (request) => {
        const base = Number(request.params.base)
        const pids = new Set<number>()
        for (let i = 0; i < 8; i++) {
          const [row] = await request.db<{ pid: number }[]>`
            insert into ledger values (${base + i}) returning pg_backend_pid() as ${request.db(`pid${i}`)}`
          pids.add(Object.values(row as object)[0] as number)
        }
        return { pids: pids.size }
      },
    )
    const res = await app.inject({ method: 'POST', url: '/write/1000' })
    expect(res.json()).toEqual({ pids: 1 })
    expect((await db.sql`select count(*)::int as n from ledger where n between 1000 and 1007`)[0]?.n).toBe(8)
    expect(closes).toEqual(['statements'])
  })

  test('max 1, 30 requests queued at once, distinct texts, cap 2: every one answered 200, no backend left over', async () => {
    const { app, applicationName } = await coreApp(db.directUrl, { max: 1, maxPreparedStatements: 2, maxWaiting: 40 })
    apps.push(app)
    const closes: string[] = []
    app.pgPool.on('close', (reason) => closes.push(reason))
    app.get<{ Params: { n: string } }>('/q/:n', async (request) => {
      const [row] = await request.db`select ${Number(request.params.n)}::int as ${request.db(`c${request.params.n}`)}`
      return row
    })
    const replies = await Promise.all(Array.from({ length: 30 }, (_, n) => app.inject(`/q/${n}`)))
    const statuses = replies.map((r) => r.statusCode)
    expect(statuses.every((s) => s === 200)).toBe(true)
    expect(closes.filter((r) => r === 'statements').length).toBeGreaterThanOrEqual(14)
    expect(await waitFor(async () => (await db.countConnections(applicationName)) <= 1)).toBe(true)
  })

  test('onConnect state is on every replacement connection', async () => {
    const { app } = await coreApp(
      db.directUrl,
      { max: 1, maxPreparedStatements: 2 },
      {},
      {
        onConnect: async (sql) => {
          await sql`set work_mem = '7MB'`
          await sql`select 1 as onconnect_statement_a`
          await sql`select 1 as onconnect_statement_b`
        },
      },
    )
    apps.push(app)
    app.get<{ Params: { n: string } }>('/q/:n', async (request) => {
      await request.db`select 1 as ${request.db(`c${request.params.n}`)}`
      return (await request.db.unsafe(PROBE_SQL))[0]
    })
    const rows: { pid: number; work_mem: string; n: number }[] = []
    for (let n = 0; n < 12; n++) rows.push((await app.inject(`/q/${n}`)).json())
    expect(rows.every((row) => row.work_mem === '7MB')).toBe(true)
    expect(new Set(rows.map((r) => r.pid)).size).toBeGreaterThanOrEqual(5)
  })

  test('a retirement storm (cap 1, max 3, 60 requests 10 at a time): all 200, never more than max backends, metrics agree, promtool accepts', async () => {
    const { app, applicationName } = await coreApp(db.directUrl, { max: 3, maxPreparedStatements: 1 })
    apps.push(app)
    await app.register(pgPoolMetrics)
    const closes: string[] = []
    app.pgPool.on('close', (reason) => closes.push(reason))
    app.get<{ Params: { n: string } }>('/q/:n', async (request) => {
      const [row] = await request.db`select 1 as ${request.db(`c${request.params.n}`)}`
      return row
    })
    let peak = 0
    let sampling = true
    const sampler = (async () => {
      while (sampling) {
        peak = Math.max(peak, await db.countConnections(applicationName))
        await new Promise((resolve) => setTimeout(resolve, 5))
      }
    })()
    const statuses: number[] = []
    for (let batch = 0; batch < 6; batch++) {
      statuses.push(
        ...(await Promise.all(
          Array.from({ length: 10 }, (_, i) => app.inject(`/q/${batch * 10 + i}`).then((r) => r.statusCode)),
        )),
      )
    }
    sampling = false
    await sampler
    expect(statuses.filter((s) => s !== 200)).toEqual([])
    // the closing backend lingers up to its 1 s grace: max + those still closing is bounded by what closed
    expect(await waitFor(async () => (await db.countConnections(applicationName)) <= 3)).toBe(true)
    const text = (await app.inject('/metrics')).body
    const m = parseExposition(text)
    expect(m.value('pg_pool_connections_closed_total', { reason: 'statements' })).toBe(
      closes.filter((r) => r === 'statements').length,
    )
    expect(closes.filter((r) => r === 'statements').length).toBeGreaterThanOrEqual(55)
    const promtool = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' })
    if (promtool.error === undefined) expect(`${promtool.stdout}${promtool.stderr}`.trim(), text).toBe('')
    expect(peak).toBeGreaterThan(0)
    expect(peak).toBeLessThanOrEqual(3)
  })

  test('pgbouncer: true prepares no named statement and retires nothing for statements', async () => {
    const { app } = await coreApp(db.directUrl, { max: 1, maxPreparedStatements: 2, pgbouncer: true })
    apps.push(app)
    const closes: string[] = []
    app.pgPool.on('close', (reason) => closes.push(reason))
    app.get<{ Params: { n: string } }>('/q/:n', async (request) => {
      await request.db`select ${1}::int as ${request.db(`c${request.params.n}`)}`
      return (await request.db.unsafe(PROBE_SQL))[0]
    })
    const rows: { pid: number; n: number }[] = []
    for (let n = 0; n < 10; n++) rows.push((await app.inject(`/q/${n}`)).json())
    expect(rows.every((r) => r.n === 0 && r.pid === rows[0]?.pid)).toBe(true)
    expect(closes).toEqual([])
  })

  test.each(['rollback', 'never'] as const)('sessionReset %s: retired all the same', async (sessionReset) => {
    const { app } = await coreApp(db.directUrl, { max: 1, maxPreparedStatements: 3, sessionReset })
    apps.push(app)
    const closes: string[] = []
    app.pgPool.on('close', (reason) => closes.push(reason))
    app.get<{ Params: { n: string } }>(
      '/q/:n',
      async (request) => request.db`select 1 as ${request.db(`c${request.params.n}`)}`,
    )
    for (let n = 0; n < 9; n++) expect((await app.inject(`/q/${n}`)).statusCode).toBe(200)
    expect(closes.filter((r) => r === 'statements').length).toBeGreaterThanOrEqual(2)
  })
})
