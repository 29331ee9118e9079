import { request as httpRequest } from 'node:http'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp } from '../../../support/app.js'
import { createTestDatabase, type TestDatabase, uniqueName, waitFor } from '../../../support/database.js'
import { listen } from '../../../support/http.js'

// Attack: app.close() from odd places: twice at once with a request in flight, from inside a
// handler (not awaited, and awaited), from an onClose hook of another plugin that still writes
// through app.db. Expected: every close() settles, requests in flight finish with their work
// committed (or a coded 503 with nothing committed), app.db in a hook that runs after the pool
// ended is a coded refusal, and nothing of the app is left on the server.

let db: TestDatabase
let app: FastifyInstance | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table notes (id serial primary key, note text not null)`
})
afterEach(async () => {
  await app?.close()
  app = undefined
  await db.sql`truncate notes`
})
afterAll(() => db.drop())

const notes = async () => (await db.sql<{ note: string }[]>`select note from notes order by id`).map((r) => r.note)

function post(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method: 'POST', agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        body += chunk
      })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
    })
    req.on('error', reject)
    req.end()
  })
}

describe('close() called', () => {
  test('twice at once with a transaction request in flight: both settle, the request commits, nothing left', async () => {
    const current = await coreApp(db.url, { max: 2, closeTimeout: 5_000 })
    app = current.app
    current.app.post('/slow', { config: { db: { transaction: true } } }, async (request) => {
      await request.db`insert into notes (note) values ('slow')`
      await request.db`select pg_sleep(0.3)`
      return { ok: true }
    })
    const base = await listen(current.app)
    const inFlight = post(`${base}/slow`)
    expect(await waitFor(async () => (await db.running(current.applicationName, '%pg_sleep(0.3)%')) === 1)).toBe(true)
    const closes = await Promise.allSettled([current.app.close(), current.app.close()])
    app = undefined
    expect(closes.map((c) => c.status)).toEqual(['fulfilled', 'fulfilled'])
    expect((await inFlight).status).toBe(200)
    expect(await notes()).toEqual(['slow'])
    expect(await waitFor(async () => (await db.countConnections(current.applicationName)) === 0)).toBe(true)
    expect(current.app.pgPool.stats()).toMatchObject({ open: 0, leased: 0, waiting: 0, accepting: false })
  })

  test('from a handler, not awaited: the handler goes on and commits, then everything ends', async () => {
    const current = await coreApp(db.url, { max: 2, closeTimeout: 5_000 })
    app = current.app
    let closed: Promise<void> | undefined
    current.app.post('/shutdown', { config: { db: { transaction: true } } }, async (request) => {
      closed = current.app.close()
      await request.db`insert into notes (note) values ('before')`
      await request.db`select pg_sleep(0.2)`
      await request.db`insert into notes (note) values ('after')`
      return { ok: true }
    })
    const base = await listen(current.app)
    const answer = await post(`${base}/shutdown`)
    await closed
    app = undefined
    expect(answer.status).toBe(200)
    expect(await notes()).toEqual(['before', 'after'])
    expect(await waitFor(async () => (await db.countConnections(current.applicationName)) === 0)).toBe(true)
  })

  test('from a transaction handler that awaits it: past closeTimeout a coded 503, nothing committed', async () => {
    const current = await coreApp(db.url, { max: 1, closeTimeout: 300 })
    app = current.app
    let after: unknown
    current.app.post('/shutdown', { config: { db: { transaction: true } } }, async (request) => {
      await request.db`insert into notes (note) values ('inside')`
      await current.app.close()
      after = await request.db`select 1`.then(
        () => 'ran',
        (error: { code?: string }) => error.code,
      )
      return { ok: true }
    })
    await current.app.ready()
    const answer = await current.app.inject({ method: 'POST', url: '/shutdown' })
    app = undefined
    expect({ status: answer.statusCode, code: answer.json().code, retryAfter: answer.headers['retry-after'] }).toEqual({
      status: 503,
      code: 'FST_PG_POOL_CLOSED',
      retryAfter: expect.any(String),
    })
    expect(String(after)).toMatch(/^FST_PG_POOL_(CLOSED|RELEASED)$/)
    expect(await notes()).toEqual([])
    expect(await waitFor(async () => (await db.countConnections(current.applicationName)) === 0)).toBe(true)
  })
})

describe('app.db in an onClose hook of another plugin', () => {
  async function build(order: 'before core' | 'after core') {
    const applicationName = uniqueName()
    const instance = Fastify()
    app = instance
    let outcome: unknown
    // Not encapsulated (as fastify-plugin does): its hook is the root's, beside the core's.
    const flusher = Object.assign(
      async (inner: FastifyInstance) => {
        inner.addHook('onClose', async () => {
          outcome = await inner.db`insert into notes (note) values ('flushed')`.then(
            () => 'written',
            (error: { code?: string }) => error.code,
          )
        })
      },
      { [Symbol.for('skip-override')]: true },
    )
    // Fastify runs onClose hooks in reverse order of registration: one added before the core's
    // runs after the pool ended.
    if (order === 'before core') instance.register(flusher)
    await instance.register(pgPoolCore, { connection: db.url, pool: { applicationName } })
    if (order === 'after core') instance.register(flusher)
    await instance.ready()
    await instance.close()
    app = undefined
    return { outcome, applicationName }
  }

  test('registered after the core: its write goes through, then the pool ends', async () => {
    const { outcome, applicationName } = await build('after core')
    expect(outcome).toBe('written')
    expect(await notes()).toEqual(['flushed'])
    expect(await waitFor(async () => (await db.countConnections(applicationName)) === 0)).toBe(true)
  })

  test('registered before the core: a coded refusal, nothing written, nothing left open', async () => {
    const { outcome, applicationName } = await build('before core')
    expect(outcome).toBe('FST_PG_POOL_CLOSED')
    expect(await notes()).toEqual([])
    expect(await waitFor(async () => (await db.countConnections(applicationName)) === 0)).toBe(true)
  })
})
