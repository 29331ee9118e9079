// HELD (second-tx, round sixteen): d50d61b's backpressure for raw writes held for a route
// transaction's COMMIT, over HTTP/2 (reply.raw is an Http2ServerResponse, whose end() calls write()).
// Tried: pipeline(16 MB source, reply.raw) while a deferred trigger makes the COMMIT take 0.5 s, and
// a hand-written loop awaiting 'drain' after every write() that returns false; with the COMMIT
// succeeding and failing (deferred foreign key). Held: the source is read no further than ~128 kB
// while the COMMIT runs, the whole body arrives after it; on a failed COMMIT the client gets the 500,
// the loop awaiting 'drain' is let go (no hang), nothing is committed and the lease is back.
// Seen, not asserted: after a failed COMMIT the pipeline resolves as if the export went out (the
// gate drops writes returning true and never errors the response), reading its source to the end.

import { once } from 'node:events'
import http2 from 'node:http2'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type { FastifyServerOptions } from 'fastify'
import { expect, test } from 'vitest'
import { failOnProcessErrors } from '../../../faults/process-errors.js'
import { coreApp } from '../../../support/app.js'
import { waitFor } from '../../../support/database.js'
import { transactionFixture, tx } from '../../../support/transaction-fixture.js'

const fx = transactionFixture({ deferred: true })
failOnProcessErrors()

const CHUNK = 64 * 1024
const CHUNKS = 256

function h2get(port: number, path: string): Promise<{ status: string; bytes: number; rst: number | undefined }> {
  const session = http2.connect(`http://127.0.0.1:${port}`)
  session.on('error', () => {})
  const stream = session.request({ ':path': path })
  let status = ''
  let bytes = 0
  stream.on('response', (h) => {
    status = String(h[':status'])
  })
  stream.on('data', (c: Buffer) => {
    bytes += c.length
  })
  stream.on('error', () => {})
  return new Promise((resolve) => {
    stream.on('close', () => {
      session.close()
      resolve({ status, bytes, rst: stream.rstCode })
    })
  })
}

for (const bad of ['0', '1']) {
  test(`http2 pipeline over a gated raw reply, bad=${bad}`, async () => {
    await fx.db.sql.unsafe(`
    create or replace function slow_check() returns trigger language plpgsql as $$
      begin perform pg_sleep(0.5); return null; end $$;
    drop table if exists export_log;
    create table export_log (id int);
    create constraint trigger export_log_slow after insert on export_log
      deferrable initially deferred for each row execute function slow_check();`)
    const t = await coreApp(fx.db.url, { max: 1 }, { http2: true } as FastifyServerOptions)
    const app = t.app
    let produced = 0
    let whileCommitting = -1
    const out: string[] = []
    app.get('/export/:bad', tx, async (request, reply) => {
      await request.db`insert into export_log values (1)`
      if ((request.params as { bad: string }).bad === '1') await request.db`insert into child values (1, 999)`
      reply.hijack()
      const source = Readable.from(
        (function* () {
          for (let i = 0; i < CHUNKS; i++) {
            produced += CHUNK
            yield Buffer.alloc(CHUNK, 120)
          }
        })(),
      )
      reply.raw.writeHead(200, { 'content-type': 'application/octet-stream' })
      setTimeout(() => {
        whileCommitting = produced
      }, 250)
      await pipeline(source, reply.raw).then(
        () => out.push('pipeline ok'),
        (e: { code?: string }) => out.push(`pipeline ${e.code}`),
      )
    })
    app.get('/manual/:bad', tx, async (request, reply) => {
      await request.db`insert into note values ('m')`
      if ((request.params as { bad: string }).bad === '1') await request.db`insert into child values (1, 999)`
      reply.hijack()
      let drains = 0
      reply.raw.on('drain', () => drains++)
      for (let i = 0; i < 4; i++) {
        if (!reply.raw.write(Buffer.alloc(CHUNK, 121))) await once(reply.raw, 'drain')
      }
      reply.raw.end()
      out.push(`manual done drains=${drains}`)
    })
    await app.listen({ port: 0, host: '127.0.0.1' })
    const port = (app.server.address() as { port: number }).port
    try {
      const res = await h2get(port, `/export/${bad}`)
      expect(await waitFor(() => out.length === 1, 10_000)).toBe(true)
      const m = await h2get(port, `/manual/${bad}`)
      expect(await waitFor(() => out.length === 2, 10_000)).toBe(true)
      expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
      if (bad === '0') {
        expect({ res, m, notes: await fx.notes() }).toEqual({
          res: { status: '200', bytes: CHUNK * CHUNKS, rst: 0 },
          m: { status: '200', bytes: 4 * CHUNK, rst: 0 },
          notes: ['m'],
        })
        expect(whileCommitting).toBeGreaterThan(0)
        expect(whileCommitting).toBeLessThan(4 * 1024 * 1024)
      } else {
        expect({ res: res.status, m: m.status, notes: await fx.notes() }).toEqual({ res: '500', m: '500', notes: [] })
        expect(out[1]).toMatch(/^manual done/)
      }
    } finally {
      await app.close()
    }
  })
}
