import { randomBytes } from 'node:crypto'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

// Found by re-reading postgres.js's option parsing (round ten): postgres.js takes each option it
// is not given from `PG<NAME>` in the environment, `debug` included, and a truthy `debug` makes a
// failed statement's `query`, `parameters` and `args` enumerable on its error. With PGDEBUG=1 in the
// environment (or `?debug=1` in the URL) the log line of a failed statement carried its
// parameters. Both tests failed before the fix; the pool now states `debug: false` on every
// client it opens.

let db: TestDatabase
let current: TestApp | undefined
beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
  delete process.env.PGDEBUG
})
afterAll(() => db.drop())

describe('PGDEBUG in the environment, debug= in the URL: no parameter in the log line', () => {
  for (const [name, url, env] of [
    ['PGDEBUG=1', () => db.url, '1'],
    ['?debug=true', () => `${db.url}${db.url.includes('?') ? '&' : '?'}debug=true`, undefined],
  ] as const) {
    test(`${name}, errorMapping false (the driver's own error is what Fastify logs)`, async () => {
      if (env !== undefined) process.env.PGDEBUG = env
      const secret = `secretparam${randomBytes(6).toString('hex')}`
      current = await coreApp(url(), {}, {}, { errorMapping: false })
      current.app.get('/q', async (request) => request.db`select * from no_such_table where note = ${secret}`)
      const response = await current.app.inject('/q')
      expect(response.statusCode).toBe(500)
      const logged = current.logs.find((entry) => (entry.err as { code?: string } | undefined)?.code === '42P01')
      expect(logged, 'a log line with the error').toBeDefined()
      expect(JSON.stringify(current.logs)).not.toContain(secret)
      expect(response.body).not.toContain(secret)
    })
  }
})
