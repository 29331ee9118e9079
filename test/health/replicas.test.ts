import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolHealth from '@fastify-pg-pool/health'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterEach, describe, expect, test } from 'vitest'
import { waitUntil } from '../support/database.js'
import { useNotesCluster } from '../support/notes-cluster.js'
import { expectHealthJson } from './support.js'

// Issue 20: a lagging or lost replica degrades readiness to warn; it never fails it while the
// primary serves.

const notes = useNotesCluster('health')
let app: FastifyInstance | undefined

afterEach(async () => {
  await app?.close()
  app = undefined
})

async function replicaApp(): Promise<FastifyInstance> {
  const instance = Fastify()
  await instance.register(pgPoolCore, {
    connection: notes.database.primaryUrl,
    replicas: [notes.database.standbyUrls[0] as string],
    replica: { lagInterval: 50, maxLag: { seconds: 0.2 } },
    pool: { max: 2, connectTimeout: 1_000 },
  })
  await instance.register(pgPoolHealth, { cacheTime: 0, pingTimeout: 1_000 })
  await instance.ready()
  return instance
}

async function ready(instance: FastifyInstance) {
  const res = await instance.inject('/health/ready')
  return { status: res.statusCode, body: expectHealthJson(JSON.parse(res.body)) }
}

describe('readiness with a read replica', () => {
  test('lagging past maxLag, then stopped: warn (200) each time, naming replica-0; back: pass', async () => {
    app = await replicaApp()
    const current = app
    const replica = () => current.pgPools.all()[1]
    await waitUntil(() => replica()?.replica()?.usable === true, 'the replica usable', 10_000)
    const up = await ready(current)
    expect(up.status).toBe(200)
    expect(up.body.status).toBe('pass')
    expect(up.body.checks?.['postgres:responseTime']?.map((c) => c.componentId)).toEqual(['primary', 'replica-0'])
    expect(up.body.checks?.['postgres:replicationLag']).toEqual([
      expect.objectContaining({ componentId: 'replica-0', status: 'pass', observedUnit: 's', usable: true }),
    ])

    await notes.cluster.pauseReplay(notes.cluster.standby)
    await notes.primarySql`insert into notes (body) values ('behind')`
    await waitUntil(() => replica()?.replica()?.usable === false, 'the replica lagging', 10_000)
    const lagging = await ready(current)
    expect(lagging.status).toBe(200)
    expect(lagging.body.status).toBe('warn')
    expect(lagging.body.checks?.['postgres:replicationLag']?.[0]).toMatchObject({ status: 'warn', usable: false })
    expect(lagging.body.output).toMatch(/^replica-0: replica lagging: /)
    await notes.cluster.resumeReplay(notes.cluster.standby)
    await waitUntil(() => replica()?.replica()?.usable === true, 'the replica caught up', 10_000)
    expect((await ready(current)).body.status).toBe('pass')

    await notes.cluster.standby.stop()
    const lost = await ready(current)
    expect(lost.status).toBe(200)
    expect(lost.body.status).toBe('warn')
    expect(lost.body.checks?.['postgres:responseTime']?.map((c) => [c.componentId, c.status])).toEqual([
      ['primary', 'pass'],
      ['replica-0', 'fail'],
    ])
    expect(lost.body.output).toContain('replica-0: database unreachable (FST_PG_POOL_CONNECT_FAILED)')

    await notes.cluster.standby.start()
    await waitUntil(async () => (await ready(current)).body.status === 'pass', 'readiness back to pass', 15_000)
  })
})

// The ping opened its connection without the pool's primary check: a primary given as a host
// list answered readiness from whichever host took the connection, a standby included, while
// every pool connection failed with NOT_PRIMARY.
describe('readiness of a primary given as a host list', () => {
  test('with no primary among its hosts, the ping fails as the pool does: 503', async () => {
    const standby = new URL(notes.database.standbyUrls[0] as string)
    const standbysOnly = (notes.database.standbyUrls[0] as string).replace(
      standby.host,
      `${standby.host},${standby.host}`,
    )
    app = Fastify()
    await app.register(pgPoolCore, { connection: standbysOnly, pool: { max: 1, lazy: true, connectTimeout: 1_000 } })
    await app.register(pgPoolHealth, { cacheTime: 0, pingTimeout: 1_000 })
    app.get('/q', async (request) => request.db`select 1`)
    expect((await app.inject('/q')).statusCode).toBe(503)
    await expect(app.pgPool.ping(1_000)).rejects.toMatchObject({ code: 'FST_PG_POOL_CONNECT_FAILED' })
    const res = await ready(app)
    expect({ status: res.status, body: res.body.status }).toEqual({ status: 503, body: 'fail' })
  })
})
