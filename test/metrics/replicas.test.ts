import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterEach, describe, expect, test } from 'vitest'
import { waitUntil } from '../support/database.js'
import { useNotesCluster } from '../support/notes-cluster.js'
import { parseExposition } from './exposition.js'

// Issue 20: each replica its own pool label, its lag as gauges, and reads the primary served
// instead counted by reason.

const notes = useNotesCluster('metrics')
let app: FastifyInstance | undefined

afterEach(async () => {
  await app?.close()
  app = undefined
})

describe('metrics with a read replica', () => {
  test('pool="replica-0" series, lag gauges, and fallbacks to the primary by reason', async () => {
    app = Fastify()
    await app.register(pgPoolCore, {
      connection: notes.database.primaryUrl,
      replicas: [notes.database.standbyUrls[0] as string],
      replica: { lagInterval: 50, maxLag: { seconds: 0.2 } },
      pool: { max: 2 },
    })
    await app.register(pgPoolMetrics)
    app.get('/read', { config: { db: { readOnly: true } } }, async (request) => {
      const [row] = await request.db`select pg_is_in_recovery() as standby`
      return row
    })
    await app.ready()
    const current = app
    const replica = () => current.pgPools.all()[1]
    const scrape = async () => parseExposition((await current.inject('/metrics')).body)

    await waitUntil(() => replica()?.replica()?.usable === true, 'the replica usable', 10_000)
    expect((await app.inject('/read')).json()).toEqual({ standby: true })
    let m = await scrape()
    expect(m.value('pg_pool_connections_max', { pool: 'replica-0' })).toBe(2)
    expect(m.value('pg_pool_lease_seconds_count', { pool: 'replica-0', route: '/read' })).toBe(1)
    expect(m.find('pg_pool_lease_seconds_count', { pool: 'primary', route: '/read' })).toEqual([])
    expect(m.value('pg_pool_replica_usable', { pool: 'replica-0' })).toBe(1)
    expect(m.value('pg_pool_replica_lag_seconds', { pool: 'replica-0' })).toBeGreaterThanOrEqual(0)
    expect(m.find('pg_pool_replica_lag_seconds', { pool: 'primary' })).toEqual([])
    expect(m.value('pg_pool_read_fallbacks_total', { pool: 'primary', reason: 'lagging' })).toBe(0)

    await notes.cluster.pauseReplay(notes.cluster.standby)
    await notes.primarySql`insert into notes (body) values ('behind')`
    await waitUntil(() => replica()?.replica()?.usable === false, 'the replica lagging', 10_000)
    expect((await app.inject('/read')).json()).toEqual({ standby: false })
    m = await scrape()
    expect(m.value('pg_pool_replica_usable', { pool: 'replica-0' })).toBe(0)
    expect(m.value('pg_pool_replica_lag_bytes', { pool: 'replica-0' })).toBeGreaterThan(0)
    expect(m.value('pg_pool_read_fallbacks_total', { pool: 'primary', reason: 'lagging' })).toBe(1)
    expect(m.value('pg_pool_lease_seconds_count', { pool: 'primary', route: '/read' })).toBe(1)
  })
})
