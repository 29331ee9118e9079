import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName, waitFor } from '../../../support/database.js'
import { startTcpProxy, type TcpProxy } from '../../../support/tcp-proxy.js'

// Attack: SIGTERM while the app is still starting (ready() waits for its first connection) and the
// database is frozen. Measured: how long close() takes, against connectTimeout and closeTimeout.

let db: TestDatabase
let proxy: TcpProxy
let app: FastifyInstance | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  proxy = await startTcpProxy(Number(new URL(db.directUrl).port))
})
afterAll(async () => {
  await app?.close().catch(() => {})
  await proxy?.close()
  await db?.drop()
})

test('close() during a ready() frozen on its first connection settles, no socket left', async () => {
  proxy.setMode('blackhole')
  app = Fastify()
  app.register(pgPoolCore, {
    connection: proxy.urlFor(db.directUrl),
    pool: { applicationName: uniqueName(), connectTimeout: 4_000, closeTimeout: 300 },
  })
  const ready = app.ready().then(
    () => 'ready',
    (error: { code?: string }) => error.code,
  )
  expect(await waitFor(() => proxy.open > 0, 5_000)).toBe(true)
  await app.close()
  const readyOutcome = await ready
  // Observed: about connectTimeout (avvio finishes loading the plugin before close runs), not closeTimeout.
  expect(readyOutcome).toBe('FST_PG_POOL_CONNECT_FAILED')
  expect(await waitFor(() => proxy.open === 0, 5_000)).toBe(true)
  app = undefined
})
