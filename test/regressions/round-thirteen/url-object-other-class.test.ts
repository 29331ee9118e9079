// DEFECT (third-b, low). What the user does: passes the connection URL parsed by a WHATWG URL
// that is not Node's own class: whatwg-url's `URL` (the reference implementation, jsdom's and
// many polyfills' URL), or a config library's URL wrapper with the same getters (simulated here
// by a class of that shape). `connection: parsedUrl` where `parsedUrl.href` is
// `postgres://app:pw@db:5432/main?sslmode=require`. What they see: exactly round thirteen's
// connection-url-object defect: `register` succeeds and requests are served from ANOTHER database
// (the user's default, here `postgres`, not the one the URL names) and `?sslmode=require` is
// dropped: round thirteen's fix turns only `connection instanceof URL` into its href; any other
// URL object still passes checkKeys (no own keys) and connectionSnapshot reads its prototype
// getters `host` ("db:5432"), `port`, `username`, `password` and finds no `database`, no `ssl`.
// What they should see: the URL it holds (its href), or a coded refusal
// (FST_PG_POOL_INVALID_OPTION "give the URL as a string"). Cause:
// packages/core/src/options.ts:657 (`connection instanceof URL`) and :764 (object branch).
// Suggested fix: read any object whose `href` is a string and that has `protocol`/`pathname`
// getters (or `Object.prototype.toString.call(x) === '[object URL]'`) as its href, or refuse an
// options object carrying `href`/`pathname`/`searchParams`, names no postgres.js option has.
// Round thirteen, third round: failed on 381590e (both servers); passes after its fix.

import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'

let db: TestDatabase
const apps: FastifyInstance[] = []

beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  for (const app of apps.splice(0)) await app.close()
})
afterAll(() => db?.drop())

/** A WHATWG URL that is not Node's class (whatwg-url's shape: getters on the prototype, no own keys). */
class OtherUrl {
  readonly #url: URL
  constructor(href: string) {
    this.#url = new URL(href)
  }
  get href(): string {
    return this.#url.href
  }
  get protocol(): string {
    return this.#url.protocol
  }
  get username(): string {
    return this.#url.username
  }
  get password(): string {
    return this.#url.password
  }
  get host(): string {
    return this.#url.host
  }
  get hostname(): string {
    return this.#url.hostname
  }
  get port(): string {
    return this.#url.port
  }
  get pathname(): string {
    return this.#url.pathname
  }
  get search(): string {
    return this.#url.search
  }
  get searchParams(): URLSearchParams {
    return this.#url.searchParams
  }
  get hash(): string {
    return this.#url.hash
  }
  get origin(): string {
    return this.#url.origin
  }
  toString(): string {
    return this.#url.href
  }
  toJSON(): string {
    return this.#url.href
  }
}

async function outcome(connection: unknown): Promise<{ refused: unknown } | { database: unknown }> {
  const app = Fastify()
  apps.push(app)
  try {
    await app.register(pgPoolCore, { connection: connection as never, pool: { max: 1 } })
    app.get('/where', async (request) => {
      const [row] = await request.db<{ database: string }[]>`select current_database() as database`
      return row
    })
    await app.ready()
  } catch (error) {
    return { refused: (error as { code?: unknown }).code }
  }
  const reply = await app.inject('/where')
  return reply.statusCode === 200 ? reply.json() : { refused: reply.statusCode }
}

describe('connection given as a URL object of another class', () => {
  test('held: the same URL as a string names the database', async () => {
    const name = new URL(db.directUrl).pathname.slice(1)
    expect(await outcome(db.directUrl)).toEqual({ database: name })
  })

  test("whatwg-url's URL (not Node's class): the database it names, or refused", async () => {
    const url = new OtherUrl(db.directUrl)
    const name = url.pathname.slice(1)
    const result = await outcome(url)
    if ('refused' in result) expect(result.refused).toBe('FST_PG_POOL_INVALID_OPTION')
    else expect(result.database).toBe(name)
  })
})
