// DEFECT (probe-errors, low-medium). What the user does: a PL/pgSQL function (or a trigger) raises
// an error with a value of the request in its message, as the README's own example of what the
// log must never show ("a function's `raise exception` any text"), but with a SQLSTATE of the
// connection classes (`raise exception 'no tenant %', $1 using errcode = '08006'` or '08000',
// '57P01', '57P03': a function that reports "the upstream is unavailable" with the standard
// connection_failure code), or a 57014 whose text says "statement timeout", or a 25006 on a
// host-list primary.
// What they see: the body is clean (503 FST_PG_POOL_CONNECTION_LOST / QUERY_TIMEOUT /
// NOT_PRIMARY), but Fastify's error log line quotes the server's message with the parameter:
// `"message":"The database connection was lost (08006): no tenant alice@example.com"` and
// `caused by: PostgresError: no tenant alice@example.com` in the stack.
// What they should see: the README ("PostgreSQL errors in replies"): "Any other message is
// withheld and replaced by the condition ... a function's `raise exception` any text ... Never a
// query parameter" in the log; the coded errors' cause should be the same withheld form a
// DatabaseError gets (loggedCause).
// Cause: packages/core/src/error-mapping.ts surfaceError (l.~255-275): the coded errors it builds
// (QUERY_TIMEOUT, CONNECTION_LOST, ABORTED, CLOSED) take the driver's PostgresError itself as
// `cause` (withCause(..., error)), and lease.ts ~l.825 does the same for NOT_PRIMARY; pino's error
// serializer prints a cause's message and stack. Only toDatabaseError goes through loggedCause.
// Suggested fix: when the cause is a PostgresError, give the coded error
// `loggedCause(error, code, condition)` as its cause (export it from error-mapping.ts) instead of
// the server's error.
// Round thirteen: failed on 47cd02d (08006, 57P01, 57014 and 25006 quoted the parameter in the
// error log line); the 25006 case now reaches the DatabaseError path, whose cause was already safe.
// NOT_PRIMARY's own cause is made safe too (packages/core/test: none of its messages can be raised here).
import { Writable } from 'node:stream'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'

let db: TestDatabase
let app: FastifyInstance | undefined
const SECRET = 'alice.probe-errors@example.com'

function hostList(url: string): string {
  const parsed = new URL(url)
  const hostPort = `${parsed.hostname}:${parsed.port}`
  return url.replace(hostPort, `${hostPort},${hostPort}`)
}

beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe(`
    create function find_tenant(state text, wanted text) returns void language plpgsql as
      $f$ begin raise exception 'no tenant % (statement timeout)', wanted using errcode = state; end $f$;
  `)
})
afterEach(async () => {
  await app?.close()
  app = undefined
})
afterAll(() => db?.drop())

async function loggingApp(connection: string): Promise<{ app: FastifyInstance; logs: string[] }> {
  const logs: string[] = []
  const stream = new Writable({
    write(chunk, _encoding, callback) {
      logs.push(String(chunk))
      callback()
    },
  })
  app = Fastify({ logger: { level: 'trace', stream } })
  await app.register(pgPoolCore, { connection, pool: { max: 2 } })
  app.get('/tenant/:state', async (request) => {
    const { state } = request.params as { state: string }
    return request.db`select find_tenant(${state}, ${SECRET})`
  })
  return { app, logs }
}

describe("a coded error's log line quotes no query parameter", () => {
  const cases: [string, string, boolean][] = [
    ['08006', 'FST_PG_POOL_CONNECTION_LOST', false],
    ['57P01', 'FST_PG_POOL_CONNECTION_LOST', false],
    ['57014', 'FST_PG_POOL_QUERY_TIMEOUT', false],
    // On a healthy primary of a host list: its own 25006 since round thirteen (the server reports
    // no hot standby; read-only-sql-not-failover), a mapped error whose message is withheld.
    ['25006', '25006', true],
  ]
  for (const [state, code, hosts] of cases) {
    test(`a function raising ${state} with a parameter in its text (${code}): not in the log`, async () => {
      const { app: server, logs } = await loggingApp(hosts ? hostList(db.url) : db.url)
      const response = await server.inject(`/tenant/${state}`)
      expect(response.json().code).toBe(code)
      expect(response.body).not.toContain(SECRET)
      const errorLine = logs.find((line) => line.includes(`"code":"${code}"`))
      expect(errorLine, `a log line for ${code}`).toBeDefined()
      expect(errorLine).not.toContain(SECRET)
      expect(logs.join('\n')).not.toContain(SECRET)
    })
  }

  test('control: the same function raising P0001 (a DatabaseError) is withheld', async () => {
    const { app: server, logs } = await loggingApp(db.url)
    const response = await server.inject('/tenant/P0001')
    expect(response.json().code).toBe('P0001')
    expect(logs.join('\n')).not.toContain(SECRET)
  })
})
