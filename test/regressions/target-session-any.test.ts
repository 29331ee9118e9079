import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

// Found by hostile probing, round 2 (options), failing before the fix. options.ts checks `sslmode` and `target_session_attrs`
// "as libpq names them" (checkConnectionParameters); libpq's target_session_attrs takes `any` too,
// its default (https://www.postgresql.org/docs/current/libpq-connect.html), which connection strings
// and PGTARGETSESSIONATTRS copied from libpq tools carry. The pool refuses it at register
// ("expected one of read-write, read-only, primary, standby, prefer-standby, got \"any\""); it
// means "no requirement" and should connect as if absent (postgres.js itself throws on 'any',
// so it has to be dropped before it reaches postgres.js).

let db: TestDatabase
let apps: FastifyInstance[] = []
const saved = process.env.PGTARGETSESSIONATTRS
beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  await Promise.all(apps.map((app) => app.close().catch(() => {})))
  apps = []
  if (saved === undefined) delete process.env.PGTARGETSESSIONATTRS
  else process.env.PGTARGETSESSIONATTRS = saved
})
afterAll(() => db.drop())

async function status(connection: unknown): Promise<number | string> {
  const app = Fastify()
  apps.push(app)
  app.get('/q', async (request) => request.db`select 1 as one`)
  return app
    .register(pgPoolCore, { connection: connection as never, pool: { max: 1 } })
    .ready()
    .then(
      async () => (await app.inject('/q')).statusCode,
      (error: Error & { code?: string }) => `${error.code}: ${error.message}`,
    )
}

describe("target_session_attrs 'any' (libpq's default) is accepted", () => {
  test('in the URL', async () => {
    expect(await status(`${db.url}${db.url.includes('?') ? '&' : '?'}target_session_attrs=any`)).toBe(200)
  })

  test('in options', async () => {
    const parsed = new URL(db.url)
    expect(
      await status({
        host: parsed.hostname,
        port: Number(parsed.port),
        database: parsed.pathname.slice(1),
        username: decodeURIComponent(parsed.username),
        ...(parsed.password ? { password: decodeURIComponent(parsed.password) } : {}),
        target_session_attrs: 'any',
      }),
    ).toBe(200)
  })

  // postgres.js reads the variable itself and refuses 'any' (uncoded, at register): the pool refuses
  // it first, coded, saying to unset it (documented in the core README, "Connection").
  test('from PGTARGETSESSIONATTRS: refused at register, coded, saying to unset it', async () => {
    process.env.PGTARGETSESSIONATTRS = 'any'
    const app = Fastify()
    const error = await app
      .register(pgPoolCore, { connection: db.url })
      .ready()
      .then(
        () => undefined,
        (e: Error & { code?: string }) => e,
      )
    await app.close().catch(() => {})
    expect(error?.code).toBe('FST_PG_POOL_INVALID_OPTION')
    expect(error?.message).toContain('unset it')
  })
})
