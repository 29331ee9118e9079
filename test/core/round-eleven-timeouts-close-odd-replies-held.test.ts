// Hostile probing (fastify features): attacks on the core under less-travelled Fastify 5 features that
// HELD; kept as regression tests.
import { createServer } from 'node:http'
import { connect } from 'node:net'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { describe, expect, test } from 'vitest'
import { coreApp } from '../support/app.js'
import { sleep, uniqueName, waitFor, waitUntil } from '../support/database.js'
import { listen, rawExchange } from '../support/http.js'
import { noteTable } from '../support/note-table.js'

const fx = noteTable()
const notes = fx.notes
const tx = { config: { db: { transaction: true } } } as const
const codeOf = (error: unknown) => (error as { code?: string }).code ?? String(error)

describe('server timeouts', () => {
  test('requestTimeout fires while the body trickles, after an onRequest hook wrote: rolled back, lease back', async () => {
    const name = uniqueName()
    const app = Fastify({
      serverFactory: (handler) =>
        createServer({ requestTimeout: 600, connectionsCheckingInterval: 100 } as never, handler),
    })
    fx.closers.push(() => app.close())
    await app.register(pgPoolCore, {
      connection: fx.db.url,
      pool: { max: 1, acquireTimeout: 2_000, applicationName: name, pgbouncer: fx.db.viaBouncer },
    })
    let handler = false
    app.post(
      '/up',
      {
        ...tx,
        onRequest: async (request) => {
          await request.db`insert into note values ('on-request')`
        },
      },
      async (request) => {
        handler = true
        await request.db`insert into note values ('handler')`
        return { ok: true }
      },
    )
    app.get('/x', async (request) => (await request.db`select 1 as one`)[0])
    const base = await listen(app)
    const port = Number(new URL(base).port)
    const socket = connect(port, '127.0.0.1')
    let text = ''
    socket.on('data', (c) => {
      text += c.toString('latin1')
    })
    socket.on('error', () => {})
    const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()))
    socket.write('POST /up HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"a":')
    await Promise.race([closed, sleep(8_000)])
    socket.destroy()
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 5_000)).toBe(true)
    expect({ handler, notes: await notes(), status: text.slice(0, 12) }).toEqual({
      handler: false,
      notes: [],
      status: 'HTTP/1.1 408',
    })
    expect((await app.inject('/x')).statusCode).toBe(200)
  })
})

describe('close', () => {
  test('an onClose hook added before the core uses app.db: refused with CLOSED, close does not hang', async () => {
    const app = Fastify()
    let outcome: unknown
    app.addHook('onClose', async (instance) => {
      try {
        await (instance as unknown as { db: (s: TemplateStringsArray) => Promise<unknown> }).db`select 1`
        outcome = 'ran'
      } catch (error) {
        outcome = codeOf(error)
      }
    })
    await app.register(pgPoolCore, {
      connection: fx.db.url,
      pool: { max: 1, acquireTimeout: 2_000, applicationName: uniqueName(), pgbouncer: fx.db.viaBouncer },
    })
    await app.ready()
    const started = Date.now()
    await app.close()
    expect(Date.now() - started).toBeLessThan(4_000)
    expect(outcome).toBe('FST_PG_POOL_CLOSED')
  })

  test('an onClose hook added after the core uses app.db: runs', async () => {
    const app = Fastify()
    await app.register(pgPoolCore, {
      connection: fx.db.url,
      pool: { max: 1, acquireTimeout: 2_000, applicationName: uniqueName(), pgbouncer: fx.db.viaBouncer },
    })
    let outcome: unknown
    app.addHook('onClose', async (instance) => {
      try {
        await instance.db`insert into note values ('on-close')`
        outcome = 'ran'
      } catch (error) {
        outcome = codeOf(error)
      }
    })
    await app.ready()
    await app.close()
    expect(outcome).toBe('ran')
    expect(await notes()).toEqual(['on-close'])
  })

  test('app.close() started (not awaited) inside a transaction handler: 200 only with its row', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1, closeTimeout: 1_000 })
    const { app } = fx.current
    let closing: Promise<unknown> | undefined
    app.post('/shutdown', tx, async (request) => {
      await request.db`insert into note values ('before-close')`
      closing = app.close()
      await sleep(50)
      await request.db`insert into note values ('after-close')`
      return { ok: true }
    })
    const base = await listen(app)
    const r = await fetch(`${base}/shutdown`, { method: 'POST' })
    const body = await r.text()
    await closing
    fx.current = undefined
    const rows = await notes()
    if (r.status === 200) expect(rows).toEqual(['after-close', 'before-close'])
    else expect({ status: r.status, rows, body }).toEqual({ status: 503, rows: [], body: expect.any(String) })
  })

  test('return503OnClosing: false, a keep-alive request arriving after closeTimeout cut the pool: answered, not hung', async () => {
    fx.current = await coreApp(
      fx.db.url,
      { max: 2, closeTimeout: 300, acquireTimeout: 2_000 },
      { return503OnClosing: false },
    )
    const { app, applicationName } = fx.current
    app.get('/slow', async (request) => {
      await request.db`select pg_sleep(2) as slow_close`
      return { ok: true }
    })
    app.get('/x', tx, async (request) => {
      await request.db`insert into note values ('late')`
      return { ok: true }
    })
    const base = await listen(app)
    const port = Number(new URL(base).port)
    // Socket A: the slow request; socket B: an idle keep-alive socket, used after the cut.
    const a = rawExchange(port, 'GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', 10_000)
    const b = connect(port, '127.0.0.1')
    let bText = ''
    b.on('data', (c) => {
      bText += c.toString('latin1')
    })
    b.on('error', () => {})
    const bClosing = new Promise<string>((resolve) => b.on('close', () => resolve('closed')))
    b.write('GET /x HTTP/1.1\r\nHost: x\r\n\r\n')
    await waitUntil(() => bText.includes('\r\n\r\n{'), 'first /x answer', 5_000)
    await waitUntil(async () => (await fx.db.running(applicationName, '%slow_close%')) === 1, 'slow running', 5_000)
    const closing = app.close()
    await sleep(600)
    bText = ''
    b.write('GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
    const bClosed = await Promise.race([bClosing, sleep(6_000).then(() => 'hung')])
    await closing
    fx.current = undefined
    const aResult = await a
    b.destroy()
    expect(bClosed).toBe('closed')
    const status = /HTTP\/1\.1 (\d+)/.exec(bText)?.[1] ?? 'none'
    const rows = await notes()
    // Either served with its row or refused with a 503 and no row; never a 200 without its row.
    if (status === '200') expect(rows).toEqual(['late', 'late'])
    else expect({ status, rows }).toEqual({ status: expect.stringMatching(/^(503|none)$/), rows: ['late'] })
    expect(aResult.how).not.toBe('no end')
  })
})

describe('odd replies', () => {
  test('a trailer that queries request.db (plain and transaction routes): refused, response ends, lease back', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    const outcomes: unknown[] = []
    for (const [url, options] of [
      ['/plain', {}],
      ['/tx', tx],
    ] as const) {
      app.get(url, options, async (request, reply) => {
        await request.db`insert into note values (${url})`
        reply.trailer('x-count', async () => {
          try {
            const [row] = await request.db`select count(*)::int as n from note`
            outcomes.push('ran')
            return String(row?.n)
          } catch (error) {
            outcomes.push(codeOf(error))
            return 'refused'
          }
        })
        return { ok: true }
      })
    }
    const base = await listen(app)
    for (const url of ['/plain', '/tx']) {
      const r = await fetch(`${base}${url}`)
      expect(r.status).toBe(200)
      await r.text()
    }
    expect(outcomes).toEqual(['FST_PG_POOL_RELEASED', 'FST_PG_POOL_RELEASED'])
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    expect(await notes()).toEqual(['/plain', '/tx'])
  })

  test('writeEarlyHints on a transaction route whose COMMIT fails: 103 then 500, nothing committed', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    await fx.db.sql.unsafe(
      'create table if not exists dc2 (id int primary key, ref int references dc2(id) deferrable initially deferred)',
    )
    app.get('/hints', tx, async (request, reply) => {
      await request.db`insert into note values ('hints')`
      reply.writeEarlyHints({ link: '</style.css>; rel=preload; as=style' })
      await request.db`insert into dc2 values (1, 99)`
      return { ok: true }
    })
    const base = await listen(app)
    const { text } = await rawExchange(
      Number(new URL(base).port),
      'GET /hints HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
    )
    const statuses = [...text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]))
    expect(statuses).toEqual([103, 500])
    expect(await notes()).toEqual([])
  })

  test('a custom reply serializer that throws after writes on a transaction route: 500, rolled back', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    app.get(
      '/ser',
      {
        ...tx,
        preSerialization: async (request, _reply, payload) => {
          await request.db`insert into note values ('pre-ser')`
          return payload
        },
      },
      async (request, reply) => {
        await request.db`insert into note values ('ser')`
        reply.serializer(() => {
          throw new Error('cannot serialize')
        })
        return { ok: true }
      },
    )
    const r = await app.inject('/ser')
    expect(r.statusCode).toBe(500)
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    expect(await notes()).toEqual([])
  })

  test('attachValidation on a transaction route: handler writes then answers 400 itself: rolled back', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    app.post(
      '/v',
      { ...tx, attachValidation: true, schema: { body: { type: 'object', required: ['a'] } } },
      async (request, reply) => {
        await request.db`insert into note values ('v')`
        if (request.validationError) return reply.code(400).send({ bad: true })
        return { ok: true }
      },
    )
    expect((await app.inject({ method: 'POST', url: '/v', payload: { b: 1 } })).statusCode).toBe(400)
    expect(await notes()).toEqual([])
  })

  test('return reply, answered later from a timer after more queries: committed', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    app.get('/later', tx, async (request, reply) => {
      setTimeout(() => {
        request.db`insert into note values ('later')`.then(
          () => reply.send({ ok: true }),
          (error) => reply.send(error),
        )
      }, 30)
      return reply
    })
    expect((await app.inject('/later')).statusCode).toBe(200)
    expect(await notes()).toEqual(['later'])
  })
})

describe('inject simulations', () => {
  // light-my-request's types want every flag; an absent one keeps its default (end: true).
  type Simulate = { end: boolean; split: boolean; error: boolean; close: boolean }
  const simulations = [{ close: true }, { split: true }, { end: true, close: true }] as unknown as Simulate[]
  for (const simulate of simulations) {
    test(`inject simulate ${JSON.stringify(simulate)} on a transaction POST: 2xx only with the row, lease back`, async () => {
      fx.current = await coreApp(fx.db.url, { max: 1 })
      const { app } = fx.current
      app.post('/s', tx, async (request) => {
        await request.db`insert into note values ('s')`
        await sleep(20)
        await request.db`select 1`
        return { ok: true }
      })
      const r = await app.inject({ method: 'POST', url: '/s', payload: { a: 1 }, simulate })
      expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
      const rows = await notes()
      if (r.statusCode === 200) expect(rows).toEqual(['s'])
      else expect(rows).toEqual([])
    })
  }
})
