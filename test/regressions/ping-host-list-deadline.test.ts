import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js'

// The health ping opens its connection as the pool does, a primary's host list tried host by
// host: each opening is bounded by the ping's timeout, and the whole ping must be too, or a
// readiness probe on a list of frozen hosts outlives its pingTimeout once per host.

let db: TestDatabase
let proxy: TcpProxy
beforeAll(async () => {
  db = await createTestDatabase()
  proxy = await startTcpProxy(Number(new URL(db.directUrl).port))
})
afterAll(async () => {
  await proxy?.close()
  await db?.drop()
})

describe('a ping on a host list', () => {
  test('three frozen hosts: the ping fails with QUERY_TIMEOUT within its timeout, not three times it', async () => {
    const url = proxy.urlFor(db.directUrl)
    const host = new URL(url).host
    const app = Fastify()
    await app.register(pgPoolCore, {
      connection: url.replace(host, `${host},${host},${host}`),
      pool: { max: 1, lazy: true },
    })
    proxy.setMode('blackhole')
    try {
      const started = performance.now()
      const failure = await app.pgPool.ping(500).catch((error: Error & { code?: string }) => error)
      const elapsed = performance.now() - started
      expect((failure as { code?: string }).code).toBe('FST_PG_POOL_QUERY_TIMEOUT')
      expect(elapsed).toBeLessThan(1_000)
    } finally {
      proxy.setMode('pass')
      await app.close()
    }
  })
})
