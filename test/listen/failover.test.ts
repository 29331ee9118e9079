import postgres from 'postgres'
import { afterEach, describe, expect, test } from 'vitest'
import { failOnProcessErrors } from '../faults/process-errors.js'
import { coreApp, type TestApp } from '../support/app.js'
import { waitUntil } from '../support/database.js'
import { type ReplicatedDatabase, type ReplicationCluster, startReplication } from '../support/replication.js'

// A multi-host primary (issue 20's failover) with a listener (issue 19): after the primary stops
// and the standby is promoted, the channels are listened to on the new primary.

let cluster: ReplicationCluster | undefined
let current: TestApp | undefined
failOnProcessErrors()

afterEach(async () => {
  await current?.app.close()
  current = undefined
  await cluster?.destroy()
  cluster = undefined
})

async function notify(url: string, payload: string): Promise<void> {
  const sql = postgres(url, { max: 1, onnotice: () => {} })
  try {
    await sql`select pg_notify('failover', ${payload})`
  } finally {
    await sql.end({ timeout: 1 })
  }
}

/** Listens through `connection`, fails the primary over to the standby, notifies on the new one. */
async function listenThroughFailover(
  connection: (database: ReplicatedDatabase) => string | postgres.Options<{}>,
): Promise<void> {
  const started = await startReplication()
  cluster = started
  const database = await started.createDatabase('listen_failover')
  current = await coreApp(connection(database) as string, { pgbouncer: false, connectTimeout: 1_000 })
  const { app } = current
  const received: string[] = []
  await app.db.listen('failover', (n) => void received.push(n.payload))
  await notify(database.primaryUrl, 'before')
  await waitUntil(() => received.length === 1, 'the first notification')

  await started.primary.stop()
  await waitUntil(() => !app.pgPool.listener().connected, 'the listener down')
  await started.promote(started.standby)
  await waitUntil(() => app.pgPool.listener().connected, 'the listener on the new primary', 30_000)
  await notify(database.standbyUrls[0] as string, 'after')
  await waitUntil(() => received.length === 2, 'a notification from the new primary')
  expect(received).toEqual(['before', 'after'])
  expect(app.pgPool.listener().reconnections).toBe(1)
}

describe('LISTEN across a primary failover', () => {
  test('a host list in the URL: the listener skips the standby and listens on the new primary', async () => {
    await listenThroughFailover((database) => {
      const primary = new URL(database.primaryUrl)
      const standby = new URL(database.standbyUrls[0] as string)
      return database.primaryUrl.replace(primary.host, `${primary.host},${standby.host}`)
    })
  }, 120_000)

  test("target_session_attrs: 'read-write' (which lets postgres.js stay on a standby): the refused LISTEN is retried on a new connection", async () => {
    await listenThroughFailover((database) => {
      const primary = new URL(database.primaryUrl)
      const standby = new URL(database.standbyUrls[0] as string)
      return {
        host: [primary.hostname, standby.hostname],
        port: [Number(primary.port), Number(standby.port)],
        database: primary.pathname.slice(1),
        username: decodeURIComponent(primary.username),
        password: decodeURIComponent(primary.password),
        target_session_attrs: 'read-write',
      } as unknown as postgres.Options<{}>
    })
  }, 120_000)
})
