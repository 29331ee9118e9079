// HELD (probe-options): postgres.js reads some of its own options from a URL's query string as
// text (`?max_pipeline=`, `?keep_alive=`, `?backoff=`, `?idle_timeout=`, `?debug=`, `?prepare=`,
// `?fetch_types=`), none of them checked by the core on that path (the options-object path refuses
// a negative max_pipeline, a non-numeric keep_alive...). Given hostile values there (0, -1, text),
// exclusive, pipelined (three at once on one connection) and multi-statement requests still
// answer 200 with the right rows, and app.close() ends.

import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db?.drop())

const queries = [
  'max_pipeline=0',
  'max_pipeline=-1',
  'max_pipeline=abc',
  'keep_alive=abc',
  'keep_alive=-5',
  'backoff=abc',
  'idle_timeout=1',
  'debug=1',
  'prepare=0',
  'fetch_types=0',
]

describe('postgres.js options in the URL query, hostile values', () => {
  for (const query of queries) {
    test(`?${query}`, async () => {
      const app = Fastify()
      try {
        await app.register(pgPoolCore, {
          connection: `${db.url}${db.url.includes('?') ? '&' : '?'}${query}`,
          pool: { max: 1, acquireTimeout: 5_000, statementTimeout: 5_000 },
        })
        app.get('/pipelined', { config: { db: { pipeline: true } } }, async (request) => {
          const [row] = await request.db`select ${'p'}::text as p, pg_sleep(0.02)::text as slept`
          return row
        })
        app.get('/multi', async (request) => {
          const all = await Promise.all([
            request.db`select 1 as x`,
            request.db`select 2 as x`,
            request.db`select 3 as x`,
          ])
          return all.map((rows) => rows[0])
        })
        await app.ready()
        const responses = await Promise.all([
          app.inject('/pipelined'),
          app.inject('/pipelined'),
          app.inject('/pipelined'),
          app.inject('/multi'),
        ])
        expect(responses.map((response) => [response.statusCode, response.json()])).toEqual([
          [200, { p: 'p', slept: '' }],
          [200, { p: 'p', slept: '' }],
          [200, { p: 'p', slept: '' }],
          [200, [{ x: 1 }, { x: 2 }, { x: 3 }]],
        ])
      } finally {
        await app.close()
      }
    })
  }
})
