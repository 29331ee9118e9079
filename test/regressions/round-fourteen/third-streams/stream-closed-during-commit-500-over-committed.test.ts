// DEFECT (probe-third-streams, high: a 500 over committed work).
// What the user does: a route transaction writes, then returns a Node stream that has its first
// chunk and is destroyed without an error right after it (an upstream closed early: an aborted
// proxy response, `stream.destroy()` from a timeout of the app's) while the COMMIT runs.
// What they see: a 500 (Fastify's "Premature close") while the write is committed. A stream that
// fails the same way with an error gets its 2xx, cut (stream-error-during-commit-crashes.test.ts).
// Cause: request-lease.ts firstChunk()'s handOver() gives back `late ?? stream.errored`: a stream
// destroyed without an error has neither, so commitThenSend() does not flush the status, and
// Fastify's end-of-stream watcher sees a premature close with no header sent: its error reply.
// Expected: after a COMMIT, never a >= 400 ("After the first chunk the status is sent: a later
// failure (also one during the COMMIT) cuts the response after its 2xx, with the work committed").
import { Readable } from 'node:stream'
import { afterEach, describe, expect, test } from 'vitest'
import { coreApp } from '../../../support/app.js'
import { waitFor } from '../../../support/database.js'
import { listen } from '../../../support/http.js'
import { noteTable } from '../../../support/note-table.js'
import { processErrors } from '../streams/kit.js'
import { see } from './kit.js'

const fx = noteTable()
const tx = { config: { db: { transaction: true } } } as const
const errorsOfProcess = processErrors()
afterEach(() => {
  errorsOfProcess.stop()
})

describe('a streamed payload closed without an error just after its first chunk, during the COMMIT', () => {
  test('a status >= 400 only without the write committed', async () => {
    errorsOfProcess.start()
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    app.post('/order', tx, async (request) => {
      await request.db`insert into note values ('order')`
      const stream = new Readable({ read() {} })
      setTimeout(() => {
        stream.push('first part')
        setImmediate(() => stream.destroy())
      }, 50)
      return stream
    })
    const base = await listen(app)
    const res = await see(`${base}/order`, 'POST')
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    const committed = (await fx.notes()).includes('order')
    expect({
      status: typeof res.status === 'number' && res.status >= 400 ? `error ${res.status}` : 'success or cut',
      committed,
      processErrors: errorsOfProcess.stop(),
    }).toEqual({
      status: committed ? 'success or cut' : expect.stringMatching(/^error/),
      committed,
      processErrors: [],
    })
  })
})
