import pgPoolCore, { type PoolOptions } from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName, waitFor } from '../support/database.js'
import { freePort } from '../support/embedded-server.js'
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js'
import { failOnProcessErrors, fastTimeouts } from './process-errors.js'

let db: TestDatabase
let proxy: TcpProxy | undefined
let app: FastifyInstance | undefined
failOnProcessErrors()
beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  await app?.close()
  app = undefined
  await proxy?.close()
  proxy = undefined
})
afterAll(() => db.drop())

/** Registers core and reports how long register took and how it ended. */
async function boot(url: string, pool: PoolOptions, routes: (app: FastifyInstance) => void = () => {}) {
  app = Fastify()
  const started = Date.now()
  try {
    await app.register(pgPoolCore, { connection: url, pool: { ...fastTimeouts, ...pool } })
    routes(app)
    await app.ready()
    return { ms: Date.now() - started, error: undefined }
  } catch (error) {
    return { ms: Date.now() - started, error: error as Error & { code?: string } }
  }
}

describe('database down at startup', () => {
  test('a server that never answers: register fails with a coded error after connectTimeout', async () => {
    proxy = await startTcpProxy(Number(new URL(db.url).port))
    proxy.setMode('blackhole')
    // acquireTimeout below connectTimeout: the start-up check still waits for the connect
    // outcome and names it, rather than reporting an acquire timeout.
    const { ms, error } = await boot(proxy.urlFor(db.url), { applicationName: uniqueName(), acquireTimeout: 300 })
    console.log(`[fault:down-at-startup] black hole: register failed after ${ms} ms (connectTimeout 500)`)
    expect(error?.code).toBe('FST_PG_POOL_CONNECT_FAILED')
    // The driver's detail is the cause (in logs), never in the message a client's body shows.
    expect((error?.cause as Error | undefined)?.message).toMatch(/CONNECT_TIMEOUT/)
    expect(ms).toBeGreaterThanOrEqual(fastTimeouts.connectTimeout - 20)
    expect(ms).toBeLessThan(fastTimeouts.connectTimeout + 500)
    // The attempt's socket was closed, not left to hang on the proxy.
    expect(await waitFor(() => proxy?.open === 0, 2_000)).toBe(true)
  })

  test('nothing listens on the port: register fails at once with a coded error', async () => {
    const url = new URL(db.url)
    url.hostname = '127.0.0.1'
    url.port = String(await freePort())
    const { ms, error } = await boot(url.toString(), { applicationName: uniqueName() })
    console.log(`[fault:down-at-startup] refused: register failed after ${ms} ms`)
    expect(error?.code).toBe('FST_PG_POOL_CONNECT_FAILED')
    expect((error?.cause as Error | undefined)?.message).toMatch(/ECONNREFUSED/)
    expect(ms).toBeLessThan(fastTimeouts.connectTimeout)
  })

  test('lazy: the app starts without the database and serves once it is up', async () => {
    proxy = await startTcpProxy(Number(new URL(db.url).port))
    proxy.setMode('reset')
    const applicationName = uniqueName()
    const { ms, error } = await boot(proxy.urlFor(db.url), { lazy: true, applicationName }, (app) => {
      app.get('/one', async (request) => (await request.db`select 1 as one`)[0])
      app.get('/live', { config: { db: false } }, async () => ({ ok: true }))
    })
    expect(error).toBeUndefined()
    expect(ms).toBeLessThan(fastTimeouts.connectTimeout)
    const running = app as FastifyInstance

    const down = await running.inject('/one')
    expect(down.statusCode).toBe(503)
    expect(down.json()).toMatchObject({ code: 'FST_PG_POOL_CONNECT_FAILED' })
    expect(down.headers['retry-after']).toBe('1')
    expect((await running.inject('/live')).statusCode).toBe(200)
    expect(running.pgPool.stats()).toMatchObject({ open: 0, leased: 0, waiting: 0 })

    proxy.setMode('pass')
    expect(await waitFor(async () => (await running.inject('/one')).statusCode === 200, 3_000)).toBe(true)
    expect((await running.inject('/one')).json()).toEqual({ one: 1 })
    // The lazy pool's connection budget check may take a second connection.
    expect(
      await waitFor(async () => (await db.countConnections(applicationName)) === running.pgPool.stats().open),
    ).toBe(true)
  })
})
