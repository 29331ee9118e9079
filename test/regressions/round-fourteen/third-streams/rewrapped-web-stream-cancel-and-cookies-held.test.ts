// HELD (probe-third-streams): a route transaction's web stream is read up to its first chunk and
// re-wrapped (request-lease.ts firstWebChunk) before Fastify sends it. Fastify's own cancels of the
// re-wrapped stream (an automatic HEAD route, a client that hangs up mid-body) reach the app's
// source (its cancel runs: an upstream is released), the work is committed once, the connection
// comes back, and no process error. A web Response re-wrapped keeps its status, statusText and
// every Set-Cookie, as the same app without the plugin sends them.
import { Readable } from 'node:stream'
import Fastify, { type FastifyInstance } from 'fastify'
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

/** An endless web stream, a chunk every 20 ms; its cancel is counted. */
function endless(cancelled: string[], name: string): ReadableStream<Uint8Array> {
  let n = 0
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      await new Promise((resolve) => setTimeout(resolve, 20))
      controller.enqueue(new TextEncoder().encode(`chunk ${n++}\n`))
    },
    cancel() {
      cancelled.push(name)
    },
  })
}

describe('a re-wrapped web stream', () => {
  test('HEAD and a hang-up mid-body cancel the source; committed once; connection back', async () => {
    errorsOfProcess.start()
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    const cancelled: string[] = []
    app.get('/feed/:name', tx, async (request) => {
      const { name } = request.params as { name: string }
      await request.db`insert into note values (${name})`
      return endless(cancelled, name)
    })
    const base = await listen(app)
    const head = await see(`${base}/feed/head`, 'HEAD')
    // A client that reads a little and hangs up.
    const controller = new AbortController()
    const res = await fetch(`${base}/feed/cut`, { signal: controller.signal })
    const reader = (res.body as ReadableStream<Uint8Array>).getReader()
    const first = await reader.read()
    controller.abort()
    expect(await waitFor(() => cancelled.length === 2, 10_000)).toBe(true)
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    expect({
      head: head.status,
      cutStatus: res.status,
      firstChunk: new TextDecoder().decode(first.value),
      cancelled: [...cancelled].sort(),
      notes: await fx.notes(),
      processErrors: errorsOfProcess.stop(),
    }).toEqual({
      head: 200,
      cutStatus: 200,
      firstChunk: 'chunk 0\n',
      cancelled: ['cut', 'head'],
      notes: ['cut', 'head'],
      processErrors: [],
    })
  }, 30_000)

  test('a Response keeps status, statusText and every Set-Cookie, as without the plugin', async () => {
    const routes = (app: FastifyInstance, withDb: boolean) => {
      app.get('/login', withDb ? tx : {}, async (request) => {
        if (withDb) await request.db`insert into note values ('login')`
        const headers = new Headers({ 'content-type': 'text/plain', 'x-a': 'b' })
        headers.append('set-cookie', 'a=1; Path=/')
        headers.append('set-cookie', 'b=2; Path=/; HttpOnly')
        const body = Readable.toWeb(Readable.from(['wel', 'come'])) as ReadableStream<Uint8Array>
        return new Response(body, { status: 202, statusText: 'Accepted Later', headers })
      })
    }
    const control = Fastify()
    routes(control, false)
    const expected = await see(`${await listen(control)}/login`)
    await control.close()
    fx.current = await coreApp(fx.db.url, { max: 1 })
    routes(fx.current.app, true)
    const got = await see(`${await listen(fx.current.app)}/login`)
    const pick = (s: typeof got) => ({
      status: s.status,
      body: s.body,
      cookies: s.headers['set-cookie'],
      type: s.headers['content-type'],
      xa: s.headers['x-a'],
      length: s.headers['content-length'],
    })
    expect(pick(got)).toEqual(pick(expected))
    expect(pick(got).cookies).toEqual(['a=1; Path=/', 'b=2; Path=/; HttpOnly'])
    expect(await fx.notes()).toEqual(['login'])
  })
})
