import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName } from '../support/database.js'
import { listen } from '../support/http.js'

// Found by hostile probing, second round (failed before the fix): every route of an encapsulated plugin registered
// BEFORE the core (`await app.register(routes); await app.register(pgPoolCore, ...)`, e.g. a docs
// or static plugin, or the app's own routes plugin loaded first) answers 500 "Cannot read
// properties of undefined (reading 'values')", even a route that never touches the database; a
// transaction route there never answers at all (the request hangs).
//
// Expected: the core only acts on requests that use it (packages/core/README.md: `request.db` is
// leased "on the first query"; a route that does not query takes no connection); a plugin of the
// app that has nothing to do with the database keeps working whatever the order of registration.
// At worst a route there that uses request.db should fail with a clear coded error, never hang.
//
// What happened before the fix: Fastify 5 gives those routes the hooks the core adds to the root later
// (gateRaw, onSend, onResponse, onError: see app.printRoutes({ includeHooks: true })), but not the
// request decorators (kOthers, kLease, ... are undefined there, not null). The core's onSend tests
// `leased[kOthers] === null` (request-lease.ts, onSend: `const others = leased[kOthers] === null ?
// undefined : this.#finishOthers(...)`) and #finishOthers then reads `others.values()` of
// undefined (request-lease.ts:240): a TypeError in onSend, so a 500. On a transaction route the
// gate is installed too; Fastify's fallback error reply goes through the gate's writeHead, whose
// commit callback throws the same TypeError synchronously inside Fastify's error handler: nothing
// is ever written.

let db: TestDatabase
let app: FastifyInstance | undefined
beforeAll(async () => {
  db = await createTestDatabase()
})
beforeEach(() => {
  app = undefined
})
afterEach(async () => {
  await app?.close()
})
afterAll(() => db.drop())

async function build(): Promise<FastifyInstance> {
  const created = Fastify()
  await created.register(async (child) => {
    child.get('/plain', async () => ({ ok: true }))
    child.post('/tx', { config: { db: { transaction: true } } }, async () => ({ ok: true }))
  })
  await created.register(pgPoolCore, { connection: db.url, pool: { max: 1, applicationName: uniqueName() } })
  created.get('/root', async (request) => (await request.db`select 1 as one`)[0])
  await created.ready()
  return created
}

describe('routes of a plugin registered before the core', () => {
  test('a route that never uses the database answers 200', async () => {
    app = await build()
    expect((await app.inject('/root')).json()).toEqual({ one: 1 }) // control: the root's route works
    const response = await app.inject('/plain')
    expect(response.body).toBe('{"ok":true}') // before the fix: 500 "Cannot read properties of undefined (reading 'values')"
    expect(response.statusCode).toBe(200)
  })

  test('a transaction route that never queries answers (never hangs)', async () => {
    app = await build()
    const base = await listen(app)
    let outcome: number | string
    try {
      const response = await fetch(`${base}/tx`, { method: 'POST', signal: AbortSignal.timeout(5000) })
      await response.text()
      outcome = response.status
    } catch (error) {
      outcome = String(error) // before the fix: TimeoutError: no answer at all
    }
    expect(outcome).toBe(200)
  })
})
