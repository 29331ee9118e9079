import { expect } from 'vitest'
import type { TestApp } from './app.js'
import { type TestDatabase, waitFor } from './database.js'

/**
 * `GET /probe` on `app`: what the next request on a connection sees of its session (a custom
 * setting, statement_timeout, advisory locks), and an insert into `note` that must commit.
 */
export function addSessionProbe(app: TestApp['app']): void {
  app.get('/probe', async (request) => {
    const [row] = await request.db`
      select current_setting('app.x', true) as x,
             current_setting('statement_timeout') as st,
             (select count(*)::int from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()) as locks`
    const mark = `probe-${Math.random()}`
    await request.db`insert into note values (${mark})`
    return { ...row, mark }
  })
}

/**
 * Asserts the app's next request gets a clean session (with addSessionProbe, on a pool whose one
 * connection the earlier requests used): no lease held, its insert committed, no setting or
 * advisory lock left, nothing idle in a transaction, nothing waiting.
 */
export async function expectCleanSession(db: TestDatabase, t: TestApp): Promise<void> {
  const { app, applicationName } = t
  expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
  const res = await app.inject('/probe')
  expect(res.statusCode).toBe(200)
  const body = res.json()
  // The probe's insert is committed: it did not run inside a transaction a previous request left.
  expect((await db.sql<{ body: string }[]>`select body from note where body = ${body.mark}`).length).toBe(1)
  await db.sql`delete from note where body = ${body.mark}`
  expect(body.x === null || body.x === '').toBe(true)
  expect(body.locks).toBe(0)
  // A retired connection can linger a moment while it closes: wait for it, never accept it staying.
  for (const state of ['idle in transaction', 'idle in transaction (aborted)']) {
    expect(await waitFor(async () => (await db.countConnections(applicationName, state)) === 0, 3_000)).toBe(true)
  }
  expect(app.pgPool.stats()).toMatchObject({ leased: 0, waiting: 0 })
}
