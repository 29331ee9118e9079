// DEFECT (probe-replicas, medium). What the user does: declares a reporting route as a read-only
// serializable transaction, as PostgreSQL recommends for consistent reports:
// `config: { db: { readOnly: true, transaction: { isolation: 'serializable', readOnly: true,
// deferrable: true } } }`, and adds a read replica. What they should get: the route keeps working
// with its isolation (a standby cannot run SERIALIZABLE transactions, "cannot use serializable
// mode in a hot standby", 0A000 at BEGIN: such a transaction belongs on the primary, read-only),
// whether or not a replica is usable. What they got: while the replica is usable every request
// answers 500 FST_PG_POOL_COMMIT_FAILED "The transaction was not committed (the connection was
// lost)": the BEGIN is refused on the standby, the pool cuts the connection (statements behind a
// failed BEGIN must not run outside it) and the reply blames a lost connection; each request costs
// a replica connection. The same route answers 200 whenever the replica lags or is down (the
// primary serves it then). Fix (plugin.ts newLease): a read-only lease whose route transaction is
// SERIALIZABLE is not routed to a replica; it runs on the primary in its read-only transaction.

import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterEach, describe, expect, test } from 'vitest'
import { waitUntil } from '../../../support/database.js'
import { useNotesCluster } from '../../../support/notes-cluster.js'

const notes = useNotesCluster('probe_serializable_route')
let app: FastifyInstance | undefined

afterEach(async () => {
  await app?.close()
  app = undefined
})

async function reportApp(): Promise<FastifyInstance> {
  const instance = Fastify()
  await instance.register(pgPoolCore, {
    connection: notes.database.primaryUrl,
    replicas: [notes.database.standbyUrls[0] as string],
    replica: { lagInterval: 100, maxLag: { seconds: 600 } },
    pool: { max: 2 },
  })
  const report = async (request: { db: (strings: TemplateStringsArray) => Promise<unknown[]> }) => {
    const [row] = await request.db`
      select pg_is_in_recovery() as standby, current_setting('transaction_isolation') as isolation,
        current_setting('transaction_read_only') as "readOnly"`
    return row
  }
  instance.get(
    '/serializable',
    {
      config: {
        db: { readOnly: true, transaction: { isolation: 'serializable', readOnly: true, deferrable: true } },
      },
    },
    (request) => report(request as never),
  )
  instance.get(
    '/serializable-plain',
    { config: { db: { readOnly: true, transaction: { isolation: 'serializable' } } } },
    (request) => report(request as never),
  )
  instance.get(
    '/repeatable-read',
    { config: { db: { readOnly: true, transaction: { isolation: 'repeatable read' } } } },
    (request) => report(request as never),
  )
  await instance.ready()
  await waitUntil(() => instance.pgPools.all()[1]?.replica()?.usable === true, 'the replica to be usable', 10_000)
  return instance
}

describe('a read-only serializable route transaction with a usable replica', () => {
  test('answers from the primary, serializable and read-only', async () => {
    app = await reportApp()
    for (const url of ['/serializable', '/serializable-plain']) {
      const reply = await app.inject(url)
      // Before the fix: 500 FST_PG_POOL_COMMIT_FAILED, "the connection was lost".
      expect({ url, status: reply.statusCode, body: reply.json() }).toEqual({
        url,
        status: 200,
        body: { standby: false, isolation: 'serializable', readOnly: 'on' },
      })
    }
    // No replica connection was cut for it.
    expect(app.pgPools.all()[1]?.stats().leased).toBe(0)
  })

  test('held: a repeatable read route transaction still reads the replica', async () => {
    app = await reportApp()
    expect((await app.inject('/repeatable-read')).json()).toEqual({
      standby: true,
      isolation: 'repeatable read',
      readOnly: 'on',
    })
  })
})
