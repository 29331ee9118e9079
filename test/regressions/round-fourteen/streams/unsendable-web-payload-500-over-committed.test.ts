// DEFECT (probe-streams, high by the rule 33c1291 fixed: a client told "failed" for committed work
// retries it).
// What the user does: a route transaction writes, then returns a web payload Fastify cannot send:
// a `Response` whose body was already read (`await res.text()` to log it, then `return res`, as
// with an upstream fetch), a `ReadableStream` that is locked (a reader taken and not released), or
// `Response.error()` (status 0, what a proxy handler may return for a failed upstream).
// What they see: a 500 (`FST_ERR_REP_RESPONSE_BODY_CONSUMED`, `FST_ERR_REP_READABLE_STREAM_LOCKED`,
// `FST_ERR_BAD_STATUS_CODE`) and the write committed.
// Cause: request-lease.ts firstWebChunk() hands back a locked body as it is (`body.locked`:
// `return { payload }`), so the COMMIT runs; a status-0 Response decides "commit" (0 < 400).
// Fastify then refuses the payload in its send and the refusal becomes the error reply after the
// COMMIT. (The first two since 33c1291 made the COMMIT wait for a web stream's first chunk; the
// third is older.)
// Expected: a reply >= 400 only for work rolled back (the payload is known unsendable before the
// COMMIT: roll back, then let Fastify answer).
import { describe, expect, test } from 'vitest'
import { coreApp } from '../../../support/app.js'
import { waitFor } from '../../../support/database.js'
import { noteTable } from '../../../support/note-table.js'
import { addSessionProbe, expectCleanSession } from '../../../support/session-probe.js'

const fx = noteTable()
const tx = { config: { db: { transaction: true } } } as const

const payloads = {
  'a Response whose body was read': async () => {
    const upstream = new Response('from upstream', { status: 201 })
    await upstream.text()
    return upstream
  },
  'a ReadableStream with a reader taken': async () => {
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode('locked'))
        controller.close()
      },
    })
    stream.getReader()
    return stream
  },
  'Response.error()': async () => Response.error(),
}

describe('a route transaction returning a web payload Fastify refuses', () => {
  for (const [name, payload] of Object.entries(payloads)) {
    test(`${name}: a reply >= 400 only when nothing was committed`, async () => {
      fx.current = await coreApp(fx.db.url, { max: 1 })
      const { app } = fx.current
      addSessionProbe(app)
      app.post('/order', tx, async (request) => {
        await request.db`insert into note values ('order')`
        return payload()
      })
      const res = await app.inject({ method: 'POST', url: '/order' })
      expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
      const committed = (await fx.notes()).includes('order')
      expect({ status: res.statusCode >= 400 ? 'error' : 'success', committed }).toEqual(
        res.statusCode >= 400 ? { status: 'error', committed: false } : { status: 'success', committed: true },
      )
      await expectCleanSession(fx.db, fx.current)
    })
  }
})
