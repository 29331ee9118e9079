import { randomBytes } from 'node:crypto'
import { Writable } from 'node:stream'
import Fastify from 'fastify'
import pgPool from 'fastify-pg-pool'
import { describe, expect, test } from 'vitest'

// Found by hostile probing, round 2 (options), failing before the fix. packages/core/README.md "Connection": "The password never
// appears in a log line, an error body, a health body or a metric"; a URL that cannot be parsed
// "is not quoted in the error: nothing tells its password from the rest".
//
// A connection string that parses as a URL of another scheme is refused with
// `expected a postgres:// URL, got "<the string>"` (options.ts resolveConnection, describe(redactUrls(given))).
// redactUrls only hides `scheme://user:password@`: the password of a JDBC URL, where it is a query
// parameter (`jdbc:postgresql://host/db?user=app&password=...`, how Java configs carry it), and that
// of a string without its scheme (`app:password@host:5432/db`, which URL reads as scheme `app:`),
// are quoted whole in the error, which Fastify logs as register's failure.

const secret = () => `Pw${randomBytes(6).toString('hex')}`

async function refusal(
  options: Record<string, unknown>,
): Promise<{ error: (Error & { code?: string }) | undefined; logs: string }> {
  let logs = ''
  const stream = new Writable({
    write(chunk, _encoding, callback) {
      logs += String(chunk)
      callback()
    },
  })
  const app = Fastify({ logger: { level: 'trace', stream } })
  const error = await app
    .register(pgPool, { ...options, pool: { lazy: true } } as never)
    .ready()
    .then(
      () => undefined,
      (e: Error & { code?: string }) => e,
    )
  await app.close().catch(() => {})
  return { error, logs }
}

describe('a connection string of another scheme is refused without quoting its password', () => {
  const cases: [string, (password: string) => Record<string, unknown>][] = [
    [
      'a JDBC URL with ?password=',
      (pw) => ({ connection: `jdbc:postgresql://db.internal:5432/app?user=app&password=${pw}` }),
    ],
    [
      'a URL without its scheme (user:password@host:port/db)',
      (pw) => ({ connection: `app:${pw}@db.internal:5432/app` }),
    ],
    [
      'a replica given as a JDBC URL',
      (pw) => ({
        connection: 'postgres://app@127.0.0.1:1/app',
        replicas: [`jdbc:postgresql://replica.internal/app?password=${pw}`],
      }),
    ],
  ]
  for (const [name, options] of cases) {
    test(name, async () => {
      const pw = secret()
      const { error, logs } = await refusal(options(pw))
      expect(error?.code).toBe('FST_PG_POOL_INVALID_OPTION')
      expect(error?.message).not.toContain(pw)
      expect(logs).not.toContain(pw)
    })
  }
})
