// DEFECT (probe-replicas, high). What the user does: runs an app with `replicas` while one replica
// is down (maintenance, a crashed standby being rebuilt) and the app (re)starts: a deploy, a pod
// rescheduled, autoscaling. What they should get: the app starts and serves, as it would have had
// the replica gone down a second after startup (docs/replicas.md: "A read is never failed because
// a replica is down", "readiness never fails for a replica while the primary serves"): its reads
// go to the primary, /health/ready warns, and the replica takes reads again once it is back.
// What they got: `register` fails with FST_PG_POOL_CONNECT_FAILED ("Could not connect to the
// database", cause ECONNREFUSED to the replica's port): the replica pool's startup check
// (pool.warmUp, as the primary's) is fatal, so one standby down keeps every instance of the
// service from starting (a crash loop) while the primary is fine. Fix: a replica that cannot be
// connected to at register is logged and left to the monitor (unreachable until it answers); its
// connection budget is read once it connects, as with pool.lazy.

import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolHealth from '@fastify-pg-pool/health'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterEach, describe, expect, test } from 'vitest'
import { waitUntil } from '../../../support/database.js'
import { useNotesCluster } from '../../../support/notes-cluster.js'

const notes = useNotesCluster('probe_replica_down_at_register')
let app: FastifyInstance | undefined

afterEach(async () => {
  await app?.close()
  app = undefined
})

describe('a replica down while the app registers', () => {
  test('the app starts, reads go to the primary, and to the replica once it is back', async () => {
    await notes.cluster.standby.stop()
    const instance = Fastify()
    app = instance
    const fallbacks: string[] = []
    // Before the fix: rejects with FST_PG_POOL_CONNECT_FAILED (ECONNREFUSED to the replica).
    const outcome = await instance
      .register(pgPoolCore, {
        connection: notes.database.primaryUrl,
        replicas: [notes.database.standbyUrls[0] as string],
        replica: { lagInterval: 50, maxLag: { seconds: 600 } },
        pool: { max: 2, connectTimeout: 2_000 },
      })
      .then(
        () => 'registered',
        (error: unknown) => `${(error as { code?: string }).code}: ${(error as { cause?: Error }).cause?.message}`,
      )
    expect(outcome).toBe('registered')
    await instance.register(pgPoolHealth, { cacheTime: 0 })
    instance.get('/where', { config: { db: { readOnly: true } } }, async (request) => {
      const [row] = await request.db`select pg_is_in_recovery() as standby`
      return row
    })
    await instance.ready()
    instance.pgPool.on('readFallback', (reason) => fallbacks.push(reason))

    const replica = instance.pgPools.all()[1]
    expect(replica?.replica()?.usable).toBe(false)
    expect((await instance.inject('/where')).json()).toEqual({ standby: false })
    expect(fallbacks.length).toBe(1)
    const ready = await instance.inject('/health/ready')
    expect(ready.statusCode).toBe(200)
    expect(ready.json().status).toBe('warn')

    await notes.cluster.standby.start()
    await waitUntil(() => replica?.replica()?.usable === true, 'the replica to be usable again', 20_000)
    expect((await instance.inject('/where')).json()).toEqual({ standby: true })
    expect(fallbacks.length).toBe(1)
  })
})
