// Round eleven of hostile probing, held (OpenTelemetry probe): COPY statements' spans end exactly once, as errors, whatever stops them:
// COPY FROM STDIN fed slowly / never ended, COPY TO STDOUT with a slow reader, each cut by a
// client hang-up, handlerTimeout or app.close() (closeTimeout 200 ms). test/otel/span-ends
// covers cursors, forEach, plain, simple and begin() blocks, not COPY.

import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolOtel from '@fastify-pg-pool/otel'
import { context } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { BasicTracerProvider, type ReadableSpan, type Span, type SpanProcessor } from '@opentelemetry/sdk-trace-base'
import Fastify, { type FastifyRequest } from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName, waitFor, waitUntil } from '../../support/database.js'
import { listen, startRequest } from '../../support/http.js'

class Tracking implements SpanProcessor {
  open = new Map<Span, string>()
  ended: ReadableSpan[] = []
  onStart(span: Span): void {
    this.open.set(span, span.name)
  }
  onEnd(span: ReadableSpan): void {
    this.open.delete(span as Span)
    this.ended.push(span)
  }
  async forceFlush() {}
  async shutdown() {}
}
let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table t (id int)`
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
})
afterAll(async () => {
  context.disable()
  await db.drop()
})

type Work = (db: FastifyRequest['db']) => Promise<unknown>
const forms: Record<string, Work> = {
  'copy in slow': async (db) => {
    const w = await db`copy t from stdin`.writable()
    await pipeline(
      Readable.from(
        (async function* () {
          for (let i = 0; i < 1000; i++) {
            yield `${i}\n`
            await sleep(50)
          }
        })(),
      ),
      w,
    )
  },
  'copy in never ended': async (db) => {
    const w = await db`copy t from stdin`.writable()
    w.write('1\n')
    await sleep(1_500)
  },
  'copy out slow reader': async (db) => {
    const r = await db`copy (select g from generate_series(1, 3000000) g) to stdout`.readable()
    for await (const _c of r) await sleep(100)
  },
}

describe.each(['abort', 'timeout', 'close'] as const)('%s', (stop) => {
  test.each(Object.keys(forms))('%s', async (form) => {
    const tracking = new Tracking()
    const provider = new BasicTracerProvider({ spanProcessors: [tracking] })
    const a = Fastify({ logger: false })
    await a.register(pgPoolCore, {
      connection: db.url,
      pool: { max: 1, applicationName: uniqueName('cp'), closeTimeout: 200 },
    })
    await a.register(pgPoolOtel, { tracerProvider: provider })
    a.get('/work', stop === 'timeout' ? { handlerTimeout: 300 } : {}, async (request) => {
      try {
        await (forms[form] as Work)(request.db)
      } catch {}
      return 'done'
    })
    const base = await listen(a)
    const client = startRequest(`${base}/work`)
    await waitUntil(() => tracking.open.size > 0, 'a span', 5000)
    await sleep(200)
    if (stop === 'abort') client.abort()
    if (stop === 'close') await a.close()
    await client.done
    await waitFor(() => a.pgPool.stats().leased === 0, 5000)
    if (stop !== 'close') await a.close()
    await waitFor(() => tracking.open.size === 0, 3000)
    expect([...tracking.open.values()]).toEqual([])
    const copies = tracking.ended.filter((s) => s.name.startsWith('copy'))
    expect(copies).toHaveLength(1)
    expect(new Set(tracking.ended).size).toBe(tracking.ended.length)
    // Cut: an error (57014 cancelled, or the pool's ABORTED/CLOSED), never a success.
    expect(copies[0]?.status.code).toBe(2)
    expect(String(copies[0]?.attributes['error.type'])).toMatch(
      /^(57014|FST_PG_POOL_ABORTED|FST_PG_POOL_CLOSED|FST_PG_POOL_CONNECTION_LOST)$/,
    )
  })
})
