import { request as httpRequest } from 'node:http'
import { Writable } from 'node:stream'
import Fastify, { type FastifyInstance } from 'fastify'
import { pgPool } from 'fastify-pg-pool'
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { parseExposition } from '../metrics/exposition.js'
import { createTestDatabase, type TestDatabase, uniqueName, waitFor, waitUntil } from '../support/database.js'
import { listen, startRequest } from '../support/http.js'

// Hostile probing (held): the umbrella (health, metrics) under a mix of
// pipelined, exclusive and transaction routes with errors, hang-ups and a killed backend: every
// gauge back to 0, every release counted once, readiness up, the pool at strength.

let db: TestDatabase
let app: FastifyInstance | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table um_rows (id serial primary key, note text not null)`
})
afterEach(async () => {
  await app?.close()
  app = undefined
})
afterAll(() => db.drop())

function get(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { agent: false }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    })
    req.on('error', reject)
    req.end()
  })
}

const pipelined = { config: { db: { pipeline: true } } }

test('pipelined mix through the umbrella: gauges, releases and readiness settle', async () => {
  const applicationName = uniqueName()
  const logs: Record<string, unknown>[] = []
  const stream = new Writable({
    write(chunk, _e, cb) {
      for (const line of String(chunk).split('\n')) if (line) logs.push(JSON.parse(line))
      cb()
    },
  })
  const a = Fastify({ logger: { level: 'info', stream } })
  await a.register(pgPool, {
    connection: db.url,
    pool: { max: 2, pipelineDepth: 4, acquireTimeout: 5_000, applicationName, pgbouncer: db.viaBouncer },
    // Admission control's refusals depend on the machine's speed: off, so that every status is known.
    backpressure: false,
  })
  app = a
  let releases = 0
  a.pgPool.on('release', () => {
    releases++
  })
  a.get('/p/ok', pipelined, async (request) => (await request.db`select pg_sleep(0.05), 1 as one`)[0])
  a.get('/p/bad', pipelined, async (request) => request.db`select 1/0`)
  a.get('/p/slow', pipelined, async (request) => request.db`select pg_sleep(0.6)`)
  a.get('/p/victim', pipelined, async (request) => request.db`select pg_sleep(3)`)
  a.post('/tx', { config: { db: { transaction: true } } }, async (request) => {
    await request.db`insert into um_rows (note) values ('tx')`
    return { ok: true }
  })
  a.get('/x', async (request) => (await request.db`select 1 as one`)[0])
  const base = await listen(a)

  // Round 1: a killed backend under sharers.
  const victims = [get(`${base}/p/victim`), get(`${base}/p/victim`)]
  await waitUntil(() => a.pgPool.stats().pipelined >= 2, 'victims share', 5_000)
  await waitUntil(async () => (await db.running(applicationName, '%pg_sleep(3)%')) >= 1, 'victim runs', 5_000)
  await db.terminate(applicationName)
  const victimStatuses = await Promise.all(victims)
  expect(victimStatuses.every((s) => s === 503)).toBe(true)

  // Round 2: errors, hang-ups, exclusive and transaction requests among pipelined ones.
  const gone = Array.from({ length: 3 }, () => startRequest(`${base}/p/slow`))
  await waitUntil(() => a.pgPool.stats().pipelined >= 1, 'slow sharers', 5_000)
  const statuses = Promise.all([
    ...Array.from({ length: 10 }, () => get(`${base}/p/ok`)),
    ...Array.from({ length: 4 }, () => get(`${base}/p/bad`)),
    ...Array.from({ length: 3 }, () => get(`${base}/x`)),
    ...Array.from({ length: 3 }, () =>
      fetch(`${base}/tx`, { method: 'POST', headers: { connection: 'close' } }).then((r) => r.status),
    ),
  ])
  for (const g of gone) g.abort()
  const all = await statuses
  expect(all.slice(0, 10).every((s) => s === 200)).toBe(true)
  expect(all.slice(10, 14).every((s) => s === 400)).toBe(true)
  expect(all.slice(14).every((s) => s === 200)).toBe(true)

  expect(await waitFor(() => a.pgPool.stats().leased === 0, 10_000)).toBe(true)
  const scrape = parseExposition(await (await fetch(`${base}/metrics`, { headers: { connection: 'close' } })).text())
  expect(scrape.value('pg_pool_pipelined_requests')).toBe(0)
  expect(scrape.value('pg_pool_shared_connections')).toBe(0)
  expect(scrape.value('pg_pool_waiters')).toBe(0)
  expect(scrape.value('pg_pool_connections', { state: 'leased' })).toBe(0)
  expect(a.pgPool.stats()).toMatchObject({ sharedQueries: 0, waiting: 0 })
  // 2 victims + 3 hung-up + 10 + 4 + 3 + 3: every lease released once.
  expect(releases).toBe(25)
  expect(await get(`${base}/health/ready`)).toBe(200)
  expect((await db.sql`select count(*)::int as n from um_rows`)[0]?.n).toBe(3)
  expect(await get(`${base}/p/ok`)).toBe(200)
  expect(await db.countConnections(applicationName)).toBeLessThanOrEqual(2)
})
