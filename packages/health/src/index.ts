import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'

export type PgPoolHealthOptions = {}

const health: FastifyPluginAsync<PgPoolHealthOptions> = async () => {}

export const pgPoolHealth = fp(health, {
  name: '@fastify-pg-pool/health',
  fastify: '5.x',
  dependencies: ['@fastify-pg-pool/core'],
})
export default pgPoolHealth
