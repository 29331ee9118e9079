// The blocked session reset of the second-session held tests: request A leaves a temp table on
// its session and another session locks it, so A's session reset (DISCARD TEMP) waits while the
// next request runs behind it.
import { expect } from 'vitest'
import type { TestApp } from '../../support/app.js'
import { sleep, type TestDatabase, waitFor } from '../../support/database.js'

/**
 * Adds route A; the function returned runs `b` while A's reset waits on a lock, which goes once
 * `b` settled or after 10 s.
 */
export function blockedReset(db: TestDatabase, t: TestApp): <T>(b: () => Promise<T>) => Promise<T> {
  const { app, applicationName } = t
  let tempSchema = ''
  let lockTaken: () => void = () => {}
  const locked = new Promise<void>((resolve) => {
    lockTaken = resolve
  })
  app.post('/a', async (request) => {
    await request.db`create temp table held_open (x int)`
    const [row] = await request.db<{ s: string }[]>`select pg_my_temp_schema()::regnamespace::text as s`
    tempSchema = row?.s ?? ''
    await locked
    return { ok: true }
  })
  return async (b) => {
    const locker = await db.sql.reserve()
    try {
      const a = app.inject({ method: 'POST', url: '/a' })
      expect(await waitFor(() => tempSchema !== '')).toBe(true)
      await locker`begin`
      await locker.unsafe(`lock table ${tempSchema}.held_open in access share mode`)
      lockTaken()
      expect((await a).statusCode).toBe(200)
      expect(
        await waitFor(
          async () =>
            (
              await db.sql`select 1 from pg_stat_activity
              where application_name = ${applicationName} and wait_event_type = 'Lock' and query like 'BEGIN ISOLATION%'`
            ).length > 0,
          5_000,
        ),
      ).toBe(true)
      const pending = b()
      await Promise.race([pending, sleep(10_000)])
      // Not before the request's lease has ended: a lock let go at once would race its abort.
      await waitFor(() => app.pgPool.stats().leased === 0, 5_000)
      await locker`commit`
      return await pending
    } finally {
      await locker`commit`.catch(() => {})
      locker.release()
    }
  }
}
