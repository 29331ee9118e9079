import { errors as backpressureErrors } from '@fastify-pg-pool/backpressure'
import { errors as coreErrors } from '@fastify-pg-pool/core'
import { errors as metricsErrors } from '@fastify-pg-pool/metrics'

/**
 * Every coded error of the suite: the core's and those metrics and backpressure add (health
 * raises only the core's). A code shared by two packages is one constructor (a test checks).
 */
export const errors: Readonly<typeof coreErrors & typeof metricsErrors & typeof backpressureErrors> = Object.freeze({
  ...coreErrors,
  ...metricsErrors,
  ...backpressureErrors,
})

export type PgPoolErrorCode = keyof typeof errors
