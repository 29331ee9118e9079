export * from '@fastify-pg-pool/core'
export { type PgPoolOptions, pgPool, pgPool as default } from './plugin.js'
