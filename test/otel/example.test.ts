import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { buildApp } from '../../examples/observability/src/app.js'
import { startOtel } from '../../examples/observability/src/otel.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

interface Received {
  path: string
  contentType: string | undefined
  body: Buffer
}

let db: TestDatabase
let sink: Server
const received: Received[] = []

beforeAll(async () => {
  db = await createTestDatabase()
  // An OTLP/HTTP receiver standing in for the collector: keeps what it is sent.
  sink = createServer((request, response) => {
    const chunks: Buffer[] = []
    request.on('data', (chunk: Buffer) => chunks.push(chunk))
    request.on('end', () => {
      received.push({
        path: request.url ?? '',
        contentType: request.headers['content-type'],
        body: Buffer.concat(chunks),
      })
      response.writeHead(200, { 'content-type': 'application/x-protobuf' }).end()
    })
  })
  await new Promise<void>((resolve) => sink.listen(0, '127.0.0.1', resolve))
})
afterAll(async () => {
  await new Promise((resolve) => sink.close(resolve))
  await db.drop()
})

test('the example app exports the pool’s spans and metrics over OTLP to the collector’s address', async () => {
  process.env.OTEL_EXPORTER_OTLP_ENDPOINT = `http://127.0.0.1:${(sink.address() as AddressInfo).port}`
  const otel = startOtel({ serviceName: 'otel-example-test', exportIntervalMillis: 60_000 })
  const app = await buildApp({ connection: db.url, logger: false, otel: true })
  try {
    expect(app.pgPoolOtel).toMatchObject({ tracing: true, metrics: true })
    expect((await app.inject('/items/7')).statusCode).toBe(200)
    // The batched spans, and one collection of the metrics (the pool's gauges are read while the app runs).
    await otel.flush()
  } finally {
    await app.close()
    await otel.shutdown()
    delete process.env.OTEL_EXPORTER_OTLP_ENDPOINT
  }
  const sent = (path: string) =>
    Buffer.concat(received.filter((r) => r.path === path).map((r) => r.body)).toString('latin1')
  expect(received.every((r) => r.contentType === 'application/x-protobuf')).toBe(true)
  const traces = sent('/v1/traces')
  const metrics = sent('/v1/metrics')
  // Protobuf carries strings as they are: the names can be looked for in the bytes.
  for (const name of [
    '@fastify-pg-pool/otel',
    '@fastify/otel',
    'db.query.summary',
    'postgresql',
    'otel-example-test',
  ]) {
    expect(traces, name).toContain(name)
  }
  for (const name of ['db.client.connection.count', 'db.client.operation.duration', 'db.client.connection.pool.name']) {
    expect(metrics, name).toContain(name)
  }
})
