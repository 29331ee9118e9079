// Attacks with a read replica (a hot standby behind a TCP proxy).
//
// 1. HELD (6a5832a): concurrent read-only requests served by the replica pool of one connection,
//    each awaiting its statements under a span of its own: every statement span is in its own
//    request's trace and the child of its handler's span.
// 2. DEFECT (probe-second, low; the opposite of what b830a8f fixed): a read served by a hot
//    standby whose answer is lost with its connection is answered "The database connection was
//    lost (CONNECTION_CLOSED; the statement was sent outside a transaction and may have run and
//    committed: retry only an idempotent request)". A standby commits nothing (every transaction
//    there is read-only): the words are false there, and a client that follows them does not
//    retry a read it safely could (a POST that reads, say). lease.ts #failureContext sets
//    `autocommit` for every pool's lease. Fix tried: not for a replica's (view().role 'replica').
import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolOtel from '@fastify-pg-pool/otel'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { startTestSdk, type TestSdk } from '../../../otel/sdk.js'
import { uniqueName, waitUntil } from '../../../support/database.js'
import { useNotesCluster } from '../../../support/notes-cluster.js'
import { startTcpProxy, type TcpProxy } from '../../../support/tcp-proxy.js'
import { tracedProvider } from '../observe/kit.js'

const notes = useNotesCluster('probe_second_replica')
let proxy: TcpProxy
let sdk: TestSdk
let app: FastifyInstance | undefined
beforeAll(async () => {
  proxy = await startTcpProxy(Number(new URL(notes.database.standbyUrls[0] as string).port))
  sdk = startTestSdk()
})
afterEach(async () => {
  proxy.onServerData = undefined
  await app?.close()
  app = undefined
})
afterAll(async () => {
  await sdk.shutdown()
  await proxy.close()
})

async function replicaApp(register: (app: FastifyInstance) => Promise<void> | void): Promise<FastifyInstance> {
  const made = Fastify()
  app = made
  await made.register(pgPoolCore, {
    connection: notes.database.primaryUrl,
    replicas: [proxy.urlFor(notes.database.standbyUrls[0] as string)],
    replica: { lagInterval: 50, maxLag: { seconds: 600 } },
    pool: { max: 1, maxWaiting: 100, applicationName: uniqueName('rep') },
  })
  await register(made)
  await made.ready()
  await waitUntil(() => made.pgPools.all()[1]?.replica()?.usable === true, 'the replica to be usable', 20_000)
  return made
}

describe('a read replica', () => {
  test('concurrent replica reads: each statement span in its own request’s trace, its handler span’s child', async () => {
    const traced = tracedProvider()
    const tracer = traced.provider.getTracer('app')
    const seen = new Map<string, { trace: string; span: string }>()
    const made = await replicaApp(async (a) => {
      await a.register(pgPoolOtel, { tracerProvider: traced.provider, metrics: false, queryText: true })
      a.get<{ Params: { id: string } }>('/read/:id', { config: { db: { readOnly: true } } }, async (request) =>
        tracer.startActiveSpan(`handler ${request.params.id}`, async (span) => {
          const id = request.params.id
          seen.set(id, { trace: span.spanContext().traceId, span: span.spanContext().spanId })
          const tag = (what: string) => `select pg_is_in_recovery() as standby /* req-${id} ${what} */`
          const [row] = await request.db.unsafe(tag('a'))
          await Promise.all([request.db.unsafe(tag('b')), request.db.unsafe(tag('c'))])
          span.end()
          return row
        }),
      )
    })
    const ids = Array.from({ length: 24 }, (_, i) => `r${i}`)
    const responses = await Promise.all(ids.map((id) => made.inject(`/read/${id}`)))
    expect(responses.map((r) => r.statusCode).every((s) => s === 200)).toBe(true)
    expect(responses.every((r) => r.json().standby === true)).toBe(true)
    const crossed: string[] = []
    let count = 0
    for (const span of traced.ours()) {
      const text = String(span.attributes['db.query.text'] ?? '')
      const id = /req-(\w+)/.exec(text)?.[1]
      if (id === undefined) continue
      count++
      const mine = seen.get(id)
      if (span.spanContext().traceId !== mine?.trace || span.parentSpanContext?.spanId !== mine?.span) {
        crossed.push(text)
      }
    }
    expect(crossed).toEqual([])
    expect(count).toBe(ids.length * 3)
  })

  test('a read on the hot standby, its answer lost: not said to have maybe committed', async () => {
    const made = await replicaApp((a) => {
      a.get('/read', { config: { db: { readOnly: true } } }, async (request) => {
        const [row] = await request.db`select 'lost-replica-answer' as marker, pg_is_in_recovery() as standby`
        return row
      })
    })
    proxy.onServerData = (chunk) => {
      if (!chunk.includes('lost-replica-answer')) return true
      proxy.onServerData = undefined
      setImmediate(() => proxy.cutAll())
      return false
    }
    const response = await made.inject('/read')
    const body = response.json() as { code?: string; message?: string }
    expect(response.statusCode).toBe(503)
    expect(body.code).toBe('FST_PG_POOL_CONNECTION_LOST')
    expect(body.message, 'a hot standby commits nothing').not.toMatch(/may have run and committed/)
  })
})
