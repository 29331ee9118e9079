// DEFECT (attack-paths, low). What the user does: an `onConnect` that calls a function with a
// value (`onConnect: (sql) => sql\`select setup_tenant(${tenant})\``, or a key, a role name from
// the app's configuration), and the function raises an error quoting its parameter (a PL/pgSQL
// `raise exception 'no tenant %', wanted`, or class 22 `invalid input syntax ...: "<value>"`).
// What they see: FST_PG_POOL_CONNECT_FAILED, whose log line (warn "could not open a database
// connection", and the registration error) carries the server's message with the parameter:
// `"message":"Could not connect to the database: P0001: no tenant <value>"` and `caused by: Error:
// P0001: no tenant <value>`.
// What they should see: what round thirteen gave every other coded error whose cause is a
// PostgreSQL error (withCause -> loggedCause): the SQLSTATE and its condition, the server's
// message withheld ("Never a query parameter" in the log, README "PostgreSQL errors in replies").
// Cause: packages/core/src/pool-unit.ts:83-92 (connectError) and packages/core/src/listener.ts:
// 100-108 (connectFailed) build the cause from `${code}: ${message}` of any error, the server's
// error of onConnect (or of the replica monitor's, LISTEN's opening) included; only URLs and
// passwords are redacted. Suggested fix: when the error is a PostgresError (isPostgresError),
// use withCause(coded, error) (loggedCause) instead of the message.
// Round thirteen, second round: failed on 1fd7255 (both servers); passes after its fix.
import { Writable } from 'node:stream'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'

let db: TestDatabase
let app: FastifyInstance | undefined
const SECRET = 'alice.attack-paths@example.com'

beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe(`
    create function setup_tenant(wanted text) returns void language plpgsql as
      $f$ begin raise exception 'no tenant %', wanted; end $f$;
    create function setup_tenant_08(wanted text) returns void language plpgsql as
      $f$ begin raise exception 'no tenant %', wanted using errcode = '08006'; end $f$;
  `)
})
afterEach(async () => {
  await app?.close().catch(() => {})
  app = undefined
})
afterAll(() => db?.drop())

describe("onConnect's server error in the log", () => {
  // The second: a class the opening's own errors have (08), which keep their message; a
  // function's raise is told by its context (`where`), whatever class it chose.
  test.each(['setup_tenant', 'setup_tenant_08'])(
    '%s: the server message quoting the parameter is withheld from the log',
    async (fn) => {
      const logs: string[] = []
      const stream = new Writable({
        write(chunk, _encoding, callback) {
          logs.push(String(chunk))
          callback()
        },
      })
      app = Fastify({ logger: { level: 'trace', stream } })
      const failure = await app
        .register(pgPoolCore, {
          connection: db.url,
          pool: { max: 2 },
          onConnect: async (sql) => {
            await sql`select ${sql(fn)}(${SECRET})`
          },
        })
        .then(
          () => undefined,
          (error: Error) => error,
        )
      expect((failure as { code?: string } | undefined)?.code).toBe('FST_PG_POOL_CONNECT_FAILED')
      const line = logs.find((text) => text.includes('FST_PG_POOL_CONNECT_FAILED'))
      expect(line, 'a log line for the refused connection').toBeDefined()
      expect(line).not.toContain(SECRET)
      expect(String((failure as { cause?: unknown } | undefined)?.cause)).not.toContain(SECRET)
    },
  )
})
