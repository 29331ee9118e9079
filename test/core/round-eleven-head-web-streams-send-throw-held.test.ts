// Hostile probing (fastify features): attacks on the core under less-travelled Fastify 5 features that
// HELD; kept as regression tests.
import { Readable } from 'node:stream'
import { describe, expect, test } from 'vitest'
import { coreApp } from '../support/app.js'
import { sleep, waitFor } from '../support/database.js'
import { listen, rawExchange } from '../support/http.js'
import { noteTable } from '../support/note-table.js'

const fx = noteTable()
const notes = fx.notes
const tx = { config: { db: { transaction: true } } } as const

type Db = (s: TemplateStringsArray, ...v: unknown[]) => { cursor(n: number): AsyncIterable<{ n: number }[]> }

function cursorGen(db: Db) {
  return async function* lines() {
    for await (const rows of db`select g as n, pg_sleep(0.002) as s from generate_series(1, 2000) g`.cursor(10)) {
      for (const row of rows) yield `${row.n}\n`
    }
  }
}

describe('HEAD with web streams', () => {
  for (const kind of ['web-stream', 'web-response', 'node-stream'] as const) {
    test(`HEAD of a plain GET answering a ${kind} over a cursor: answered, lease back, next request served`, async () => {
      fx.current = await coreApp(fx.db.url, { max: 1, acquireTimeout: 3_000 })
      const { app, applicationName } = fx.current
      app.get('/rows', async (request, reply) => {
        const gen = cursorGen(request.db as unknown as Db)()
        if (kind === 'node-stream') return Readable.from(gen)
        const stream = ReadableStream.from(gen)
        if (kind === 'web-stream') return reply.send(stream)
        return reply.send(
          new Response(stream as unknown as ConstructorParameters<typeof Response>[0], {
            status: 200,
            headers: { 'content-type': 'text/plain' },
          }),
        )
      })
      app.get('/x', async (request) => (await request.db`select 1 as one`)[0])
      const base = await listen(app)
      const { text, how } = await rawExchange(
        Number(new URL(base).port),
        'HEAD /rows HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
      )
      const status = /HTTP\/1\.1 (\d{3})/.exec(text)?.[1]
      // Fastify's HEAD handler cannot measure a web Response (Buffer.byteLength throws): its 500.
      expect({ status, how }).toEqual({ status: kind === 'web-response' ? '500' : '200', how: 'end' })
      expect(await waitFor(() => app.pgPool.stats().leased === 0, 3_000)).toBe(true)
      expect(await waitFor(async () => (await fx.db.countConnections(applicationName, 'active')) === 0)).toBe(true)
      expect((await app.inject('/x')).statusCode).toBe(200)
    })
  }
})

describe('send then throw', () => {
  test('reply.send(x) not awaited, then a throw, on a transaction route: status and rows agree', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    app.get('/st', tx, async (request, reply) => {
      await request.db`insert into note values ('st')`
      reply.send({ first: true })
      throw new Error('after send')
    })
    const r = await app.inject('/st')
    await sleep(50)
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    const rows = await notes()
    if (r.statusCode < 400) expect(rows).toEqual(['st'])
    else expect(rows).toEqual([])
  })

  test('reply.code(201).send(x) in preHandler and the handler still runs? rows agree with status', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    let handlerRan = false
    app.get(
      '/ph',
      {
        ...tx,
        preHandler: (request, reply, done) => {
          request.db`insert into note values ('ph')`.then(() => {
            reply.code(201).send({ early: true })
            done()
          }, done)
        },
      },
      async (request) => {
        handlerRan = true
        await request.db`insert into note values ('handler')`
        return { late: true }
      },
    )
    const r = await app.inject('/ph')
    await sleep(50)
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    const rows = await notes()
    expect({ status: r.statusCode, body: r.json(), rows: rows.includes('handler') ? 'handler' : 'no-handler' }).toEqual(
      {
        status: 201,
        body: { early: true },
        rows: 'no-handler',
      },
    )
    expect(rows).toContain('ph')
    void handlerRan
  })
})
