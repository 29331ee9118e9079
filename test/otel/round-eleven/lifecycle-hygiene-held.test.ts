// Round eleven of hostile probing, held (OpenTelemetry probe): statement forms not covered by test/otel, with queryText on and a password
// in the URL: cursor left with break (plain and transaction route), COPY TO STDOUT left with
// break, COPY FROM STDIN (ok, and refused by a unique violation whose DETAIL quotes the value),
// forEach, an onLease statement with a parameter, a statement after the reply (refused:
// FST_PG_POOL_RELEASED, no span), app.db from a timer started in a request, a unique violation
// and an invalid-input error whose messages quote the values. Every span ends once; none carries
// a parameter value, the password or a message; no session reset statement gets a span; failures
// carry the SQLSTATE as error.type and status description.
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { FastifyOtelInstrumentation } from '@fastify/otel'
import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolOtel from '@fastify-pg-pool/otel'
import { SpanStatusCode } from '@opentelemetry/api'
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
  type Span,
  type SpanProcessor,
} from '@opentelemetry/sdk-trace-base'
import Fastify from 'fastify'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName, waitFor, waitUntil } from '../../support/database.js'
import { createTables, type PasswordRole, passwordRole } from '../helpers.js'
import { spanStrings, startTestSdk, type TestSdk } from '../sdk.js'

class Tracking implements SpanProcessor {
  open = new Map<Span, string>()
  endCalls = new Map<ReadableSpan, number>()
  onStart(span: Span): void {
    this.open.set(span, span.name)
  }
  onEnd(span: ReadableSpan): void {
    this.open.delete(span as Span)
    this.endCalls.set(span, (this.endCalls.get(span) ?? 0) + 1)
  }
  async forceFlush() {}
  async shutdown() {}
}

let db: TestDatabase
let sdk: TestSdk
let role: PasswordRole
beforeAll(async () => {
  db = await createTestDatabase()
  await createTables(db)
  await db.sql.unsafe(`create table t (v text); insert into t select i::text from generate_series(1, 20000) i;
    create table u (email text unique)`)
  role = await passwordRole(db)
  await db.sql.unsafe(`grant select, insert on t, u to ${new URL(role.url).username}`)
  sdk = startTestSdk() // the context manager; spans go to the provider below
})
afterAll(async () => {
  await sdk.shutdown()
  await role.drop()
  await db.drop()
})

test('every span ends once, no value, password or message in any of them', async () => {
  const exporter = new InMemorySpanExporter()
  const tracking = new Tracking()
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter), tracking] })
  const app = Fastify()
  const instrumentation = new FastifyOtelInstrumentation()
  instrumentation.setTracerProvider(provider)
  await app.register(instrumentation.plugin())
  await app.register(pgPoolCore, {
    connection: role.url,
    pool: { max: 2, applicationName: uniqueName('life') },
    onLease: async (request, sql) => {
      if (request?.url.startsWith('/ol')) await sql`select set_config('app.tenant', ${'tenant-secret-1'}, false)`
    },
  })
  await app.register(pgPoolOtel, { tracerProvider: provider, queryText: true })
  const late: string[] = []
  app.get('/cursor', async (request) => {
    let n = 0
    for await (const rows of request.db`select v from t`.cursor(100)) {
      n += rows.length
      if (n >= 300) break
    }
    return { n }
  })
  app.get('/cursortx', { config: { db: { transaction: true } } }, async (request) => {
    let n = 0
    for await (const rows of request.db`select v from t`.cursor(100)) {
      n += rows.length
      if (n >= 300) break
    }
    return { n }
  })
  app.get('/copyout', async (request) => {
    const copy = await request.db`copy t to stdout`.readable()
    let chunks = 0
    for await (const _c of copy) if (++chunks >= 2) break
    return { chunks }
  })
  app.get('/copyin', async (request) => {
    await pipeline(Readable.from(['1\n', '2\n']), await request.db`copy t from stdin`.writable())
    return { ok: true }
  })
  app.get('/copyinbad', async (request) => {
    await pipeline(
      Readable.from(['copy-secret@x\n', 'copy-secret@x\n']),
      await request.db`copy u from stdin`.writable(),
    )
    return { ok: true }
  })
  app.get('/foreach', async (request) => {
    let n = 0
    await request.db`select v from t limit 10`.forEach(() => {
      n++
    })
    return { n }
  })
  app.get('/ol', async (request) => (await request.db`select current_setting('app.tenant') as t`)[0])
  app.get('/after', async (request, reply) => {
    reply.send({ ok: true })
    setTimeout(() => {
      request.db`select ${'late-secret'}::text as late`.catch((e: { code?: string }) => late.push(String(e.code)))
    }, 50)
    return reply
  })
  app.get('/timerjob', async () => {
    setTimeout(() => {
      app.db`select ${'timer-secret'}::text as timerjob`.catch(() => {})
    }, 20)
    return { ok: true }
  })
  app.get('/dup', async (request) => {
    await request.db`insert into u values (${'dup-secret@x'})`
    await request.db`insert into u values (${'dup-secret@x'})`
    return { ok: true }
  })
  app.get('/badint', async (request) => {
    await request.db`select ${'bad-secret'}::int`
    return {}
  })
  const expected: Record<string, number> = {
    '/cursor': 200,
    '/cursortx': 200,
    '/copyout': 200,
    '/copyin': 200,
    '/copyinbad': 409,
    '/foreach': 200,
    '/ol': 200,
    '/after': 200,
    '/timerjob': 200,
    '/dup': 409,
    '/badint': 400,
  }
  try {
    for (const [url, status] of Object.entries(expected)) {
      expect((await app.inject(url)).statusCode, url).toBe(status)
      await waitUntil(() => app.pgPool.stats().leased === 0, `lease of ${url} back`, 10_000)
    }
    await waitUntil(() => late.length === 1, 'the late statement refused')
    expect(late).toEqual(['FST_PG_POOL_RELEASED'])
    await waitUntil(
      () => exporter.getFinishedSpans().some((s) => s.attributes['db.query.text']?.toString().includes('timerjob')),
      'timer job span',
    )
  } finally {
    await app.close()
  }
  await waitFor(() => tracking.open.size === 0, 3_000)
  expect([...tracking.open.values()]).toEqual([])
  expect([...tracking.endCalls.values()].filter((n) => n !== 1)).toEqual([])

  const all = exporter.getFinishedSpans()
  const ours = all.filter((s) => s.instrumentationScope.name === '@fastify-pg-pool/otel')
  const text = spanStrings(all).join('\n')
  for (const secret of [
    'copy-secret',
    'dup-secret',
    'bad-secret',
    'tenant-secret',
    'late-secret',
    'timer-secret',
    role.password,
  ]) {
    expect(text.includes(secret), secret).toBe(false)
  }
  // No statement after the reply, no session reset statement.
  expect(ours.filter((s) => /late/.test(String(s.attributes['db.query.text'])))).toEqual([])
  expect(ours.filter((s) => /reset|discard|unlisten|advisory/i.test(String(s.attributes['db.query.text'])))).toEqual([])
  // The onLease statement: one span, its text with $1.
  expect(
    ours.filter((s) => s.attributes['db.query.text'] === "select set_config('app.tenant', $1, false)"),
  ).toHaveLength(1)
  // Failures: the SQLSTATE, never the message.
  const failed = ours.filter((s) => s.status.code === SpanStatusCode.ERROR)
  expect(failed.map((s) => [s.name, s.status.message, s.attributes['error.type']]).sort()).toEqual([
    ['copy u', '23505', '23505'],
    ['insert u', '23505', '23505'],
    ['select', '22P02', '22P02'],
  ])
  // The timer job started in a request's context: a span in that request's trace, no orphan.
  const job = ours.find((s) => String(s.attributes['db.query.text']).includes('timerjob')) as ReadableSpan
  const timerRequest = all.find(
    (s) => s.attributes['fastify.root'] === '@fastify/otel' && s.attributes['http.route'] === '/timerjob',
  )
  expect(job.spanContext().traceId).toBe(timerRequest?.spanContext().traceId)
})
