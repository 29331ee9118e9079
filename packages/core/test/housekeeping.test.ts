import { describe, expect, test } from 'vitest'
import { DEADLINE_GRACE_MS, sweepPeriod } from '../src/housekeeping.js'
import { resolvePoolOptions } from '../src/options.js'
import type { PoolConnection } from '../src/server-connection.js'
import { flush } from './fake-clock.js'
import { FakeHolder, type PoolHarness, poolHarness } from './fake-holder.js'

async function hold(h: PoolHarness, holder: FakeHolder): Promise<PoolConnection> {
  h.acquire(holder)
  await flush()
  return holder.conn as PoolConnection
}

const none = { idleTimeout: 0, maxLifetime: 0, leakDetectionThreshold: 0, statementTimeout: 0 }

describe('sweepPeriod', () => {
  test('a quarter of the shortest period it watches, between 20 ms and 1 s', () => {
    const period = (o: object) => sweepPeriod(resolvePoolOptions({ ...none, ...o }, {}, {}))
    expect(period({})).toBe(1_000)
    expect(period({ idleTimeout: 1_000 })).toBe(250)
    expect(period({ idleTimeout: 1_000, leakDetectionThreshold: 400 })).toBe(100)
    expect(period({ maxLifetime: 2_000 })).toBe(500)
    // The deadline is statementTimeout + DEADLINE_GRACE_MS.
    expect(period({ statementTimeout: 200 })).toBe((200 + DEADLINE_GRACE_MS) / 4)
    expect(period({ leakDetectionThreshold: 10 })).toBe(20)
    expect(period({ idleTimeout: 60_000 })).toBe(1_000)
    // The defaults: 30 s idle, 30 min lifetime, 30 s leak, 30 s statements.
    expect(sweepPeriod(resolvePoolOptions({}, {}, {}))).toBe(1_000)
  })
})

describe('idle connections', () => {
  test('closed at the first sweep after idleTimeout', async () => {
    const h = poolHarness({ ...none, max: 1, idleTimeout: 1_000 })
    const a = new FakeHolder()
    const conn = await hold(h, a)
    h.clock.advance(100)
    h.pool.release(conn, a, undefined)
    // Sweeps every 250 ms from the start: at +1000 it has been idle 900 ms, at +1250 1150 ms.
    h.clock.advance(1_149)
    expect(h.pool.stats()).toMatchObject({ open: 1, idle: 1 })
    h.clock.advance(1)
    expect(h.pool.stats()).toMatchObject({ open: 0, idle: 0 })
    expect(h.of('close')).toEqual([['idle']])
    expect(h.factory.last.ends).toEqual([{ reason: 'idle', graceSeconds: 1 }])
  })

  test('idleTimeout 0 keeps idle connections', async () => {
    const h = poolHarness({ ...none, max: 1 })
    const a = new FakeHolder()
    h.pool.release(await hold(h, a), a, undefined)
    h.clock.advance(3_600_000)
    expect(h.pool.stats()).toMatchObject({ open: 1, idle: 1 })
  })

  test('closed at the first sweep after their lifetime, idle or not used for long', async () => {
    const h = poolHarness({ ...none, max: 1, maxLifetime: 2_000 }, (f) => {
      f.lifetimeMs = 1_800
    })
    const a = new FakeHolder()
    h.pool.release(await hold(h, a), a, undefined)
    // Sweeps every 500 ms: the one at +2000 is the first past +1800.
    h.clock.advance(1_999)
    expect(h.pool.stats().open).toBe(1)
    h.clock.advance(1)
    expect(h.of('close')).toEqual([['lifetime']])
    expect(h.pool.stats()).toMatchObject({ open: 0, idle: 0 })
  })

  test('an idle connection the server closed is swept out with its reason', async () => {
    const h = poolHarness({ ...none, max: 1 })
    const a = new FakeHolder()
    h.pool.release(await hold(h, a), a, undefined)
    h.factory.last.markClosed('error')
    h.clock.advance(1_000)
    expect(h.of('close')).toEqual([['error']])
    expect(h.pool.stats().open).toBe(0)
  })

  test('an idle connection the server closed is replaced when taken, never handed out', async () => {
    const h = poolHarness({ ...none, max: 1 })
    const a = new FakeHolder()
    const dead = await hold(h, a)
    h.pool.release(dead, a, undefined)
    dead.markClosed('error')
    const b = new FakeHolder()
    expect(h.pool.tryAcquire(b)).toBeUndefined()
    expect(h.of('close')).toEqual([['error']])
    h.pool.wait(b)
    await flush()
    expect(b.conn).toBe(h.factory.connections[1])
  })
})

describe('held connections', () => {
  test('a lease held past leakDetectionThreshold is reported once per holder, and again for the next holder', async () => {
    const h = poolHarness({ ...none, max: 1, leakDetectionThreshold: 500 })
    const a = new FakeHolder()
    const conn = await hold(h, a)
    // Sweeps every 125 ms.
    h.clock.advance(499)
    expect(a.leaks).toEqual([])
    h.clock.advance(1)
    expect(a.leaks).toEqual([500])
    h.clock.advance(5_000)
    expect(a.leaks).toEqual([500])
    h.pool.release(conn, a, undefined)
    const b = new FakeHolder()
    expect(h.pool.tryAcquire(b)).toBe(conn)
    h.clock.advance(500)
    expect(b.leaks).toEqual([500])
    expect(h.of('leak')).toEqual([[500], [500]])
  })

  test('every pipelined holder of a shared connection is reported on its own', async () => {
    const h = poolHarness({ ...none, max: 1, leakDetectionThreshold: 100, pipelineDepth: 4 })
    const p1 = new FakeHolder('/p', true)
    await hold(h, p1)
    h.clock.advance(50)
    const p2 = new FakeHolder('/p', true)
    h.pool.tryAcquire(p2)
    h.clock.advance(50)
    expect([p1.leaks, p2.leaks]).toEqual([[100], []])
    h.clock.advance(50)
    expect([p1.leaks, p2.leaks]).toEqual([[100], [100]])
  })

  test('a statement past statementTimeout + DEADLINE_GRACE_MS has its connection cut', async () => {
    const h = poolHarness({ ...none, max: 2, statementTimeout: 200 })
    const [a, idle] = [new FakeHolder(), new FakeHolder()]
    const conn = await hold(h, a)
    // A holder with nothing running is never cut, however long it holds.
    await hold(h, idle)
    h.clock.advance(100)
    a.queryStart = h.clock.now()
    // Sweeps every 300 ms (a quarter of 1200): the deadline passes at +1300, the sweep sees it at +1500.
    h.clock.advance(1_399)
    expect(conn.usable).toBe(true)
    h.clock.advance(1)
    expect(conn.closeReason).toBe('deadline')
    expect(h.factory.connections[0]?.ends).toEqual([{ reason: 'deadline', graceSeconds: 0 }])
    expect(h.factory.connections[1]?.ends).toEqual([])
    // The holder's statements fail with the cut; its release closes the connection for good.
    h.pool.release(conn, a, 'RESET')
    expect(h.of('close')).toEqual([['deadline']])
    expect(h.pool.stats()).toMatchObject({ open: 1, leased: 1 })
  })

  test('statementTimeout 0: no deadline', async () => {
    const h = poolHarness({ ...none, max: 1 })
    const a = new FakeHolder()
    const conn = await hold(h, a)
    a.queryStart = h.clock.now()
    h.clock.advance(3_600_000)
    expect(conn.usable).toBe(true)
  })
})

describe('the sweep timer', () => {
  test('one timer at a time, stopped when the pool ends', async () => {
    const h = poolHarness({ ...none, max: 1, idleTimeout: 1_000 })
    expect(h.clock.dueIn()).toEqual([250])
    h.clock.advance(250)
    expect(h.clock.dueIn()).toEqual([250])
    await h.pool.end()
    expect(h.clock.pending).toBe(0)
  })
})
