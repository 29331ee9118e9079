import { createServer } from 'node:net'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { waitFor } from '../support/database.js'
import { type ReplicatedDatabase, type ReplicationCluster, startReplication } from '../support/replication.js'

// Found by hostile probing (failed before the fix): with the primary given as a host list, the lag monitor only ever samples the
// FIRST host of the list. When that host is a standby (the state after a failover once the old
// primary rejoined as a standby, or a list written `standby,primary`) or is down (the state
// right after a failover: the old primary is dead), every sample fails and no replica ever gets
// a read again, for as long as that host stays so.
//
// Promised (docs/replicas.md, "Primary failover"): "Give the primary as a host list ...
// postgres.js's own handling of target_session_attrs is not relied on; the pool does it:
// Every new connection tries the hosts in turn and keeps the first that is not in recovery".
// and "Lag": "A monitor samples, every lagInterval ms, the primary's pg_current_wal_lsn()".
// Writes do follow the host list (the lease pool skips standbys: connection-factory.ts:97-216).
//
// What happened before the fix: resolveConnection keeps only the first host in `connection.url`
// (packages/core/src/options.ts:199 `single = given.replace(hostList, first host)`; the list is
// in `connection.hosts`, which the lease pool and the LISTEN connection use). The monitor's
// primary connection (ServerLsnSource, plugin.ts:210-215 -> lsn-source.ts:30) is opened from
// `connection.url` alone: on a standby pg_current_wal_lsn() fails ("recovery is in progress"),
// on a dead host the connection is refused. Every sample then marks every replica 'primary
// unreachable' (replica-monitor.ts:93-104): all reads go to the primary ('no_replica') and
// /health/ready warns, while writes work fine.

let cluster: ReplicationCluster
let database: ReplicatedDatabase
let app: FastifyInstance

beforeAll(async () => {
  cluster = await startReplication({ standbys: 2 })
  database = await cluster.createDatabase('probe_hostlist')
  const standby0 = new URL(database.standbyUrls[0] as string)
  const primary = new URL(database.primaryUrl)
  // The host list: standby-0 first, then the primary (as after a failover once the old primary rejoined).
  const hostList = `postgres://${primary.username}:${primary.password}@127.0.0.1:${standby0.port},127.0.0.1:${primary.port}${primary.pathname}`
  app = Fastify()
  await app.register(pgPoolCore, {
    connection: hostList,
    replicas: [database.standbyUrls[1] as string],
    replica: { lagInterval: 50, maxLag: { seconds: 600 } },
    pool: { max: 2 },
  })
  app.get('/where', { config: { db: { readOnly: true } } }, async (request) => {
    const [row] = await request.db`select current_setting('port')::int as port`
    return row
  })
  app.post('/write', async (request) => {
    const [row] = await request.db`select current_setting('port')::int as port, pg_current_xact_id()::text as xid`
    return row
  })
  await app.ready()
}, 120_000)

afterAll(async () => {
  await app?.close()
  await cluster?.destroy()
})

describe('primary host list with a standby first', () => {
  test('writes find the primary, and the replica gets reads', async () => {
    // Control: the pool's own connections skip the standby.
    expect((await app.inject({ method: 'POST', url: '/write' })).json().port).toBe(cluster.primary.port)
    const replica = app.pgPools.all()[1]
    const usable = await waitFor(() => replica?.replica()?.usable === true, 10_000, 20)
    const lag = replica?.replica()?.lag
    expect({ usable, error: lag?.error }).toEqual({ usable: true, error: undefined })
    expect((await app.inject('/where')).json().port).toBe((cluster.standbys[1] as { port: number }).port)
  }, 30_000)
})

describe('primary host list whose first host is down (the old primary, after a failover)', () => {
  test('writes find the primary, and the replica gets reads', async () => {
    // A port nothing listens on.
    const probe = createServer()
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve))
    const deadPort = (probe.address() as { port: number }).port
    await new Promise<void>((resolve) => probe.close(() => resolve()))
    const primary = new URL(database.primaryUrl)
    const other = Fastify()
    await other.register(pgPoolCore, {
      connection: `postgres://${primary.username}:${primary.password}@127.0.0.1:${deadPort},127.0.0.1:${primary.port}${primary.pathname}`,
      replicas: [database.standbyUrls[1] as string],
      replica: { lagInterval: 50, maxLag: { seconds: 600 } },
      pool: { max: 2 },
    })
    other.post('/write', async (request) => {
      const [row] = await request.db`select current_setting('port')::int as port, pg_current_xact_id()::text as xid`
      return row
    })
    try {
      await other.ready()
      expect((await other.inject({ method: 'POST', url: '/write' })).json().port).toBe(cluster.primary.port)
      const replica = other.pgPools.all()[1]
      const usable = await waitFor(() => replica?.replica()?.usable === true, 10_000, 20)
      expect({ usable, error: replica?.replica()?.lag?.error }).toEqual({ usable: true, error: undefined })
    } finally {
      await other.close()
    }
  }, 30_000)
})
