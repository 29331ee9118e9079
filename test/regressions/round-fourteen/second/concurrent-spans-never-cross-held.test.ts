// Attack on 6a5832a (statements that wait before they are sent publish their start in their
// caller's AsyncLocalStorage.snapshot()): many concurrent requests on pools of one connection each,
// so that nearly every statement waits (for a connection, behind another statement, behind
// onLease), on every route kind: a plain route with statements in a span of the handler's and
// several at once, a pipelined route, a begin() block, a named instance (request.dbs.other), an
// app.db statement in a handler, a COPY TO STDOUT stream returned as the payload. Expected: every
// statement's span is in its own request's trace (never another request's), and a statement
// awaited under the handler's span is that span's child. With @fastify/otel and without it (the
// handler opening its own span).
import { FastifyOtelInstrumentation } from '@fastify/otel'
import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolOtel from '@fastify-pg-pool/otel'
import { trace } from '@opentelemetry/api'
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { startTestSdk, type TestSdk } from '../../../otel/sdk.js'
import { createTestDatabase, type TestDatabase, uniqueName } from '../../../support/database.js'
import { type TracedProvider, tracedProvider } from '../observe/kit.js'

let db: TestDatabase
let sdk: TestSdk
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table crossing (id int)`
  await db.sql`insert into crossing select generate_series(1, 50)`
  sdk = startTestSdk()
})
afterAll(async () => {
  await sdk.shutdown()
  await db.drop()
})

interface Seen {
  trace: string
  inner?: string
}

async function build(traced: TracedProvider, withFastifyOtel: boolean, seen: Map<string, Seen>) {
  const app = Fastify()
  if (withFastifyOtel) {
    const instrumentation = new FastifyOtelInstrumentation()
    instrumentation.setTracerProvider(traced.provider)
    await app.register(instrumentation.plugin())
  }
  await app.register(pgPoolCore, {
    connection: db.url,
    pool: { max: 1, maxWaiting: 100, applicationName: uniqueName('cross') },
  })
  await app.register(pgPoolCore, {
    name: 'other',
    connection: db.url,
    pool: { max: 1, maxWaiting: 100, applicationName: uniqueName('cross-other') },
    // Its statements wait for the hook too (#held).
    onLease: async (_request, sql) => {
      await sql`select 'on lease' as hook`
    },
  })
  await app.register(pgPoolOtel, { tracerProvider: traced.provider, metrics: false, queryText: true })
  const tracer = traced.provider.getTracer('app')
  /** The handler's work, in a span of the request's (@fastify/otel's, or one of its own). */
  const handle = (fn: (request: FastifyRequest<{ Params: { id: string } }>, id: string) => Promise<unknown>) => {
    return async (request: FastifyRequest<{ Params: { id: string } }>) => {
      const id = request.params.id
      const run = async () => {
        seen.set(id, { trace: trace.getActiveSpan()?.spanContext().traceId ?? 'none' })
        return fn(request, id)
      }
      if (withFastifyOtel) return run()
      return tracer.startActiveSpan(`request ${id}`, async (span) => {
        try {
          return await run()
        } finally {
          span.end()
        }
      })
    }
  }
  const tag = (id: string, what: string) => `select 1 as one /* req-${id} ${what} */`
  app.get<{ Params: { id: string } }>(
    '/plain/:id',
    handle(async (request, id) => {
      await request.db.unsafe(tag(id, 'first'))
      await tracer.startActiveSpan(`inner ${id}`, async (span) => {
        ;(seen.get(id) as Seen).inner = span.spanContext().spanId
        await request.db.unsafe(tag(id, 'inner'))
        span.end()
      })
      await Promise.all([request.db.unsafe(tag(id, 'all-a')), request.db.unsafe(tag(id, 'all-b'))])
      return { id }
    }),
  )
  app.get<{ Params: { id: string } }>(
    '/pipe/:id',
    { config: { db: { pipeline: true } } },
    handle(async (request, id) => {
      await Promise.all([request.db.unsafe(tag(id, 'pipe-a')), request.db.unsafe(tag(id, 'pipe-b'))])
      return { id }
    }),
  )
  app.get<{ Params: { id: string } }>(
    '/block/:id',
    handle(async (request, id) => {
      await request.db.begin(async (tx) => {
        await tx.unsafe(tag(id, 'block-a'))
        await tx.unsafe(tag(id, 'block-b'))
      })
      return { id }
    }),
  )
  app.get<{ Params: { id: string } }>(
    '/named/:id',
    handle(async (request, id) => {
      const other = request.dbs.other as NonNullable<typeof request.db>
      await Promise.all([other.unsafe(tag(id, 'named-a')), other.unsafe(tag(id, 'named-b'))])
      await app.db.unsafe(tag(id, 'app-db'))
      return { id }
    }),
  )
  app.get<{ Params: { id: string } }>(
    '/copy/:id',
    handle(async (request, id) => {
      // The stream is read after the handler returned; its statement is the request's.
      return request.db.unsafe(`copy (select id from crossing /* req-${id} copy */) to stdout`).readable()
    }),
  )
  await app.ready()
  return app
}

async function storm(app: FastifyInstance): Promise<string[]> {
  const ids: string[] = []
  const requests: Promise<{ statusCode: number; body: string }>[] = []
  let n = 0
  for (let round = 0; round < 6; round++) {
    for (const kind of ['plain', 'pipe', 'block', 'named', 'copy']) {
      const id = `${kind}${n++}`
      ids.push(id)
      requests.push(app.inject({ method: 'GET', url: `/${kind}/${id}` }))
    }
  }
  const responses = await Promise.all(requests)
  const failed = responses.map((r, i) => `${ids[i]} ${r.statusCode} ${r.statusCode === 200 ? '' : r.body}`)
  expect(failed.filter((line) => !line.includes(' 200 '))).toEqual([])
  return ids
}

describe('concurrent requests waiting for one connection each', () => {
  for (const withFastifyOtel of [true, false]) {
    test(`each statement's span is in its own request's trace (${withFastifyOtel ? 'with' : 'without'} @fastify/otel)`, async () => {
      const traced = tracedProvider()
      const seen = new Map<string, Seen>()
      const app = await build(traced, withFastifyOtel, seen)
      let ids: string[]
      try {
        ids = await storm(app)
      } finally {
        await app.close()
      }
      const spans = traced.ours().filter((s) => /req-\w+/.test(String(s.attributes['db.query.text'] ?? '')))
      const crossed: string[] = []
      const counted = new Map<string, number>()
      for (const span of spans) {
        const id = /req-(\w+)/.exec(String(span.attributes['db.query.text']))?.[1] as string
        counted.set(id, (counted.get(id) ?? 0) + 1)
        const expected = seen.get(id)
        if (expected === undefined || span.spanContext().traceId !== expected.trace) {
          crossed.push(`${String(span.attributes['db.query.text'])} not in its request's trace`)
        }
        if (String(span.attributes['db.query.text']).includes(' inner ') && expected !== undefined) {
          if (span.parentSpanContext?.spanId !== expected.inner) crossed.push(`${id} inner: not the inner span's child`)
        }
      }
      expect(crossed).toEqual([])
      // Every statement was traced: plain 4, pipe 2, block 2, named 3, copy 1.
      const per: Record<string, number> = { plain: 4, pipe: 2, block: 2, named: 3, copy: 1 }
      for (const id of ids) expect(counted.get(id), id).toBe(per[id.replace(/\d+$/, '')])
    })
  }
})
