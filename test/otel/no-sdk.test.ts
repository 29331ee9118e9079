import { channels } from '@fastify-pg-pool/core'
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { createTables, type OtelApp, otelApp } from './helpers.js'
import { startTestSdk } from './sdk.js'

// No SDK is registered globally in this file (each test file runs in a process of its own).
let db: TestDatabase
const apps: OtelApp[] = []
beforeAll(async () => {
  db = await createTestDatabase()
  await createTables(db)
})
afterEach(async () => {
  await Promise.all(apps.splice(0).map(({ app }) => app.close()))
})
afterAll(() => db.drop())

const subscribed = () =>
  Object.entries(channels)
    .filter(([, channel]) => channel.hasSubscribers)
    .map(([name]) => name)

test('with no SDK registered, nothing is subscribed: the core builds no message at all', async () => {
  const started = await otelApp(db.url)
  apps.push(started)
  const { app } = started
  expect(app.pgPoolOtel).toEqual({ tracing: false, metrics: false, poolNames: [app.pgPool.target] })
  expect(subscribed()).toEqual([])
  expect((await app.inject('/item/1')).statusCode).toBe(200)
  expect((await app.inject({ method: 'POST', url: '/move' })).statusCode).toBe(200)
})

test('traces: false and metrics: false subscribe nothing, even with providers given', async () => {
  const sdk = startTestSdk()
  try {
    const started = await otelApp(db.url, {
      otel: { tracerProvider: sdk.tracerProvider, meterProvider: sdk.meterProvider, traces: false, metrics: false },
    })
    apps.push(started)
    expect(started.app.pgPoolOtel.tracing).toBe(false)
    expect(subscribed()).toEqual([])
    await started.app.inject('/item/1')
    expect(sdk.spans()).toEqual([])
  } finally {
    await sdk.shutdown()
  }
})

test('metrics alone subscribe only to statements (for db.client.operation.duration); close unsubscribes', async () => {
  const sdk = startTestSdk()
  try {
    const started = await otelApp(db.url, { otel: { meterProvider: sdk.meterProvider } })
    expect(started.app.pgPoolOtel).toMatchObject({ tracing: false, metrics: true })
    expect(subscribed().sort()).toEqual(['queryEnd', 'queryStart'])
    await started.app.close()
    expect(subscribed()).toEqual([])
  } finally {
    await sdk.shutdown()
  }
})

test('traces subscribe to every channel', async () => {
  const sdk = startTestSdk()
  try {
    const started = await otelApp(db.url, { otel: { tracerProvider: sdk.tracerProvider, metrics: false } })
    apps.push(started)
    expect(subscribed().sort()).toEqual(Object.keys(channels).sort())
  } finally {
    await sdk.shutdown()
  }
})
