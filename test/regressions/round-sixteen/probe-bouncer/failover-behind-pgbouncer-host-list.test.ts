// Round sixteen (probe-bouncer): the primary given as a host list of PgBouncers (one in front of
// each node, the Patroni layout), `pool.pgbouncer: true`. The README promises, for a host list,
// that "a write on a demoted primary answers 503 FST_PG_POOL_NOT_PRIMARY and the next connection
// goes to the promoted host". Behind PgBouncer the write answered 500 `25006` instead, and did so
// for every later write, for good: the pool took the `in_hot_standby` the connection was told at
// login for the server's word that it is no standby, but behind PgBouncer that is PgBouncer's
// copy of the first server connection's report (off), never updated, whichever server the
// statement ran on. So the connection was kept, and never went to the promoted host. Behind
// PgBouncer the pool now does not read that report: on a host-list primary, a 25006 outside a
// transaction the suite itself opened read-only answers 503 NOT_PRIMARY and retires the connection.
import { readFile, writeFile } from 'node:fs/promises'
import postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../../../support/app.js'
import { waitUntil } from '../../../support/database.js'
import { type PgBouncer, startPgBouncer } from '../../../support/pgbouncer.js'
import { type ReplicationCluster, startReplication } from '../../../support/replication.js'

let cluster: ReplicationCluster
const bouncers: PgBouncer[] = []
let current: TestApp | undefined

beforeAll(async () => {
  // standbys[1] keeps following the old primary once standbys[0] is promoted: the demoted host.
  cluster = await startReplication({ standbys: 2 })
  const sql = postgres(cluster.primary.url, { max: 1, onnotice: () => {} })
  await sql`create table note (body text not null)`
  await sql.end()
  for (const standby of cluster.standbys) await cluster.waitForReplay(standby)
}, 180_000)
afterAll(async () => {
  await current?.app.close()
  for (const bouncer of bouncers) await bouncer.stop()
  await cluster?.destroy()
})

/** Points a PgBouncer's databases at another port of the cluster, then RELOAD. */
async function repoint(bouncer: PgBouncer, from: number, to: number): Promise<void> {
  const [row] = (await bouncer.admin('SHOW CONFIG')).filter((setting) => setting.key === 'conffile')
  const file = String(row?.value)
  await writeFile(file, (await readFile(file, 'utf8')).replace(`port=${from}`, `port=${to}`))
  await bouncer.admin('RELOAD')
  // PgBouncer closes its server connections to the old node as they come free: none is left.
  await waitUntil(
    async () => (await bouncer.admin('SHOW SERVERS')).every((server) => Number(server.port) !== from),
    'PgBouncer to leave the old node',
    10_000,
  )
}

describe('a host list of PgBouncers, one node demoted', () => {
  test('a write on the demoted node answers 503 NOT_PRIMARY; the next goes to the promoted host', async () => {
    const [promoted, demoted] = cluster.standbys as [(typeof cluster.standbys)[0], (typeof cluster.standbys)[0]]
    const a = await startPgBouncer({ upstream: cluster.primary.url, defaultPoolSize: 2 })
    bouncers.push(a)
    const b = await startPgBouncer({ upstream: promoted.url, defaultPoolSize: 2 })
    bouncers.push(b)
    const via = new URL(a.via(cluster.primary.url))
    const hostList = `postgres://${via.username}:${via.password}@127.0.0.1:${a.port},127.0.0.1:${b.port}${via.pathname}`
    current = await coreApp(hostList, { max: 1, pgbouncer: true })
    current.app.post('/write', async (request) => {
      const [row] = await request.db<{ port: number }[]>`
        insert into note values ('x') returning current_setting('port')::int as port`
      return row
    })
    await current.app.ready()
    const first = await current.app.inject({ method: 'POST', url: '/write' })
    expect(first.json()).toEqual({ port: cluster.primary.port })

    // The failover: the standby behind b is promoted; a's node is now a standby (of the old one).
    await cluster.promote(promoted)
    await repoint(a, cluster.primary.port, demoted.port)

    const refused = await current.app.inject({ method: 'POST', url: '/write' })
    expect(refused.statusCode, refused.body).toBe(503)
    expect(refused.json().code).toBe('FST_PG_POOL_NOT_PRIMARY')
    expect(refused.headers['retry-after']).toBe('1')
    const next = await current.app.inject({ method: 'POST', url: '/write' })
    expect(next.statusCode, next.body).toBe(200)
    expect(next.json()).toEqual({ port: promoted.port })
  })
})
