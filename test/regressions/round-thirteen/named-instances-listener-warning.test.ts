// DEFECT (third-a, low). What the user does: registers the core once per database it talks to
// (named instances: `app.register(pgPoolCore, { name: 'orders', connection })`, one per shard,
// region or tenant database); ten of them are enough.
// What they see: at registration Node prints `MaxListenersExceededWarning: Possible EventEmitter
// memory leak detected. 11 request listeners added to [Server]`, and the same for `connection`:
// two leak warnings in the service's logs, for no leak.
// What they should see: no warning; one drain for the app's server, whatever the number of
// instances (the server is Fastify's, shared by every instance).
// Cause: packages/core/src/plugin.ts:433 builds an HttpDrain per instance, each adding a
// 'connection' and a 'request' listener to app.server (http-drain.ts:27-33), never removed.
// Suggested fix: one HttpDrain per server (keyed on app.server, e.g. in the shared state the
// instances already have), started by the first instance's preClose.
// Round thirteen, third round: failed on 381590e (both servers); passes after its fix.
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db?.drop())

test('ten named instances raise no EventEmitter leak warning', async () => {
  const warnings: string[] = []
  const onWarning = (warning: Error) => {
    if (warning.name === 'MaxListenersExceededWarning') warnings.push(warning.message)
  }
  process.on('warning', onWarning)
  const app = Fastify()
  try {
    for (let index = 0; index < 10; index += 1) {
      await app.register(pgPoolCore, { name: `shard${index}`, connection: db.url, pool: { max: 1 } })
    }
    await app.ready()
    // Warnings are emitted on the next tick.
    await new Promise((resolve) => setTimeout(resolve, 50))
    expect(warnings).toEqual([])
  } finally {
    process.off('warning', onWarning)
    await app.close()
  }
})
