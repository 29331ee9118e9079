// DEFECT (probe-third-streams, high: a hang, on every route of an app with the plugin, with or
// without a database use or a transaction).
// What the user does: a handler returns a Node stream it also reads itself (a 'data' byte counter,
// or `source.pipe(auditSink)`); an onSend hook added after the plugin reads the payload with a
// 'data' listener (a body logger that re-emits it through a PassThrough), or replaces the payload
// (a cache hit, a redaction) so that Fastify never pipes the stream.
// What they see: the request never gets an answer (the logger's 'data' listener never gets a
// chunk), and the app's own audit pipe never finishes. The same app without the plugin answers
// the whole body and the audit sink gets every chunk.
// Cause: request-lease.ts onSend pauses every flowing Node Readable payload at its start (on every
// leased route: `if (isNodeReadable(payload) && payload.readableFlowing === true) payload.pause()`),
// relying on Fastify's pipe() to resume it. A paused stream (readableFlowing false) is not
// resumed by a new 'data' listener, and nobody resumes it when Fastify does not pipe it.
// Expected: what the app gets without the plugin; the stream is given back flowing when onSend
// hands the payload on.
import { PassThrough, Readable, Writable } from 'node:stream'
import Fastify, { type FastifyInstance } from 'fastify'
import { describe, expect, test } from 'vitest'
import { coreApp } from '../../../support/app.js'
import { waitFor } from '../../../support/database.js'
import { listen } from '../../../support/http.js'
import { noteTable } from '../../../support/note-table.js'
import { type Seen, see } from './kit.js'

const fx = noteTable()
const tx = { config: { db: { transaction: true } } } as const

/** A stream that has its chunks a moment after the handler returned. */
function later(chunks: string[]): Readable {
  const stream = new Readable({ read() {} })
  setTimeout(() => {
    for (const chunk of chunks) stream.push(chunk)
    stream.push(null)
  }, 100)
  return stream
}

/** The app's routes and hooks, on an app with the plugin or without it. */
function routes(app: FastifyInstance, withDb: boolean, audited: string[]): void {
  // A body logger (added after the plugin): re-emits the payload, read with 'data'.
  app.addHook('onSend', async (request, _reply, payload) => {
    if (request.url.includes('/logged') && payload instanceof Readable) {
      const out = new PassThrough()
      payload.on('data', (chunk: Buffer) => out.write(chunk))
      payload.on('end', () => out.end())
      return out
    }
    if (request.url.includes('/cached')) return 'from the cache'
    return payload
  })
  const counted = (): Readable => {
    const stream = later(['one,', 'two,', 'three'])
    let bytes = 0
    stream.on('data', (chunk: Buffer) => {
      bytes += chunk.length
    })
    stream.on('end', () => audited.push(`counted ${bytes}`))
    return stream
  }
  const piped = (): Readable => {
    const stream = later(['one,', 'two,', 'three'])
    let got = ''
    stream.pipe(
      new Writable({
        write(chunk, _encoding, callback) {
          got += String(chunk)
          callback()
        },
        final(callback) {
          audited.push(`audit ${got}`)
          callback()
        },
      }),
    )
    return stream
  }
  app.get('/nodb/logged', async () => counted())
  app.get('/nodb/cached', async () => piped())
  app.get('/plain/logged', async (request) => {
    if (withDb) await request.db`select 1`
    return counted()
  })
  app.get('/tx/logged', withDb ? tx : {}, async (request) => {
    if (withDb) await request.db`select 1`
    return counted()
  })
  app.get('/tx/cached', withDb ? tx : {}, async (request) => {
    if (withDb) await request.db`select 1`
    return piped()
  })
}

const paths = ['/nodb/logged', '/nodb/cached', '/plain/logged', '/tx/logged', '/tx/cached']

async function run(app: FastifyInstance, audited: string[]): Promise<Record<string, unknown>> {
  const base = await listen(app)
  const out: Record<string, unknown> = {}
  for (const path of paths) {
    const seen: Seen = await see(`${base}${path}`, 'GET', 5_000)
    out[path] = { status: seen.status, body: seen.body }
  }
  // Every stream had its time to end (the audit sinks end with them).
  await waitFor(() => audited.length === paths.length, 3_000)
  out.audited = [...audited].sort()
  return out
}

describe('a flowing stream payload read by a later onSend hook, or not piped by Fastify', () => {
  test('answered and read whole, as without the plugin', async () => {
    const control = Fastify()
    const controlAudit: string[] = []
    routes(control, false, controlAudit)
    const expected = await run(control, controlAudit)
    await control.close()

    fx.current = await coreApp(fx.db.url, { max: 2 })
    const audited: string[] = []
    routes(fx.current.app, true, audited)
    const got = await run(fx.current.app, audited)
    expect(await waitFor(() => fx.current?.app.pgPool.stats().leased === 0)).toBe(true)
    expect(got).toEqual(expected)
  }, 60_000)
})
