// Held attacks from hostile probing (round 8, observability): do /metrics' counters, gauges and histograms tell the exact truth
// after a mixed workload through the umbrella? Every request's fate is known to the test.
import { request as httpRequest } from 'node:http'
import Fastify, { type FastifyInstance } from 'fastify'
import { pgPool } from 'fastify-pg-pool'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, sleep, type TestDatabase, uniqueName, waitFor, waitUntil } from '../support/database.js'
import { listen, startPost, startRequest } from '../support/http.js'
import { parseExposition } from './exposition.js'

let db: TestDatabase
let app: FastifyInstance | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table obs_rows (id serial primary key, note text not null)`
})
afterEach(async () => {
  await app?.close()
  app = undefined
})
afterAll(() => db.drop())

function call(url: string, method = 'GET'): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { agent: false, method }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    })
    req.on('error', reject)
    req.end()
  })
}

const tx = { config: { db: { transaction: true } } } as const
const pipelined = { config: { db: { pipeline: true } } } as const

async function scrape(base: string) {
  const res = await fetch(`${base}/metrics`, { headers: { connection: 'close' } })
  expect(res.status).toBe(200)
  return parseExposition(await res.text())
}

describe('a mixed hostile workload, then every metric compared to the truth', () => {
  test('counters per outcome, histogram counts, gauges at rest', async () => {
    const applicationName = uniqueName('obs')
    const a = Fastify({ logger: false })
    app = a
    await a.register(pgPool, {
      connection: db.url,
      pool: { max: 2, acquireTimeout: 500, applicationName, pgbouncer: db.viaBouncer, closeTimeout: 1_000 },
      backpressure: false,
      health: false,
    })
    a.get('/ok', async (request) => (await request.db`select 1 as one`)[0])
    a.get('/bad', async (request) => request.db`select 1/0`)
    a.get('/hold', async (request) => {
      await request.db`select pg_sleep(1.5)`
      return { held: true }
    })
    a.post('/tx/commit', tx, async (request) => {
      await request.db`insert into obs_rows (note) values ('commit')`
      return { ok: true }
    })
    a.post('/tx/409', tx, async (request, reply) => {
      await request.db`insert into obs_rows (note) values ('409')`
      return reply.code(409).send({ ok: false })
    })
    a.post('/tx/throw', tx, async (request) => {
      await request.db`insert into obs_rows (note) values ('throw')`
      await request.db`select 1/0`
      return { ok: true }
    })
    a.post('/tx/savepoint', tx, async (request) => {
      await request.db`insert into obs_rows (note) values ('sp-outer')`
      await request.db
        .savepoint(async (sp) => {
          await sp`insert into obs_rows (note) values ('sp-inner')`
          throw new Error('inner')
        })
        .catch(() => {})
      return { ok: true }
    })
    a.post('/tx/slow', tx, async (request) => {
      await request.db`insert into obs_rows (note) values ('slow')`
      await request.db`select pg_sleep(5)`
      return { ok: true }
    })
    a.post('/begin', async (request) => {
      await request.db.begin(async (sql) => {
        await sql`insert into obs_rows (note) values ('begin')`
        await sql.savepoint(async (sp) => {
          await sp`insert into obs_rows (note) values ('begin-sp')`
        })
      })
      return { ok: true }
    })
    a.get('/ht', { handlerTimeout: 400 }, async (request) => {
      await request.db`select pg_sleep(5)`
      return { never: true }
    })
    a.get('/p/ok', pipelined, async (request) => (await request.db`select pg_sleep(0.05), 1 as one`)[0])
    a.get('/p/bad', pipelined, async (request) => request.db`select 1/0`)
    a.get('/cursor', async (request) => {
      let n = 0
      for await (const rows of request.db`select g from generate_series(1, 100) g`.cursor(10)) n += rows.length
      return { n }
    })
    a.get('/copy', async (request) =>
      request.db.unsafe('copy (select i from generate_series(1, 50) i) to stdout').readable(),
    )
    const base = await listen(a)

    for (let i = 0; i < 5; i++) expect(await call(`${base}/ok`)).toBe(200)
    for (let i = 0; i < 3; i++) expect(await call(`${base}/bad`)).toBe(400)
    for (let i = 0; i < 3; i++) expect(await call(`${base}/tx/commit`, 'POST')).toBe(200)
    for (let i = 0; i < 2; i++) expect(await call(`${base}/tx/409`, 'POST')).toBe(409)
    for (let i = 0; i < 2; i++) expect(await call(`${base}/tx/throw`, 'POST')).toBe(400)
    expect(await call(`${base}/tx/savepoint`, 'POST')).toBe(200)
    for (let i = 0; i < 2; i++) expect(await call(`${base}/begin`, 'POST')).toBe(200)
    expect(await call(`${base}/cursor`)).toBe(200)
    expect(await call(`${base}/copy`)).toBe(200)
    const pipelinedStatuses = await Promise.all([
      ...Array.from({ length: 4 }, () => call(`${base}/p/ok`)),
      ...Array.from({ length: 2 }, () => call(`${base}/p/bad`)),
    ])
    expect(pipelinedStatuses).toEqual([200, 200, 200, 200, 400, 400])

    // A client hangs up in the middle of a route transaction: rolled back.
    const slow = startPost(`${base}/tx/slow`, {})
    await waitUntil(async () => (await db.running(applicationName, '%pg_sleep(5)%')) === 1, 'slow tx runs', 5_000)
    slow.abort()
    expect(await slow.done).toBe('aborted')
    await waitUntil(() => a.pgPool.stats().leased === 0, 'slow tx released', 5_000)

    // handlerTimeout fires during a statement.
    expect(await call(`${base}/ht`)).toBe(503)
    await waitUntil(() => a.pgPool.stats().leased === 0, 'ht released', 5_000)

    // Two acquire timeouts behind two holders.
    let holders = [startRequest(`${base}/hold`), startRequest(`${base}/hold`)]
    await waitUntil(() => a.pgPool.stats().leased === 2, 'two holders')
    expect(await Promise.all([call(`${base}/ok`), call(`${base}/ok`)])).toEqual([503, 503])
    expect(await Promise.all(holders.map((h) => h.done))).toEqual([200, 200])

    // Two waiters hang up while waiting.
    holders = [startRequest(`${base}/hold`), startRequest(`${base}/hold`)]
    await waitUntil(() => a.pgPool.stats().leased === 2, 'two holders again')
    const waiters = [startRequest(`${base}/ok`), startRequest(`${base}/ok`)]
    await waitUntil(() => a.pgPool.stats().waiting === 2, 'two waiters')
    for (const w of waiters) w.abort()
    expect(await Promise.all(waiters.map((w) => w.done))).toEqual(['aborted', 'aborted'])
    expect(await Promise.all(holders.map((h) => h.done))).toEqual([200, 200])

    expect(await waitFor(() => a.pgPool.stats().leased === 0 && a.pgPool.stats().waiting === 0, 5_000)).toBe(true)
    await sleep(100)
    const m = await scrape(base)

    // Transactions: route commits (3 + savepoint route 1) + begin() 2; rollbacks 409 x2, throw x2, hang-up 1, ht 0.
    const t = (outcome: string) => m.value('pg_pool_transactions_total', { outcome })
    expect({
      commit: t('commit'),
      rollback: t('rollback'),
      commit_failed: t('commit_failed'),
      commit_unknown: t('commit_unknown'),
    }).toEqual({ commit: 3 + 1 + 2, rollback: 2 + 2 + 1, commit_failed: 0, commit_unknown: 0 })

    const acq = (result: string) => m.value('pg_pool_acquires_total', { result })
    expect({
      timeout: acq('timeout'),
      aborted: acq('aborted'),
      rejected: acq('rejected'),
      error: acq('error'),
    }).toEqual({
      timeout: 2,
      aborted: 2,
      rejected: 0,
      error: 0,
    })
    const lease = (route: string) => m.value('pg_pool_lease_seconds_count', { route })
    const leases = {
      '/ok': lease('/ok'),
      '/bad': lease('/bad'),
      '/tx/commit': lease('/tx/commit'),
      '/tx/409': lease('/tx/409'),
      '/tx/throw': lease('/tx/throw'),
      '/tx/savepoint': lease('/tx/savepoint'),
      '/tx/slow': lease('/tx/slow'),
      '/begin': lease('/begin'),
      '/ht': lease('/ht'),
      '/p/ok': lease('/p/ok'),
      '/p/bad': lease('/p/bad'),
      '/cursor': lease('/cursor'),
      '/copy': lease('/copy'),
      '/hold': lease('/hold'),
    }
    expect(leases).toEqual({
      '/ok': 5,
      '/bad': 3,
      '/tx/commit': 3,
      '/tx/409': 2,
      '/tx/throw': 2,
      '/tx/savepoint': 1,
      '/tx/slow': 1,
      '/begin': 2,
      '/ht': 1,
      '/p/ok': 4,
      '/p/bad': 2,
      '/cursor': 1,
      '/copy': 1,
      '/hold': 4,
    })
    const totalLeases = Object.values(leases).reduce((s, n) => s + n, 0)
    expect(acq('ok')).toBe(totalLeases)
    expect(m.value('pg_pool_acquire_seconds_count')).toBe(totalLeases)

    const http = (route: string, status_class: string, method = 'GET') =>
      m.find('pg_pool_http_request_duration_seconds_count', { method, route, status_class })[0]?.value ?? 0
    expect({
      ok2: http('/ok', '2xx'),
      ok5: http('/ok', '5xx'),
      okAborted: http('/ok', 'aborted'),
      bad4: http('/bad', '4xx'),
      slowAborted: http('/tx/slow', 'aborted', 'POST'),
      slow5: http('/tx/slow', '5xx', 'POST'),
      ht5: http('/ht', '5xx'),
      htAborted: http('/ht', 'aborted'),
      p2: http('/p/ok', '2xx'),
      p4: http('/p/bad', '4xx'),
      hold2: http('/hold', '2xx'),
      tx409: http('/tx/409', '4xx', 'POST'),
    }).toEqual({
      ok2: 5,
      ok5: 2,
      okAborted: 2,
      bad4: 3,
      slowAborted: 1,
      slow5: 0,
      ht5: 1,
      htAborted: 0,
      p2: 4,
      p4: 2,
      hold2: 4,
      tx409: 2,
    })

    // Gauges at rest.
    expect(m.value('pg_pool_waiters')).toBe(0)
    expect(m.value('pg_pool_oldest_wait_seconds')).toBe(0)
    expect(m.value('pg_pool_connections', { state: 'leased' })).toBe(0)
    expect(m.value('pg_pool_connections', { state: 'connecting' })).toBe(0)
    expect(m.value('pg_pool_shared_connections')).toBe(0)
    expect(m.value('pg_pool_pipelined_requests')).toBe(0)
    const closed = m.find('pg_pool_connections_closed_total').reduce((s, x) => s + x.value, 0)
    const opened = m.value('pg_pool_connections_opened_total')
    expect(await waitFor(async () => opened - closed === (await db.countConnections(applicationName)), 3_000)).toBe(
      true,
    )
    expect(opened - closed).toBe(m.value('pg_pool_connections', { state: 'idle' }))
    // Nothing negative anywhere.
    expect(m.samples.filter((s) => s.value < 0)).toEqual([])
    // Rows actually committed: commit x3, savepoint outer 1, begin x2 x2.
    expect(
      (await db.sql`select note, count(*)::int as n from obs_rows group by note order by note`).map((r) => [
        r.note,
        r.n,
      ]),
    ).toEqual([
      ['begin', 2],
      ['begin-sp', 2],
      ['commit', 3],
      ['sp-outer', 1],
    ])
  })
})
