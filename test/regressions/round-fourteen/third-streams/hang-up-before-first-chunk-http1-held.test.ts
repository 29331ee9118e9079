// HELD (probe-third-streams): over HTTP/1.1, a client that hangs up while a route transaction's
// COMMIT waits for its streamed payload's first chunk (a Node Readable, a web stream, a web
// Response): nothing is committed, the source is stopped
// (destroyed or cancelled), no session stays idle in transaction, the connection comes back, and
// no process error.
import { Readable } from 'node:stream'
import { afterEach, describe, expect, test } from 'vitest'
import { coreApp } from '../../../support/app.js'
import { waitFor } from '../../../support/database.js'
import { listen } from '../../../support/http.js'
import { noteTable } from '../../../support/note-table.js'
import { processErrors } from '../streams/kit.js'

const fx = noteTable()
const tx = { config: { db: { transaction: true } } } as const
const errorsOfProcess = processErrors()
afterEach(() => {
  errorsOfProcess.stop()
})

describe('a hang-up while the COMMIT waits for the first chunk (HTTP/1.1)', () => {
  test('rolled back, source stopped, no session left in transaction', async () => {
    errorsOfProcess.start()
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app, applicationName } = fx.current
    const stopped: string[] = []
    const slowNode = (name: string): Readable => {
      const stream = new Readable({ read() {} })
      const timer = setTimeout(() => stream.push('late'), 20_000)
      stream.on('close', () => {
        clearTimeout(timer)
        stopped.push(name)
      })
      return stream
    }
    const slowWeb = (name: string): ReadableStream<Uint8Array> =>
      new ReadableStream<Uint8Array>({
        pull: () => new Promise(() => {}),
        cancel() {
          stopped.push(name)
        },
      })
    app.post('/:kind', tx, async (request) => {
      const { kind } = request.params as { kind: string }
      await request.db`insert into note values (${kind})`
      if (kind === 'node') return slowNode(kind)
      if (kind === 'web') return slowWeb(kind)
      return new Response(slowWeb(kind), { status: 201 })
    })
    const base = await listen(app)
    for (const kind of ['node', 'web', 'response']) {
      const abort = new AbortController()
      const pending = fetch(`${base}/${kind}`, { method: 'POST', signal: abort.signal }).catch(() => 'aborted')
      // The handler wrote and the COMMIT waits: the session is idle in transaction.
      expect(
        await waitFor(async () => {
          const rows = await fx.db.sql`select 1 from pg_stat_activity
            where application_name = ${applicationName} and state = 'idle in transaction'`
          return rows.length === 1
        }, 10_000),
      ).toBe(true)
      abort.abort()
      expect(await pending).toBe('aborted')
      expect(await waitFor(() => stopped.includes(kind), 10_000)).toBe(true)
      expect(await waitFor(() => app.pgPool.stats().leased === 0, 10_000)).toBe(true)
    }
    const inTransaction = await fx.db.sql`select 1 from pg_stat_activity
      where application_name = ${applicationName} and state like 'idle in transaction%'`
    expect({
      notes: await fx.notes(),
      stopped: [...stopped].sort(),
      inTransaction: inTransaction.length,
      processErrors: errorsOfProcess.stop(),
    }).toEqual({ notes: [], stopped: ['node', 'response', 'web'], inTransaction: 0, processErrors: [] })
  }, 60_000)
})
