// HELD (third-a): takeUnwritable judges HTTP/1 reply heads as Node does: a route transaction whose
// reply carries every legal odd form (numeric and empty values, arrays, set-cookie arrays, Latin-1
// 0x80-0xff values, token names with !#$%&'*+.^_`|~, a Latin-1 status message, a status code of 599
// or 299, a web Response with headers, HEAD) commits and answers as plain Fastify does.
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'

let db: TestDatabase
let app: FastifyInstance | undefined

beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table note (id int)`
})
afterEach(async () => {
  await app?.close()
  app = undefined
  await db.sql`truncate note`
})
afterAll(() => db?.drop())

const cases: { name: string; status: number; method?: 'HEAD'; act: (reply: FastifyReply) => unknown }[] = [
  { name: 'a numeric header', status: 200, act: (reply) => reply.header('x-count', 42) },
  { name: 'an empty header value', status: 200, act: (reply) => reply.header('x-empty', '') },
  { name: 'an array header', status: 200, act: (reply) => reply.header('x-list', ['a', 'b', 'c']) },
  { name: 'a set-cookie array', status: 200, act: (reply) => reply.header('set-cookie', ['a=1; Path=/', 'b=2']) },
  { name: 'Latin-1 bytes in a value', status: 200, act: (reply) => reply.header('x-name', 'Zoë Ñandú ÿ\u0080') },
  { name: 'a tab in a value', status: 200, act: (reply) => reply.header('x-tab', 'a\tb') },
  {
    name: "odd token characters in a name: !#$%&'*+.^_`|~",
    status: 200,
    act: (reply) => reply.header("x!#$%&'*+.^_`|~", '1'),
  },
  {
    name: 'a Latin-1 status message',
    status: 200,
    act: (reply) => {
      reply.raw.statusMessage = 'Très bien'
    },
  },
  { name: 'status 599', status: 599, act: (reply) => reply.code(599) },
  { name: 'status 299', status: 299, act: (reply) => reply.code(299) },
  {
    name: 'a web Response with headers',
    status: 201,
    act: () => new Response('made', { status: 201, headers: { 'x-made': 'yes', 'set-cookie': 'c=3' } }),
  },
  { name: 'HEAD with a Latin-1 header', status: 200, method: 'HEAD', act: (reply) => reply.header('x-name', 'Zoë') },
  {
    name: 'reply.raw.setHeader with a number',
    status: 200,
    act: (reply) => {
      reply.raw.setHeader('x-raw', 7)
    },
  },
]

async function build(withPool: boolean, act: (reply: FastifyReply) => unknown) {
  const server = Fastify()
  app = server
  if (withPool) await server.register(pgPoolCore, { connection: db.url, pool: { max: 2 } })
  server.get('/note', { config: { db: { transaction: true } } }, async (request, reply) => {
    if (withPool) await request.db`insert into note values (1)`
    const result = act(reply)
    return result instanceof Response ? result : 'ok'
  })
  return server
}

describe('a route transaction whose head Node writes commits', () => {
  for (const { name, status, method = 'GET', act } of cases) {
    test(name, async () => {
      const plain = await (await build(false, act)).inject({ method, url: '/note' })
      expect(plain.statusCode).toBe(status)
      await app?.close()
      const response = await (await build(true, act)).inject({ method, url: '/note' })
      const [row] = await db.sql<{ n: number }[]>`select count(*)::int as n from note`
      expect(response.statusCode, response.body).toBe(status)
      expect(response.headers).toEqual({ ...plain.headers, date: response.headers.date })
      expect(response.body).toBe(plain.body)
      expect(row?.n).toBe(status < 400 ? 1 : 0)
    })
  }
})
