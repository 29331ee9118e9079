// Round sixteen (observability probe). What the Kubernetes operator does: an app whose one
// database is a named instance (`app.register(pgPool, { name: 'orders', ... })`, no default
// instance: supported, app.db is then absent) behind the readiness probe of the deployment
// example. The database goes down: every request that needs it is answered 503.
// What they saw: /health/ready kept answering 200 "warn", so the pod stayed in the Service
// through the outage. Only the default instance's primary failed readiness; a named instance's
// only warned ("one secondary database must not empty the Service"), but here there is no
// other database: readiness depended on none at all. Now, in an app without a default
// instance, every instance's primary fails readiness, unless requireInstances names those that
// do (the same rule as the default instance's then).
import Fastify, { type FastifyInstance } from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../../support/database.js'
import { startTcpProxy, type TcpProxy } from '../../../support/tcp-proxy.js'

let db: TestDatabase
let proxy: TcpProxy
beforeAll(async () => {
  db = await createTestDatabase()
  proxy = await startTcpProxy(Number(new URL(db.directUrl).port || 5432))
})
afterAll(async () => {
  await proxy?.close()
  await db?.drop()
})

async function probe(app: FastifyInstance) {
  const res = await app.inject('/health/ready')
  return { status: res.statusCode, body: JSON.parse(res.body) as { status: string; output?: string } }
}

test('the only database is a named instance: it down, readiness fails (503); back, 200', async () => {
  proxy.setMode('pass')
  const app = Fastify()
  try {
    await app.register(pgPool, { name: 'orders', connection: proxy.urlFor(db.directUrl), health: { cacheTime: 0 } })
    app.get('/orders', { config: { db: { instance: 'orders' } } }, async (request) => request.dbs.orders`select 1`)
    await app.ready()
    expect((await probe(app)).status).toBe(200)
    proxy.setMode('reset')
    expect((await app.inject('/orders')).statusCode).toBe(503)
    const down = await probe(app)
    expect(down.body).toMatchObject({ status: 'fail', output: 'database unreachable (FST_PG_POOL_CONNECT_FAILED)' })
    expect(down.status).toBe(503)
    proxy.setMode('pass')
    expect(await probe(app)).toMatchObject({ status: 200, body: { status: 'pass' } })
  } finally {
    proxy.setMode('pass')
    await app.close()
  }
})

test('named instances only, requireInstances naming one: the other one down only warns', async () => {
  proxy.setMode('pass')
  const app = Fastify()
  try {
    await app.register(pgPool, {
      name: 'orders',
      connection: db.directUrl,
      health: { cacheTime: 0, requireInstances: ['orders'] },
    })
    await app.register(pgPool, { name: 'reports', connection: proxy.urlFor(db.directUrl) })
    await app.ready()
    proxy.setMode('reset')
    const reportsDown = await probe(app)
    expect(reportsDown).toMatchObject({ status: 200, body: { status: 'warn' } })
    expect(reportsDown.body.output).toMatch(/^reports: database unreachable/)
  } finally {
    proxy.setMode('pass')
    await app.close()
  }
})
