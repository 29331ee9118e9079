import type { PoolOptions } from '@fastify-pg-pool/core'
import type { FastifyInstance, FastifyServerOptions } from 'fastify'

export function buildApp(options: {
  connection: string
  logger?: FastifyServerOptions['logger']
  pool?: PoolOptions
  metricsToken?: string | undefined
  /** Request spans (@fastify/otel) and the pool's spans and metrics (@fastify-pg-pool/otel). */
  otel?: boolean
}): Promise<FastifyInstance>
