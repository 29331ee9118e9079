// Found by hostile probing (round ten, the newest code):
// - `replicas: [null]` (say `[process.env.REPLICA_URL ?? null]`) and `[{ connection: null }]` were
//   accepted: null read as "not given", and with no environment a replica falls back on
//   postgres.js's defaults (localhost:5432, perhaps the primary itself).
// - A replica's misnamed option suggested the primary's (`did you mean pool.applicationName?`),
//   which would change the primary's connections.
// All three tests failed before the fix.
import pgPoolCore from '@fastify-pg-pool/core'
import { describe, expect, test } from 'vitest'
import { registerError } from '../support/app.js'

const url = 'postgres://app:secret@127.0.0.1:1/app'

async function refusal(replicas: unknown[]): Promise<string> {
  try {
    const error = await registerError((app) =>
      app.register(pgPoolCore, { connection: url, pool: { lazy: true }, replicas: replicas as never }),
    )
    return `${error.code}: ${error.message}`
  } catch (error) {
    return String((error as Error).message)
  }
}

describe('a null replica', () => {
  test('replicas: [null] is refused naming replicas[0]', async () => {
    expect(await refusal([null])).toMatch(/^FST_PG_POOL_INVALID_OPTION: Invalid option replicas\[0\]/)
  })

  test('replicas: [{ connection: null }] is refused naming replicas[0].connection', async () => {
    expect(await refusal([{ connection: null }])).toMatch(
      /^FST_PG_POOL_INVALID_OPTION: Invalid option replicas\[0\]\.connection/,
    )
  })
})

describe("a replica's misnamed option", () => {
  test("the suggestion names the replica's pool option, not the primary's", async () => {
    const message = await refusal([{ host: 'replica.internal', application_name: 'reports' }])
    expect(message).toMatch(/^FST_PG_POOL_INVALID_OPTION: Invalid option replicas\[0\]\.application_name/)
    expect(message).toContain('replicas[0].pool.applicationName')
  })
})
