// DEFECT (probe-hooks, high: a client told "failed" for work that was committed retries it).
// What the user does: a route transaction (`config.db.transaction: true`) writes, then returns a
// Node stream as its payload, and that stream fails before its first byte: its source throws (a
// report generator, a file that is not there, an upstream body that breaks), or it reads rows
// from a cursor of the request's own transaction (which is refused once the COMMIT ran).
// What they see: a 500 from Fastify's error handler (`FST_PG_POOL_RELEASED` for the cursor, the
// source's own error otherwise), and the handler's write is committed. The docs say a route
// transaction is "rolled back on a throw or a reply >= 400" (README.md, packages/*/README.md,
// docs/migrating-from-fastify-postgres.md): a client that believes them, or simply retries a 500,
// writes twice.
// What they should see: status and rows agree: a reply >= 400 only for work rolled back (or, if the
// COMMIT has to come first, never a >= 400 for it).
// Cause: request-lease.ts onSend commits before handing the stream to Fastify; Fastify reads the
// stream only afterwards, and a stream error before the first byte becomes an error reply
// (Fastify's sendStream -> onErrorHook), which the pool's second onSend lets through.
// Failed on bfda96f: the row is committed with a 500 in each case below.
import { createReadStream } from 'node:fs'
import { Readable } from 'node:stream'
import { describe, expect, test } from 'vitest'
import { coreApp } from '../../../support/app.js'
import { waitFor } from '../../../support/database.js'
import { listen, startPost } from '../../../support/http.js'
import { noteTable } from '../../../support/note-table.js'
import { addSessionProbe, expectCleanSession } from '../../../support/session-probe.js'

const fx = noteTable()
const tx = { config: { db: { transaction: true } } } as const

const payloads = {
  'a generator that throws before its first chunk': () =>
    Readable.from(
      (async function* () {
        yield* []
        throw new Error('the report could not be built')
      })(),
    ),
  'a file that is not there': () => createReadStream('/nonexistent/probe-hooks/report.pdf'),
  'a stream destroyed with an error before its first chunk': () => {
    const stream = new Readable({ read() {} })
    setTimeout(() => stream.destroy(new Error('upstream broke')), 20)
    return stream
  },
  'a web ReadableStream whose source fails': () =>
    new ReadableStream({
      pull(controller) {
        controller.error(new Error('web source failed'))
      },
    }),
  'a web Response whose body fails': () =>
    new Response(
      new ReadableStream({
        pull(controller) {
          controller.error(new Error('web source failed'))
        },
      }),
      { status: 201 },
    ),
  'a stream destroyed without an error before its first chunk': () => {
    const stream = new Readable({ read() {} })
    setTimeout(() => stream.destroy(), 20)
    return stream
  },
}

describe('a route transaction whose streamed payload fails before its first byte', () => {
  for (const [name, payload] of Object.entries(payloads)) {
    test(`${name}: a reply >= 400 only when nothing was committed`, async () => {
      fx.current = await coreApp(fx.db.url, { max: 1 })
      const { app } = fx.current
      addSessionProbe(app)
      app.post('/order', tx, async (request) => {
        await request.db`insert into note values ('order')`
        return payload()
      })
      const res = await app.inject({ method: 'POST', url: '/order' })
      expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
      const committed = (await fx.notes()).includes('order')
      expect({ status: res.statusCode >= 400 ? 'error' : 'success', committed }).toEqual(
        res.statusCode >= 400 ? { status: 'error', committed: false } : { status: 'success', committed: true },
      )
      await expectCleanSession(fx.db, fx.current)
    })
  }

  test('a cursor of its own transaction returned as the stream: never a 500 over the committed write', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    addSessionProbe(app)
    app.post('/order', tx, async (request) => {
      await request.db`insert into note values ('order')`
      const cursor = request.db`select i from generate_series(1, 30) i`.cursor(10)
      return Readable.from(
        (async function* () {
          for await (const rows of cursor) yield `${rows.length};`
        })(),
      )
    })
    // A response cut after its 200 (the cursor refused past the COMMIT) tells the client the body
    // is incomplete, not that the work failed.
    const status = await app.inject({ method: 'POST', url: '/order' }).then(
      (res) => res.statusCode,
      () => 'cut',
    )
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    const committed = (await fx.notes()).includes('order')
    expect({ status, committed }).not.toEqual({ status: 500, committed: true })
    await expectCleanSession(fx.db, fx.current)
  })
})

// The COMMIT waits for the stream's first chunk (the fix above): a client that hangs up meanwhile
// rolls the work back, and the stream, which nobody will read, is stopped.
describe('a route transaction waiting for its streamed payload’s first chunk', () => {
  test('a first chunk after 300 ms: 200 with the body, committed', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    app.post('/order', tx, async (request) => {
      await request.db`insert into note values ('order')`
      const stream = new Readable({ read() {} })
      setTimeout(() => {
        stream.push('made')
        stream.push(null)
      }, 300)
      return stream
    })
    const res = await app.inject({ method: 'POST', url: '/order' })
    expect({ status: res.statusCode, body: res.body }).toEqual({ status: 200, body: 'made' })
    expect(await fx.notes()).toContain('order')
  })

  const silent = {
    'a Node stream': () => {
      const stream = new Readable({ read() {} })
      return { payload: stream, stopped: () => stream.destroyed }
    },
    'a web ReadableStream': () => {
      let cancelled = false
      const payload = new ReadableStream({
        cancel() {
          cancelled = true
        },
      })
      return { payload, stopped: () => cancelled }
    },
  }
  for (const [name, make] of Object.entries(silent)) {
    test(`${name} with no first chunk, the client hangs up: rolled back, the stream stopped, the lease back`, async () => {
      fx.current = await coreApp(fx.db.url, { max: 1 })
      const { app } = fx.current
      addSessionProbe(app)
      let made: ReturnType<typeof make> | undefined
      app.post('/order', tx, async (request) => {
        await request.db`insert into note values ('order')`
        made = make()
        return made.payload
      })
      const base = await listen(app)
      const request = startPost(`${base}/order`, {})
      expect(await waitFor(() => made !== undefined)).toBe(true)
      // The transaction waits for the first chunk: the row is not committed yet.
      expect(await fx.notes()).not.toContain('order')
      request.abort()
      expect(await request.done).toBe('aborted')
      expect(await waitFor(() => made?.stopped() === true)).toBe(true)
      expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
      expect(await fx.notes()).not.toContain('order')
      await expectCleanSession(fx.db, fx.current)
    })
  }
})
