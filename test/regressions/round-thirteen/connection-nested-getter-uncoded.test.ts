// DEFECT (attack-options, low). What the user does: gives `connection` as an options object whose
// nested objects read lazily, e.g. `ssl: { get ca() { return readFileSync(process.env.DB_CA) } }`
// (a certificate file read only when TLS needs it) or a `connection.connection` startup
// parameter computed by a getter; the getter throws (the file is missing, a variable unset).
// What they see: `register` rejects with the getter's own error (`ENOENT ...`, its code, its
// message: whatever it quoted, here a secret's path), not a FST_PG_POOL_INVALID_OPTION naming the
// option; a getter that throws at
// the top level of the same object is coded (`connection.ssl`: "reading it threw"). Before round
// thirteen's snapshot the nested getter was only read when a connection opened (coded
// FST_PG_POOL_CONNECT_FAILED). What they should see: FST_PG_POOL_INVALID_OPTION naming
// `connection.ssl.ca` / `connection.connection.app.tenant`, without the getter's message.
// Cause: packages/core/src/options.ts:519-525 copiedObject() reads nested values with Object.entries
// outside the try of connectionSnapshot() (options.ts:504-510). Suggested fix: read nested
// objects inside the same try, naming the inner key ("reading it threw").
// Round thirteen, second round: failed on 1fd7255 (both servers); passes after its fix.

import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { describe, expect, test } from 'vitest'

async function registerError(connection: Record<string, unknown>): Promise<Error & { code?: string }> {
  const app = Fastify()
  try {
    await app.register(pgPoolCore, { connection: connection as never, pool: { lazy: true } })
    await app.ready()
  } catch (error) {
    return error as Error & { code?: string }
  } finally {
    await app.close()
  }
  throw new Error('registered without an error')
}

const base = { host: '127.0.0.1', port: 1, database: 'main', username: 'app' }

describe('a nested value that cannot be read is refused coded', () => {
  test('held: a top-level getter that throws', async () => {
    const connection = {
      ...base,
      get ssl(): unknown {
        throw new Error('vault token tok-4f1e expired')
      },
    }
    const error = await registerError(connection)
    expect(error.code).toBe('FST_PG_POOL_INVALID_OPTION')
    expect(error.message).not.toContain('tok-4f1e')
  })

  test('ssl.ca read by a getter that throws', async () => {
    const ssl = {
      rejectUnauthorized: true,
      get ca(): Buffer {
        throw Object.assign(new Error("ENOENT: no such file or directory, open '/run/secrets/tok-4f1e/ca.pem'"), {
          code: 'ENOENT',
        })
      },
    }
    const error = await registerError({ ...base, ssl })
    expect({ code: error.code, quotes: error.message.includes('tok-4f1e') }).toEqual({
      code: 'FST_PG_POOL_INVALID_OPTION',
      quotes: false,
    })
  })

  test('a startup parameter read by a getter that throws', async () => {
    const startup = {
      get 'app.tenant'(): string {
        throw new Error('TENANT unset')
      },
    }
    const error = await registerError({ ...base, connection: startup })
    expect(error.code).toBe('FST_PG_POOL_INVALID_OPTION')
  })
})
