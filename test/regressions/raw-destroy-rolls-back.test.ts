import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor } from '../support/database.js'
import { listen } from '../support/http.js'

// Found by hostile probing (failed before the fix): a transaction handler that destroys its own response (`reply.raw.destroy()`, the usual
// way to drop a reply) and returns. The client gets no response at all, yet onSend still sees
// status 200 and COMMITs: `reply.raw.destroyed` is already true there, and the hang-up reaches
// onRequestAbort only after the COMMIT was sent.

let db: TestDatabase
let current: TestApp | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table note (body text not null)`
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(() => db.drop())

const notes = async () => (await db.sql<{ body: string }[]>`select body from note order by body`).map((r) => r.body)

async function serverClean(applicationName: string): Promise<boolean> {
  return waitFor(
    async () => (await db.countConnections(applicationName)) === (await db.countConnections(applicationName, 'idle')),
    5_000,
  )
}

describe('a response destroyed by its handler', () => {
  test('reply.raw.destroy() from a transaction handler after a write: rolled back, lease back', async () => {
    current = await coreApp(db.url, { max: 1, acquireTimeout: 2_000 })
    const { app, applicationName } = current
    app.get('/destroy', { config: { db: { transaction: true } } }, async (request, reply) => {
      await request.db`insert into note values ('destroyed')`
      reply.raw.destroy()
      return { ok: true }
    })
    app.get('/next', async (request) => (await request.db`select 1 as one`)[0])
    const base = await listen(app)
    const status = await fetch(`${base}/destroy`).then(
      (r) => r.status,
      () => 'failed',
    )
    expect(status).toBe('failed')
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 3_000)).toBe(true)
    expect(await serverClean(applicationName)).toBe(true)
    expect(await notes()).toEqual([])
    expect((await app.inject('/next')).json()).toEqual({ one: 1 })
  })
})
