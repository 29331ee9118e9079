// DEFECT (third-a, medium). What the user does: deploys with a common misconfiguration the server
// refuses at login: the app's role lacks CONNECT on the database (`revoke connect on database app
// from public`, the hardening every guide recommends, then a new role not granted it), or the
// database does not accept connections (`alter database app allow_connections false`, a
// maintenance switch, or a template database named by mistake).
// What they see: registration fails with FST_PG_POOL_CONNECT_FAILED whose cause (the only thing the
// log says) is `42501 insufficient_privilege: the server's message is withheld (it may quote a
// query parameter)` / `55000 object_not_in_prerequisite_state: the server's message is withheld`:
// nothing says which database, nor that it is the CONNECT privilege or allow_connections. The
// server's own message names no query parameter (no statement has run: it is the login's FATAL,
// `permission denied for database "app"` with `User does not have CONNECT privilege.`;
// `database "app" is not currently accepting connections`).
// What they should see: the server's message, as for the other login refusals (wrong password
// 28P01, unknown database 3D000, too many connections 53300 keep theirs).
// Cause: packages/core/src/error-mapping.ts:244 (openingClasses: 08, 28, 3D, 53, 57) and :258-260:
// an error in another class is taken for a statement's, though PostgreSQL's login (postinit.c
// CheckMyDatabase) raises 42501 and 55000 before any statement. Suggested fix: tell a login
// refusal by its FATAL severity before the session was ready (or by no statement having been sent
// yet), not by class; or add 42501 and 55000 when the error came before ReadyForQuery.
// Round thirteen, third round: failed on 381590e (both servers); passes after its fix.
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import postgres from 'postgres'
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName, urlAs } from '../../support/database.js'

let db: TestDatabase
let app: FastifyInstance | undefined
const role = uniqueName('third_a').replace('-', '_')
const closedDb = `${role}_closed`

beforeAll(async () => {
  db = await createTestDatabase()
  await db.admin.unsafe(`create role ${role} login password 'third-a-pw'`)
  const name = new URL(db.directUrl).pathname.slice(1)
  await db.admin.unsafe(`revoke connect on database ${name} from public`)
  await db.admin.unsafe(`create database ${closedDb}`)
  await db.admin.unsafe(`alter database ${closedDb} allow_connections false`)
})
afterEach(async () => {
  await app?.close().catch(() => {})
  app = undefined
})
afterAll(async () => {
  await db?.admin.unsafe(`drop database if exists ${closedDb}`)
  await db?.drop([role])
})

/** The cause's message of the registration's failure (what the log line carries). */
async function refusal(url: string): Promise<string> {
  app = Fastify()
  const failure = await app.register(pgPoolCore, { connection: url, pool: { max: 1 } }).then(
    () => undefined,
    (error: Error) => error,
  )
  expect((failure as { code?: string } | undefined)?.code).toBe('FST_PG_POOL_CONNECT_FAILED')
  return String((failure as { cause?: { message?: string } } | undefined)?.cause?.message)
}

/** What the server itself says, through a plain postgres.js client. */
async function serverSays(url: string): Promise<string> {
  const sql = postgres(url, { max: 1, onnotice: () => {} })
  try {
    await sql`select 1`
    return 'connected'
  } catch (error) {
    return (error as Error).message
  } finally {
    await sql.end({ timeout: 0 })
  }
}

test('a role without CONNECT on the database: the log says so', async () => {
  const url = urlAs(db.directUrl, role, 'third-a-pw')
  expect(await serverSays(url)).toMatch(/permission denied for database/)
  expect(await refusal(url)).toMatch(/permission denied for database/)
})

test('a database that does not accept connections: the log says so', async () => {
  const parsed = new URL(db.directUrl)
  parsed.pathname = `/${closedDb}`
  expect(await serverSays(parsed.toString())).toMatch(/not currently accepting connections/)
  expect(await refusal(parsed.toString())).toMatch(/not currently accepting connections/)
})
