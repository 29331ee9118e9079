import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolHealth from '@fastify-pg-pool/health'
import Fastify from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js'

// A primary given as a host list whose first host is frozen: the pool's openings time out on it
// and serve from the second. The ping used to start from the first host every time, which took
// its whole timeout: readiness failed while the pool served.

let db: TestDatabase
let frozen: TcpProxy
let good: TcpProxy
beforeAll(async () => {
  db = await createTestDatabase()
  const port = Number(new URL(db.directUrl).port)
  frozen = await startTcpProxy(port)
  good = await startTcpProxy(port)
  frozen.setMode('blackhole')
})
afterAll(async () => {
  await frozen?.close()
  await good?.close()
  await db?.drop()
})

/** The database's URL with the host list `<frozen>,<good>`. */
function hostListUrl(): string {
  const goodUrl = good.urlFor(db.directUrl)
  const goodHost = new URL(goodUrl).host
  return goodUrl.replace(goodHost, `${new URL(frozen.urlFor(db.directUrl)).host},${goodHost}`)
}

describe('a ping on a host list whose first host is frozen', () => {
  test('once the pool serves from the second host, readiness passes', async () => {
    const app = Fastify()
    await app.register(pgPoolCore, {
      connection: hostListUrl(),
      pool: { max: 2, connectTimeout: 800, lazy: true },
    })
    await app.register(pgPoolHealth, { pingTimeout: 1_000, cacheTime: 0 })
    app.get('/q', async (request) => (await request.db`select 1 as one`)[0])
    try {
      expect((await app.inject('/q')).statusCode).toBe(200)
      const frozenBefore = frozen.accepted
      const probes: { status: number; body: string }[] = []
      for (let i = 0; i < 3; i++) {
        const response = await app.inject('/health/ready')
        probes.push({ status: response.statusCode, body: response.body })
      }
      expect(
        probes.map((p) => p.status),
        probes.map((p) => p.body).join('\n'),
      ).toEqual([200, 200, 200])
      // The pings went straight to the host the pool connected to.
      expect(frozen.accepted).toBe(frozenBefore)
    } finally {
      await app.close()
    }
  }, 20_000)

  test('before the pool knows which host serves, the frozen host gets only its share of the timeout', async () => {
    const app = Fastify()
    await app.register(pgPoolCore, { connection: hostListUrl(), pool: { max: 1, lazy: true } })
    try {
      const frozenBefore = frozen.accepted
      const ms = await app.pgPool.ping(1_000)
      expect(ms).toBeLessThan(1_000)
      expect(frozen.accepted).toBe(frozenBefore + 1)
    } finally {
      await app.close()
    }
  }, 20_000)
})
