// DEFECT (probe-streams, high: an uncaught exception, which ends a Node process, and a 500 over
// committed work).
// What the user does: a route transaction writes, then returns a Node stream that has its first
// chunk and fails right after it (an upstream that breaks, a generator that throws at its second
// item), while the pool's COMMIT is on its way.
// What they see: the stream's 'error' event is emitted with no listener on it: an uncaught
// exception (the process exits); and the reply is a 500 with the message of the stream's error,
// over the committed write.
// Cause: request-lease.ts firstChunk() removes its 'error' listener as soon as the first chunk is
// ready, and the COMMIT (a round trip) runs before Fastify pipes the stream and listens to it:
// between the two nobody listens to the stream's 'error'. Its 'readable' listener also makes the
// stream read ahead (Node reads up to the highWaterMark), so a failure at the second chunk comes in
// that window. Then Fastify sees an errored stream with no header sent and answers a 500.
// Expected: no process error; after a COMMIT, never a >= 400 (the README: "After the first chunk
// the status is sent: a later failure cuts the response after its 2xx, with the work committed").
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

describe('a streamed payload that fails just after its first chunk, during the COMMIT', () => {
  test('no process error; a status >= 400 only without the write committed', async () => {
    errorsOfProcess.start()
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    addSessionProbe(app)
    app.post('/order', tx, async (request) => {
      await request.db`insert into note values ('order')`
      const stream = new Readable({ read() {} })
      setTimeout(() => {
        stream.push('first part')
        setImmediate(() => stream.destroy(new Error('upstream broke after its first part')))
      }, 50)
      return stream
    })
    const base = await listen(app)
    const res = await exchange(`${base}/order`)
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    const committed = (await fx.notes()).includes('order')
    expect({
      status: typeof res.status === 'number' && res.status >= 400 ? 'error' : 'success or cut',
      committed,
      processErrors: errorsOfProcess.stop(),
    }).toEqual({
      status: committed ? 'success or cut' : 'error',
      committed,
      processErrors: [],
    })
    await expectCleanSession(fx.db, fx.current)
  })
})
