import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { failOnProcessErrors } from '../faults/process-errors.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { startTcpProxy } from '../support/tcp-proxy.js'

// Hostile probing, round eleven (docs truth: option validation of `connection` given as postgres.js options).
//
// Expected, packages/core/README.md:
// - "Errors": `FST_PG_POOL_INVALID_OPTION` 500 "an invalid or unknown option, at `register` ...
//   (names it ...)".
// - "Connection": "`connection` takes a `postgres://` URL or postgres.js options (TLS with `ssl`, a
//   host list, ...), except `idle_timeout`, `max_lifetime` and `debug`, which the pool owns" (those
//   three are refused at register by name), and "What postgres.js would ignore or misread is
//   refused at `register` with `FST_PG_POOL_INVALID_OPTION`".
// What happens (options.ts resolveConnection checks only the keys of a connection object, and the
// values of port, ssl, target_session_attrs and password):
// 1. `host: 5` (a number from a config file): register rejects with a bare TypeError
//    `host.split is not a function` from postgres.js (no code, no option named).
// 2. `database: 5`, `username: {}`: accepted; every opening then fails, so register rejects
//    with FST_PG_POOL_CONNECT_FAILED (with `pool.lazy`, the app starts and every request gets a
//    503): the wrong type is reported as an unreachable database, never named.
// 2b. `max: -3`: refused, but as `Invalid option pool.max: ... got "-3"` (options.ts turns it into
//    the string fromUrl.max, read as pool.max): an option the app never set, a value it never gave.
// 3. `onnotice: 'x'`, `onclose: 5` (callbacks the README documents), `sslnegotiation: 'bogus'`,
//    `connection: 5` (startup parameters): accepted and silently ignored.
// 4. `connect_timeout` (a postgres.js option, not in the pool's owned list): silently replaced by
//    pool.connectTimeout (connection-factory.ts `timed = { ...clientOptions, connect_timeout }`):
//    `connect_timeout: 0.3` against a frozen server still waits the pool's 4 s.
// 5. `connection: { statement_timeout: 200 }` (postgres.js's startup parameters): silently
//    replaced by pool.statementTimeout's 30 s (connection-factory.ts builds `connection:
//    { ...given, application_name, statement_timeout }`), while the same parameter in a URL query
//    (`?statement_timeout=200`) is honoured: a migration from postgres.js loses its timeout unseen.
// Fixed (options.ts): every value of a connection object is checked against its postgres.js type
// (connectionValueRules) and refused, coded, naming `connection.<key>`; `max` is read where it is
// given and named so; `connect_timeout` (seconds) is read as pool.connectTimeout (refused when
// pool.connectTimeout is given too), as the URL's `?connect_timeout=` now is; startup parameters the
// pool sets (statement_timeout, application_name) are refused in `connection.connection`, pointing at
// pool.statementTimeout and pool.applicationName; the URL's `?statement_timeout=` is read as
// pool.statementTimeout's value (the option, when given, wins, as the README's precedence says: the
// URL's used to win over it, and the client's deadline kept the pool's value).

let db: TestDatabase
failOnProcessErrors()
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db.drop())

function parts() {
  const u = new URL(db.url)
  return {
    host: u.hostname,
    port: Number(u.port),
    database: decodeURIComponent(u.pathname.slice(1)),
    username: decodeURIComponent(u.username),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
  }
}

async function registerOutcome(connection: Record<string, unknown>, lazy = false) {
  const app = Fastify()
  try {
    await app.register(pgPoolCore, { connection: connection as never, pool: { lazy, connectTimeout: 3_000 } })
    await app.ready()
    return undefined
  } catch (error) {
    return error as Error & { code?: string }
  } finally {
    await app.close().catch(() => {})
  }
}

describe('a connection value of the wrong type is refused at register, coded, naming it', () => {
  const cases: [string, Record<string, unknown>, string][] = [
    ['host: 5', { host: 5 }, 'connection.host'],
    ['host: {}', { host: {} }, 'connection.host'],
    ['database: 5', { database: 5 }, 'connection.database'],
    ['username: {}', { username: {} }, 'connection.username'],
    ["onnotice: 'x'", { onnotice: 'x' }, 'connection.onnotice'],
    ['onclose: 5', { onclose: 5 }, 'connection.onclose'],
    ["sslnegotiation: 'bogus'", { sslnegotiation: 'bogus' }, 'connection.sslnegotiation'],
    ['connection: 5 (startup parameters)', { connection: 5 }, 'connection.connection'],
    // Refused, but named `pool.max` (an option the app never set) and quoted as the string "-3".
    ['max: -3', { max: -3 }, 'connection.max'],
  ]
  for (const [label, bad, name] of cases) {
    test(label, async () => {
      const error = await registerOutcome({ ...parts(), ...bad }, true)
      expect(error?.code, String(error)).toBe('FST_PG_POOL_INVALID_OPTION')
      expect(error?.message).toContain(name)
    })
  }
})

describe('postgres.js options the pool silently replaces', () => {
  test('connect_timeout: refused naming it, or honoured (a frozen server is given up after it, not after pool.connectTimeout)', async () => {
    const proxy = await startTcpProxy(parts().port)
    proxy.setMode('blackhole')
    const app = Fastify()
    try {
      const error = await app
        .register(pgPoolCore, {
          connection: { ...parts(), host: '127.0.0.1', port: proxy.port, connect_timeout: 0.3 } as never,
          pool: { lazy: true, connectTimeout: 4_000, acquireTimeout: 20_000 },
        })
        .after(() => {
          app.get('/q', async (request) => (await request.db`select 1 as one`)[0])
        })
        .ready()
        .then(
          () => undefined,
          (e: Error & { code?: string }) => e,
        )
      if (error !== undefined) {
        expect(error.code).toBe('FST_PG_POOL_INVALID_OPTION')
        expect(error.message).toContain('connect_timeout')
        return
      }
      const started = Date.now()
      const res = await app.inject('/q')
      expect(res.statusCode).toBe(503)
      // 0.3 s asked for; the pool's 4 s is what it waits. 2 s of margin for a loaded machine.
      expect(Date.now() - started).toBeLessThan(2_500)
    } finally {
      await app.close().catch(() => {})
      await proxy.close()
    }
  })

  test('connection.statement_timeout (a startup parameter): refused naming it, or the session has it', async () => {
    const app = Fastify()
    try {
      const error = await app
        .register(pgPoolCore, { connection: { ...parts(), connection: { statement_timeout: 200 } } as never })
        .after(() => {
          app.get('/q', async (request) => (await request.db`select current_setting('statement_timeout') as st`)[0])
        })
        .ready()
        .then(
          () => undefined,
          (e: Error & { code?: string }) => e,
        )
      if (error !== undefined) {
        expect(error.code).toBe('FST_PG_POOL_INVALID_OPTION')
        expect(error.message).toContain('statement_timeout')
        return
      }
      const res = await app.inject('/q')
      expect(res.json()).toEqual({ st: '200ms' })
    } finally {
      await app.close().catch(() => {})
    }
  })

  test('held, for contrast: the same parameter in the URL query is honoured', async () => {
    const app = Fastify()
    try {
      const sep = db.url.includes('?') ? '&' : '?'
      await app.register(pgPoolCore, { connection: `${db.url}${sep}statement_timeout=200` })
      app.get('/q', async (request) => (await request.db`select current_setting('statement_timeout') as st`)[0])
      expect((await app.inject('/q')).json()).toEqual({ st: '200ms' })
    } finally {
      await app.close()
    }
  })
})

describe('the URL query: read as the pool options it names, refused under its own name', () => {
  const withQuery = (query: string) => `${db.url}${db.url.includes('?') ? '&' : '?'}${query}`
  async function statementTimeout(connection: string, pool: Record<string, unknown> = {}) {
    const app = Fastify()
    try {
      await app.register(pgPoolCore, { connection, pool })
      app.get('/q', async (request) => (await request.db`select current_setting('statement_timeout') as st`)[0])
      return (await app.inject('/q')).json()
    } finally {
      await app.close()
    }
  }

  test('?statement_timeout= yields to pool.statementTimeout when both are given (option > URL)', async () => {
    // Before: postgres.js let the URL's startup parameter win over the pool's.
    expect(await statementTimeout(withQuery('statement_timeout=200'), { statementTimeout: 5_000 })).toEqual({
      st: '5s',
    })
    expect(await statementTimeout(withQuery('statement_timeout=2s'))).toEqual({ st: '2s' })
  })

  test('?statement_timeout= that is no duration is refused, named', async () => {
    const app = Fastify()
    try {
      const error = await app
        .register(pgPoolCore, { connection: withQuery('statement_timeout=soon'), pool: { lazy: true } })
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
  })

  test('?connect_timeout= (seconds) gives a frozen server up after it (it was replaced by pool.connectTimeout)', async () => {
    const proxy = await startTcpProxy(parts().port)
    proxy.setMode('blackhole')
    const app = Fastify()
    try {
      const url = new URL(db.url)
      url.hostname = '127.0.0.1'
      url.port = String(proxy.port)
      url.searchParams.set('connect_timeout', '0.3')
      await app.register(pgPoolCore, { connection: url.toString(), pool: { lazy: true, acquireTimeout: 20_000 } })
      app.get('/q', async (request) => (await request.db`select 1 as one`)[0])
      const started = Date.now()
      const res = await app.inject('/q')
      expect(res.statusCode).toBe(503)
      // 0.3 s asked for; the pool's default is 5 s.
      expect(Date.now() - started).toBeLessThan(3_000)
    } finally {
      await app.close().catch(() => {})
      await proxy.close()
    }
  })

  test('PGMAX and PG_POOL_INSTANCES are refused under their own names, not as pool options', async () => {
    for (const [name, value] of [
      ['PGMAX', 'abc'],
      ['PG_POOL_INSTANCES', '0'],
    ] as const) {
      const saved = process.env[name]
      process.env[name] = value
      const app = Fastify()
      try {
        const error = await app
          .register(pgPoolCore, { connection: db.url, pool: { lazy: true } })
          .ready()
          .then(
            () => undefined,
            (e: Error & { code?: string }) => e,
          )
        expect(error?.code).toBe('FST_PG_POOL_INVALID_OPTION')
        expect(error?.message).toMatch(new RegExp(`^Invalid option ${name}: `))
      } finally {
        if (saved === undefined) delete process.env[name]
        else process.env[name] = saved
        await app.close().catch(() => {})
      }
    }
  })
})
