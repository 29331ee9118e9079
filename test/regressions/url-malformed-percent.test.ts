import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { describe, expect, test } from 'vitest'

// Found by hostile probing (failed before the fix).
// Expected (packages/core/README.md, Errors): `FST_PG_POOL_INVALID_OPTION` | "an invalid or unknown
// option, at `register`"; every error of the suite has a `code` and a `statusCode` ("Every error
// has a `code`, a `statusCode`"). A DATABASE_URL / connection URL whose password holds a '%' not
// followed by two hex digits (a password typed as is, or built with WHATWG URL's own `password`
// setter, which leaves '%' unencoded) is an invalid option.
//
// What happened: register threw a bare `URIError: URI malformed` (no code, no statusCode, no hint
// of which option), from options.ts resolveConnection: `decodeURIComponent(parsed.password)`.

describe('a connection URL whose password holds a bare %', () => {
  test('register fails with FST_PG_POOL_INVALID_OPTION, not a bare URIError', async () => {
    const url = new URL('postgres://app@127.0.0.1:1/app')
    url.password = '50%off' // the URL setter keeps the '%' as is
    expect(url.toString()).toBe('postgres://app:50%off@127.0.0.1:1/app')
    const app = Fastify()
    const error = await app.register(pgPoolCore, { connection: url.toString(), pool: { lazy: true } }).then(
      () => undefined,
      (e: unknown) => e as { code?: string; message?: string; name?: string },
    )
    await app.close().catch(() => {})
    expect({ name: error?.name, code: error?.code }).toMatchObject({ code: 'FST_PG_POOL_INVALID_OPTION' })
    expect(String(error?.message)).not.toContain('50%off')
  })

  test('the same through DATABASE_URL', async () => {
    const saved = process.env.DATABASE_URL
    process.env.DATABASE_URL = 'postgres://app:50%off@127.0.0.1:1/app'
    try {
      const app = Fastify()
      const error = await app.register(pgPoolCore, { pool: { lazy: true } }).then(
        () => undefined,
        (e: unknown) => e as { code?: string; name?: string },
      )
      await app.close().catch(() => {})
      expect({ name: error?.name, code: error?.code }).toMatchObject({ code: 'FST_PG_POOL_INVALID_OPTION' })
    } finally {
      if (saved === undefined) delete process.env.DATABASE_URL
      else process.env.DATABASE_URL = saved
    }
  })
})
