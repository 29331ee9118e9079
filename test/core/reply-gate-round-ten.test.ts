// Attacks on the reply gate that held (round ten of hostile probing), kept as regression tests: raw
// writes on a transaction route, then a throw, a second send, writeHead alone, flushHeaders. Over
// HTTP/1.1 the client gets what it gets without a transaction, and the work is committed unless the
// status written first is >= 400.
import type { FastifyInstance, FastifyReply, FastifyServerOptions } from 'fastify'
import { describe, expect, test } from 'vitest'
import { coreApp } from '../support/app.js'
import { sleep, waitFor } from '../support/database.js'
import { rawExchange } from '../support/http.js'
import { h2Request } from '../support/http2.js'
import { noteTable } from '../support/note-table.js'

const fx = noteTable()
const tx = { config: { db: { transaction: true } } } as const

type Shape = (reply: FastifyReply) => Promise<unknown>
const shapes: Record<string, Shape> = {
  // writeHead alone sends nothing: the payload after it is dropped, the response cut.
  writeHeadThenReturn: async (reply) => {
    reply.raw.writeHead(200, { 'content-type': 'text/plain' })
    return { x: 1 }
  },
  writeHeadThenThrow: async (reply) => {
    reply.raw.writeHead(200, { 'content-type': 'text/plain' })
    throw new Error('boom')
  },
  flushHeadersThenReturn: async (reply) => {
    reply.raw.flushHeaders()
    return { x: 1 }
  },
  // Headers flushed, nothing returned, the body ended later: delivered whole.
  flushHeadersEndLater: async (reply) => {
    reply.raw.setHeader('content-type', 'text/plain')
    reply.raw.flushHeaders()
    setTimeout(() => reply.raw.end('late'), 100)
  },
  // A raw write, a throw, and the app's error handler sending a second reply (200).
  writeThrowHandlerSends: async (reply) => {
    reply.raw.writeHead(200, { 'content-type': 'text/plain' })
    reply.raw.write('a')
    throw Object.assign(new Error('boom'), { handled: true })
  },
  writeThenSendReturnReply: async (reply) => {
    reply.raw.writeHead(200, { 'content-type': 'text/plain' })
    reply.raw.write('a')
    reply.send({ x: 1 })
    return reply
  },
  endThenThrow: async (reply) => {
    reply.raw.writeHead(201, { 'content-type': 'text/plain' })
    reply.raw.end('done')
    throw new Error('after end')
  },
  endThenSend500: async (reply) => {
    reply.raw.writeHead(201, { 'content-type': 'text/plain' })
    reply.raw.end('done')
    reply.code(500).send({ late: true })
    return reply
  },
  raw500ThenReturn: async (reply) => {
    reply.raw.writeHead(500, { 'content-type': 'text/plain' })
    reply.raw.end('err')
    return { x: 1 }
  },
}

function routes(app: FastifyInstance): void {
  app.setErrorHandler((error, _request, reply) => {
    if ((error as { handled?: boolean }).handled) return reply.code(200).send({ handled: true })
    return reply.send(error)
  })
  for (const [name, shape] of Object.entries(shapes)) {
    for (const [prefix, config] of [
      ['tx', tx],
      ['plain', {}],
    ] as const) {
      app.get(`/${prefix}/${name}`, config, async (request, reply) => {
        await request.db`insert into note values (${`${prefix}/${name}`})`
        return shape(reply)
      })
    }
  }
}

const withoutDate = (text: string) => text.replace(/date: [^\r]*\r\n/gi, '')

describe('held: raw writes on a transaction route answer as without one', () => {
  test('HTTP/1.1: every shape, the same bytes and socket end as without a transaction; committed unless written >= 400', async () => {
    fx.current = await coreApp(fx.db.url, { max: 3 })
    const { app } = fx.current
    routes(app)
    await app.listen({ port: 0, host: '127.0.0.1' })
    const port = (app.server.address() as { port: number }).port
    for (const name of Object.keys(shapes)) {
      const got: Record<string, { text: string; how: string }> = {}
      for (const prefix of ['tx', 'plain']) {
        const answer = await rawExchange(
          port,
          `GET /${prefix}/${name} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
        )
        got[prefix] = { text: withoutDate(answer.text), how: answer.how }
      }
      expect([name, got.tx]).toEqual([name, got.plain])
    }
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 5_000)).toBe(true)
    const rows = await fx.notes()
    const expected = Object.keys(shapes).flatMap((name) =>
      name === 'raw500ThenReturn' ? [`plain/${name}`] : [`plain/${name}`, `tx/${name}`],
    )
    expect(rows).toEqual(expected.sort())
  })

  test('HTTP/2: shapes that end their response themselves answer as without a transaction', async () => {
    fx.current = await coreApp(fx.db.url, { max: 3 }, { http2: true } as FastifyServerOptions)
    const { app } = fx.current
    routes(app)
    await app.listen({ port: 0, host: '127.0.0.1' })
    const port = (app.server.address() as { port: number }).port
    for (const name of ['flushHeadersEndLater', 'endThenThrow', 'endThenSend500', 'raw500ThenReturn']) {
      const { headers: _tx, ...tx2 } = await h2Request(port, `/tx/${name}`)
      const { headers: _plain, ...plain2 } = await h2Request(port, `/plain/${name}`)
      expect([name, tx2]).toEqual([name, plain2])
    }
    await sleep(50)
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 5_000)).toBe(true)
  })
})
