import { connect } from 'node:net'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { waitUntil } from '../support/database.js'
import { type NotesCluster, startNotesCluster } from '../support/replication.js'

// HOLDS: client-supplied read-your-writes tokens cannot hang, crash, pin reads on the primary or
// leak anything (docs/replicas.md, Read-your-writes 3.: "A missing, malformed or forged token is
// ignored (the read goes by lag alone)").
// maxWait is 2 s here: a token that made a read wait would show as a read taking >= 2 s.

let notes: NotesCluster
let app: FastifyInstance
const HEADER = 'x-pg-read-after'
const COOKIE = 'pg-read-after'
const MAX_WAIT = 2_000
const fallbacks: string[] = []

beforeAll(async () => {
  notes = await startNotesCluster('probe_token_attacks')
  app = Fastify()
  await app.register(pgPoolCore, {
    connection: notes.database.primaryUrl,
    replicas: [notes.database.standbyUrls[0] as string],
    replica: {
      lagInterval: 50,
      maxLag: { seconds: 600 },
      readYourWrites: { secret: 'a-test-secret-of-some-length', maxWait: MAX_WAIT, cookie: COOKIE },
    },
    pool: { max: 4, maxWaiting: 5_000, acquireTimeout: 30_000 },
  })
  app.post('/notes', async (request) => {
    const [row] = await request.db`insert into notes (body) values ('mine') returning id`
    return row
  })
  app.post('/notes-with-cookie', async (request, reply) => {
    reply.header('set-cookie', 'session=abc; Path=/; HttpOnly')
    const [row] = await request.db`insert into notes (body) values ('mine') returning id`
    reply.header('set-cookie', 'other=1; Path=/')
    return row
  })
  app.get('/where', { config: { db: { readOnly: true } } }, async (request) => {
    const [row] = await request.db`select pg_is_in_recovery() as standby`
    return row
  })
  app.get('/notes/:id', { config: { db: { readOnly: true } } }, async (request) => {
    const id = Number((request.params as { id: string }).id)
    const [row] = await request.db`select id, pg_is_in_recovery() as standby from notes where id = ${id}`
    return { found: row !== undefined, standby: row?.standby ?? null }
  })
  app.pgPool.on('readFallback', (reason) => fallbacks.push(reason))
  await app.ready()
  await waitUntil(() => app.pgPools.all()[1]?.replica()?.usable === true, 'the replica to be usable', 10_000)
}, 120_000)

afterEach(async () => {
  await notes.cluster.resumeReplay(notes.cluster.standby).catch(() => {})
  // Every lease back, on every pool.
  for (const view of app.pgPools.all()) {
    await waitUntil(() => view.stats().leased === 0 && view.stats().waiting === 0, `${view.name} to be idle`, 10_000)
  }
})

afterAll(async () => {
  await app?.close()
  await notes?.destroy()
})

const sig0 = Buffer.alloc(16).toString('base64url')
const malformed = [
  '',
  '.',
  '..',
  '0/0',
  '0/0.',
  `.${sig0}`,
  `FFFFFFFF/FFFFFFFF.${sig0}`,
  `FFFFFFFF/FFFFFFFF.${Buffer.alloc(64, 1).toString('base64url')}`,
  `100000000/0.${sig0}`,
  `-1/0.${sig0}`,
  `0x1/0.${sig0}`,
  ` 0/1.${sig0}`,
  '0/1.!!!!!!!!!!!!!!!!!!!!!!!!',
  `0/1.${'A'.repeat(12_000)}`,
  'x'.repeat(14_000),
  'FFFFFFFF/FFFFFFFF.☃☃☃',
]

describe('malformed and forged tokens', () => {
  test('each is ignored: answered from the replica, at once, no behind_write', async () => {
    await notes.cluster.pauseReplay(notes.cluster.standby)
    // The primary is ahead of the replica: a token that were honoured would wait, then fall back.
    await app.inject({ method: 'POST', url: '/notes' })
    fallbacks.length = 0
    for (const token of malformed) {
      const started = Date.now()
      const reply = await app.inject({ url: '/where', headers: { [HEADER]: encodeURI(token) } })
      const took = Date.now() - started
      expect({ token: token.slice(0, 40), status: reply.statusCode, body: reply.json() }).toEqual({
        token: token.slice(0, 40),
        status: 200,
        body: { standby: true },
      })
      expect(took).toBeLessThan(MAX_WAIT)
    }
    expect(fallbacks).toEqual([])
  })

  test('a real token for another secret, and one with its LSN raised, are ignored', async () => {
    const other = Fastify()
    await other.register(pgPoolCore, {
      connection: notes.database.primaryUrl,
      replicas: [notes.database.standbyUrls[0] as string],
      replica: { lagInterval: 50, readYourWrites: { secret: 'another-secret-of-some-length' } },
      pool: { max: 1 },
    })
    other.post('/notes', async (request) => (await request.db`insert into notes (body) values ('x') returning id`)[0])
    try {
      await other.ready()
      const foreign = String((await other.inject({ method: 'POST', url: '/notes' })).headers[HEADER])
      const own = String((await app.inject({ method: 'POST', url: '/notes' })).headers[HEADER])
      const [, sig] = own.split('.')
      await notes.cluster.pauseReplay(notes.cluster.standby)
      await app.inject({ method: 'POST', url: '/notes' })
      fallbacks.length = 0
      for (const token of [foreign, `FFFFFFFF/FFFFFFFF.${sig}`]) {
        const reply = await app.inject({ url: '/where', headers: { [HEADER]: token } })
        expect(reply.json()).toEqual({ standby: true })
      }
      expect(fallbacks).toEqual([])
    } finally {
      await other.close()
    }
  })

  test('cookies: malformed percent-encoding, hundreds of pairs, a forged value: ignored, never a 500', async () => {
    await notes.cluster.pauseReplay(notes.cluster.standby)
    await app.inject({ method: 'POST', url: '/notes' })
    fallbacks.length = 0
    const cookies = [
      `${COOKIE}=%E0%A4%A`,
      `${COOKIE}=%`,
      Array.from({ length: 500 }, (_, i) => `c${i}=${i}`).join('; '),
      `${COOKIE}=${encodeURIComponent(`FFFFFFFF/FFFFFFFF.${sig0}`)}`,
      `=; ;;; ${COOKIE}; ${COOKIE}==`,
    ]
    for (const cookie of cookies) {
      const reply = await app.inject({ url: '/where', headers: { cookie } })
      expect({ cookie: cookie.slice(0, 30), status: reply.statusCode }).toEqual({
        cookie: cookie.slice(0, 30),
        status: 200,
      })
      expect(reply.json()).toEqual({ standby: true })
    }
    expect(fallbacks).toEqual([])
  })

  test('a token and its cookie only name a position: no host, port, database or secret', async () => {
    const reply = await app.inject({ method: 'POST', url: '/notes' })
    const token = String(reply.headers[HEADER])
    expect(token).toMatch(/^[0-9A-F]{1,8}\/[0-9A-F]{1,8}\.[A-Za-z0-9_-]{22}$/)
    const cookie = String(reply.headers['set-cookie'])
    expect(cookie).toBe(`${COOKIE}=${encodeURIComponent(token)}; Path=/; Max-Age=60; HttpOnly; SameSite=Lax`)
  })
})

describe("the app's own cookies", () => {
  test('set before and after the write: kept beside the token cookie', async () => {
    const reply = await app.inject({ method: 'POST', url: '/notes-with-cookie' })
    const cookies = ([] as string[]).concat(reply.headers['set-cookie'] ?? [])
    expect(cookies.map((cookie) => cookie.split('=')[0]).sort()).toEqual([COOKIE, 'other', 'session'].sort())
  })
})

describe('over a real socket', () => {
  test('the header sent twice, and an oversized header: answered (200 or 431), the process alive', async () => {
    const address = await app.listen({ port: 0, host: '127.0.0.1' })
    const { port } = new URL(address)
    const own = String((await app.inject({ method: 'POST', url: '/notes' })).headers[HEADER])
    const raw = (request: string) =>
      new Promise<string>((resolve, reject) => {
        const socket = connect(Number(port), '127.0.0.1')
        let answer = ''
        socket.on('data', (chunk) => {
          answer += String(chunk)
        })
        socket.on('end', () => resolve(answer))
        socket.on('error', reject)
        socket.write(request)
      })
    const twice = await raw(
      `GET /where HTTP/1.1\r\nHost: x\r\nConnection: close\r\n${HEADER}: ${own}\r\n${HEADER}: ${own}\r\n\r\n`,
    )
    expect(twice.split('\r\n')[0]).toBe('HTTP/1.1 200 OK')
    const many = Array.from({ length: 90 }, () => `${HEADER}: ${own}\r\n`).join('')
    const flood = await raw(`GET /where HTTP/1.1\r\nHost: x\r\nConnection: close\r\n${many}\r\n`)
    expect(flood.split('\r\n')[0]).toBe('HTTP/1.1 200 OK')
    const huge = await raw(
      `GET /where HTTP/1.1\r\nHost: x\r\nConnection: close\r\n${HEADER}: ${'A'.repeat(20_000)}\r\n\r\n`,
    )
    expect(huge.split('\r\n')[0]).toMatch(/^HTTP\/1\.1 (200|431)/)
    expect((await app.inject('/where')).statusCode).toBe(200)

    // Clients that hang up while their token-bearing read waits for the paused replica (maxWait 2 s):
    // no lease is left out (afterEach checks every pool is idle) and the server keeps answering.
    await notes.cluster.pauseReplay(notes.cluster.standby)
    const write = await app.inject({ method: 'POST', url: '/notes' })
    const token = String(write.headers[HEADER])
    await Promise.all(
      Array.from(
        { length: 20 },
        () =>
          new Promise<void>((resolve) => {
            const socket = connect(Number(port), '127.0.0.1')
            socket.on('error', () => {})
            socket.write(`GET /notes/${write.json().id} HTTP/1.1\r\nHost: x\r\n${HEADER}: ${token}\r\n\r\n`)
            setTimeout(() => {
              socket.destroy()
              resolve()
            }, 100)
          }),
      ),
    )
    expect((await app.inject('/where')).statusCode).toBe(200)
  })
})

describe('many waiting reads', () => {
  test('1,000 concurrent reads with a real token, replay paused: all answered from the primary, the monitor keeps sampling', async () => {
    await notes.cluster.pauseReplay(notes.cluster.standby)
    const write = await app.inject({ method: 'POST', url: '/notes' })
    const token = String(write.headers[HEADER])
    const errors = new Set<string>()
    const watch = setInterval(() => {
      const error = app.pgPools.all()[1]?.replica()?.lag?.error
      if (error !== undefined) errors.add(error)
    }, 10)
    try {
      const replies = await Promise.all(
        Array.from({ length: 1_000 }, () =>
          app.inject({ url: `/notes/${write.json().id}`, headers: { [HEADER]: token } }),
        ),
      )
      expect(new Set(replies.map((reply) => JSON.stringify([reply.statusCode, reply.json()])))).toEqual(
        new Set([JSON.stringify([200, { found: true, standby: false }])]),
      )
    } finally {
      clearInterval(watch)
    }
    expect([...errors]).toEqual([])
  }, 60_000)
})
