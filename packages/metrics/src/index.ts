import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'

export type PgPoolMetricsOptions = {}

const metrics: FastifyPluginAsync<PgPoolMetricsOptions> = async () => {}

export const pgPoolMetrics = fp(metrics, {
  name: '@fastify-pg-pool/metrics',
  fastify: '5.x',
  dependencies: ['@fastify-pg-pool/core'],
})
export default pgPoolMetrics
