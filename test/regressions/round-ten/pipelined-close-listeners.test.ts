// What the user does: an HTTP/1.1 client pipelines many requests on one keep-alive socket (30
// GETs in one write; ordinary for a load tester, a proxy, or anyone who wants the warning); the
// first is slow, so the others' responses queue behind it. Core alone, and core + metrics.
// What they should get: every request answered and committed, and nothing on the process's
// 'warning' channel: plain Fastify gives no warning for the same traffic (checked), and no
// listener is leaked.
// What they get: "MaxListenersExceededWarning: Possible EventEmitter memory leak detected. 11
// close listeners added to [Socket]" on stderr: hang-up.ts watchClose adds one 'close' listener
// to the socket for every response queued without a socket (one more per plugin: metrics adds its
// own), past Node's default of 10. The listeners are removed when each response closes, so it is
// a false leak alarm, but it is printed in production, and an alerting pipeline that watches for
// MaxListenersExceededWarning fires on any client that pipelines.
// Suggested fix: one listener per socket (a WeakMap from socket to the set of queued responses it
// must mark), shared by core and metrics, or the responses chained (each queued response's watch
// armed when the one ahead of it closes).
import { connect } from 'node:net'
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import { afterEach, beforeEach, expect, test } from 'vitest'
import { coreApp } from '../../support/app.js'
import { waitFor } from '../../support/database.js'
import { listen } from '../../support/http.js'
import { noteTable } from '../../support/note-table.js'

const fx = noteTable()
const warnings: string[] = []
const onWarning = (warning: Error) => void warnings.push(`${warning.name}: ${warning.message}`)
beforeEach(() => {
  warnings.length = 0
  process.on('warning', onWarning)
})
afterEach(() => {
  process.off('warning', onWarning)
})

for (const withMetrics of [false, true]) {
  test(`30 GETs pipelined on one socket behind a slow one${withMetrics ? ' (with metrics)' : ''}: all committed, no MaxListenersExceededWarning`, async () => {
    fx.current = await coreApp(fx.db.url, { max: 4 })
    const { app } = fx.current
    if (withMetrics) await app.register(pgPoolMetrics)
    app.get('/tx/:n', { config: { db: { transaction: true } } }, async (request) => {
      const n = (request.params as { n: string }).n
      if (n === '0') await request.db`select pg_sleep(0.5)`
      await request.db`insert into note values (${n})`
      return { n }
    })
    const port = Number(new URL(await listen(app)).port)
    const socket = connect(port, '127.0.0.1')
    let text = ''
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1')
    })
    const n = 30
    let wire = ''
    for (let i = 0; i < n; i++) {
      wire += `GET /tx/${i} HTTP/1.1\r\nHost: x\r\n${i === n - 1 ? 'Connection: close\r\n' : ''}\r\n`
    }
    socket.write(wire)
    await new Promise((resolve) => socket.on('close', resolve))
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 5_000)).toBe(true)
    // The warning is emitted on the next tick.
    await new Promise((resolve) => setImmediate(resolve))
    expect({
      answered: [...text.matchAll(/HTTP\/1\.1 200/g)].length,
      committed: (await fx.notes()).length,
      warnings,
    }).toEqual({ answered: n, committed: n, warnings: [] })
  })
}
