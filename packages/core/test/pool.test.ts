import { describe, expect, test } from 'vitest'
import type { PoolStats } from '../src/pool.js'
import type { PoolConnection } from '../src/server-connection.js'
import { flush } from './fake-clock.js'
import { FakeHolder, type PoolHarness, poolHarness } from './fake-holder.js'

/** Acquires for `holder` on `h`, letting an opening complete; returns the connection it holds. */
async function hold(h: PoolHarness, holder: FakeHolder): Promise<PoolConnection> {
  h.acquire(holder)
  await flush()
  expect(holder.conn, 'holder got a connection').toBeDefined()
  return holder.conn as PoolConnection
}

function counts(stats: PoolStats) {
  const { open, connecting, idle, leased, waiting, waitingCap, oldestWaitMs, accepting } = stats
  return { open, connecting, idle, leased, waiting, waitingCap, oldestWaitMs, accepting }
}

describe('acquire', () => {
  test('a cold pool opens a connection for the first waiter and hands it over; stats at each step', async () => {
    const h = poolHarness({ max: 2 })
    const a = new FakeHolder()
    expect(h.pool.tryAcquire(a)).toBeUndefined()
    h.pool.wait(a)
    expect(counts(h.pool.stats())).toEqual({
      open: 1,
      connecting: 1,
      idle: 0,
      leased: 0,
      waiting: 1,
      waitingCap: 20,
      oldestWaitMs: 0,
      accepting: true,
    })
    await flush()
    expect(a.conn).toBe(h.factory.last)
    expect(counts(h.pool.stats())).toMatchObject({ open: 1, connecting: 0, idle: 0, leased: 1, waiting: 0 })
    expect(h.events).toEqual([
      ['connect', 0],
      ['acquire', 0],
    ])
    // The queue timer went with the last waiter: only the sweep is left.
    expect(h.clock.pending).toBe(1)
  })

  test('an idle connection is handed out at once, the most recently used first', async () => {
    const h = poolHarness({ max: 2 })
    const [a, b] = [new FakeHolder(), new FakeHolder()]
    const first = await hold(h, a)
    const second = await hold(h, b)
    expect(first).not.toBe(second)
    h.pool.release(first, a, undefined)
    h.clock.advance(5)
    h.pool.release(second, b, undefined)
    expect(h.pool.stats()).toMatchObject({ open: 2, idle: 2, leased: 0 })
    const c = new FakeHolder()
    expect(h.pool.tryAcquire(c)).toBe(second)
    expect(h.pool.stats()).toMatchObject({ idle: 1, leased: 1 })
    expect(h.factory.attempts).toHaveLength(2)
  })

  test('nobody takes an idle connection past a waiter', async () => {
    const h = poolHarness({ max: 1 })
    const a = new FakeHolder()
    const conn = await hold(h, a)
    const b = new FakeHolder()
    h.pool.wait(b)
    // A connection coming back goes to the waiter, never to a newcomer's tryAcquire.
    h.pool.release(conn, a, undefined)
    expect(b.conn).toBe(conn)
    expect(h.pool.tryAcquire(new FakeHolder())).toBeUndefined()
  })
})

describe('acquireTimeout', () => {
  test('waiters time out in the order they came, each after exactly acquireTimeout, from one queue timer', async () => {
    const h = poolHarness({ max: 1, acquireTimeout: 100 })
    await hold(h, new FakeHolder())
    const timersBefore = h.clock.created
    const waiters = [new FakeHolder('/b'), new FakeHolder('/c'), new FakeHolder('/d')]
    for (const waiter of waiters) {
      h.pool.wait(waiter)
      h.clock.advance(10)
    }
    // One timer for the whole queue, armed by the first waiter.
    expect(h.clock.created - timersBefore).toBe(1)
    expect(h.clock.pending).toBe(2)
    expect(h.pool.stats()).toMatchObject({ waiting: 3, oldestWaitMs: 30 })

    h.clock.advance(69) // 99 ms after the first waiter came
    expect(waiters.map((w) => w.error)).toEqual([undefined, undefined, undefined])
    h.clock.advance(1)
    expect(waiters[0]?.error).toMatchObject({
      code: 'FST_PG_POOL_ACQUIRE_TIMEOUT',
      statusCode: 503,
      message: 'Timed out after 100 ms waiting for a database connection',
    })
    expect(waiters[1]?.error).toBeUndefined()
    expect(h.pool.stats()).toMatchObject({ waiting: 2, oldestWaitMs: 90 })
    h.clock.advance(9)
    expect(waiters[1]?.error).toBeUndefined()
    h.clock.advance(1)
    expect(waiters[1]?.error?.code).toBe('FST_PG_POOL_ACQUIRE_TIMEOUT')
    h.clock.advance(10)
    expect(waiters[2]?.error?.code).toBe('FST_PG_POOL_ACQUIRE_TIMEOUT')
    expect(h.of('acquireError')).toEqual([
      ['timeout', 100],
      ['timeout', 100],
      ['timeout', 100],
    ])
    // Rearmed once per expiry, never one timer per waiter.
    expect(h.clock.created - timersBefore).toBe(3)
    expect(h.pool.stats()).toMatchObject({ waiting: 0, oldestWaitMs: 0, leased: 1 })
  })

  test('waiters that arrive together time out together, from one expiry', async () => {
    const h = poolHarness({ max: 1, acquireTimeout: 50 })
    await hold(h, new FakeHolder())
    const waiters = Array.from({ length: 5 }, () => new FakeHolder())
    for (const waiter of waiters) h.pool.wait(waiter)
    const timersBefore = h.clock.created
    h.clock.advance(50)
    expect(waiters.every((w) => w.error?.code === 'FST_PG_POOL_ACQUIRE_TIMEOUT')).toBe(true)
    expect(h.clock.created).toBe(timersBefore)
  })
})

describe('hand-off', () => {
  test('a released connection goes to the next waiter, in order, with its reset queued first', async () => {
    const h = poolHarness({ max: 1 })
    const a = new FakeHolder('/a')
    const conn = await hold(h, a)
    const [b, c] = [new FakeHolder('/b'), new FakeHolder('/c')]
    h.pool.wait(b)
    h.clock.advance(5)
    h.pool.wait(c)
    h.clock.advance(15)

    h.pool.release(conn, a, 'RESET A')
    expect(b.conn).toBe(conn)
    expect(c.conn).toBeUndefined()
    expect(h.factory.last.resets).toEqual(['RESET A'])
    expect(h.pool.stats()).toMatchObject({ leased: 1, waiting: 1, idle: 0, oldestWaitMs: 15 })
    expect(h.of('acquire').at(-1)).toEqual([20])
    expect(h.of('release')).toEqual([[20, '/a']])

    h.clock.advance(7)
    h.pool.release(conn, b, undefined)
    expect(c.conn).toBe(conn)
    expect(h.of('acquire').at(-1)).toEqual([22])
    // The queue is empty: its timer is gone.
    expect(h.clock.pending).toBe(1)

    h.pool.release(conn, c, 'RESET C')
    expect(h.factory.last.resets).toEqual(['RESET A', 'RESET C'])
    expect(h.pool.stats()).toMatchObject({ leased: 0, waiting: 0, idle: 1, open: 1 })
    expect(conn.idleSince).toBe(h.clock.now())
    // One connection served all three.
    expect(h.factory.attempts).toHaveLength(1)
  })

  test('a holder that released once cannot release the connection its successor holds', async () => {
    const h = poolHarness({ max: 1 })
    const a = new FakeHolder()
    const conn = await hold(h, a)
    const b = new FakeHolder()
    h.pool.wait(b)
    h.pool.release(conn, a, 'RESET')
    h.pool.release(conn, a, 'RESET')
    expect(h.pool.stats()).toMatchObject({ leased: 1, idle: 0 })
    expect(h.factory.last.resets).toEqual(['RESET'])
    expect(h.of('release')).toHaveLength(1)
  })
})

describe('cancelWait', () => {
  test('takes a waiter out of the queue with FST_PG_POOL_ABORTED; the rest keep their place and their deadline', async () => {
    const h = poolHarness({ max: 1, acquireTimeout: 100 })
    const a = new FakeHolder()
    const conn = await hold(h, a)
    const [b, c, d] = [new FakeHolder(), new FakeHolder(), new FakeHolder()]
    h.pool.wait(b)
    h.clock.advance(10)
    h.pool.wait(c)
    h.pool.wait(d)
    h.clock.advance(10)

    expect(h.pool.cancelWait(c)).toBe(true)
    expect(c.error).toMatchObject({ code: 'FST_PG_POOL_ABORTED', statusCode: 503 })
    expect(h.of('acquireError')).toEqual([['aborted', 10]])
    expect(h.pool.cancelWait(c)).toBe(false)
    expect(h.pool.stats()).toMatchObject({ waiting: 2 })

    expect(h.pool.cancelWait(b)).toBe(true)
    // d came at +10: its timeout is at +110, not at b's +100.
    h.clock.advance(80)
    expect(d.error).toBeUndefined()
    expect(h.pool.stats()).toMatchObject({ waiting: 1, oldestWaitMs: 90 })
    h.pool.release(conn, a, undefined)
    expect(d.conn).toBe(conn)
    expect(h.pool.cancelWait(d)).toBe(false)
    h.clock.advance(100)
    expect(d.error).toBeUndefined()
  })
})

describe('queue cap', () => {
  test('maxWaiting caps the queue once every connection is leased; until then the cap is the connections the pool can still open', async () => {
    const h = poolHarness({ max: 2, maxWaiting: 1 }, (f) => {
      f.defaultPlan = { hold: true }
    })
    const [a, b, c] = [new FakeHolder(), new FakeHolder(), new FakeHolder()]
    // Cold: each waiter waits for a connection opened for it, not for another request.
    expect(h.pool.stats().waitingCap).toBe(2)
    expect(h.pool.wouldRefuse()).toBe(false)
    h.pool.wait(a)
    h.pool.wait(b)
    expect(h.pool.stats()).toMatchObject({ waiting: 2, connecting: 2, waitingCap: 2 })
    expect(h.pool.wouldRefuse()).toBe(true)
    expect(() => h.pool.wait(c)).toThrow(
      expect.objectContaining({
        code: 'FST_PG_POOL_QUEUE_FULL',
        statusCode: 503,
        message: 'Too many requests are waiting for a database connection (maxWaiting 1)',
      }),
    )
    expect(h.of('acquireError')).toEqual([['rejected', 0]])
    expect(h.pool.stats().waiting).toBe(2)

    h.factory.held[0]?.succeed()
    await flush()
    // One leased, one more can be opened: the cap is still the larger of the two.
    expect(a.conn).toBeDefined()
    expect(h.pool.stats()).toMatchObject({ leased: 1, waiting: 1, waitingCap: 1 })
    expect(h.pool.wouldRefuse()).toBe(true)
    h.factory.held[1]?.succeed()
    await flush()
    expect(h.pool.stats()).toMatchObject({ leased: 2, waiting: 0, waitingCap: 1 })

    expect(h.pool.wouldRefuse()).toBe(false)
    const d = new FakeHolder()
    h.pool.wait(d)
    expect(h.pool.wouldRefuse()).toBe(true)
    expect(() => h.pool.wait(new FakeHolder())).toThrow(expect.objectContaining({ code: 'FST_PG_POOL_QUEUE_FULL' }))
    expect(h.pool.stats().waiting).toBe(1)
  })

  test('maxWaiting 0: a cold pool takes a waiter per connection it can open, and none once all are leased', async () => {
    const h = poolHarness({ max: 1, maxWaiting: 0 })
    const a = new FakeHolder()
    expect(h.pool.wouldRefuse()).toBe(false)
    h.pool.wait(a)
    expect(h.pool.wouldRefuse()).toBe(true)
    expect(() => h.pool.wait(new FakeHolder())).toThrow(expect.objectContaining({ code: 'FST_PG_POOL_QUEUE_FULL' }))
    await flush()
    expect(h.pool.stats()).toMatchObject({ leased: 1, waiting: 0, waitingCap: 0 })
    expect(h.pool.wouldRefuse()).toBe(true)
    expect(() => h.pool.wait(new FakeHolder())).toThrow(expect.objectContaining({ code: 'FST_PG_POOL_QUEUE_FULL' }))
    h.pool.release(a.conn as PoolConnection, a, undefined)
    expect(h.pool.wouldRefuse()).toBe(false)
    expect(h.pool.stats().waitingCap).toBe(1)
  })

  test('wouldRefuse(pipelined): at the cap, a pipelined request that can join a shared connection is not refused', async () => {
    const h = poolHarness({ max: 1, maxWaiting: 0, pipelineDepth: 2 })
    const p1 = new FakeHolder('/p', true)
    await hold(h, p1)
    expect(h.pool.wouldRefuse()).toBe(true)
    expect(h.pool.wouldRefuse(true)).toBe(false)
    const p2 = new FakeHolder('/p', true)
    expect(h.pool.tryAcquire(p2)).toBe(p1.conn)
    // The shared connection is full (depth 2).
    expect(h.pool.wouldRefuse(true)).toBe(true)
  })
})

describe('retirement on release', () => {
  test('a connection holding maxPreparedStatements named statements is closed on release (reason statements), not before', async () => {
    const h = poolHarness({ max: 1, maxPreparedStatements: 3 })
    const a = new FakeHolder()
    const conn = await hold(h, a)
    conn.noteEnded(true)
    conn.noteEnded(true) // failed after its Parse (22012, say): the statement stays
    conn.noteEnded(false) // found on the connection, or refused at Parse: not counted
    h.pool.release(conn, a, 'RESET')
    expect(h.of('close')).toEqual([])
    const b = new FakeHolder()
    expect(await hold(h, b)).toBe(conn)
    conn.noteEnded(true)
    expect(conn.usable).toBe(true) // the holder goes on: it retires when it comes back
    h.pool.release(conn, b, 'RESET')
    expect(h.factory.connections[0]?.ends).toEqual([{ reason: 'statements', graceSeconds: 1 }])
    expect(h.factory.connections[0]?.resets).toEqual(['RESET'])
    expect(h.of('close')).toEqual([['statements']])
    const c = new FakeHolder()
    expect(await hold(h, c)).toBe(h.factory.connections[1])
  })

  test('maxPreparedStatements 0: never retired for its statements', async () => {
    const h = poolHarness({ max: 1, maxPreparedStatements: 0 })
    const a = new FakeHolder()
    const conn = await hold(h, a)
    for (let i = 0; i < 1_000; i++) conn.noteEnded(true)
    h.pool.release(conn, a, undefined)
    expect(h.of('close')).toEqual([])
  })

  test('a connection past its lifetime is closed instead of handed on; a waiter gets a new one', async () => {
    const h = poolHarness({ max: 1 }, (f) => {
      f.lifetimeMs = 1_000
    })
    const a = new FakeHolder()
    const conn = await hold(h, a)
    const b = new FakeHolder()
    h.pool.wait(b)
    h.clock.advance(999)
    expect(conn.usable).toBe(true)
    h.clock.advance(1)
    h.pool.release(conn, a, 'RESET')
    expect(h.factory.connections[0]?.ends).toEqual([{ reason: 'lifetime', graceSeconds: 1 }])
    expect(h.factory.connections[0]?.resets).toEqual([])
    expect(h.of('close')).toEqual([['lifetime']])
    expect(b.conn).toBeUndefined()
    expect(h.pool.stats()).toMatchObject({ open: 1, connecting: 1, leased: 0, waiting: 1 })
    await flush()
    expect(b.conn).toBe(h.factory.connections[1])
    expect(h.pool.stats()).toMatchObject({ open: 1, leased: 1, waiting: 0 })
  })

  test('an unusable connection (a connection-level error) is closed, never handed on', async () => {
    const h = poolHarness({ max: 1 })
    const a = new FakeHolder()
    const conn = await hold(h, a)
    conn.markClosed('error')
    h.pool.release(conn, a, 'RESET')
    expect(h.factory.last.ends).toEqual([{ reason: 'error', graceSeconds: 1 }])
    expect(h.of('close')).toEqual([['error']])
    expect(h.pool.stats()).toMatchObject({ open: 0, idle: 0, leased: 0 })
  })

  test('a connection with a cancel request on its way goes to nobody until the request ended', async () => {
    const h = poolHarness({ max: 1 })
    const a = new FakeHolder()
    const conn = await hold(h, a)
    conn.cancel()
    const b = new FakeHolder()
    h.pool.wait(b)
    h.pool.release(conn, a, 'RESET')
    expect(h.factory.last.resets).toEqual([])
    expect(b.conn).toBeUndefined()
    expect(h.pool.stats()).toMatchObject({ open: 1, idle: 0, leased: 1, connecting: 0, waiting: 1 })
    h.factory.last.cancelAnswered()
    await flush()
    expect(b.conn).toBe(conn)
    expect(h.factory.last.resets).toEqual(['RESET'])
    expect(h.factory.last.ends).toEqual([])
  })

  test('a cancel request that does not end within connectTimeout: the connection is closed, a waiter gets a new one', async () => {
    const h = poolHarness({ max: 1 })
    const a = new FakeHolder()
    const conn = await hold(h, a)
    conn.cancel()
    const b = new FakeHolder()
    h.pool.wait(b)
    h.pool.release(conn, a, 'RESET')
    await h.clock.advanceAsync(h.pool.options.connectTimeout)
    expect(h.factory.connections[0]?.ends).toEqual([{ reason: 'error', graceSeconds: 1 }])
    expect(h.of('close')).toEqual([['error']])
    await flush()
    expect(b.conn).toBe(h.factory.connections[1])
  })

  test('the pool closing while a connection waits for its cancel request: closed at once, not handed on', async () => {
    const h = poolHarness({ max: 1 })
    const a = new FakeHolder()
    const conn = await hold(h, a)
    conn.cancel()
    h.pool.release(conn, a, 'RESET')
    await h.pool.end(1_000)
    expect(h.factory.last.ends).toEqual([{ reason: 'shutdown', graceSeconds: 0 }])
    h.factory.last.cancelAnswered()
    await flush()
    expect(h.of('close')).toEqual([['shutdown']])
    expect(h.factory.last.resets).toEqual([])
  })

  test('while the pool closes, a released connection is closed', async () => {
    const h = poolHarness({ max: 1 })
    const a = new FakeHolder()
    const conn = await hold(h, a)
    const ended = h.pool.end(1_000)
    h.pool.release(conn, a, 'RESET')
    expect(h.factory.last.ends[0]).toEqual({ reason: 'shutdown', graceSeconds: 1 })
    await ended
    expect(h.of('close')).toEqual([['shutdown']])
  })
})

describe('session reset', () => {
  test('the reset is queued on the connection when it is released, not awaited', async () => {
    const h = poolHarness({ max: 1 })
    const a = new FakeHolder()
    const conn = await hold(h, a)
    h.pool.release(conn, a, 'RESET ALL')
    expect(h.factory.last.resets).toEqual(['RESET ALL'])
    // Back at once: the next holder's statements queue behind the reset.
    expect(h.pool.stats()).toMatchObject({ idle: 1, leased: 0 })
    expect(h.pool.tryAcquire(new FakeHolder())).toBe(conn)
  })

  test('a reset that fails reroutes whoever got the connection since, then closes it; a new connection serves them', async () => {
    const h = poolHarness({ max: 1 })
    const a = new FakeHolder('/a')
    const conn = await hold(h, a)
    const b = new FakeHolder('/b')
    h.pool.wait(b)
    b.onReroute = () => h.acquire(b)
    h.pool.release(conn, a, 'RESET')
    expect(b.conn).toBe(conn)

    h.factory.connections[0]?.failReset()
    // Told synchronously: before the refusals of its own statements are read.
    expect(b.reroutes).toEqual([conn])
    expect(h.pool.stats()).toMatchObject({ leased: 0, waiting: 1 })
    await flush()
    expect(h.of('resetError')).toHaveLength(1)
    expect(h.of('resetError')[0]?.[0]).toMatchObject({ code: '25P02' })
    expect(h.factory.connections[0]?.ends).toEqual([{ reason: 'error', graceSeconds: 0 }])
    expect(h.of('close')).toEqual([['error']])
    expect(b.conn).toBe(h.factory.connections[1])
    expect(h.pool.stats()).toMatchObject({ open: 1, leased: 1, waiting: 0 })
  })

  test('a reset that fails on an idle connection closes it', async () => {
    const h = poolHarness({ max: 1 })
    const a = new FakeHolder()
    const conn = await hold(h, a)
    h.pool.release(conn, a, 'RESET')
    h.factory.last.failReset()
    await flush()
    expect(h.pool.stats()).toMatchObject({ open: 0, idle: 0 })
    expect(h.factory.last.ends).toEqual([{ reason: 'error', graceSeconds: 0 }])
    expect(h.pool.tryAcquire(new FakeHolder())).toBeUndefined()
  })

  test('a reset that fails on a shared connection reroutes every holder sharing it', async () => {
    const h = poolHarness({ max: 1, pipelineDepth: 4 })
    // An exclusive holder's reset is queued when it leaves, before pipelined holders share it.
    const a = new FakeHolder()
    const conn = await hold(h, a)
    h.pool.release(conn, a, 'RESET')
    const [p3, p4] = [new FakeHolder('/p', true), new FakeHolder('/p', true)]
    expect(h.pool.tryAcquire(p3)).toBe(conn)
    expect(h.pool.tryAcquire(p4)).toBe(conn)
    expect(h.factory.last.resets).toEqual(['RESET'])
    h.factory.last.failReset()
    expect(p3.reroutes).toEqual([conn])
    expect(p4.reroutes).toEqual([conn])
    expect(h.pool.stats()).toMatchObject({ leased: 0, shared: 0, pipelined: 0 })
  })
})

describe('end()', () => {
  test('fails every waiter at once, refuses new ones, waits for leases to come back, then closes everything', async () => {
    const h = poolHarness({ max: 1 })
    const a = new FakeHolder()
    const conn = await hold(h, a)
    const b = new FakeHolder()
    h.pool.wait(b)
    let done = false
    const ended = h.pool.end(1_000).then(() => {
      done = true
    })
    expect(h.pool.end(5)).toBe(h.pool.end())
    expect(b.error).toMatchObject({ code: 'FST_PG_POOL_CLOSED', statusCode: 503 })
    expect(h.of('acquireError')).toEqual([['rejected', 0]])
    expect(h.pool.stats()).toMatchObject({ accepting: false, waiting: 0, leased: 1 })
    expect(h.pool.wouldRefuse()).toBe(true)
    expect(h.pool.tryAcquire(new FakeHolder())).toBeUndefined()
    expect(() => h.pool.wait(new FakeHolder())).toThrow(expect.objectContaining({ code: 'FST_PG_POOL_CLOSED' }))

    await h.clock.advanceAsync(300)
    expect(done).toBe(false)
    h.pool.release(conn, a, 'RESET')
    await flush()
    expect(done).toBe(true)
    expect(a.aborts).toBe(0)
    expect(h.factory.last.ends).toEqual([{ reason: 'shutdown', graceSeconds: 1 }])
    await ended
    // Nothing left ticking.
    expect(h.clock.pending).toBe(0)
  })

  test('closes idle connections at once; a lease out keeps its connection until it comes back', async () => {
    const h = poolHarness({ max: 3 })
    const [a, b] = [new FakeHolder(), new FakeHolder()]
    await hold(h, a)
    const second = await hold(h, b)
    h.pool.release(second, b, undefined)
    expect(h.pool.stats()).toMatchObject({ idle: 1, leased: 1 })
    void h.pool.end(1_000)
    expect(h.factory.connections[1]?.ends).toEqual([{ reason: 'shutdown', graceSeconds: 1 }])
    expect(h.factory.connections[0]?.ends).toEqual([])
    expect(h.of('close')).toEqual([['shutdown']])
    expect(h.pool.stats()).toMatchObject({ open: 1, idle: 0, leased: 1 })
  })

  test('gives up the openings in flight', async () => {
    const h = poolHarness({ max: 2 })
    await hold(h, new FakeHolder())
    h.factory.defaultPlan = { hold: true }
    const b = new FakeHolder()
    h.pool.wait(b)
    expect(h.pool.stats()).toMatchObject({ connecting: 1, waiting: 1 })
    void h.pool.end(1_000)
    expect(h.factory.aborted).toBe(1)
    expect(b.error?.code).toBe('FST_PG_POOL_CLOSED')
    await flush()
    expect(h.pool.stats()).toMatchObject({ connecting: 0, open: 1, waiting: 0 })
    expect(h.of('connectError')).toEqual([])
  })

  test('past its timeout, aborts every holder, then cuts what is still there after the cancel grace', async () => {
    const h = poolHarness({ max: 2, pipelineDepth: 2 })
    const a = new FakeHolder()
    const stuck = await hold(h, a)
    const p = new FakeHolder('/p', true)
    await hold(h, p)
    let done = false
    void h.pool.end(500).then(() => {
      done = true
    })
    await h.clock.advanceAsync(499)
    expect([a.aborts, p.aborts]).toEqual([0, 0])
    await h.clock.advanceAsync(1)
    expect([a.aborts, p.aborts]).toEqual([1, 1])
    // The pipelined holder comes back when aborted; the other does not.
    h.pool.release(p.conn as PoolConnection, p, undefined)
    await h.clock.advanceAsync(999)
    expect(done).toBe(false)
    await h.clock.advanceAsync(1)
    expect(done).toBe(true)
    expect(h.factory.connections[0]).toBe(stuck)
    expect(h.factory.connections[0]?.ends).toEqual([{ reason: 'shutdown', graceSeconds: 0 }])
    expect(h.pool.stats()).toMatchObject({ open: 0, leased: 0 })
    expect(h.clock.pending).toBe(0)
  })

  test('a holder that comes back when aborted ends the close at once', async () => {
    const h = poolHarness({ max: 1 })
    const a = new FakeHolder()
    const conn = await hold(h, a)
    a.onAbort = () => h.pool.release(conn, a, undefined)
    let done = false
    void h.pool.end(200).then(() => {
      done = true
    })
    await h.clock.advanceAsync(200)
    expect(a.aborts).toBe(1)
    expect(done).toBe(true)
    expect(h.factory.last.ends[0]).toEqual({ reason: 'shutdown', graceSeconds: 1 })
  })
})

describe('shared connections', () => {
  test('pipelined holders share a connection up to pipelineDepth, then wait; a share that frees takes the next pipelined waiter', async () => {
    const h = poolHarness({ max: 1, pipelineDepth: 3 })
    const holders = Array.from({ length: 5 }, () => new FakeHolder('/p', true))
    const [p1, p2, p3, p4, p5] = holders as [FakeHolder, FakeHolder, FakeHolder, FakeHolder, FakeHolder]
    const conn = await hold(h, p1)
    expect(h.pool.tryAcquire(p2)).toBe(conn)
    expect(h.pool.tryAcquire(p3)).toBe(conn)
    expect(h.pool.stats()).toMatchObject({ open: 1, leased: 1, shared: 1, pipelined: 3, waiting: 0, idle: 0 })
    expect(h.pool.tryAcquire(p4)).toBeUndefined()
    h.pool.wait(p4)
    h.pool.wait(p5)
    expect(h.pool.stats()).toMatchObject({ pipelined: 3, waiting: 2 })

    h.clock.advance(10)
    h.pool.release(conn, p1, 'RESET 1')
    expect(p4.conn).toBe(conn)
    expect(p5.conn).toBeUndefined()
    expect(h.pool.stats()).toMatchObject({ pipelined: 3, waiting: 1 })
    h.pool.release(conn, p2, 'RESET 2')
    expect(p5.conn).toBe(conn)
    // No reset while anyone still shares it.
    expect(h.factory.last.resets).toEqual([])
    for (const p of [p3, p4, p5]) h.pool.release(conn, p, undefined)
    // Nor once the last one is out: it is owed until a holder of its own takes the connection.
    expect(h.factory.last.resets).toEqual([])
    expect(h.pool.stats()).toMatchObject({ leased: 0, shared: 0, pipelined: 0, idle: 1 })
    expect(h.of('release')).toHaveLength(5)
    expect(h.pool.tryAcquire(new FakeHolder())).toBe(conn)
    expect(h.factory.last.resets).toEqual(['RESET 1'])
  })

  test('no reset between pipelined holders; the one owed, ROLLBACK first if any asked, before an exclusive holder', async () => {
    const h = poolHarness({ max: 1, pipelineDepth: 4 })
    const p1 = new FakeHolder('/p', true)
    const conn = await hold(h, p1)
    h.pool.release(conn, p1, 'BEGIN; RESET ALL; COMMIT')
    const p2 = new FakeHolder('/p', true)
    expect(h.pool.tryAcquire(p2)).toBe(conn)
    h.pool.release(conn, p2, 'ROLLBACK; BEGIN; RESET ALL; COMMIT')
    const p3 = new FakeHolder('/p', true)
    expect(h.pool.tryAcquire(p3)).toBe(conn)
    h.pool.release(conn, p3, 'BEGIN; RESET ALL; COMMIT')
    expect(h.factory.last.resets).toEqual([])
    const a = new FakeHolder()
    expect(h.pool.tryAcquire(a)).toBe(conn)
    expect(h.factory.last.resets).toEqual(['ROLLBACK; BEGIN; RESET ALL; COMMIT'])
    // Paid once: the exclusive holder's own release asks for the next.
    h.pool.release(conn, a, undefined)
    expect(h.pool.tryAcquire(new FakeHolder())).toBe(conn)
    expect(h.factory.last.resets).toHaveLength(1)
  })

  test('a pipelined holder takes an idle connection before sharing, and sharing opens another up to max', async () => {
    const h = poolHarness({ max: 2, pipelineDepth: 4 })
    const [p1, p2, p3] = [new FakeHolder('/p', true), new FakeHolder('/p', true), new FakeHolder('/p', true)]
    const first = await hold(h, p1)
    expect(h.pool.tryAcquire(p2)).toBe(first)
    // Sharing meant no connection was free: one more is opened for the next.
    expect(h.pool.stats()).toMatchObject({ connecting: 1, open: 2 })
    await flush()
    expect(h.pool.stats()).toMatchObject({ idle: 1, shared: 1 })
    const second = h.pool.tryAcquire(p3)
    expect(second).toBe(h.factory.connections[1])
    expect(h.pool.stats()).toMatchObject({ idle: 0, leased: 2, shared: 2, pipelined: 3 })
  })

  test('an exclusive waiter at the head of the queue is not passed by pipelined waiters behind it', async () => {
    const h = poolHarness({ max: 1, pipelineDepth: 4 })
    const p1 = new FakeHolder('/p', true)
    const conn = await hold(h, p1)
    const e = new FakeHolder('/e')
    const p2 = new FakeHolder('/p', true)
    h.pool.wait(e)
    expect(h.pool.tryAcquire(p2)).toBeUndefined()
    h.pool.wait(p2)
    h.pool.release(conn, p1, undefined)
    expect(e.conn).toBe(conn)
    expect(p2.conn).toBeUndefined()
    expect(h.pool.stats()).toMatchObject({ leased: 1, shared: 0, waiting: 1 })
  })

  test('sharedQueries counts the statements pipelined holders have in flight', () => {
    const h = poolHarness({ max: 1 })
    h.pool.countSharedQuery(1)
    h.pool.countSharedQuery(1)
    h.pool.countSharedQuery(-1)
    expect(h.pool.stats().sharedQueries).toBe(1)
  })
})
