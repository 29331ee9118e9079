import type { PoolOptions } from '@fastify-pg-pool/core'
import type { FastifyInstance, FastifyServerOptions } from 'fastify'

export function buildApp(options: {
  connection: string
  logger?: FastifyServerOptions['logger']
  pool?: PoolOptions
  metricsToken?: string | undefined
}): Promise<FastifyInstance>
