import Fastify from 'fastify'
import pgPool, { DatabaseError } from 'fastify-pg-pool'
import { describe, expectTypeOf, test } from 'vitest'

// The migration guide's "after" samples, written in TypeScript as a stranger would (route generics
// for params and body), type-check: the fields a caught error is read by (constraint_name,
// table_name, serverMessage, detail), transaction options, pgPool stats and events, lease release.

declare module 'fastify-pg-pool' {
  interface PgPoolInstances {
    reporting: true
  }
}

describe('the migration guide in TypeScript', () => {
  test('its after samples type-check', async () => {
    const app = Fastify({ logger: true })
    await app.register(pgPool, { connection: process.env.DATABASE_URL, pool: { max: 10 } })
    await app.register(pgPool, { name: 'reporting', connection: process.env.REPORTING_URL })

    app.get<{ Params: { id: string } }>('/users/:id', async (request, reply) => {
      const [user] = await request.db`select id, username from users where id = ${request.params.id}`
      return user ?? reply.code(404).send({ message: 'no such user' })
    })
    app.get<{ Params: { id: string } }>('/users/:id/unsafe', async (request) => {
      const [user] = await request.db.unsafe('SELECT id, username FROM users WHERE id = $1', [request.params.id])
      return user
    })
    app.post<{ Body: { username: string } }>('/signup', async (request, reply) => {
      try {
        const [user] = await request.db`insert into users (username) values (${request.body.username}) returning id`
        return reply.code(201).send(user)
      } catch (err) {
        if (err instanceof DatabaseError && err.code === '23505' && err.constraint_name === 'users_username_key') {
          expectTypeOf(err.table_name).toEqualTypeOf<string | undefined>()
          expectTypeOf(err.serverMessage).toEqualTypeOf<string>()
          expectTypeOf(err.statusCode).toEqualTypeOf<number>()
          expectTypeOf(err.detail).toEqualTypeOf<string | undefined>()
          return reply.code(409).send({ message: `${request.body.username} is taken` })
        }
        throw err
      }
    })
    app.post<{ Params: { id: string }; Body: { bio?: string } }>('/users/:id/bio', async (request) => {
      const [user] = await request.db`
        update users set bio = ${request.body.bio ?? null} where id = ${request.params.id} returning id, bio`
      return user
    })
    app.get('/report', async (request) => {
      const [row] = await request.dbs.reporting`select count(*)::int as users from users`
      return row
    })
    app.pgPool.on('close', (reason) => app.log.info({ reason }, 'database connection closed'))
    app.get('/pool', { config: { db: false } }, async () => {
      const { open, idle, waiting } = app.pgPool.stats()
      return { total: open, idle, waiting }
    })
    const renamed = await app.db.transaction(
      async (sql) => {
        const [user] = await sql`select id, username from users where id = ${1}`
        return user
      },
      { isolation: 'repeatable read' },
    )
    expectTypeOf(renamed).not.toBeNever()
    const lease = await app.db.lease()
    expectTypeOf(lease.release()).toEqualTypeOf<Promise<void>>()
  })
})
