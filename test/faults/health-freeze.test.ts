// Held attacks from hostile probing (round 8, observability; a fault test, not in the PgBouncer leg, whose proxy stands
// before the server itself): does /health tell the truth, within its own deadline, when the database freezes (a black hole after the pool is warm) and comes back? No ping socket leaks.
import pgPoolHealth from '@fastify-pg-pool/health'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { coreApp } from '../support/app.js'
import { createTestDatabase, sleep, type TestDatabase, waitFor, waitUntil } from '../support/database.js'
import { listen, startRequest } from '../support/http.js'
import { startTcpProxy } from '../support/tcp-proxy.js'

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db.drop())

async function probe(base: string, path: string) {
  const started = performance.now()
  const res = await fetch(base + path, { headers: { connection: 'close' } })
  const text = await res.text()
  return { status: res.status, text, ms: performance.now() - started }
}

describe('a database that freezes while the app is warm', () => {
  test('ready fails within pingTimeout on every probe, live stays fast, no ping socket is left behind, ready comes back', async () => {
    const dbPort = Number(new URL(db.url).port || 5432)
    const proxy = await startTcpProxy(dbPort)
    const { app, applicationName } = await coreApp(proxy.urlFor(db.url), {
      max: 2,
      acquireTimeout: 1_000,
      statementTimeout: 1_500,
      pgbouncer: false,
    })
    try {
      await app.register(pgPoolHealth, { pingTimeout: 400, cacheTime: 50 })
      app.get('/q', async (request) => (await request.db`select 1 as one`)[0])
      const base = await listen(app)
      expect((await probe(base, '/health/ready')).status).toBe(200)
      expect((await fetch(`${base}/q`)).status).toBe(200)
      await waitUntil(() => app.pgPool.stats().leased === 0, 'lease back')
      const poolOpen = app.pgPool.stats().open

      proxy.setMode('blackhole')
      await sleep(150) // past cacheTime: the last pass is no longer served
      // Traffic stuck on the frozen pool.
      const stuck = [startRequest(`${base}/q`), startRequest(`${base}/q`), startRequest(`${base}/q`)]
      const probes: { status: number; ms: number; text: string }[] = []
      for (let i = 0; i < 6; i++) {
        probes.push(await probe(base, '/health/ready'))
        await sleep(60)
      }
      // Concurrent probes share one ping and all answer by the deadline.
      const storm = await Promise.all(Array.from({ length: 30 }, () => probe(base, '/health')))
      const live = await probe(base, '/health/live')
      expect(live.status).toBe(200)
      expect(live.ms).toBeLessThan(3_000)
      for (const p of [...probes, ...storm]) {
        expect(p.status).toBe(503)
        // pingTimeout 400 ms: a generous bound, never the connect timeout or a hang.
        expect(p.ms).toBeLessThan(400 + 3_000)
        expect(p.text).not.toContain('127.0.0.1')
        expect(p.text).not.toContain(String(proxy.port))
        expect(p.text).not.toContain(String(dbPort))
        expect(p.text).not.toContain(applicationName)
      }
      await Promise.all(stuck.map((s) => s.done))

      proxy.setMode('pass')
      // Every ping's socket was closed when it timed out: only the pool's own stay open.
      expect(
        await waitFor(() => proxy.open <= poolOpen, 5_000),
        `proxy sockets open: ${proxy.open}, pool open ${app.pgPool.stats().open}`,
      ).toBe(true)
      expect(await waitFor(async () => (await probe(base, '/health/ready')).status === 200, 10_000)).toBe(true)
      expect(await waitFor(async () => (await fetch(`${base}/q`)).status === 200, 10_000)).toBe(true)
      await waitUntil(() => app.pgPool.stats().leased === 0, 'lease back', 5_000)
      // Server-side: no backend of this app's beyond the pool's max (pings end theirs).
      expect(
        await waitFor(async () => (await db.countConnections(applicationName)) <= 2, 5_000),
        `backends: ${await db.countConnections(applicationName)}`,
      ).toBe(true)
    } finally {
      await app.close()
      await proxy.close()
    }
  })

  test('a slow (answering) database is warn, not fail, and the probe answers before its deadline', async () => {
    const proxy = await startTcpProxy(Number(new URL(db.url).port || 5432))
    const { app } = await coreApp(proxy.urlFor(db.url), { max: 2, pgbouncer: false })
    try {
      await app.register(pgPoolHealth, { pingTimeout: 5_000, pingWarn: 200, cacheTime: 0 })
      const base = await listen(app)
      expect((await probe(base, '/health/ready')).status).toBe(200)
      proxy.setMode('delay', 120)
      const slow = await probe(base, '/health/ready')
      expect(slow.status).toBe(200)
      const body = JSON.parse(slow.text) as { status: string; output?: string }
      expect(body.status).toBe('warn')
      expect(body.output).toMatch(/^slow database: ping took [\d.]+ ms/)
      expect(slow.ms).toBeLessThan(5_000 + 1_500)
    } finally {
      proxy.setMode('pass')
      await app.close()
      await proxy.close()
    }
  })
})
