// What the user does: lists a replica by a name that later reaches another server (a DNS name or
// Kubernetes Service re-pointed, a standby host re-seeded from another cluster's primary): the
// server behind the replica's address is replaced, and the monitor's idle connection to it is
// closed between two samples. Here a proxy stands for that address: it reached a standby of this
// cluster, then reaches a standby of another cluster, its open connections cut.
// What they should get: what round fifteen's system-identifier check gives a replica of another
// cluster from the start: out of routing ('another cluster'), reads on the primary.
// What they got: the monitor reads the system identifier once per monitor connection object, but
// postgres.js reopens the dropped connection by itself on the next sample (to the new server)
// without a failed query, so the old server's identifier is kept: the other cluster's standby is
// sampled as usable and read-only routes answer the other database's rows.
import { createServer, Socket as NetSocket, type Server, type Socket } from 'node:net'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { waitUntil } from '../../../support/database.js'
import { type NotesCluster, startNotesCluster } from '../../../support/replication.js'

let ours: NotesCluster
let theirs: NotesCluster

beforeAll(async () => {
  ours = await startNotesCluster('probe_reconnect_notes')
  theirs = await startNotesCluster('probe_reconnect_notes')
}, 120_000)

afterAll(async () => {
  await Promise.all([ours?.destroy(), theirs?.destroy()])
})

/** A proxy on 127.0.0.1 whose upstream port can change; cutAll closes every open pair. */
async function switchableProxy(
  port: number,
): Promise<{ server: Server; url: (u: string) => string; retarget: (port: number) => void }> {
  let target = port
  const open = new Set<Socket>()
  const server = createServer((client) => {
    const upstream = new NetSocket()
    upstream.connect(target, '127.0.0.1')
    for (const socket of [client, upstream]) {
      open.add(socket)
      socket.on('error', () => {})
      socket.on('close', () => {
        open.delete(socket)
        client.destroy()
        upstream.destroy()
      })
    }
    client.pipe(upstream)
    upstream.pipe(client)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address() as { port: number }
  return {
    server,
    url: (u) => {
      const parsed = new URL(u)
      parsed.hostname = '127.0.0.1'
      parsed.port = String(address.port)
      return parsed.toString()
    },
    retarget: (next) => {
      target = next
      for (const socket of [...open]) socket.destroy()
    },
  }
}

test('a replica address that comes to reach another cluster’s standby is taken out of routing', async () => {
  await ours.primarySql`insert into notes (body) values ('ours')`
  await ours.cluster.waitForReplay(ours.cluster.standby)
  await theirs.primarySql`insert into notes (body) values ('theirs: another database')`
  await theirs.cluster.waitForReplay(theirs.cluster.standby)
  const oursUrl = ours.database.standbyUrls[0] as string
  const theirsUrl = theirs.database.standbyUrls[0] as string
  // The same login on both (a re-pointed name keeps the app's credentials).
  const login = new URL(oursUrl)
  await theirs.primarySql.unsafe(
    `alter role "${decodeURIComponent(login.username)}" password '${decodeURIComponent(login.password)}'`,
  )
  await theirs.cluster.waitForReplay(theirs.cluster.standby)
  const proxy = await switchableProxy(Number(new URL(oursUrl).port))
  const app = Fastify()
  await app.register(pgPoolCore, {
    connection: ours.database.primaryUrl,
    replicas: [proxy.url(oursUrl)],
    replica: { lagInterval: 100, maxLag: { seconds: 600 } },
    pool: { max: 2 },
  })
  app.get('/notes', { config: { db: { readOnly: true } } }, async (request) => {
    const rows = await request.db`select body from notes order by id`
    return rows.map((row) => row.body)
  })
  try {
    await app.ready()
    const replica = app.pgPools.all()[1]
    await waitUntil(() => replica?.replica()?.usable === true, 'our standby to be usable', 15_000)
    expect((await app.inject('/notes')).json()).toEqual(['ours'])

    // Their standby's position below ours (by position alone it looks a little behind), its last
    // replayed commit recent.
    for (let i = 0; i < 3; i++) await ours.primarySql`select pg_switch_wal()`
    await ours.primarySql`insert into notes (body) values ('ours again')`
    await theirs.primarySql`insert into notes (body) values ('theirs again')`
    await theirs.cluster.waitForReplay(theirs.cluster.standby)
    await ours.cluster.waitForReplay(ours.cluster.standby)
    proxy.retarget(Number(new URL(theirsUrl).port))
    const cut = replica?.replica()?.lag?.at ?? 0
    await waitUntil(() => (replica?.replica()?.lag?.at ?? 0) > cut + 1_000, 'samples of the new server', 15_000)
    // Before the fix: the other database's rows, and usable.
    expect((await app.inject('/notes')).json()).toEqual(['ours', 'ours again'])
    expect(replica?.replica()?.lag?.error).toMatch(/another cluster/)
  } finally {
    await app.close()
    await new Promise((resolve) => proxy.server.close(resolve))
  }
}, 180_000)
