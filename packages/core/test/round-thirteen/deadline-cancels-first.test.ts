// The unit side of test/regressions/round-thirteen/deadline-write-commits-after-503.test.ts: at
// the client-side deadline the pool cancels the statement before it cuts the connection (cutting
// alone leaves the server running it: a write answered 503 would commit later). Directly, the
// backend is the socket's alone: cancel and cut at once. Behind PgBouncer (pgbouncer: true) the
// cancel is forwarded to the server connection the client is linked to: the client is ended only
// once the cancel was delivered. Told once: later sweeps that see it late again do nothing.
// Failed on a718e61 (and fcdc486): expected { cancels: +0, …(1) } to deeply equal { cancels: 1, ends: [ … ] }.
import { describe, expect, test } from 'vitest'
import type { PoolConnection } from '../../src/server-connection.js'
import { flush } from '../fake-clock.js'
import { FakeHolder, type PoolHarness, poolHarness } from '../fake-holder.js'

async function hold(h: PoolHarness, holder: FakeHolder): Promise<PoolConnection> {
  h.acquire(holder)
  await flush()
  return holder.conn as PoolConnection
}

const none = { idleTimeout: 0, maxLifetime: 0, leakDetectionThreshold: 0 }

describe('a statement past its deadline is cancelled before its connection is cut', () => {
  test('directly: cancelled and cut at once', async () => {
    const h = poolHarness({ ...none, max: 1, statementTimeout: 200 })
    const a = new FakeHolder()
    const conn = await hold(h, a)
    a.queryStart = h.clock.now()
    h.clock.advance(1_500)
    const fake = h.factory.connections[0]
    expect(conn.closeReason).toBe('deadline')
    expect({ cancels: fake?.cancels, ends: fake?.ends }).toEqual({
      cancels: 1,
      ends: [{ reason: 'deadline', graceSeconds: 0 }],
    })
    h.clock.advance(3_000)
    expect(fake?.cancels).toBe(1)
  })

  test('behind PgBouncer: cancelled, and ended only once the cancel was delivered', async () => {
    const h = poolHarness({ ...none, max: 1, statementTimeout: 200, pgbouncer: true })
    const a = new FakeHolder()
    const conn = await hold(h, a)
    a.queryStart = h.clock.now()
    h.clock.advance(1_500)
    const fake = h.factory.connections[0]
    expect(conn.closeReason).toBe('deadline')
    expect({ cancels: fake?.cancels, ends: fake?.ends }).toEqual({ cancels: 1, ends: [] })
    // Later sweeps see it late again: nothing more.
    h.clock.advance(3_000)
    expect({ cancels: fake?.cancels, ends: fake?.ends }).toEqual({ cancels: 1, ends: [] })
    fake?.cancelAnswered()
    await flush()
    expect(fake?.ends).toEqual([{ reason: 'deadline', graceSeconds: 1 }])
  })
})
