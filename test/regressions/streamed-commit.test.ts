import { Readable } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import type { FastifyReply } from 'fastify'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, waitUntil } from '../support/database.js'
import { listen } from '../support/http.js'

// Issue 17 item 4: a transaction route whose reply was a stream committed after the stream had
// ended; a COMMIT that failed (a deferred foreign key) came after a 200 and the whole body
// (fd52652). The rule now: COMMIT before the first byte of any payload; a 2xx leaves only for
// committed work, whatever the payload: stream, buffer, string, JSON, or a hijacked reply.

let db: TestDatabase
let current: TestApp | undefined
let base: string
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe(`
    create table parents (id int primary key);
    create table children (id int primary key,
      parent_id int references parents (id) deferrable initially deferred);
    insert into parents values (1);
  `)
})
beforeEach(async () => {
  await db.sql`delete from children`
  current = await coreApp(db.url, { max: 2 })
  const { app } = current
  const tx = { config: { db: { transaction: true } } }
  // `ok`: the child's parent exists; otherwise the deferred foreign key fails at COMMIT.
  const insert = async (request: { db: TestApp['app']['db']; query: unknown }) => {
    const ok = (request.query as { ok?: string }).ok === '1'
    await request.db`insert into children values (${ok ? 1 : 2}, ${ok ? 1 : 999})`
  }
  const payloads: Record<string, (reply: FastifyReply) => unknown> = {
    stream: () => Readable.from(['streamed ', 'body']),
    buffer: () => Buffer.from('a buffer'),
    string: (reply) => reply.type('text/plain').send('a string'),
    json: () => ({ json: true }),
  }
  for (const [kind, payload] of Object.entries(payloads)) {
    app.post(`/${kind}`, tx, async (request, reply) => {
      await insert(request as never)
      return payload(reply)
    })
  }
  app.post('/hijack', tx, async (request, reply) => {
    await insert(request as never)
    reply.hijack()
    reply.raw.writeHead(200, { 'content-type': 'text/plain' })
    reply.raw.end('hijacked body')
  })
  app.post('/stream-that-queries', tx, async (request) => {
    await insert(request as never)
    const db = request.db
    return Readable.from(
      (async function* () {
        yield 'first chunk;'
        await sleep(10)
        try {
          await db`select 1`
          yield 'queried after the commit'
        } catch (error) {
          yield `late query refused: ${(error as { code?: string }).code}`
        }
      })(),
    )
  })
  base = await listen(app)
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(() => db.drop())

const children = async () => (await db.sql`select id from children`).length

describe('a 2xx leaves only for committed work', () => {
  for (const kind of ['stream', 'buffer', 'string', 'json', 'hijack']) {
    test(`${kind}: COMMIT fails -> 500 FST_PG_POOL_COMMIT_FAILED, nothing committed`, async () => {
      const response = await fetch(`${base}/${kind}`, { method: 'POST' })
      const body = await response.text()
      expect(response.status).toBe(500)
      expect(body).toContain('FST_PG_POOL_COMMIT_FAILED')
      expect(await children()).toBe(0)
      await waitUntil(() => current?.app.pgPool.stats().leased === 0, 'the lease to come back')
    })

    test(`${kind}: COMMIT succeeds -> 200 with the body, the row committed`, async () => {
      const response = await fetch(`${base}/${kind}?ok=1`, { method: 'POST' })
      expect(response.status).toBe(200)
      expect((await response.text()).length).toBeGreaterThan(0)
      expect(await children()).toBe(1)
    })
  }

  test('a stream that queries after the commit gets FST_PG_POOL_RELEASED', async () => {
    const response = await fetch(`${base}/stream-that-queries?ok=1`, { method: 'POST' })
    expect(response.status).toBe(200)
    expect(await response.text()).toBe('first chunk;late query refused: FST_PG_POOL_RELEASED')
    expect(await children()).toBe(1)
  })
})
