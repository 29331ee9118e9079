import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, sleep, type TestDatabase } from '../support/database.js'
import { listen, startRequest } from '../support/http.js'

// Found by a seeded chaos storm (round ten of hostile probing), reduced: on a route transaction
// whose handler returned while a statement of its still ran (fired and not awaited), the COMMIT
// waited for it; a handlerTimeout or app.close() past closeTimeout then ended the transaction
// without it (ROLLBACK), and the client still got the handler's 200: a 2xx for work not
// committed. The reply is now FST_PG_POOL_ABORTED or _CLOSED. Every test failed before the fix.

let db: TestDatabase
let current: TestApp | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table moves (tag text primary key)`
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(() => db.drop())

const committed = async (tag: string) => (await db.sql`select 1 from moves where tag = ${tag}`).length === 1

/** A route transaction whose handler returns while a statement of its still runs (0.5 s). */
function route(t: TestApp, options: { handlerTimeout?: number } = {}) {
  const outcomes: string[] = []
  t.app.pgPool.on('transaction', (outcome) => outcomes.push(outcome))
  t.app.get('/move/:tag', { ...options, config: { db: { transaction: true } } }, async (request) => {
    const { tag } = request.params as { tag: string }
    await request.db`insert into moves values (${tag})`
    // Started, not awaited: the COMMIT waits for it.
    void request.db`select pg_sleep(0.5)`.catch(() => {})
    return { ok: true }
  })
  return outcomes
}

test('handlerTimeout fires while the COMMIT waits for a running statement: 200 for a rolled-back transaction', async () => {
  current = await coreApp(db.url, { max: 2 })
  const outcomes = route(current, { handlerTimeout: 150 })
  const base = await listen(current.app)
  const res = await fetch(`${base}/move/ht`)
  const status = res.status
  const body = await res.text()
  await sleep(100)
  expect([
    { status: 200, committed: true },
    { status: 503, committed: false },
  ]).toContainEqual({ status, committed: await committed('ht') })
  expect({ body: status === 200 ? body : 'error', outcomes }).toEqual(
    status === 200 ? { body: '{"ok":true}', outcomes: ['commit'] } : { body: 'error', outcomes: ['rollback'] },
  )
})

test('app.close() passes closeTimeout while the COMMIT waits for a running statement: 200 for a rolled-back transaction', async () => {
  current = await coreApp(db.url, { max: 2, closeTimeout: 200 })
  const outcomes = route(current)
  const base = await listen(current.app)
  const request = startRequest(`${base}/move/close`)
  await sleep(100)
  await current.app.close()
  const status = await request.done
  expect([
    { status: 200, committed: true },
    { status: 503, committed: false },
  ]).toContainEqual({ status, committed: await committed('close') })
  expect(outcomes).toEqual(status === 200 ? ['commit'] : ['rollback'])
})
