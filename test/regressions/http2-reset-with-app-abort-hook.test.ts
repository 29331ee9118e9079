// Found by hostile probing (round ten, the newest code): over HTTP/2, with an async onRequestAbort
// hook of the app's ahead of the plugin, a client that reset its stream mid-transaction had the
// first statement's row committed and the request counted 2xx. Node's HTTP/2 layer emits 'finish'
// for a reset stream, so Fastify runs onResponse, which ended the lease by its 200 before the
// plugin's deferred onRequestAbort came. Both tests failed before the fix: onResponse (core and
// metrics) reads a reset stream as a hang-up.
import http2 from 'node:http2'
import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import Fastify, { type FastifyInstance } from 'fastify'
import { describe, expect, test } from 'vitest'
import { parseExposition } from '../metrics/exposition.js'
import { uniqueName, waitFor, waitUntil } from '../support/database.js'
import { noteTable } from '../support/note-table.js'

const fx = noteTable()
const notes = fx.notes
const tx = { config: { db: { transaction: true } } } as const

async function classes(app: FastifyInstance): Promise<Record<string, number>> {
  const m = parseExposition((await app.inject('/metrics')).body)
  const out: Record<string, number> = {}
  for (const s of m.find('pg_pool_http_request_duration_seconds_count', {})) {
    if (s.labels.route === '/metrics') continue
    const k = `${s.labels.route}:${s.labels.status_class}`
    out[k] = (out[k] ?? 0) + s.value
  }
  return out
}

describe('HTTP/2 stream reset mid-transaction, with an async onRequestAbort hook of the app ahead of the plugin', () => {
  for (const method of ['GET', 'POST'] as const) {
    test(`${method}: rolled back, the next statement refused, counted aborted`, async () => {
      const app = Fastify({ http2: true })
      fx.closers.push(() => app.close())
      app.addHook('onRequestAbort', async (request) => {
        request.log.info('client aborted')
      })
      await app.register(pgPoolCore, { connection: fx.db.url, pool: { max: 2, applicationName: uniqueName() } })
      await app.register(pgPoolMetrics)
      let release!: () => void
      const hold = new Promise<void>((resolve) => {
        release = resolve
      })
      let between = false
      let settled: unknown
      app.route({
        method,
        url: '/tx',
        ...tx,
        handler: async (request) => {
          await request.db`insert into note values ('first')`
          between = true
          await hold
          try {
            await request.db`insert into note values ('second')`
            settled = 'ran'
          } catch (error) {
            settled = (error as { code?: string }).code
          }
          return { ok: true }
        },
      })
      await app.listen({ port: 0, host: '127.0.0.1' })
      const port = (app.server.address() as { port: number }).port
      const session = http2.connect(`http://127.0.0.1:${port}`)
      session.on('error', () => {})
      fx.closers.unshift(async () => session.destroy())
      const headers: http2.OutgoingHttpHeaders = { ':path': '/tx', ':method': method }
      if (method === 'POST') headers['content-type'] = 'application/json'
      const stream = session.request(headers)
      stream.on('error', () => {})
      stream.end(method === 'POST' ? '{"a":1}' : undefined)
      await waitUntil(() => between, 'the first statement', 10_000)
      stream.close(http2.constants.NGHTTP2_CANCEL)
      await waitFor(() => app.pgPool.stats().leased === 0, 3_000)
      release()
      await waitUntil(() => settled !== undefined, 'the handler to settle', 10_000)
      expect(await waitFor(() => app.pgPool.stats().leased === 0, 3_000)).toBe(true)
      expect({ settled, rows: await notes(), metrics: await classes(app as unknown as FastifyInstance) }).toEqual({
        settled: 'FST_PG_POOL_ABORTED',
        rows: [],
        metrics: { '/tx:aborted': 1 },
      })
    })
  }
})
