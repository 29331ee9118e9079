// DEFECT (probe-streams, high: a hang holding a connection, then a process crash).
// What the user does: a route transaction returns an old-style stream (a `Stream` that emits
// 'data' and 'end' itself, as `through`, `event-stream`, `combined-stream`/`form-data` and other
// pre-streams2 modules make). Fastify sends those: the same payload on a route without a
// transaction is a 200 with its body.
// What they see: on the transaction route the request never gets an answer, and the transaction
// and its connection stay held (`leased: 1`) while the client waits; when the client gives up,
// the process throws `TypeError: stream.destroy is not a function` from an event listener (an
// uncaught exception: Node exits).
// Cause: request-lease.ts firstChunk() waits for a 'readable' event, which only a streams2+
// Readable emits (the legacy stream's 'data' goes by unheard), and its hang-up cut calls
// `stream.destroy()`, which a legacy Stream does not have. isNodeStream() counts any object with
// `pipe` and `on` as one it can wait on.
// Expected: the legacy stream is sent as before 33c1291 (COMMIT, then the body): a 200 with the
// body and the row committed, no process error.
import { Stream } from 'node:stream'
import { afterEach, describe, expect, test } from 'vitest'
import { coreApp } from '../../../support/app.js'
import { waitFor } from '../../../support/database.js'
import { listen } from '../../../support/http.js'
import { noteTable } from '../../../support/note-table.js'
import { addSessionProbe, expectCleanSession } from '../../../support/session-probe.js'
import { exchange, processErrors } from './kit.js'

const fx = noteTable()
const tx = { config: { db: { transaction: true } } } as const
const errorsOfProcess = processErrors()
afterEach(() => {
  errorsOfProcess.stop()
})

/** A pre-streams2 stream: emits its data and end on its own, 100 ms from now. */
function legacyStream(text: string): Stream {
  const stream = new Stream() as Stream & { readable: boolean }
  stream.readable = true
  setTimeout(() => {
    stream.emit('data', Buffer.from(text))
    stream.emit('end')
  }, 100)
  return stream
}

describe('a legacy Stream returned by a route transaction', () => {
  test('sent like on a route without a transaction: 200 with its body, committed, no process error', async () => {
    errorsOfProcess.start()
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    addSessionProbe(app)
    app.post('/plain', async () => legacyStream('report'))
    app.post('/order', tx, async (request) => {
      await request.db`insert into note values ('order')`
      return legacyStream('report')
    })
    const base = await listen(app)
    // Fastify sends it on a route without a transaction.
    expect(await exchange(`${base}/plain`)).toEqual({ status: 200, body: 'report', whole: true })
    const res = await exchange(`${base}/order`, 'POST', 4_000)
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    expect({ res, notes: await fx.notes(), processErrors: errorsOfProcess.stop() }).toEqual({
      res: { status: 200, body: 'report', whole: true },
      notes: ['order'],
      processErrors: [],
    })
    await expectCleanSession(fx.db, fx.current)
  })
})
