// DEFECT (probe-streams, high: a 200 whose body silently misses its first part; the client sees a
// whole response).
// What the user does: returns a Node stream that already flows because the app listens to its
// 'data' (a byte counter for a log line or a metric, a checksum, a tee): on a route transaction,
// or on a route without one with read-your-writes on (`replica.readYourWrites`) after a write.
// What they see: a 200 whose body lacks every chunk the stream emitted while the pool waited for
// the database (the COMMIT's round trip, the token's position): `second;` instead of
// `first;second;`. The same route on a plain app (no wait) gets the whole body.
// Cause: request-lease.ts onSend defers the reply (commitThenSend, the position of the writes for
// the token) with the stream left flowing: its 'data' events go to the app's listener only, as
// Fastify pipes it to the response only afterwards. 33c1291's firstChunk() skips the wait for a
// flowing stream and leaves it flowing (the window is the COMMIT's round trip; older too).
// Expected: the whole body (hold the stream, paused, until Fastify pipes it: the pipe resumes it).
import { PassThrough } from 'node:stream'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { describe, expect, test } from 'vitest'
import { coreApp } from '../../../support/app.js'
import { waitFor } from '../../../support/database.js'
import { listen } from '../../../support/http.js'
import { noteTable } from '../../../support/note-table.js'
import { exchange } from './kit.js'

const fx = noteTable()

/** A stream the app counts the bytes of (a 'data' listener): its first chunk goes at once. */
function countedStream(): PassThrough {
  const stream = new PassThrough()
  let bytes = 0
  stream.on('data', (chunk: Buffer) => {
    bytes += chunk.length
  })
  stream.on('end', () => void bytes)
  setImmediate(() => stream.write('first;'))
  setTimeout(() => stream.end('second;'), 150)
  return stream
}

describe('a stream the app already reads with a data listener', () => {
  test('a route transaction: the whole body', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    app.post('/plain', async (request) => {
      await request.db`insert into note values ('plain')`
      return countedStream()
    })
    app.post('/order', { config: { db: { transaction: true } } }, async (request) => {
      await request.db`insert into note values ('order')`
      return countedStream()
    })
    const base = await listen(app)
    expect(await exchange(`${base}/plain`)).toEqual({ status: 200, body: 'first;second;', whole: true })
    expect(await exchange(`${base}/order`)).toEqual({ status: 200, body: 'first;second;', whole: true })
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    expect(await fx.notes()).toEqual(['order', 'plain'])
  })

  test('read-your-writes on, a write on a route without a transaction: the whole body', async () => {
    const app = Fastify()
    fx.closers.push(() => app.close())
    await app.register(pgPoolCore, {
      connection: fx.db.url,
      replicas: [fx.db.url],
      replica: { lagInterval: 50, readYourWrites: { secret: 'a-test-secret-of-some-length' } },
      pool: { max: 2 },
    })
    app.post('/read', async () => countedStream())
    app.post('/write', async (request) => {
      await request.db`insert into note values ('write')`
      return countedStream()
    })
    const base = await listen(app)
    expect(await exchange(`${base}/read`)).toEqual({ status: 200, body: 'first;second;', whole: true })
    expect(await exchange(`${base}/write`)).toEqual({ status: 200, body: 'first;second;', whole: true })
  })
})
