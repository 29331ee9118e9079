// DEFECT (probe-third-streams, low/medium: a committed reply goes out without its headers).
// What the user does: an app has an async onSend hook added after the plugin (it sets a header and
// returns the payload: a request id, a cache policy, a server timing); a route transaction writes,
// sets its content type and a header, and returns a Node stream that has its first chunk and fails
// right after it, while the COMMIT runs.
// What they see: the 201 goes out with none of the reply's headers: no content-type, no header of
// the route's, none of the hook's (a read-your-writes token written on the reply would be lost the
// same way). Without the async hook the same reply has them all.
// Cause: request-lease.ts commitThenSend() calls `reply.raw.flushHeaders()` right after
// `later(null, payload)`, assuming Fastify wrote the headers synchronously. An async onSend hook
// after the plugin (or any hook that calls its `done` later) means Fastify has not applied the
// reply's headers yet: Node flushes the status line bare, and Fastify's sendStream then finds
// headersSent ("response will send, but you shouldn't use res.writeHead in stream mode").
// Expected: the headers go with the status (flush once Fastify pipes the stream: its 'pipe' event).
import { Readable } from 'node:stream'
import { describe, expect, test } from 'vitest'
import { coreApp } from '../../../support/app.js'
import { waitFor } from '../../../support/database.js'
import { listen } from '../../../support/http.js'
import { noteTable } from '../../../support/note-table.js'
import { see } from './kit.js'

const fx = noteTable()
const tx = { config: { db: { transaction: true } } } as const

describe('a stream failing after its first chunk during the COMMIT, with an async onSend hook after the plugin', () => {
  test('the status goes with the reply headers', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    app.addHook('onSend', async (_request, reply, payload) => {
      reply.header('x-served-by', 'api-1')
      return payload
    })
    app.get('/export', tx, async (request, reply) => {
      await request.db`insert into note values ('export')`
      reply.code(201).type('text/csv').header('x-export', 'yes')
      const stream = new Readable({ read() {} })
      setTimeout(() => {
        stream.push('first part')
        setImmediate(() => stream.destroy(new Error('upstream broke after its first part')))
      }, 50)
      return stream
    })
    const base = await listen(app)
    const seen = await see(`${base}/export`)
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    expect({
      status: seen.status,
      contentType: seen.headers['content-type'],
      route: seen.headers['x-export'],
      hook: seen.headers['x-served-by'],
      notes: await fx.notes(),
    }).toEqual({ status: 201, contentType: 'text/csv', route: 'yes', hook: 'api-1', notes: ['export'] })
  })
})
