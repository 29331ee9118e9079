import { existsSync } from 'node:fs'
import { basename } from 'node:path'
import postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { processesMatching } from '../support/freeze-node.js'
import { type ReplicationCluster, type ReplicationNode, startReplication } from '../support/replication.js'

const clients: postgres.Sql[] = []
function connect(url: string): postgres.Sql {
  const sql = postgres(url, { max: 2, onnotice: () => {} })
  clients.push(sql)
  return sql
}

async function endClients(): Promise<void> {
  await Promise.all(clients.splice(0).map((sql) => sql.end({ timeout: 1 })))
}

async function isInRecovery(sql: postgres.Sql): Promise<boolean> {
  const [row] = await sql<{ recovery: boolean }[]>`select pg_is_in_recovery() as recovery`
  return row?.recovery === true
}

/** a - b in bytes, as the server computes it. */
async function lsnDiff(sql: postgres.Sql, a: string, b: string): Promise<number> {
  const [row] = await sql<{ diff: number }[]>`select pg_wal_lsn_diff(${a}::pg_lsn, ${b}::pg_lsn)::float8 as diff`
  return row?.diff ?? Number.NaN
}

describe('replication harness: a primary and one streaming standby', () => {
  let cluster: ReplicationCluster
  let standby: ReplicationNode
  let primarySql: postgres.Sql
  let standbySql: postgres.Sql

  beforeAll(async () => {
    const started = Date.now()
    cluster = await startReplication()
    console.log(`[replicas:harness] primary + 1 standby streaming in ${Date.now() - started} ms`)
    standby = cluster.standby
    expect(cluster.standbys.length === 1 && cluster.standbys[0] === standby).toBe(true)
    const db = await cluster.createDatabase('app')
    primarySql = connect(db.primaryUrl)
    standbySql = connect(db.standbyUrls[0] as string)
    await primarySql`create table items (id int primary key, label text not null)`
  })
  afterAll(async () => {
    await endClients()
    await cluster?.destroy()
  })

  test('the nodes have their own ports, data directories and roles', () => {
    expect(cluster.primary.role).toBe('primary')
    expect(standby.role).toBe('standby')
    expect(standby.port).not.toBe(cluster.primary.port)
    expect(standby.dataDir).not.toBe(cluster.primary.dataDir)
    expect(existsSync(`${standby.dataDir}/standby.signal`)).toBe(true)
    expect(existsSync(`${cluster.primary.dataDir}/standby.signal`)).toBe(false)
  })

  test('a row inserted on the primary is readable on the standby after waitForReplay', async () => {
    await primarySql`insert into items values (1, 'first')`
    await cluster.waitForReplay(standby)
    expect(await standbySql`select label from items where id = 1`).toEqual([{ label: 'first' }])
  })

  test('the standby is in recovery and refuses writes with SQLSTATE 25006', async () => {
    expect(await isInRecovery(standbySql)).toBe(true)
    expect(await isInRecovery(primarySql)).toBe(false)
    await expect(standbySql`insert into items values (2, 'nope')`).rejects.toMatchObject({ code: '25006' })
    // The primary sees it as a streaming standby, by the name the harness gives it.
    const admin = connect(cluster.primary.url)
    const replication = await admin<{ application_name: string; state: string }[]>`
      select application_name, state from pg_stat_replication`
    expect(replication).toEqual([{ application_name: 'standby-0', state: 'streaming' }])
  })

  test('with replay paused the replayed LSN stays put while the primary writes, and catches up on resume', async () => {
    await cluster.waitForReplay(standby)
    await cluster.pauseReplay(standby)
    const heldAt = await cluster.replayLsn(standby)
    let lsn = ''
    for (let id = 10; id < 15; id++) {
      await primarySql`insert into items values (${id}, 'while paused')`
      lsn = await cluster.currentLsn()
      // Received: the standby has the WAL, so only the pause keeps it from the row.
      await cluster.waitForReceive(standby, lsn)
      expect(await cluster.replayLsn(standby)).toBe(heldAt)
    }
    expect(await lsnDiff(primarySql, lsn, heldAt)).toBeGreaterThan(0)
    expect(await cluster.lagBytes(standby)).toBeGreaterThan(0)
    expect(await standbySql`select id from items where id >= 10`).toEqual([])

    await cluster.resumeReplay(standby)
    await cluster.waitForReplay(standby, lsn)
    expect(await lsnDiff(primarySql, await cluster.replayLsn(standby), lsn)).toBeGreaterThanOrEqual(0)
    expect((await standbySql`select id from items where id >= 10 order by id`).map((r) => r.id)).toEqual([
      10, 11, 12, 13, 14,
    ])
  })

  test('a standby killed (immediate shutdown) and started again catches up', async () => {
    await standby.kill()
    expect(standby.running).toBe(false)
    await primarySql`insert into items values (20, 'while the standby was down')`
    await standby.start()
    await cluster.waitForReplay(standby)
    expect(await standbySql`select label from items where id = 20`).toEqual([{ label: 'while the standby was down' }])
  })

  test('after the primary restarts, the standby reconnects and streams again', async () => {
    await cluster.primary.stop()
    await cluster.primary.start()
    await primarySql`insert into items values (21, 'after the restart')`
    await cluster.waitForReplay(standby)
    expect(await standbySql`select label from items where id = 21`).toEqual([{ label: 'after the restart' }])
  })

  test('promote makes the standby accept writes', async () => {
    await cluster.waitForReplay(standby)
    const started = Date.now()
    await cluster.promote(standby)
    console.log(`[replicas:harness] promote → writable in ${Date.now() - started} ms`)
    expect(standby.role).toBe('primary')
    expect(await isInRecovery(standbySql)).toBe(false)
    await standbySql`insert into items values (30, 'on the new primary')`
    expect(await standbySql`select label from items where id = 30`).toEqual([{ label: 'on the new primary' }])
    // Everything the old primary had committed before the promotion is there.
    expect((await standbySql`select count(*)::int as n from items`)[0]?.n).toBe(9)
  })

  test('destroy leaves no process and no directory', async () => {
    await endClients()
    const { rootDir } = cluster
    const dataDirs = [cluster.primary.dataDir, standby.dataDir]
    for (const dir of dataDirs) expect(processesMatching(dir).length, dir).toBeGreaterThan(0)
    await cluster.destroy()
    for (const dir of dataDirs) expect(processesMatching(dir), dir).toEqual([])
    // Every child process of every node carries the cluster's tag in its title.
    expect(processesMatching(basename(rootDir))).toEqual([])
    expect(existsSync(rootDir)).toBe(false)
    expect(cluster.primary.running).toBe(false)
  })
})

describe('replication harness: two standbys', () => {
  let cluster: ReplicationCluster

  beforeAll(async () => {
    cluster = await startReplication({ standbys: 2 })
  })
  afterAll(() => cluster?.destroy())

  test('both stream from the primary, each on its own port, and replay its writes', async () => {
    expect(new Set([cluster.primary.port, ...cluster.standbys.map((s) => s.port)]).size).toBe(3)
    const primary = connect(cluster.primary.url)
    await primary`create table marks (id int)`
    await primary`insert into marks values (1)`
    for (const standby of cluster.standbys) {
      await cluster.waitForReplay(standby)
      const sql = connect(standby.url)
      expect(await sql`select id from marks`).toEqual([{ id: 1 }])
      expect(await cluster.lagBytes(standby)).toBeGreaterThanOrEqual(0)
    }
    const names = await primary<{ application_name: string }[]>`
      select application_name from pg_stat_replication order by application_name`
    expect(names.map((r) => r.application_name)).toEqual(['standby-0', 'standby-1'])
    await endClients()
  })
})
