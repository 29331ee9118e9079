import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type { FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../../../support/app.js'
import { createTestDatabase, type TestDatabase, waitUntil } from '../../../support/database.js'
import { startTcpProxy, type TcpProxy } from '../../../support/tcp-proxy.js'

// Attack on b830a8f (a statement sent outside a transaction whose answer is lost says it "may have
// run and committed"): the paths the fix names, one by one, where the write commits and only its
// answer is lost with its connection (the proxy swallows the server's answer and cuts). Each
// passed on 6a5832a; they guard the wording where it is right and its absence where it is wrong.

let db: TestDatabase
let proxy: TcpProxy
let current: TestApp | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table lost_paths (id int primary key)`
  proxy = await startTcpProxy(Number(new URL(db.url).port))
})
beforeEach(async () => {
  await db.sql`delete from lost_paths`
  proxy.onClientData = undefined
  proxy.onServerData = undefined
})
afterEach(async () => {
  proxy.onClientData = undefined
  proxy.onServerData = undefined
  await current?.app.close()
  current = undefined
})
afterAll(async () => {
  await proxy.close()
  await db.drop()
})

const rows = async () => (await db.sql<{ id: number }[]>`select id from lost_paths order by id`).map((r) => r.id)

const mayHaveCommitted = (error: { code?: string; message?: string }): boolean =>
  error.code === 'FST_PG_POOL_CONNECTION_LOST' && /may have run and committed/.test(String(error.message))

/** Swallows the server's first chunk holding `tag` and cuts every connection. */
function loseAnswerWith(tag: string): void {
  proxy.onServerData = (chunk) => {
    if (!chunk.includes(tag)) return true
    proxy.onServerData = () => false
    setImmediate(() => proxy.cutAll())
    return false
  }
}

/** The pool's own COMMIT: a simple Query message holding `COMMIT` alone. */
const COMMIT_MESSAGE = Buffer.concat([Buffer.from([0x51, 0, 0, 0, 11]), Buffer.from('COMMIT\0')])

/** From the first client message holding `text` on, the server's answers are swallowed, then cut. */
function loseAnswersFrom(text: string | Buffer): void {
  let armed = false
  proxy.onClientData = (chunk) => {
    if (chunk.includes(text)) armed = true
  }
  proxy.onServerData = () => {
    if (!armed) return true
    proxy.onServerData = () => false
    setImmediate(() => proxy.cutAll())
    return false
  }
}

async function app(routes: (app: FastifyInstance) => void): Promise<FastifyInstance> {
  current = await coreApp(proxy.urlFor(db.url), { max: 2 })
  routes(current.app)
  await current.app.ready()
  return current.app
}

async function settle(a: FastifyInstance): Promise<void> {
  await waitUntil(() => a.pgPool.stats().leased === 0, 'the leases to come back')
}

describe('autocommit writes whose answer is lost', () => {
  test('a pipelined route: the shared connection cut after the insert committed says so', async () => {
    const a = await app((a) =>
      a.post('/p', { config: { db: { pipeline: true } } }, async (request) => {
        await request.db`insert into lost_paths values (1)`
        return { ok: true }
      }),
    )
    loseAnswerWith('INSERT 0 1')
    const response = await a.inject({ method: 'POST', url: '/p' })
    await settle(a)
    expect(await rows()).toEqual([1])
    expect(response.statusCode).toBe(503)
    expect(mayHaveCommitted(response.json()), response.body).toBe(true)
  })

  test('unsafe() with two inserts in one message: both committed, the answer lost says so', async () => {
    const a = await app((a) =>
      a.post('/u', async (request) => {
        await request.db.unsafe('insert into lost_paths values (1); insert into lost_paths values (2)')
        return { ok: true }
      }),
    )
    loseAnswerWith('INSERT 0 1')
    const response = await a.inject({ method: 'POST', url: '/u' })
    await settle(a)
    expect(await rows()).toEqual([1, 2])
    expect(mayHaveCommitted(response.json()), response.body).toBe(true)
  })

  test("the handler's own SQL BEGIN ... COMMIT, the COMMIT's answer lost: said to be in doubt", async () => {
    const a = await app((a) =>
      a.post('/sql-block', async (request) => {
        await request.db`begin`
        await request.db`insert into lost_paths values (1)`
        await request.db`commit`
        return { ok: true }
      }),
    )
    loseAnswersFrom('commit')
    const response = await a.inject({ method: 'POST', url: '/sql-block' })
    await settle(a)
    expect(await rows()).toEqual([1])
    const body = response.json()
    expect(mayHaveCommitted(body) || body.code === 'FST_PG_POOL_COMMIT_UNKNOWN', response.body).toBe(true)
  })

  test('COPY FROM STDIN: the COPY committed, its answer lost, the stream says so', async () => {
    const a = await app((a) =>
      a.post('/copy', async (request) => {
        await pipeline(Readable.from(['1\n', '2\n']), await request.db`copy lost_paths from stdin`.writable())
        return { ok: true }
      }),
    )
    loseAnswerWith('COPY 2')
    const response = await a.inject({ method: 'POST', url: '/copy' })
    await settle(a)
    expect(await rows()).toEqual([1, 2])
    expect(response.statusCode).toBe(503)
    expect(mayHaveCommitted(response.json()), response.body).toBe(true)
  })

  test('app.db.unsafe() of two inserts: the answer lost says so', async () => {
    const a = await app(() => {})
    loseAnswerWith('INSERT 0 1')
    const error = await a.db.unsafe('insert into lost_paths values (1); insert into lost_paths values (2)').then(
      () => ({}) as { code?: string; message?: string },
      (e: { code?: string; message?: string }) => e,
    )
    await settle(a)
    expect(await rows()).toEqual([1, 2])
    expect(mayHaveCommitted(error), String(error.message)).toBe(true)
  })
})

describe('begin() blocks', () => {
  test('a statement of a begin() block lost: nothing committed and not said to be', async () => {
    const a = await app((a) =>
      a.post('/b', async (request) => {
        await request.db.begin(async (tx) => {
          await tx`insert into lost_paths values (1)`
        })
        return { ok: true }
      }),
    )
    loseAnswerWith('INSERT 0 1')
    const response = await a.inject({ method: 'POST', url: '/b' })
    await settle(a)
    expect(await rows()).toEqual([])
    expect(response.json().code).toBe('FST_PG_POOL_CONNECTION_LOST')
    expect(response.json().message).not.toMatch(/may have/)
  })

  test("the block's COMMIT answer lost: FST_PG_POOL_COMMIT_UNKNOWN", async () => {
    const a = await app((a) =>
      a.post('/b', async (request) => {
        await request.db.begin(async (tx) => {
          await tx`insert into lost_paths values (1)`
        })
        return { ok: true }
      }),
    )
    loseAnswersFrom(COMMIT_MESSAGE)
    const response = await a.inject({ method: 'POST', url: '/b' })
    await settle(a)
    expect(await rows()).toEqual([1])
    expect(response.json().code).toBe('FST_PG_POOL_COMMIT_UNKNOWN')
  })

  test('app.db.begin(): its COMMIT answer lost is FST_PG_POOL_COMMIT_UNKNOWN', async () => {
    const a = await app(() => {})
    loseAnswersFrom(COMMIT_MESSAGE)
    const error = await a.db
      .begin(async (tx) => {
        await tx`insert into lost_paths values (1)`
      })
      .then(
        () => ({}) as { code?: string },
        (e: { code?: string }) => e,
      )
    await settle(a)
    expect(await rows()).toEqual([1])
    expect(error.code).toBe('FST_PG_POOL_COMMIT_UNKNOWN')
  })
})

describe('statements that surely did not run', () => {
  test('a statement queued behind the lost one (one at a time outside a transaction) is not said to have run', async () => {
    const outcomes: ({ code?: string; message?: string } | undefined)[] = []
    const a = await app((a) =>
      a.post('/two', async (request) => {
        const settle = (p: PromiseLike<unknown>, i: number) =>
          p.then(
            () => {
              outcomes[i] = undefined
            },
            (e) => {
              outcomes[i] = e
            },
          )
        // Sent in this order: the second waits for the first's answer.
        await Promise.all([
          settle(request.db`insert into lost_paths values (1)`, 0),
          settle(request.db`insert into lost_paths values (2)`, 1),
        ])
        return { ok: true }
      }),
    )
    loseAnswerWith('INSERT 0 1')
    await a.inject({ method: 'POST', url: '/two' })
    await settle(a)
    expect(await rows()).toEqual([1])
    expect(mayHaveCommitted(outcomes[0] ?? {})).toBe(true)
    expect(outcomes[1]?.code).toBe('FST_PG_POOL_CONNECTION_LOST')
    expect(outcomes[1]?.message).not.toMatch(/may have/)
  })
})
