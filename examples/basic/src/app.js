import Fastify from 'fastify'
import pgPool from 'fastify-pg-pool'

/** The example app: a small inventory with one transactional route. */
export async function buildApp({ connection, replicas = [], logger = true, pool = {} }) {
  const app = Fastify({ logger })
  await app.register(pgPool, {
    connection,
    pool: { max: 10, acquireTimeout: 2_000, ...pool },
    // Read replicas (none in the demo): the readOnly routes below read from them, within the
    // default lag bound, and from the primary when none is usable (one down while the app starts
    // included: readiness says `warn`).
    ...(replicas.length > 0 ? { replicas } : {}),
  })

  await app.db`
    create table if not exists items (
      id serial primary key,
      name text not null,
      stock int not null check (stock >= 0)
    )`
  const [{ count }] = await app.db`select count(*)::int as count from items`
  if (count === 0) {
    await app.db`insert into items ${app.db([
      { name: 'apple', stock: 10 },
      { name: 'pear', stock: 5 },
      { name: 'plum', stock: 0 },
    ])}`
  }

  // readOnly: served by a replica when one is configured and usable, else by the primary.
  app.get(
    '/items',
    { config: { db: { readOnly: true } } },
    async (request) => request.db`select * from items order by id`,
  )

  // A read by key relies on no session state: its requests may share connections, their
  // statements sent together (config.db.pipeline), for throughput under load; a read, so a
  // replica may serve it.
  app.get(
    '/items/:id',
    {
      schema: { params: { type: 'object', properties: { id: { type: 'integer' } } } },
      config: { db: { pipeline: true, readOnly: true } },
    },
    async (request, reply) => {
      const [item] = await request.db`select * from items where id = ${request.params.id}`
      return item ?? reply.code(404).send({ message: 'no such item' })
    },
  )

  // Both updates commit together before the response, or neither does: the stock check
  // (stock >= 0) failing on the second update rolls back the first (409, SQLSTATE 23514).
  app.post(
    '/items/:from/move/:to',
    {
      config: { db: { transaction: true } },
      schema: { params: { type: 'object', properties: { from: { type: 'integer' }, to: { type: 'integer' } } } },
    },
    async (request) => {
      const { from, to } = request.params
      await request.db`update items set stock = stock + 1 where id = ${to}`
      const [moved] = await request.db`update items set stock = stock - 1 where id = ${from} returning stock`
      if (!moved) throw Object.assign(new Error('no such item'), { statusCode: 404 })
      return { moved: 1, left: moved.stock }
    },
  )

  // Holds a connection for `ms` milliseconds: try it with load to see admission control.
  app.get('/slow', async (request) => {
    const ms = Math.min(Number(request.query.ms ?? 100), 10_000)
    await request.db`select pg_sleep(${ms / 1000})`
    return { slept: ms }
  })

  return app
}
