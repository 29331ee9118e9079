// Round eleven of hostile probing, held (OpenTelemetry probe): concurrent requests (pipelined and not) with three statements each and a
// varying number of microtask hops between them (async helpers), pool max 2, so that waiters are
// handed connections while other requests' statements are dispatched: every statement span is in
// its own request's trace (the hand-off window of waiter-contexts.ts did not catch these; see
// handoff-window-cross-trace.test.ts for the code that it does catch).
import { FastifyOtelInstrumentation } from '@fastify/otel'
import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolOtel from '@fastify-pg-pool/otel'
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base'
import Fastify from 'fastify'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName, waitUntil } from '../../support/database.js'
import { listen } from '../../support/http.js'
import { startTestSdk, type TestSdk } from '../sdk.js'

let db: TestDatabase
let sdk: TestSdk
const N = 16
beforeAll(async () => {
  db = await createTestDatabase()
  for (let i = 0; i < N; i++) await db.sql.unsafe(`create table tb${i} (v int)`)
  sdk = startTestSdk()
})
afterAll(async () => {
  await sdk.shutdown()
  await db.drop()
})

for (const pipeline of [true, false])
  test(`statements in their own trace (pipeline ${pipeline})`, async () => {
    sdk.reset()
    const app = Fastify()
    const inst = new FastifyOtelInstrumentation()
    inst.setTracerProvider(sdk.tracerProvider)
    await app.register(inst.plugin())
    await app.register(pgPoolCore, {
      connection: db.url,
      pool: { max: 2, pipelineDepth: 4, maxWaiting: 1000, applicationName: uniqueName('pp') },
    })
    await app.register(pgPoolOtel, { tracerProvider: sdk.tracerProvider, meterProvider: sdk.meterProvider })
    app.get<{ Params: { n: string } }>('/p/:n', { config: { db: { pipeline } } }, async (request) => {
      const t = `tb${Number(request.params.n)}`
      await request.db.unsafe(`select count(*) from ${t}`, [])
      for (let i = 0; i < Number(request.params.n) % 8; i++) await null
      await request.db.unsafe(`select v from ${t} where v = $1`, [1])
      for (let i = 0; i < Number(request.params.n) % 5; i++) await null
      await request.db.unsafe(`select v, 2 from ${t} where v = $1`, [1])
      return { ok: true }
    })
    const base = await listen(app)
    try {
      for (let round = 0; round < 3; round++) {
        const statuses = await Promise.all(
          Array.from({ length: 4 * N }, (_, i) => fetch(`${base}/p/${i % N}`).then((r) => r.status)),
        )
        expect(statuses.filter((s) => s !== 200)).toEqual([])
      }
      await waitUntil(() => app.pgPool.stats().leased === 0, 'back')
      const all = sdk.spans()
      const byTrace = new Map<string, ReadableSpan>()
      for (const r of all.filter((s) => s.attributes['fastify.root'] === '@fastify/otel'))
        byTrace.set(r.spanContext().traceId, r)
      const misplaced: string[] = []
      let ok = 0
      for (const s of all.filter((s) => s.instrumentationScope.name === '@fastify-pg-pool/otel')) {
        const m = /tb(\d+)/.exec(s.name)
        if (m === null) continue
        const request = byTrace.get(s.spanContext().traceId)
        const url = String(request?.attributes['url.path'] ?? request?.name)
        if (!new RegExp(`/p/${m[1]}$`).test(url)) misplaced.push(`${s.name} in trace of ${url}`)
        else ok++
      }
      expect(ok).toBe(3 * 4 * N * 3)
      expect(misplaced).toEqual([])
    } finally {
      await app.close()
    }
  })
