// Held (round sixteen, credentials probe). What was tried: `connection.password` as a function
// returning an expired token (every login refused, 28P01), then a fresh one, with health and
// metrics registered and a trace-level logger. Searched for either token in: the log lines, the
// 503 bodies and headers, /health and /metrics bodies, `util.inspect` (showHidden, deep) and
// `JSON.stringify` of `app.pgPool`, `util.inspect` of `app.db`, of `request.db` and of the
// FST_PG_POOL_CONNECT_FAILED error a handler catches (its cause chain). Found nowhere.
import { inspect } from 'node:util'
import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolHealth from '@fastify-pg-pool/health'
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import Fastify from 'fastify'
import postgres from 'postgres'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { startTlsServer, type TlsServer } from '../../../support/tls-server.js'

let tls: TlsServer
const EXPIRED = 'expired-Tok@en:/%20 ü "q-7f3a9c'
const FRESH = 'fresh-Tok@en:/%20 ü "q-c19e42'
beforeAll(async () => {
  tls = await startTlsServer({ allowPlaintext: true })
  const admin = postgres(tls.url, { max: 1, onnotice: () => {} })
  await admin.unsafe(`create role iam login password '${FRESH.replace(/'/g, "''")}'`)
  await admin.end()
}, 120_000)
afterAll(() => tls?.destroy())

const deep = (value: unknown) => inspect(value, { depth: 8, showHidden: true, getters: false })

test('an expired then a fresh token appear in no log, body, view object or error', async () => {
  const seen: string[] = []
  let token = EXPIRED
  const app = Fastify({ logger: { level: 'trace', stream: { write: (line: string) => seen.push(line) } } })
  try {
    await app.register(pgPoolCore, {
      connection: { host: '127.0.0.1', port: tls.port, database: 'postgres', username: 'iam', password: () => token },
      pool: { max: 2, lazy: true },
    })
    await app.register(pgPoolHealth)
    await app.register(pgPoolMetrics)
    app.get('/q', async (request) => {
      try {
        await request.db`select 1`
      } catch (error) {
        seen.push(deep(error), deep(request.db))
        throw error
      }
      seen.push(deep(request.db))
      return { ok: true }
    })
    const answer = async (path: string) => {
      const response = await app.inject(path)
      seen.push(JSON.stringify(response.headers), response.body)
      return response
    }
    expect((await answer('/q')).statusCode).toBe(503)
    expect((await answer('/health')).statusCode).toBe(503)
    await answer('/metrics')
    seen.push(deep(app.pgPool), JSON.stringify(app.pgPool), deep(app.db))
    token = FRESH
    expect((await answer('/q')).statusCode).toBe(200)
    await answer('/metrics')
    seen.push(deep(app.pgPool), JSON.stringify(app.pgPool), deep(app.db))
  } finally {
    await app.close()
  }
  const all = seen.join('\n')
  expect(all).toContain('28P01')
  for (const secret of [EXPIRED, FRESH]) {
    for (const form of [secret, encodeURIComponent(secret), secret.slice(-6), secret.slice(0, 9)]) {
      expect(all).not.toContain(form)
    }
  }
}, 120_000)
