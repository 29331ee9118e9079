import pgPoolCore from '@fastify-pg-pool/core'
import { afterEach, describe, expect, test } from 'vitest'
import { registerError } from '../../support/app.js'

// Hostile probing, round two of the operational fixes (38fc7a6 "a null replica is refused, named";
// 9d75231 "an unknown PGSSL is refused", naming the variable).
//
// 1. What the user does: gives a replica whose connection options are empty, or hold only values
//    read from an unset variable: `replicas: [{ host: process.env.REPLICA_HOST }]`, `replicas: [{}]`.
//    What they should get: FST_PG_POOL_INVALID_OPTION naming replicas[0], as for `replicas: [null]`
//    (options.ts: "a replica has no environment to fall back on (postgres.js's defaults would
//    target localhost, perhaps the primary)"). What they get: accepted; postgres.js then fills the
//    replica in from PGHOST/PGPORT/PGUSER/PGDATABASE or localhost and the OS user: the primary's
//    environment. Cause: resolveReplicas (options.ts) refuses only an undefined or null
//    connection. Suggested fix: refuse a replica given as options without `host`/`hostname`/`path`
//    (after dropping undefined values).
//
// 2. What the user does: sets PGMAX=abc (or PG_POOL_INSTANCES=0) in the environment, or `?max=abc` in
//    DATABASE_URL. What they should get: a refusal naming where the value came from, as PGSSL,
//    PGPORT, PGHOST and PGTARGETSESSIONATTRS are named (core README, connection). What they get:
//    "Invalid option pool.max: expected an integer >= 1, got "abc"": an option the app never set.
//    Cause: resolvePoolOptions (options.ts) reads the URL's max and PGMAX through resolveTable('pool', ...).

const saved = { PGMAX: process.env.PGMAX, PG_POOL_INSTANCES: process.env.PG_POOL_INSTANCES }
afterEach(() => {
  for (const [key, value] of Object.entries(saved)) {
    if (value === undefined) delete process.env[key]
    else process.env[key] = value
  }
})

describe('a replica with no connection target', () => {
  for (const [label, replica] of [
    ['{}', {}],
    ['{ host: undefined } (an unset REPLICA_HOST)', { host: undefined, port: undefined }],
  ] as const) {
    test(`replicas: [${label}] is refused, named, as replicas: [null] is`, async () => {
      const error = await registerError((app) =>
        app.register(pgPoolCore, {
          connection: 'postgres://app@127.0.0.1:1/app',
          replicas: [replica as never],
          pool: { lazy: true, max: 1 },
        }),
      ).catch((e: Error) => e)
      // Observed: "registered without an error".
      expect({ code: (error as { code?: string }).code, message: error.message }).toMatchObject({
        code: 'FST_PG_POOL_INVALID_OPTION',
        message: expect.stringContaining('replicas[0]'),
      })
    })
  }
})
