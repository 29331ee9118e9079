import { Readable } from 'node:stream'
import { describe, expect, test } from 'vitest'
import { coreApp } from '../support/app.js'
import { sleep, waitFor } from '../support/database.js'
import { listen, startRequest } from '../support/http.js'
import { noteTable } from '../support/note-table.js'
import { addSessionProbe, expectCleanSession } from '../support/session-probe.js'

// Held attacks from hostile probing (round 8, request.db misuse): request.db used in Fastify hooks, reply.then and streamed generators.

const fx = noteTable({ primaryKey: true })
const notes = fx.notes
const tx = { config: { db: { transaction: true } } } as const

describe('hooks', () => {
  test('onResponse and reply.then use request.db: refused with RELEASED, nothing runs, no crash', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    addSessionProbe(app)
    const outcomes: string[] = []
    const record = (p: PromiseLike<unknown>) =>
      Promise.resolve(p).then(
        () => outcomes.push('ran'),
        (error: { code?: string }) => outcomes.push(error.code ?? 'error'),
      )
    app.addHook('onResponse', async (request) => {
      if (request.url === '/probe') return
      await record(request.db`insert into note values ('on-response')`)
    })
    app.get('/r', async (request, reply) => {
      await request.db`select 1`
      reply.then(
        () => record(request.db`insert into note values ('reply-then')`),
        () => {},
      )
      return { ok: true }
    })
    app.get('/r-tx', tx, async (request, reply) => {
      await request.db`insert into note values ('tx')`
      reply.then(
        () => record(request.db`insert into note values ('reply-then-tx')`),
        () => {},
      )
      return { ok: true }
    })
    app.get('/none', async (request, reply) => {
      reply.then(
        () => record(request.db`insert into note values ('first-use-after')`),
        () => {},
      )
      return { ok: true }
    })
    for (const url of ['/r', '/r-tx', '/none']) expect((await app.inject(url)).statusCode).toBe(200)
    expect(await waitFor(() => outcomes.length === 6)).toBe(true)
    expect(outcomes).toEqual(Array(6).fill('FST_PG_POOL_RELEASED'))
    expect(await notes()).toEqual(['tx'])
    await expectCleanSession(fx.db, fx.current)
  })

  test('a user onSend hook (after the plugin) querying on a transaction route: refused after the COMMIT (documented)', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    addSessionProbe(app)
    let hook: unknown
    app.addHook('onSend', async (request, _reply, payload) => {
      if (request.url !== '/tx') return payload
      hook = await request.db`insert into note values ('on-send')`.then(
        () => 'ran',
        (error: { code?: string }) => error.code,
      )
      return payload
    })
    app.get('/tx', tx, async (request) => {
      await request.db`insert into note values ('handler')`
      return { ok: true }
    })
    const res = await app.inject('/tx')
    // Core README: such a hook runs once the route transaction committed; request.db refuses there.
    expect(hook).toBe('FST_PG_POOL_RELEASED')
    expect(res.statusCode).toBe(200)
    expect(await notes()).toEqual(['handler'])
    await expectCleanSession(fx.db, fx.current)
  })

  test('preSerialization and onError hooks query on a transaction route: inside the transaction', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    addSessionProbe(app)
    app.addHook('preSerialization', async (request, _reply, payload) => {
      if (request.url === '/ok') await request.db`insert into note values ('pre-serialization')`
      return payload
    })
    app.addHook('onError', async (request) => {
      await request.db`insert into note values ('on-error')`.catch(() => {})
    })
    app.get('/ok', tx, async (request) => {
      await request.db`insert into note values ('ok')`
      return { ok: true }
    })
    app.get('/boom', tx, async (request) => {
      await request.db`insert into note values ('boom')`
      throw new Error('handler failed')
    })
    expect((await app.inject('/ok')).statusCode).toBe(200)
    expect((await app.inject('/boom')).statusCode).toBe(500)
    expect(await notes()).toEqual(['ok', 'pre-serialization'])
    await expectCleanSession(fx.db, fx.current)
  })

  test('onRequestAbort uses request.db: refused, lease back, next request clean', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    addSessionProbe(app)
    const outcomes: string[] = []
    app.addHook('onRequestAbort', async (request) => {
      await request.db`insert into note values ('abort-hook')`.then(
        () => outcomes.push('ran'),
        (error: { code?: string }) => outcomes.push(error.code ?? 'error'),
      )
    })
    app.get('/slow', async (request) => {
      await request.db`select pg_sleep(2)`
      return { ok: true }
    })
    const base = await listen(app)
    const req = startRequest(`${base}/slow`)
    expect(await waitFor(() => app.pgPool.stats().leased === 1)).toBe(true)
    await sleep(100)
    req.abort()
    expect(await waitFor(() => outcomes.length === 1)).toBe(true)
    expect(outcomes[0]).not.toBe('ran')
    expect(await notes()).toEqual([])
    await expectCleanSession(fx.db, fx.current)
  })
})

describe('streamed payloads', () => {
  test('an async generator payload on a plain route queries request.db while it is sent: works, lease back after', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    addSessionProbe(app)
    app.get('/gen', async (request, reply) => {
      await request.db`select 1`
      async function* lines() {
        for (let i = 0; i < 5; i++) {
          const [row] = await request.db`select ${i}::int as i`
          yield `${row?.i}\n`
        }
      }
      reply.type('text/plain')
      return Readable.from(lines())
    })
    const res = await app.inject('/gen')
    expect(res.statusCode).toBe(200)
    expect(res.body).toBe('0\n1\n2\n3\n4\n')
    await expectCleanSession(fx.db, fx.current)
  })

  test('an async generator payload whose first use of request.db is while streaming, on a plain route', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    addSessionProbe(app)
    app.get('/gen', async (request, reply) => {
      async function* lines() {
        for (let i = 0; i < 3; i++) {
          const [row] = await request.db`select ${i}::int as i`
          yield `${row?.i}\n`
        }
      }
      reply.type('text/plain')
      return Readable.from(lines())
    })
    const res = await app.inject('/gen')
    expect(res.statusCode).toBe(200)
    expect(res.body).toBe('0\n1\n2\n')
    await expectCleanSession(fx.db, fx.current)
  })
})
