// Hostile probing, round eleven (fastify features): the core registered in a child context (prefix), a route that
// queried, then reply.callNotFound(); the app's 404 handler (in the parent) answers with a stream.
// The core's onSend (kept by Fastify for the route) sees a streamed payload on a route without a
// transaction and keeps the lease for its onResponse; but after callNotFound Fastify runs the
// parent's 404 context's onResponse hooks, which are not the core's: the connection is never
// returned. README (core): the connection goes back "for a streamed reply of a route without a
// transaction, once the stream has been sent"; "no connection stays leased by one [request]".
// Fixed (request-lease.ts, responseClosed): a not-found reply whose response ended ends the leases
// nothing ended. An error thrown in such a parent not-found handler is still not seen (README).
import { Readable } from 'node:stream'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { expect, test } from 'vitest'
import { uniqueName, waitFor } from '../support/database.js'
import { listen } from '../support/http.js'
import { noteTable } from '../support/note-table.js'

const fx = noteTable()

for (const where of ['child context (prefix)', 'root (control)'] as const) {
  test(`core in the ${where}: a plain route queries, calls callNotFound, the 404 handler streams: lease back, next request served`, async () => {
    const app = Fastify()
    fx.closers.push(() => app.close())
    app.setNotFoundHandler(async (_request, reply) =>
      reply
        .code(404)
        .type('text/plain')
        .send(Readable.from(['not ', 'found'])),
    )
    const name = uniqueName()
    let pool: { stats(): { leased: number } } | undefined
    const routes = async (api: FastifyInstance) => {
      await api.register(pgPoolCore, {
        connection: fx.db.url,
        pool: {
          max: 1,
          acquireTimeout: 1_000,
          closeTimeout: 1_000,
          applicationName: name,
          pgbouncer: fx.db.viaBouncer,
        },
      })
      pool = api.pgPool
      api.get('/item', async (request, reply) => {
        const [row] = await request.db`select null::int as id`
        if (row?.id == null) return reply.callNotFound()
        return row
      })
      api.get('/ok', async (request) => (await request.db`select 1 as one`)[0])
    }
    const prefix = where === 'root (control)' ? '' : '/api'
    if (prefix === '') await routes(app)
    else await app.register(routes, { prefix })
    const base = await listen(app)
    const r = await fetch(`${base}${prefix}/item`)
    expect({ status: r.status, body: await r.text() }).toEqual({ status: 404, body: 'not found' })
    expect(await waitFor(() => pool?.stats().leased === 0, 3_000)).toBe(true)
    const next = await fetch(`${base}${prefix}/ok`)
    expect(next.status).toBe(200)
  })
}
