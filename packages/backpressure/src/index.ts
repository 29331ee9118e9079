import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'

export type PgPoolBackpressureOptions = {}

const backpressure: FastifyPluginAsync<PgPoolBackpressureOptions> = async () => {}

export const pgPoolBackpressure = fp(backpressure, {
  name: '@fastify-pg-pool/backpressure',
  fastify: '5.x',
  dependencies: ['@fastify-pg-pool/core'],
})
export default pgPoolBackpressure
