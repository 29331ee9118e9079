// HELD (attack-options): other spellings of the URL query keys round thirteen refuses
// (`?database=`, `?replication=`): `?Database=`, libpq's `?dbname=`, `?replication =` (a trailing
// space), and a protocol option `?_pq_.x=` (the server answers NegotiateProtocolVersion, which
// postgres.js does not support). postgres.js sends each as a startup parameter; the server
// refuses them (42704, or the message postgres.js cannot read) and register fails coded
// (FST_PG_POOL_CONNECT_FAILED with the cause), promptly: never another database, never a hang.

import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { describe, expect, inject, test } from 'vitest'

describe('startup keys of the URL in other spellings fail coded', () => {
  for (const [key, value, cause] of [
    ['Database', 'template1', '42704'],
    ['dbname', 'template1', '42704'],
    ['replication ', 'database', '42704'],
    ['_pq_.probe', '1', 'MESSAGE_NOT_SUPPORTED'],
  ] as const) {
    test(`?${key}=`, async () => {
      const url = new URL(inject('adminUrl'))
      url.searchParams.set(key, value)
      const app = Fastify()
      const error = await app
        .register(pgPoolCore, { connection: url.toString(), pool: { max: 1, connectTimeout: 5_000 } })
        .then(
          () => undefined,
          (e: { code?: string; cause?: { code?: string } }) => e,
        )
      await app.close()
      expect({ code: error?.code, cause: error?.cause?.code }).toEqual({
        code: 'FST_PG_POOL_CONNECT_FAILED',
        cause,
      })
    })
  }
})
