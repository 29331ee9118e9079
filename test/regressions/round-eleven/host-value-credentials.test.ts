import { randomBytes } from 'node:crypto'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { describe, expect, test } from 'vitest'

// Hostile probing, round twelve (options, second round on commit 6528993: values of a connection
// object described in refusals).
//
// Docs: packages/core/README.md "Connection": "The password never appears in a log line, an error
// body, a health body or a metric"; "Every value of an options object is checked against what
// postgres.js takes (`host` a name or a list of them, ...) and refused by name otherwise"; "What
// postgres.js would ignore or misread is refused at `register`". The round-two regression
// (test/regressions/refusal-quotes-password.test.ts) made a refusal quote no password that sits in
// a value where it does not belong (a JDBC URL's ?password=, a URL without its scheme).
//
// What happens:
// 1. Credentials pasted into a host (`host: 'app:<password>@db.internal'`, the same in a host list
//    or in PGHOST): refused, and the refusal quotes the password:
//      Invalid option connection.host: expected a port from 1 to 65535, got "<password>@db.internal"
//    checkHostPort (packages/core/src/options.ts) reads everything after the first ':' as a port
//    and describe()s it; redactUrls only hides `scheme://user:password@`.
// 2. A URL in `host` (`host: process.env.DATABASE_URL`, a frequent mistake): passes the new value
//    check (isHost: any non-empty string; its colons make it an "IPv6 literal" to isIpv6, so no
//    port is checked either). With pool.lazy the app starts and every request answers 503
//    FST_PG_POOL_CONNECT_FAILED (getaddrinfo ENOTFOUND postgres://...): the wrong value is never
//    named. Expected: refused at register, naming connection.host.

const secret = () => `Pw${randomBytes(6).toString('hex')}`

async function refusal(options: Record<string, unknown>, env: Record<string, string> = {}) {
  const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]))
  Object.assign(process.env, env)
  const app = Fastify()
  try {
    await app.register(pgPoolCore, { ...options, pool: { lazy: true, connectTimeout: 2_000 } } as never)
    await app.ready()
    return undefined
  } catch (error) {
    return error as Error & { code?: string }
  } finally {
    await app.close().catch(() => {})
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k]
      else process.env[k] = v
    }
  }
}

describe('credentials pasted into a host are refused without quoting the password', () => {
  test('connection.host user:password@host', async () => {
    const pw = secret()
    const error = await refusal({ connection: { host: `app:${pw}@db.internal`, database: 'app' } })
    expect(error?.code).toBe('FST_PG_POOL_INVALID_OPTION')
    expect(String(error?.message)).not.toContain(pw)
  })

  test('a host list entry user:password@host', async () => {
    const pw = secret()
    const error = await refusal({ connection: { host: ['db-a.internal', `app:${pw}@db-b.internal`], database: 'app' } })
    expect(error?.code).toBe('FST_PG_POOL_INVALID_OPTION')
    expect(String(error?.message)).not.toContain(pw)
  })

  test('PGHOST user:password@host', async () => {
    const pw = secret()
    const error = await refusal({}, { PGHOST: `app:${pw}@db.internal` })
    expect(error?.code).toBe('FST_PG_POOL_INVALID_OPTION')
    expect(String(error?.message)).not.toContain(pw)
  })
})

describe('a URL given as host', () => {
  test('is refused at register, naming connection.host (not reported as an unreachable server)', async () => {
    const pw = secret()
    const error = await refusal({
      connection: { host: `postgres://app:${pw}@127.0.0.1:1/app`, database: 'app' },
    })
    expect(error?.code).toBe('FST_PG_POOL_INVALID_OPTION')
    expect(String(error?.message)).toContain('connection.host')
    expect(String(error?.message)).not.toContain(pw)
  })
})
