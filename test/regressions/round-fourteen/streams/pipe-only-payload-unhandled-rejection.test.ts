// DEFECT (probe-streams, high: an unhandled rejection, which ends a Node process by default,
// and a request that never gets an answer while its connection stays leased).
// What the user does: a route transaction returns an object with a `pipe` method and nothing else
// (a hand-rolled "stream", a wrapper of a library's). Fastify takes it for a stream and answers a
// 500 `ERR_INVALID_ARG_TYPE` (its end-of-stream watcher refuses it): the same payload on a route
// without a transaction is that 500.
// What they see: no answer at all; the transaction and its connection stay held until the client
// gives up; an unhandled rejection `TypeError: body.getReader is not a function` (Node's default
// `--unhandled-rejections=throw` exits the process).
// Cause: request-lease.ts untilFirstChunk(): a payload with `pipe` but no `on` is not a Node stream
// by isNodeStream(), so it goes to firstWebChunk(), which calls `getReader()` on it; the rejection
// of that async function is dropped (`void untilFirstChunk(...).then(...)`, no rejection handler),
// so neither the ROLLBACK nor the reply ever comes.
// Expected: Fastify's own error reply (a 5xx), the work rolled back, the lease back, no process error.
import { Readable } from 'node:stream'
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

const pipeOnly = () => {
  const inner = Readable.from(['duck'])
  return { pipe: (destination: NodeJS.WritableStream) => inner.pipe(destination) }
}

describe('a payload with only a pipe method on a route transaction', () => {
  test('answered as Fastify answers it (a 5xx), rolled back, no process error', async () => {
    errorsOfProcess.start()
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    addSessionProbe(app)
    app.post('/plain', async () => pipeOnly())
    app.post('/order', tx, async (request) => {
      await request.db`insert into note values ('order')`
      return pipeOnly()
    })
    const base = await listen(app)
    const plain = await exchange(`${base}/plain`)
    expect(plain.status).toBe(500)
    const res = await exchange(`${base}/order`, 'POST', 4_000)
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    expect({ status: res.status, notes: await fx.notes(), processErrors: errorsOfProcess.stop() }).toEqual({
      status: 500,
      notes: [],
      processErrors: [],
    })
    await expectCleanSession(fx.db, fx.current)
  })
})
