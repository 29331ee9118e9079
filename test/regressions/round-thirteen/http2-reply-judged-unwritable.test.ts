// DEFECT (third-a, medium). What the user does: an HTTP/2 app (`Fastify({ http2: true })`) with a
// route transaction (`config.db: { transaction: true }`) whose reply carries a header Node's
// HTTP/2 layer writes (or drops with a warning) but HTTP/1 would refuse:
// 1. `connection: close` (code shared with an HTTP/1 server, or headers copied from an upstream
//    response): Node's Http2ServerResponse drops `connection` with an UnsupportedWarning and
//    writes the reply (plain Fastify answers 200);
// 2. a `content-disposition` whose file name is past Latin-1 (`filename="plan→v2.pdf"`): HTTP/2
//    has no HTTP/1 field syntax to break, Node writes it (plain Fastify answers 200).
// What they see: the work is ROLLED BACK and the client gets a 500 (ERR_HTTP2_INVALID_CONNECTION_
// HEADERS / ERR_INVALID_CHAR) for a reply Node would have written: takeUnwritable judges an
// HTTP/2 reply by HTTP/1's rules, and lists `connection` among the headers HTTP/2 refuses.
// What they should see: what plain Fastify gives, a 200 and the work committed.
// Cause: packages/core/src/reply-headers.ts:5 puts `connection` in http2Forbidden (Node's
// compat layer, lib/internal/http2/compat.js kSetHeader/isConnectionHeaderAllowed, drops it instead
// of throwing), and reply-headers.ts:35-37 validates every value with HTTP/1's
// validateHeaderValue also over HTTP/2 (http2's mapToHeaders takes any string).
// Suggested fix: over HTTP/2 (raw.stream !== undefined) do not validate values with
// validateHeaderValue, and drop `connection` (do not refuse it), as Node does.
// Round thirteen, third round: failed on 381590e (both servers); passes after its fix.
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'
import { h2Request } from '../../support/http2.js'

let db: TestDatabase
let app: FastifyInstance | undefined

beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table upload (id int)`
})
afterEach(async () => {
  await app?.close()
  app = undefined
  await db.sql`truncate upload`
})
afterAll(async () => {
  await db?.drop()
})

const cases: { name: string; header: (reply: FastifyReply) => void }[] = [
  { name: 'connection: close', header: (reply) => reply.header('connection', 'close') },
  {
    name: 'content-disposition with a file name past Latin-1',
    header: (reply) => reply.header('content-disposition', 'attachment; filename="plan\u2192v2.pdf"'),
  },
]

async function serve(withPool: boolean, header: (reply: FastifyReply) => void) {
  const server = Fastify({ http2: true })
  app = server as unknown as FastifyInstance
  if (withPool) await server.register(pgPoolCore, { connection: db.url, pool: { max: 2 } })
  server.post('/upload', { config: { db: { transaction: true } } }, async (request, reply) => {
    if (withPool) await request.db`insert into upload values (1)`
    header(reply as unknown as FastifyReply)
    return { ok: true }
  })
  await server.listen({ port: 0, host: '127.0.0.1' })
  const { port } = server.server.address() as { port: number }
  return h2Request(port, '/upload', { method: 'POST', timeoutMs: 5_000 })
}

describe('HTTP/2: a route transaction whose reply Node writes is committed', () => {
  for (const { name, header } of cases) {
    test(name, async () => {
      // Node writes this reply: plain Fastify answers 200.
      const plain = await serve(false, header)
      expect(plain.status).toBe(200)
      await app?.close()
      app = undefined
      const answer = await serve(true, header)
      const [row] = await db.sql<{ n: number }[]>`select count(*)::int as n from upload`
      const seen = `${answer.status} ${answer.body}`
      expect(seen).toBe('200 {"ok":true}')
      expect(row?.n).toBe(1)
    })
  }
})
