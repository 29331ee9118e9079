// HELD (probe-third-streams): 40 streamed replies (route transaction, plain route, web Response)
// on one keep-alive connection leave no listener behind on the socket or on the returned streams,
// and raise no process warning (MaxListenersExceededWarning), each body whole, each write committed.

import { Agent, request as httpRequest } from 'node:http'
import type { Socket } from 'node:net'
import { Readable } from 'node:stream'
import { afterEach, describe, expect, test } from 'vitest'
import { coreApp } from '../../../support/app.js'
import { waitFor } from '../../../support/database.js'
import { listen } from '../../../support/http.js'
import { noteTable } from '../../../support/note-table.js'

const fx = noteTable()
const tx = { config: { db: { transaction: true } } } as const
const warnings: string[] = []
const onWarning = (warning: Error) => warnings.push(`${warning.name}: ${warning.message}`)
afterEach(() => {
  process.off('warning', onWarning)
})

function get(agent: Agent, url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { agent }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        body += chunk
      })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}

describe('many streamed replies on one keep-alive connection', () => {
  test('no listener left on the socket or the streams; no process warning', async () => {
    process.on('warning', onWarning)
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    const sockets: Socket[] = []
    app.server.on('connection', (socket: Socket) => sockets.push(socket))
    const streams: Readable[] = []
    let n = 0
    app.get('/tx', tx, async (request) => {
      await request.db`insert into note values (${`tx ${n++}`})`
      const stream = Readable.from(['a', 'b'])
      stream.on('data', () => {})
      streams.push(stream)
      return stream
    })
    app.get('/plain', async (request) => {
      await request.db`select 1`
      const stream = Readable.from(['a', 'b'])
      streams.push(stream)
      return stream
    })
    app.get('/web', tx, async (request) => {
      await request.db`insert into note values (${`web ${n++}`})`
      return new Response(Readable.toWeb(Readable.from(['a', 'b'])) as ReadableStream<Uint8Array>)
    })
    const base = await listen(app)
    const agent = new Agent({ keepAlive: true, maxSockets: 1 })
    const bodies = new Set<string>()
    for (let i = 0; i < 40; i++) {
      for (const path of ['/tx', '/plain', '/web'])
        bodies.add(`${path} ${JSON.stringify(await get(agent, `${base}${path}`))}`)
    }
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    const socket = sockets[0] as Socket
    const onSocket = Object.fromEntries(socket.eventNames().map((name) => [String(name), socket.listenerCount(name)]))
    const onStreams = Math.max(...streams.map((s) => s.listenerCount('error') + s.listenerCount('close')))
    agent.destroy()
    expect({
      sockets: sockets.length,
      bodies: [...bodies].sort(),
      maxOnSocket: Math.max(...Object.values(onSocket)),
      onStreams,
      rows: (await fx.notes()).length,
      warnings,
    }).toEqual({
      sockets: 1,
      bodies: [
        '/plain {"status":200,"body":"ab"}',
        '/tx {"status":200,"body":"ab"}',
        '/web {"status":200,"body":"ab"}',
      ],
      maxOnSocket: expect.any(Number),
      onStreams: expect.any(Number),
      rows: 80,
      warnings: [],
    })
    expect(Math.max(...Object.values(onSocket))).toBeLessThan(8)
    expect(onStreams).toBeLessThan(4)
  }, 60_000)
})
