import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

// Runs in the PgBouncer leg: statements of pipelined routes queued on one client connection,
// each its own autocommit transaction, through a transaction-mode pooler.
let db: TestDatabase
let current: TestApp
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table pipelined (id int primary key, name text not null)`
  await db.sql`insert into pipelined select g, 'row ' || g from generate_series(1, 100) g`
  current = await coreApp(db.url, { max: 2, pipelineDepth: 8, maxWaiting: 200 })
  const pipeline = { config: { db: { pipeline: true } } }
  current.app.get<{ Params: { id: string } }>('/rows/:id', pipeline, async (request) => {
    const [row] = await request.db`select id, name from pipelined where id = ${Number(request.params.id)}`
    return row
  })
  current.app.post<{ Params: { id: string } }>('/rows/:id/touch', pipeline, async (request) => {
    const [row] = await request.db`
      update pipelined set name = name || '!' where id = ${Number(request.params.id)} returning name`
    return row
  })
})
afterAll(async () => {
  await current?.app.close()
  await db?.drop()
})

describe('pipelined routes through PgBouncer in transaction mode', () => {
  test('100 concurrent reads and writes on 2 client connections: every answer is its own', async () => {
    expect(db.viaBouncer).toBe(true)
    let mostPipelined = 0
    current.app.pgPool.on('acquire', () => {
      mostPipelined = Math.max(mostPipelined, current.app.pgPool.stats().pipelined)
    })
    const reads = Array.from({ length: 80 }, (_, i) => current.app.inject(`/rows/${i + 1}`))
    const writes = Array.from({ length: 20 }, (_, i) =>
      current.app.inject({ method: 'POST', url: `/rows/${i + 81}/touch` }),
    )
    const [readReplies, writeReplies] = await Promise.all([Promise.all(reads), Promise.all(writes)])
    expect(readReplies.map((r) => r.statusCode)).toEqual(Array(80).fill(200))
    expect(readReplies.map((r) => r.json())).toEqual(
      Array.from({ length: 80 }, (_, i) => ({ id: i + 1, name: `row ${i + 1}` })),
    )
    expect(writeReplies.map((r) => r.json())).toEqual(
      Array.from({ length: 20 }, (_, i) => ({ name: `row ${i + 81}!` })),
    )
    expect(mostPipelined).toBeGreaterThan(2)
    // Committed: seen from another connection.
    const [counted] = await db.sql<{ n: number }[]>`select count(*)::int as n from pipelined where name like '%!'`
    expect(counted?.n).toBe(20)
    expect(current.app.pgPool.stats()).toMatchObject({ leased: 0, pipelined: 0, waiting: 0 })
  })
})
