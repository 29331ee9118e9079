import { request as httpRequest } from 'node:http'
import http2 from 'node:http2'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { describe, expect, test } from 'vitest'
import { uniqueName, waitFor, waitUntil } from '../support/database.js'
import { noteTable } from '../support/note-table.js'

// Found by hostile probing, second round on client disconnects (195d3bd), failing before the fix.
// Fastify({ http2: true }): Http2ServerResponse has no `destroyed` property, so onSend's
// `reply.raw.destroyed ? 'abort' : ...` (request-lease.ts) sees undefined and COMMITs the work of
// a handler that destroyed its response (README: "A response the handler destroys itself
// (reply.raw.destroy()) is one no client gets: its route transaction rolls back").

const fx = noteTable()
const notes = fx.notes

function _startPost(url: string, body: unknown): { abort: () => void; done: Promise<number | 'aborted'> } {
  const text = JSON.stringify(body)
  const req = httpRequest(url, {
    method: 'POST',
    agent: false,
    headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) },
  })
  const done = new Promise<number | 'aborted'>((resolve) => {
    req.on('response', (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    })
    req.on('error', () => resolve('aborted'))
    req.on('close', () => resolve('aborted'))
  })
  req.end(text)
  return { abort: () => req.destroy(), done }
}

describe('HTTP/2', () => {
  test('HTTP/2 (h2c): reply.raw.destroy() in a transaction handler: rolled back', async () => {
    const applicationName = uniqueName()
    const app = Fastify({ http2: true })
    await app.register(pgPoolCore, {
      connection: fx.db.url,
      pool: { max: 1, acquireTimeout: 10_000, applicationName },
    })
    fx.closers.push(() => app.close())
    let returned = false
    app.get('/destroy', { config: { db: { transaction: true } } }, async (request, reply) => {
      await request.db`insert into note values ('h2-destroyed')`
      reply.raw.destroy()
      returned = true
      return { ok: true }
    })
    await app.listen({ port: 0, host: '127.0.0.1' })
    const port = (app.server.address() as { port: number }).port
    const session = http2.connect(`http://127.0.0.1:${port}`)
    session.on('error', () => {})
    fx.closers.unshift(async () => session.close())
    const stream = session.request({ ':path': '/destroy' })
    const outcome = await new Promise<string>((resolve) => {
      stream.on('response', (h) => resolve(String(h[':status'])))
      stream.on('error', () => resolve('failed'))
      stream.on('close', () => resolve('closed'))
      stream.resume()
    })
    await waitUntil(() => returned, 'the handler to return', 10_000)
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 5_000)).toBe(true)
    expect(outcome).not.toBe('200')
    expect(await notes()).toEqual([])
  })
})
