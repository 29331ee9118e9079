import { afterAll, describe, expect, test } from 'vitest'
import { defaultErrorMapping } from '../../src/error-mapping.js'
import { Lease, type LeaseContext } from '../../src/lease.js'
import { createHelpers, trackedQueryClass } from '../../src/postgres-adapter.js'
import type { PgPoolView } from '../../src/types.js'
import { flush } from '../fake-clock.js'
import { type FakeConnection, serverError } from '../fake-connection.js'
import { poolHarness } from '../fake-holder.js'

// Round thirteen (probe-errors, read-only-sql-not-failover): a 25006 on the primary of a host list
// was always taken for a failover (503 NOT_PRIMARY, connection retired), also when the app's own
// SQL or a read-only database default refused the write on a healthy primary. Now the server's own
// report decides: `in_hot_standby` (PostgreSQL 14+) on is a failover, off is the holder's 25006;
// a server that never reported it keeps the failover reading. The real-server side of "off" is in
// test/regressions/round-thirteen/read-only-sql-not-failover and test/replicas/failover.

const helpers = createHelpers(undefined, {})
const Query = trackedQueryClass(helpers)
afterAll(() => helpers.end({ timeout: 0 }))

async function writeRefused(reports: boolean | undefined) {
  const h = poolHarness({ max: 1 })
  const ctx: LeaseContext = {
    pool: h.pool,
    clock: h.clock,
    options: h.pool.options,
    Query,
    surface: { statementTimeout: h.pool.options.statementTimeout, retryAfter: 1, mapping: defaultErrorMapping },
    view: () => ({}) as PgPoolView,
    onLeak: () => {},
    writable: true,
  }
  const lease = new Lease(ctx, { route: '/r' })
  const query = lease.query(['insert into t values (1)'], [])
  const outcome = query.then(
    () => undefined,
    (error: unknown) => error as { code?: string; cause?: { message?: string } },
  )
  await flush()
  const conn = h.factory.last as FakeConnection & { reportsStandby?: () => boolean | undefined }
  if (reports !== undefined) conn.reportsStandby = () => reports
  conn.fail(serverError('25006', 'read-only: tenant alice@example.com'))
  const error = await outcome
  // The server's message (which a function can fill with a parameter) never rides on the cause.
  expect(String(error?.cause?.message)).not.toContain('alice@example.com')
  return { code: error?.code, closed: conn.closeReason }
}

describe('a 25006 on the primary of a host list', () => {
  test('from a server that reports itself a hot standby: NOT_PRIMARY, the connection retired', async () => {
    expect(await writeRefused(true)).toEqual({ code: 'FST_PG_POOL_NOT_PRIMARY', closed: 'error' })
  })

  test('from a server that never reported in_hot_standby (before PostgreSQL 14): NOT_PRIMARY', async () => {
    expect(await writeRefused(undefined)).toEqual({ code: 'FST_PG_POOL_NOT_PRIMARY', closed: 'error' })
  })

  test('from a server that reports it is no standby: its own 25006, the connection kept', async () => {
    expect(await writeRefused(false)).toEqual({ code: '25006', closed: undefined })
  })
})
