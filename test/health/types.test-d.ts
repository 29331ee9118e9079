import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolHealth, {
  type HealthCheck,
  type HealthResponse,
  type HealthStatus,
  pgPoolHealth as named,
  type PgPoolHealthOptions,
} from '@fastify-pg-pool/health'
import Fastify, { type FastifyPluginAsync } from 'fastify'
import { describe, expectTypeOf, test } from 'vitest'

describe('@fastify-pg-pool/health types', () => {
  test('the plugin takes PgPoolHealthOptions', async () => {
    expectTypeOf(pgPoolHealth).toEqualTypeOf(named)
    expectTypeOf(pgPoolHealth).toMatchTypeOf<FastifyPluginAsync<PgPoolHealthOptions>>()
    const app = Fastify()
    await app.register(pgPoolCore, { connection: 'postgres://localhost/x', pool: { lazy: true } })
    await app.register(pgPoolHealth, {
      livePath: '/live',
      readyPath: false,
      healthPath: '/status',
      pingTimeout: 1_000,
      pingWarn: 0,
      cacheTime: 500,
      warnWaiting: 1,
      failWaiting: 0,
      requireDatabase: 'startup',
      requireInstances: ['reporting'],
      details: 'public',
      drainDelay: 5_000,
      logLevel: 'warn',
      serviceId: 'orders',
      description: 'orders API',
      version: '1',
      releaseId: '1.2.3',
    })
    await app.register(pgPoolHealth)
    // @ts-expect-error paths are strings or false
    await app.register(pgPoolHealth, { livePath: true })
    // @ts-expect-error not a detail level
    await app.register(pgPoolHealth, { details: 'secret' })
    // @ts-expect-error instance names in an array
    await app.register(pgPoolHealth, { requireInstances: 'reporting' })
    // @ts-expect-error durations are numbers
    await app.register(pgPoolHealth, { pingTimeout: '1s' })
    // exactOptionalPropertyTypes: an option given as undefined takes its default, as at run time
    await app.register(pgPoolHealth, { cacheTime: undefined, pingTimeout: undefined as number | undefined })
  })

  test('option and body types are exact', () => {
    expectTypeOf<PgPoolHealthOptions['livePath']>().toEqualTypeOf<string | false | undefined>()
    expectTypeOf<PgPoolHealthOptions['requireDatabase']>().toEqualTypeOf<'always' | 'startup' | undefined>()
    expectTypeOf<PgPoolHealthOptions['details']>().toEqualTypeOf<'full' | 'public' | undefined>()
    expectTypeOf<HealthStatus>().toEqualTypeOf<'pass' | 'warn' | 'fail'>()
    expectTypeOf<HealthResponse['status']>().toEqualTypeOf<HealthStatus>()
    // One entry per pool under each key.
    expectTypeOf<NonNullable<HealthResponse['checks']>['postgres:responseTime']>().toEqualTypeOf<
      readonly HealthCheck[] | undefined
    >()
    expectTypeOf<HealthCheck['componentId']>().toEqualTypeOf<string | undefined>()
    expectTypeOf<
      NonNullable<NonNullable<HealthResponse['checks']>['postgres:listener']>[number]['connected']
    >().toBeBoolean()
    expectTypeOf<
      NonNullable<NonNullable<HealthResponse['checks']>['postgres:connections']>[0]['waiting']
    >().toBeNumber()
    expectTypeOf<NonNullable<NonNullable<HealthResponse['checks']>['postgres:budget']>[0]['available']>().toBeNumber()
  })
})
