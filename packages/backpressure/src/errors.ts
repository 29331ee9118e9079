import { STATUS_CODES } from 'node:http'
import { createError, type FastifyErrorConstructor } from '@fastify/error'
import { errors as coreErrors } from '@fastify-pg-pool/core'

/**
 * The refusals of admission control, each documented in the package README (a test checks
 * that). Waiters at the cap reuse the core's `FST_PG_POOL_QUEUE_FULL`, and bad options the
 * core's `FST_PG_POOL_INVALID_OPTION`: a client sees one vocabulary whichever layer refused.
 */
export const errors = {
  FST_PG_POOL_QUEUE_FULL: coreErrors.FST_PG_POOL_QUEUE_FULL,
  FST_PG_POOL_OVERLOADED: createError(
    'FST_PG_POOL_OVERLOADED',
    'Requests would wait too long for a database connection (target %d ms); retry later',
    503,
  ),
  FST_PG_POOL_PROCESS_PRESSURE: createError(
    'FST_PG_POOL_PROCESS_PRESSURE',
    'The server is under pressure (%s); retry later',
    503,
  ),
  FST_PG_POOL_INVALID_OPTION: coreErrors.FST_PG_POOL_INVALID_OPTION,
} as const satisfies Record<string, FastifyErrorConstructor>

export type PgPoolBackpressureErrorCode = keyof typeof errors

/**
 * The JSON body of a coded error, as Fastify's error handler writes it, serialized once: the
 * refusal path does no work per request.
 */
export function errorBody(error: Error & { code: string; statusCode?: number }): string {
  const statusCode = error.statusCode ?? 503
  return JSON.stringify({ statusCode, code: error.code, error: STATUS_CODES[statusCode], message: error.message })
}
