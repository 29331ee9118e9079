import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { describe, expect, test } from 'vitest'

// Found by hostile probing (failed before the fix).
// Expected (packages/core/README.md, "Connection"): "The password never appears in a log line, an
// error body, a health body or a metric"; option-kit.ts `describe`: strings are shown "with the
// password of any URL in them replaced by `***`".
//
// 1. A connection URL that WHATWG URL cannot parse is refused with FST_PG_POOL_INVALID_OPTION
//    `not a valid URL: "<the URL>"`, redacted by redact.ts `redactUrls`, whose pattern
//    `[^@\s]*@` stops at whitespace and at the first '@'. A password with a space (and a '/',
//    '?' or '#', which ends the authority) is printed whole; a password with an unencoded '@' has
//    everything after its first '@' printed. The register error goes to the startup log.
// 2. `postgres:/user:password@host/db` (one slash: no authority) parses as a URL with no host and
//    the whole `user:password@host/db` as its path: it is accepted, connects to localhost:5432
//    with that string as the database name, and the password lands in `app.pgPool.target`
//    (the pool's name in OpenTelemetry, db.namespace) and, through the server's 3D000 message
//    (`database "user:password@host/db" does not exist`), in every connect-failure log line.
//    libpq does not take it as a URI; `redactSecret` finds no password to redact (options.ts
//    resolveConnection: `parsed.password` is '').

const secret = 'Zq7Secret'

async function registerError(connection: string): Promise<(Error & { code?: string }) | undefined> {
  const app = Fastify()
  const error = await app
    .register(pgPoolCore, { connection, pool: { lazy: true } })
    .ready()
    .then(
      () => undefined,
      (e: Error & { code?: string }) => e,
    )
  await app.close().catch(() => {})
  return error
}

describe('a malformed connection URL: the coded error does not quote its password', () => {
  const cases: [string, string][] = [
    ['a password with a space and a slash', `postgres://app:${secret} x/y@db.internal:5432/app`],
    ['a password with a space and a #', `postgres://app:${secret} #1@db.internal:5432/app`],
    ['a password with an unencoded @, and a bad port', `postgres://app:p@ss${secret}@db.internal:54x32/app`],
  ]
  for (const [name, url] of cases) {
    test(name, async () => {
      const error = await registerError(url)
      expect(error?.code).toBe('FST_PG_POOL_INVALID_OPTION')
      expect(String(error?.message)).not.toContain(secret)
      expect(String(error?.stack)).not.toContain(secret)
    })
  }
})

describe("'postgres:/user:password@host/db' (one slash)", () => {
  test('is refused at register (or at least keeps its password out of target)', async () => {
    const url = `postgres:/app:${secret}@127.0.0.1:1/app`
    const app = Fastify()
    const error = await app
      .register(pgPoolCore, { connection: url, pool: { lazy: true } })
      .ready()
      .then(
        () => undefined,
        (e: Error & { code?: string }) => e,
      )
    const target = error === undefined ? app.pgPool.target : ''
    await app.close().catch(() => {})
    expect(target).not.toContain(secret)
    expect(error?.code).toBe('FST_PG_POOL_INVALID_OPTION')
    expect(String(error?.message)).not.toContain(secret)
  })
})
