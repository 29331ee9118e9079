import Fastify from 'fastify'
import pgPool, {
  type PgPoolBackpressureOptions,
  type PgPoolHealthOptions,
  type PgPoolMetricsOptions,
  type PgPoolOptions,
  type PgPoolView,
  type RequestDb,
} from 'fastify-pg-pool'
import { describe, expectTypeOf, test } from 'vitest'

describe('fastify-pg-pool types', () => {
  test('each part takes its own options or false', async () => {
    expectTypeOf<PgPoolOptions['health']>().toEqualTypeOf<PgPoolHealthOptions | false | undefined>()
    expectTypeOf<PgPoolOptions['metrics']>().toEqualTypeOf<PgPoolMetricsOptions | false | undefined>()
    expectTypeOf<PgPoolOptions['backpressure']>().toEqualTypeOf<PgPoolBackpressureOptions | false | undefined>()
    const app = Fastify()
    await app.register(pgPool, { connection: 'postgres://localhost/x', health: false, metrics: {}, pool: { max: 5 } })
    // @ts-expect-error health takes options or false, not true
    await app.register(pgPool, { health: true })
    app.get('/', async (request) => {
      expectTypeOf(request.db).toEqualTypeOf<RequestDb>()
      return null
    })
    expectTypeOf(app.pgPool).toEqualTypeOf<PgPoolView>()
  })
})
