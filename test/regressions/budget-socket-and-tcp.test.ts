import { existsSync } from 'node:fs'
import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolHealth from '@fastify-pg-pool/health'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

// Found by hostile probing, round 2 (connection budget), failing before the fix. packages/health/README.md: "`observedValue` is what
// the app's pools on that server may open together (`pools` names them): two named instances on two
// databases of one server share its slots"; core README: the pool warns when they do not fit.
//
// connection-budget.ts readServerSlots keys a primary by `system identifier:inet_server_port()`.
// Over a Unix socket inet_server_port() is NULL, so a pool reaching the server by its socket gets
// the key `primary <id>:` and one reaching the same server over TCP `primary <id>:<port>`: the two
// are not summed. Here each pool takes 60 % of the slots: together they exceed them, yet each
// budget says serverDemand = its own max, exceeded false, and health's postgres:budget passes.
//
// Needs the server's Unix socket (skipped where it has none).

let main: TestDatabase
let other: TestDatabase
let socketDir: string | undefined
let serverPort = 0
let app: FastifyInstance | undefined

beforeAll(async () => {
  main = await createTestDatabase()
  other = await createTestDatabase()
  const [row] = await main.sql<{ dirs: string; port: number }[]>`
    select current_setting('unix_socket_directories') as dirs, current_setting('port')::int as port`
  serverPort = row?.port ?? 0
  socketDir = (row?.dirs ?? '')
    .split(',')
    .map((dir) => dir.trim())
    .find((dir) => dir.startsWith('/') && existsSync(`${dir}/.s.PGSQL.${serverPort}`))
})
afterEach(async () => {
  await app?.close().catch(() => {})
  app = undefined
})
afterAll(async () => {
  await main.drop()
  await other.drop()
})

describe('the connection budget sums pools on one server however they reach it', () => {
  test('a pool over TCP and one over the Unix socket of the same server share its slots', async (context) => {
    if (socketDir === undefined) context.skip()
    const [settings] = await main.sql<{ slots: number }[]>`
      select current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int
        - coalesce(current_setting('reserved_connections', true), '0')::int as slots`
    const max = Math.floor((settings?.slots ?? 0) * 0.6) // each fits, the two together do not
    const parsed = new URL(other.directUrl)
    app = Fastify()
    await app.register(pgPoolCore, { connection: main.url, pool: { max } })
    await app.register(pgPoolCore, {
      name: 'other',
      connection: {
        host: socketDir as string,
        port: serverPort,
        database: parsed.pathname.slice(1),
        username: decodeURIComponent(parsed.username),
        ...(parsed.password ? { password: decodeURIComponent(parsed.password) } : {}),
      },
      pool: { max },
    })
    await app.register(pgPoolHealth)
    await app.ready()
    // The socket pool really is on the same server (same system identifier and port).
    const otherDb = app.dbs.other
    if (otherDb === undefined) throw new Error('no instance other')
    const [here] = await otherDb`select inet_server_port() as tcp_port, current_setting('port')::int as port`
    expect(here).toEqual({ tcp_port: null, port: serverPort })
    expect(app.pgPool.budget()).toMatchObject({ demand: max, serverDemand: 2 * max, exceeded: true })
    const checks = (await app.inject('/health')).json().checks['postgres:budget'] as {
      componentId: string
      observedValue: number
      status: string
    }[]
    expect(
      checks
        .map(({ componentId, observedValue, status }) => ({ componentId, observedValue, status }))
        .sort((a, b) => a.componentId.localeCompare(b.componentId)),
    ).toEqual([
      { componentId: 'other', observedValue: 2 * max, status: 'warn' },
      { componentId: 'primary', observedValue: 2 * max, status: 'warn' },
    ])
  })
})
