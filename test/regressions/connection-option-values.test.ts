import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { describe, expect, test } from 'vitest'

// Found by hostile probing (failed before the fix).
// Expected (DESIGN.md §3, packages/core/README.md "Errors"): "Invalid options fail at `register`
// with a coded, readable error" — FST_PG_POOL_INVALID_OPTION, "an invalid or unknown option, at
// `register`" — and "Every error has a `code`, a `statusCode`".
//
// 1. `target_session_attrs` with a value postgres.js does not know (URL `?target_session_attrs=`
//    or the options key) makes `register` reject with a bare Error from postgres.js
//    ("target_session_attrs bogus is not supported"): no `code`, no `statusCode`.
// 2. `ssl: 'bogus'` (options) or `?sslmode=bogus` (URL) is accepted by a lazy `register`;
//    postgres.js treats an unknown string as verify-full, and every request then answers 503
//    FST_PG_POOL_CONNECT_FAILED (without `lazy`, register fails with CONNECT_FAILED: a network
//    error, not the option's name). libpq refuses `sslmode=bogus` as an invalid value.
// options.ts resolveConnection passes both through to postgres.js unchecked.

async function registerError(
  connection: unknown,
): Promise<(Error & { code?: string; statusCode?: number }) | undefined> {
  const app = Fastify()
  const error = await app
    .register(pgPoolCore, { connection: connection as never, pool: { lazy: true } })
    .ready()
    .then(
      () => undefined,
      (e: Error & { code?: string }) => e,
    )
  await app.close().catch(() => {})
  return error
}

describe('connection values postgres.js cannot use are refused at register, coded', () => {
  const cases: [string, unknown][] = [
    ['URL ?target_session_attrs=bogus', 'postgres://app@127.0.0.1:1/app?target_session_attrs=bogus'],
    ["options target_session_attrs: 'bogus'", { host: '127.0.0.1', port: 1, target_session_attrs: 'bogus' }],
    ['URL ?sslmode=bogus', 'postgres://app@127.0.0.1:1/app?sslmode=bogus'],
    ["options ssl: 'bogus'", { host: '127.0.0.1', port: 1, ssl: 'bogus' }],
  ]
  for (const [name, connection] of cases) {
    test(name, async () => {
      const error = await registerError(connection)
      expect({ code: error?.code, statusCode: error?.statusCode }).toEqual({
        code: 'FST_PG_POOL_INVALID_OPTION',
        statusCode: 500,
      })
    })
  }
})
