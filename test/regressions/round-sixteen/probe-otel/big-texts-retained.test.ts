// Round sixteen (otel probe): a bulk-import job sends statements built with `unsafe()` (each a
// new text, large: rows of literals). With the plugin on, the process kept every one of them:
// the query-summary cache is keyed by the whole text and holds up to 1 000 texts, whatever their
// length. 600 statements of 100 kB kept 60 MB of heap after GC (the same job without the plugin:
// under 1 MB); statements of a megabyte would keep a gigabyte, an OOM kill in a container. Long
// texts are summarized each time instead of kept.
import v8 from 'node:v8'
import vm from 'node:vm'
import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolOtel from '@fastify-pg-pool/otel'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { startTestSdk, type TestSdk } from '../../../otel/sdk.js'
import { createTestDatabase, type TestDatabase } from '../../../support/database.js'

v8.setFlagsFromString('--expose-gc')
const gc = vm.runInNewContext('gc') as () => void

let db: TestDatabase
let sdk: TestSdk
beforeAll(async () => {
  db = await createTestDatabase()
  sdk = startTestSdk()
})
afterAll(async () => {
  await sdk.shutdown()
  await db.drop()
})

async function heapAfterGc(): Promise<number> {
  for (let i = 0; i < 3; i++) {
    gc()
    await new Promise((resolve) => setImmediate(resolve))
  }
  return v8.getHeapStatistics().used_heap_size
}

async function retainedBy(withPlugin: boolean): Promise<number> {
  const app: FastifyInstance = Fastify()
  await app.register(pgPoolCore, { connection: db.url, pool: { max: 2 } })
  if (withPlugin)
    await app.register(pgPoolOtel, { tracerProvider: sdk.tracerProvider, meterProvider: sdk.meterProvider })
  await app.ready()
  const before = await heapAfterGc()
  const padding = 'x'.repeat(100_000)
  for (let i = 0; i < 600; i++) await app.db.unsafe(`select ${i} as n /* ${i} ${padding} */`)
  sdk.reset()
  const after = await heapAfterGc()
  await app.close()
  return after - before
}

test('600 distinct statement texts of 100 kB: the plugin keeps none of them after GC', async () => {
  const off = await retainedBy(false)
  const on = await retainedBy(true)
  // Not a speed or exact-size check: 60 MB of texts against a margin of 20 MB.
  expect(on).toBeLessThan(off + 20e6)
}, 120_000)
