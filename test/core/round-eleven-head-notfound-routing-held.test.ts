// Hostile probing (fastify features): attacks on the core under less-travelled Fastify 5 features that
// HELD; kept as regression tests.
import { Readable } from 'node:stream'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { describe, expect, test } from 'vitest'
import { coreApp } from '../support/app.js'
import { uniqueName, waitFor } from '../support/database.js'
import { listen } from '../support/http.js'
import { noteTable } from '../support/note-table.js'

const fx = noteTable()
const notes = fx.notes
const tx = { config: { db: { transaction: true } } } as const
const codeOf = (error: unknown) => (error as { code?: string }).code ?? String(error)

describe('HEAD', () => {
  test('HEAD of a plain GET streaming a cursor: 200 empty, lease back, nothing runs', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1, acquireTimeout: 3_000 })
    const { app, applicationName } = fx.current
    app.get('/rows', async (request) => {
      const cursor = request.db`select g as n, 0 as s from generate_series(1, 3000) g`.cursor(200)
      async function* lines() {
        for await (const rows of cursor) for (const row of rows) yield `${row.n}\n`
      }
      return Readable.from(lines())
    })
    const base = await listen(app)
    const head = await fetch(`${base}/rows`, { method: 'HEAD' })
    expect(head.status).toBe(200)
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 10_000)).toBe(true)
    expect(await waitFor(async () => (await fx.db.countConnections(applicationName, 'active')) === 0)).toBe(true)
    const get = await fetch(`${base}/rows`)
    expect(get.status).toBe(200)
    expect((await get.text()).split('\n').length).toBe(3001)
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 5_000)).toBe(true)
  })

  test('HEAD of a pipelined GET and of a transaction GET streaming a generator', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1, acquireTimeout: 3_000 })
    const { app } = fx.current
    app.get('/p', { config: { db: { pipeline: true } } }, async (request) => {
      const [row] = await request.db`select 1 as one`
      return row
    })
    app.get('/t', tx, async (request) => {
      await request.db`insert into note values ('head-tx')`
      return Readable.from(['a', 'b'])
    })
    const base = await listen(app)
    expect((await fetch(`${base}/p`, { method: 'HEAD' })).status).toBe(200)
    expect((await fetch(`${base}/t`, { method: 'HEAD' })).status).toBe(200)
    expect(await waitFor(() => app.pgPool.stats().leased === 0 && app.pgPool.stats().pipelined === 0)).toBe(true)
    expect(await notes()).toEqual(['head-tx'])
  })
})

describe('not found and errors', () => {
  test('core in a child context: callNotFound after a query on a plain and a transaction route; root 404 handler queries', async () => {
    const app = Fastify()
    fx.closers.push(() => app.close())
    app.setNotFoundHandler(async (request, reply) => {
      const db = (request as { db?: (s: TemplateStringsArray) => Promise<unknown> }).db
      if (db !== undefined) await db`insert into note values ('404-handler')`
      return reply.code(404).send({ nf: true })
    })
    let pool: { stats(): { leased: number } } | undefined
    await app.register(
      async (api) => {
        await api.register(pgPoolCore, {
          connection: fx.db.url,
          pool: { max: 1, acquireTimeout: 2_000, applicationName: uniqueName(), pgbouncer: fx.db.viaBouncer },
        })
        api.get('/plain', async (request, reply) => {
          await request.db`insert into note values ('plain')`
          reply.callNotFound()
          return reply
        })
        api.get('/tx', tx, async (request, reply) => {
          await request.db`insert into note values ('tx')`
          reply.callNotFound()
          return reply
        })
        pool = api.pgPool
        api.get('/ok', async (request) => (await request.db`select 1 as one`)[0])
      },
      { prefix: '/api' },
    )
    const a = await app.inject('/api/plain')
    const b = await app.inject('/api/tx')
    expect([a.statusCode, b.statusCode]).toEqual([404, 404])
    expect(await waitFor(() => pool?.stats().leased === 0, 5_000)).toBe(true)
    expect((await app.inject('/api/ok')).statusCode).toBe(200)
    expect(await notes()).toEqual(['404-handler', 'plain'])
  })

  test('error handler that sends twice on a transaction route: one answer, rolled back, lease back', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    app.setErrorHandler(async (_error, request, reply) => {
      await request.db`insert into note values ('eh')`
      reply.code(200).send({ first: true })
      return { second: true }
    })
    app.get('/x', tx, async (request) => {
      await request.db`insert into note values ('handler')`
      throw new Error('boom')
    })
    const r = await app.inject('/x')
    expect({ s: r.statusCode, b: r.json() }).toEqual({ s: 200, b: { first: true } })
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    expect(await notes()).toEqual([])
  })

  test('sync error handler sending twice on a plain route', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    app.setErrorHandler((_error, _request, reply) => {
      reply.code(409).send({ first: true })
      reply.code(200).send({ second: true })
    })
    app.get('/x', async (request) => {
      await request.db`insert into note values ('plain')`
      throw new Error('boom')
    })
    const r = await app.inject('/x')
    expect(r.statusCode).toBe(409)
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    expect(await notes()).toEqual(['plain'])
  })
})

describe('recursion and lifecycle', () => {
  test('app.inject from inside a handler holding the only connection: inner refused within acquireTimeout', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1, acquireTimeout: 500 })
    const { app } = fx.current
    app.get('/inner', async (request) => (await request.db`select 1 as one`)[0])
    app.get('/outer', tx, async (request) => {
      await request.db`insert into note values ('outer')`
      const started = Date.now()
      const inner = await app.inject('/inner')
      return { status: inner.statusCode, code: inner.json().code, ms: Date.now() - started }
    })
    const r = await app.inject('/outer')
    expect(r.statusCode).toBe(200)
    const body = r.json()
    expect({ status: body.status, code: body.code }).toEqual({ status: 503, code: 'FST_PG_POOL_ACQUIRE_TIMEOUT' })
    expect(body.ms).toBeLessThan(5_000)
    expect(await notes()).toEqual(['outer'])
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
  })

  test('ready() twice and close() twice concurrently', async () => {
    const { app, applicationName } = await coreApp(fx.db.url, { max: 2 })
    app.get('/x', async (request) => (await request.db`select 1 as one`)[0])
    await Promise.all([app.ready(), app.ready()])
    await app.ready()
    expect((await app.inject('/x')).statusCode).toBe(200)
    await Promise.all([app.close(), app.close()])
    await app.close()
    expect(await waitFor(async () => (await fx.db.countConnections(applicationName)) === 0)).toBe(true)
  })
})

describe('routing', () => {
  test('version and host constraints pick the route config', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    app.get('/c', { ...tx, constraints: { version: '1.0.0' } }, async (request, reply) => {
      await request.db`insert into note values ('v1-tx')`
      return reply.code(500).send({ v: 1 })
    })
    app.get('/c', { constraints: { version: '2.0.0' } }, async (request, reply) => {
      await request.db`insert into note values ('v2-plain')`
      return reply.code(500).send({ v: 2 })
    })
    app.get('/h', { ...tx, constraints: { host: 'a.example' } }, async (request, reply) => {
      await request.db`insert into note values ('host-a-tx')`
      return reply.code(500).send({ h: 'a' })
    })
    app.get('/h', async (request, reply) => {
      await request.db`insert into note values ('host-other')`
      return reply.code(500).send({ h: 'other' })
    })
    app.options('/o', tx, async (request, reply) => {
      await request.db`insert into note values ('options-tx')`
      return reply.code(204).send()
    })
    const r = [
      await app.inject({ url: '/c', headers: { 'accept-version': '1.x' } }),
      await app.inject({ url: '/c', headers: { 'accept-version': '2.x' } }),
      await app.inject({ url: '/h', headers: { host: 'a.example' } }),
      await app.inject({ url: '/h', headers: { host: 'b.example' } }),
      await app.inject({ method: 'OPTIONS', url: '/o' }),
    ]
    expect(r.map((x) => x.statusCode)).toEqual([500, 500, 500, 500, 204])
    expect(await notes()).toEqual(['host-other', 'options-tx', 'v2-plain'])
  })

  test('an onRoute hook that makes routes transactions', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    app.addHook('onRoute', (route) => {
      if (route.url.startsWith('/auto')) route.config = { ...(route.config ?? {}), db: { transaction: true } } as never
    })
    app.post('/auto', async (request, reply) => {
      await request.db`insert into note values ('auto')`
      return reply.code(500).send({})
    })
    app.post('/auto-ok', async (request) => {
      await request.db`insert into note values ('auto-ok')`
      return {}
    })
    expect((await app.inject({ method: 'POST', url: '/auto' })).statusCode).toBe(500)
    expect((await app.inject({ method: 'POST', url: '/auto-ok' })).statusCode).toBe(200)
    expect(await notes()).toEqual(['auto-ok'])
  })

  test('an onRoute hook that sets an invalid config.db: refused at first use, not served without', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    app.addHook('onRoute', (route) => {
      if (route.url === '/bad') route.config = { ...(route.config ?? {}), db: { transaction: 'yes' } } as never
    })
    let caught: unknown
    app.post('/bad', async (request) => {
      try {
        await request.db`insert into note values ('bad')`
      } catch (error) {
        caught = codeOf(error)
        throw error
      }
      return {}
    })
    const r = await app.inject({ method: 'POST', url: '/bad' })
    expect({ s: r.statusCode, caught }).toEqual({ s: 500, caught: 'FST_PG_POOL_INVALID_OPTION' })
    expect(await notes()).toEqual([])
  })
})

describe('hooks', () => {
  test('preHandler replies early after writing (200 commits, 403 rolls back), async preHandler throws after writing', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    for (const [url, status] of [
      ['/200', 200],
      ['/403', 403],
    ] as const) {
      app.get(
        url,
        {
          ...tx,
          preHandler: async (request, reply) => {
            await request.db`insert into note values (${url})`
            return reply.code(status).send({ early: true })
          },
        },
        async () => ({ handler: true }),
      )
    }
    app.get(
      '/throw',
      {
        ...tx,
        preHandler: async (request) => {
          await request.db`insert into note values ('throw')`
          throw new Error('nope')
        },
      },
      async () => ({ handler: true }),
    )
    app.get(
      '/onrequest',
      {
        ...tx,
        onRequest: async (request, reply) => {
          await request.db`insert into note values ('onrequest')`
          return reply.send({ early: true })
        },
      },
      async () => ({ handler: true }),
    )
    app.post(
      '/preparsing',
      {
        ...tx,
        preParsing: async (request, _reply, payload) => {
          await request.db`insert into note values ('preparsing')`
          return payload
        },
      },
      async () => ({ handler: true }),
    )
    const statuses = [
      (await app.inject('/200')).statusCode,
      (await app.inject('/403')).statusCode,
      (await app.inject('/throw')).statusCode,
      (await app.inject('/onrequest')).statusCode,
      (
        await app.inject({
          method: 'POST',
          url: '/preparsing',
          payload: '{bad',
          headers: { 'content-type': 'application/json' },
        })
      ).statusCode,
    ]
    expect(statuses).toEqual([200, 403, 500, 200, 400])
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    expect(await notes()).toEqual(['/200', 'onrequest'])
  })
})
