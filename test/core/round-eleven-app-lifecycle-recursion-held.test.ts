// Hostile probing (fastify features): attacks on the core under less-travelled Fastify 5 features that
// HELD; kept as regression tests.

import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { describe, expect, test } from 'vitest'
import { coreApp } from '../support/app.js'
import { sleep, uniqueName, waitFor } from '../support/database.js'
import { listen } from '../support/http.js'
import { noteTable } from '../support/note-table.js'

const fx = noteTable()
const notes = fx.notes
const tx = { config: { db: { transaction: true } } } as const
const codeOf = (error: unknown) => (error as { code?: string }).code ?? String(error)

describe('lifecycle of the app', () => {
  test('close() while ready() is still registering the core: no backend left', async () => {
    const name = uniqueName()
    const app = Fastify()
    void app.register(pgPoolCore, {
      connection: fx.db.url,
      pool: { max: 2, applicationName: name, pgbouncer: fx.db.viaBouncer },
    })
    const ready = app.ready().then(
      () => 'ready',
      (error) => codeOf(error),
    )
    const closed = app.close().then(
      () => 'closed',
      (error) => codeOf(error),
    )
    const outcome = await Promise.race([Promise.all([ready, closed]), sleep(8_000).then(() => 'hung')])
    expect(outcome).not.toBe('hung')
    expect(await waitFor(async () => (await fx.db.countConnections(name)) === 0, 5_000)).toBe(true)
  })

  test('close() without ready() after a register: no backend left', async () => {
    const name = uniqueName()
    const app = Fastify()
    void app.register(pgPoolCore, {
      connection: fx.db.url,
      pool: { max: 2, applicationName: name, pgbouncer: fx.db.viaBouncer },
    })
    const outcome = await Promise.race([app.close().then(() => 'closed'), sleep(8_000).then(() => 'hung')])
    expect(outcome).toBe('closed')
    expect(await waitFor(async () => (await fx.db.countConnections(name)) === 0, 5_000)).toBe(true)
  })

  test('close() during listen(): no backend left, no hang', async () => {
    const name = uniqueName()
    const app = Fastify()
    await app.register(pgPoolCore, {
      connection: fx.db.url,
      pool: { max: 2, applicationName: name, pgbouncer: fx.db.viaBouncer },
    })
    app.get('/x', async (request) => (await request.db`select 1 as one`)[0])
    const listening = app.listen({ port: 0, host: '127.0.0.1' }).catch((error) => codeOf(error))
    const closing = app.close()
    const outcome = await Promise.race([
      Promise.all([listening, closing]).then(() => 'done'),
      sleep(8_000).then(() => 'hung'),
    ])
    expect(outcome).toBe('done')
    expect(await waitFor(async () => (await fx.db.countConnections(name)) === 0, 5_000)).toBe(true)
  })

  test('app.db inside a handler that holds the only connection: refused within acquireTimeout', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1, acquireTimeout: 400 })
    const { app } = fx.current
    app.post('/x', tx, async (request) => {
      await request.db`insert into note values ('outer')`
      const started = Date.now()
      let code: unknown
      try {
        await app.db`insert into note values ('app-db')`
      } catch (error) {
        code = codeOf(error)
      }
      let txCode: unknown
      try {
        await app.db.transaction(async (sql) => sql`insert into note values ('app-db-tx')`)
      } catch (error) {
        txCode = codeOf(error)
      }
      return { code, txCode, ms: Date.now() - started }
    })
    const r = await app.inject({ method: 'POST', url: '/x' })
    const body = r.json()
    expect({ code: body.code, txCode: body.txCode }).toEqual({
      code: 'FST_PG_POOL_ACQUIRE_TIMEOUT',
      txCode: 'FST_PG_POOL_ACQUIRE_TIMEOUT',
    })
    expect(body.ms).toBeLessThan(5_000)
    expect(await notes()).toEqual(['outer'])
  })

  test('nested inject three levels, pipelined outer, max 1: inner pipelined share, exclusive refused', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1, acquireTimeout: 400 })
    const { app } = fx.current
    app.get(
      '/leaf-p',
      { config: { db: { pipeline: true } } },
      async (request) => (await request.db`select 2 as two`)[0],
    )
    app.get('/leaf-x', async (request) => (await request.db`select 3 as three`)[0])
    app.get('/mid', { config: { db: { pipeline: true } } }, async (request) => {
      await request.db`select 1`
      const p = await app.inject('/leaf-p')
      const x = await app.inject('/leaf-x')
      return { p: p.statusCode, x: x.statusCode }
    })
    app.get('/top', { config: { db: { pipeline: true } } }, async (request) => {
      await request.db`select 1`
      return (await app.inject('/mid')).json()
    })
    const r = await app.inject('/top')
    expect(r.json()).toEqual({ p: 200, x: 503 })
    expect(await waitFor(() => app.pgPool.stats().leased === 0 && app.pgPool.stats().pipelined === 0)).toBe(true)
  })
})

describe('more HEAD', () => {
  test('HEAD of a transaction GET whose COMMIT fails: 500, nothing committed', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    await fx.db.sql.unsafe(
      'create table if not exists dc3 (id int primary key, ref int references dc3(id) deferrable initially deferred)',
    )
    app.get('/t', tx, async (request) => {
      await request.db`insert into note values ('head-fail')`
      await request.db`insert into dc3 values (1, 99)`
      return { ok: true }
    })
    const base = await listen(app)
    const head = await fetch(`${base}/t`, { method: 'HEAD' })
    expect(head.status).toBe(500)
    expect(await notes()).toEqual([])
  })

  test('HEAD of a hijacked transaction GET writing reply.raw: committed, lease back', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    app.get('/h', tx, async (request, reply) => {
      await request.db`insert into note values ('head-hijack')`
      reply.hijack()
      reply.raw.writeHead(200, { 'content-type': 'text/plain' })
      reply.raw.end('body')
    })
    const base = await listen(app)
    const head = await fetch(`${base}/h`, { method: 'HEAD' })
    expect(head.status).toBe(200)
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    expect(await notes()).toEqual(['head-hijack'])
  })
})
