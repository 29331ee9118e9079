// Round eleven, second round (attacks on its fixes): a read whose replica can open no connection falls back to the primary
// (lease.ts acquireFailed → #acquire) inside the context the replica pool fails its waiters in
// (pool.ts #openFailed / #expire run in the first waiter's connect attempt or queue timer), not
// the waiter's own: the second waiter's statement lands in the FIRST waiter's trace.

import { AsyncLocalStorage } from 'node:async_hooks'
import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolOtel from '@fastify-pg-pool/otel'
import { context, type Span, trace } from '@opentelemetry/api'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { startTestSdk, type TestSdk } from '../../otel/sdk.js'
import { waitUntil } from '../../support/database.js'
import { type NotesCluster, startNotesCluster } from '../../support/replication.js'
import { startTcpProxy, type TcpProxy } from '../../support/tcp-proxy.js'

let notes: NotesCluster
let proxy: TcpProxy
let sdk: TestSdk
beforeAll(async () => {
  notes = await startNotesCluster('probe_r12_fallback')
  proxy = await startTcpProxy(notes.cluster.standby.port)
  sdk = startTestSdk()
}, 120_000)
afterAll(async () => {
  await sdk?.shutdown()
  await proxy?.close()
  await notes?.destroy()
})

test('a replica read that falls back to the primary stays in its own trace', async () => {
  const app: FastifyInstance = Fastify()
  await app.register(pgPoolCore, {
    connection: notes.database.primaryUrl,
    replicas: [proxy.urlFor(notes.database.standbyUrls[0] as string)],
    replica: { lagInterval: 60_000, maxLag: { seconds: 600 } },
    pool: { max: 4, connectTimeout: 1_000, acquireTimeout: 8_000 },
  })
  await app.register(pgPoolOtel, {
    tracerProvider: sdk.tracerProvider,
    meterProvider: sdk.meterProvider,
    queryText: true,
  })
  await app.ready()
  try {
    const replicaPool = () => app.pgPools.all()[1] as NonNullable<ReturnType<typeof app.pgPools.all>[number]>
    await waitUntil(() => replicaPool().replica()?.usable === true, 'the replica to be usable', 10_000)
    // The replica freezes in the handshake (its last sample still says usable).
    proxy.cutAll()
    await waitUntil(() => replicaPool().stats().open === 0, 'the replica pool to have no connection', 5_000)
    proxy.setMode('blackhole')
    const replicaDb = (app.db as unknown as { replica: FastifyInstance['db'] }).replica
    const tracer = sdk.tracerProvider.getTracer('test')
    const a = tracer.startSpan('job A')
    const b = tracer.startSpan('job B')
    const within = <T>(span: Span, fn: () => T) => context.with(trace.setSpan(context.active(), span), fn)
    const jobA = within(a, async () => await replicaDb`select 'a' as job_a`)
    await waitUntil(() => replicaPool().stats().waiting === 1, 'job A to wait on the replica')
    const jobB = within(b, async () => await replicaDb`select 'b' as job_b`)
    await waitUntil(() => replicaPool().stats().waiting === 2, 'job B to wait on the replica')
    expect(await jobA).toEqual([{ job_a: 'a' }])
    expect(await jobB).toEqual([{ job_b: 'b' }])
    a.end()
    b.end()
    const traceOf = (span: { spanContext(): { traceId: string } }) =>
      span.spanContext().traceId === a.spanContext().traceId
        ? 'A'
        : span.spanContext().traceId === b.spanContext().traceId
          ? 'B'
          : 'other'
    // Each job's statement in its own trace (db.query.text tells them apart).
    const selects = sdk
      .spans()
      .filter((s) => s.name === 'select')
      .map((s) => `${String(s.attributes['db.query.text']).match(/job_[ab]/)?.[0]} in ${traceOf(s)}`)
    expect(selects.sort()).toEqual(['job_a in A', 'job_b in B'])
  } finally {
    proxy.setMode('pass')
    await app.close()
  }
}, 60_000)

test('leaseApplicationName of a replica read that falls back reads its own AsyncLocalStorage (no tracer)', async () => {
  const als = new AsyncLocalStorage<string>()
  const seen: string[] = []
  const app: FastifyInstance = Fastify()
  await app.register(pgPoolCore, {
    connection: notes.database.primaryUrl,
    replicas: [proxy.urlFor(notes.database.standbyUrls[0] as string)],
    replica: { lagInterval: 60_000, maxLag: { seconds: 600 } },
    pool: { max: 4, connectTimeout: 1_000, acquireTimeout: 8_000 },
    leaseApplicationName: (_request, route) => {
      seen.push(`${als.getStore()} ${route}`)
      return undefined
    },
  })
  await app.ready()
  try {
    const replicaPool = () => app.pgPools.all()[1] as NonNullable<ReturnType<typeof app.pgPools.all>[number]>
    await waitUntil(() => replicaPool().replica()?.usable === true, 'the replica to be usable', 10_000)
    proxy.cutAll()
    await waitUntil(() => replicaPool().stats().open === 0, 'the replica pool to have no connection', 5_000)
    proxy.setMode('blackhole')
    seen.length = 0
    const replicaDb = (app.db as unknown as { replica: FastifyInstance['db'] }).replica
    const jobA = als.run('A', async () => await replicaDb`select 'a' as job_a`)
    await waitUntil(() => replicaPool().stats().waiting === 1, 'job A to wait on the replica')
    const jobB = als.run('B', async () => await replicaDb`select 'b' as job_b`)
    await waitUntil(() => replicaPool().stats().waiting === 2, 'job B to wait on the replica')
    expect(await jobA).toEqual([{ job_a: 'a' }])
    expect(await jobB).toEqual([{ job_b: 'b' }])
    // One call per lease, each in the context its job ran in.
    expect(seen.sort()).toEqual(['A app.db.replica', 'B app.db.replica'])
  } finally {
    proxy.setMode('pass')
    await app.close()
  }
}, 60_000)
