// DEFECT (probe-options, medium). What the user does: gives a libpq connection URI that carries
// its password in the query string (`postgres://app@db/main?password=...`, libpq's documented
// form, and what some platforms' connection strings look like) somewhere the option checks quote
// it: the common slip `replicas: process.env.REPLICA_URL` (a string where a list goes), or such a
// URL inside a bad list. What they see: FST_PG_POOL_INVALID_OPTION "Invalid option replicas:
// expected an array of URLs or connection options, got "postgres://app@db/main?password=s3cret-..."":
// the password in clear in the error message, which the app's startup logs and crash reporters
// keep. A password in the URL's user-info (`app:s3cret@db`) is replaced by `***` in the same
// message. What they should see: the value not shown, or its `password=` (and `sslpassword=`)
// query values redacted as the user-info one is. Cause: packages/core/src/option-kit.ts
// describe() quotes strings through redactUrls (packages/core/src/redact.ts:7), which only
// replaces `scheme://user:password@`. Suggested fix: also redact `[?&](ssl)?password=[^&#\s]*` in
// redactUrls, or describe a string that parses as a URL by its scheme only.
// Round thirteen: failed on a718e61 (the code before its fix, both servers); passes after it.

import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { describe, expect, test } from 'vitest'

const password = 's3cret-pw-7f3a9'

async function registerError(options: Record<string, unknown>): Promise<Error & { code?: string }> {
  const app = Fastify()
  try {
    await app.register(pgPoolCore, { connection: 'postgres://app@127.0.0.1:1/main', pool: { lazy: true }, ...options })
    await app.ready()
  } catch (error) {
    return error as Error & { code?: string }
  } finally {
    await app.close()
  }
  throw new Error('registered without an error')
}

describe('a password in a URL query is never quoted by an option error', () => {
  test('held: a user-info password is replaced by ***', async () => {
    const error = await registerError({ replicas: `postgres://app:${password}@replica/main` })
    expect(error.code).toBe('FST_PG_POOL_INVALID_OPTION')
    expect(error.message).not.toContain(password)
  })

  test('replicas given a URL string with ?password=', async () => {
    const error = await registerError({ replicas: `postgres://app@replica/main?password=${password}` })
    expect(error.code).toBe('FST_PG_POOL_INVALID_OPTION')
    // Fails: the message quotes the URL, password and all.
    expect(error.message).not.toContain(password)
  })

  test('replicas given a URL string with ?sslpassword=', async () => {
    const error = await registerError({
      replicas: `postgres://app@replica/main?sslmode=verify-full&sslpassword=${password}`,
    })
    expect(error.code).toBe('FST_PG_POOL_INVALID_OPTION')
    expect(error.message).not.toContain(password)
  })
})
