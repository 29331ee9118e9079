import { describe, expect, test } from 'vitest'
import { coreApp } from '../support/app.js'
import { waitFor, waitUntil } from '../support/database.js'
import { listen, startPost } from '../support/http.js'
import { noteTable } from '../support/note-table.js'

// Found by hostile probing, second round on client disconnects (195d3bd), failing before the fix.
// The 'close' listener on the raw response (request-lease.ts #lease) is attached only when the
// request takes its first lease. A POST whose body was read gets no onRequestAbort, so a client
// that left BEFORE the handler's first request.db use (a call to another service first) is never
// seen: on a plain route the write runs and commits; on a transaction route the statements run to
// their end (only onSend, seeing reply.raw.destroyed, rolls back). A GET in the same spot is refused
// (control in held-misc.test.ts). README: "nothing runs on behalf of a finished request".

const fx = noteTable()
const notes = fx.notes

describe('a POST client that hangs up before the handler first uses request.db', () => {
  test('POST (JSON body read), plain route: client gone before the first request.db use, the write does not run', async () => {
    fx.current = await coreApp(fx.db.url, { max: 2, acquireTimeout: 10_000 })
    const { app } = fx.current
    let release!: () => void
    const gate = new Promise<void>((resolve) => {
      release = resolve
    })
    let entered = false
    let responseClosed = false
    let settled: unknown
    app.post('/late', async (request, reply) => {
      entered = true
      reply.raw.on('close', () => {
        responseClosed = true
      })
      // e.g. a call to another service before the first statement
      await gate
      try {
        await request.db`insert into note values (${(request.body as { body: string }).body})`
        settled = 'ran'
      } catch (error) {
        settled = (error as { code?: string }).code ?? String(error)
      }
      return { ok: true }
    })
    const base = await listen(app)
    const client = startPost(`${base}/late`, { body: 'after-hang-up' })
    await waitUntil(() => entered, 'the handler to start', 10_000)
    client.abort()
    expect(await client.done).toBe('aborted')
    await waitUntil(() => responseClosed, 'the server to see the response close', 10_000)
    release()
    await waitUntil(() => settled !== undefined, 'the handler to settle', 10_000)
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 5_000)).toBe(true)
    // A GET in the same spot is refused (onRequestAbort marks the request ended); the README:
    // "nothing runs on behalf of a finished request", "after a hang-up b fails with FST_PG_POOL_ABORTED".
    expect({ settled, rows: await notes() }).toEqual({ settled: expect.stringMatching(/^FST_PG_POOL_/), rows: [] })
  })

  test('POST (JSON body read), transaction route: client gone before the first use, the slow statement is not run to its end', async () => {
    fx.current = await coreApp(fx.db.url, { max: 2, acquireTimeout: 10_000, statementTimeout: 30_000 })
    const { app, applicationName } = fx.current
    let release!: () => void
    const gate = new Promise<void>((resolve) => {
      release = resolve
    })
    let entered = false
    let responseClosed = false
    let settled: unknown
    app.post('/late-tx', { config: { db: { transaction: true } } }, async (request, reply) => {
      entered = true
      reply.raw.on('close', () => {
        responseClosed = true
      })
      await gate
      try {
        await request.db`insert into note values ('late-tx')`
        await request.db`select pg_sleep(20) as late_tx_sleep`
        settled = 'ran'
      } catch (error) {
        settled = (error as { code?: string }).code ?? String(error)
      }
      return { ok: true }
    })
    const base = await listen(app)
    const client = startPost(`${base}/late-tx`, { body: 'x' })
    await waitUntil(() => entered, 'the handler to start', 10_000)
    client.abort()
    expect(await client.done).toBe('aborted')
    await waitUntil(() => responseClosed, 'the server to see the response close', 10_000)
    release()
    // The statement of a request whose client left is stopped (or never started) within a few seconds,
    // not left to run its 20 s on a connection.
    const stopped = await waitFor(
      async () => settled !== undefined && (await fx.db.running(applicationName, '%late_tx_sleep%')) === 0,
      6_000,
    )
    expect({ stopped, settled }).toEqual({ stopped: true, settled: expect.stringMatching(/^FST_PG_POOL_/) })
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 5_000)).toBe(true)
    expect(await notes()).toEqual([])
  })
})
