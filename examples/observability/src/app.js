import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import Fastify from 'fastify'

/**
 * The observability example: the pool and its metrics, a few routes to put load on, and
 * `/metrics` behind a bearer token when `metricsToken` is set. With `otel`, also request spans
 * (@fastify/otel, registered first) and the pool's spans and metrics (@fastify-pg-pool/otel),
 * for the OpenTelemetry SDK registered before (src/otel.js).
 */
export async function buildApp({ connection, logger = true, pool = {}, metricsToken, otel = false } = {}) {
  const app = Fastify({ logger })
  if (otel) {
    const { FastifyOtelInstrumentation } = await import('@fastify/otel')
    await app.register(new FastifyOtelInstrumentation().plugin())
  }
  await app.register(pgPoolCore, { connection, pool: { max: 5, acquireTimeout: 1_000, ...pool } })
  if (otel) {
    const { default: pgPoolOtel } = await import('@fastify-pg-pool/otel')
    await app.register(pgPoolOtel)
  }
  await app.register(pgPoolMetrics, {
    onRequest: metricsToken
      ? async (request, reply) => {
          if (request.headers.authorization !== `Bearer ${metricsToken}`) {
            await reply.code(401).send({ message: 'metrics need a bearer token' })
          }
        }
      : [],
  })

  app.get(
    '/items/:id',
    { schema: { params: { type: 'object', properties: { id: { type: 'integer' } } } } },
    async (request, reply) => {
      const [item] = await request.db`
        select id, 'item ' || id as name from generate_series(1, 100) as id where id = ${request.params.id}`
      return item ?? reply.code(404).send({ message: 'no such item' })
    },
  )

  // Holds its connection `ms` milliseconds: enough of these and requests start to wait.
  app.get('/slow', async (request) => {
    const ms = Math.min(Number(request.query.ms ?? 100), 10_000)
    await request.db`select pg_sleep(${ms / 1000})`
    return { slept: ms }
  })

  return app
}
