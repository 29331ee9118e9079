import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

// Hostile probing: pipelined, labelled exclusive and readOnly routes at once on one connection,
// then app.db: every holder sees the right label and read-only state. Held.

let db: TestDatabase
let current: TestApp | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table ledger (id serial primary key, note text)`
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(() => db.drop())

const stateSql = `select pg_backend_pid() as pid, current_setting('default_transaction_read_only') as ro,
  current_setting('application_name') as app, current_setting('search_path') as sp`

describe.each(['always', 'rollback', 'never'] as const)('mode %s', (mode) => {
  test('pipelined, labelled exclusive, readOnly, app.db.transaction and lease() interleaved', async () => {
    current = await coreApp(
      db.url,
      { max: 1, sessionReset: mode },
      {},
      {
        leaseApplicationName: (r, route) => (r ? `L ${route}` : undefined),
        onConnect: async (sql) => void (await sql`set application_name = 'oc'`),
      },
    )
    const { app } = current
    app.get('/pipe', { config: { db: { pipeline: true } } }, async (request) => (await request.db.unsafe(stateSql))[0])
    app.get('/excl', async (request) => (await request.db.unsafe(stateSql))[0])
    app.get('/read', { config: { db: { readOnly: true } } }, async (request) => (await request.db.unsafe(stateSql))[0])
    const seen: Record<string, unknown>[] = []
    const run = async (path: string) => {
      const r = await app.inject(path)
      seen.push({ path, status: r.statusCode, ...(r.statusCode === 200 ? r.json() : { body: r.body }) })
    }
    await Promise.all([run('/pipe'), run('/pipe'), run('/excl'), run('/pipe'), run('/read'), run('/pipe')])
    const tx = await app.db.transaction(async (t) => {
      await t`insert into ledger (note) values ('t')`
      return (await t.unsafe(stateSql))[0]
    })
    const lease = await app.db.lease()
    const [inLease] = await lease.unsafe(stateSql)
    await lease.release()
    await Promise.all([run('/read'), run('/pipe'), run('/pipe')])
    const [after] = await app.db.unsafe(stateSql)
    const wrong = seen.filter(
      (s) =>
        s.status !== 200 ||
        s.ro !== (s.path === '/read' ? 'on' : 'off') ||
        s.app !== (s.path === '/pipe' ? 'oc' : `L ${s.path}`),
    )
    expect({
      wrong,
      tx: `${(tx as unknown as { app: string }).app} ${(tx as unknown as { ro: string }).ro}`,
      lease: `${inLease?.app} ${inLease?.ro}`,
      after: `${after?.app} ${after?.ro}`,
    }).toEqual({
      wrong: [],
      tx: 'oc off',
      lease: 'oc off',
      after: 'oc off',
    })
  })
})
