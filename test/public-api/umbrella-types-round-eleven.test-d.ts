// Round eleven (types probe, suspected): the umbrella names every type its options mention, so
// that an app that installs only `fastify-pg-pool` can write them; withoutDatabase() gives a route
// config whose `db` is `false`, whatever `db` the config it was given had.
import { withoutDatabase } from '@fastify-pg-pool/core'
import type { HealthResponse, PgPoolOptions, PgPoolOtelPart, RouteBackpressureConfig } from 'fastify-pg-pool'
import { describe, expectTypeOf, test } from 'vitest'

describe('the umbrella re-exports', () => {
  test('the otel part of its options, the health body, a route backpressure config', () => {
    expectTypeOf<PgPoolOtelPart>().not.toBeAny()
    expectTypeOf<Exclude<PgPoolOptions['otel'], false | undefined>>().toEqualTypeOf<PgPoolOtelPart>()
    expectTypeOf<HealthResponse['status']>().not.toBeAny()
    expectTypeOf<RouteBackpressureConfig>().not.toBeAny()
  })
})

describe('withoutDatabase', () => {
  test('db is false, not never, on a config that had a db object', () => {
    const config = withoutDatabase({ db: { transaction: true }, other: 1 })
    expectTypeOf(config.db).toEqualTypeOf<false>()
    expectTypeOf(config.other).toEqualTypeOf<number>()
  })
})
