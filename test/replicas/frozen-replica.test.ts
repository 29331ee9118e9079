import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolHealth from '@fastify-pg-pool/health'
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { waitUntil } from '../support/database.js'
import { freeze } from '../support/freeze-node.js'
import { type NotesCluster, startNotesCluster } from '../support/replication.js'

// HOLDS: a replica frozen (SIGSTOP of every process of the standby) does not stall the primary
// path; once the monitor notices (lagInterval 50 ms: within the 2 s sample timeout), reads go
// to the primary, /health/ready answers within its ping timeout with 200 warn naming replica-0,
// pg_pool_replica_usable says 0; thawed, the replica serves again. (The window before the
// monitor notices is replica-down-fails-reads.test.ts.)

let notes: NotesCluster
let app: FastifyInstance

beforeAll(async () => {
  notes = await startNotesCluster('probe_frozen_holds')
  app = Fastify()
  await app.register(pgPoolCore, {
    connection: notes.database.primaryUrl,
    replicas: [notes.database.standbyUrls[0] as string],
    replica: { lagInterval: 50 },
    pool: { max: 2, statementTimeout: 1_000 },
  })
  await app.register(pgPoolHealth)
  await app.register(pgPoolMetrics)
  app.get('/where', { config: { db: { readOnly: true } } }, async (request) => {
    const [row] = await request.db`select pg_is_in_recovery() as standby`
    return row
  })
  app.post('/write', async (request) => (await request.db`insert into notes (body) values ('w') returning id`)[0])
  await app.ready()
  await waitUntil(() => app.pgPools.all()[1]?.replica()?.usable === true, 'the replica to be usable', 10_000)
}, 120_000)

afterAll(async () => {
  await app?.close()
  await notes?.destroy()
})

describe('a frozen replica', () => {
  test('primary path unaffected, reads fall back, health and metrics agree, recovery after thaw', async () => {
    const replica = app.pgPools.all()[1]
    const thaw = freeze(notes.cluster, notes.cluster.standby)
    try {
      // Writes do not wait for the replica.
      for (let i = 0; i < 5; i++) {
        const started = Date.now()
        expect((await app.inject({ method: 'POST', url: '/write' })).statusCode).toBe(200)
        expect(Date.now() - started).toBeLessThan(1_000)
      }
      await waitUntil(() => replica?.replica()?.usable === false, 'the monitor to notice', 10_000)
      expect((await app.inject('/where')).json()).toEqual({ standby: false })
      const started = Date.now()
      const ready = await app.inject('/health/ready')
      expect(Date.now() - started).toBeLessThan(3_000)
      expect(ready.statusCode).toBe(200)
      expect(ready.json().status).toBe('warn')
      expect(JSON.stringify(ready.json())).toContain('replica-0')
      const metrics = (await app.inject('/metrics')).body
      expect(metrics).toMatch(/pg_pool_replica_usable\{[^}]*pool="replica-0"[^}]*\} 0/)
    } finally {
      thaw()
    }
    await waitUntil(() => replica?.replica()?.usable === true, 'the replica to be usable again', 15_000)
    expect((await app.inject('/where')).json()).toEqual({ standby: true })
  }, 60_000)
})
