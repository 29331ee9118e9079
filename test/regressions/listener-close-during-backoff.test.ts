import { Writable } from 'node:stream'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { failOnProcessErrors } from '../faults/process-errors.js'
import { createTestDatabase, sleep, type TestDatabase, uniqueName, waitFor, waitUntil } from '../support/database.js'

// Found by hostile probing (failed before the fix, on PostgreSQL 18 and 15).
// Expected (packages/core/README.md, LISTEN/NOTIFY): "**Ended on `app.close()`**: the connection
// closes with the pool, no handler runs after"; app.close() leaves no connection of the app on the
// server (test/faults/shutdown.test.ts, test/listen/listen.test.ts).
//
// What happened: the LISTEN backend is lost (terminated, server restart); the listener sends the
// LISTEN again at once (listener.ts #lost -> #resubscribe), which postgres.js holds behind its
// reconnect backoff (postgres connection.js reconnect(): setTimeout(connect, delay)). app.close()
// in that window ends the listener's client (listener.ts #endClient: client.end({ timeout: 0 })),
// but postgres.js's terminate() does not clear that timer: it fires after close and opens a new
// `<applicationName>/listen` connection that nobody owns and nothing ever closes (the listener
// sets idle_timeout and max_lifetime to null): a backend left on the server, and an open socket
// that keeps the process alive. Fixed by closing the ended client again until such a connection
// can no longer open (listener.ts #sweep).
//
// The window is postgres.js's backoff after a first loss (5-10 ms), so the test starts app.close()
// from the listener's own 'lost' log line, and tries several times: on correct code no trial can
// leave a backend.

let db: TestDatabase
failOnProcessErrors()
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(async () => {
  await db?.drop()
})

async function trial(): Promise<number> {
  const applicationName = uniqueName('closelost')
  const listenName = `${applicationName}/listen`
  let app: FastifyInstance | undefined
  let closing: Promise<unknown> | undefined
  // app.close() starts the moment the listener reports the loss (a SIGTERM handler racing a
  // database restart), from the log line it writes.
  const stream = new Writable({
    write(chunk, _encoding, callback) {
      if (closing === undefined && String(chunk).includes('the LISTEN connection was lost')) closing = app?.close()
      callback()
    },
  })
  app = Fastify({ logger: { level: 'info', stream } })
  await app.register(pgPoolCore, {
    connection: db.directUrl,
    pool: { pgbouncer: false, max: 1, lazy: true, applicationName },
  })
  await app.db.listen('lost', () => {})
  const pids = async () =>
    (await db.admin<{ pid: number }[]>`select pid from pg_stat_activity where application_name = ${listenName}`).map(
      (row) => row.pid,
    )
  const [old] = await pids()
  expect(old).toBeDefined()
  expect(await db.terminate(listenName)).toBe(1)
  await waitUntil(() => closing !== undefined, 'app.close() started on the loss', 10_000)
  await closing
  // A backend that appears after close (postgres.js's reconnect timer) does so within its backoff
  // plus a login; wait past it.
  // (The terminated backend itself is not counted: it may take a moment to leave.)
  const others = async () => (await pids()).filter((pid) => pid !== old)
  await waitFor(async () => (await others()).length > 0, 2_000)
  // Left, not leaving: still there a while later.
  await sleep(1_500)
  return (await others()).length
}

describe('app.close() right when the LISTEN connection is lost', () => {
  test('no LISTEN backend is left on the server after app.close()', async () => {
    const leaked: number[] = []
    for (let i = 0; i < 4; i++) {
      const left = await trial()
      leaked.push(left)
      if (left > 0) break
    }
    expect(
      leaked.filter((n) => n > 0),
      `LISTEN backends left after app.close(), per trial: ${leaked}`,
    ).toEqual([])
  }, 60_000)
})
