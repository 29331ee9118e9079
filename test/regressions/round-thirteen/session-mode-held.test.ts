// HELD (probe-pgbouncer): PgBouncer in session mode, which no doc describes (docs cover
// transaction mode only; the core README mentions session mode once, about what DISCARD ALL
// does not reset):
// - with the default options (statementTimeout 30 s sent as a startup parameter) `register`
//   fails at once, coded FST_PG_POOL_CONNECT_FAILED with PgBouncer's 08P01 "unsupported startup
//   parameter: ..." as its cause (statement_timeout, or since round thirteen the pool's
//   bytea_output first): loud, no hang, no password in the message;
// - with `statementTimeout: 0` and `pool.pgbouncer` left false (the server session is the client
//   connection's for its life), the default session reset keeps working when the pool retires
//   its connections and opens new ones on the same PgBouncer server session, both with
//   PgBouncer's default `server_reset_query = DISCARD ALL` and with it empty (the reused server
//   session then still holds the pool's own reset check, PREPAREd by the connection before:
//   taken as kept and prepared again, session-reset.ts:76): no request ever sees the role or
//   search_path the request before it set, and nothing fails.
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../../support/app.js'
import { createTestDatabase, type TestDatabase, waitUntil } from '../../support/database.js'
import { type Bouncer, startBouncer } from './bouncer-kit.js'

let db: TestDatabase
const apps: TestApp[] = []
const bouncers: Bouncer[] = []
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(async () => {
  for (const { app } of apps) await app.close()
  for (const bouncer of bouncers) await bouncer.stop()
  await db?.drop()
})

async function sessionBouncer(serverResetQuery: string): Promise<Bouncer> {
  const bouncer = await startBouncer(db.directUrl, {
    default_pool_size: 1,
    pool_mode: 'session',
    server_reset_query: serverResetQuery,
    // As the core README says for session mode: the pool's decoding startup parameters.
    ignore_startup_parameters: 'extra_float_digits,bytea_output',
  })
  bouncers.push(bouncer)
  return bouncer
}

describe('PgBouncer in session mode', () => {
  test('default options: register fails at once, coded, naming the startup parameter', async () => {
    const bouncer = await sessionBouncer('DISCARD ALL')
    const error = await coreApp(bouncer.via(db.directUrl), { max: 1, pgbouncer: false }).then(
      (current) => {
        apps.push(current)
        return undefined
      },
      (error: unknown) => error as Error & { code?: string; cause?: unknown },
    )
    expect(error?.code).toBe('FST_PG_POOL_CONNECT_FAILED')
    expect(String(error?.cause)).toMatch(/unsupported startup parameter: (statement_timeout|bytea_output)/)
  })

  for (const serverResetQuery of ['DISCARD ALL', '']) {
    test(`statementTimeout 0, server_reset_query ${JSON.stringify(serverResetQuery)}: retired and reopened connections, no request sees the last one's session`, async () => {
      const bouncer = await sessionBouncer(serverResetQuery)
      const current = await coreApp(bouncer.via(db.directUrl), {
        max: 1,
        pgbouncer: false,
        statementTimeout: 0,
        // Idle connections close at once: the pool reopens for every request, each time on
        // PgBouncer's one server session.
        idleTimeout: 10,
      })
      apps.push(current)
      const { app } = current
      let opened = 0
      let resetErrors = 0
      app.pgPool.on('connect', () => void opened++)
      app.pgPool.on('resetError', () => void resetErrors++)
      app.get<{ Params: { n: string } }>('/step/:n', async (request) => {
        const n = Number(request.params.n)
        const [seen] = await request.db.unsafe<{ role: string; login: string; path: string }[]>(
          `select current_user as role, session_user as login, current_setting('search_path') as path, ${n} as n`,
        )
        await request.db.unsafe(`set search_path = step_${n}`)
        await request.db.unsafe('set role pg_monitor')
        return seen
      })
      await app.ready()
      const first = (await app.inject('/step/0')).json() as { path: string }
      for (let n = 1; n < 8; n++) {
        await waitUntil(() => app.pgPool.stats().open === 0, 'the idle connection to close')
        const reply = await app.inject(`/step/${n}`)
        expect(reply.statusCode, reply.body).toBe(200)
        const seen = reply.json() as { role: string; login: string; path: string }
        expect(seen.role).toBe(seen.login)
        expect(seen.path).toBe(first.path)
      }
      expect(opened).toBeGreaterThan(1)
      expect(resetErrors).toBe(0)
      const [pids] = await db.admin<{ n: number }[]>`
        select count(distinct pid)::int as n from pg_stat_activity where application_name = ${current.applicationName}`
      expect(pids?.n).toBeLessThanOrEqual(1)
    })
  }
})
