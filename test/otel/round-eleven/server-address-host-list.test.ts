// Round eleven of hostile probing, fixed (found by the OpenTelemetry probe): with the primary given as a host list, the README's own failover setup
// (`postgres://app@db-a:5432,db-b:5432/app`), every statement span and
// db.client.operation.duration point carries `server.address` = "db-a:5432,db-b" (a host list
// with a port inside) and `server.port` = the LAST host's port. The semantic conventions the
// README cites define server.address as the database host's name and server.port as its port;
// a backend cannot match them to a host. Cause: endpointOf (packages/core/src/view.ts:29) splits
// the list target `h1:p1,h2:p2/db` at its last ':'; pool-identity.ts:38 takes it as is.
import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolOtel from '@fastify-pg-pool/otel'
import Fastify from 'fastify'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName } from '../../support/database.js'
import { startTestSdk, type TestSdk } from '../sdk.js'

let db: TestDatabase
let sdk: TestSdk
beforeAll(async () => {
  db = await createTestDatabase()
  sdk = startTestSdk()
})
afterAll(async () => {
  await sdk.shutdown()
  await db.drop()
})

test('a host list (the same server twice): statement spans carry that host and its port, not the list', async () => {
  const url = new URL(db.url)
  const port = Number(url.port || 5432)
  const hostPort = `${url.hostname}:${port}`
  // postgres://user[:pw]@h:p,h:p/db: both entries are the one server, so there is one right answer.
  const listUrl = db.url.replace(`@${url.host}/`, `@${hostPort},${hostPort}/`)
  expect(listUrl).toContain(`${hostPort},${hostPort}`)
  const app = Fastify()
  await app.register(pgPoolCore, { connection: listUrl, pool: { max: 1, applicationName: uniqueName('hl') } })
  await app.register(pgPoolOtel, { tracerProvider: sdk.tracerProvider, meterProvider: sdk.meterProvider })
  app.get('/one', async (request) => (await request.db`select 1 as one`)[0])
  try {
    expect((await app.inject('/one')).statusCode).toBe(200)
    const span = sdk.spans().find((s) => s.name === 'select')
    expect(span?.attributes['server.address']).toBe(url.hostname)
    expect(span?.attributes['server.port']).toBe(port)
  } finally {
    await app.close()
  }
})
