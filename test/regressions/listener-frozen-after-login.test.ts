import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { failOnProcessErrors } from '../faults/process-errors.js'
import { coreApp } from '../support/app.js'
import { createTestDatabase, sleep, type TestDatabase } from '../support/database.js'
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js'

// Found by hostile probing (failed before the fix).
// Expected (packages/core/README.md, LISTEN/NOTIFY): listen() "resolves with `{ unlisten() }` once
// the server listens"; "A connection that cannot be opened rejects `listen()` with
// `FST_PG_POOL_CONNECT_FAILED`". The pool bounds its own openings and statements against a frozen
// server (connectTimeout bounds "the whole opening"; statementTimeout + 1 s for a statement), so
// listen() must settle within a bound too (here: connectTimeout 500 ms, statementTimeout 1 s).
//
// What happened: the server freezes right after the login (black-holed when the LISTEN is sent).
// postgres.js's connect_timeout ends at the handshake, and the listener's LISTEN
// (listener.ts #run: this.#clientNow().unsafe(text)) has no deadline: listen() stays pending
// forever (until app.close()), and an `await app.db.listen(...)` at startup hung the app's boot.
// listen() now gives up after connectTimeout + statementTimeout + 1 s (2.5 s here).

let db: TestDatabase
let proxy: TcpProxy
failOnProcessErrors()
beforeAll(async () => {
  db = await createTestDatabase()
  proxy = await startTcpProxy(Number(new URL(db.directUrl).port))
})
afterAll(async () => {
  await proxy?.close()
  await db?.drop()
})

describe('listen() on a server that freezes after the login', () => {
  test('settles (rejects with a coded error) instead of staying pending', async () => {
    const { app } = await coreApp(proxy.urlFor(db.directUrl), {
      pgbouncer: false,
      lazy: true,
      max: 1,
      connectTimeout: 500,
      statementTimeout: 1_000,
    })
    try {
      proxy.onClientData = (chunk) => {
        if (chunk.toString('latin1').includes('LISTEN')) proxy.setMode('blackhole')
      }
      const outcome = await Promise.race([
        app.db
          .listen('frozen', () => {})
          .then(
            () => 'resolved',
            (error: { code?: string }) => `rejected ${error.code}`,
          ),
        sleep(10_000).then(() => 'still pending after 10 s'),
      ])
      expect(outcome).toBe('rejected FST_PG_POOL_CONNECT_FAILED')
    } finally {
      proxy.onClientData = undefined
      await app.close()
    }
  }, 20_000)
})
