// HELD (probe-third-streams): over HTTP/2 (Fastify({ http2: true })), a flowing Node stream (an
// app's 'data' byte counter) is paused while the reply waits and sent whole on a plain route, a
// route transaction and a route that reads a named instance; a route transaction's stream failing
// just after its first chunk during the COMMIT gets its 2xx with its headers (then a reset), the
// write committed; no connection left leased, no process error.

import { Readable } from 'node:stream'
import pgPoolCore, { type RequestDb } from '@fastify-pg-pool/core'
import type { FastifyServerOptions } from 'fastify'
import { afterEach, describe, expect, test } from 'vitest'
import { coreApp } from '../../../support/app.js'
import { waitFor } from '../../../support/database.js'
import { h2Request } from '../../../support/http2.js'
import { noteTable } from '../../../support/note-table.js'
import { processErrors } from '../streams/kit.js'

const fx = noteTable()
const tx = { config: { db: { transaction: true } } } as const
const errorsOfProcess = processErrors()
afterEach(() => {
  errorsOfProcess.stop()
})

function counted(counts: number[]): Readable {
  const stream = new Readable({ read() {} })
  setTimeout(() => {
    for (let i = 0; i < 50; i++) stream.push(`line ${i}\n`)
    stream.push(null)
  }, 50)
  let bytes = 0
  stream.on('data', (chunk: Buffer) => {
    bytes += chunk.length
  })
  stream.on('end', () => counts.push(bytes))
  return stream
}

const whole = Array.from({ length: 50 }, (_, i) => `line ${i}\n`).join('')

describe('HTTP/2 streamed payloads', () => {
  test('flowing streams whole; a late failure is a 2xx with its headers over committed work', async () => {
    errorsOfProcess.start()
    fx.current = await coreApp(fx.db.url, { max: 2 }, {
      http2: true,
      forceCloseConnections: true,
    } as FastifyServerOptions)
    const { app } = fx.current
    await app.register(pgPoolCore, { name: 'other', connection: fx.db.url, pool: { max: 1 } })
    const counts: number[] = []
    app.get('/plain', async (request) => {
      await request.db`insert into note values ('plain')`
      return counted(counts)
    })
    app.get('/tx', tx, async (request) => {
      await request.db`insert into note values ('tx')`
      return counted(counts)
    })
    app.get('/named', tx, async (request) => {
      await ((request.dbs as Record<string, RequestDb>).other as RequestDb)`select 1`
      await request.db`insert into note values ('named')`
      return counted(counts)
    })
    app.get('/late', tx, async (request, reply) => {
      await request.db`insert into note values ('late')`
      reply.code(201).type('text/csv').header('x-export', 'yes')
      const stream = new Readable({ read() {} })
      setTimeout(() => {
        stream.push('first part')
        setImmediate(() => stream.destroy(new Error('upstream broke after its first part')))
      }, 50)
      return stream
    })
    await app.listen({ port: 0, host: '127.0.0.1' })
    const { port } = app.server.address() as { port: number }
    const got: Record<string, unknown> = {}
    for (const path of ['/plain', '/tx', '/named']) {
      const answer = await h2Request(port, path)
      got[path] = { status: answer.status, whole: answer.body === whole, error: answer.error }
    }
    const late = await h2Request(port, '/late')
    got['/late'] = { status: late.status, type: late.headers?.['content-type'], mine: late.headers?.['x-export'] }
    expect(await waitFor(() => app.pgPools.all().every((view) => view.stats().leased === 0))).toBe(true)
    expect(await waitFor(() => counts.length === 3, 5_000)).toBe(true)
    expect({ got, counts, notes: await fx.notes(), processErrors: errorsOfProcess.stop() }).toEqual({
      got: {
        '/plain': { status: 200, whole: true, error: undefined },
        '/tx': { status: 200, whole: true, error: undefined },
        '/named': { status: 200, whole: true, error: undefined },
        '/late': { status: 201, type: 'text/csv', mine: 'yes' },
      },
      counts: [whole.length, whole.length, whole.length],
      notes: ['late', 'named', 'plain', 'tx'],
      processErrors: [],
    })
  }, 30_000)
})
