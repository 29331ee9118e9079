import { randomBytes } from 'node:crypto'
import { pgPool } from 'fastify-pg-pool'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { failOnProcessErrors } from '../faults/process-errors.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { Witness } from '../support/witness.js'

// Hostile probing, held: a password holding every URL delimiter (@ : / % # ? and a space), given
// percent-encoded in the URL and as a postgres.js option, never appears (raw, encoded, or as its
// random marker) in any trace-level log line, reply body or header, /health, /metrics, ping error,
// listen() error or register error, through a DNS failure, a TLS failure (sslmode=require against a
// server without TLS), a refused port and a LISTEN that cannot connect.
// Claims: packages/core/README.md "Connection" ("The password never appears in a log line, an
// error body, a health body or a metric"), packages/health/README.md (bodies never hold host
// names, users, passwords), docs/faults.md "Secrets".

const marker = randomBytes(6).toString('hex')
const password = `p@ss:w/o%rd#?x ${marker}`
const witness = new Witness()
const { seen } = witness
let db: TestDatabase
failOnProcessErrors()

beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(() => witness.closeApps())
afterAll(async () => {
  expectNoSecret(seen)
  await db.drop()
})

function expectNoSecret(texts: string[]): void {
  const all = texts.join('\n')
  expect(all).not.toContain(marker)
  expect(all).not.toContain(encodeURIComponent(password))
  expect(all).not.toContain(encodeURIComponent(marker))
}

function urlWith(host: string, port: number, query = ''): string {
  return `postgres://app:${encodeURIComponent(password)}@${host}:${port}/app${query}`
}

async function exercise(connection: string | Record<string, unknown>): Promise<void> {
  const { app } = witness.loggedApp()
  await app.register(pgPool, {
    connection: connection as never,
    pool: { lazy: true, connectTimeout: 1_500, acquireTimeout: 2_500 },
    health: { cacheTime: 0, pingTimeout: 1_500 },
  })
  app.get('/q', async (request) => request.db`select 1`)
  app.get('/tx', { config: { db: { transaction: true } } }, async (request) => request.db`select 1`)
  await app.ready()
  for (const path of ['/q', '/tx', '/health', '/health/ready', '/health/live', '/metrics']) {
    const res = await witness.capture(app, path)
    if (path === '/q' || path === '/tx') {
      expect(res.statusCode).toBe(503)
      expect(res.json().code).toBe('FST_PG_POOL_CONNECT_FAILED')
      expect(res.headers['retry-after']).toBe('1')
    }
    if (path === '/health/ready') expect(res.statusCode).toBe(503)
  }
  const ping = await app.pgPool.ping(1_500).catch((e: Error) => e)
  expect(ping).toBeInstanceOf(Error)
  const cause = (ping as Error).cause as Error | undefined
  seen.push(String(ping), (ping as Error).stack ?? '', String(cause), cause?.stack ?? '', JSON.stringify(ping))
  const listened = await app.db.listen('chan', () => {}).catch((e: Error) => e)
  expect(listened).toBeInstanceOf(Error)
  const listenCause = (listened as Error).cause as Error | undefined
  seen.push(String(listened), (listened as Error).stack ?? '', String(listenCause), listenCause?.stack ?? '')
  seen.push(app.pgPool.target, JSON.stringify(app.pgPool.options), app.pgPool.redact(String(cause)))
  await app.close()
  expectNoSecret(seen)
}

describe('a password with every URL delimiter never appears', () => {
  test('DNS failure, URL form', async () => {
    await exercise(urlWith(`no-such-${marker.slice(0, 4)}.invalid`, 5432))
  })
  test('DNS failure, options form', async () => {
    await exercise({ host: 'no-such-host.invalid', port: 5432, database: 'app', username: 'app', password })
  })
  test('refused port, URL form', async () => {
    await exercise(urlWith('127.0.0.1', 1))
  })
  test('TLS: sslmode=require to the test server (no TLS there: refused; with TLS: a failed login as app)', async () => {
    await exercise(urlWith('127.0.0.1', Number(new URL(db.directUrl).port), '?sslmode=require'))
  })
  test('register failure (not lazy): the coded error, its cause and stack', async () => {
    const { app } = witness.loggedApp()
    const error = await app
      .register(pgPool, { connection: urlWith('127.0.0.1', 1), pool: { connectTimeout: 1_000 } })
      .ready()
      .then(
        () => undefined,
        (e: Error & { code?: string }) => e,
      )
    expect(error?.code).toBe('FST_PG_POOL_CONNECT_FAILED')
    const cause = error?.cause as Error | undefined
    seen.push(String(error), error?.stack ?? '', String(cause), cause?.stack ?? '', JSON.stringify(error))
    expectNoSecret(seen)
  })
})
