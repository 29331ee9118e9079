// What the user does: `connection.password` is a function fetching an IAM token, which throws
// (the role lacks rds-db:connect, the metadata endpoint is down), and the app calls
// `app.db.listen(...)`.
// What they should get (core README, "Rotating credentials"): FST_PG_POOL_CONNECT_FAILED whose
// cause says why, `PASSWORD_FAILED: connection.password function failed: <its message>`, as the
// pool's requests get.
// What they got: the cause was `28P01: password authentication failed for user "iam"`: the LISTEN
// client (which postgres.js opens itself) logged in with an empty password when the function
// failed, and the server's refusal hid the function's error. The user chases a wrong password
// instead of the token source's failure.
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import postgres from 'postgres'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { startTlsServer, type TlsServer } from '../../../support/tls-server.js'

let tls: TlsServer
const GOOD = 'iam-token-good-listen-0123'
beforeAll(async () => {
  // scram-sha-256 logins (plaintext allowed: TLS is not the point here).
  tls = await startTlsServer({ allowPlaintext: true })
  const admin = postgres(tls.url, { max: 1, onnotice: () => {} })
  await admin.unsafe(`create role iam login password '${GOOD}'`)
  await admin.end()
}, 120_000)
afterAll(() => tls?.destroy())

test("listen() when the password function throws: the cause is the function's failure, not the server's 28P01", async () => {
  let failing = true
  const app = Fastify()
  try {
    await app.register(pgPoolCore, {
      connection: {
        host: '127.0.0.1',
        port: tls.port,
        database: 'postgres',
        username: 'iam',
        password: () => {
          if (failing) throw new Error('AccessDenied: not authorized to perform rds-db:connect')
          return GOOD
        },
      },
      pool: { max: 1, lazy: true },
    })
    await app.ready()
    const error = (await app.db.listen('orders', () => {}).catch((caught: unknown) => caught)) as Error & {
      code?: string
      cause?: Error & { code?: string }
    }
    expect(error.code).toBe('FST_PG_POOL_CONNECT_FAILED')
    // Observed before the fix: '28P01', "28P01: password authentication failed for user \"iam\"".
    expect(error.cause?.code).toBe('PASSWORD_FAILED')
    expect(error.cause?.message).toContain('AccessDenied: not authorized to perform rds-db:connect')

    // The token source recovers: listen() works, and the earlier failure is not reported again.
    failing = false
    const listening = await app.db.listen('orders', () => {})
    expect(app.pgPool.listener().connected).toBe(true)
    await listening.unlisten()
  } finally {
    await app.close()
  }
}, 120_000)
