// HELD (probe-streams): what meets a route transaction while its COMMIT waits for the streamed
// payload's first chunk (33c1291).
// - The server ends the idle transaction meanwhile (`idle_in_transaction_session_timeout` shorter
//   than the wait): nothing committed, the next session clean; since round sixteen a 503
//   FST_PG_POOL_CONNECTION_LOST with Retry-After (the server closed the connection before the COMMIT
//   was sent), where it was a 500 FST_PG_POOL_COMMIT_FAILED. (A DBA's idle-in-transaction timeout
//   now bounds how long a first chunk may take.)
// - A compress-like onSend hook that replaces the stream with a gzip stream piped from it, added
//   before the plugin (the wait is on the gzip stream) or after it (on the source): 200 with the
//   body, committed; a source failing before its first byte: a 500, nothing committed.
// - Read-your-writes: the token header is on a reply whose first chunk came late (a Node stream and
//   a re-wrapped web Response), written after the COMMIT.
import { pipeline, Readable } from 'node:stream'
import { createGzip } from 'node:zlib'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyReply, type FastifyRequest } from 'fastify'
import { describe, expect, test } from 'vitest'
import { coreApp } from '../../../support/app.js'
import { waitFor } from '../../../support/database.js'
import { listen } from '../../../support/http.js'
import { noteTable } from '../../../support/note-table.js'
import { addSessionProbe, expectCleanSession } from '../../../support/session-probe.js'

const fx = noteTable()
const tx = { config: { db: { transaction: true } } } as const

/** A stream whose first chunk (or failure) comes after `ms`. */
function late(outcome: string | Error, ms: number): Readable {
  const stream = new Readable({ read() {} })
  setTimeout(() => {
    if (outcome instanceof Error) stream.destroy(outcome)
    else {
      stream.push(outcome)
      stream.push(null)
    }
  }, ms)
  return stream
}

describe('while the COMMIT waits for the first chunk', () => {
  test('the server ends the idle transaction: 503 CONNECTION_LOST, nothing committed, clean session', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    addSessionProbe(app)
    app.post('/order', tx, async (request) => {
      await request.db`set local idle_in_transaction_session_timeout = '200ms'`
      await request.db`insert into note values ('order')`
      return late('made', 1_500)
    })
    const res = await app.inject({ method: 'POST', url: '/order' })
    expect({ status: res.statusCode, code: res.json().code }).toEqual({
      status: 503,
      code: 'FST_PG_POOL_CONNECTION_LOST',
    })
    expect(res.headers['retry-after']).toBeDefined()
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    expect(await fx.notes()).toEqual([])
    await expectCleanSession(fx.db, fx.current)
  })

  for (const where of ['before', 'after'] as const) {
    test(`a gzip onSend hook added ${where} the plugin: served zipped and committed; a failed source rolls back`, async () => {
      const app = Fastify()
      fx.closers.push(() => app.close())
      const gzip = (_request: FastifyRequest, reply: FastifyReply, payload: unknown) => {
        if (!(payload instanceof Readable)) return Promise.resolve(payload)
        reply.header('content-encoding', 'gzip')
        const zipped = createGzip()
        pipeline(payload, zipped, () => {})
        return Promise.resolve(zipped)
      }
      if (where === 'before') app.addHook('onSend', gzip)
      await app.register(pgPoolCore, { connection: fx.db.url, pool: { max: 1 } })
      if (where === 'after') app.addHook('onSend', gzip)
      app.post('/ok', tx, async (request) => {
        await request.db`insert into note values ('ok')`
        return late('zipped', 200)
      })
      app.post('/fail', tx, async (request) => {
        await request.db`insert into note values ('fail')`
        return late(new Error('the source failed'), 200)
      })
      const base = await listen(app)
      // fetch unzips a gzip content-encoding itself.
      const ok = await fetch(`${base}/ok`, { method: 'POST' })
      expect([ok.status, ok.headers.get('content-encoding'), await ok.text()]).toEqual([200, 'gzip', 'zipped'])
      const fail = await fetch(`${base}/fail`, { method: 'POST' })
      expect(fail.status).toBe(500)
      await fail.arrayBuffer().catch(() => {})
      expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
      expect(await fx.notes()).toEqual(['ok'])
    })
  }

  test('read-your-writes: the token is on a reply whose first chunk came late', async () => {
    const app = Fastify()
    fx.closers.push(() => app.close())
    await app.register(pgPoolCore, {
      connection: fx.db.url,
      replicas: [fx.db.url],
      replica: { lagInterval: 50, readYourWrites: { secret: 'a-test-secret-of-some-length' } },
      pool: { max: 2 },
    })
    app.post('/node', tx, async (request) => {
      await request.db`insert into note values ('node')`
      return late('node', 300)
    })
    app.post('/web', tx, async (request) => {
      await request.db`insert into note values ('web')`
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          setTimeout(() => {
            controller.enqueue(new TextEncoder().encode('web'))
            controller.close()
          }, 300)
        },
      })
      return new Response(body, { status: 201 })
    })
    const node = await app.inject({ method: 'POST', url: '/node' })
    const web = await app.inject({ method: 'POST', url: '/web' })
    expect([node.statusCode, node.body, web.statusCode, web.body]).toEqual([200, 'node', 201, 'web'])
    expect(typeof node.headers['x-pg-read-after']).toBe('string')
    expect(typeof web.headers['x-pg-read-after']).toBe('string')
    expect(await fx.notes()).toEqual(['node', 'web'])
  })
})
