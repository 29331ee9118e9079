import type { FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { freePort } from '../support/embedded-server.js'

// Issue 17 item 7: what reaches HTTP clients. On fd52652 a 503 CONNECT_FAILED body carried the
// database host and port, and PostgreSQL errors reached clients as 500 with the server's message
// (`relation "secret_table" does not exist`). Bodies now say what a client may know; the full
// error and its SQLSTATE go to the log (never a query parameter).

let db: TestDatabase
let current: TestApp | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe(`
    create table accounts (id int primary key, email text not null unique, balance int check (balance >= 0));
    create table transfers (id int primary key, account_id int references accounts (id));
    insert into accounts values (1, 'a@example.com', 10);
    create function raise_state(code text) returns void language plpgsql as
      $f$ begin raise exception 'internal detail nobody should see' using errcode = code; end $f$;
  `)
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(() => db.drop())

const SECRET_PARAM = 'zz-secret-param-value'

function routes(app: FastifyInstance): void {
  app.get('/missing', async (request) => request.db`select * from secret_table`)
  app.post('/duplicate', async (request) => request.db`insert into accounts values (2, 'a@example.com', 1)`)
  app.post('/orphan', async (request) => request.db`insert into transfers values (1, 999)`)
  app.post('/negative', async (request) => request.db`update accounts set balance = -5 where id = 1`)
  app.post('/null', async (request) => request.db`insert into accounts values (3, null, 1)`)
  app.get('/bad-int', async (request) => request.db`select ${SECRET_PARAM}::int`)
  app.get(
    '/raise/:code',
    async (request) => request.db`select raise_state(${(request.params as { code: string }).code})`,
  )
}

function logsText(app: TestApp): string {
  return JSON.stringify(app.logs)
}

describe('PostgreSQL errors reach clients mapped by SQLSTATE', () => {
  const cases: [string, string, number, string][] = [
    ['GET', '/missing', 500, '42P01'],
    ['POST', '/duplicate', 409, '23505'],
    ['POST', '/orphan', 409, '23503'],
    ['POST', '/negative', 409, '23514'],
    ['POST', '/null', 400, '23502'],
    ['GET', '/bad-int', 400, '22P02'],
    ['GET', '/raise/22003', 400, '22003'],
    ['GET', '/raise/40001', 503, '40001'],
    ['GET', '/raise/40P01', 503, '40P01'],
    ['GET', '/raise/53300', 503, '53300'],
    ['GET', '/raise/P0001', 500, 'P0001'],
    ['GET', '/raise/42501', 500, '42501'],
  ]
  for (const [method, url, status, code] of cases) {
    test(`${method} ${url} -> ${status} with code ${code}, no server message in the body`, async () => {
      current = await coreApp(db.url)
      routes(current.app)
      const response = await current.app.inject({ method: method as 'GET', url })
      expect(response.statusCode).toBe(status)
      const body = response.json()
      expect(body.code).toBe(code)
      expect(body.statusCode).toBe(status)
      for (const secret of ['secret_table', 'internal detail', 'a@example.com', 'accounts_email_key', SECRET_PARAM]) {
        expect(response.body).not.toContain(secret)
      }
      if (status === 503) expect(response.headers['retry-after']).toBeDefined()
      else expect(response.headers['retry-after']).toBeUndefined()
      // The log keeps the full error and the SQLSTATE, never the parameter.
      const logged = current.logs.find((line) => (line.err as { code?: string } | undefined)?.code === code)
      expect(logged, `a log line with err.code ${code}`).toBeDefined()
      if (url === '/missing') expect(JSON.stringify(logged)).toContain('secret_table')
      expect(logsText(current)).not.toContain(SECRET_PARAM)
    })
  }

  test('errorMapping extends the table (42501 -> 403) and false turns it off', async () => {
    current = await coreApp(db.url, {}, {}, { errorMapping: { '42501': 403, '23': 422 } } as never)
    routes(current.app)
    expect((await current.app.inject('/raise/42501')).statusCode).toBe(403)
    expect((await current.app.inject({ method: 'POST', url: '/duplicate' })).statusCode).toBe(422)
    await current.app.close()
    current = await coreApp(db.url, {}, {}, { errorMapping: false } as never)
    routes(current.app)
    const raw = await current.app.inject('/missing')
    expect(raw.statusCode).toBe(500)
    expect(raw.json().message).toContain('secret_table')
  })
})

describe('503 bodies say what a client may know', () => {
  test('CONNECT_FAILED carries neither the host nor the port nor the driver error; the log does', async () => {
    const port = await freePort()
    const url = `postgres://postgres:pw@127.0.0.1:${port}/nowhere`
    current = await coreApp(url, { lazy: true, connectTimeout: 1_000 })
    current.app.get('/q', async (request) => request.db`select 1`)
    const response = await current.app.inject('/q')
    expect(response.statusCode).toBe(503)
    expect(response.json().code).toBe('FST_PG_POOL_CONNECT_FAILED')
    expect(response.headers['retry-after']).toBeDefined()
    for (const secret of ['127.0.0.1', String(port), 'ECONNREFUSED', 'nowhere']) {
      expect(response.body).not.toContain(secret)
    }
    expect(logsText(current)).toContain('ECONNREFUSED')
    expect(logsText(current)).not.toContain(':pw@')
  })
})
