import Fastify, { type FastifyInstance } from 'fastify'
import { pgPool } from 'fastify-pg-pool'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName, waitFor } from '../../../support/database.js'
import { listen } from '../../../support/http.js'
import { startTcpProxy } from '../../../support/tcp-proxy.js'

/**
 * A readiness probe in flight when app.close() begins keeps awaiting its ping, up to
 * `pingTimeout`, although its answer is already known ('shutting down', which it sends in the
 * end): Fastify waits for that in-flight request, so app.close() outlasts `closeTimeout` by up to
 * `pingTimeout` when the database stops answering new connections (the case a ping exists for).
 * The README sizes terminationGracePeriodSeconds as preStop + closeTimeout: the pod is killed.
 */

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db.drop())

test('app.close() does not wait for the ping of a probe in flight past closeTimeout', async () => {
  const proxy = await startTcpProxy(Number(new URL(db.url).port || 5432))
  const app: FastifyInstance = Fastify()
  const closeTimeout = 1_000
  const pingTimeout = 12_000
  try {
    await app.register(pgPool, {
      connection: proxy.urlFor(db.url),
      pool: { max: 2, applicationName: uniqueName(), closeTimeout },
      health: { pingTimeout, cacheTime: 0 },
    })
    app.get('/db', async (request) => request.db`select 1 as one`)
    const base = await listen(app)
    expect((await fetch(`${base}/db`)).status).toBe(200)
    // From here on the server takes no new connection (a frozen server, a saturated listen queue).
    const open = proxy.accepted
    proxy.connectDelay = (i) => (i >= open ? 13_000 : 0)
    const probe = fetch(`${base}/health/ready`).then(async (res) => ({
      status: res.status,
      body: (await res.json()) as { status: string; output?: string },
    }))
    expect(await waitFor(() => proxy.accepted > open)).toBe(true)

    const started = performance.now()
    await app.close()
    const took = performance.now() - started
    const answer = await probe
    expect(answer.status).toBe(503)
    expect(answer.body.output).toBe('shutting down')
    // Far below pingTimeout (12 s): close is bounded by closeTimeout (1 s), give or take a loaded machine.
    expect(took).toBeLessThan(6_000)
  } finally {
    await app.close().catch(() => {})
    proxy.connectDelay = undefined
    proxy.cutAll()
    await proxy.close()
  }
}, 60_000)
