import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolMetrics, { type PgPoolMetricsOptions, type PgPoolMetricsView, type Scrape } from '@fastify-pg-pool/metrics'
import Fastify from 'fastify'
import type { Registry } from 'prom-client'
import { describe, expectTypeOf, test } from 'vitest'

describe('metrics types', () => {
  test('options and app.pgPoolMetrics', async () => {
    const app = Fastify()
    await app.register(pgPoolCore, { connection: 'postgres://localhost/x' })
    await app.register(pgPoolMetrics, {
      namePrefix: 'shop_',
      path: false,
      httpMetrics: false,
      buckets: { acquire: [0.01, 0.1, 1] },
      onRequest: async (request, reply) => {
        if (!request.headers.authorization) await reply.code(401).send()
      },
    })
    expectTypeOf(app.pgPoolMetrics).toEqualTypeOf<PgPoolMetricsView>()
    expectTypeOf(app.pgPoolMetrics.registry).toEqualTypeOf<Registry>()
    expectTypeOf(app.pgPoolMetrics.scrape('text/plain')).resolves.toEqualTypeOf<Scrape>()
    expectTypeOf<PgPoolMetricsOptions['path']>().toEqualTypeOf<string | false | undefined>()
    // @ts-expect-error path is a string or false
    await app.register(pgPoolMetrics, { path: true })
    // @ts-expect-error no such option
    await app.register(pgPoolMetrics, { prefx: 'x_' })
  })
})
