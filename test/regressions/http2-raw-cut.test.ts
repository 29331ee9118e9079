// Found by hostile probing (round ten, the newest code): over HTTP/2, a transaction route that wrote
// part of its response on reply.raw and then threw (or returned a payload) had its stream ended
// cleanly (END_STREAM, no error): the client took `200 part1,` for a whole response. The cut now
// resets the stream, as Fastify's own cut does without a transaction. Failed before the fix.
import http2 from 'node:http2'
import type { FastifyServerOptions } from 'fastify'
import { describe, expect, test } from 'vitest'
import { coreApp } from '../support/app.js'
import { waitFor } from '../support/database.js'
import { noteTable } from '../support/note-table.js'

const fx = noteTable()
const tx = { config: { db: { transaction: true } } } as const

interface Got {
  status: string | undefined
  body: string
  ended: boolean
  rstCode: number | undefined
}

function get(port: number, path: string): Promise<Got> {
  const session = http2.connect(`http://127.0.0.1:${port}`)
  session.on('error', () => {})
  const stream = session.request({ ':path': path })
  const got: Got = { status: undefined, body: '', ended: false, rstCode: undefined }
  stream.on('response', (headers) => {
    got.status = String(headers[':status'])
  })
  stream.setEncoding('utf8')
  stream.on('data', (chunk: string) => {
    got.body += chunk
  })
  stream.on('end', () => {
    got.ended = true
  })
  stream.on('error', () => {})
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      session.destroy()
      resolve(got)
    }, 8_000)
    stream.on('close', () => {
      clearTimeout(timer)
      got.rstCode = stream.rstCode
      session.close()
      resolve(got)
    })
  })
}

describe('HTTP/2: a raw response cut after a throw or a returned payload', () => {
  test('the client can tell it is incomplete, as on a route without a transaction', async () => {
    fx.current = await coreApp(fx.db.url, { max: 3 }, { http2: true } as FastifyServerOptions)
    const { app } = fx.current
    for (const [prefix, config] of [
      ['tx', tx],
      ['plain', {}],
    ] as const) {
      app.get(`/${prefix}/throws`, config, async (request, reply) => {
        await request.db`insert into note values (${`${prefix}-throws`})`
        reply.raw.writeHead(200, { 'content-type': 'text/csv' })
        reply.raw.write('part1,')
        throw new Error('failed half-way through the export')
      })
      app.get(`/${prefix}/returns`, config, async (request, reply) => {
        await request.db`insert into note values (${`${prefix}-returns`})`
        reply.raw.writeHead(200, { 'content-type': 'text/csv' })
        reply.raw.write('part1,')
        return { x: 1 }
      })
    }
    await app.listen({ port: 0, host: '127.0.0.1' })
    const port = (app.server.address() as { port: number }).port
    const plain = { throws: await get(port, '/plain/throws'), returns: await get(port, '/plain/returns') }
    // Without a transaction: cut with an error (the premise).
    expect(plain.throws).toMatchObject({ status: '200', body: 'part1,', ended: false })
    expect(plain.throws.rstCode).not.toBe(http2.constants.NGHTTP2_NO_ERROR)
    const transaction = { throws: await get(port, '/tx/throws'), returns: await get(port, '/tx/returns') }
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 5_000)).toBe(true)
    expect(transaction).toEqual(plain)
  })
})
