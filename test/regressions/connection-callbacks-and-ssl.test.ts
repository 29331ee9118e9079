import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, waitFor } from '../support/database.js'

// Found by hostile probing (round nine, second round). Both tests failed before the fix:
// `connection.onnotice` and `connection.onclose` were accepted and never called (the pool sets its
// own on every connection; they are now called after the pool's, without the notices of its own
// reset); `connection.ssl: 'disable'` tried TLS (postgres.js translates it only from a URL).

let db: TestDatabase
const apps: FastifyInstance[] = []
beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  await Promise.all(apps.splice(0).map((app) => app.close()))
})
afterAll(() => db.drop())

/** The test database as postgres.js options (no URL). */
function optionsOf(url: string) {
  const u = new URL(url)
  return {
    host: u.hostname,
    port: Number(u.port),
    database: u.pathname.slice(1),
    user: decodeURIComponent(u.username),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
  }
}

/** Registers; resolves with the app, or with the code of the error register threw. */
async function register(
  connection: Record<string, unknown>,
  routes: (app: FastifyInstance) => void = () => {},
): Promise<FastifyInstance | string> {
  const app = Fastify()
  apps.push(app)
  try {
    await app.register(pgPoolCore, { connection: connection as never, pool: { max: 1, connectTimeout: 3000 } })
    routes(app)
    await app.ready()
    return app
  } catch (error) {
    return String((error as { code?: unknown }).code)
  }
}

describe('connection options: what register accepts it honours', () => {
  // Before the fix: ConnectionOptions (core/src/options.ts:501) says the postgres.js options the pool sets
  // on every connection itself are left out of the type and refused by register; `onnotice` and
  // `onclose` are set by the pool on every connection (postgres-adapter.ts:593-594, listener.ts
  // 273-275) yet are in the type and in postgresOptionKeys (options.ts:212-214): register accepts
  // them and the app's functions are silently never called. Observed: a request running
  // `raise notice 'hello'`, then its backend terminated: onnotice called 0 times, onclose 0 times
  // (onparameter, which the pool does not set, was called 17 times). An app that passes
  // postgres.js's `onnotice` to see its functions' notices (its default logs them) sees nothing.
  test('connection.onnotice and connection.onclose are called, or refused at register', async () => {
    const notices: unknown[] = []
    const closes: unknown[] = []
    const app = await register(
      {
        ...optionsOf(db.directUrl),
        onnotice: (notice: unknown) => notices.push(notice),
        onclose: (id: unknown) => closes.push(id),
      },
      (app) =>
        app.get('/', async (request) => {
          await request.db.unsafe(`do $$ begin raise notice 'hello'; end $$`)
          return 'ok'
        }),
    )
    if (typeof app === 'string') {
      expect(app).toBe('FST_PG_POOL_INVALID_OPTION')
      return
    }
    expect((await app.inject('/')).statusCode).toBe(200)
    await db.terminate(app.pgPool.options.applicationName)
    await waitFor(() => closes.length > 0, 2_000)
    expect({ notices: notices.length, closes: closes.length }).toEqual({ notices: 1, closes: 1 })
  })

  // Before the fix: checkSsl (options.ts:245-253) accepts the libpq modes 'disable' and 'verify-ca' in an
  // options object, but postgres.js only translates them from a URL's sslmode (its index.js
  // parseOptions); as an option it passes the string on, and connection.js opens TLS for any
  // truthy `ssl`: 'disable' asks the server for TLS, and against a server without it (both test
  // servers: `show ssl` = off) every connection fails. Observed: register rejects with
  // FST_PG_POOL_CONNECT_FAILED, cause "ECONNRESET: Client network socket disconnected before
  // secure TLS connection was established"; ssl: false connects. (The typings refuse 'disable',
  // so only JavaScript users and casts get here; the option check is what claims it is valid.)
  test("connection.ssl 'disable' connects without TLS (or is refused as an invalid option)", async () => {
    const app = await register({ ...optionsOf(db.directUrl), ssl: 'disable' })
    if (typeof app === 'string') {
      expect(app).toBe('FST_PG_POOL_INVALID_OPTION')
      return
    }
    const [row] = await app.db<
      { ssl: boolean }[]
    >`select coalesce((select ssl from pg_stat_ssl where pid = pg_backend_pid()), false) as ssl`
    expect(row?.ssl).toBe(false)
  })
})
