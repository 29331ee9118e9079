import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { failOnProcessErrors } from '../../faults/process-errors.js'
import { createTestDatabase, type TestDatabase, uniqueName } from '../../support/database.js'
import { startTcpProxy } from '../../support/tcp-proxy.js'

// Hostile probing, round twelve (options, second round on commit 6528993): attacks that HELD.
// packages/core/README.md "Connection" and "Pool options": `max`, `connect_timeout` (seconds),
// `?statement_timeout=` and `?application_name=` are read where given and become pool options; the
// `pool` option wins; both in an options object and `pool` is refused; the server session gets
// what the pool's options say, through the umbrella too.

failOnProcessErrors()
let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(async () => {
  await db?.drop()
})

function parts() {
  const u = new URL(db.directUrl)
  return {
    host: u.hostname,
    port: Number(u.port),
    database: decodeURIComponent(u.pathname.slice(1)),
    username: decodeURIComponent(u.username),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
  }
}

const withQuery = (query: string) => `${db.directUrl}${db.directUrl.includes('?') ? '&' : '?'}${query}`

const SESSION_SQL = `select current_setting('statement_timeout') as st, current_setting('application_name') as app`

describe('the umbrella forwards the connection-given settings', () => {
  test('URL ?max=, ?statement_timeout=, ?application_name=, ?connect_timeout=: options and session', async () => {
    const name = uniqueName('probe')
    const app = Fastify()
    try {
      await app.register(pgPool, {
        connection: withQuery(`max=2&statement_timeout=2s&application_name=${name}&connect_timeout=3`),
        metrics: false,
        backpressure: false,
      })
      app.get('/q', async (request) => (await request.db.unsafe(SESSION_SQL))[0])
      await app.ready()
      const res = await app.inject('/q')
      expect(res.json()).toEqual({ st: '2s', app: name })
      expect(await db.countConnections(name)).toBeGreaterThanOrEqual(1)
      const { max, statementTimeout, connectTimeout, applicationName } = app.pgPool.options
      expect({ max, statementTimeout, connectTimeout, applicationName }).toEqual({
        max: 2,
        statementTimeout: 2_000,
        connectTimeout: 3_000,
        applicationName: name,
      })
      expect((await app.inject('/health/ready')).statusCode).toBe(200)
    } finally {
      await app.close()
    }
  })

  test('options object max and connect_timeout (a string): read; with pool.max too: refused naming connection.max', async () => {
    const app = Fastify()
    try {
      await app.register(pgPool, {
        connection: { ...parts(), max: 2, connect_timeout: '3' } as never,
        metrics: false,
        backpressure: false,
        health: false,
      })
      await app.ready()
      expect([app.pgPool.options.max, app.pgPool.options.connectTimeout]).toEqual([2, 3_000])
    } finally {
      await app.close()
    }
    const refused = Fastify()
    try {
      const error = await refused
        .register(pgPool, {
          connection: { ...parts(), max: 2 } as never,
          pool: { max: 3, lazy: true },
          metrics: false,
          backpressure: false,
          health: false,
        })
        .ready()
        .then(
          () => undefined,
          (e: Error & { code?: string }) => e,
        )
      expect(error?.code).toBe('FST_PG_POOL_INVALID_OPTION')
      expect(error?.message).toContain('connection.max')
    } finally {
      await refused.close().catch(() => {})
    }
  })
})

describe('statement_timeout forms reach the session', () => {
  async function session(connection: string, pool: Record<string, unknown> = {}) {
    const app = Fastify()
    try {
      await app.register(pgPoolCore, { connection, pool: { max: 1, ...pool } })
      app.get('/q', async (request) => (await request.db.unsafe(SESSION_SQL))[0])
      await app.ready()
      return { ...((await app.inject('/q')).json() as object), option: app.pgPool.options.statementTimeout }
    } finally {
      await app.close()
    }
  }

  test('?statement_timeout=0 is off on the server and in the pool; pool.statementTimeout wins over it', async () => {
    expect(await session(withQuery('statement_timeout=0'))).toMatchObject({ st: '0', option: 0 })
    expect(await session(withQuery('statement_timeout=0'), { statementTimeout: 2_000 })).toMatchObject({
      st: '2s',
      option: 2_000,
    })
  })

  test('units and spaces: 1500ms, %201%20min%20, 1h', async () => {
    expect(await session(withQuery('statement_timeout=1500ms'))).toMatchObject({ st: '1500ms', option: 1_500 })
    expect(await session(withQuery('statement_timeout=%201%20min%20'))).toMatchObject({ st: '1min', option: 60_000 })
    expect(await session(withQuery('statement_timeout=1h'))).toMatchObject({ st: '1h', option: 3_600_000 })
  })

  test('DATABASE_URL with ?statement_timeout= and ?max= (no connection option)', async () => {
    const saved = process.env.DATABASE_URL
    process.env.DATABASE_URL = withQuery('statement_timeout=3s&max=2')
    const app = Fastify()
    try {
      await app.register(pgPoolCore, {})
      app.get('/q', async (request) => (await request.db.unsafe(SESSION_SQL))[0])
      await app.ready()
      expect((await app.inject('/q')).json()).toMatchObject({ st: '3s' })
      expect([app.pgPool.options.max, app.pgPool.options.statementTimeout]).toEqual([2, 3_000])
    } finally {
      if (saved === undefined) delete process.env.DATABASE_URL
      else process.env.DATABASE_URL = saved
      await app.close()
    }
  })

  test('startup parameters with numbers and true booleans reach the session', async () => {
    const app = Fastify()
    try {
      await app.register(pgPoolCore, {
        connection: { ...parts(), connection: { lock_timeout: 1500, default_transaction_deferrable: true } },
        pool: { max: 1 },
      })
      app.get(
        '/q',
        async (request) =>
          (
            await request.db.unsafe(
              `select current_setting('lock_timeout') as lt, current_setting('default_transaction_deferrable') as d`,
            )
          )[0],
      )
      await app.ready()
      expect((await app.inject('/q')).json()).toEqual({ lt: '1500ms', d: 'on' })
    } finally {
      await app.close()
    }
  })

  test('a huge ?statement_timeout= (25d) is refused naming it; 24d is taken', async () => {
    const app = Fastify()
    try {
      const error = await app
        .register(pgPoolCore, { connection: withQuery('statement_timeout=25d'), pool: { lazy: true } })
        .ready()
        .then(
          () => undefined,
          (e: Error & { code?: string }) => e,
        )
      expect(error?.code).toBe('FST_PG_POOL_INVALID_OPTION')
      expect(error?.message).toContain('connection ?statement_timeout=')
    } finally {
      await app.close().catch(() => {})
    }
    expect(await session(withQuery('statement_timeout=24d'))).toMatchObject({ st: '24d', option: 2_073_600_000 })
  })
})

describe('a frozen server is given up after the connection-given connect_timeout', () => {
  test('umbrella, options object connect_timeout: 0.5 (with health): 503 well before the 5 s default', async () => {
    const proxy = await startTcpProxy(parts().port, parts().host)
    proxy.setMode('blackhole')
    const app = Fastify()
    try {
      await app.register(pgPool, {
        connection: { ...parts(), host: '127.0.0.1', port: proxy.port, connect_timeout: 0.5 } as never,
        pool: { lazy: true, acquireTimeout: 20_000 },
        metrics: false,
        backpressure: false,
      })
      app.get('/q', async (request) => (await request.db`select 1 as one`)[0])
      await app.ready()
      const started = Date.now()
      const res = await app.inject('/q')
      expect(res.statusCode).toBe(503)
      // 0.5 s asked for; the default is 5 s and acquireTimeout 20 s. Margin for a loaded machine.
      expect(Date.now() - started).toBeLessThan(4_000)
    } finally {
      await app.close().catch(() => {})
      await proxy.close()
    }
  })
})

describe('pgbouncer mode and the URL statement_timeout', () => {
  test('?statement_timeout= becomes the client deadline only: no startup parameter (docs/pgbouncer-and-sizing.md)', async () => {
    const app = Fastify()
    try {
      await app.register(pgPoolCore, {
        connection: withQuery('statement_timeout=2s'),
        pool: { max: 1, pgbouncer: true },
      })
      app.get('/q', async (request) => (await request.db.unsafe(SESSION_SQL))[0])
      await app.ready()
      const server = (await db.sql`select current_setting('statement_timeout') as st`)[0]?.st
      expect((await app.inject('/q')).json()).toMatchObject({ st: server })
      expect(app.pgPool.options.statementTimeout).toBe(2_000)
    } finally {
      await app.close()
    }
  })
})
