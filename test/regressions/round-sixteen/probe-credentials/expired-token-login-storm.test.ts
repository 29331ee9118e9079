// What the user does: `connection.password` is a function returning a cloud IAM token (AWS RDS,
// Azure Entra ID), and the token it returns has expired (a clock skew, a revoked grant, a cache
// that kept it too long): the server refuses every login with 28P01. Traffic keeps coming.
// What they should get: 503s with Retry-After (they do), and a pool that keeps probing the
// server, with backoff, until a login succeeds: one login at a time, since a token refused once
// is refused for every connection opened with it.
// What they got: after every retry wait (at most 1 s) the pool opened as many connections as
// requests were waiting, up to `max`, each one fetching a token and failing its login: with
// max 30, about 34 refused logins a second from one app instance (a fleet of 20 pods: ~700/s),
// against an authentication service that throttles (RDS IAM: ~200 new connections/s) or locks
// the account. The fix: after a failed opening the pool opens one connection at a time until one
// succeeds, then opens for every request still waiting.
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import postgres from 'postgres'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { waitFor } from '../../../support/database.js'
import { startTlsServer, type TlsServer } from '../../../support/tls-server.js'

let tls: TlsServer
const GOOD = 'iam-token-good-0123456789'
beforeAll(async () => {
  // scram-sha-256 logins (plaintext allowed: TLS is not the point here).
  tls = await startTlsServer({ allowPlaintext: true })
  const admin = postgres(tls.url, { max: 1, onnotice: () => {} })
  await admin.unsafe(`create role iam login password '${GOOD}'`)
  await admin.end()
}, 120_000)
afterAll(() => tls?.destroy())

test('an expired token: one refused login per retry, not one per waiting request; the pool recovers once it is fresh', async () => {
  const max = 10
  let calls = 0
  let token = 'iam-token-expired-9876543210'
  const app = Fastify()
  try {
    await app.register(pgPoolCore, {
      connection: {
        host: '127.0.0.1',
        port: tls.port,
        database: 'postgres',
        username: 'iam',
        password: () => {
          calls++
          return token
        },
      },
      pool: { max, lazy: true, acquireTimeout: 30_000 },
    })
    app.get('/q', async (request) => (await request.db<{ x: number }[]>`select 1 as x`)[0])
    const burst = () => Promise.all(Array.from({ length: 2 * max }, () => app.inject('/q')))

    // A cold pool opens up to max at once (README: "a cold pool calls it up to max times at once").
    const first = await burst()
    expect(first.map((r) => r.statusCode)).toEqual(first.map(() => 503))
    expect(first[0]?.headers['retry-after']).toBeDefined()
    expect(first[0]?.json().code).toBe('FST_PG_POOL_CONNECT_FAILED')
    const afterFirst = calls
    expect(afterFirst).toBeLessThanOrEqual(max)

    const rounds = 4
    for (let i = 0; i < rounds; i++) {
      const responses = await burst()
      expect(responses.map((r) => r.statusCode)).toEqual(responses.map(() => 503))
    }
    // Observed before the fix: 40 (max logins for every burst of waiting requests).
    expect(calls - afterFirst).toBeLessThanOrEqual(rounds)

    // A fresh token: the next burst is served in full, the pool growing past its probe.
    token = GOOD
    const served = await burst()
    expect(served.map((r) => r.statusCode)).toEqual(served.map(() => 200))
    expect(await waitFor(() => app.pgPool.stats().open > 1, 10_000)).toBe(true)
  } finally {
    await app.close()
  }
}, 120_000)
