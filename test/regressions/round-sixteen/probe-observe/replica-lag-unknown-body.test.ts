// Round sixteen (observability probe). What the operator reads on /health for a read replica:
// 1. A replica lagging past the default maxLag (5 s, no byte bound) is reported as
//    "replica lagging: 12 s, 300 bytes behind (maxLag 5 s, Infinity bytes)": the bound nobody set
//    is printed as Infinity (and a bytes-only maxLag printed "maxLag Infinity s"), in the body and
//    in the readiness log line.
// 2. A replica whose lag is not known (unreachable, a standby of another cluster, ahead of the
//    primary) is reported with "observedValue": null and "bytes": null: JSON has no Infinity, the
//    core's value for an unknown lag. The exported ReplicationLagCheck type promised numbers, so a
//    TypeScript consumer comparing observedValue with a threshold compiled fine and read null as
//    "within bounds". The body is right to say null (unknown); the type now says it too.
import Fastify from 'fastify'
import pgPool, { type HealthResponse } from 'fastify-pg-pool'
import { expect, expectTypeOf, test } from 'vitest'
import { replicationLagCheck } from '../../../../packages/health/src/health-report.js'
import { createTestDatabase, waitUntil } from '../../../support/database.js'

const lag = { bytes: 300, seconds: 12, replayLsn: '0/1', at: 0, error: undefined }
const check = (maxLag: { seconds: number; bytes: number }) =>
  replicationLagCheck({ usable: false, lag, maxLag } as never, lag, 't', 'replica-0')

test('a lagging replica names only the maxLag bounds that were set', () => {
  expect(check({ seconds: 5, bytes: Number.POSITIVE_INFINITY }).output).toBe(
    'replica lagging: 12 s, 300 bytes behind (maxLag 5 s): reads go elsewhere',
  )
  expect(check({ seconds: Number.POSITIVE_INFINITY, bytes: 100 }).output).toBe(
    'replica lagging: 12 s, 300 bytes behind (maxLag 100 bytes): reads go elsewhere',
  )
  expect(check({ seconds: 5, bytes: 100 }).output).toBe(
    'replica lagging: 12 s, 300 bytes behind (maxLag 5 s, 100 bytes): reads go elsewhere',
  )
})

test('an unreachable replica: its lag is null in the body, and typed so', async () => {
  const db = await createTestDatabase()
  const app = Fastify()
  try {
    await app.register(pgPool, {
      connection: db.url,
      // Nothing listens on port 1: every lag sample of this replica fails.
      replicas: ['postgres://postgres@127.0.0.1:1/nowhere'],
      replica: { lagInterval: 50 },
      health: { cacheTime: 0 },
      backpressure: false,
    })
    await app.ready()
    const replica = app.pgPools.all().find((view) => view.name === 'replica-0')
    await waitUntil(() => replica?.replica()?.lag !== undefined, 'a lag sample', 10_000)
    const res = await app.inject('/health')
    expect(res.statusCode).toBe(200)
    const body = JSON.parse(res.body) as HealthResponse
    const entry = body.checks?.['postgres:replicationLag']?.[0]
    expect(entry).toMatchObject({ componentId: 'replica-0', status: 'warn', usable: false })
    expect(entry?.observedValue).toBeNull()
    expect(entry?.bytes).toBeNull()
    expect(res.body).not.toMatch(/Infinity/)
    if (entry !== undefined) {
      expectTypeOf(entry.observedValue).toEqualTypeOf<number | null>()
      expectTypeOf(entry.bytes).toEqualTypeOf<number | null>()
    }
  } finally {
    await app.close()
    await db.drop()
  }
}, 30_000)
