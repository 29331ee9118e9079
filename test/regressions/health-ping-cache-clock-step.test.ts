import { afterAll, afterEach, beforeAll, describe, expect, test, vi } from 'vitest'
import { healthApp, probe } from '../health/support.js'
import { createTestDatabase, sleep, type TestDatabase } from '../support/database.js'
import { listen } from '../support/http.js'
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js'

// Found by hostile probing: the readiness ping cache timed its window on the wall clock
// (Date.now). After the clock stepped back (an NTP correction, a VM resumed), a cached pass kept
// answering probes through an outage for as long as the clock went back, not for `cacheTime`
// (README: "ms a ping result, success or failure, answers later probes"). The window is timed on
// a monotonic clock now; failed on 8d0ad0b: 200 `pass` an hour long.

let db: TestDatabase
let proxy: TcpProxy
beforeAll(async () => {
  db = await createTestDatabase()
  proxy = await startTcpProxy(Number(new URL(db.url).port || 5432))
})
afterEach(() => {
  vi.restoreAllMocks()
  proxy.setMode('pass')
})
afterAll(async () => {
  await proxy.close()
  await db.drop()
})

describe('readiness cache window and the wall clock', () => {
  test('a wall-clock step back does not keep a cached pass alive while the database is unreachable', async () => {
    const pingTimeout = 300
    const cacheTime = 500
    const { app } = await healthApp(proxy.urlFor(db.url), { max: 1, lazy: true }, { pingTimeout, cacheTime })
    try {
      const base = await listen(app)
      const first = await probe(base, '/health/ready')
      expect(first.status).toBe(200)
      expect(first.body.status).toBe('pass')

      // The system clock is stepped back an hour (an NTP correction); then the database goes away.
      const realNow = Date.now.bind(Date)
      vi.spyOn(Date, 'now').mockImplementation(() => realNow() - 3_600_000)
      proxy.setMode('reset')

      // Control: the database really is unreachable for a new connection.
      await expect(app.pgPool.ping(pingTimeout)).rejects.toMatchObject({ code: 'FST_PG_POOL_CONNECT_FAILED' })

      // Well past pingTimeout + cacheTime, polling by deadline.
      const deadline = performance.now() + pingTimeout + cacheTime + 10_000
      let last = first
      while (performance.now() < deadline && last.status === 200) {
        await sleep(100)
        last = await probe(base, '/health/ready')
      }
      expect(last.status).toBe(503)
      expect(last.body.output).toBe('database unreachable (FST_PG_POOL_CONNECT_FAILED)')
    } finally {
      vi.restoreAllMocks()
      await app.close()
    }
  })

  test('control: without a clock step the same outage fails readiness within pingTimeout + cacheTime', async () => {
    const pingTimeout = 300
    const cacheTime = 500
    const { app } = await healthApp(proxy.urlFor(db.url), { max: 1, lazy: true }, { pingTimeout, cacheTime })
    try {
      const base = await listen(app)
      expect((await probe(base, '/health/ready')).status).toBe(200)
      proxy.setMode('reset')
      const deadline = performance.now() + pingTimeout + cacheTime + 10_000
      let last = await probe(base, '/health/ready')
      while (performance.now() < deadline && last.status === 200) {
        await sleep(100)
        last = await probe(base, '/health/ready')
      }
      expect(last.status).toBe(503)
    } finally {
      await app.close()
    }
  })
})
