import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolOtel, { applicationNameFormats, traceContextApplicationName } from '@fastify-pg-pool/otel'
import { context, trace } from '@opentelemetry/api'
import Fastify from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { startTestSdk, type TestSdk } from '../otel/sdk.js'
import { createTestDatabase, type TestDatabase, uniqueName } from '../support/database.js'

// Found by hostile probing: PostgreSQL 16 and later store each non-ASCII byte of an
// application_name as a four-byte `\xNN` escape before the 63-byte cut. The route format
// (`<route> <trace-id>`, "the route whole up to 30 bytes and the trace id") counted UTF-8 bytes,
// so a route of 29 UTF-8 bytes grew past 30 on the server and cut the trace id to 10 of its 32
// characters. Both formats now write the route as the server stores it (serverText). On
// PostgreSQL 15 (which writes `?`, same length) the defect did not show; the test asserts the
// same escaped name there.

let db: TestDatabase
let sdk: TestSdk
beforeAll(async () => {
  db = await createTestDatabase()
  sdk = startTestSdk({ global: true })
})
afterAll(async () => {
  await sdk.shutdown()
  await db.drop()
})

describe('trace context, route format, a route with non-ASCII characters', () => {
  test('pg_stat_activity still shows the whole trace id', async () => {
    const app = Fastify({ logger: false })
    await app.register(pgPoolCore, {
      connection: db.url,
      pool: { max: 1, applicationName: uniqueName('tcx') },
      leaseApplicationName: (_request, route) =>
        traceContextApplicationName(route, context.active(), applicationNameFormats.route),
    })
    await app.register(pgPoolOtel, {})
    const route = '/städte/straße/größe/:id'
    expect(Buffer.byteLength(route)).toBeLessThanOrEqual(30)
    let traceId = ''
    app.get(route, async (request) =>
      trace.getTracer('probe').startActiveSpan('handler', async (span) => {
        traceId = span.spanContext().traceId
        try {
          const [row] = await request.db<{ activity: string }[]>`
            select application_name as activity from pg_stat_activity where pid = pg_backend_pid()`
          return row
        } finally {
          span.end()
        }
      }),
    )
    try {
      const res = await app.inject(encodeURI('/städte/straße/größe/1'))
      expect(res.statusCode).toBe(200)
      const { activity } = res.json() as { activity: string }
      expect(traceId).toMatch(/^[0-9a-f]{32}$/)
      // The route's first 30 bytes as the server stores them (whole characters), then the trace id.
      expect(activity).toBe(`/st\\xc3\\xa4dte/stra\\xc3\\x9fe/g ${traceId}`)
    } finally {
      await app.close()
    }
  })
})
