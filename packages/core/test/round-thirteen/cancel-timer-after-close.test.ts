// DEFECT (probe-machines, low). What the user does: a request's statement is cancelled (client
// hung up, handlerTimeout) and its lease comes back while the cancel request is still on its way;
// the app then closes (app.close(), a deploy). What they see: pool.end() resolves, every
// connection is closed, yet the pool's "cancel did not end within connectTimeout" timer is still
// armed (connectTimeout, 5 s by default) and keeps the connection and the pool's closures
// reachable until it fires into a pool that ended; with the fake clock: `clock.pending` is 1 after
// end() resolved. Every other timer of the pool is cleared by end() (sweep, queue timer,
// connector retry, #within). What they should see: nothing of the pool left scheduled once
// end() has resolved.
// Cause: packages/core/src/pool.ts:539 #afterCancel arms a timer per connection and
// clears it only when the cancel settles; #discard (pool.ts:640, which end() runs on it) deletes the
// connection from #awaitingCancel but never clears that timer. Suggested fix: keep the timers in a
// Map<PoolConnection, TimerHandle> (instead of the Set) and clear the connection's in #discard.
// Found by the seeded fuzzer in ./fuzz-run.ts ("timers left armed after close"), shrunk by hand.
// Failed on a718e61: expected { pendingTimers: 1, dueIn: [ 5000 ] } to deeply equal { pendingTimers: +0, dueIn: [] }
import { expect, test } from 'vitest'
import { flush } from '../fake-clock.js'
import { FakeHolder, poolHarness } from '../fake-holder.js'

test('closing while a returned connection waits for its cancel request leaves no timer armed', async () => {
  const h = poolHarness({ max: 1, connectTimeout: 5_000, closeTimeout: 100 })
  const a = new FakeHolder()
  h.acquire(a)
  await flush()
  const conn = h.factory.last
  expect(a.conn).toBe(conn)
  conn.cancel()
  h.pool.release(conn, a, 'DISCARD ALL')
  expect(h.pool.stats()).toMatchObject({ leased: 1, idle: 0 })
  let ended = false
  void h.pool.end().then(() => {
    ended = true
  })
  await h.clock.advanceAsync(0)
  expect(ended).toBe(true)
  expect(conn.closed).toBe(true)
  expect({ pendingTimers: h.clock.pending, dueIn: h.clock.dueIn() }).toEqual({ pendingTimers: 0, dueIn: [] })
})
