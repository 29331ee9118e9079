// Round fourteen (observability probe): a pool that connects over a Unix socket (`host` a
// directory, as libpq and postgres.js take it; PGHOST=/var/run/postgresql is the common form).
// The view's target is `/dir:5432/app`, and endpointOf() splits it at its first '/': the spans and
// the operation-duration metric said server.address '' and db.namespace
// 'tmp/…:5432/<database>'. The conventions name the socket path as server.address (or leave it
// out), and the database as db.namespace.
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer, type Server, connect as tcpConnect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolOtel from '@fastify-pg-pool/otel'
import Fastify from 'fastify'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { startTestSdk, type TestSdk } from '../../../otel/sdk.js'
import { createTestDatabase, type TestDatabase, uniqueName } from '../../../support/database.js'
import { tracedProvider } from './kit.js'

let db: TestDatabase
let sdk: TestSdk
let dir: string
let relay: Server
beforeAll(async () => {
  db = await createTestDatabase()
  sdk = startTestSdk()
  // A Unix socket relayed to the test server's TCP port, named as PostgreSQL names its own.
  dir = await mkdtemp(join(tmpdir(), 'pgsock-'))
  const target = new URL(db.directUrl)
  relay = createServer((client) => {
    const upstream = tcpConnect(Number(target.port), target.hostname)
    client.pipe(upstream).pipe(client)
    client.on('error', () => upstream.destroy())
    upstream.on('error', () => client.destroy())
  })
  await new Promise<void>((resolve) => relay.listen(join(dir, '.s.PGSQL.5432'), resolve))
})
afterAll(async () => {
  await new Promise<void>((resolve) => relay.close(() => resolve()))
  await rm(dir, { recursive: true, force: true })
  await sdk.shutdown()
  await db.drop()
})

test('over a Unix socket: server.address is the socket directory, db.namespace the database', async () => {
  const traced = tracedProvider()
  const url = new URL(db.directUrl)
  const database = url.pathname.slice(1)
  const app = Fastify()
  await app.register(pgPoolCore, {
    connection: {
      host: dir,
      port: 5432,
      database,
      username: decodeURIComponent(url.username),
      password: decodeURIComponent(url.password),
    },
    pool: { max: 1, applicationName: uniqueName('sock') },
  })
  await app.register(pgPoolOtel, { tracerProvider: traced.provider, metrics: false })
  app.get('/one', async (request) => (await request.db`select 1 as one`)[0])
  try {
    expect((await app.inject('/one')).json()).toEqual({ one: 1 })
  } finally {
    await app.close()
  }
  const [span] = traced.ours().filter((s) => s.name === 'select')
  expect({
    namespace: span?.attributes['db.namespace'],
    address: span?.attributes['server.address'],
    endpoint: app.pgPool.endpoint,
  }).toEqual({
    namespace: database,
    address: dir,
    endpoint: { host: dir, port: 5432, database },
  })
})
